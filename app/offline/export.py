"""Write an artifact folder (docs/ARTIFACTS.md) atomically: build in a sibling temp folder,
then rename.

The ONNX encoder is written by a callback (the trainer owns PyTorch); everything else — FAISS
index, item map, popularity, manifest — is written here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import faiss
import numpy as np

from app.offline.dataset import Dataset, item_counts
from app.serving.artifacts import (
    FORMAT_VERSION,
    MANIFEST,
    BlendParams,
    HistoryBand,
    IndexInfo,
    Manifest,
    RerankParams,
    SimilarParams,
)
from app.serving.text import TextEncoderInfo

# Index choice, measured by bench/scale and bench/load (docs/BENCHMARKS.md) on item vectors of
# the real model's shape (ALS factors + a bias dimension, inner product). A single-query flat
# scan reads every vector (4·d bytes per item) and is bound by memory bandwidth: ~0.42 ms at
# 17.6k items, a fifth of a whole /recommend request on the benchmark machine. So:
# - exact search up to FLAT_MAX_ITEMS, where the scan is cheap;
# - up to PQFS_MAX_ITEMS, 4-bit PQ fast-scan codes (one sub-quantizer per dimension, d/2 bytes
#   per item, SIMD lookup tables) pick k_factor·k candidates that an exact re-scoring over the
#   raw vectors (IndexRefine over an IndexFlatIP) orders: the returned scores are exact inner
#   products. k_factor is the smallest on a grid whose recall@200 against exact search reaches
#   PQFS_TARGET_RECALL for the trainer's user vectors. Fast-scan quantises its per-dimension
#   lookup tables on one shared 8-bit scale, which the widest table sets: for users whose band
#   weighs the popularity coordinate strongly (−0.4 for lastfm's heavy users) that one table
#   left the taste tables a few levels each, and lastfm needed k_factor 6–8. So the codes may
#   hold that coordinate scaled down (PQFS_POPULARITY_SCALES; the re-scoring keeps the raw
#   vectors): candidates lean less on popularity but are told apart by taste (lastfm: k_factor
#   3 with 0.5; computed lists 25 % faster in bench/load, docs/BENCHMARKS.md);
# - above it the same codes inside IVF lists (nlist ≈ 4·√n), re-scored exactly from
#   IVF_K_FACTOR·k candidates, with the smallest nprobe whose recall@200 reaches
#   IVF_TARGET_RECALL, calibrated the same way (at 1M items: 0.83 ms per query instead of
#   IVF-Flat's 1.6 ms at the same nprobe; the nprobe needed varies from nlist/4 at 20k items to
#   nlist/32 at 200k; items as queries are a poor stand-in: they ask for 8-16 × more lists
#   than users do);
# - HNSW (inner product) is kept as an option but not the default: on these vectors, whose
#   norms vary 100-fold, its recall@200 stalls below 0.95 however large efSearch is.
FLAT_MAX_ITEMS = 5_000
PQFS_MAX_ITEMS = 50_000
PQFS_TARGET_RECALL = 0.99
PQFS_K_FACTORS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0)
PQFS_POPULARITY_SCALES = (1.0, 0.5)  # of the last coordinate in the codes; ties: the first
IVF_TARGET_RECALL = 0.96
IVF_K_FACTOR = 8.0
CALIBRATION_QUERIES = 256
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 256
INDEX_KINDS = ("flat", "pqfs", "ivf", "hnsw")
T = TypeVar("T")


@contextlib.contextmanager
def one_openmp_thread() -> Iterator[None]:
    """FAISS on one OpenMP thread, as the service runs it: its small parallel regions (a
    single query, PQ training) spend their time waiting for the other threads when the cores
    are busy: 14 ms instead of 0.35 ms per lastfm query, 61 s instead of 1.4 s to train the
    lastfm PQ codes, on 2 cores beside other work. The results are the same. Under PyTorch
    FAISS's OpenMP calls reach PyTorch's runtime, so every runtime is limited (threadpoolctl,
    with the train extra); without PyTorch FAISS's own call does it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)
        return
    with threadpool_limits(1, "openmp"):
        yield


def ivf_nlist(n: int) -> int:
    """Lists of an IVF index over n vectors: the power of two nearest 4·√n (at least 64)."""
    return max(64, 1 << round(math.log2(4 * math.sqrt(n))))


