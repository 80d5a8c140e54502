"""The per-user seen set's compact item ids: 8 bytes per item, far beyond the history window.

A user's seen set (app.store.keys `seen`) is a STRING of these tags, oldest first. A tag is
the first 8 bytes of the item id's BLAKE2b digest: a fixed width keeps the set small and
searchable inside Lua, and it names items the model does not know yet (they match once a
retrained model knows them). Two ids sharing a tag is a 2^-64 event per pair.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

TAG_BYTES = 8


def item_tag(item_id: str) -> bytes:
    return hashlib.blake2b(item_id.encode(), digest_size=TAG_BYTES).digest()


class TagIndex:
    """Item index of every tag of a catalogue (item ids in index order)."""

    def __init__(self, item_ids: Sequence[str]) -> None:
        tags = np.frombuffer(b"".join(item_tag(i) for i in item_ids), dtype="<u8")
        self._order = np.argsort(tags, kind="stable")
        self._sorted = tags[self._order]

    def indices(self, raw: bytes) -> np.ndarray:
        """The catalogue indices (int64) of the items in a seen set; unknown tags are skipped."""
        if not raw or not len(self._sorted):
            return np.zeros(0, dtype=np.int64)
        tags = np.frombuffer(raw, dtype="<u8", count=len(raw) // TAG_BYTES)
        at = np.minimum(np.searchsorted(self._sorted, tags), len(self._sorted) - 1)
        return self._order[at[self._sorted[at] == tags]].astype(np.int64)
