"""The ranked list as the list cache stores it: model items by index, live catalogue items by
id (their indices are each process's own), friends by id."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.serving.artifacts import ModelArtifacts
from app.serving.catalog import CatalogView
from app.serving.engagements import Engagements
from app.serving.pipeline import Basis, Ranked, Scored, Strategy
from app.serving.ranked import decode_ranked, encode_ranked
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
