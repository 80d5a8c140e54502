"""Garbage collection around the training's big allocation stages: paused while they run,
back as it was afterwards, also when the stage fails."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from app.offline.stages import gc_frozen_scope, gc_paused


@pytest.fixture(autouse=True)
def collector() -> Iterator[None]:
    enabled, frozen = gc.isenabled(), gc.get_freeze_count()
    yield
    gc.unfreeze() if not frozen else None
    (gc.enable if enabled else gc.disable)()


def test_collection_is_paused_inside_and_the_objects_frozen_after() -> None:
    gc.enable()
    with gc_frozen_scope():
        with gc_paused():
            assert not gc.isenabled()
            made = [(n, float(n)) for n in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= len(made)
    assert gc.get_freeze_count() == 0


def test_collection_is_restored_when_the_stage_fails() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), gc_frozen_scope(), gc_paused():
        raise RuntimeError("the stage failed")
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()


def test_objects_frozen_by_the_caller_stay_frozen() -> None:
    kept = [[n] for n in range(100)]
    gc.freeze()
    before = gc.get_freeze_count()
    assert before >= len(kept)
    with gc_frozen_scope(), gc_paused():
        pass
    assert gc.get_freeze_count() >= before
