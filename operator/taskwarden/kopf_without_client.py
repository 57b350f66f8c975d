"""kopf, imported without the `kubernetes` client (`from ... import kopf` from here).

When the official client is installed, kopf imports it as it is itself imported (for isinstance
checks on the client's models, kopf/_cogs/helpers/thirdparty.py) and its default registry logs
in through it: ~32 MiB of RSS that the operator never uses (kube.py speaks HTTP itself, and
handlers.login hands kopf the same settings). Hidden while kopf is imported, the client looks
absent to kopf; afterwards it imports as usual (the CLI's other commands, an exec-plugin
kubeconfig).
"""

from __future__ import annotations

import sys

_HIDDEN = ("kubernetes", "kubernetes_asyncio", "pykube")
_hid = [name for name in _HIDDEN if name not in sys.modules]
for name in _hid:
    sys.modules[name] = None  # type: ignore[assignment]  # None: "not installed" to importers
try:
    import kopf
finally:
    for name in _hid:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]

__all__ = ["kopf"]
