"""Whether this replica is active is read from kopf's peering log messages (kopf offers no
public signal). These tests pin those messages against the source of the kopf installed here:
an upgrade that rewords them fails this file instead of silently breaking active/standby."""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import pytest

from taskwarden import peering_signal


def _kopf_peering_source() -> str:
    spec = importlib.util.find_spec(peering_signal.KOPF_LOGGER)
    assert spec is not None and spec.origin, f"{peering_signal.KOPF_LOGGER} is not in kopf"
    return Path(spec.origin).read_text()


def _logged_messages(source: str) -> list[str]:
    """The literal starts of the messages the peering module logs."""
    return re.findall(r'logger\.(?:info|warning)\(f?"([^"{]*)', source)


def test_the_peering_engine_logs_to_its_module_logger() -> None:
    assert "logger = logging.getLogger(__name__)" in _kopf_peering_source()


@pytest.mark.parametrize("prefix", peering_signal.PAUSED + peering_signal.RESUMED)
def test_each_prefix_starts_a_message_kopf_logs(prefix: str) -> None:
    assert any(m.startswith(prefix) for m in _logged_messages(_kopf_peering_source())), prefix


def test_kopf_logs_no_other_pause_or_resume_we_would_miss() -> None:
    for message in _logged_messages(_kopf_peering_source()):
        if re.match(r"(Pausing|Resuming)\b", message):
            assert peering_signal.paused(message) is not None, message


@pytest.mark.parametrize(
    ("message", "paused"),
    [
        ("Pausing operations in favour of [Peer(...)].", True),
        ("Pausing all operators, including self: [...]", True),
        ("Resuming operations after the pause. Conflicting operators ... are gone.", False),
        ("Possibly conflicting operators with the same priority: [...].", None),
        ("Pausing the watch-stream for pods.", None),
    ],
)
def test_messages_map_to_paused_or_resumed(message: str, paused: bool | None) -> None:
    assert peering_signal.paused(message) is paused


def test_the_relay_reports_kopf_records_and_drops_none() -> None:
    seen: list[bool] = []
    relay = peering_signal.install(seen.append)
    logger = logging.getLogger(peering_signal.KOPF_LOGGER)
    try:
        record = logger.makeRecord(
            logger.name, logging.INFO, "f", 1, "Pausing operations in %s", ("x",), None
        )
        assert relay.filter(record) is True
        record = logger.makeRecord(
            logger.name, logging.INFO, "f", 1, "Resuming operations.", (), None
        )
        assert relay.filter(record) is True
        record = logger.makeRecord(logger.name, logging.INFO, "f", 1, "Keep-alive.", (), None)
        assert relay.filter(record) is True
    finally:
        logger.removeFilter(relay)
    assert seen == [True, False]
