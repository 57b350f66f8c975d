"""Opt-in kind end-to-end tests: `pytest tests/e2e --with-e2e` (or TASKWARDEN_E2E=1)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--with-e2e",
        action="store_true",
        default=False,
        help="run the kind end-to-end tests (needs a Docker engine)",
    )
