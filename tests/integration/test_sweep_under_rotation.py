"""A sweep while tasks rotate acts on nothing stale (issue 18: rotation capacity).

The periodic sweep reconciles every task from one LIST, and the Secrets and the tasks are
listed at different instants. While tasks rotate, that LIST is older than the operator's own
last writes: a body whose status names the previous jti, next to a Secret (and this process's
memory of it) holding the new one. Acting on such a body used to look like "the Secret holds
another token after a crash": a reissue, whose status write then failed on its stale
resourceVersion, after a ledger write and a revocation for a token that never left the
process, plus a GET of the Secret and of the task. Each stale sweep cost a dozen API writes.

Here an operator sweeps every second while 150 tasks rotate every ~5.5 s: no reissue is even
attempted (a failed one would put its jti on the revocation list, which no rotation does), and
each task's Secret holds the jti its status names.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client

from taskwarden import controlplane, delivery, names
from tests.integration import helpers as h

N_TASKS = 150
CREDENTIAL_TTL = "10s"
RUN_SECONDS = 25.0


def test_sweeps_during_rotation_never_reissue(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator_namespace: str,
    operator: h.OperatorProcess,
    agent_env: Callable[..., h.AgentEnv],
    tmp_path: Path,
) -> None:
    # Other tests' namespaces still being deleted would have their tasks' jtis listed during
    # this run: wait until this namespace's tasks are the only ones.
    h.wait_for(
        lambda: (
            not h.custom(api).list_cluster_custom_object(h.GROUP, h.VERSION, "agenttasks")["items"]
        ),
        timeout=180,
        interval=1.0,
        what="no AgentTask left from earlier tests",
    )
    operator.stop()
    sweeping = h.OperatorProcess(
        kubeconfig=cluster.kubeconfig,
        workdir=tmp_path,
        operator_namespace=operator_namespace,
        env=dict(os.environ, TASKWARDEN_SWEEP_SECONDS="1"),
        name="operator-sweeping",
    )
    try:
        sweeping.start()
        env = agent_env()
        task_names = [f"s{i}" for i in range(N_TASKS)]
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda n: env.create_task(n, ttl="1h", credential_ttl=CREDENTIAL_TTL),
                    task_names,
                )
            )
        h.wait_for(
            lambda: sweeping.metric("taskwarden_credentials_issued_total", kind="issue") >= N_TASKS,
            timeout=120,
            interval=0.5,
            what="every task issued",
        )
        listed = sweeping.metric("taskwarden_revocation_list_entries")
        time.sleep(RUN_SECONDS)  # ~25 sweeps, ~4 rotations per task
        rotated = sweeping.metric("taskwarden_credentials_issued_total", kind="rotate")
        assert rotated >= N_TASKS, f"only {rotated} rotations in {RUN_SECONDS}s"
        assert sweeping.metric("taskwarden_credentials_issued_total", kind="reissue") == 0
        assert "reissued" not in sweeping.log.read_text(errors="replace")
        # Nothing ended, so nothing was listed: a reissue that lost its conditioned status
        # write would have listed the jti it had signed.
        assert sweeping.metric("taskwarden_revocation_list_entries") <= listed
        core = client.CoreV1Api(api)
        for n in task_names:
            task = h.custom(api).get_namespaced_custom_object(
                h.GROUP, h.VERSION, namespace, "agenttasks", n
            )
            assert task["status"]["phase"] == "Active"
            jti = task["status"]["credential"]["jti"]

            def holds(n: str = n, jti: str = jti) -> bool:
                s = core.read_namespaced_secret(delivery.secret_name(n), namespace)
                return (s.metadata.annotations or {}).get(names.JTI_ANNOTATION) == jti

            h.wait_for(holds, timeout=10, interval=0.2, what=f"{n}'s Secret holds {jti}")
            assert base64.b64decode(
                core.read_namespaced_secret(delivery.secret_name(n), namespace).data["token"]
            )
    finally:
        sweeping.stop()
        operator.start()
