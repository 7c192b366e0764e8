"""bgp-speaker: announces the VIPs this node is ready to serve, through BIRD 2, to the ToR."""
