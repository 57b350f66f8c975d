"""`taskwarden get` and `describe`: AgentTasks as kubectl shows objects, with phase, expiry,
decision and credential metadata. Tokens are never printed."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from taskwarden import names
from taskwarden.commands import output, session


def get_task(args: argparse.Namespace, ns: str, name: str) -> dict[str, Any] | None:
    """The task, or None after printing kubectl's not-found line."""
    from kubernetes.client.exceptions import ApiException

    try:
        return dict(
            session.custom(args).get_namespaced_custom_object(
                names.GROUP, names.VERSION, ns, "agenttasks", name
            )
        )
    except ApiException as e:
        if e.status == 404:
            print(
                f'Error from server (NotFound): {output.RESOURCE} "{name}" not found in '
                f"namespace {ns}",
                file=sys.stderr,
            )
            return None
        raise


def cmd_get(args: argparse.Namespace) -> int:
    if args.all_namespaces and args.tasks:
        print("error: a task cannot be retrieved by name across all namespaces", file=sys.stderr)
        return 2
    if args.tasks:
        ns = session.namespace(args)
        found = [get_task(args, ns, name) for name in args.tasks]
        tasks = [t for t in found if t is not None]
        missing = len(found) - len(tasks)
    else:
        custom, missing = session.custom(args), 0
        if args.all_namespaces:
            resp = custom.list_cluster_custom_object(names.GROUP, names.VERSION, "agenttasks")
        else:
            resp = custom.list_namespaced_custom_object(
                names.GROUP, names.VERSION, session.namespace(args), "agenttasks"
            )
        tasks = resp["items"]
    text = output.render(
        tasks,
        args.output,
        time.time(),
        all_namespaces=args.all_namespaces,
        single=len(args.tasks) == 1,
    )
    if text:
        print(text)
    elif not args.tasks and args.output not in ("json", "yaml"):
        where = "" if args.all_namespaces else f" in namespace {session.namespace(args)}"
        print(f"No agent tasks found{where}.", file=sys.stderr)
    return 3 if missing else 0


def cmd_describe(args: argparse.Namespace) -> int:
    from kubernetes import client

    t = get_task(args, session.namespace(args), args.task)
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
        client.EventsV1Api(session.api_client(args))
        .list_namespaced_event(md["namespace"], field_selector=f"regarding.name={md['name']}")
        .items
    )
    out.append("Events:")
    for e in sorted(evs, key=lambda e: str(e.event_time or "")):
        out.append(f"  {e.type:<8}{e.reason:<20}{e.note}")
    print("\n".join(out))
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    get = sub.add_parser(
        "get", parents=[common], help="list agent tasks with phase, expiry and decision"
    )
    get.add_argument("tasks", nargs="*", metavar="TASK", help="only these tasks")
    session.add_namespace_flag(get)
    get.add_argument("-A", "--all-namespaces", action="store_true", help="tasks in every namespace")
    get.add_argument(
        "-o", "--output", choices=output.FORMATS, help="json, yaml, wide or name (default: a table)"
    )
    get.set_defaults(fn=cmd_get)

    desc = sub.add_parser(
        "describe", parents=[common], help="one task: identity, decision, credential, history"
    )
    desc.add_argument("task")
    session.add_namespace_flag(desc)
    desc.set_defaults(fn=cmd_describe)
