"""Ingress Domain l4-programmer: programs the L4 tier (IPVS over IP-in-IP, or nftables)."""
