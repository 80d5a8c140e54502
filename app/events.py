"""What one behaviour event is worth: shared by the offline loader and the live service."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from app.config import DEFAULT_EVENT_WEIGHTS

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
ID_RE = re.compile(ID_PATTERN)
SOCIAL_TYPES = frozenset({"follow", "unfollow"})


def event_weight(event: str, value: float | None, type_weights: Mapping[str, float]) -> float:
    """Type weight times a damped magnitude: counts and ratings matter, but logarithmically,
    so one artist played 10,000 times does not drown a user's other tastes."""
    base = type_weights.get(event, 1.0)
    if value is None or not math.isfinite(value) or value <= 1.0:
        return base
    return base * (1.0 + math.log(value))


def type_weights(override: Mapping[str, float] | None,
                 trained: Mapping[str, float]) -> Mapping[str, float]:
    """The type weights in force: the operator's override (SOCIALREC_EVENT_WEIGHTS), else the
    ones the model was trained with (its manifest), else the defaults. The service, `socialrec
    load` and `socialrec evaluate` all weigh events through this, so a history means the same
    wherever it is built."""
    return override or trained or DEFAULT_EVENT_WEIGHTS