def default_kind(n: int, flat_max_items: int = FLAT_MAX_ITEMS,
                 pqfs_max_items: int = PQFS_MAX_ITEMS) -> str:
    if n <= flat_max_items:
        return "flat"
    return "pqfs" if n <= pqfs_max_items else "ivf"


def build_index(vectors: np.ndarray, flat_max_items: int = FLAT_MAX_ITEMS,
                kind: str | None = None,
                queries: np.ndarray | None = None) -> tuple[faiss.Index, IndexInfo]:
    """The index `default_kind` picks for the catalogue's size, or `kind` (one of INDEX_KINDS).
    `queries` (typical user vectors) calibrate the approximate kinds' search parameter; without
    them a sample of the items stands in (a higher, safe setting)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    kind = kind or default_kind(n, flat_max_items)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
        info = IndexInfo(kind="flat")
    elif kind == "pqfs":
        return _pq_fast_scan(vectors, queries)
    elif kind == "ivf":
        return _ivf(vectors, queries)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        info = IndexInfo(kind="hnsw", params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION,
                                              "efSearch": HNSW_EF_SEARCH})
    else:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {INDEX_KINDS}")
    index.add(vectors)
    return index, info


def _pq_fast_scan(vectors: np.ndarray,
                  queries: np.ndarray | None) -> tuple[faiss.Index, IndexInfo]:
    """Per scale of the popularity coordinate in the codes, the smallest k_factor reaching the
    target; the scale that needs the smallest (the cheapest search) is kept."""
    d = vectors.shape[1]
    best: tuple[float, float, faiss.Index] | None = None
    for scale in PQFS_POPULARITY_SCALES:
        coded = vectors.copy()
        coded[:, -1] *= scale
        index = _with_rescoring(vectors, f"PQ{d}x4fs", coded, coded)

        def use(k_factor: float, index: faiss.Index = index) -> None:
            index.k_factor = k_factor

        k_factor = calibrate(index, vectors, PQFS_K_FACTORS, use, target=PQFS_TARGET_RECALL,
                             queries=queries)
        if best is None or k_factor < best[0]:
            best = (k_factor, scale, index)
    assert best is not None
    k_factor, scale, index = best
    index.k_factor = k_factor
    return index, IndexInfo(kind="pqfs", params={"M": d, "nbits": 4, "k_factor": k_factor,
                                                 "popularity_scale": scale})


def _ivf(vectors: np.ndarray, queries: np.ndarray | None) -> tuple[faiss.Index, IndexInfo]:
    n, d = vectors.shape
    nlist = min(ivf_nlist(n), max(1, n // 39))  # k-means wants ≥ 39 points per list
    sample = np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)
    index = _with_rescoring(vectors, f"IVF{nlist},PQ{d}x4fs", vectors[np.sort(sample)])
    index.k_factor = IVF_K_FACTOR
    nprobe = calibrate_nprobe(index, vectors, queries=queries)
    return index, IndexInfo(kind="ivf", params={"nlist": nlist, "nprobe": nprobe, "M": d,
                                                "nbits": 4, "k_factor": IVF_K_FACTOR})


def _with_rescoring(vectors: np.ndarray, codes: str, sample: np.ndarray,
                    coded: np.ndarray | None = None) -> faiss.Index:
    """4-bit PQ fast-scan `codes` (a FAISS factory string, trained on `sample`) of `coded`
    (default: the vectors themselves) that propose candidates, and the raw vectors that
    re-score them exactly (IndexRefine over an IndexFlatIP, where the service reads the item
    vectors from)."""
    base = faiss.index_factory(vectors.shape[1], codes, faiss.METRIC_INNER_PRODUCT)
    base.train(sample)
    base.add(vectors if coded is None else coded)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    return faiss.IndexRefine(base, exact)  # FAISS' wrapper keeps both parts referenced


def calibrate_nprobe(index: faiss.Index, vectors: np.ndarray, k: int = 200,
                     target: float = IVF_TARGET_RECALL,
                     queries: np.ndarray | None = None) -> int:
    """The smallest nprobe on a √2-step grid reaching `target` recall@k (see `calibrate`), set
    on the index's IVF part."""
    lists = faiss.extract_index_ivf(index)
    grid = sorted({min(lists.nlist, round(2 ** (i / 2))) for i in range(64)})

    def use(nprobe: int) -> None:
        lists.nprobe = nprobe

    nprobe = calibrate(index, vectors, grid, use, k=k, target=target, queries=queries)
    use(nprobe)
    return nprobe


