"""Ingress Domain on one machine: the embedded local default."""
