"""The event catalogue, version 1.

Every event is level-triggered: it carries the complete state of its key (one domain, one backend
Service port, one VIP owner, one node x VIP, ...) and a ``generation`` that increases with every
change of that key, never a diff. Consumers keep the highest generation they have seen per key and
ignore older ones, so duplicates, replays and reordering are harmless.

Each family of events lives on its own subjects (``<root>.v1.<family>.<key tokens>``) and in its
own JetStream stream that keeps the last message per subject: the last message of a key is its
current state, and a ``*.deleted`` / ``*.removed`` / ``*.released`` / ``*.withdrawn`` event is the
tombstone that ends it.

Compatibility rule within a major version: fields may be added only as optional, nothing is
removed, renamed or retyped, and consumers ignore fields they do not know (``extra="ignore"``).
"""

from __future__ import annotations

from abc import abstractmethod
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .types import (
    Cidr,
    Generation,
    Hostname,
    IpAddress,
    IpFamily,
    K8sName,
    Message,
    Namespace,
    NodeName,
    Port,
    Protocol,
    Reason,
    Sha256Hex,
    Weight,
)

CATALOGUE_VERSION = 1
CE_TYPE_PREFIX = "io.ingress-domain"
CLUSTER_SCOPE = "-"
"""Namespace token for cluster-scoped objects (never a valid Kubernetes namespace name)."""


class Family(StrEnum):
    """A family of events: one subject tree and one JetStream stream."""

    DOMAIN = "domain"
    BACKEND = "backend"
    LBSERVICE = "lbservice"
    POOL = "pool"
    PEER = "peer"
    VIP = "vip"
    L4 = "l4"
    L7 = "l7"
    DNS = "dns"
    ROUTE = "route"
    ADMISSION = "admission"
    SESSION = "session"


KEY_PARTS: dict[Family, tuple[tuple[str, ...], ...]] = {
    # The names of the key parts of each family's subjects (several shapes for ``vip``).
    Family.DOMAIN: (("host",),),
    Family.BACKEND: (("namespace", "service", "port"),),
    Family.LBSERVICE: (("namespace", "service"),),
    Family.POOL: (("pool",),),
    Family.PEER: (("peer",),),
    Family.VIP: (("owner_kind=domain", "host"), ("owner_kind=service", "namespace", "service")),
    Family.L4: (("node", "vip"),),
    Family.L7: (("host",),),
    Family.DNS: (("fqdn",),),
    Family.ROUTE: (("node", "vip"),),
    Family.ADMISSION: (("component", "kind", "namespace", "name"),),
    Family.SESSION: (("node", "peer"),),
}

CONSUMERS: dict[Family, tuple[str, ...]] = {
    # Which services of the system subscribe to each family (any other team may too).
    Family.DOMAIN: ("ipam", "l7-config", "dns-writer"),
    Family.BACKEND: ("l7-config", "l4-programmer"),
    Family.LBSERVICE: ("ipam",),
    Family.POOL: ("ipam", "l4-programmer", "bgp-speaker"),
    Family.PEER: ("bgp-speaker",),
    Family.VIP: ("l4-programmer", "dns-writer", "bgp-speaker", "ingress-watcher"),
    Family.L4: ("bgp-speaker", "ingress-watcher"),
    Family.L7: ("ingress-watcher",),
    Family.DNS: ("ingress-watcher",),
    Family.ROUTE: ("dns-writer", "ingress-watcher"),
    Family.ADMISSION: ("ingress-watcher",),
    Family.SESSION: ("ingress-watcher",),
}


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Event(Model):
    """Base of every event. Subclasses set ``family`` and ``name`` and define :meth:`key`."""

    family: ClassVar[Family]
    name: ClassVar[str]
    version: ClassVar[int] = CATALOGUE_VERSION
    producer: ClassVar[str]
    summary: ClassVar[str]

    generation: Generation = Field(
        description=(
            "Increases with every change of this key's state. Producers use "
            "max(last generation seen for the key + 1, wall-clock microseconds), so a restarted "
            "or failed-over producer continues above its predecessor."
        )
    )

    @classmethod
    def event_type(cls) -> str:
        """The short type, e.g. ``domain.desired``."""
        return f"{cls.family.value}.{cls.name}"

    @classmethod
    def ce_type(cls) -> str:
        """The CloudEvents ``type`` attribute, with the major version in it."""
        return f"{CE_TYPE_PREFIX}.{cls.event_type()}.v{cls.version}"

    @abstractmethod
    def key(self) -> tuple[str, ...]:
        """The parts of this event's key, in subject order (encoded by keys.encode_key)."""


