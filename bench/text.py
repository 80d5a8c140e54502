"""What the item text encoder costs: encode latency per item (batch 1, one thread), a whole
catalogue's throughput (token-sized batches of texts sorted by length), int8 vs fp32 agreement
and speed, the service's start-up time and memory with and without the encoder, and the
artifact folder's weight.

    bench/text [--artifacts model_artifacts/demo] [--items data/lastfm/items.csv] [--no-docs]

Writes the "Item text encoder cost" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from app.offline.text import export_text_model, text_info
from app.serving.artifacts import ModelArtifacts
from app.serving.text import (
    BATCH_TOKENS,
    ItemDescription,
    TextEncoder,
    load_tokenizer,
    text_session,
)
from bench.common import ROOT, as_published, command_line, machine, publish, table

BEGIN, END = "<!-- text:begin -->", "<!-- text:end -->"
TEXT_LIBS = ("numpy", "onnxruntime", "tokenizers", "torch", "sentence-transformers")
LATENCY_TEXTS = 300

# Peak RSS from VmHWM, which starts afresh with the new program: getrusage's ru_maxrss
# survives execve, so it would report this (much larger) bench process's peak instead.
STARTUP = """
import json, re, sys, time
started = time.perf_counter()
import app.main
from app.serving.artifacts import ModelArtifacts
from app.serving.pipeline import Recommender
Recommender(ModelArtifacts.load(sys.argv[1]))
seconds = time.perf_counter() - started
with open("/proc/self/status") as fh:
    peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", fh.read()).group(1))
print(json.dumps({"seconds": seconds, "max_rss_mb": peak_kb / 1024}))
"""


def read_items(path: Path) -> list[ItemDescription]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return [ItemDescription(r.get("title") or "", r.get("category") or "",
                                tuple(t for t in (r.get("tags") or "").split(";") if t))
                for r in csv.DictReader(fh)]


def _encoder(folder: Path, quantize: bool) -> TextEncoder:
    info = text_info(None, quantize)
    return TextEncoder(info, load_tokenizer(folder / info.tokenizer_file, info.max_tokens),
                       text_session(folder / info.encoder_file, 1), {},
                       np.zeros((info.text_dim + 1, 1), dtype=np.float32))


def latency_ms(encoder: TextEncoder, texts: list[str]) -> tuple[float, float]:
    times = []
    for text in texts:
        started = time.perf_counter()
        encoder.embed([text])
        times.append((time.perf_counter() - started) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def startup(folder: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", STARTUP, str(folder)], cwd=ROOT, check=True,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT),
                                                              "OMP_NUM_THREADS": "1"})
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def without_text(folder: Path, tmp: Path) -> Path:
    """A copy of the artifact folder whose manifest has no text encoder."""
    copy = tmp / "no-text"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("data", "text_*", "tokenizer*"))
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    manifest.pop("text", None)
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "model_artifacts" / "demo")
    parser.add_argument("--items", type=Path, default=ROOT / "data" / "lastfm" / "items.csv",
                        help="an items.csv whose texts are encoded")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs/BENCHMARKS.md")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    artifacts = ModelArtifacts.load(args.artifacts)
    if artifacts.text is None:
        raise SystemExit(f"error: {args.artifacts} has no item text encoder")
    items = read_items(args.items)
    texts = [i.text() for i in items if i]
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), min(LATENCY_TEXTS, len(texts)),
                                           replace=False)]
    int8 = _encoder(args.artifacts, quantize=True)
    fp32 = _encoder(export_text_model(quantize=False), quantize=False)
    rows = [["encoder", "file MB", "batch 1 median ms", "batch 1 p90 ms",
             f"catalogue texts/s ({len(texts)} texts)", "cosine to fp32 mean / min"]]
    vectors = {}
    for name, encoder in (("int8 per-channel 7-bit (shipped)", int8), ("fp32", fp32)):
        encoder.embed(sample[:10])  # warm-up
        median, p90 = latency_ms(encoder, sample)
        started = time.perf_counter()
        vectors[name] = encoder.embed(texts)
        rate = len(texts) / (time.perf_counter() - started)
        rows.append([name, "", f"{median:.2f}", f"{p90:.2f}", f"{rate:.0f}", ""])
    cosine = (vectors["int8 per-channel 7-bit (shipped)"] * vectors["fp32"]).sum(axis=1)
    rows[1][5] = f"{cosine.mean():.4f} / {cosine.min():.4f}"
    rows[2][5] = "1 / 1"
    rows[1][1] = f"{(args.artifacts / artifacts.text.info.encoder_file).stat().st_size / 1e6:.1f}"
    rows[2][1] = f"{(export_text_model(quantize=False) / 'text_encoder.onnx').stat().st_size / 1e6:.1f}"  # noqa: E501
    with tempfile.TemporaryDirectory() as tmp:
        plain = without_text(args.artifacts, Path(tmp))
        runs = {"with": [startup(args.artifacts) for _ in range(3)],
                "without": [startup(plain) for _ in range(3)]}
    start_rows = [["artifacts", "start-up s (median of 3)", "max RSS MB (median of 3)"]]
    for name, results in runs.items():
        start_rows.append([f"{name} the text encoder",
                           f"{statistics.median(r['seconds'] for r in results):.2f}",
                           f"{statistics.median(r['max_rss_mb'] for r in results):.0f}"])
    files = sorted((p for p in args.artifacts.rglob("*") if p.is_file()),
                   key=lambda p: -p.stat().st_size)
    total = sum(p.stat().st_size for p in files)
    weight = ", ".join(f"`{p.relative_to(args.artifacts)}` {p.stat().st_size / 1e6:.1f} MB"
                       for p in files[:5])
    lines = [
        BEGIN,
        "## Item text encoder cost",
        "",
        f"Encoding the item texts of `{as_published(str(args.items))}` "
        "(\"title. category. tags\", as the trainer and the service build them) with "
        "onnxruntime and `tokenizers`, one intra-op thread; "
        f"latency over {len(sample)} texts one at a time; throughput of the whole list through "
        "`TextEncoder.embed` (texts sorted by token length, batches of at most "
        f"{BATCH_TOKENS} padded tokens).",
        "",
        table(rows),
        "",
        "Service start-up (a fresh Python process: `import app.main`, load the artifacts, build "
        f"the pipeline) with `{args.artifacts.name}` and the same folder without its text "
        "encoder:",
        "",
        table(start_rows),
        "",
        f"Artifact folder `{args.artifacts.name}`: {total / 1e6:.1f} MB in all; largest files "
        f"{weight}.",
        "",
        f"Machine: {machine(TEXT_LIBS)}; 1-minute load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (timings on a busy machine are inflated).",
        "",
        f"Command: `{command_line('text', argv)}`",
        END,
    ]
    publish("\n".join(lines) + "\n", "text", args.docs, BEGIN, END, args.no_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
