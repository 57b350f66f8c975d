"""Signing keys and tokens: pure functions, no Kubernetes client."""
