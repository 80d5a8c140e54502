"""A user's ranked list (pipeline `Ranked`) as the list cache stores it in Redis.

Items are stored by model index, which every process serving the model shares; a live
catalogue item's index is this process's own (app.serving.catalog), so it is stored by its id
and looked up on reading (an item another process does not know yet reads as -1, which every
filter drops), once per distinct list and process (`CatalogView.live_indices`): a list is
read on every hit while it is cached. Friends are stored by id, as the reasons name them.

Layout: uint32 strategy code, item count n, friend engagement count p, friend id count f, live
item count l; int32[n] items (a model index, or −1−j for the j-th live id); float32[n] scores;
uint16[p] list positions and uint16[p] friend numbers of the engagements; uint8[n] basis
codes; then the f friend ids and the l live item ids, NUL-separated. About 9 bytes per item.

A stored entry is a `Rendered` answer, then the list: the items of the answer to the request
that computed the list, as the API wrote them, so that later requests asking the same (the
same k and rendering, nothing filtered) are answered with those bytes, without decoding,
filtering and writing the list again. Layout: uint32 answer length a (0: none), uint16 k,
uint8 rendering key, uint8 strategy code, int64 catalogue generation; a bytes of JSON.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from app.serving.catalog import CatalogView
from app.serving.engagements import Engagements
from app.serving.pipeline import Ranked, Strategy

STRATEGIES = tuple(Strategy)
_HEAD = struct.Struct("=5I")
_RENDERED = struct.Struct("=IHBBq")


@dataclass(frozen=True, slots=True)
class Rendered:
    """An answer's items as JSON, for requests with this k and rendering `key` and no filter.
    It was written from the catalogue at `generation`, and every catalogue change
    (availability, titles, categories) moves the generation, so it is the answer a request
    would write only while the catalogue is still there."""

    k: int
    key: int
    strategy: Strategy
    generation: int
    items_json: bytes


def encode_entry(rendered: Rendered | None, ranked: bytes) -> bytes:
    if rendered is None:
        return _RENDERED.pack(0, 0, 0, 0, 0) + ranked
    return b"".join([_RENDERED.pack(len(rendered.items_json), rendered.k, rendered.key,
                                    STRATEGIES.index(rendered.strategy), rendered.generation),
                     rendered.items_json, ranked])


def rendered_of(raw: bytes) -> Rendered | None:
    """The entry's answer (None: none stored, or malformed)."""
    if len(raw) < _RENDERED.size:
        return None
    size, k, key, strategy, generation = _RENDERED.unpack_from(raw)
    if not size or strategy >= len(STRATEGIES) or len(raw) < _RENDERED.size + size:
        return None
    return Rendered(k, key, STRATEGIES[strategy], generation,
                    raw[_RENDERED.size: _RENDERED.size + size])


def ranked_of(raw: bytes, catalog: CatalogView | None) -> Ranked | None:
    """The entry's list; None when malformed (the caller recomputes)."""
    if len(raw) < _RENDERED.size:
        return None
    return decode_ranked(raw, catalog, _RENDERED.size + _RENDERED.unpack_from(raw)[0])


def encode_ranked(ranked: Ranked, base: int, catalog: CatalogView | None) -> bytes:
    """`base`: the model's item count (indices from it on are live items)."""
    items = ranked.items.astype(np.int64)
    live = np.flatnonzero(items >= base)
    live_ids = []
    if len(live):
        assert catalog is not None
        live_ids = [catalog.item_id(int(i)) for i in items[live]]
        items = items.copy()
        items[live] = -1 - np.arange(len(live))
    engaged = ranked.friends.compact()
    names = list(engaged.names)
    where, who = engaged.where.astype(np.uint16), engaged.who.astype(np.uint16)
    return b"".join([
        _HEAD.pack(STRATEGIES.index(ranked.strategy), len(items), len(where), len(names),
                   len(live_ids)),
        items.astype(np.int32).tobytes(), ranked.scores.astype(np.float32).tobytes(),
        where.tobytes(), who.tobytes(), ranked.basis.astype(np.uint8).tobytes(),
        "\0".join(names + live_ids).encode()])


def decode_ranked(raw: bytes, catalog: CatalogView | None, start: int = 0) -> Ranked | None:
    """The list encoded at `start` of `raw`; None when malformed (the caller recomputes)."""
    if len(raw) < start + _HEAD.size:
        return None
    strategy, n, p, f, live = _HEAD.unpack_from(raw, start)
    at = start + _HEAD.size
    end = at + 8 * n + 4 * p + n
    if strategy >= len(STRATEGIES) or len(raw) < end:
        return None
    items = np.frombuffer(raw, np.int32, n, at).astype(np.int64)
    scores = np.frombuffer(raw, np.float32, n, at + 4 * n)
    where = np.frombuffer(raw, np.uint16, p, at + 8 * n).astype(np.int64)
    who = np.frombuffer(raw, np.uint16, p, at + 8 * n + 2 * p).astype(np.int64)
    basis = np.frombuffer(raw, np.uint8, n, at + 8 * n + 4 * p)
    # the friends' names, then the live ids left joined: they are resolved as one key
    words = raw[end:].split(b"\0", f) if f + live else []
    if len(words) != f + (live > 0):
        return None
    try:
        names = [w.decode() for w in words[:f]]
    except UnicodeDecodeError:
        return None
    if p and (int(who.max()) >= f or np.any(np.diff(where) < 0)):
        return None
    if live:
        slots = np.flatnonzero(items < 0)
        if catalog is not None:
            found = catalog.live_indices(words[f], live)
        else:  # nothing is known here: every live item reads as -1
            found = np.full(live, -1, np.int64) if words[f].count(b"\0") == live - 1 else None
        if found is None or len(slots) != live:
            return None
        items[slots] = found
    return Ranked(STRATEGIES[strategy], items, scores, basis, Engagements(names, where, who))
