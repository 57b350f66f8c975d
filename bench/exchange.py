"""Token exchange latency (`spec.delivery: exchange`) next to the mounted-Secret path, one run.

On a fresh local control plane with the operator as a subprocess: one exchange-mode task and one
secret-mode task for the same Running pod. Measured, `--n` times each, sequentially:
- exchange, keep-alive: POST /token on one kept-alive HTTPS connection (server-side cost:
  a TokenReview, a GET of the task, signing);
- exchange, agent helper: `taskwarden.agent.exchange` as an agent calls it (a new TLS
  connection each time);
- Secret, file read: reading the token file of a mounted Secret (what the agent does in secret
  mode; the kubelet keeps the file current);
- Secret, API GET: reading the credential Secret from the apiserver (what the kubelet does to
  refresh a mount; with kwok no kubelet runs, so this stands in for the delivery hop).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from kubernetes import client
from tests.integration import helpers as h

from common import environment, machine, pct
from taskwarden import agent

NS = "bench-exchange"


def timed(n: int, fn: Callable[[], object]) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    with environment() as (_, api, op):
        issuer = f"https://127.0.0.1:{op.public_port}"
        h.agent_namespace(api, NS)
        h.pod(api, NS, "agent-0", "agent")
        h.create(api, NS, "agentpolicies", h.policy_body())
        h.create_task(api, NS, h.task_body("x", extra={"delivery": "exchange"}))
        h.create_task(api, NS, h.task_body("s"))
        h.wait_phase(api, NS, "x", "Active", 30)
        h.wait_phase(api, NS, "s", "Active", 30)
        secret = h.wait_for(lambda: h.secret_or_none(api, NS, "s-credential"), what="Secret")
        tls = client.CoreV1Api(api).read_namespaced_secret(
            "taskwarden-webhook-tls", "taskwarden-system"
        )
        ctx = ssl.create_default_context(cadata=base64.b64decode(tls.data["ca.crt"]).decode())
        spec = {
            "expirationSeconds": 3600,
            "audiences": [issuer],
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "agent-0"},
        }
        subject = (
            client.CoreV1Api(api)
            .create_namespaced_service_account_token("agent", NS, {"spec": spec})
            .status.token
        )
        resource = f"taskwarden://{NS}/x"
        form = urllib.parse.urlencode(
            {
                "grant_type": agent.GRANT_TYPE,
                "subject_token": subject,
                "subject_token_type": agent.JWT_TYPE,
                "resource": resource,
            }
        )
        conn = http.client.HTTPSConnection("127.0.0.1", op.public_port, context=ctx)

        def keepalive() -> None:
            conn.request(
                "POST", "/token", form, {"Content-Type": "application/x-www-form-urlencoded"}
            )
            r = conn.getresponse()
            body = json.loads(r.read())
            assert r.status == 200, body

        def helper() -> None:
            agent.exchange(issuer + "/token", subject, resource, context=ctx)

        token_file = Path(tempfile.mkdtemp()) / "token"
        token_file.write_text(h.token_of(secret))
        core = client.CoreV1Api(api)
        rows = []
        for label, fn in (
            ("exchange, keep-alive connection", keepalive),
            ("exchange, agent helper (new TLS connection)", helper),
            ("mounted Secret, file read", token_file.read_text),
            (
                "Secret, API GET (kubelet's hop)",
                lambda: core.read_namespaced_secret("s-credential", NS),
            ),
        ):
            timed(10, fn)  # warm up
            lat = timed(args.n, fn)
            rows.append((label, pct(lat, 50), pct(lat, 99)))
    print(f"## Token exchange latency\n\nMachine: {machine()}; n={args.n} each, sequential\n")
    print("| path | p50 | p99 |\n|---|---|---|")
    for label, p50, p99 in rows:
        print(f"| {label} | {p50:.2f} ms | {p99:.2f} ms |")


if __name__ == "__main__":
    main()
