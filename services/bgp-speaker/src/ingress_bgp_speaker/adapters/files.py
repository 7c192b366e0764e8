"""The BIRD config file (written atomically) and the mounted Secrets directory."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from ingress_events.catalogue import SecretKeyRef

from ..domain.validate import Secret


class ConfigStore(Protocol):
    @property
    def path(self) -> str: ...

    def read(self) -> str | None: ...

    def write_candidate(self, text: str) -> str:
        """Write a candidate next to the live file and return its path."""

    def promote(self, candidate: str) -> None:
        """Make the candidate the live file, atomically."""

    def discard(self, candidate: str) -> None: ...

    def write(self, text: str) -> None:
        """Replace the live file atomically (to restore the previous one)."""


class ConfigFile:
    def __init__(self, path: str) -> None:
        self._path = Path(path)

    @property
    def path(self) -> str:
        return str(self._path)

    def read(self) -> str | None:
        try:
            return self._path.read_text()
        except FileNotFoundError:
            return None

    def write_candidate(self, text: str) -> str:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # 0600 (mkstemp's mode): the file holds the MD5 passwords.
        fd, name = tempfile.mkstemp(
            prefix=f".{self._path.name}.", suffix=".candidate", dir=self._path.parent
        )
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        return name

    def promote(self, candidate: str) -> None:
        os.replace(candidate, self._path)
        dir_fd = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def discard(self, candidate: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(candidate)

    def write(self, text: str) -> None:
        self.promote(self.write_candidate(text))


class MemoryConfigStore:
    """ConfigStore in a dict shared with FakeBird (paths are just keys)."""

    def __init__(self, path: str, files: dict[str, str]) -> None:
        self._path = path
        self.files = files
        self.writes = 0
        self._n = 0

    @property
    def path(self) -> str:
        return self._path

    def read(self) -> str | None:
        return self.files.get(self._path)

    def write_candidate(self, text: str) -> str:
        self._n += 1
        self.writes += 1
        name = f"{self._path}.{self._n}.candidate"
        self.files[name] = text
        return name

    def promote(self, candidate: str) -> None:
        self.files[self._path] = self.files.pop(candidate)

    def discard(self, candidate: str) -> None:
        self.files.pop(candidate, None)

    def write(self, text: str) -> None:
        self.writes += 1
        self.files[self._path] = text


class SecretReader(Protocol):
    def read(self, ref: SecretKeyRef) -> Secret: ...


_SAFE_PART = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


class SecretsDirectory:
    """Secrets mounted as ``<root>/<namespace>/<name>/<key>`` (one projected volume per Secret,
    or the local runner's directory)."""

    def __init__(self, root: str) -> None:
        self._root = Path(root)

    def read(self, ref: SecretKeyRef) -> Secret:
        parts = (ref.namespace, ref.name, ref.key)
        if not all(_SAFE_PART.match(p) and p not in (".", "..") for p in parts):
            return Secret(None, "the reference is not a valid Secret name and key")
        path = self._root.joinpath(*parts)
        try:
            # A trailing newline is what `kubectl create secret --from-file` of an echoed file
            # leaves; it is never part of an MD5 key.
            return Secret(path.read_text().rstrip("\n"))
        except FileNotFoundError:
            return Secret(None, f"{path} does not exist")
        except OSError as exc:
            return Secret(None, f"{path}: {exc.strerror}")


class MemorySecrets:
    def __init__(self, values: dict[tuple[str, str, str], str] | None = None) -> None:
        self.values = dict(values or {})

    def read(self, ref: SecretKeyRef) -> Secret:
        value = self.values.get((ref.namespace, ref.name, ref.key))
        return Secret(value, None if value is not None else "not in the fake store")
