"""Encode stage: recent history (item indices + weights) → user vector, via the ONNX encoder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from app.serving.artifacts import ENCODER_INPUTS, ENCODER_OUTPUT


@dataclass(frozen=True, slots=True)
class History:
    """Known items of one user, most recent first, with their event weights."""

    items: np.ndarray  # int64
    weights: np.ndarray  # float32

    @classmethod
    def of(cls, pairs: Sequence[tuple[int, float]]) -> History:
        if not pairs:
            return EMPTY_HISTORY
        items, weights = zip(*pairs, strict=True)
        return cls(np.asarray(items, dtype=np.int64), np.asarray(weights, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.items)


EMPTY_HISTORY = History(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))


class Encoder:
    """Batches histories into padded (ids, weights) tensors; weight 0 marks padding."""

    def __init__(self, session: ort.InferenceSession, max_history: int) -> None:
        self._session = session
        self._max_history = max_history

    def __call__(self, histories: Sequence[History]) -> np.ndarray:
        width = max(1, min(self._max_history, max((len(h) for h in histories), default=0)))
        ids = np.zeros((len(histories), width), dtype=np.int64)
        weights = np.zeros((len(histories), width), dtype=np.float32)
        for row, h in enumerate(histories):
            n = min(width, len(h))
            ids[row, :n] = h.items[:n]
            weights[row, :n] = h.weights[:n]
        feeds = dict(zip(ENCODER_INPUTS, (ids, weights), strict=True))
        return self._session.run([ENCODER_OUTPUT], feeds)[0]
