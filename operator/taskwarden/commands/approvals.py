"""`taskwarden approve`, `deny` and `revoke`: an admin's decisions on one AgentTask, made as
themselves (their kubeconfig identity), so admission can check separation of duties."""

from __future__ import annotations

import argparse
import sys

from taskwarden import names
from taskwarden.commands import output, session, tasks


def _approval(args: argparse.Namespace, decision: str) -> int:
    ns = session.namespace(args)
    t = tasks.get_task(args, ns, args.task)
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
    created = session.custom(args).create_namespaced_custom_object(
        names.GROUP, names.VERSION, ns, "agentapprovals", body
    )
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

    ns = session.namespace(args)
    patch = {
        "metadata": {"annotations": {names.REVOKE_ANNOTATION: args.reason or "revoked by admin"}}
    }
    try:
        session.custom(args).patch_namespaced_custom_object(
            names.GROUP, names.VERSION, ns, "agenttasks", args.task, patch
        )
    except ApiException as e:
        if e.status != 404:
            raise
        print(
            f'Error from server (NotFound): {output.RESOURCE} "{args.task}" not found in '
            f"namespace {ns}",
            file=sys.stderr,
        )
        return 3
    print(f"agenttask/{args.task} revocation requested")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    for name, fn in (("approve", cmd_approve), ("deny", cmd_deny)):
        p = sub.add_parser(
            name, parents=[common], help=f"{name} a task awaiting approval (as yourself)"
        )
        p.add_argument("task")
        session.add_namespace_flag(p)
        p.add_argument("--reason", default="")
        p.set_defaults(fn=fn)

    rev = sub.add_parser(
        "revoke", parents=[common], help="revoke a task's credential now (phase Revoked)"
    )
    rev.add_argument("task")
    session.add_namespace_flag(rev)
    rev.add_argument("--reason", default="")
    rev.set_defaults(fn=cmd_revoke)