# --------------------------------------------------------------------------- shared parts


class ObjectRef(Model):
    """A Kubernetes object. ``namespace`` is ``-`` for cluster-scoped objects."""

    kind: str = Field(pattern=r"^[A-Z][A-Za-z0-9]{0,62}$")
    namespace: Namespace | Literal["-"]
    name: K8sName
    uid: str | None = None
    generation: int | None = Field(
        default=None, ge=0, description="metadata.generation of the object, where it matters."
    )


class BackendRef(Model):
    """A port of a Service in the cluster: the key of its ``backend.endpoints`` events."""

    namespace: Namespace
    service: K8sName
    port: Port = Field(description="The Service port number (names are resolved by the watcher).")


class RemoteBackend(Model):
    """Another cluster serving the same domain, used as a low-priority fallback (federation)."""

    cluster: K8sName
    address: IpAddress = Field(description="The remote cluster's VIP for this domain.")
    port: Port
    weight: Weight = 1
    priority: int = Field(
        default=1,
        ge=0,
        le=127,
        description="Envoy locality priority: 0 = local, higher = fallback.",
    )


class WeightedBackend(Model):
    backend: BackendRef
    weight: Weight = Field(default=100, description="Relative weight, for canaries.")


class Rewrite(Model):
    host: Hostname | None = None
    prefix: str | None = Field(
        default=None, pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$", max_length=1024
    )


class RouteTimeouts(Model):
    request_seconds: float | None = Field(default=None, gt=0, le=3600)
    idle_seconds: float | None = Field(default=None, gt=0, le=86400)


RetryOn = Literal["5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx"]


def _default_retry_on() -> list[RetryOn]:
    return ["connect-failure", "reset"]


def _ipv4_only() -> list[IpFamily]:
    return ["IPv4"]


class RetryPolicy(Model):
    attempts: int = Field(ge=0, le=10)
    per_try_timeout_seconds: float | None = Field(default=None, gt=0, le=3600)
    on: list[RetryOn] = Field(default_factory=_default_retry_on)


PathType = Literal["Exact", "Prefix", "ImplementationSpecific"]


class Route(Model):
    """One Ingress path rule under a domain."""

    path: str = Field(pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$", max_length=1024)
    path_type: PathType
    backends: list[WeightedBackend] = Field(min_length=1)
    source: ObjectRef = Field(description="The Ingress this route comes from.")
    timeouts: RouteTimeouts | None = None
    retries: RetryPolicy | None = None
    rewrite: Rewrite | None = None


class TlsConfig(Model):
    """Secrets never travel on the bus: a reference and a hash of the material."""

    secret: ObjectRef
    content_hash: Sha256Hex = Field(description="sha256 of tls.crt + tls.key, to notice rotation.")


class VipRequest(Model):
    pool: K8sName | None = None
    addresses: list[IpAddress] = Field(default_factory=list, description="Requested VIP(s).")
    sharing_key: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,63}$")


class DnsOptions(Model):
    ttl_seconds: int | None = Field(default=None, ge=1, le=86400)
    weight: Weight | None = Field(default=None, description="Federation weight of this cluster.")


# --------------------------------------------------------------------------- watcher: desired state


class DomainDesired(Event):
    """The complete desired state of one ingress domain (a hostname), from every Ingress that
    contributes to it and that passed validation and ownership checks."""

    family = Family.DOMAIN
    name = "desired"
    producer = "ingress-watcher"
    summary = "Desired state of one ingress domain: routes, TLS, VIP request, DNS options."

    host: Hostname
    owner_namespace: Namespace = Field(description="The namespace that owns the domain.")
    ingress_class: K8sName
    sources: list[ObjectRef] = Field(min_length=1, description="Ingresses contributing to it.")
    routes: list[Route] = Field(default_factory=list)
    default_backend: WeightedBackend | None = None
    remote_backends: list[RemoteBackend] = Field(default_factory=list)
    tls: TlsConfig | None = None
    http_redirect_to_https: bool = False
    vip: VipRequest = Field(default_factory=VipRequest)
    dns: DnsOptions = Field(default_factory=DnsOptions)

    def key(self) -> tuple[str, ...]:
        return (self.host,)


