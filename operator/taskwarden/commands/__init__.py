"""The `taskwarden` subcommands other than `run`, one module per group; cli.py registers them.

- `cluster`: `controlplane up|down|env|build` and `dev` (the demo);
- `tasks`: `get`, `describe`;  `approvals`: `approve`, `deny`, `revoke`;  `verify`;
- `completion`: shell completion generated from the parser;
- `session` (kubeconfig, context, namespace, API errors as one line) and `output` (tables,
  `-o json|yaml|wide|name`) serve them.

Exit codes: 0 ok; 1 the operation failed, the API refused it, or the token does not verify;
2 usage errors (and `run` without an admission path); 3 not found. Tokens are never printed.
"""

from __future__ import annotations

import argparse

from taskwarden.commands import approvals, cluster, completion, session, tasks, verify


def common_flags() -> argparse.ArgumentParser:
    """The parent parser of every command that talks to a cluster."""
    common = argparse.ArgumentParser(add_help=False)
    session.add_cluster_flags(common)
    return common


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = common_flags()
    cluster.register(sub)
    tasks.register(sub, common)
    approvals.register(sub, common)
    verify.register(sub, common)
    completion.register(sub)
