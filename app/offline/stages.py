"""Wall time and peak resident memory of each training stage: written into the manifest's
metrics (`seconds_<stage>`, `peak_rss_mb_<stage>`) and printed by bench/train_scale.

The peak of a stage is the process's high-water mark of resident memory while the stage ran.
Linux lets a process reset that mark (`/proc/self/clear_refs`), so each stage's figure is its own
peak; where the reset is not possible the figure is the peak since the process started, which
is still an upper bound for the stage."""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss_mb() -> float:
    """The high-water mark of resident memory (since the last reset, where resettable)."""
    with contextlib.suppress(OSError):
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")  # 5: reset the peak RSS to the current RSS


class StageClock:
    """`with clock("als"): ...` accumulates the stage's seconds and its peak RSS."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        _reset_peak()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started
            self.peak_mb[stage] = max(self.peak_mb.get(stage, 0.0), peak_rss_mb())

    def metrics(self) -> dict[str, float]:
        return {**{f"seconds_{k}": v for k, v in self.seconds.items()},
                **{f"peak_rss_mb_{k}": v for k, v in self.peak_mb.items()}}


def passive_openmp() -> None:
    """Idle OpenMP threads sleep instead of spinning (unless the environment says otherwise).
    Call before PyTorch or FAISS is imported: their OpenMP runtimes read it once. On 2 cores
    shared with other work, spinning threads were measured to make band learning's small
    steps 17 × slower (13.3 s instead of 0.78 s for 60 steps) and FAISS's PQ training 45 ×
    (61 s instead of 1.4 s); on an idle machine sleeping costs nothing measurable."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Automatic garbage collection off while the block builds millions of small objects (the
    histories' tuples), and those objects frozen afterwards (left out of later collections;
    reference counting still frees them). Otherwise the collector rescans every object made so
    far again and again while they are made, so reading a shop twice the size took more than
    twice as long. Collection is back as it was when the block ends, also on an error."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def gc_frozen_scope() -> Iterator[None]:
    """Objects frozen by `gc_paused` inside the block are handed back to the collector when it
    ends (also on an error), unless some were frozen before it started (the caller's own)."""
    frozen = gc.get_freeze_count()
    try:
        yield
    finally:
        if not frozen:
            gc.unfreeze()