class DomainDeleted(Event):
    family = Family.DOMAIN
    name = "deleted"
    producer = "ingress-watcher"
    summary = "No accepted Ingress serves this domain any more."

    host: Hostname

    def key(self) -> tuple[str, ...]:
        return (self.host,)


class Endpoint(Model):
    address: IpAddress
    port: Port = Field(description="The target port on the endpoint.")
    ready: bool
    serving: bool = True
    terminating: bool = False
    node: NodeName | None = None
    zone: str | None = None
    target: ObjectRef | None = None


class BackendEndpoints(Event):
    """Every endpoint of one Service port, ready or not, merged across its EndpointSlices."""

    family = Family.BACKEND
    name = "endpoints"
    producer = "ingress-watcher"
    summary = "All endpoints of one Service port (from EndpointSlices), with readiness."

    namespace: Namespace
    service: K8sName
    port: Port
    port_name: str | None = None
    protocol: Protocol = "TCP"
    app_protocol: str | None = None
    endpoints: list[Endpoint] = Field(default_factory=list)

    def key(self) -> tuple[str, ...]:
        return (self.namespace, self.service, str(self.port))


class BackendDeleted(Event):
    family = Family.BACKEND
    name = "deleted"
    producer = "ingress-watcher"
    summary = "The Service port is gone."

    namespace: Namespace
    service: K8sName
    port: Port

    def key(self) -> tuple[str, ...]:
        return (self.namespace, self.service, str(self.port))


class ServicePort(Model):
    name: str | None = None
    port: Port
    protocol: Protocol = "TCP"


class LoadBalancerServiceDesired(Event):
    family = Family.LBSERVICE
    name = "desired"
    producer = "ingress-watcher"
    summary = "A Service of type LoadBalancer of this controller's class."

    namespace: Namespace
    service: K8sName
    ports: list[ServicePort] = Field(min_length=1)
    ip_families: list[IpFamily] = Field(default_factory=_ipv4_only, min_length=1, max_length=2)
    ip_family_policy: Literal["SingleStack", "PreferDualStack", "RequireDualStack"] = "SingleStack"
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    vip: VipRequest = Field(default_factory=VipRequest)
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation of the Service."
    )

    def key(self) -> tuple[str, ...]:
        return (self.namespace, self.service)


class LoadBalancerServiceDeleted(Event):
    family = Family.LBSERVICE
    name = "deleted"
    producer = "ingress-watcher"
    summary = "The LoadBalancer Service is gone or no longer of type LoadBalancer."

    namespace: Namespace
    service: K8sName

    def key(self) -> tuple[str, ...]:
        return (self.namespace, self.service)


class AddressRange(Model):
    first: IpAddress
    last: IpAddress


class PoolDesired(Event):
    """A VIP pool (the VipPool custom resource), as the user wrote it: ipam validates it."""

    family = Family.POOL
    name = "desired"
    producer = "ingress-watcher"
    summary = "A VIP pool definition (VipPool custom resource)."

    pool: K8sName
    cidrs: list[Cidr] = Field(default_factory=list)
    ranges: list[AddressRange] = Field(default_factory=list)
    exclude: list[IpAddress] = Field(default_factory=list)
    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces (names or '*' globs) that may draw; empty = all.",
    )
    zones: list[Hostname] = Field(default_factory=list)
    domains: list[Hostname] = Field(default_factory=list)
    priority: int = Field(default=0, ge=-1000, le=1000)
    auto_assign: bool = True
    default: bool = False
    announce: PoolAnnouncement | None = None
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation of the VipPool."
    )

    def key(self) -> tuple[str, ...]:
        return (self.pool,)


class PoolAnnouncement(Model):
    """How bgp-speaker announces VIPs of this pool."""

    communities: list[str] = Field(default_factory=list, max_length=32)
    large_communities: list[str] = Field(default_factory=list, max_length=32)
    local_preference: int | None = Field(default=None, ge=0, le=4294967295)


