"""ingress-watcher: Kubernetes (or a manifest directory) in, level-triggered desired state out."""
