"""Friends' engagements as arrays give the same answers as the per-position dict they
replaced, and survive the list cache's layout."""

from __future__ import annotations

import numpy as np
import pytest

from app.serving.engagements import Engagements
from app.serving.pipeline import FlatItems, Friends, _Engaged


def friends(rng: np.random.Generator) -> Friends:
    items = [rng.choice(40, size=rng.integers(0, 12), replace=False) for _ in range(6)]
    return Friends([f"f{n}" for n in range(6)], np.zeros((6, 2), np.float32),
                   rng.random(6).astype(np.float32), FlatItems.of(items))


@pytest.mark.parametrize("seed", range(20))
def test_by_position_equals_the_named_dict(seed: int) -> None:
    rng = np.random.default_rng(seed)
    candidates = rng.choice(40, size=25, replace=False)
    engaged = _Engaged.of(friends(rng), candidates)
    top = rng.permutation(25)[: rng.integers(1, 25)]
    # the dict the list used to carry: shown position -> names, friend order
    expected = {int(np.flatnonzero(top == t)[0]): names
                for t, names in engaged.named(top).items()}
    got = engaged.by_position(top)
    assert got.as_dict() == expected
    positions = np.arange(len(top))
    assert got.at(positions) == [expected.get(p, ()) for p in positions.tolist()]
    compact = got.compact()
    assert compact.as_dict() == expected
    assert len(compact.names) == len({n for names in expected.values() for n in names})


def test_of_and_none() -> None:
    e = Engagements.of({3: ("b", "a"), 0: ("a",)})
    assert e.as_dict() == {0: ("a",), 3: ("b", "a")}
    assert e.at(np.asarray([3, 1, 0])) == [("b", "a"), (), ("a",)]
    assert Engagements.none().at(np.arange(2)) == [(), ()]


def test_flat_items_rows_round_trip() -> None:
    lists = [np.asarray([3, 1]), np.zeros(0, np.int64), np.asarray([7]), np.zeros(0, np.int64)]
    flat = FlatItems.of(lists)
    assert flat.owner.tolist() == [0, 0, 2]
    assert [r.tolist() for r in flat.rows(4)] == [[3, 1], [], [7], []]
    assert FlatItems.runs(flat.items, np.asarray([2, 0, 1, 0])).owner.tolist() == [0, 0, 2]
