"""Taskwarden: just-in-time, task-scoped credentials for AI agents on Kubernetes."""

from taskwarden.names import GROUP, VERSION

__version__ = "0.1.0"
__all__ = ["GROUP", "VERSION", "__version__"]
