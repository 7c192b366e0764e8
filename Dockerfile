# One image for every Ingress Domain service (the command picks the service), plus the tools
# the node-level services drive: BIRD for bgp-speaker, nftables and iproute2 for l4-programmer.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      bird2 nftables iproute2 ipvsadm knot-dnsutils \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ingress-domain
COPY libs/events libs/events
COPY libs/runtime libs/runtime
COPY services services
RUN pip install --no-cache-dir libs/events libs/runtime \
      services/ingress-watcher services/ipam services/l4-programmer \
      services/l7-config services/dns-writer services/bgp-speaker

# Services that need no privileges run as an unprivileged user (compose and the manifests set
# it); l4-programmer and bgp-speaker get NET_ADMIN instead.
RUN useradd --system --uid 10001 ingress
