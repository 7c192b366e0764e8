"""RFC 2136 dynamic updates signed with TSIG (RFC 8945), reads by AXFR or by query, and
verification through aiodns (c-ares: the resolver library clients use), all asynchronous.

Works against any authoritative server that accepts signed updates and transfers: Knot, BIND,
PowerDNS. Updates go over TCP: a batch of a few hundred names does not fit a UDP datagram, and a
TCP answer cannot be spoofed off-path. The TCP connection is kept open and reused (RFC 7766):
a connection per update costs a handshake each time, and a SYN that is lost or answered by a
TIME_WAIT socket is retried by the kernel only after its initial 1 s timeout, which was the whole
tail of the publish latency (measured: bench/dns-writer/report.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import aiodns
import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.node
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.tsig
import dns.tsigkeyring
import dns.update
import dns.xfr
import dns.zone
from dns._asyncbackend import StreamSocket

from ..domain import NamePlan, NameState, OwnerRecord, ZoneView
from .provider import (
    AuthRejected,
    NotAuthoritative,
    PrerequisiteFailed,
    ProviderError,
    Refused,
    Unavailable,
)

_TSIG_ERRORS = (
    dns.tsig.PeerBadKey,
    dns.tsig.PeerBadSignature,
    dns.tsig.PeerBadTime,
    dns.tsig.PeerBadTruncation,
    dns.tsig.BadSignature,
    dns.tsig.BadTime,
)
_PREREQ_RCODES = {dns.rcode.YXDOMAIN, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.NXRRSET}
_TXT_CHUNK = 255
_MAX_IDLE_STREAMS = 4
_UPDATE_TIMEOUT = 15.0


def _txt_rdata(text: str) -> dns.rdtypes.ANY.TXT.TXT:
    # One TXT string holds at most 255 octets; a long registry record spans several strings.
    raw = text.encode("ascii")
    chunks = [raw[i : i + _TXT_CHUNK] for i in range(0, len(raw), _TXT_CHUNK)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)


def _address_rdata(rtype: str, value: str) -> dns.rdata.Rdata:
    # Built directly: parsing presentation text costs a millisecond per record, which is most of
    # the time of a 10,000-name sync.
    if rtype == "A":
        return dns.rdtypes.IN.A.A(dns.rdataclass.IN, dns.rdatatype.A, value)  # type: ignore[no-untyped-call]
    return dns.rdtypes.IN.AAAA.AAAA(dns.rdataclass.IN, dns.rdatatype.AAAA, value)  # type: ignore[no-untyped-call]


def _txt_text(rdata: dns.rdtypes.ANY.TXT.TXT) -> str:
    return b"".join(rdata.strings).decode("ascii", errors="replace")


def build_update(
    zone: str,
    plans: Sequence[NamePlan],
    *,
    keyring: dict[dns.name.Name, dns.tsig.Key] | None,
    keyname: dns.name.Name | None,
    algorithm: dns.name.Name | str,
) -> dns.update.UpdateMessage:
    update = dns.update.UpdateMessage(
        zone + ".", keyring=keyring, keyname=keyname, keyalgorithm=algorithm
    )
    for plan in plans:
        name = plan.fqdn + "."
        for rtype in plan.absent:
            update.absent(name, rtype)
        for change in plan.changes:
            owner = plan.registry + "." if change.rtype == "TXT" else name
            if change.rtype == "TXT":
                rdata = _txt_rdata(change.value)
                if change.op == "add":
                    update.add(owner, change.ttl, rdata)
                else:
                    update.delete(owner, rdata)
            elif change.op == "add":
                update.add(owner, change.ttl, _address_rdata(change.rtype, change.value))
            else:
                update.delete(owner, _address_rdata(change.rtype, change.value))
    return update


class Rfc2136Provider:
    def __init__(
        self,
        *,
        server: str,
        port: int,
        key_name: str | None,
        algorithm: str,
        secret: str | None,
        registry_prefix: str,
        timeout: float = 2.0,
        name: str | None = None,
    ) -> None:
        self.name = name or f"rfc2136://{server}:{port}"
        self._server = server
        self._port = port
        self._timeout = timeout
        self._prefix = registry_prefix
        self._algorithm = dns.name.from_text(algorithm)
        if key_name and secret:
            self._keyname: dns.name.Name | None = dns.name.from_text(key_name)
            self._keyring: dict[dns.name.Name, dns.tsig.Key] | None = {
                self._keyname: dns.tsig.Key(self._keyname, secret, self._algorithm)
            }
        else:
            self._keyname = None
            self._keyring = None
        self._idle: list[StreamSocket] = []
        """Open TCP connections to the server, each carrying one exchange at a time."""
        self._copies: dict[str, dns.zone.Zone] = {}
        """The zone as the last transfer left it: the next one asks only for what changed
        since its serial (IXFR, RFC 1995), as a secondary server does."""
        self.transfers = {"full": 0, "incremental": 0}
        """Whole-zone reads by kind of transfer asked for."""
        self._nodes: dict[str, dict[dns.name.Name, _Node]] = {}
        self._states: dict[str, dict[str, tuple[_Node | None, _Node | None, NameState]]] = {}

    # ------------------------------------------------------------------ writing

    async def apply(self, zone: str, plans: Sequence[NamePlan]) -> None:
        update = build_update(
            zone, plans, keyring=self._keyring, keyname=self._keyname, algorithm=self._algorithm
        )
        response = await self._exchange_translating(update, zone)
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        text = dns.rcode.to_text(rcode)
        if rcode in _PREREQ_RCODES:
            raise PrerequisiteFailed(f"{zone}: a prerequisite failed ({text}): the zone changed")
        if rcode == dns.rcode.NOTAUTH:
            raise NotAuthoritative(
                f"{self.name} answered NOTAUTH for zone {zone}: it is not authoritative for it "
                "or does not accept this TSIG key"
            )
        if rcode == dns.rcode.REFUSED:
            raise Refused(f"{self.name} refused the update to {zone} (REFUSED: policy or ACL)")
        raise Unavailable(f"{self.name} answered {text} to the update of {zone}")

    async def _exchange(self, message: dns.message.Message, zone: str) -> dns.message.Message:
        stream = self._idle.pop() if self._idle else None
        try:
            return await self._exchange_on(stream, message)
        except (OSError, EOFError):
            if stream is None:
                raise
            # An idle connection the server closed (Knot: tcp-idle-timeout) fails on first use:
            # reconnect once. A repeated update is safe: adds and deletes of exact values are
            # idempotent and the prerequisites guard first writes.
            return await self._exchange_on(None, message)

    async def _exchange_on(
        self, stream: StreamSocket | None, message: dns.message.Message
    ) -> dns.message.Message:
        if stream is None:
            backend = dns.asyncbackend.get_backend("asyncio")
            family = socket.AF_INET6 if ":" in self._server else socket.AF_INET
            stream = await backend.make_socket(  # type: ignore[no-untyped-call]
                family,
                socket.SOCK_STREAM,
                0,
                None,
                (self._server, self._port),
                self._timeout,
            )
        try:
            response = await dns.asyncquery.tcp(
                message,
                self._server,
                # A batch of a few hundred names takes the server longer to commit than a query
                # takes to answer, more so with several batches queued: give it room, or a slow
                # commit is taken for an outage and the whole pass is retried.
                timeout=max(self._timeout, _UPDATE_TIMEOUT),
                port=self._port,
                sock=stream,
            )
        except BaseException:
            # A half-read answer leaves the stream out of step: never reuse it after an error.
            await _close(stream)
            raise
        if len(self._idle) < _MAX_IDLE_STREAMS:
            self._idle.append(stream)
        else:
            await _close(stream)
        return response

    async def _exchange_translating(
        self, message: dns.message.Message, zone: str
    ) -> dns.message.Message:
        try:
            return await self._exchange(message, zone)
        except _TSIG_ERRORS as exc:
            raise AuthRejected(
                f"{self.name} rejected our TSIG signature for zone {zone} "
                f"(key {self._keyname}, {type(exc).__name__}: {exc}); writing nothing until "
                "the key matches"
            ) from exc
        except dns.exception.FormError as exc:
            if "TSIG" in str(exc):
                # The server refused before checking the key and so did not sign its answer.
                raise NotAuthoritative(
                    f"{self.name} answered unsigned for zone {zone}: it does not serve the zone "
                    "or does not know the key"
                ) from exc
            raise Unavailable(f"{self.name} sent a malformed answer: {exc}") from exc
        except (OSError, EOFError, TimeoutError, dns.exception.Timeout) as exc:
            raise Unavailable(
                f"{self.name} unreachable: {type(exc).__name__}: {exc or 'timed out'}"
            ) from exc

    # ------------------------------------------------------------------ reading

    async def serial(self, zone: str) -> int:
        query = dns.message.make_query(zone + ".", dns.rdatatype.SOA)
        response = await self._query(query, zone)
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return int(rrset[0].serial)
        raise NotAuthoritative(f"{self.name} has no SOA for {zone}")

    async def _query(self, query: dns.message.Message, zone: str) -> dns.message.Message:
        try:
            response = await dns.asyncquery.udp(
                query, self._server, timeout=self._timeout, port=self._port
            )
            if response.flags & dns.flags.TC:
                response = await dns.asyncquery.tcp(
                    query, self._server, timeout=self._timeout, port=self._port
                )
        except (OSError, EOFError, TimeoutError, dns.exception.Timeout) as exc:
            raise Unavailable(
                f"{self.name} unreachable: {type(exc).__name__}: {exc or 'timed out'}"
            ) from exc
        rcode = response.rcode()
        if rcode == dns.rcode.REFUSED:
            raise Refused(f"{self.name} refused a query in {zone}")
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise Unavailable(f"{self.name} answered {dns.rcode.to_text(rcode)} in {zone}")
        return response

    async def read(self, zone: str, names: Collection[str] | None = None) -> ZoneView:
        if names is None:
            return await self._transfer(zone)
        view = ZoneView(zone)
        states = await asyncio.gather(*(self._read_name(zone, n) for n in names))
        for fqdn, state in zip(names, states, strict=True):
            view.names[fqdn] = state
        return view

    async def _read_name(self, zone: str, fqdn: str) -> NameState:
        from ..domain import registry_name

        name = dns.name.from_text(fqdn + ".")
        registry = dns.name.from_text(registry_name(fqdn, self._prefix) + ".")
        answers = await asyncio.gather(
            self._query(dns.message.make_query(name, dns.rdatatype.A), zone),
            self._query(dns.message.make_query(name, dns.rdatatype.AAAA), zone),
            self._query(dns.message.make_query(registry, dns.rdatatype.TXT), zone),
        )
        addresses: set[str] = set()
        ttl: int | None = None
        cname = False
        texts: set[str] = set()
        for response in answers:
            for rrset in response.answer:
                if rrset.name != name and rrset.name != registry:
                    continue  # the target of a CNAME chain is not this name
                if rrset.rdtype == dns.rdatatype.CNAME:
                    cname = True
                elif rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    addresses.update(r.address for r in rrset)
                    ttl = rrset.ttl
                elif rrset.rdtype == dns.rdatatype.TXT:
                    texts.update(_txt_text(r) for r in rrset)
        return _state(frozenset(addresses), ttl, cname, frozenset(texts))

    async def _transfer(self, zone: str) -> ZoneView:
        """The whole zone. Once a copy is held, an IXFR brings only the changes since its serial
        (a 10,000-name AXFR was seconds of parsing on the event loop, every time our own writes
        moved the serial); the server may answer with the whole zone instead, which dnspython
        applies the same way. A copy that cannot be brought up to date is dropped: the next
        read is a full transfer."""
        origin = dns.name.from_text(zone + ".")
        copy = self._copies.pop(zone, None)
        if copy is not None:
            try:
                holder = await self._xfr(zone, copy, incremental=True)
            except (Unavailable, AuthRejected):
                raise  # a full transfer would fail the same way
            except (dns.exception.DNSException, Refused, NotAuthoritative):
                # The serial went backwards (the zone was recreated), the server keeps no
                # history that far back and refused, or the changes did not apply to our copy.
                holder = await self._xfr(zone, dns.zone.Zone(origin), incremental=False)
        else:
            holder = await self._xfr(zone, dns.zone.Zone(origin), incremental=False)
        self._copies[zone] = holder
        return self._view(zone, holder)

    async def _xfr(self, zone: str, holder: dns.zone.Zone, incremental: bool) -> dns.zone.Zone:
        query, _ = dns.xfr.make_query(
            holder,
            serial=0 if incremental else None,
            keyring=self._keyring,
            keyname=self._keyname,
            keyalgorithm=self._algorithm,
        )
        self.transfers["incremental" if incremental else "full"] += 1
        kind = "IXFR" if incremental else "AXFR"
        try:
            await dns.asyncquery.inbound_xfr(
                self._server,
                holder,
                query,
                port=self._port,
                # A transfer of a large zone legitimately takes longer than one query.
                timeout=max(self._timeout, 5.0),
                lifetime=max(self._timeout, 60.0),
            )
        except dns.xfr.SerialWentBackwards:
            raise
        except _TSIG_ERRORS as exc:
            raise AuthRejected(f"{self.name} rejected our TSIG on {kind} of {zone}: {exc}") from exc
        except dns.xfr.TransferError as exc:
            rcode = exc.rcode
            if rcode == dns.rcode.NOTAUTH:
                raise NotAuthoritative(f"{self.name}: {kind} of {zone} NOTAUTH") from exc
            raise Refused(f"{self.name} refused {kind} of {zone}: {exc}") from exc
        except dns.exception.FormError as exc:
            raise NotAuthoritative(f"{self.name} answered {kind} of {zone} unsigned") from exc
        except (OSError, EOFError, TimeoutError, dns.exception.Timeout) as exc:
            raise Unavailable(f"{self.name} unreachable for {kind} of {zone}: {exc}") from exc
        return holder

    def _view(self, zone: str, holder: dns.zone.Zone) -> ZoneView:
        """The names of the zone copy. A transfer replaces only the nodes it changes (dnspython
        copies a node on write), so a node still the same object is not read again, and a name
        whose node and registry node are both unchanged keeps its state: after an IXFR, turning
        10,000 nodes back into names costs a dictionary walk, not 10,000 parses."""
        origin = holder.origin
        assert origin is not None
        view = ZoneView(zone)
        prefix = self._prefix
        before = self._nodes.get(zone, {})
        nodes: dict[dns.name.Name, _Node] = {}
        by_fqdn: dict[str, _Node] = {}
        registry: dict[str, _Node] = {}
        for rel, node in holder.nodes.items():
            known = before.get(rel)
            if known is None or known.node is not node:
                known = _Node.read(rel.derelativize(origin), node)
            nodes[rel] = known
            if known.serial is not None:
                view.serial = known.serial
            base = _registry_base(known.fqdn, prefix)
            if base is None:
                by_fqdn[known.fqdn] = known
            else:
                registry[base] = known
        self._nodes[zone] = nodes
        old_states = self._states.get(zone, {})
        states: dict[str, tuple[_Node | None, _Node | None, NameState]] = {}
        for fqdn in by_fqdn.keys() | registry.keys():
            own, reg = by_fqdn.get(fqdn), registry.get(fqdn)
            kept = old_states.get(fqdn)
            if kept is not None and kept[0] is own and kept[1] is reg:
                states[fqdn] = kept
                view.names[fqdn] = kept[2]
                continue
            addresses = own.addresses if own is not None else frozenset()
            texts = reg.texts if reg is not None else frozenset()
            cname = own is not None and own.cname
            if not addresses and not texts and not cname:
                continue
            state = _state(addresses, own.ttl if own is not None else None, cname, texts)
            states[fqdn] = (own, reg, state)
            view.names[fqdn] = state
        self._states[zone] = states
        return view

    # ------------------------------------------------------------------ verifying

    async def resolve(self, fqdn: str) -> frozenset[str]:
        return (await self.resolve_many([fqdn]))[fqdn]

    async def resolve_many(self, fqdns: Sequence[str]) -> dict[str, frozenset[str]]:
        # A resolver per call, shared by the names of one call: c-ares caches answers per
        # channel, and a verification must see the server's answer of now, not one from before
        # our update; within one call each name is asked once, so the cache never answers. One
        # channel per name cost more than the rest of a 10,000-name sync (a thread each).
        resolver = aiodns.DNSResolver(
            nameservers=[self._server],
            udp_port=self._port,
            tcp_port=self._port,
            timeout=self._timeout,
            tries=2,
        )
        gate = asyncio.Semaphore(64)

        async def one(fqdn: str) -> frozenset[str]:
            values: set[str] = set()
            async with gate:
                for qtype in ("A", "AAAA"):
                    try:
                        result = await resolver.query_dns(fqdn, qtype)
                    except aiodns.error.DNSError as exc:
                        if exc.args and exc.args[0] in (
                            aiodns.error.ARES_ENODATA,
                            aiodns.error.ARES_ENOTFOUND,
                        ):
                            continue
                        raise Unavailable(
                            f"{self.name}: resolving {fqdn} {qtype} failed: {exc}"
                        ) from exc
                    values.update(
                        str(r.data.addr) for r in result.answer if hasattr(r.data, "addr")
                    )
            return frozenset(values)

        try:
            found = await asyncio.gather(*(one(f) for f in fqdns))
        finally:
            await resolver.close()
        return dict(zip(fqdns, found, strict=True))

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for stream in idle:
            await _close(stream)


async def _close(stream: StreamSocket | None) -> None:
    if stream is not None:
        with contextlib.suppress(Exception):
            await stream.close()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class _Node:
    """What one node of a zone copy holds, read once per node object."""

    node: dns.node.Node
    fqdn: str
    addresses: frozenset[str]
    ttl: int | None
    cname: bool
    texts: frozenset[str]
    serial: int | None

    @classmethod
    def read(cls, name: dns.name.Name, node: dns.node.Node) -> _Node:
        addresses: set[str] = set()
        ttl: int | None = None
        cname = False
        texts: frozenset[str] = frozenset()
        serial: int | None = None
        for rdataset in node.rdatasets:
            if rdataset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                addresses.update(r.address for r in rdataset)
                ttl = rdataset.ttl
            elif rdataset.rdtype == dns.rdatatype.CNAME:
                cname = True
            elif rdataset.rdtype == dns.rdatatype.SOA:
                serial = int(rdataset[0].serial)
            elif rdataset.rdtype == dns.rdatatype.TXT:
                texts = frozenset(_txt_text(r) for r in rdataset)
        fqdn = name.to_text(omit_final_dot=True).lower()
        return cls(node, fqdn, frozenset(addresses), ttl, cname, texts, serial)


def _registry_base(fqdn: str, prefix: str) -> str | None:
    if fqdn.startswith(prefix + "."):
        return fqdn[len(prefix) + 1 :]
    if fqdn.startswith(prefix + "-wildcard."):
        return "*." + fqdn[len(prefix) + len("-wildcard.") :]
    return None


def _state(
    addresses: frozenset[str], ttl: int | None, cname: bool, texts: frozenset[str]
) -> NameState:
    owners = tuple(o for t in sorted(texts) if (o := OwnerRecord.parse(t)) is not None)
    return NameState(addresses=addresses, ttl=ttl, cname=cname, owners=owners, registry_texts=texts)


__all__ = ["ProviderError", "Rfc2136Provider", "build_update"]
