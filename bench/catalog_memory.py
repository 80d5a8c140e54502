"""Memory a live catalogue item costs each API process: `n` new products applied to the
catalogue of a model (its side index with its codes, metadata, proxy and the record copy the
poll keeps), by tracemalloc (which does not see the codes FAISS holds: the side index's `nbytes`
counts them). No Redis and no text encoding: the vectors are random of the model's dimension
(what they hold does not change their size).

    python -m bench.catalog_memory [--artifacts model_artifacts/demo] [--items 10000]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tracemalloc
from pathlib import Path

import numpy as np

from app.serving.artifacts import ModelArtifacts
from app.serving.catalog import CatalogView
from app.store.catalog import CatalogItem, encode_vector
from bench.common import ROOT


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
    job = view.side.code_job()  # the codes a process makes past EXACT_MAX_ROWS live items
    if job is not None:
        view.side.install(job())
    del job  # it holds a copy of the rows it coded
    view.unavailable  # noqa: B018 -- the derived arrays a request builds
    view.seen_live(b"\0" * 8)
    total = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(f"{args.items} live items, model {artifacts.version} (dim {dim}): "
          f"{total / args.items:.0f} bytes per item per process "
          f"({total / 2**20:.1f} MiB), of which the side index's arrays "
          f"{view.live_bytes / args.items:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
