"""The model artifact folder (docs/ARTIFACTS.md): manifest, ONNX encoder, FAISS index, item map,
popularity, and — when the training data had item text — the item text encoder
(app/serving/text.py).

Vectors: the encoder's output and every item vector end in one extra coordinate. An item's is
its popularity feature (model.popularity_feature, 0 for an item nobody interacted with); the
pipeline sets the user's to the popularity weight of the user's history band, so the inner
product FAISS computes is taste · taste + weight · popularity. An all-zero item vector means
the model knows nothing about the item.

`ModelArtifacts.load(folder)` is the only place that reads the folder; it validates everything
before anything is swapped in, so a broken folder is refused with a message, never half-used.
"""

from __future__ import annotations

import contextlib
import json
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.serving.text import TextEncoder, TextEncoderInfo
from app.store.seen import TagIndex

FORMAT_VERSION = 2  # 2: the last coordinate is the popularity feature; history bands
MANIFEST = "manifest.json"
ENCODER_INPUTS = ("item_ids", "item_weights")
ENCODER_OUTPUT = "user_vector"


class ArtifactError(RuntimeError):
    """The artifact folder is missing, broken or of an unknown format."""


class BlendParams(BaseModel):
    """The friends taken into the blend: each user's `max_friends` strongest ties. The model
    owns that cap: the history bands' weights were learned over that many friends, so the
    service and the evaluator blend exactly as many."""

    max_friends: int = 100


class RerankParams(BaseModel):
    """How many retrieved candidates the rerank orders (its weights live in the history bands)."""

    candidates: int = Field(200, ge=1)


class SimilarParams(BaseModel):
    """Similar items (app/serving/similar.py): how many neighbours of the item are ordered, the
    popularity weight of the neighbour search, and how much a user's own /recommend score
    weighs against the similarity when the list is personalised. Chosen on validation."""

    candidates: int = Field(200, ge=1)
    popularity_weight: float = 0.0
    user_weight: float = 0.0


class HistoryBand(BaseModel):
    """Serving weights for users with at least `min_items` known items (up to the next band's
    `min_items`): how much to trust a taste folded in from that many items against the
    friends and the popularity prior. All learned or chosen on validation users truncated to
    this band's lengths.

    retrieval score = (u + friend_weight · Σ tie_f u_f / Σ tie_f) · y_i + p · popularity_i
        with p = popularity_weight, or popularity_weight_alone for a user without friends
    final score = retrieval score + m · cos/(1+dist) on the taste coordinates
                  + social_weight · log1p(Σ ties of the friends who engaged with i)
        with m = match_weight, or match_weight_alone for a user without friends

    The `_alone` weights are chosen on the band's users with the social stages off: weights
    chosen with friends' taste in the list are wrong for a list made from the user alone."""

    min_items: int = Field(0, ge=0)
    friend_weight: float = 0.0
    popularity_weight: float = 0.0
    popularity_weight_alone: float = 0.0
    match_weight: float = 0.0
    match_weight_alone: float = 0.0
    social_weight: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _alone_match(cls, data: object) -> object:
        """A manifest from before `match_weight_alone` served everyone with `match_weight`."""
        if isinstance(data, dict) and "match_weight_alone" not in data:
            return {**data, "match_weight_alone": data.get("match_weight", 0.0)}
        return data

    def alone(self) -> HistoryBand:
        """The weights for a user without friends (or with the social stages off)."""
        return self.model_copy(update={
            "friend_weight": 0.0, "popularity_weight": self.popularity_weight_alone,
            "match_weight": self.match_weight_alone, "social_weight": 0.0})


def band_for(bands: list[HistoryBand], known_items: int) -> HistoryBand:
    """The band of a user who has `known_items` items in their (capped) history."""
    return bands[bisect_right([b.min_items for b in bands], known_items) - 1]


