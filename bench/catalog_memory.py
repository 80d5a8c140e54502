"""Memory a live catalogue item costs each API process: `n` new products applied to the
catalogue of a model (its side index with its codes, metadata, proxy and the record copy the
poll keeps), by tracemalloc (which does not see the codes FAISS holds: the side index's `nbytes`
counts them); the fold's once-per-process cost (the model's rows' codes and vectors' copy)
apart. No Redis and no text encoding: the vectors are random of the model's dimension (what
they hold does not change their size). Also the time the side index's coding takes (a worker
thread's work in the service; for a flat or pqfs model the codes hold the model's items too,
app.serving.side), and for rows added after it.

    python -m bench.catalog_memory [--artifacts model_artifacts/demo] [--items 10000]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from app.serving.artifacts import ModelArtifacts
from app.serving.catalog import CatalogView
from app.store.catalog import CatalogItem, encode_vector
from bench.common import ROOT

APPENDED = 1000  # rows added after the first coding, coded on their own


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "model_artifacts" / "demo")
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args(argv)
    artifacts = ModelArtifacts.load(args.artifacts)
    dim = artifacts.manifest.embedding_dim
    rng = np.random.default_rng(0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    view = CatalogView(artifacts)
    records: dict[str, CatalogItem] = {}
    for n in range(args.items):
        item = CatalogItem(f"new-{n:06d}", title=f"Trailhead Product Number {n}",
                           category="outdoor", tags=("hiking", "new"))
        vector = rng.standard_normal(dim).astype(np.float32)
        records[item.item_id] = dataclasses.replace(
            item, vector=encode_vector(vector, artifacts.version, item.text_digest()))
        view.apply(item, vector)
    # the codes a process makes past EXACT_MAX_ROWS live items (in a worker thread; timed
    # here in this one), which also hold the model's items for a flat or pqfs model (folded)
    job = view.side.code_job()
    coding = None
    if job is not None:
        started = time.perf_counter()
        view.side.install(job())
        coding = time.perf_counter() - started
    del job  # it holds a copy of the rows it coded
    view.unavailable  # noqa: B018 -- the derived arrays a request builds
    view.seen_live(b"\0" * 8)
    total = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    side = view.side
    # the fold's cost is once per process, not per item: the model's rows' codes (FAISS's,
    # unseen by tracemalloc) and their vectors' copy (seen)
    fold = side.prefix_bytes
    model_codes = side.code_bytes * side.prefix_rows if side.folded else 0
    live = total - (fold - model_codes)
    print(f"{args.items} live items, model {artifacts.version} (dim {dim}): "
          f"{live / args.items:.0f} bytes per item per process "
          f"({live / 2**20:.1f} MiB), of which the side index's arrays "
          f"{(view.live_bytes - fold) / args.items:.0f}")
    if coding is not None:
        print(f"coding: {coding:.2f} s for {side.prefix_rows} model + {args.items} live rows "
              f"(folded: {side.folded}; codebooks fitted once), the model's rows' codes "
              f"{model_codes} bytes and their vectors' copy {fold - model_codes} bytes")
        more = min(args.items, APPENDED)
        for vector in rng.standard_normal((more, dim)).astype(np.float32):
            side.set(side.append(), vector)
        job = side.code_job()
        assert job is not None
        started = time.perf_counter()
        side.install(job())
        appended = time.perf_counter() - started
        print(f"coding {more} rows added later: {appended * 1e3:.0f} ms "
              f"({appended / more * 1e6:.1f} µs per row)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
