"""l7-config: an xDS (ADS) control plane for a fleet of real Envoys."""
