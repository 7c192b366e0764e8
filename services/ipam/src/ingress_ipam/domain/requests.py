"""Desired events -> allocation requests, with the checks the event schema cannot express."""

from __future__ import annotations

from ingress_events.catalogue import DomainDesired, LoadBalancerServiceDesired, VipOwner

from .model import DOMAIN_PORTS, IpFamily, OwnerKey, Reject, Request, family_of


def owner_of(key: OwnerKey) -> VipOwner:
    if key[0] == "domain":
        return VipOwner(kind="domain", host=key[1])
    return VipOwner(kind="service", namespace=key[1], service=key[2])


def domain_request(
    event: DomainDesired, default_family: IpFamily, indexed: tuple[str, ...] = ()
) -> Request | Reject:
    requested = tuple(event.vip.addresses)
    if len(requested) > 2:
        return Reject("InvalidVipRequest", "at most two addresses (one IPv4, one IPv6)")
    families: tuple[IpFamily, ...] = (
        tuple(dict.fromkeys(family_of(a) for a in requested)) if requested else (default_family,)
    )
    return Request(
        owner=("domain", event.host),
        namespace=event.owner_namespace,
        host=event.host,
        families=families,
        require_all_families=True,
        ports=DOMAIN_PORTS,
        pool=event.vip.pool,
        addresses=requested,
        sharing_key=event.vip.sharing_key,
        indexed=indexed,
    )


def service_request(
    event: LoadBalancerServiceDesired, indexed: tuple[str, ...] = ()
) -> Request | Reject:
    families: tuple[IpFamily, ...] = tuple(dict.fromkeys(event.ip_families))
    policy = event.ip_family_policy
    if policy == "SingleStack":
        families = families[:1]
    elif policy == "RequireDualStack" and len(families) < 2:
        return Reject(
            "InvalidVipRequest", "ipFamilyPolicy RequireDualStack needs both IPv4 and IPv6"
        )
    requested = tuple(event.vip.addresses)
    for address in requested:
        if family_of(address) not in families:
            return Reject(
                "InvalidVipRequest",
                f"requested address {address} is {family_of(address)}, but the Service's "
                f"ipFamilies under {policy} are {', '.join(families)}",
            )
    return Request(
        owner=("service", event.namespace, event.service),
        namespace=event.namespace,
        host=None,
        families=families,
        require_all_families=policy != "PreferDualStack",
        ports=frozenset((p.port, p.protocol) for p in event.ports),
        pool=event.vip.pool,
        addresses=requested,
        sharing_key=event.vip.sharing_key,
        indexed=indexed,
    )
