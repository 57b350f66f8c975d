"""User-facing subcommands of `taskwarden` beyond `run` and `controlplane`: dev, get, describe,
approve, deny, revoke, verify. Registered by cli.py.

Exit codes: 0 ok; 1 the operation failed or the token does not verify; 2 usage errors; 3 not
found. Tokens are never printed: `verify` prints the verified claims.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from taskwarden import names, timeutil


def _api() -> Any:
    from kubernetes import client

    from taskwarden import kube

    return client.ApiClient(kube.load_client_config(4))


def _custom() -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(_api())


def _age(ts: str | None, now: float) -> str:
    if not ts:
        return "-"
    s = int(now - timeutil.parse(ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _get_task(ns: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return dict(
            _custom().get_namespaced_custom_object(
                names.GROUP, names.VERSION, ns, "agenttasks", name
            )
        )
    except ApiException as e:
        if e.status == 404:
            print(f"error: agenttask {ns}/{name} not found", file=sys.stderr)
            return None
        raise


def cmd_get(args: argparse.Namespace) -> int:
    custom = _custom()
    if args.all_namespaces:
        items = custom.list_cluster_custom_object(names.GROUP, names.VERSION, "agenttasks")["items"]
    else:
        items = custom.list_namespaced_custom_object(
            names.GROUP, names.VERSION, args.namespace, "agenttasks"
        )["items"]
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return 0
    now = time.time()
    rows = [
        (["NAMESPACE"] if args.all_namespaces else [])
        + ["NAME", "PHASE", "AGENT", "EXPIRES", "REASON", "POLICY", "AGE"]
    ]
    for t in sorted(items, key=lambda t: (t["metadata"]["namespace"], t["metadata"]["name"])):
        st = t.get("status") or {}
        exp = st.get("expiresAt")
        left = "-"
        if exp:
            secs = int(timeutil.parse(exp) - now)
            left = f"in {secs}s" if secs > 0 else f"{-secs}s ago"
        rows.append(
            ([t["metadata"]["namespace"]] if args.all_namespaces else [])
            + [
                t["metadata"]["name"],
                st.get("phase", "-"),
                t["spec"]["agent"]["serviceAccountName"],
                left,
                st.get("reason") or "-",
                (st.get("decision") or {}).get("policy") or "-",
                _age(t["metadata"].get("creationTimestamp"), now),
            ]
        )
    if len(rows) == 1:
        print("No agent tasks found.", file=sys.stderr)
        return 0
    print(_table(rows))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from kubernetes import client

    t = _get_task(args.namespace, args.task)
    if t is None:
        return 3
    spec, st = t["spec"], t.get("status") or {}
    md = t["metadata"]
    out = [
        f"Name:         {md['name']}",
        f"Namespace:    {md['namespace']}",
        f"Agent:        {spec['agent']['serviceAccountName']}"
        + (f" (pod {spec['agent']['podName']})" if spec["agent"].get("podName") else ""),
        f"Requester:    {md.get('annotations', {}).get(names.REQUESTER_ANNOTATION, '-')}",
        f"Intent:       {spec.get('intent')}",
        "Scopes:",
        *[
            f"  - {s['tool']}: {', '.join(s['actions'])} on {', '.join(s['resources'])}"
            for s in spec.get("scopes", [])
        ],
        f"Audiences:    {', '.join(spec.get('audiences', []))}",
        f"Data class:   {spec.get('dataClass')}",
        f"TTL:          {spec.get('ttl')} (credential {spec.get('credentialTTL', 'default')})",
    ]
    if spec.get("delegatedFrom"):
        out.append(f"Delegated from: {spec['delegatedFrom']}")
    out += [
        f"Phase:        {st.get('phase', '-')}  ({st.get('reason', '')})",
        f"Message:      {st.get('message', '')}",
        f"Expires:      {st.get('expiresAt', '-')}",
        f"Spec hash:    {st.get('specHash', '-')}",
    ]
    ident = st.get("identity") or {}
    if ident:
        out.append(
            f"Identity:     {ident.get('spiffeID')} pod {ident.get('podName')} "
            f"uid {ident.get('podUID')}"
        )
    d = st.get("decision") or {}
    if d:
        out.append(
            f"Decision:     allowed={d.get('allowed')} needsApproval={d.get('needsApproval')}"
            f" policy={d.get('policy')} rule={d.get('rule')}"
        )
        out.append(f"              {d.get('reason')}")
    c = st.get("credential") or {}
    if c:
        out.append(
            f"Credential:   Secret {c.get('secretName')} jti {c.get('jti')} kid {c.get('keyID')}"
        )
        out.append(
            f"              issued {c.get('issuedAt')} expires {c.get('expiresAt')} "
            f"rotations {c.get('rotations')}"
        )
    out.append("Conditions:")
    for cond in st.get("conditions", []):
        out.append(
            f"  {cond['type']:<17}{cond['status']:<6}{cond.get('reason', '')}: "
            f"{cond.get('message', '')}"
        )
    out.append("History:")
    for h in st.get("history", []):
        out.append(f"  {h['time']}  {h['phase']:<17}{h.get('reason', '')}")
    evs = (
        client.EventsV1Api(_api())
        .list_namespaced_event(md["namespace"], field_selector=f"regarding.name={md['name']}")
        .items
    )
    out.append("Events:")
    for e in sorted(evs, key=lambda e: str(e.event_time or "")):
        out.append(f"  {e.type:<8}{e.reason:<20}{e.note}")
    print("\n".join(out))
    return 0


def _approval(args: argparse.Namespace, decision: str) -> int:
    from kubernetes.client.exceptions import ApiException

    t = _get_task(args.namespace, args.task)
    if t is None:
        return 3
    spec_hash = (t.get("status") or {}).get("specHash")
    if not spec_hash:
        print(f"error: task {args.task} has no status.specHash yet; try again", file=sys.stderr)
        return 1
    body = {
        "apiVersion": names.API_VERSION,
        "kind": "AgentApproval",
        "metadata": {"generateName": f"{args.task}-{decision}-"},
        "spec": {
            "taskName": args.task,
            "specHash": spec_hash,
            "decision": decision,
            "reason": args.reason,
        },
    }
    try:
        created = _custom().create_namespaced_custom_object(
            names.GROUP, names.VERSION, args.namespace, "agentapprovals", body
        )
    except ApiException as e:
        msg = json.loads(e.body).get("message", e.reason) if e.body else e.reason
        print(f"error: {msg}", file=sys.stderr)
        return 1
    print(
        f"agentapproval/{created['metadata']['name']} created ({decision} {args.task} at "
        f"{spec_hash[:19]}...)"
    )
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    return _approval(args, "approve")


def cmd_deny(args: argparse.Namespace) -> int:
    return _approval(args, "deny")


def cmd_revoke(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException

    try:
        _custom().patch_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            args.namespace,
            "agenttasks",
            args.task,
            {
                "metadata": {
                    "annotations": {names.REVOKE_ANNOTATION: args.reason or "revoked by admin"}
                }
            },
        )
    except ApiException as e:
        if e.status == 404:
            print(f"error: agenttask {args.namespace}/{args.task} not found", file=sys.stderr)
            return 3
        msg = json.loads(e.body).get("message", e.reason) if e.body else e.reason
        print(f"error: {msg}", file=sys.stderr)
        return 1
    print(f"agenttask/{args.task} revocation requested")
    return 0


def _cluster_doc(ns: str, name: str, key: str) -> str:
    from kubernetes import client

    cm = client.CoreV1Api(_api()).read_namespaced_config_map(name, ns)
    return str((cm.data or {})[key])


def _is_file(raw: str) -> bool:
    try:
        return Path(raw).is_file()
    except OSError:  # e.g. a token longer than a file name may be
        return False


def cmd_verify(args: argparse.Namespace) -> int:
    from taskwarden.credentials import tokens

    raw = args.token
    if raw == "-":
        token = sys.stdin.read().strip()
    elif len(raw) < 4096 and _is_file(raw):
        token = Path(raw).read_text().strip()
    else:
        token = raw.strip()
    from taskwarden import verifier

    ns = args.operator_namespace
    try:
        if args.jwks:
            jwks_doc = verifier.parse_jwks(verifier.read_source(args.jwks))
        else:
            jwks_doc = verifier.parse_jwks(
                _cluster_doc(ns, "taskwarden-jwks", "jwks.json").encode()
            )
    except Exception as e:
        print(f"error: cannot load JWKS: {e}", file=sys.stderr)
        return 1
    # Fail closed: a list we cannot read (403, timeout, garbage) never means "nothing revoked".
    revoked: verifier.RevocationSnapshot | frozenset[str] = frozenset()
    try:
        if args.revocations:
            revoked = verifier.parse_revocations(verifier.read_source(args.revocations))
        elif not args.jwks:
            from kubernetes.client.exceptions import ApiException

            try:
                doc = _cluster_doc(ns, "taskwarden-revocations", "revocations.json")
            except ApiException as e:
                if e.status != 404:
                    raise
                # The operator creates it with the first revocation: nothing revoked yet.
                print("note: ConfigMap taskwarden-revocations not found", file=sys.stderr)
            else:
                revoked = verifier.parse_revocations(doc.encode())
        else:
            print("warning: no --revocations given: revocation was NOT checked", file=sys.stderr)
    except Exception as e:
        status = getattr(e, "status", None)
        why = f"HTTP {status} {getattr(e, 'reason', '')}" if status else str(e)
        print(
            "UNAVAILABLE: the revocation list could not be read, so the token was NOT "
            f"accepted (it is not known to be revoked): {type(e).__name__}: {why}"
        )
        return 1
    try:
        claims = verifier.check(
            token,
            jwks_doc,
            now=time.time(),
            audience=args.audience,
            issuer=args.issuer,
            revoked=revoked,
        )
    except tokens.TokenError as e:
        print(f"INVALID: {e.reason}: {e.message}")
        return 1
    print("VALID")
    summary = tokens.describe_claims(claims, kid=tokens.unverified_header(token).get("kid"))
    print(json.dumps(summary if not args.claims else claims, indent=2, sort_keys=True))
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from taskwarden import demo

    return demo.run(keep=args.keep)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dev = sub.add_parser("dev", help="local control plane + CRDs + operator + example, end to end")
    dev.add_argument("--keep", action="store_true", help="leave the control plane running")
    dev.set_defaults(fn=cmd_dev)

    get = sub.add_parser("get", help="list agent tasks with phase, expiry and decision")
    get.add_argument("-n", "--namespace", default="default")
    get.add_argument("-A", "--all-namespaces", action="store_true")
    get.add_argument("-o", "--output", choices=["table", "json"], default="table")
    get.set_defaults(fn=cmd_get)

    desc = sub.add_parser("describe", help="one task: identity, decision, credential, history")
    desc.add_argument("task")
    desc.add_argument("-n", "--namespace", default="default")
    desc.set_defaults(fn=cmd_describe)

    for name, fn, text in (("approve", cmd_approve, "approve"), ("deny", cmd_deny, "deny")):
        p = sub.add_parser(name, help=f"{text} a task awaiting approval (as yourself)")
        p.add_argument("task")
        p.add_argument("-n", "--namespace", default="default")
        p.add_argument("--reason", default="")
        p.set_defaults(fn=fn)

    rev = sub.add_parser("revoke", help="revoke a task's credential now (phase Revoked)")
    rev.add_argument("task")
    rev.add_argument("-n", "--namespace", default="default")
    rev.add_argument("--reason", default="")
    rev.set_defaults(fn=cmd_revoke)

    ver = sub.add_parser("verify", help="verify a token (string, file or -) against the JWKS")
    ver.add_argument("token")
    ver.add_argument("--audience")
    ver.add_argument("--issuer")
    ver.add_argument("--jwks", help="JWKS file or URL (default: ConfigMap taskwarden-jwks)")
    ver.add_argument("--revocations", help="revocation list file (default: the ConfigMap)")
    ver.add_argument("--operator-namespace", default="taskwarden-system")
    ver.add_argument("--claims", action="store_true", help="print all claims")
    ver.set_defaults(fn=cmd_verify)
