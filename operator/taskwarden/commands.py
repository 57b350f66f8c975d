"""User-facing subcommands of `taskwarden` beyond `run` and `controlplane`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pass
