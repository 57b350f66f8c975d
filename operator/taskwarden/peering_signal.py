"""Whether kopf's peering has paused or resumed this replica, read from kopf's log messages.

kopf (1.45) keeps that state in an internal toggle and offers no public signal, but its peering
engine logs each pause and resume. This module is the one place that reads those messages;
tests/unit/test_peering_messages_of_installed_kopf.py pins them against the installed kopf's
source, so an upgrade that rewords them fails a test instead of silently leaving a standby
idle or two replicas active. Installed by handlers.py at start-up; stdlib only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

KOPF_LOGGER = "kopf._core.engines.peering"
"""The logger kopf's peering engine writes to (its module name)."""
PAUSED = ("Pausing operations", "Pausing all operators")
"""Starts of the messages kopf logs when it pauses this replica."""
RESUMED = ("Resuming operations",)
"""Start of the message kopf logs when it resumes this replica."""


def paused(message: str) -> bool | None:
    """True for a pause, False for a resume, None for any other message."""
    if message.startswith(PAUSED):
        return True
    if message.startswith(RESUMED):
        return False
    return None


class Relay(logging.Filter):
    """Calls `on_peering(paused)` for each pause or resume kopf logs; drops no record."""

    def __init__(self, on_peering: Callable[[bool], None]) -> None:
        super().__init__()
        self.on_peering = on_peering

    def filter(self, record: logging.LogRecord) -> bool:
        state = paused(record.getMessage())
        if state is not None:
            self.on_peering(state)
        return True


def install(on_peering: Callable[[bool], None]) -> Relay:
    relay = Relay(on_peering)
    logging.getLogger(KOPF_LOGGER).addFilter(relay)
    return relay