class IndexInfo(BaseModel):
    file: str = "items.faiss"
    kind: str = "flat"
    params: dict[str, float | int | str] = Field(default_factory=dict)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    format_version: int
    model_version: str
    created_at: str
    embedding_dim: int = Field(ge=1)
    item_count: int = Field(ge=1)
    max_history: int = Field(ge=1)
    training_data_fingerprint: str
    encoder_file: str = "encoder.onnx"
    items_file: str = "items.json"
    popularity_file: str = "popularity.npy"
    index: IndexInfo = Field(default_factory=IndexInfo)
    blend: BlendParams = Field(default_factory=BlendParams)
    rerank: RerankParams = Field(default_factory=RerankParams)
    similar: SimilarParams = Field(default_factory=SimilarParams)
    bands: list[HistoryBand] = Field(default_factory=lambda: [HistoryBand()], min_length=1)
    event_weights: dict[str, float] = Field(default_factory=dict)
    model: dict[str, float | int | str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    text: TextEncoderInfo | None = None  # absent when the training data had no item text

    @field_validator("bands")
    @classmethod
    def _bands_cover_every_length(cls, bands: list[HistoryBand]) -> list[HistoryBand]:
        starts = [b.min_items for b in bands]
        if starts[0] != 0 or starts != sorted(set(starts)):
            raise ValueError(f"band min_items {starts} must start at 0 and increase")
        return bands

    def band(self, known_items: int) -> HistoryBand:
        return band_for(self.bands, known_items)


@dataclass(frozen=True)
class ItemCatalog:
    """Item ids in index order, their metadata, where each vector comes from, and per-category
    index masks."""

    ids: list[str]
    index: dict[str, int]
    titles: list[str]
    categories: list[str]
    # "model" (learned from interactions), "text" (projected from the item's text) or "none"
    vector_sources: list[str]

    @classmethod
    def from_records(cls, records: list[dict[str, str]]) -> ItemCatalog:
        ids = [r["item_id"] for r in records]
        return cls(ids=ids, index={i: n for n, i in enumerate(ids)},
                   titles=[r.get("title", "") for r in records],
                   categories=[r.get("category", "") for r in records],
                   vector_sources=[r.get("vector_source", "model") for r in records])

    @cached_property
    def tags(self) -> TagIndex:
        """The items' compact ids in the store's seen sets, to read those sets."""
        return TagIndex(self.ids)

    @cached_property
    def by_category(self) -> dict[str, np.ndarray]:
        """category → its item indices (ascending), built once on first use."""
        groups: dict[str, list[int]] = {}
        for n, c in enumerate(self.categories):
            groups.setdefault(c, []).append(n)
        return {c: np.asarray(v, dtype=np.int64) for c, v in groups.items()}

    def indices_in(self, categories: frozenset[str]) -> np.ndarray:
        """Indices (ascending) of the items in any of `categories`, without a pass over the
        catalogue."""
        parts = [self.by_category[c] for c in categories if c in self.by_category]
        if len(parts) == 1:
            return parts[0]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class ModelArtifacts:
    folder: Path
    manifest: Manifest
    session: ort.InferenceSession
    index: faiss.Index
    item_vectors: np.ndarray
    catalog: ItemCatalog
    popularity: np.ndarray
    text: TextEncoder | None = None  # turns an item's text into an item vector

    @property
    def version(self) -> str:
        return self.manifest.model_version

    @classmethod
    def load(cls, folder: Path | str, onnx_threads: int = 1) -> ModelArtifacts:
        folder = Path(folder)
        if folder.is_symlink():
            # A pointer such as `socialrec retrain`'s ROOT/current is followed once: every
            # file then comes from one version even if the pointer moves during the load.
            folder = folder.resolve()
        manifest = read_manifest(folder)
        try:
            session = _onnx_session(folder / manifest.encoder_file, onnx_threads)
        except Exception as exc:  # onnxruntime raises its own types for each kind of bad file
            raise ArtifactError(f"{folder}: cannot load the ONNX encoder: {exc}") from exc
        try:
            index = faiss.read_index(str(folder / manifest.index.file))
            records = json.loads((folder / manifest.items_file).read_text(encoding="utf-8"))
            popularity = np.load(folder / manifest.popularity_file, allow_pickle=False)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ArtifactError(f"{folder}: cannot read artifact: {exc}") from exc
        text = None
        if manifest.text is not None:
            try:
                text = TextEncoder.load(folder, manifest.text, onnx_threads)
            except Exception as exc:  # onnxruntime, tokenizers and numpy each raise their own
                raise ArtifactError(f"{folder}: cannot load the item text encoder: {exc}") from exc
        _check_consistent(manifest, session, index, records, popularity, text)
        if "efSearch" in manifest.index.params and hasattr(index, "hnsw"):
            index.hnsw.efSearch = int(manifest.index.params["efSearch"])
        if "nprobe" in manifest.index.params:
            with contextlib.suppress(RuntimeError):  # RuntimeError: no IVF part in this index
                faiss.extract_index_ivf(index).nprobe = int(manifest.index.params["nprobe"])
        if "k_factor" in manifest.index.params and hasattr(index, "k_factor"):
            index.k_factor = float(manifest.index.params["k_factor"])
        vectors = stored_vectors(index)
        catalog = ItemCatalog.from_records(records)
        catalog.tags  # noqa: B018 -- built here, during loading, not on the first request
        return cls(folder=folder, manifest=manifest, session=session, index=index,
                   item_vectors=vectors, catalog=catalog, popularity=popularity.astype(np.float32),
                   text=text)


class _IndexMemory:
    """The raw vectors inside a FAISS index as an array interface that keeps the index alive
    for as long as any array made from it exists."""

    def __init__(self, index: faiss.Index, address: int, shape: tuple[int, int]) -> None:
        self.index = index
        self.__array_interface__ = {"shape": shape, "typestr": "<f4",
                                    "data": (address, True), "version": 3}


def stored_vectors(index: faiss.Index) -> np.ndarray:
    """The item vectors, (ntotal, d) float32: a read-only view of the index's own storage when
    it keeps the raw vectors (flat, HNSW-flat, PQ codes with flat re-scoring) — one copy in
    memory instead of two, and the rows the rerank gathers are the ones the search just read —
    else a reconstructed copy. The view holds a reference to the index (which must not be
    modified)."""
    storage = index
    for inner in ("storage", "refine_index"):  # HNSW-flat; IndexRefineFlat
        if hasattr(index, inner):
            storage = faiss.downcast_index(getattr(index, inner))
    if isinstance(storage, faiss.IndexFlat) and storage.ntotal == index.ntotal and index.ntotal:
        raw = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * storage.d)
        address = raw.__array_interface__["data"][0]
        return np.asarray(_IndexMemory(index, address, (storage.ntotal, storage.d)))
    return index.reconstruct_n(0, index.ntotal).astype(np.float32)


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read manifest: {exc}") from exc
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format_version {version!r} is not supported "
                            f"(this service reads format {FORMAT_VERSION})")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"{path}: invalid manifest: {exc}") from exc


def _onnx_session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Loading by path lets onnxruntime find an external-data file (encoder.onnx.data) beside it.
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _check_consistent(manifest: Manifest, session: ort.InferenceSession, index: faiss.Index,
                      records: list[dict[str, str]], popularity: np.ndarray,
                      text: TextEncoder | None) -> None:
    n, d = manifest.item_count, manifest.embedding_dim
    problems = []
    names = tuple(i.name for i in session.get_inputs())
    if names != ENCODER_INPUTS:
        problems.append(f"encoder inputs {names} != {ENCODER_INPUTS}")
    outputs = tuple(o.name for o in session.get_outputs())
    if ENCODER_OUTPUT not in outputs:
        problems.append(f"encoder outputs {outputs} lack {ENCODER_OUTPUT!r}")
    if index.ntotal != n or index.d != d:
        problems.append(f"index holds {index.ntotal}×{index.d}, manifest says {n}×{d}")
    if len(records) != n:
        problems.append(f"item map has {len(records)} items, manifest says {n}")
    if popularity.shape != (n,):
        problems.append(f"popularity has shape {popularity.shape}, expected ({n},)")
    if text is not None:
        problems += text.check(d)
    if problems:
        raise ArtifactError("inconsistent artifact: " + "; ".join(problems))
