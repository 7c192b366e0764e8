"""BIRD 2's control socket, spoken directly (the line protocol birdc uses, documented as stable
in the BIRD user's guide, "Remote control"): one connection per command, replies read to the
final line. Cheaper than forking birdc for every read-back, which matters at 10,000 routes.

Reply lines are ``DDDD-text`` (more follows), ``DDDD text`` (last line) or `` text`` (more of
the previous code). Codes 8xxx and 9xxx are errors.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..domain.render import STATIC_PROTOCOL


class BirdUnavailable(Exception):
    """The control socket does not answer (BIRD not running, wrong path, ...)."""


class BirdError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"BIRD {code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ProtocolStatus:
    name: str
    proto: str
    state: str
    since: str
    info: str

    @property
    def established(self) -> bool:
        return self.proto == "BGP" and self.state == "up" and self.info.startswith("Established")

    @property
    def bgp_state(self) -> str:
        """The BGP state BIRD shows (Idle, Connect, Active, OpenSent, OpenConfirm, Established,
        Close, Passive), or ``Down`` for a protocol that is down (BIRD then shows only the last
        error) and ``Unknown`` for anything else."""
        if self.state == "down":
            return "Down"
        word = self.info.split(None, 1)[0] if self.info else ""
        return word if word in BGP_STATES else "Unknown"

    @property
    def last_error(self) -> str:
        """BIRD's last error of the protocol ("Socket: Connection refused", "Received: ..."),
        or ""."""
        if self.state == "down":
            return self.info
        parts = self.info.split(None, 1)
        return parts[1].strip() if len(parts) > 1 and parts[0] in BGP_STATES else ""


BGP_STATES = frozenset(
    {"Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established", "Close", "Passive"}
)


class BirdControl(Protocol):
    async def check(self, path: str) -> str | None:
        """None when BIRD accepts the file, else BIRD's error message."""

    async def configure(self, path: str, timeout_seconds: int) -> str: ...

    async def confirm(self) -> None: ...

    async def undo(self) -> None: ...

    async def static_routes(self) -> frozenset[str]: ...

    async def static_route_count(self) -> int:
        """How many routes our static protocols hold, without listing them."""

    async def static_routes_among(self, prefixes: Iterable[str]) -> frozenset[str]:
        """Which of ``prefixes`` (host prefixes) our static protocols hold."""

    async def protocols(self) -> list[ProtocolStatus]: ...

    async def bfd_sessions(self) -> dict[str, str]:
        """BFD session state (Up, Down, Init, AdminDown) by neighbour address; {} without BFD."""


Reply = list[tuple[int, str]]


def parse_reply_line(line: str, last_code: int) -> tuple[int, str, bool]:
    """(code, text, final) of one reply line."""
    if len(line) >= 5 and line[:4].isdigit() and line[4] in " -":
        return int(line[:4]), line[5:], line[4] == " "
    return last_code, line[1:] if line.startswith(" ") else line, False


def parse_reply(text: str) -> Reply:
    """(code, text) of every line of a whole reply."""
    reply: Reply = []
    code = 0
    for line in text.splitlines():
        code, rest, _ = parse_reply_line(line, code)
        reply.append((code, rest))
    return reply


# A route line of ``show route``, with or without its reply code: "1007-10.0.0.1/32 ..." or
# " 10.0.0.1/32 ...". Matched over the whole reply at once: at 10,000 routes, parsing the reply
# line by line was a third of what a change cost the speaker.
_ROUTE_RE = re.compile(r"^(?:\d{4}[ -])?\s*([0-9a-fA-F:.]+/\d+)\s", re.M)


# "1007-10000 of 10000 routes for 10000 networks in table master4": the first number counts the
# routes that matched (those of the protocol asked about).
_COUNT_RE = re.compile(r"^(?:\d{4}[ -])?\s*(\d+) of \d+ routes", re.M)


