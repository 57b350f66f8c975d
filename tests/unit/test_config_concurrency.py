"""The two concurrency knobs of config.from_env: defaults, values, and the error naming the
variable when a value could never let work through."""

from __future__ import annotations

import pytest

from taskwarden import config


def test_defaults() -> None:
    s = config.from_env({})
    assert (s.lifecycle.api_workers, s.lifecycle.rotation_concurrency) == (32, 16)


def test_values_are_read() -> None:
    s = config.from_env({"TASKWARDEN_API_WORKERS": "8", "TASKWARDEN_ROTATION_CONCURRENCY": "2"})
    assert (s.lifecycle.api_workers, s.lifecycle.rotation_concurrency) == (8, 2)


@pytest.mark.parametrize("var", ["TASKWARDEN_API_WORKERS", "TASKWARDEN_ROTATION_CONCURRENCY"])
def test_zero_is_refused_naming_the_variable(var: str) -> None:
    with pytest.raises(ValueError, match=f"{var} must be at least 1, got 0"):
        config.from_env({var: "0"})
