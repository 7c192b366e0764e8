"""The applier's safety rules against the in-memory BIRD, and the control-protocol parser
against reply text captured from BIRD 2.0.12."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ingress_bgp_speaker.adapters.applier import Applier
from ingress_bgp_speaker.adapters.bird import (
    BirdSocket,
    BirdUnavailable,
    FakeBird,
    ProtocolStatus,
    parse_bfd_sessions,
    parse_protocols,
    parse_reply_line,
    parse_static_routes,
)
from ingress_bgp_speaker.adapters.files import ConfigFile, MemoryConfigStore, SecretsDirectory
from ingress_bgp_speaker.domain.plan import BirdTarget
from ingress_events.catalogue import SecretKeyRef

pytestmark = pytest.mark.unit

CFG = "protocol static vips4 {\n  ipv4;\n  route 10.0.0.1/32 blackhole;\n}\nprotocol bgp peer_a {\n"
TARGET = BirdTarget(CFG, frozenset({"10.0.0.1/32"}), frozenset({"peer_a"}))


def _applier() -> tuple[Applier, FakeBird, MemoryConfigStore]:
    files: dict[str, str] = {}
    bird = FakeBird(files)
    store = MemoryConfigStore("/run/bird/bird.conf", files)
    return Applier(bird, store, 30), bird, store


async def test_converged_apply_writes_nothing() -> None:
    applier, bird, store = _applier()
    applied = await applier.apply(TARGET)
    assert applied.outcome == "applied"
    # Every step is timed, in order, and together they are the whole apply.
    assert list(applied.steps) == ["read", "write", "check", "configure", "read_back", "confirm"]
    assert sum(applied.steps.values()) <= applied.seconds
    writes, configures = store.writes, bird.configures
    unchanged = await applier.apply(TARGET)
    assert unchanged.outcome == "unchanged" and list(unchanged.steps) == ["read"]
    assert (store.writes, bird.configures) == (writes, configures)


async def test_routes_are_read_before_a_change_only_when_the_file_does_not_tell() -> None:
    applier, bird, _ = _applier()
    assert (await applier.apply(TARGET)).outcome == "applied"
    assert bird.route_reads == 1  # the read-back; the missing file already said "configure"
    assert (await applier.apply(TARGET, thorough=True)).outcome == "unchanged"
    assert bird.route_reads == 2  # the file is the target's: only BIRD's routes can tell
    assert (await applier.apply(TARGET)).outcome == "unchanged"
    assert bird.route_reads == 2  # verified: BIRD's count of routes is asked, not every route
    bird.running = ""  # BIRD reverted on its own (no confirm came): the file still says new
    assert (await applier.apply(TARGET)).outcome == "applied"  # the count told


def _with_routes(*last_octets: int) -> BirdTarget:
    lines = "".join(f"  route 10.0.0.{n}/32 blackhole;\n" for n in last_octets)
    config = f"protocol static vips4 {{\n  ipv4;\n{lines}}}\nprotocol bgp peer_a {{\n"
    routes = frozenset(f"10.0.0.{n}/32" for n in last_octets)
    return BirdTarget(config, routes, frozenset({"peer_a"}))


async def test_a_change_is_read_back_by_its_routes_and_the_count() -> None:
    applier, bird, _ = _applier()
    assert (await applier.apply(_with_routes(*range(1, 200)))).outcome == "applied"
    assert bird.route_reads == 1
    # One route more, one less: BIRD is asked about those two and for its count.
    assert (await applier.apply(_with_routes(*range(2, 201)))).outcome == "applied"
    assert bird.route_reads == 1 and applier.verified == _with_routes(*range(2, 201)).static_routes
    # More routes changed than INCREMENTAL_LIMIT: every route is read back.
    assert (await applier.apply(_with_routes(*range(100, 250)))).outcome == "applied"
    assert bird.route_reads == 2


async def test_a_configure_bird_did_not_take_is_caught_by_the_short_read_back() -> None:
    applier, bird, store = _applier()
    before = _with_routes(1, 2, 3)
    await applier.apply(before)
    configure = bird.configure

    async def ignored(path: str, timeout_seconds: int) -> str:
        return "Reconfigured"  # and keeps running what it ran

    bird.configure = ignored  # type: ignore[method-assign]
    result = await applier.apply(_with_routes(1, 2, 4))
    assert result.outcome == "failed" and "undone" in result.message
    assert store.read() == before.config_text and applier.verified is None
    bird.configure = configure  # type: ignore[method-assign]
    # Nothing verified after a failure: the next read-back reads every route.
    reads = bird.route_reads
    assert (await applier.apply(_with_routes(1, 2, 4))).outcome == "applied"
    assert bird.route_reads == reads + 1


async def test_refused_config_keeps_the_previous_one() -> None:
    applier, bird, store = _applier()
    await applier.apply(TARGET)
    bird.refuse = "bird.conf:3:1 syntax error"
    other = BirdTarget(
        CFG.replace("10.0.0.1", "10.0.0.2"), frozenset({"10.0.0.2/32"}), frozenset({"peer_a"})
    )
    result = await applier.apply(other)
    assert result.outcome == "refused" and "syntax error" in result.message
    assert store.read() == CFG and await bird.static_routes() == {"10.0.0.1/32"}
    assert [k for k in store.files if k.endswith(".candidate")] == []


async def test_readback_mismatch_is_undone_and_the_file_restored() -> None:
    applier, bird, store = _applier()
    await applier.apply(TARGET)
    lying = BirdTarget(
        CFG + "# changed\n", frozenset({"10.0.0.1/32", "10.0.0.9/32"}), frozenset({"peer_a"})
    )
    result = await applier.apply(lying)
    assert result.outcome == "failed" and "undone" in result.message
    assert bird.running == CFG and store.read() == CFG


async def test_bird_running_something_else_is_reapplied_although_the_file_matches() -> None:
    applier, bird, _ = _applier()
    await applier.apply(TARGET)
    bird.running = ""  # e.g. BIRD's configure timeout undid an unconfirmed reconfiguration
    assert (await applier.apply(TARGET)).outcome == "applied"
    assert await bird.static_routes() == {"10.0.0.1/32"}


def test_config_file_is_atomic_and_private(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "bird.conf"
    store = ConfigFile(str(path))
    assert store.read() is None
    candidate = store.write_candidate("a;\n")
    assert store.read() is None
    store.promote(candidate)
    assert store.read() == "a;\n" and path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["bird.conf"]


def test_secrets_directory(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "net" / "tor-md5").mkdir(parents=True)
    (root / "net" / "tor-md5" / "password").write_text("pw\n")
    secrets = SecretsDirectory(str(root))
    assert secrets.read(SecretKeyRef(namespace="net", name="tor-md5", key="password")).value == "pw"
    missing = secrets.read(SecretKeyRef(namespace="net", name="other", key="password"))
    assert missing.value is None and "does not exist" in (missing.missing_reason or "")
    dots = secrets.read(SecretKeyRef(namespace="net", name="tor-md5", key=".."))
    assert dots.value is None


SHOW_PROTOCOLS = [
    "2002-Name       Proto      Table      State  Since         Info",
    "1002-device1    Device     ---        up     2026-11-22 02:27:53.878  ",
    " tor        BGP        ---        up     2026-11-22 02:27:57.926  Established   ",
    " tor_b      BGP        ---        start  2026-11-22 02:28:16.508  Connect       "
    "Received: Other configuration change",
    "0000 ",
]
SHOW_ROUTE = [
    "1007-Table master4:",
    "     10.100.0.5/32        blackhole [vips4 2026-11-22 02:27:53.878] * (200)",
    "     10.100.0.6/32        blackhole [vips4 2026-11-22 02:27:53.878] * (200)",
    "0000 ",
]


def _reply(lines: list[str]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    code = 0
    for line in lines:
        code, text, _ = parse_reply_line(line, code)
        out.append((code, text))
    return out


def test_parse_protocols_and_routes() -> None:
    protocols = parse_protocols(_reply(SHOW_PROTOCOLS))
    assert [(p.name, p.state, p.established) for p in protocols] == [
        ("device1", "up", False),
        ("tor", "up", True),
        ("tor_b", "start", False),
    ]
    assert protocols[2].info.startswith("Connect")
    assert protocols[1].since == "2026-11-22 02:27:57.926"
    assert parse_static_routes("\n".join(SHOW_ROUTE)) == {"10.100.0.5/32", "10.100.0.6/32"}
    # A route on the reply's first line carries the code; other lines do not name routes.
    first = "1007-10.100.0.7/32  blackhole [vips4 2026-11-22 02:27:53.878] * (200)\n0000 \n"
    assert parse_static_routes(first) == {"10.100.0.7/32"}
    assert parse_static_routes("1007-Table master6:\n fd00:1::5/128  blackhole\n0000 \n") == {
        "fd00:1::5/128"
    }
    assert parse_reply_line("0020 Configuration OK", 0) == (20, "Configuration OK", True)
    assert parse_reply_line("8002 bad.conf:1:10 syntax error", 0)[0] == 8002


def test_parse_bfd_sessions_and_bgp_states() -> None:
    # Reply lines of BIRD 2.0.12 (show bfd sessions; show protocols of a down protocol).
    reply = [
        (1020, "bfd1:"),
        (1020, "IP address                Interface  State      Since         Interval  Timeout"),
        (
            1020,
            "10.255.1.1                bn09bc75b  Up         2026-11-22 05:44:54    0.100    0.500",
        ),
        (
            1020,
            "fd00:255:1::1             bn09bc75b  Down       2026-11-22 05:44:54    1.000    0.000",
        ),
        (0, ""),
    ]
    assert parse_bfd_sessions(reply) == {"10.255.1.1": "Up", "fd00:255:1::1": "Down"}
    since = "2026-11-22 05:53:30"
    active = ProtocolStatus("p", "BGP", "start", since, "Active        Socket: Connection refused")
    assert (active.bgp_state, active.last_error) == ("Active", "Socket: Connection refused")
    idle = ProtocolStatus("p", "BGP", "start", since, "Idle          ")
    assert (idle.bgp_state, idle.last_error) == ("Idle", "")
    down = ProtocolStatus("p", "BGP", "down", since, "Received: Administrative shutdown")
    assert (down.bgp_state, down.last_error) == ("Down", "Received: Administrative shutdown")
    assert ProtocolStatus("p", "BGP", "start", since, "Weird").bgp_state == "Unknown"


async def test_a_reply_read_in_blocks_is_whole_however_the_socket_cuts_it(tmp_path: Path) -> None:
    """The control socket's bytes arrive in pieces that cut lines anywhere (and a greeting may
    share a read with nothing else): the reply is every line up to the final one, no more."""
    routes = [
        f"     10.100.{i // 256}.{i % 256}/32  blackhole [vips4 x] * (200)" for i in range(3000)
    ]
    answer = "\n".join(["1007-Table master4:", *routes, "0000 ", ""]).encode()
    commands: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"0001 BIRD 2.0.12 ready.\n")
        await writer.drain()
        commands.append(await reader.readline())
        for start in range(0, len(answer), 7919):  # a prime: cuts fall mid-line
            writer.write(answer[start : start + 7919])
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(b"0000 not part of this reply\n")
        await writer.drain()
        writer.close()

    path = str(tmp_path / "bird.ctl")
    server = await asyncio.start_unix_server(serve, path)
    async with server:
        got = await BirdSocket(path).static_routes()
    assert commands[0] == b"show route protocol vips4\n"
    assert len(got) == 3000 and "10.100.11.183/32" in got


async def test_a_reply_cut_short_is_an_unavailable_bird(tmp_path: Path) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"0001 BIRD 2.0.12 ready.\n")
        await reader.readline()
        writer.write(b"1007-Table master4:\n     10.0.0.1/32 blackhole")
        await writer.drain()
        writer.close()

    path = str(tmp_path / "bird.ctl")
    server = await asyncio.start_unix_server(serve, path)
    async with server:
        with pytest.raises(BirdUnavailable):
            await BirdSocket(path).protocols()
