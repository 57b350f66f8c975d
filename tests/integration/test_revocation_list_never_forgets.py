"""Issue 12 item 9: past its cap the revocation list dropped revoked, unexpired tokens, which
then verified again. Now the cap retires every signing key instead. With a cap of 3 the
operator revokes 6 tasks; afterwards `taskwarden verify` (fresh JWKS and list from the cluster)
refuses every one of those tokens, also after the entries of the retired key were forgotten,
while a token issued after the rotation verifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kubernetes import client

from taskwarden import controlplane
from tests.integration import helpers as h

AUD = "https://api.github.com"


def verify(cluster: controlplane.ControlPlane, token: str, tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text(token)
    out = subprocess.run(
        [sys.executable, "-m", "taskwarden", "verify", str(path), "--audience", AUD],
        env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (out.returncode == 0) == out.stdout.startswith("VALID"), out.stdout + out.stderr
    return out.stdout


def kids(api: client.ApiClient, operator_ns: str) -> set[str]:
    cm = client.CoreV1Api(api).read_namespaced_config_map("taskwarden-jwks", operator_ns)
    return {k["kid"] for k in json.loads(cm.data["jwks.json"])["keys"]}


def test_revoked_tokens_stay_refused_past_the_cap(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator_namespace: str,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
    tmp_path: Path,
) -> None:
    operator.stop()
    capped = h.OperatorProcess(
        kubeconfig=cluster.kubeconfig,
        workdir=tmp_path,
        operator_namespace=operator_namespace,
        env=dict(
            os.environ,
            TASKWARDEN_REVOCATION_MAX_ENTRIES="3",
            TASKWARDEN_KEY_PUBLISH_DELAY_SECONDS="3",
        ),
        name="operator-capped",
    )
    try:
        capped.start()
        # The session's list may hold more than 3 of other tests' revocations: then the capped
        # operator rotates at its first flush (at the latest at the 30 s heartbeat). Let that
        # happen before issuing, or it would retire the key the tokens below are signed with.
        h.wait_for(
            lambda: capped.metric("taskwarden_revocation_list_entries") <= 3,
            timeout=60,
            what="the list under its cap before this test's revocations",
        )
        env = agent_env()
        before = kids(api, operator_namespace)
        rotations = capped.metric("taskwarden_revocation_overflow_rotations_total")
        tokens = {f"r{i}": env.task(f"r{i}").token() for i in range(6)}
        out = verify(cluster, tokens["r0"], tmp_path)
        # Valid, unless another test's task expired meanwhile and overflowed the list.
        assert out.startswith("VALID") or (
            capped.metric("taskwarden_revocation_overflow_rotations_total") > rotations
        ), out
        rotations = capped.metric("taskwarden_revocation_overflow_rotations_total")
        for name in tokens:
            h.patch(env.as_agent(), namespace, "agenttasks", name, {"spec": {"completed": True}})
        for name in tokens:
            h.wait_phase(api, namespace, name, "Completed")
        h.wait_for(
            lambda: capped.metric("taskwarden_revocation_overflow_rotations_total") > rotations,
            timeout=45,
            what="an emergency rotation",
        )
        h.wait_for(
            lambda: not before & kids(api, operator_namespace),
            timeout=30,
            what="the old keys retired from the JWKS",
        )
        h.wait_for(
            lambda: capped.metric("taskwarden_revocation_entries_retired_total") >= 3,
            timeout=30,
            what="the retired key's entries forgotten",
        )
        # The session's list may already hold other tests' revocations: whatever it held, it
        # drains back under the cap once the retired keys' entries are forgotten.
        h.wait_for(
            lambda: capped.metric("taskwarden_revocation_list_entries") <= 3,
            timeout=30,
            what="the list back under its cap",
        )
        for name, token in tokens.items():
            out = verify(cluster, token, tmp_path)
            assert not out.startswith("VALID"), f"{name}: revoked token verifies again: {out}"
        fresh = env.task("after").token()
        assert verify(cluster, fresh, tmp_path).startswith("VALID")
        log = capped.log.read_text()
        assert "emergency rotation" in log
        assert fresh not in log and not any(t in log for t in tokens.values())
    finally:
        capped.stop()
        operator.start()