def parse_static_routes(text: str) -> frozenset[str]:
    """The networks of a ``show route`` reply (its raw text)."""
    return frozenset(_ROUTE_RE.findall(text))


def parse_protocols(reply: Reply) -> list[ProtocolStatus]:
    out: list[ProtocolStatus] = []
    for code, text in reply:
        if code != 1002:
            continue
        # "name proto table state YYYY-MM-DD HH:MM:SS.sss info..." (timeformat iso long)
        parts = text.split(None, 6)
        if len(parts) < 6:
            continue
        info = parts[6].strip() if len(parts) > 6 else ""
        out.append(ProtocolStatus(parts[0], parts[1], parts[3], f"{parts[4]} {parts[5]}", info))
    return out


_BFD_ROW_RE = re.compile(r"^\s*([0-9a-fA-F:.]+)\s+\S+\s+(Up|Down|Init|AdminDown)\s")


def parse_bfd_sessions(reply: Reply) -> dict[str, str]:
    """``show bfd sessions``: "IP address  Interface  State  Since  Interval  Timeout" rows."""
    return {m.group(1): m.group(2) for _, text in reply if (m := _BFD_ROW_RE.match(text))}


_FINAL_LINE = re.compile(rb"^\d{4} [^\n]*\n", re.M)
_ERROR_LINE = re.compile(r"^[89]\d{3}[ -]", re.M)


class BirdSocket:
    """The real BIRD, through its control socket."""

    def __init__(self, socket_path: str, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self._timeout = timeout

    async def command(self, command: str) -> Reply:
        return parse_reply(await self.text(command))

    async def text(self, command: str) -> str:
        """The raw reply to ``command`` (BIRD's error codes raised as BirdError)."""
        try:
            text = await asyncio.wait_for(self._exchange(command), timeout=self._timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            raise BirdUnavailable(
                f"BIRD control socket {self.socket_path} does not answer: {exc!r}"
            ) from exc
        if _ERROR_LINE.search(text):
            for code, line in parse_reply(text):
                if code >= 8000:
                    raise BirdError(code, line)
        return text

    async def _exchange(self, command: str) -> str:
        reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=1 << 20)
        try:
            # the "0001 BIRD x.y ready." greeting
            _, rest = await self._read_reply(reader, b"")
            writer.write(command.encode() + b"\n")
            await writer.drain()
            reply, _ = await self._read_reply(reader, rest)
        finally:
            writer.close()
        return reply.decode(errors="replace")

    @staticmethod
    async def _read_reply(reader: asyncio.StreamReader, pending: bytes) -> tuple[bytes, bytes]:
        """One reply up to its final line, and whatever was read after it. Read in blocks and
        searched for the final line, not parsed a line at a time: ``show route`` of 10,000
        routes is 10,000 lines."""
        buffer = bytearray(pending)
        start = 0
        while True:
            final = _FINAL_LINE.search(buffer, start)
            if final is not None:
                return bytes(buffer[: final.end()]), bytes(buffer[final.end() :])
            # Lines before the last newline are complete and none was final.
            start = buffer.rfind(b"\n") + 1
            chunk = await reader.read(1 << 16)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buffer), None)
            buffer += chunk

    async def check(self, path: str) -> str | None:
        try:
            await self.command(f'configure check "{path}"')
        except BirdError as exc:
            return exc.message
        return None

    async def configure(self, path: str, timeout_seconds: int) -> str:
        reply = await self.command(f'configure "{path}" timeout {timeout_seconds}')
        return reply[-1][1]

    async def confirm(self) -> None:
        await self.command("configure confirm")

    async def undo(self) -> None:
        await self.command("configure undo")

    async def static_routes(self) -> frozenset[str]:
        routes: set[str] = set()
        for protocol in STATIC_PROTOCOL.values():
            try:
                routes |= parse_static_routes(await self.text(f"show route protocol {protocol}"))
            except BirdError as exc:
                # A BIRD started from a foreign config has no such protocol: no routes of ours.
                if "No such protocol" not in exc.message:
                    raise
        return frozenset(routes)

    async def static_route_count(self) -> int:
        total = 0
        for protocol in STATIC_PROTOCOL.values():
            try:
                text = await self.text(f"show route protocol {protocol} count")
            except BirdError as exc:
                if "No such protocol" not in exc.message:
                    raise
                continue
            found = _COUNT_RE.search(text)
            if found is None:
                raise BirdError(0, f"no route count in BIRD's reply: {text[:200]!r}")
            total += int(found.group(1))
        return total

    async def static_routes_among(self, prefixes: Iterable[str]) -> frozenset[str]:
        held: set[str] = set()
        for prefix in prefixes:
            protocol = STATIC_PROTOCOL[6 if ":" in prefix else 4]
            try:
                text = await self.text(f"show route {prefix} protocol {protocol}")
            except BirdError as exc:
                # 8001 "Network not found"; a protocol missing from the running config holds
                # nothing either.
                if exc.code == 8001 or "No such protocol" in exc.message:
                    continue
                raise
            if prefix in parse_static_routes(text):
                held.add(prefix)
        return frozenset(held)

    async def protocols(self) -> list[ProtocolStatus]:
        return parse_protocols(await self.command("show protocols"))

    async def bfd_sessions(self) -> dict[str, str]:
        try:
            return parse_bfd_sessions(await self.command("show bfd sessions"))
        except BirdError:
            # No BFD protocol in the running config ("There is no BFD protocol running").
            return {}


