"""The RFC 2136 + TSIG provider against a real knotd, verified by AXFR and by aiodns."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ingress_dns_writer.adapters.knot_process import KnotServer, TsigKey, render_config
from ingress_dns_writer.adapters.provider import (
    AuthRejected,
    NotAuthoritative,
    PrerequisiteFailed,
    Refused,
    Unavailable,
)
from ingress_dns_writer.adapters.rfc2136 import Rfc2136Provider, build_update
from ingress_dns_writer.domain import Desired, NameState, Rejection, plan_publish, plan_remove

pytestmark = pytest.mark.integration

ZONE = "example.test"
PREFIX = "_ingress-owner"
GOLDEN = Path(__file__).parent / "golden"


def provider(knot: KnotServer, key: TsigKey) -> Rfc2136Provider:
    return Rfc2136Provider(
        server="127.0.0.1",
        port=knot.port,
        key_name=key.name,
        algorithm=key.algorithm,
        secret=key.secret,
        registry_prefix=PREFIX,
        timeout=1.0,
    )


def want(fqdn: str, *values: str, ttl: int = 30) -> Desired:
    return Desired(fqdn, ZONE, f"domain/{fqdn}", frozenset(values), frozenset(values), ttl, 1)


async def publish(p: Rfc2136Provider, owner: str, d: Desired) -> None:
    current = (await p.read(ZONE, [d.fqdn])).get(d.fqdn)
    plan = plan_publish(d, current, owner, PREFIX)
    assert not isinstance(plan, Rejection), plan
    await p.apply(ZONE, [plan])


async def test_write_resolve_and_converge(knot: KnotServer, tsig_keys: list[TsigKey]) -> None:
    p = provider(knot, tsig_keys[0])
    d = want("app.example.test", "10.0.0.1", "2001:db8::1")
    await publish(p, "cluster-a", d)
    assert await p.resolve("app.example.test") == {"10.0.0.1", "2001:db8::1"}
    view = await p.read(ZONE)  # AXFR
    state = view.get("app.example.test")
    assert state.addresses == {"10.0.0.1", "2001:db8::1"} and state.ttl == 30
    assert state.mine("cluster-a") is not None
    # The same name read by queries and by transfer agrees, and a second plan is empty.
    assert (await p.read(ZONE, ["app.example.test"])).get("app.example.test") == state
    again = plan_publish(d, state, "cluster-a", PREFIX)
    assert not isinstance(again, Rejection) and again.empty
    # Changing the VIP and the TTL.
    await publish(p, "cluster-a", want("app.example.test", "10.0.0.9", ttl=60))
    assert await p.resolve("app.example.test") == {"10.0.0.9"}
    assert (await p.read(ZONE, ["app.example.test"])).get("app.example.test").ttl == 60


async def test_foreign_records_untouched_including_apex(
    knot: KnotServer, tsig_keys: list[TsigKey]
) -> None:
    p = provider(knot, tsig_keys[0])
    before = await p.read(ZONE)
    for fqdn, reason in [
        ("example.test", "NameHeldByForeignRecord"),
        ("legacy.example.test", "NameHeldByForeignRecord"),
        ("alias.example.test", "CnameAtName"),
    ]:
        current = (await p.read(ZONE, [fqdn])).get(fqdn)
        plan = plan_publish(want(fqdn, "10.0.0.1"), current, "cluster-a", PREFIX)
        assert isinstance(plan, Rejection) and plan.reason == reason
        removal = plan_remove(fqdn, ZONE, current, "cluster-a", PREFIX, upsert_only=False)
        assert removal.empty
    await publish(p, "cluster-a", want("fresh.example.test", "10.0.0.1"))
    after = await p.read(ZONE)
    for name in ("example.test", "legacy.example.test", "alias.example.test"):
        assert after.get(name) == before.get(name)
    assert await p.resolve("example.test") == {"192.0.2.10"}


async def test_a_held_copy_is_brought_up_to_date_by_ixfr(
    knot: KnotServer, tsig_keys: list[TsigKey]
) -> None:
    """After the first whole-zone read, the next ones ask only for the changes since the held
    serial (ours and anyone else's), and read exactly what a fresh AXFR reads."""
    a, b = provider(knot, tsig_keys[0]), provider(knot, tsig_keys[1])
    first = await a.read(ZONE)
    assert a.transfers == {"full": 1, "incremental": 0}

    async def same_as_a_fresh_axfr() -> None:
        held = await a.read(ZONE)
        fresh = await provider(knot, tsig_keys[0]).read(ZONE)
        assert held.names == fresh.names and held.serial == fresh.serial

    await publish(a, "cluster-a", want("one.example.test", "10.0.0.1"))
    await publish(b, "cluster-b", want("two.example.test", "10.0.1.1", "2001:db8::2"))
    await same_as_a_fresh_axfr()
    assert a.transfers == {"full": 1, "incremental": 1}
    # Changed, shared and removed names, written by the other writer, come across too.
    await publish(b, "cluster-b", want("one.example.test", "10.0.1.9"))
    two = (await b.read(ZONE, ["two.example.test"])).get("two.example.test")
    await b.apply(
        ZONE, [plan_remove("two.example.test", ZONE, two, "cluster-b", PREFIX, upsert_only=False)]
    )
    await same_as_a_fresh_axfr()
    unchanged = await a.read(ZONE)  # nothing new: the server answers with its SOA alone
    assert unchanged.serial is not None and first.serial is not None
    assert unchanged.serial > first.serial
    assert a.transfers == {"full": 1, "incremental": 3}
    # A copy claiming a serial the server never had (a zone recreated with lower serials
    # looks the same from here) is replaced by a whole transfer, not trusted.
    copy = a._copies[ZONE]
    with copy.writer() as txn:
        soa = txn.get("@", "SOA")[0]
        txn.replace("@", 3600, soa.replace(serial=soa.serial + 1000))
        txn.delete("one")
    await same_as_a_fresh_axfr()
    assert a.transfers["full"] == 2


async def test_two_writers_share_a_name(knot: KnotServer, tsig_keys: list[TsigKey]) -> None:
    a, b = provider(knot, tsig_keys[0]), provider(knot, tsig_keys[1])
    await publish(a, "cluster-a", want("shop.example.test", "10.0.0.1"))
    await publish(b, "cluster-b", want("shop.example.test", "10.0.1.1"))
    assert await a.resolve("shop.example.test") == {"10.0.0.1", "10.0.1.1"}
    state = (await a.read(ZONE, ["shop.example.test"])).get("shop.example.test")
    assert {o.owner for o in state.owners} == {"cluster-a", "cluster-b"}
    # A removes its own value only.
    await a.apply(
        ZONE,
        [plan_remove("shop.example.test", ZONE, state, "cluster-a", PREFIX, upsert_only=False)],
    )
    assert await b.resolve("shop.example.test") == {"10.0.1.1"}
    state = (await b.read(ZONE, ["shop.example.test"])).get("shop.example.test")
    assert [o.owner for o in state.owners] == ["cluster-b"]


async def test_prerequisite_stops_joining_a_record_created_meanwhile(
    knot: KnotServer, tsig_keys: list[TsigKey]
) -> None:
    a, b = provider(knot, tsig_keys[0]), provider(knot, tsig_keys[1])
    stale = (await a.read(ZONE, ["race.example.test"])).get("race.example.test")
    await publish(b, "cluster-b", want("race.example.test", "10.0.1.1"))
    plan = plan_publish(want("race.example.test", "10.0.0.1"), stale, "cluster-a", PREFIX)
    assert not isinstance(plan, Rejection)
    with pytest.raises(PrerequisiteFailed):
        await a.apply(ZONE, [plan])
    assert await a.resolve("race.example.test") == {"10.0.1.1"}


async def test_wrong_tsig_secret_fails_closed(knot: KnotServer, tsig_keys: list[TsigKey]) -> None:
    forged = TsigKey(tsig_keys[0].name, tsig_keys[0].algorithm, TsigKey.generate("x.").secret)
    bad = provider(knot, forged)
    current = (await bad.read(ZONE, ["evil.example.test"])).get("evil.example.test")
    plan = plan_publish(want("evil.example.test", "10.6.6.6"), current, "cluster-a", PREFIX)
    assert not isinstance(plan, Rejection)
    with pytest.raises(AuthRejected, match="rejected our TSIG signature"):
        await bad.apply(ZONE, [plan])
    with pytest.raises(AuthRejected):
        await bad.read(ZONE)  # AXFR is refused to a forged key too
    unknown = provider(knot, TsigKey.generate("nobody."))
    with pytest.raises(AuthRejected):
        await unknown.apply(ZONE, [plan])
    assert await provider(knot, tsig_keys[0]).resolve("evil.example.test") == frozenset()


async def test_notauth_refused_and_server_down(knot: KnotServer, tsig_keys: list[TsigKey]) -> None:
    p = provider(knot, tsig_keys[0])
    plan = plan_publish(
        Desired(
            "x.other.test",
            "other.test",
            "domain/x.other.test",
            frozenset({"10.0.0.1"}),
            frozenset({"10.0.0.1"}),
            30,
            1,
        ),
        NameState(),
        "cluster-a",
        PREFIX,
    )
    assert not isinstance(plan, Rejection)
    with pytest.raises(NotAuthoritative):
        await p.apply("other.test", [plan])
    with pytest.raises(Refused):
        await p.serial("other.test")
    knot.stop()
    with pytest.raises(Unavailable):
        await p.serial(ZONE)
    with pytest.raises(Unavailable):
        await p.apply(ZONE, [])


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed: rerun with UPDATE_GOLDEN=1 and review"


def test_golden_knot_config_and_update_message() -> None:
    keys = [
        TsigKey("writer-a.", "hmac-sha256", "c2VjcmV0LWEtc2VjcmV0LWEtc2VjcmV0LWEtMzI="),
        TsigKey("writer-b.", "hmac-sha256", "c2VjcmV0LWItc2VjcmV0LWItc2VjcmV0LWItMzI="),
    ]
    _golden(
        "knot.conf",
        render_config(
            port=5353, workdir=Path("/run/dns-writer"), zones=["example.test"], keys=keys
        ),
    )
    plan = plan_publish(
        want("app.example.test", "10.0.0.1", "2001:db8::1"), NameState(), "cluster-a", PREFIX
    )
    assert not isinstance(plan, Rejection)
    update = build_update(ZONE, [plan], keyring=None, keyname=None, algorithm="hmac-sha256")
    lines = [ln for ln in update.to_text().splitlines() if not ln.startswith("id ")]
    _golden("update-first-write.txt", "\n".join(lines) + "\n")
