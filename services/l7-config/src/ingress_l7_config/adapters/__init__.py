"""Side effects: the ADS gRPC server the Envoys connect to, and the TLS key material store."""