def calibrate(index: faiss.Index, vectors: np.ndarray, grid: Sequence[T],
              use: Callable[[T], None], k: int = 200, target: float = IVF_TARGET_RECALL,
              queries: np.ndarray | None = None) -> T:
    """The first setting of `grid` (ascending cost) whose recall@k against exact search
    reaches `target` for (a sample of) `queries`, else for a sample of the indexed vectors;
    the last one when none does."""
    rng = np.random.default_rng(1)
    pool = vectors if queries is None or not len(queries) else queries
    pick = rng.choice(len(pool), min(CALIBRATION_QUERIES, len(pool)), replace=False)
    xq = np.ascontiguousarray(pool[np.sort(pick)], dtype=np.float32)
    k = min(k, len(vectors))
    _, truth = faiss.knn(xq, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    for value in grid:
        use(value)
        _, found = index.search(xq, k)
        hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
        if hits >= target * truth.size:
            return value
    return grid[-1]  # set by the last `use`


def fingerprint(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def item_records(data: Dataset, vector_sources: Sequence[str] | None = None) -> list[
        dict[str, str]]:
    records = []
    for idx, item_id in enumerate(data.items.ids):
        meta = data.item_meta.get(idx)
        record = {"item_id": item_id}
        if meta is not None:
            record |= {"title": meta.title, "category": meta.category, "tags": ";".join(meta.tags)}
        if vector_sources is not None:
            record["vector_source"] = vector_sources[idx]
        records.append(record)
    return records


def export_artifacts(out_dir: Path, *, data: Dataset, item_vectors: np.ndarray,
                     write_encoder: Callable[[Path], str], max_history: int,
                     blend: BlendParams, rerank: RerankParams, bands: list[HistoryBand],
                     event_weights: dict[str, float],
                     data_fingerprint: str, model_info: dict[str, float | int | str],
                     metrics: dict[str, float], flat_max_items: int = FLAT_MAX_ITEMS,
                     queries: np.ndarray | None = None,
                     write_text: Callable[[Path], TextEncoderInfo] | None = None,
                     vector_sources: Sequence[str] | None = None,
                     similar: SimilarParams | None = None) -> Manifest:
    """`write_encoder(folder)` writes the ONNX file(s) and returns the file name to load;
    `queries` (user vectors) tune an approximate index (see build_index); `write_text(folder)`
    writes the item text encoder's files and returns their manifest section;
    `vector_sources` says, per item, where its vector came from ("model", "text", "none");
    `similar`: the similar-items parameters (defaults without)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    encoder_file = write_encoder(tmp)
    text = write_text(tmp) if write_text is not None else None
    with one_openmp_thread():
        index, info = build_index(item_vectors, flat_max_items, queries=queries)
    faiss.write_index(index, str(tmp / info.file))
    (tmp / "items.json").write_text(
        json.dumps(item_records(data, vector_sources), ensure_ascii=False), encoding="utf-8")
    np.save(tmp / "popularity.npy", item_counts(data.histories, data.n_items),
            allow_pickle=False)
    similar = similar or SimilarParams()
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model_version=_model_version(tmp, blend.model_dump_json() + rerank.model_dump_json()
                                     + "".join(b.model_dump_json() for b in bands)
                                     + similar.model_dump_json()),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        embedding_dim=int(item_vectors.shape[1]), item_count=int(item_vectors.shape[0]),
        max_history=max_history, training_data_fingerprint=data_fingerprint,
        encoder_file=encoder_file, index=info, blend=blend, rerank=rerank, similar=similar,
        bands=bands,
        event_weights=event_weights, model=model_info, metrics=metrics, text=text,
    )
    (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def _model_version(folder: Path, params: str) -> str:
    """Content hash of the model files and serving parameters: the same model always gets the
    same version, and any change gets a new one."""
    digest = hashlib.sha256(params.encode())
    for path in sorted(folder.iterdir()):
        digest.update(path.read_bytes())
    return "m-" + digest.hexdigest()[:12]
