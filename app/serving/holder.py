"""Holds the model being served and swaps in a new one atomically on reload.

A reload reaches every API process, workers and replicas alike: the process that receives
`/admin/reload` loads and smoke-tests the folder, announces the accepted version in the store
(a generation counter), and only then swaps. Every process polls the announcement and loads
its own folder when the generation moves; one that cannot load that version keeps serving its
model and says why in `follow_error`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from app.serving.artifacts import ArtifactError, ModelArtifacts
from app.serving.encode import EMPTY_HISTORY, History
from app.serving.pipeline import Query, Recommender, UserState
from app.store.redis_store import ReloadNotice


class ModelHolder:
    """A model is always being served: `load()` builds the holder only once one passed its
    smoke test, and a refused reload keeps the old one. Requests read `current` once and keep
    that model for the whole request, so a reload mid-request never mixes two models."""

    def __init__(self, model: Recommender, folder: Path, onnx_threads: int) -> None:
        self.current = model
        self.folder = folder
        self._threads = onnx_threads
        self._lock = asyncio.Lock()
        # The reload generation this process has acted on; None until the store was read once
        # (what was announced before this process started is what its folder already holds).
        self.seen: int | None = None
        self.follow_error: str | None = None
        # Run on a model before it swaps in (the live catalogue builds its view of it).
        self.prepare: Callable[[ModelArtifacts], Awaitable[object]] | None = None

    @classmethod
    def load(cls, folder: Path, onnx_threads: int) -> ModelHolder:
        """Blocking: reads and smoke-tests the folder; ArtifactError if it is refused."""
        return cls(load_checked(folder, onnx_threads), folder, onnx_threads)

    async def reload(self, announce: Callable[[str], Awaitable[int]]) -> Recommender:
        """Load and smoke-test the folder in a worker thread, announce its version (which
        returns the generation), then swap. An ArtifactError or a failed announcement leaves
        this process, and so every other one, on the old model."""
        async with self._lock:
            fresh = await self._candidate()
            self.seen = await announce(fresh.version)
            self._swap(fresh)
            return fresh

    async def follow(self, notice: ReloadNotice) -> Recommender | None:
        """Act on the last announced reload: the model swapped in, or None when there was
        nothing to do. ArtifactError when this process cannot load the announced version; it
        keeps its model and reports why until the next announcement."""
        async with self._lock:
            # An older notice was read before this process's own reload took the lock.
            if self.seen is not None and notice.generation <= self.seen:
                return None
            first, self.seen = self.seen is None, notice.generation
            if first or notice.version == self.current.version:
                self.follow_error = None
                return None
            try:
                fresh = await self._candidate()
                if fresh.version != notice.version:
                    raise ArtifactError(f"{self.folder} holds model {fresh.version}, not the "
                                        f"announced {notice.version}")
            except ArtifactError as exc:
                self.follow_error = (f"could not load model {notice.version} announced by "
                                     f"{notice.origin}: {exc}")
                raise
            self._swap(fresh)
            return fresh

    async def _candidate(self) -> Recommender:
        fresh = await asyncio.to_thread(load_checked, self.folder, self._threads)
        if self.prepare is not None:
            await self.prepare(fresh.artifacts)
        return fresh

    def _swap(self, model: Recommender) -> None:
        self.current = model
        self.follow_error = None


def load_checked(folder: Path, onnx_threads: int) -> Recommender:
    """Any failure of an untrusted model, whatever it raises, means: refuse it."""
    artifacts = ModelArtifacts.load(folder, onnx_threads)
    try:
        return _smoke_tested(artifacts)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"model failed its smoke test: {exc}") from exc


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
