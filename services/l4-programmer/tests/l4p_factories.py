"""Event builders shared by the unit, contract and integration tests."""

from __future__ import annotations

from ingress_events import catalogue as c


def pool(
    name: str = "public", cidrs: tuple[str, ...] = ("198.51.100.0/24",), gen: int = 1
) -> c.PoolDesired:
    return c.PoolDesired(generation=gen, pool=name, cidrs=list(cidrs))


def domain_vip(
    host: str,
    vip: str,
    gen: int = 10,
    ports: tuple[int, ...] = (80, 443),
    pool_name: str = "public",
) -> c.VipAssigned:
    return c.VipAssigned(
        generation=gen,
        owner=c.VipOwner(kind="domain", host=host),
        addresses=[vip],
        pool=pool_name,
        ports=[c.PortSpec(port=p) for p in ports],
        observed_generation=gen,
    )


def service_vip(
    ns: str,
    svc: str,
    vip: str,
    ports: tuple[int, ...],
    gen: int = 10,
    sharing_key: str | None = None,
) -> c.VipAssigned:
    return c.VipAssigned(
        generation=gen,
        owner=c.VipOwner(kind="service", namespace=ns, service=svc),
        addresses=[vip],
        pool="public",
        ports=[c.PortSpec(port=p) for p in ports],
        sharing_key=sharing_key,
        observed_generation=gen,
    )


def endpoints(
    ns: str,
    svc: str,
    port: int,
    addresses: list[str],
    gen: int = 5,
    target_port: int | None = None,
    ready: bool = True,
    terminating: tuple[str, ...] = (),
) -> c.BackendEndpoints:
    return c.BackendEndpoints(
        generation=gen,
        namespace=ns,
        service=svc,
        port=port,
        endpoints=[
            c.Endpoint(
                address=a,
                port=target_port or port,
                ready=ready and a not in terminating,
                serving=True,
                terminating=a in terminating,
            )
            for a in addresses
        ],
    )


def envoy_pool(
    addresses: list[str], gen: int = 5, ports: tuple[int, ...] = (80, 443)
) -> list[c.BackendEndpoints]:
    return [endpoints("ingress-domain", "envoy", p, addresses, gen) for p in ports]
