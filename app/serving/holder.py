"""Holds the model being served and swaps in a new one atomically on reload."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from app.serving.artifacts import ArtifactError, ModelArtifacts
from app.serving.encode import EMPTY_HISTORY, History
from app.serving.pipeline import Query, Recommender, UserState


class ModelHolder:
    """Requests read `current` once and keep that model for the whole request, so a reload
    mid-request never mixes two models."""

    def __init__(self, folder: Path, onnx_threads: int) -> None:
        self.folder = folder
        self._threads = onnx_threads
        self._lock = asyncio.Lock()
        self.current: Recommender | None = None
        self.error: str | None = None

    def load(self) -> Recommender:
        try:
            self.current = _smoke_tested(ModelArtifacts.load(self.folder, self._threads))
        except ArtifactError as exc:
            self.error = str(exc)
            raise
        self.error = None
        return self.current

    async def reload(self) -> Recommender:
        """Load and smoke-test in a worker thread; on any failure the old model stays."""
        async with self._lock:
            artifacts = await asyncio.to_thread(ModelArtifacts.load, self.folder, self._threads)
            try:
                fresh = await asyncio.to_thread(_smoke_tested, artifacts)
            except ArtifactError:
                raise
            except Exception as exc:  # any failure of an untrusted model means: refuse it
                raise ArtifactError(f"model failed its smoke test: {exc}") from exc
            self.current = fresh
            self.error = None
            return fresh


def _smoke_tested(artifacts: ModelArtifacts) -> Recommender:
    """One real recommendation before the model may serve: catches an encoder whose output
    does not fit the index."""
    recommender = Recommender(artifacts)
    vector = recommender.encode([EMPTY_HISTORY, History.of([(0, 1.0)])])
    if vector.shape != (2, artifacts.manifest.embedding_dim):
        raise ArtifactError(f"encoder returns shape {vector.shape}, manifest says "
                            f"(2, {artifacts.manifest.embedding_dim})")
    if not np.isfinite(vector).all():
        raise ArtifactError("encoder returns NaN or inf")
    recommender.recommend(UserState(history=History.of([(0, 1.0)])), Query(k=1))
    return recommender