_FAKE_ROUTE_RE = re.compile(r"^\s*route (\S+) blackhole;", re.M)
_FAKE_BGP_RE = re.compile(r"^protocol bgp (\S+) \{", re.M)


class FakeBird:
    """An in-memory BIRD for unit tests: it "parses" only what render() writes (routes and BGP
    protocol names), can be told to refuse configs, and counts reconfigurations."""

    def __init__(self, files: dict[str, str]) -> None:
        self._files = files
        self.running = ""
        self._previous = ""
        self.refuse: str | None = None
        self.configures = 0
        self.established: set[str] = set()
        self.info: dict[str, str] = {}
        """Info column for protocols not established, by protocol name (default "Active")."""
        self.bfd: dict[str, str] = {}
        self.unavailable = False
        """True: every read raises BirdUnavailable, as a stopped BIRD's socket does."""
        self.route_reads = 0

    async def check(self, path: str) -> str | None:
        if path not in self._files:
            return f"{path}: No such file"
        return self.refuse

    async def configure(self, path: str, timeout_seconds: int) -> str:
        if self.refuse:
            raise BirdError(8002, self.refuse)
        self._previous, self.running = self.running, self._files[path]
        self.configures += 1
        return "Reconfigured"

    async def confirm(self) -> None:
        self._previous = self.running

    async def undo(self) -> None:
        self.running = self._previous

    def _answer(self) -> None:
        if self.unavailable:
            raise BirdUnavailable("fake BIRD stopped")

    async def static_routes(self) -> frozenset[str]:
        self._answer()
        self.route_reads += 1
        return frozenset(_FAKE_ROUTE_RE.findall(self.running))

    async def static_route_count(self) -> int:
        self._answer()
        return len(_FAKE_ROUTE_RE.findall(self.running))

    async def static_routes_among(self, prefixes: Iterable[str]) -> frozenset[str]:
        self._answer()
        return frozenset(_FAKE_ROUTE_RE.findall(self.running)) & frozenset(prefixes)

    async def protocols(self) -> list[ProtocolStatus]:
        self._answer()
        return [
            ProtocolStatus(
                name,
                "BGP",
                "up" if name in self.established else "start",
                "2026-01-01 00:00:00.000",
                "Established" if name in self.established else self.info.get(name, "Active"),
            )
            for name in _FAKE_BGP_RE.findall(self.running)
        ]

    async def bfd_sessions(self) -> dict[str, str]:
        return dict(self.bfd)
