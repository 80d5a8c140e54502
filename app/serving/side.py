"""The side index: vectors of the live items the model does not know (app.serving.catalog),
searched by inner product beside the model's FAISS index.

Rows are the live slots, in one contiguous float32 matrix that grows by doubling. While it
holds fewer than EXACT_MAX_ROWS rows a search is one matrix-vector product over them (about
0.05 ms per 1,000 rows of dimension 129 on one core). Beyond that the scan would cost a
/recommend request a tenth of its time per 2,000 rows (bench/catalog_scale), so the rows also
get 4-bit PQ fast-scan codes — one sub-quantizer per dimension, as the model's own `pqfs`
index (app.offline.export) — which propose K_FACTOR·n candidates that the matrix re-scores:
the returned scores are exact inner products, only the candidate choice is approximate.

Codes are made in a worker thread (`code_job`, installed by `install` on the event loop), so a
bulk write never stalls requests. A row written after its code was made (new, or its text and
so its vector changed) is scored exactly on every search until the next coding, so the index
never misses a fresh vector.

Folding: given the model's item vectors as a `prefix`, the codes hold those rows first and the
live rows after them, so that once coded one search (`search_all`) proposes the model's items
and the live ones together instead of one FAISS search and one side search merged: with 10,000
live items beside the 1,200-item demo model that halves the retrieval's cost of a computed
list (bench/catalog_scale). The model's rows never change for the prefix's lifetime (a reload
builds a new side index), so only the live rows go stale and are handled as above. Once folded,
the vector matrix holds a copy of the prefix in front of the live rows, in the codes' row
order: the candidates are re-scored with one gather and one product, and the pipeline reads
model and live items' vectors with one gather (`all_rows`), instead of two of each and their
concatenations. The model's rows cost their codes and that copy: 65 + 516 bytes each at the
demo model's dimension (0.7 MB for its 1,200 items), made only once 2,048 live items fold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

EXACT_MAX_ROWS = 2048
K_FACTOR = 2  # recall@200 ≥ 0.99 against exact search for pqfs at 2 (app.offline.export)
TRAIN_ROWS = 4096  # rows the codebooks are fitted on (a seeded sample)
RECODE_SHARE = 0.125  # code every row again once this share of the coded rows went stale
NO_ROWS = np.zeros(0, dtype=np.int64)
NO_SCORES = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Coded:
    """A coding made in a worker thread: `index` holds codes of rows 0..end−1, those from
    `start` on made from the rows as they were at write number `stamp`."""

    index: faiss.Index
    start: int
    end: int
    stamp: int


class SideIndex:
    """Mutated and searched on the event loop only; `code_job` hands a worker thread copies."""

    def __init__(self, dim: int, prefix: np.ndarray | None = None) -> None:
        self.dim = dim
        # the model's item vectors, rows 0..P−1 of the codes (read-only, never copied)
        self._prefix = np.zeros((0, dim), dtype=np.float32) if prefix is None else prefix
        self.prefix_rows = len(self._prefix)
        # An all-zero model vector is an item the model knows nothing about (the pipeline never
        # shows it over informed ones): not proposed, as a live row without a vector.
        self._prefix_informed = np.any(self._prefix != 0, axis=1)
        self.count = 0
        # live row r is matrix row _front + r (capacity ≥ count); once folded the prefix's copy
        # fills rows 0.._front−1, so that code row i is matrix row i
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._front = 0
        self._informed = np.zeros(0, dtype=bool)  # the row holds a vector
        self._written = np.zeros(0, dtype=np.int64)  # write number of the row's vector
        self._code_stamp = np.zeros(0, dtype=np.int64)  # write number its code was made at
        self._writes = 0
        self._codes: faiss.Index | None = None
        self._coded = 0  # rows 0.._coded−1 have a code in _codes
        self._coding = False  # a code job is out
        self._fresh: np.ndarray | None = None  # rows scored exactly beside the codes
        self._trusted: np.ndarray | None = None  # per coded row: its code is current

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        """The arrays (with their growth slack) and the codes, the prefix's codes and copy
        included once folded."""
        codes = self.code_bytes * (self.prefix_rows + self._coded)
        return (self._matrix.nbytes + self._informed.nbytes + self._written.nbytes + codes)

    @property
    def prefix_bytes(self) -> int:
        """What the folded prefix costs, once: its rows' codes and their vectors' copy (both
        counted in `nbytes`; 0 until it folds)."""
        return self._front * (self.code_bytes + self._matrix.itemsize * self.dim)

    @property
    def code_bytes(self) -> int:
        """Bytes of one row's code (0 before the first coding)."""
        return self._codes.sa_code_size() if self._codes is not None else 0

    @property
    def folded(self) -> bool:
        """`search_all` answers: the codes hold the prefix and the live rows."""
        return self._codes is not None and self.prefix_rows > 0

    def informed(self, row: int) -> bool:
        return bool(self._informed[row])

    def append(self) -> int:
        """A new row without a vector; returns its number."""
        row = self.count
        if self._front + row == len(self._matrix):
            size = max(64, 2 * row)
            self._matrix = _grown(self._matrix, self._front + size)
            self._informed = _grown(self._informed, size)
            self._written = _grown(self._written, size)
            self._code_stamp = _grown(self._code_stamp, size)
        self.count += 1
        self._changed()
        return row

    @property
    def _vectors(self) -> np.ndarray:
        """The live rows (a view: row r is live row r)."""
        return self._matrix[self._front:]

    def set(self, row: int, vector: np.ndarray) -> None:
        self._matrix[self._front + row] = vector
        self._informed[row] = True
        self._writes += 1
        self._written[row] = self._writes
        self._changed()

    def rows(self, rows: np.ndarray) -> np.ndarray:
        return self._vectors[rows]

    def all_rows(self, rows: np.ndarray) -> np.ndarray:
        """Folded only: the vectors of the prefix's rows 0..P−1 and the live rows P+slot."""
        assert self._front == self.prefix_rows
        return self._matrix.take(rows, axis=0)

    def search(self, query: np.ndarray, n: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-`n` (scores, rows) of the rows with a vector by inner product with `query`;
        `allowed` (row numbers) restricts them (searched exactly)."""
        if n <= 0 or not self.count:
            return NO_SCORES, NO_ROWS
        q = np.ascontiguousarray(query, dtype=np.float32)
        if allowed is not None:
            rows = allowed[self._informed[allowed]]
            return _top(self._vectors[rows] @ q, rows, n)
        if self._codes is None or self.prefix_rows:  # folded codes serve search_all only
            scores = self._vectors[: self.count] @ q
            if self._informed[: self.count].all():
                return _top(scores, None, n)
            rows = np.flatnonzero(self._informed[: self.count])
            return _top(scores[rows], rows, n)
        _, found = self._codes.search(q[None, :], min(K_FACTOR * n, self._coded))
        rows = found[0]
        trusted, fresh = self._split()
        if trusted is not None:
            rows = rows[trusted[rows]]
        if len(fresh):
            rows = np.concatenate([rows, fresh])
        return _top(self._vectors[rows] @ q, rows, n)

    def search_all(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Folded only: top-`n` (scores, rows) of the prefix's rows 0..P−1 and the live rows
        P+slot together, by exact inner product, best first; the codes choose the candidates
        (K_FACTOR·n), rows written since their coding are scored exactly beside them."""
        assert self._codes is not None and self._front == self.prefix_rows > 0
        q = np.ascontiguousarray(query, dtype=np.float32)
        p = self.prefix_rows
        _, found = self._codes.search(q[None, :], max(1, min(K_FACTOR * n, p + self._coded)))
        rows = found[0]
        trusted, fresh = self._split()
        if trusted is not None:
            rows = rows[trusted[rows]]
        elif rows[-1] < 0:  # FAISS fills a short answer's tail with −1
            rows = rows[rows >= 0]
        if len(fresh):
            rows = np.concatenate([rows, fresh + p])
        scores = self._matrix[rows] @ q  # code row i is matrix row i
        if len(rows) > n:
            top = np.argpartition(-scores, n - 1)[:n]
            rows, scores = rows[top], scores[top]
        order = np.argsort(-scores, kind="stable")
        return scores[order], rows[order]

    # ---- coding ------------------------------------------------------------------------
    def code_job(self) -> Callable[[], Coded] | None:
        """Work for a worker thread when the codes are due (none yet past EXACT_MAX_ROWS, new
        rows, or too many stale ones), else None. The job reads copies taken now."""
        if self._coding or self.count < EXACT_MAX_ROWS:
            return None
        stale = int(np.count_nonzero(
            self._written[: self._coded] > self._code_stamp[: self._coded]))
        recode = self._codes is None or stale > RECODE_SHARE * self._coded
        if not recode and self._coded == self.count:
            return None
        start = 0 if recode else self._coded
        rows = self._vectors[start: self.count].copy()
        template = self._codes
        sample = None
        prefix = self._prefix if start == 0 else self._prefix[:0]
        if template is None:
            informed = np.concatenate([np.flatnonzero(self._prefix_informed),
                                       self.prefix_rows + np.flatnonzero(
                                           self._informed[: self.count])])
            pick = np.random.default_rng(0).choice(
                len(informed), min(TRAIN_ROWS, len(informed)), replace=False)
            picked = np.sort(informed[pick])
            sample = np.concatenate([
                self._prefix[picked[picked < self.prefix_rows]],
                self._vectors[picked[picked >= self.prefix_rows] - self.prefix_rows]])
        count, stamp, dim = self.count, self._writes, self.dim
        self._coding = True

        def job() -> Coded:
            if template is None:
                index = faiss.IndexPQFastScan(dim, dim, 4, faiss.METRIC_INNER_PRODUCT)
                index.train(sample)
            else:
                index = faiss.clone_index(template)
                if start == 0:
                    index.reset()
            if len(prefix):  # the model's rows first: code row r is model item r
                index.add(np.ascontiguousarray(prefix, dtype=np.float32))
            index.add(rows)
            return Coded(index, start, count, stamp)

        return job

    def install(self, coded: Coded | None) -> None:
        """Take a finished job's codes (None: the job failed; a later one retries); the first
        codes of a prefix put its copy in front of the live rows (see the module's text)."""
        self._coding = False
        if coded is None:
            return
        if self._front < self.prefix_rows:
            matrix = np.zeros((self.prefix_rows + len(self._vectors), self.dim),
                              dtype=np.float32)
            matrix[: self.prefix_rows] = self._prefix
            matrix[self.prefix_rows:] = self._vectors
            self._matrix, self._front = matrix, self.prefix_rows
        self._codes, self._coded = coded.index, coded.end
        self._code_stamp[coded.start: coded.end] = coded.stamp
        self._changed()

    def _split(self) -> tuple[np.ndarray | None, np.ndarray]:
        """Per code row (the prefix's, then the coded live rows): its code is current and it
        has a vector (None: all are); and the live rows with a vector to score exactly: written
        after their code was made, or not coded. A search proposes −1 past the last code:
        index −1 reads a False appended here."""
        if self._fresh is None:
            coded = self._informed[: self._coded] & \
                (self._written[: self._coded] <= self._code_stamp[: self._coded])
            uncoded = self._informed[: self.count].copy()
            uncoded[: self._coded] &= ~coded
            self._fresh = np.flatnonzero(uncoded)
            if self.prefix_rows:
                coded = np.concatenate([self._prefix_informed, coded])
            self._trusted = None if coded.all() else np.append(coded, False)
        return self._trusted, self._fresh

    def _changed(self) -> None:
        self._trusted = self._fresh = None


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    grown = np.zeros((size, *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def _top(scores: np.ndarray, rows: np.ndarray | None,
         n: int) -> tuple[np.ndarray, np.ndarray]:
    """The `n` best (scores, rows); `rows` None: the scores are of rows 0, 1, …"""
    if len(scores) > n:
        top = np.argpartition(-scores, n - 1)[:n]
        scores = scores[top]
        rows = top if rows is None else rows[top]
    elif rows is None:
        rows = np.arange(len(scores))
    return scores.astype(np.float32, copy=False), rows.astype(np.int64, copy=False)