class PoolDeleted(Event):
    family = Family.POOL
    name = "deleted"
    producer = "ingress-watcher"
    summary = "The VIP pool is gone; existing allocations are kept until released."

    pool: K8sName

    def key(self) -> tuple[str, ...]:
        return (self.pool,)


class SecretKeyRef(Model):
    namespace: Namespace
    name: K8sName
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]{1,253}$")


class PeerDesired(Event):
    """A BGP peer (the BgpPeer custom resource). The MD5 password stays in its Secret."""

    family = Family.PEER
    name = "desired"
    producer = "ingress-watcher"
    summary = "A BGP peer definition (BgpPeer custom resource)."

    peer: K8sName
    address: IpAddress
    peer_asn: int = Field(ge=1, le=4294967295)
    local_asn: int = Field(ge=1, le=4294967295)
    nodes: list[str] = Field(default_factory=list, description="Node names or globs; empty = all.")
    password: SecretKeyRef | None = None
    password_hash: Sha256Hex | None = None
    hold_time_seconds: int = Field(default=90, ge=0, le=65535)
    keepalive_seconds: int | None = Field(default=None, ge=1, le=65535)
    graceful_restart: bool = True
    bfd: bool = False
    max_prefixes: int | None = Field(default=None, ge=1)
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation of the BgpPeer."
    )

    def key(self) -> tuple[str, ...]:
        return (self.peer,)


class PeerDeleted(Event):
    family = Family.PEER
    name = "deleted"
    producer = "ingress-watcher"
    summary = "The BGP peer is gone."

    peer: K8sName

    def key(self) -> tuple[str, ...]:
        return (self.peer,)


# --------------------------------------------------------------------------- ipam


class VipOwner(Model):
    """Who holds a VIP: an ingress domain, or a LoadBalancer Service."""

    kind: Literal["domain", "service"]
    host: Hostname | None = None
    namespace: Namespace | None = None
    service: K8sName | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> VipOwner:
        if self.kind == "domain" and (self.host is None or self.namespace or self.service):
            raise ValueError("a domain owner has a host and nothing else")
        if self.kind == "service" and (self.host or not self.namespace or not self.service):
            raise ValueError("a service owner has a namespace and a service and no host")
        return self

    def key(self) -> tuple[str, ...]:
        if self.kind == "domain":
            assert self.host is not None
            return ("domain", self.host)
        assert self.namespace is not None and self.service is not None
        return ("service", self.namespace, self.service)


class PortSpec(Model):
    port: Port
    protocol: Protocol = "TCP"


class VipAssigned(Event):
    family = Family.VIP
    name = "assigned"
    producer = "ipam"
    summary = "The VIP(s) held by one owner, and the ports it serves on them."

    owner: VipOwner
    addresses: list[IpAddress] = Field(min_length=1, max_length=2)
    pool: K8sName
    ports: list[PortSpec] = Field(min_length=1)
    sharing_key: str | None = None
    observed_generation: Generation = Field(description="Generation of the owner's desired event.")

    def key(self) -> tuple[str, ...]:
        return self.owner.key()


class VipReleased(Event):
    family = Family.VIP
    name = "released"
    producer = "ipam"
    summary = "The owner no longer holds a VIP; the address cools down before reuse."

    owner: VipOwner
    addresses: list[IpAddress] = Field(default_factory=list)
    reusable_after: str | None = Field(default=None, description="RFC 3339 time.")

    def key(self) -> tuple[str, ...]:
        return self.owner.key()


class VipRejected(Event):
    family = Family.VIP
    name = "rejected"
    producer = "ipam"
    summary = "No VIP could be given to the owner (pool exhausted, requested address taken...)."

    owner: VipOwner
    reason: Reason
    message: Message
    observed_generation: Generation

    def key(self) -> tuple[str, ...]:
        return self.owner.key()


# --------------------------------------------------------------------------- l4-programmer


class VirtualService(Model):
    port: Port
    protocol: Protocol = "TCP"
    scheduler: str = Field(pattern=r"^[a-z]{1,16}$")
    real_servers: int = Field(ge=0)
    ready_real_servers: int = Field(ge=0)


class L4Programmed(Event):
    family = Family.L4
    name = "programmed"
    producer = "l4-programmer"
    summary = "This node's dataplane serves the VIP (read back from the kernel and verified)."

    node: NodeName
    vip: IpAddress
    dataplane: Literal["ipvs", "nftables"]
    services: list[VirtualService] = Field(min_length=1)
    observed_generation: Generation = Field(description="Generation of the vip.assigned event.")

    def key(self) -> tuple[str, ...]:
        return (self.node, self.vip)


