"""Taskwarden: just-in-time, task-scoped credentials for AI agents on Kubernetes."""

__version__ = "0.1.0"
GROUP = "taskwarden.dev"
VERSION = "v1alpha1"
