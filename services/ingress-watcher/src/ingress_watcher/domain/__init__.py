"""Pure code: Kubernetes objects in, catalogue events and plans out. No I/O, no clock."""
