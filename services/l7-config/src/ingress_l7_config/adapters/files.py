"""File mode's side effect: the rendered file set written to a directory the Envoys read through
path-based xDS, and an :class:`XdsServer` that publishes snapshots that way (no gRPC, no
streams: a domain counts as applied once its files are written).

Every file is replaced atomically (write a temporary file in the same directory, fsync, rename),
which is what Envoy's ``watched_directory`` reacts to, and Envoy never reads half a file. Files
are written in make-before-break order; files no longer in the set are removed last.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..domain.files import JsonCache, render_files, write_rank
from ..domain.layout import SECRETS, FileLayout
from ..domain.resources import Snapshot
from .xds import EnvoyStream


class FileSetWriter:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.writes = 0
        """Files written (created or replaced) so far."""
        self.removals = 0
        self._known: dict[str, bytes] | None = None

    def _current(self) -> dict[str, bytes]:
        """What the directory holds: read once (a restart rewrites nothing that is already
        right), then tracked in memory."""
        if self._known is not None:
            return self._known
        found: dict[str, bytes] = {}
        if self.root.is_dir():
            for path in self.root.rglob("*"):
                if not path.is_file():
                    continue
                if path.name.startswith(".tmp-"):
                    path.unlink(missing_ok=True)  # left over by a crash mid-write
                elif path.suffix == ".json":
                    found[path.relative_to(self.root).as_posix()] = path.read_bytes()
        self._known = found
        return found

    def _replace(self, relative: str, content: bytes) -> None:
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        secret = relative.startswith(SECRETS + "/")
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=target.parent)
        try:
            if secret:
                os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.writes += 1

    def write(self, files: dict[str, bytes]) -> list[str]:
        """Make the directory hold exactly ``files``; returns the paths written or removed."""
        current = self._current()
        changed = sorted(
            (p for p, content in files.items() if current.get(p) != content),
            key=lambda p: (write_rank(p), p),
        )
        for path in changed:
            self._replace(path, files[path])
            current[path] = files[path]
        gone = sorted(set(current) - set(files), key=lambda p: (-write_rank(p), p))
        for path in gone:
            with contextlib.suppress(FileNotFoundError):
                (self.root / path).unlink()
            del current[path]
            self.removals += 1
            parent = (self.root / path).parent
            with contextlib.suppress(OSError):
                if parent != self.root and not any(parent.iterdir()):
                    parent.rmdir()
        return changed + gone


class FileXdsServer:
    """The :class:`~.xds.XdsServer` of file mode."""

    def __init__(self, writer: FileSetWriter, layout: FileLayout) -> None:
        self.writer = writer
        self.layout = layout
        self.sequence = 0
        self.last_changes: list[str] = []
        self._json: JsonCache = {}

    @property
    def streams(self) -> list[EnvoyStream]:
        return []

    def publish(self, snapshot: Snapshot, sequence: int) -> None:
        self.last_changes = self.writer.write(render_files(snapshot, self.layout, self._json))
        self.sequence = sequence

    async def start(self) -> int:
        return 0

    async def stop(self) -> None:
        return None
