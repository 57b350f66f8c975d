"""Signing keys on the real API: created exactly once by racing operators, rotated with
overlap, and published as JWKS."""

from __future__ import annotations

import asyncio
import json
import uuid

from kubernetes import client, config

from taskwarden import controlplane, publishing
from taskwarden.config import KeySettings
from taskwarden.kube import Kube


def _kube(cluster: controlplane.ControlPlane) -> Kube:
    cfg = client.Configuration()
    config.load_kube_config(str(cluster.kubeconfig), client_configuration=cfg, persist_config=False)
    return Kube(cfg, workers=4)


def test_two_operators_starting_together_create_one_key(
    cluster: controlplane.ControlPlane, api: client.ApiClient
) -> None:
    ns = f"op-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    managers = [publishing.KeyManager(_kube(cluster), ns, KeySettings()) for _ in range(4)]

    async def race() -> None:
        await asyncio.gather(*(m.ensure() for m in managers))

    asyncio.run(race())
    kids = {m.active().kid for m in managers}
    assert len(kids) == 1, f"racing operators ended with different keys: {kids}"
    secret = client.CoreV1Api(api).read_namespaced_secret(publishing.KEYS_SECRET, ns)
    assert secret.type == "Opaque"
    jwks = json.loads(
        client.CoreV1Api(api)
        .read_namespaced_config_map(publishing.JWKS_CONFIGMAP, ns)
        .data["jwks.json"]
    )
    assert [k["kid"] for k in jwks["keys"]] == list(kids)
    assert all("d" not in k for k in jwks["keys"]), "private key material in the JWKS"


def test_rotation_publishes_next_key_before_it_signs_and_keeps_the_old_one(
    cluster: controlplane.ControlPlane, api: client.ApiClient
) -> None:
    ns = f"op-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    now = [1_900_000_000.0]
    settings = KeySettings(rotation_period=100.0, publish_delay=20.0, retain=50.0)
    m = publishing.KeyManager(_kube(cluster), ns, settings, clock=lambda: now[0])
    asyncio.run(m.ensure())
    first = m.active().kid
    now[0] += 85  # past rotation_period - publish_delay: the next key is prepared
    asyncio.run(m.ensure())
    published = {k["kid"] for k in m.jwks()["keys"]}
    assert len(published) == 2 and m.active().kid == first  # published, not yet signing
    now[0] += 25
    assert m.active().kid != first  # activated after the publish delay
    asyncio.run(m.ensure())
    cm = client.CoreV1Api(api).read_namespaced_config_map(publishing.JWKS_CONFIGMAP, ns)
    assert first in {k["kid"] for k in json.loads(cm.data["jwks.json"])["keys"]}  # overlap
    # A second process reading the Secret agrees on the active key.
    other = publishing.KeyManager(_kube(cluster), ns, settings, clock=lambda: now[0])
    asyncio.run(other.ensure())
    assert other.active().kid == m.active().kid
