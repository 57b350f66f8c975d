"""Which backend instances exist: one per (backend name, Secret in the operator namespace).

A policy rule names a backend and a Secret (`backend: {name, secretRef}`); the operator uses a
Secret only when the cluster admin labelled it `taskwarden.dev/backend=<name>`. A policy author
can therefore never point the operator at another Secret of its namespace (its signing keys,
say) as if it were a backend's settings. The labelled Secrets are also the list the sweep and
revocation walk: a role is revoked on every server configured for its backend, whichever
policy named it, so a policy changed or deleted meanwhile does not strand it.

Called by tasks/backing.py. Instances are cached per Secret resourceVersion: an edited Secret
(a rotated admin password) is picked up at the next use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Final

from taskwarden.backends import Backend
from taskwarden.kube import Kube
from taskwarden.policy import pgscopes

LABEL: Final = "taskwarden.dev/backend"


class Unconfigured(Exception):
    """The rule's backend Secret is missing, unlabelled or malformed; the message says which."""


def _postgres(secret: dict[str, Any], where: str) -> Backend:
    try:  # psycopg is the optional extra taskwarden[postgres]: imported only when configured
        from taskwarden.backends import postgres
    except ImportError as e:
        raise Unconfigured(
            f"{where}: the postgres backend needs the taskwarden[postgres] extra ({e})"
        ) from None
    try:
        return postgres.PostgresBackend(
            postgres.Settings.from_secret(secret.get("data") or {}, where)
        )
    except postgres.ConfigError as e:
        raise Unconfigured(str(e)) from None


FACTORIES: Final[dict[str, Callable[[dict[str, Any], str], Backend]]] = {
    pgscopes.NAME: _postgres,
}


class Registry:
    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self._made: dict[tuple[str, str], tuple[str, Backend]] = {}

    async def get(self, name: str, secret_ref: str) -> Backend:
        """The backend a rule names; Unconfigured when its Secret is not usable."""
        where = f"Secret {self.namespace}/{secret_ref} of backend {name}"
        factory = FACTORIES.get(name)
        if factory is None:
            raise Unconfigured(f"backend {name} is not known to this operator")
        secret = await self.kube.get_secret(self.namespace, secret_ref)
        if secret is None:
            raise Unconfigured(f"{where} does not exist")
        md = secret.get("metadata") or {}
        if (md.get("labels") or {}).get(LABEL) != name:
            raise Unconfigured(f"{where} is not labelled {LABEL}={name} by the cluster admin")
        rv = str(md.get("resourceVersion", ""))
        made = self._made.get((name, secret_ref))
        if made is not None and made[0] == rv:
            return made[1]
        backend = factory(secret, where)
        if made is not None:
            with contextlib.suppress(Exception):
                await made[1].close()
        self._made[(name, secret_ref)] = (rv, backend)
        return backend

    async def configured(self, name: str | None = None) -> list[Backend]:
        """Every backend whose Secret carries the label (of `name`, or all); a Secret that
        does not parse is skipped here (its rule's tasks fail with the reason)."""
        out: list[Backend] = []
        for s in await self.kube.list_secrets(self.namespace, LABEL):
            md = s.get("metadata") or {}
            kind = (md.get("labels") or {}).get(LABEL, "")
            if kind not in FACTORIES or (name is not None and kind != name):
                continue
            with contextlib.suppress(Unconfigured):
                out.append(await self.get(kind, md["name"]))
        return out

    async def close(self) -> None:
        for _, backend in self._made.values():
            with contextlib.suppress(Exception):
                await backend.close()
        self._made.clear()