class L4NotReady(Event):
    family = Family.L4
    name = "not-ready"
    producer = "l4-programmer"
    summary = "This node cannot serve the VIP now, with the reason."

    node: NodeName
    vip: IpAddress
    reason: Reason
    message: Message
    observed_generation: Generation | None = None

    def key(self) -> tuple[str, ...]:
        return (self.node, self.vip)


class L4Removed(Event):
    family = Family.L4
    name = "removed"
    producer = "l4-programmer"
    summary = "The VIP is no longer programmed on this node (it was released)."

    node: NodeName
    vip: IpAddress

    def key(self) -> tuple[str, ...]:
        return (self.node, self.vip)


# --------------------------------------------------------------------------- l7-config


class L7Applied(Event):
    family = Family.L7
    name = "applied"
    producer = "l7-config"
    summary = "Every connected Envoy has ACKed a configuration containing this domain generation."

    host: Hostname
    observed_generation: Generation = Field(description="Generation of the domain.desired event.")
    envoys: int = Field(ge=0, description="How many Envoys ACKed it.")
    config_version: str

    def key(self) -> tuple[str, ...]:
        return (self.host,)


class L7Rejected(Event):
    family = Family.L7
    name = "rejected"
    producer = "l7-config"
    summary = "The domain's configuration was refused (ours or Envoy's NACK); the last good stays."

    host: Hostname
    observed_generation: Generation
    reason: Reason
    message: Message = Field(description="Envoy's error detail for a NACK.")

    def key(self) -> tuple[str, ...]:
        return (self.host,)


class L7Removed(Event):
    family = Family.L7
    name = "removed"
    producer = "l7-config"
    summary = "The domain is no longer configured in Envoy."

    host: Hostname

    def key(self) -> tuple[str, ...]:
        return (self.host,)


# --------------------------------------------------------------------------- dns-writer


class DnsRecord(Model):
    record_type: Literal["A", "AAAA"]
    values: list[IpAddress] = Field(description="The values this cluster owns.")
    ttl_seconds: int = Field(ge=1, le=86400)


class DnsPublished(Event):
    family = Family.DNS
    name = "published"
    producer = "dns-writer"
    summary = "The name resolves to this cluster's VIP(s) at every configured provider."

    fqdn: Hostname
    zone: Hostname
    owner_id: str = Field(description="This cluster's owner id in the TXT ownership registry.")
    records: list[DnsRecord] = Field(min_length=1)
    providers: list[str] = Field(min_length=1)
    observed_generation: Generation = Field(description="Generation of the vip.assigned event.")

    def key(self) -> tuple[str, ...]:
        return (self.fqdn,)


class DnsRejected(Event):
    family = Family.DNS
    name = "rejected"
    producer = "dns-writer"
    summary = "The name could not be published (outside managed zones, foreign record, ...)."

    fqdn: Hostname
    reason: Reason
    message: Message
    observed_generation: Generation | None = None

    def key(self) -> tuple[str, ...]:
        return (self.fqdn,)


class DnsRemoved(Event):
    family = Family.DNS
    name = "removed"
    producer = "dns-writer"
    summary = "This cluster's values for the name were removed."

    fqdn: Hostname

    def key(self) -> tuple[str, ...]:
        return (self.fqdn,)


# --------------------------------------------------------------------------- bgp-speaker


class RouteAnnounced(Event):
    family = Family.ROUTE
    name = "announced"
    producer = "bgp-speaker"
    summary = "This node announces the VIP prefix to its BGP peers."

    node: NodeName
    vip: IpAddress
    prefix: Cidr
    peers: list[str] = Field(default_factory=list, description="Peers with an established session.")

    def key(self) -> tuple[str, ...]:
        return (self.node, self.vip)

    def reaches_a_router(self) -> bool:
        """True once some established peer has the route. BIRD exports the route before any
        session is up (``peers`` empty): then no router can send the VIP's traffic here yet."""
        return bool(self.peers)


