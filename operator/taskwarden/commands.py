"""User-facing subcommands of `taskwarden` beyond `run` and `controlplane`: dev, get, describe,
approve, deny, revoke, verify. Registered by cli.py. Exit codes: 0 ok, 1 failure or a token
that does not verify, 2 usage."""

from __future__ import annotations

import argparse


def cmd_dev(args: argparse.Namespace) -> int:
    from taskwarden import demo

    return demo.run(keep=args.keep)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dev = sub.add_parser("dev", help="local control plane + CRDs + operator + example, end to end")
    dev.add_argument("--keep", action="store_true", help="leave the control plane running")
    dev.set_defaults(fn=cmd_dev)
