"""The live catalogue as one model serves it: availability, metadata and a side index of the
items the model does not know, merged into the pipeline's stages.

Item indices: the model's items keep their indices 0..N−1; a live item the model does not know
gets N, N+1, … in the order this process learned of it (append-only for the model's lifetime,
so an index taken before an `await` stays valid after it). These indices never leave the
process: nothing written to Redis holds one.

- Availability: `unavailable` (sorted indices, model and live items alike) joins the banned
  items of every request — personal, social, popular fill and degraded lists.
- Side index: the live items' text vectors (`TextEncoder.item_vector`, the projection the export
  applies to the catalogue's untrained items, so the scores are on the FAISS items' scale),
  searched by the same inner product (app.serving.side) and merged with the FAISS candidates.
  For a model whose index scans every item (flat, pqfs) the side index's codes also hold the
  model's items once it is coded (`folded`), and an unfiltered retrieval is one search of both
  (`search_all`); IVF and HNSW models, whose catalogues dwarf any live share worth a second
  copy of their codes, keep the two searches.
- Metadata: titles and categories the catalogue API set, for live and model items; category
  filters follow them.
- Fold-in: the ONNX user encoder takes model item indices only, so a live item in a user's
  history enters the encoding as its proxy — the model item nearest its text vector (cosine of
  the taste coordinates) — with the same event weight (`encoder_history`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.serving.artifacts import ModelArtifacts
from app.serving.encode import History
from app.serving.side import SideIndex
from app.serving.text import ItemDescription
from app.store.catalog import CatalogItem, CatalogStore, encode_vector
from app.store.redis_store import STORE_ERRORS
from app.store.seen import TagIndex

log = logging.getLogger(__name__)
NO_ITEMS = np.zeros(0, dtype=np.int64)
# How often every process reads the catalogue's changes: one small ZRANGEBYSCORE per poll, so an
# availability change reaches every process well within a second.
CATALOG_POLL_S = 0.25
# While the catalogue's Redis node fails, the poll backs off (doubling) up to this: a node that
# is down is not asked four times a second by every process, and a change made once it is back
# still reaches every process within this bound plus one read.
CATALOG_POLL_MAX_S = 2.0
CHANGES_PAGE = 5000  # records per read; ≥ the largest bulk write (one generation)
KEPT_VIEWS = 2
# Stored lists whose live items a view keeps resolved (`live_indices`): a list is read on every
# hit for as long as it is cached, so its ids are looked up once instead of on each read. An
# entry is the ids' bytes and 8 bytes per index: ~4.4 KB for 200 live items with 12-character
# ids, ~18 MB for a full memo of such lists; past the bound the oldest entry goes.
LIVE_LISTS_MEMO = 4096
# Model index kinds that scan every item: their items join the side index's codes (folding).
FOLDED_KINDS = frozenset({"flat", "pqfs"})


@dataclass(frozen=True, slots=True)
class ItemView:
    """An item as served: where its vector comes from and whether it may be shown."""

    index: int
    known_to_model: bool
    vector_source: str  # "model", "text" or "none"
    available: bool
    title: str
    category: str


class CatalogView:
    """The catalogue of one model in one process. Mutated only by the event loop (the
    catalogue poll and the catalogue routes), read by the synchronous pipeline: a request sees
    one consistent state for the duration of a pipeline call."""

    def __init__(self, artifacts: ModelArtifacts) -> None:
        self.artifacts = artifacts
        self.version = artifacts.version
        self.base = len(artifacts.catalog.ids)
        self.dim = artifacts.manifest.embedding_dim
        self.generation = 0  # the last catalogue generation applied
        self.ids: list[str] = []  # live items, in live index order
        self.index: dict[str, int] = {}  # live item id → its index (base + slot)
        self.titles: list[str] = []
        self.categories: list[str] = []
        # row = live slot; the model's items in the codes too where one search covers both
        self.side = SideIndex(self.dim, artifacts.item_vectors
                              if artifacts.manifest.index.kind in FOLDED_KINDS else None)
        self._proxies = np.zeros(0, dtype=np.int64)  # nearest model item, -1 without a vector
        self.overrides: dict[int, tuple[str, str]] = {}  # model item → catalogue title, category
        self._unavailable: set[int] = set()
        self._cache: dict[str, object] = {}  # derived arrays, dropped on every change
        self._resolved: dict[bytes, np.ndarray] = {}  # see live_indices
        taste = artifacts.item_vectors[:, :-1]
        norms = np.linalg.norm(taste, axis=1)
        self._proxy_candidates = np.flatnonzero(norms > 0)
        self._proxy_norms = norms[self._proxy_candidates]

    # ---- reads -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.base + len(self.ids)

    def lookup(self, item_id: str) -> int | None:
        """The index of an item the model or the live catalogue knows."""
        known = self.artifacts.catalog.index.get(item_id)
        return known if known is not None else self.index.get(item_id)

    def live_indices(self, joined: bytes, count: int) -> np.ndarray | None:
        """The indices of the `count` live items whose ids `joined` names (UTF-8,
        NUL-separated, as a stored list holds them; app.serving.ranked), −1 for an id this
        process does not know yet; None when `joined` does not name `count` ids. Read-only.
        A list that names only known ids is resolved once per distinct `joined`, not on every
        read: a live item's index never changes for the view's lifetime. One naming an id
        not known yet is resolved again on each read, so the item shows once it is known.
        Availability is not part of this: callers filter it at serving time."""
        known = self._resolved.get(joined)
        if known is not None:
            return known
        ids = joined.decode().split("\0")
        if len(ids) != count:
            return None
        index = self.index
        found = np.fromiter((index.get(i, -1) for i in ids), dtype=np.int64, count=count)
        found.flags.writeable = False
        if count and found.min() >= 0:
            if len(self._resolved) >= LIVE_LISTS_MEMO:
                del self._resolved[next(iter(self._resolved))]
            self._resolved[joined] = found
        return found

    def item_id(self, index: int) -> str:
        return (self.artifacts.catalog.ids[index] if index < self.base
                else self.ids[index - self.base])

    def describe(self, index: int) -> tuple[str, str, str]:
        """(item id, title, category) as the catalogue says, else as the model's items say."""
        if index >= self.base:
            slot = index - self.base
            return self.ids[slot], self.titles[slot], self.categories[slot]
        catalog = self.artifacts.catalog
        title, category = self.overrides.get(index, (catalog.titles[index],
                                                     catalog.categories[index]))
        return catalog.ids[index], title, category

    def view(self, item_id: str) -> ItemView | None:
        index = self.lookup(item_id)
        if index is None:
            return None
        _, title, category = self.describe(index)
        if index < self.base:
            source = self.artifacts.catalog.vector_sources[index]
        else:
            source = "text" if self.side.informed(index - self.base) else "none"
        return ItemView(index, index < self.base, source, index not in self._unavailable,
                        title, category)

    def memo(self, name: str) -> dict[Any, Any]:
        """A dict for values the caller derives from items' descriptions (the API's JSON of
        each item): dropped with every change of the catalogue, so it never outlives one.
        At most one entry per item of the view."""
        memo = self._cache.get("memo:" + name)
        if memo is None:
            memo = self._cache["memo:" + name] = {}
        assert isinstance(memo, dict)
        return memo

    @property
    def unavailable(self) -> np.ndarray:
        """Sorted indices of the items that must not be shown."""
        cached = self._cache.get("unavailable")
        if cached is None:
            cached = np.fromiter(sorted(self._unavailable), dtype=np.int64,
                                 count=len(self._unavailable))
            self._cache["unavailable"] = cached
        assert isinstance(cached, np.ndarray)
        return cached

    def is_available(self, index: int) -> bool:
        return index not in self._unavailable

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Item vectors of model and live indices alike, (len(ids), dim)."""
        model = self.artifacts.item_vectors
        if self.side.folded:  # one matrix holds both (app.serving.side)
            return self.side.all_rows(ids)
        if not len(ids) or ids.max() < self.base:
            return model[ids]
        out = model.take(np.minimum(ids, self.base - 1), axis=0)
        live = np.flatnonzero(ids >= self.base)
        out[live] = self.side.rows(ids[live] - self.base)
        return out

    def search(self, vector: np.ndarray, n: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The side index: top-`n` (scores, indices) of the live items with a vector by inner
        product; `allowed` (sorted indices) restricts them."""
        rows = None if allowed is None else allowed[allowed >= self.base] - self.base
        scores, found = self.side.search(vector, n, rows)
        return scores, found + self.base

    @property
    def folded(self) -> bool:
        """`search_all` covers the model's items and the live ones (app.serving.side)."""
        return self.side.folded

    def search_all(self, vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Folded only: top-`n` (scores, indices) of model and live items together, best
        first: indices are the side index's rows, the model's items first."""
        return self.side.search_all(vector, n)

    def in_categories(self, categories: frozenset[str]) -> np.ndarray:
        """Sorted indices of the items whose served category is one of `categories`."""
        model = self.artifacts.catalog.indices_in(categories)
        if self.overrides:
            moved = np.fromiter(self.overrides, dtype=np.int64, count=len(self.overrides))
            model = model[~np.isin(model, moved)]
            back = [i for i, (_, c) in self.overrides.items() if c in categories]
            if back:
                model = np.union1d(model, np.asarray(back, dtype=np.int64))
        by_category = self._live_by_category()
        live = [by_category[c] for c in categories if c in by_category]
        if not live:
            return model
        return np.concatenate([model, np.sort(np.concatenate(live))])

    def encoder_history(self, history: History) -> History:
        """What the ONNX encoder reads: model items as they are, each live item replaced by
        its proxy (live items without a vector are left out)."""
        items = history.items
        if not len(items) or items.max() < self.base:
            return history
        proxies = items.copy()
        live = items >= self.base
        proxies[live] = self._proxies[items[live] - self.base]
        keep = proxies >= 0
        return History(proxies[keep], history.weights[keep])

    def seen_live(self, raw: bytes) -> np.ndarray:
        """Live indices of the live items in a seen set (app.store.seen)."""
        if not self.ids or not raw:
            return NO_ITEMS
        tags = self._cache.get("tags")
        if tags is None:
            tags = TagIndex(self.ids)
            self._cache["tags"] = tags
        assert isinstance(tags, TagIndex)
        return tags.indices(raw) + self.base

    def _live_by_category(self) -> dict[str, np.ndarray]:
        """Live indices per served category, built once per change, not per request."""
        cached = self._cache.get("by_category")
        if cached is None:
            groups: dict[str, list[int]] = {}
            for slot, category in enumerate(self.categories):
                groups.setdefault(category, []).append(self.base + slot)
            cached = {c: np.asarray(i, dtype=np.int64) for c, i in groups.items()}
            self._cache["by_category"] = cached
        assert isinstance(cached, dict)
        return cached

    # ---- writes ------------------------------------------------------------------------
    def apply(self, item: CatalogItem, vector: np.ndarray | None) -> None:
        """Take one record's current state; `vector` is its text vector for this model (used
        only for an item the model does not know)."""
        self._cache.clear()
        index = self.artifacts.catalog.index.get(item.item_id)
        if index is not None:
            catalog = self.artifacts.catalog
            title = item.title or catalog.titles[index]
            category = item.category or catalog.categories[index]
            if (title, category) != (catalog.titles[index], catalog.categories[index]):
                self.overrides[index] = (title, category)
            else:
                self.overrides.pop(index, None)
        else:
            index = self.index.get(item.item_id)
            if index is None:
                index = self._append(item.item_id)
            slot = index - self.base
            self.titles[slot], self.categories[slot] = item.title, item.category
            if vector is not None:
                self.side.set(slot, vector)
                self._proxies[slot] = self._proxy(vector)
        if item.served:
            self._unavailable.discard(index)
        else:
            self._unavailable.add(index)

    def _append(self, item_id: str) -> int:
        slot = self.side.append()
        if slot == len(self._proxies):
            grown = np.full(max(64, 2 * slot), -1, dtype=np.int64)
            grown[:slot] = self._proxies
            self._proxies = grown
        self.ids.append(item_id)
        self.titles.append("")
        self.categories.append("")
        index = self.base + slot
        self.index[item_id] = index
        return index

    def _proxy(self, vector: np.ndarray) -> int:
        """The model item nearest `vector` by cosine of the taste coordinates, or -1."""
        taste = vector[:-1]
        norm = float(np.linalg.norm(taste))
        if not len(self._proxy_candidates) or norm == 0:
            return -1
        cosine = (self.artifacts.item_vectors[self._proxy_candidates, :-1] @ taste) / \
            (self._proxy_norms * norm)
        return int(self._proxy_candidates[int(np.argmax(cosine))])

    @property
    def live_bytes(self) -> int:
        """Memory held for the live items, for the docs: the side index (vector rows with
        their growth slack, flags, codes; once folded also the model's rows' codes and copy,
        `side.prefix_bytes`) and the proxies; Python strings and dict entries come on top."""
        return self.side.nbytes + self._proxies.nbytes


def describe(item: CatalogItem) -> ItemDescription:
    return ItemDescription(item.title, item.category, item.tags, item.description)


def text_vectors(artifacts: ModelArtifacts,
                 items: Sequence[CatalogItem]) -> dict[str, np.ndarray]:
    """Blocking: the text vectors of the described items among `items` the model does not
    know, by its text encoder (none without one)."""
    text = artifacts.text
    todo = [i for i in items
            if i.item_id not in artifacts.catalog.index and describe(i)]
    if text is None or not todo:
        return {}
    vectors = text.item_vectors([describe(i) for i in todo])
    return {i.item_id: vectors[n] for n, i in enumerate(todo)}


class Catalogue:
    """This process's copy of the live catalogue, and a `CatalogView` per served model.

    `poll()` applies the records changed since the last generation it applied (every process
    polls every CATALOG_POLL_S, and a catalogue route polls right after its write, so the
    writing process reads its own writes at once). While Redis is away the last state read
    stays in force. A text vector is computed once — by the process that wrote the record,
    for its model — and stored beside the record; a process serving another model (during or
    after a reload) computes its own and stores it too."""

    def __init__(self, store: CatalogStore) -> None:
        self.store = store
        self.records: dict[str, CatalogItem] = {}
        self.generation = 0
        self._views: dict[str, CatalogView] = {}
        self._lock = asyncio.Lock()
        self._coding: set[asyncio.Task[None]] = set()

    def view(self, artifacts: ModelArtifacts) -> CatalogView:
        """The view of this model; built on the spot (without computing text vectors) when
        `prepare` has not run for it."""
        view = self._views.get(artifacts.version)
        if view is None:
            view = self._register(artifacts)
            for item in self.records.values():
                view.apply(item, item.item_vector(view.version))
            view.generation = self.generation
        return view

    async def prepare(self, artifacts: ModelArtifacts) -> CatalogView:
        """Build the view of a model about to be served, computing the text vectors it lacks
        in a worker thread (the holder runs this before it swaps the model in)."""
        async with self._lock:
            missing = [r for r in self.records.values()
                       if r.item_id not in artifacts.catalog.index
                       and r.item_vector(artifacts.version) is None]
            fresh = await asyncio.to_thread(text_vectors, artifacts, missing)
            await self._save_quietly(artifacts.version, missing, fresh)
            view = self._register(artifacts)
            for item in self.records.values():
                vector = fresh.get(item.item_id)
                view.apply(item, vector if vector is not None
                           else item.item_vector(view.version))
            view.generation = self.generation
        self._code_soon(view)
        return view

    async def poll(self) -> int:
        """Apply every change since the last poll; returns how many records changed. Store
        errors propagate (the caller retries on its next poll)."""
        changed = await self._apply_changes()
        for view in list(self._views.values()):
            self._code_soon(view)
        return changed

    async def close(self) -> None:
        """Wait for the side-index codings under way (at shutdown)."""
        await asyncio.gather(*self._coding)

    async def _apply_changes(self) -> int:
        changed = 0
        async with self._lock:
            while True:
                items, generation = await self.store.changes(self.generation, CHANGES_PAGE)
                if not items:
                    return changed
                for view in list(self._views.values()):
                    missing = [i for i in items if i.item_vector(view.version) is None
                               and i.item_id not in view.artifacts.catalog.index]
                    fresh = (await asyncio.to_thread(text_vectors, view.artifacts, missing)
                             if missing else {})
                    await self._save_quietly(view.version, missing, fresh)
                    for item in items:
                        vector = fresh.get(item.item_id)
                        view.apply(item, vector if vector is not None
                                   else item.item_vector(view.version))
                    view.generation = generation
                for item in items:
                    self.records[item.item_id] = item
                self.generation = generation
                changed += len(items)

    def _code_soon(self, view: CatalogView) -> None:
        """Code the side index's new rows in a worker thread when due (app.serving.side),
        without holding up the poll: requests search those rows exactly meanwhile."""
        job = view.side.code_job()
        if job is None:
            return

        async def code() -> None:
            coded = None
            try:
                coded = await asyncio.to_thread(job)
            except Exception:
                log.exception("side index coding failed; the next poll retries")
            finally:
                view.side.install(coded)

        task = asyncio.create_task(code())
        self._coding.add(task)
        task.add_done_callback(self._coding.discard)

    def _register(self, artifacts: ModelArtifacts) -> CatalogView:
        view = CatalogView(artifacts)
        self._views[artifacts.version] = view
        while len(self._views) > KEPT_VIEWS:  # the served model's and the one being swapped in
            del self._views[next(iter(self._views))]
        return view

    async def _save_quietly(self, version: str, items: Sequence[CatalogItem],
                            vectors: dict[str, np.ndarray]) -> None:
        """Share computed vectors with the other processes; a failure only costs them the
        computation."""
        raw = {i.item_id: encode_vector(vectors[i.item_id], version, i.text_digest())
               for i in items if i.item_id in vectors}
        try:
            await self.store.save_vectors(raw)
        except STORE_ERRORS as exc:
            log.info("text vector write failed: %s", type(exc).__name__)
