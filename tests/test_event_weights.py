"""What an event is worth, and which type weights are in force."""

from __future__ import annotations

from app.config import DEFAULT_EVENT_WEIGHTS
from app.events import type_weights


def test_the_operators_weights_win_then_the_models_then_the_defaults() -> None:
    override, trained = {"view": 5.0}, {"view": 2.0, "buy": 9.0}
    assert type_weights(override, trained) == override
    assert type_weights(None, trained) == trained
    assert type_weights(None, {}) == DEFAULT_EVENT_WEIGHTS
