"""The ranked list as the list cache stores it: model items by index, live catalogue items by
id (their indices are each process's own), friends by id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.serving import catalog as catalog_module
from app.serving.artifacts import ModelArtifacts
from app.serving.catalog import CatalogView
from app.serving.engagements import Engagements
from app.serving.pipeline import Basis, Query, Ranked, Recommender, Scored, Strategy
from app.serving.ranked import (
    Rendered,
    decode_ranked,
    encode_entry,
    encode_ranked,
    ranked_of,
    rendered_of,
)
from app.store.catalog import CatalogItem


def view(artifacts: ModelArtifacts, *live: str) -> CatalogView:
    out = CatalogView(artifacts)
    for item_id in live:
        out.apply(CatalogItem(item_id, title=item_id), np.ones(out.dim, dtype=np.float32))
    return out


def test_a_list_with_live_items_reads_back_by_id_in_another_process(
        artifacts_dir: Path) -> None:
    artifacts = ModelArtifacts.load(artifacts_dir, 1)
    base = len(artifacts.catalog.ids)
    writer = view(artifacts, "new-a", "new-b")
    ranked = Ranked(Strategy.PERSONAL_SOCIAL, np.asarray([3, base + 1, 0, base], np.int64),
                    np.asarray([0.75, 0.5, 0.25, 0.125], np.float32),
                    np.asarray([0, 1, 2, 0], np.uint8),
                    Engagements.of({0: ("f1", "f2"), 3: ("f2",)}))
    raw = encode_ranked(ranked, base, writer)

    def served(reader: CatalogView) -> list[Scored]:
        back = decode_ranked(raw, reader)
        assert back is not None
        return back.scored(np.arange(4))

    # a process that learned the live items in the other order
    other = served(view(artifacts, "new-b", "new-a"))
    assert [s.item for s in other] == [3, base, 0, base + 1]
    assert [s.score for s in other] == [0.75, 0.5, 0.25, 0.125]
    assert [s.basis for s in other] == [Basis.HISTORY, Basis.FRIENDS, Basis.POPULARITY,
                                        Basis.HISTORY]
    assert [s.friends for s in other] == [("f1", "f2"), (), (), ("f2",)]
    # one that does not know a live item yet: it reads as no item, which every filter drops
    assert [s.item for s in served(view(artifacts, "new-a"))] == [3, -1, 0, base]
    assert decode_ranked(raw[:30], writer) is None


def live_list(base: int, *live_slots: int) -> Ranked:
    """A list of model item 3 then the live items at `live_slots` (base + slot)."""
    items = np.asarray([3, *(base + s for s in live_slots)], np.int64)
    return Ranked(Strategy.PERSONAL, items, np.linspace(1, 0.5, len(items), dtype=np.float32),
                  np.zeros(len(items), np.uint8), Engagements.none())


def test_a_live_item_learned_after_a_read_shows_on_the_next_read(
        artifacts_dir: Path) -> None:
    """Resolved ids are kept per list, but never an id not known yet: the same stored list
    read again after the process learned the item names it."""
    artifacts = ModelArtifacts.load(artifacts_dir, 1)
    base = len(artifacts.catalog.ids)
    raw = encode_ranked(live_list(base, 0, 1), base, view(artifacts, "new-a", "new-b"))
    reader = view(artifacts, "new-a")
    for _ in range(2):
        back = decode_ranked(raw, reader)
        assert back is not None and back.items.tolist() == [3, base, -1]
    reader.apply(CatalogItem("new-b", title="new-b"), np.ones(reader.dim, dtype=np.float32))
    back = decode_ranked(raw, reader)
    assert back is not None and back.items.tolist() == [3, base, base + 1]


def test_a_resolved_list_still_drops_an_item_withdrawn_since(artifacts_dir: Path) -> None:
    """Availability is filtered on every read, after the ids are resolved: a list read (and
    its live items resolved) before the item is withdrawn never serves it after."""
    artifacts = ModelArtifacts.load(artifacts_dir, 1)
    rec = Recommender(artifacts)
    base = len(artifacts.catalog.ids)
    catalog = view(artifacts, "new-a", "new-b")
    raw = encode_ranked(live_list(base, 0, 1), base, catalog)
    query = Query(k=2)

    def served() -> list[int]:
        ranked = decode_ranked(raw, catalog)
        assert ranked is not None
        out = rec.from_ranked(ranked, query, catalog)
        return [] if out is None else [s.item for s in out.items]

    assert served() == [3, base]
    catalog.apply(CatalogItem("new-a", title="new-a", withdrawn=True), None)
    assert served() == [3, base + 1]
    catalog.apply(CatalogItem("new-b", title="new-b", available=False), None)
    assert served() == []  # one item left: the caller computes the list


def test_resolved_lists_are_bounded_and_stay_correct_past_the_bound(
        artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_module, "LIVE_LISTS_MEMO", 3)
    artifacts = ModelArtifacts.load(artifacts_dir, 1)
    base = len(artifacts.catalog.ids)
    catalog = view(artifacts, *(f"new-{n}" for n in range(8)))
    lists = [encode_ranked(live_list(base, n, (n + 1) % 8), base, catalog) for n in range(8)]
    for _ in range(2):
        for n, raw in enumerate(lists):
            back = decode_ranked(raw, catalog)
            assert back is not None
            assert back.items.tolist() == [3, base + n, base + (n + 1) % 8]
    assert len(catalog._resolved) == 3


def test_an_entry_holds_the_written_answer_and_the_list(artifacts_dir: Path) -> None:
    artifacts = ModelArtifacts.load(artifacts_dir, 1)
    base = len(artifacts.catalog.ids)
    catalog = view(artifacts, "new-a")
    ranked = encode_ranked(live_list(base, 0), base, catalog)
    answer = Rendered(20, 3, Strategy.PERSONAL_SOCIAL, 7, b'[{"item_id":"x","score":1.0}]')
    for rendered in (answer, None):
        raw = encode_entry(rendered, ranked)
        assert rendered_of(raw) == rendered
        back = ranked_of(raw, catalog)
        assert back is not None and back.items.tolist() == [3, base]
    assert rendered_of(encode_entry(answer, ranked)[:20]) is None
    assert ranked_of(encode_entry(answer, ranked)[:20], catalog) is None
    assert ranked_of(b"", catalog) is None


def test_a_list_whose_friend_names_are_not_text_reads_as_nothing(artifacts_dir: Path) -> None:
    artifacts = ModelArtifacts.load(artifacts_dir, 1)
    base = len(artifacts.catalog.ids)
    ranked = Ranked(Strategy.PERSONAL_SOCIAL, np.asarray([3], np.int64),
                    np.asarray([0.5], np.float32), np.asarray([1], np.uint8),
                    Engagements.of({0: ("f1",)}))
    raw = encode_ranked(ranked, base, None)
    assert raw.endswith(b"f1")
    assert decode_ranked(raw[:-2] + b"\xff\xfe", None) is None