class RouteWithdrawn(Event):
    family = Family.ROUTE
    name = "withdrawn"
    producer = "bgp-speaker"
    summary = "This node no longer announces the VIP prefix, with the reason."

    node: NodeName
    vip: IpAddress
    prefix: Cidr
    reason: Reason

    def key(self) -> tuple[str, ...]:
        return (self.node, self.vip)


# --------------------------------------------------------------------------- admission


class Problem(Model):
    reason: Reason = Field(description="e.g. InvalidHostname, OwnershipDenied, ClaimConflict.")
    field: str = Field(max_length=256, description="Where, e.g. spec.rules[0].host.")
    message: Message
    host: str | None = Field(default=None, max_length=512)
    path: str | None = Field(default=None, max_length=2048)
    winner: ObjectRef | None = Field(
        default=None, description="For ClaimConflict: the object whose older claim holds it."
    )


class AdmissionAccepted(Event):
    family = Family.ADMISSION
    name = "accepted"
    producer = "any"
    summary = "A user object (Ingress, Service, VipPool, BgpPeer, ...) passed a component's checks."

    component: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    object: ObjectRef
    observed_generation: int = Field(ge=0, description="metadata.generation of the object.")
    warnings: list[Problem] = Field(
        default_factory=list, description="Accepted, but with something the owner should fix."
    )

    def key(self) -> tuple[str, ...]:
        return (self.component, self.object.kind, self.object.namespace, self.object.name)


class AdmissionRejected(Event):
    """A user object, or part of it, was rejected. Ownership rejections use the reasons
    ``OwnershipDenied`` (no grant) and ``ClaimConflict`` (an older claim holds it)."""

    family = Family.ADMISSION
    name = "rejected"
    producer = "any"
    summary = "A user object, or part of it, was rejected, each problem with its reason."

    component: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    object: ObjectRef
    observed_generation: int = Field(ge=0)
    problems: list[Problem] = Field(min_length=1)

    def key(self) -> tuple[str, ...]:
        return (self.component, self.object.kind, self.object.namespace, self.object.name)


class AdmissionCleared(Event):
    """The object is gone: its earlier verdict no longer applies."""

    family = Family.ADMISSION
    name = "cleared"
    producer = "any"
    summary = "The object was deleted; its earlier verdict no longer applies."

    component: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    object: ObjectRef

    def key(self) -> tuple[str, ...]:
        return (self.component, self.object.kind, self.object.namespace, self.object.name)


# --------------------------------------------------------------------------- BGP sessions


class SessionStatus(Event):
    """The state of one BGP session of one node, for the BgpPeer's status."""

    family = Family.SESSION
    name = "status"
    producer = "bgp-speaker"
    summary = "The state of one node's BGP session with one peer."

    node: NodeName
    peer: K8sName
    state: str = Field(pattern=r"^[A-Za-z]{1,32}$", description="Idle, Connect, Established...")
    established: bool
    message: Message = ""
    since: str | None = Field(default=None, description="RFC 3339 time of the last change.")

    def key(self) -> tuple[str, ...]:
        return (self.node, self.peer)


PoolDesired.model_rebuild()

ALL_EVENTS: tuple[type[Event], ...] = (
    DomainDesired,
    DomainDeleted,
    BackendEndpoints,
    BackendDeleted,
    LoadBalancerServiceDesired,
    LoadBalancerServiceDeleted,
    PoolDesired,
    PoolDeleted,
    PeerDesired,
    PeerDeleted,
    VipAssigned,
    VipReleased,
    VipRejected,
    L4Programmed,
    L4NotReady,
    L4Removed,
    L7Applied,
    L7Rejected,
    L7Removed,
    DnsPublished,
    DnsRejected,
    DnsRemoved,
    RouteAnnounced,
    RouteWithdrawn,
    AdmissionAccepted,
    AdmissionRejected,
    AdmissionCleared,
    SessionStatus,
)

EVENTS_BY_CE_TYPE: dict[str, type[Event]] = {cls.ce_type(): cls for cls in ALL_EVENTS}
TOMBSTONES: frozenset[type[Event]] = frozenset(
    {
        DomainDeleted,
        BackendDeleted,
        LoadBalancerServiceDeleted,
        PoolDeleted,
        PeerDeleted,
        VipReleased,
        L4Removed,
        L7Removed,
        DnsRemoved,
        AdmissionCleared,
    }
)
