"""Installing Taskwarden's CRDs into a control plane and waiting until they are Established.

Called by the integration tests' fixture, `taskwarden controlplane up` and `taskwarden dev`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from taskwarden.controlplane.binaries import ControlPlaneError


def install_crds(api_client: Any, crd_dir: Path, timeout: float = 30) -> list[str]:
    """Create or replace every CRD in crd_dir and wait until each is Established."""
    import yaml
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    ext = client.ApiextensionsV1Api(api_client)
    names = []
    for path in sorted(crd_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            name = doc["metadata"]["name"]
            names.append(name)
            try:
                ext.create_custom_resource_definition(doc)
            except ApiException as e:
                if e.status != 409:
                    raise
                cur = ext.read_custom_resource_definition(name)
                doc["metadata"]["resourceVersion"] = cur.metadata and cur.metadata.resource_version
                ext.replace_custom_resource_definition(name, doc)
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            crd = ext.read_custom_resource_definition(name)
            conds = {c.type: c.status for c in ((crd.status and crd.status.conditions) or [])}
            if conds.get("Established") == "True":
                pending.discard(name)
        if pending:
            time.sleep(0.1)
    if pending:
        raise ControlPlaneError(f"CRDs not Established after {timeout}s: {sorted(pending)}")
    return names
