"""Training time and peak memory at shop scale: `socialrec synth` shops of three sizes (users
and items in proportion, the same activity per user, so events grow with the users), each
trained by `socialrec train` in a process of its own; per stage the wall seconds and the
stage's peak resident memory, and the seconds per million events across the sizes.

    python -m bench.train_scale [--users 50000,100000,200000] [--items-per-user 0.5]
                                [--activity 6.5] [--data-root bench/out/train-scale] [--resume]
                                [--no-docs]

The shops are written once per (users, items, activity, seed) under --data-root and reused;
each training's figures are kept beside its shop, and --resume reuses them instead of training
again (a run stopped after the first sizes goes on with the next).
Prints one markdown section and writes it into docs/BENCHMARKS.md (between the train_scale
markers) unless --no-docs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import OUT, ROOT, command_line, log, machine, publish, table

BEGIN, END = "<!-- train_scale:begin -->", "<!-- train_scale:end -->"
STAGES = ("load", "prepare", "als", "bands", "text", "match", "refit", "export")
TRAIN_LIBS = ("numpy", "scipy", "torch", "implicit", "onnxruntime", "faiss-cpu")
TARGET_MINUTES, TARGET_GB = 15.0, 8.0  # for the largest shop (about 5 M events)


def load_average() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def shop(root: Path, users: int, items: int, activity: float, seed: int) -> Path:
    """The synthetic shop's folder, written when missing (a marker says it is complete)."""
    folder = root / f"shop-u{users}-i{items}-a{activity:g}-s{seed}"
    if not (folder / "done").is_file():
        log(f"synth {folder.name}")
        from app.offline.synth import write_synthetic_dataset

        write_synthetic_dataset(folder, n_users=users, n_items=items, seed=seed,
                                activity=activity)
        (folder / "done").write_text("", encoding="utf-8")
    return folder


def events_in(folder: Path) -> int:
    with (folder / "interactions.csv").open("rb") as fh:
        return sum(1 for _ in fh) - 1


def train_one(data: Path, out: Path, report: Path) -> None:
    """In the child process: train as `socialrec train` does, and write each stage's seconds
    and peak memory."""
    from app.offline.stages import StageClock, passive_openmp, peak_rss_mb

    passive_openmp()
    from app.offline.train import train

    clock = StageClock()
    started = time.perf_counter()
    manifest = train(data, out, progress=sys.stderr.isatty(), clock=clock)
    report.write_text(json.dumps({
        "seconds": time.perf_counter() - started, "stage_seconds": clock.seconds,
        "stage_peak_mb": clock.peak_mb, "process_peak_mb": peak_rss_mb(),
        "iterations": manifest.model.get("iterations"),
        "iterations_run": manifest.metrics.get("als_iterations_run"),
        "val_ndcg@20": manifest.metrics.get("val_ndcg@20")}), encoding="utf-8")


def measure(data: Path) -> dict[str, Any]:
    """Train `data` in a fresh process (its peak memory is its own) and read its report."""
    with tempfile.TemporaryDirectory(prefix="socialrec-train-scale-") as tmp:
        report = Path(tmp) / "report.json"
        before = load_average()
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench.train_scale", "--train-one", str(data),
                        str(Path(tmp) / "model"), str(report)], check=True, cwd=ROOT)
        result: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
        result["wall"] = time.perf_counter() - started
        result["load"] = f"{before} → {load_average()}"
    return result


def _count(value: Any) -> str:
    return "?" if value is None else f"{value:.0f}"


def section(rows: list[dict[str, Any]], about: str, command: str, minutes: float) -> str:
    head = ["events", "users / items", "train (min)", "s per M events", "peak RSS (GB)",
            *[f"{s} (s)" for s in STAGES], "ALS iterations (chosen / run)",
            "load avg (1/5/15 min, before → after)"]
    body = []
    for r in rows:
        stages = r["stage_seconds"]
        peak_gb = max(r["stage_peak_mb"].values()) / 1024.0
        body.append([f"{r['events']:,}", f"{r['users']:,} / {r['items']:,}",
                     f"{r['seconds'] / 60:.1f}", f"{r['seconds'] / (r['events'] / 1e6):.0f}",
                     f"{peak_gb:.2f}", *[f"{stages.get(s, 0.0):.0f}" for s in STAGES],
                     f"{_count(r.get('iterations'))} / {_count(r.get('iterations_run'))}",
                     r["load"]])
    first, last = rows[0], rows[-1]
    growth = (last["seconds"] / first["seconds"]) / (last["events"] / first["events"])
    largest_gb = max(last["stage_peak_mb"].values()) / 1024.0
    verdict = (f"Largest shop: {last['seconds'] / 60:.1f} min (target ≤ {TARGET_MINUTES:g}: "
               f"{'met' if last['seconds'] <= TARGET_MINUTES * 60 else 'NOT met'}), peak "
               f"{largest_gb:.2f} GB (target ≤ {TARGET_GB:g}: "
               f"{'met' if largest_gb <= TARGET_GB else 'NOT met'}); time grew "
               f"{last['seconds'] / first['seconds']:.2f} × for "
               f"{last['events'] / first['events']:.2f} × the events, {growth:.2f} × linear "
               f"({'at most linear' if growth <= 1.05 else 'MORE than linear'}).")
    peaks = "; ".join(
        f"{r['events']:,} events: " + ", ".join(f"{s} {r['stage_peak_mb'].get(s, 0) / 1024:.2f}"
                                                for s in STAGES)
        for r in rows)
    return "\n".join([
        BEGIN, "## Training at shop scale", "",
        "`socialrec train` with its defaults on `socialrec synth` shops (items = half the users, "
        "the same activity per user), each in a fresh process. Stage seconds are wall time; "
        "peak RSS is the highest resident memory of any stage (each stage's own peak, GB: "
        "below the table). ALS runs at most a fixed budget of iterations whatever the shop "
        "(docs/OPERATIONS.md §10); chosen: the count validation kept and the refit ran.", "",
        table([head, *body]), "", verdict, "",
        f"Peak RSS per stage (GB) — {peaks}.", "",
        f"Run time: {minutes:.1f} min (including writing the shops the first time).", "",
        f"Machine: {about}", "", f"Command: `{command}`", END, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="50000,100000,200000",
                        help="comma-separated users per shop (three sizes)")
    parser.add_argument("--items-per-user", type=float, default=0.5)
    parser.add_argument("--activity", type=float, default=6.5,
                        help="socialrec synth --activity (6.5: about 25 events per user)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path, default=OUT / "train-scale")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs/BENCHMARKS.md")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the figures of shops already trained under --data-root")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument("--train-one", nargs=3, type=Path, metavar=("DATA", "OUT", "REPORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train_one:
        train_one(*args.train_one)
        return 0
    try:
        sizes = sorted(int(x) for x in args.users.split(",") if x.strip())
    except ValueError:
        parser.error(f"--users {args.users!r}: expected comma-separated integers")
    if len(sizes) < 2 or sizes[0] < 100:
        parser.error("--users: at least two sizes of 100 users or more")
    started = time.perf_counter()
    rows = []
    for users in sizes:
        items = max(100, round(users * args.items_per_user))
        data = shop(args.data_root, users, items, args.activity, args.seed)
        events = events_in(data)
        kept = data / "train-result.json"
        if args.resume and kept.is_file():
            log(f"reuse {kept}")
            result = json.loads(kept.read_text(encoding="utf-8"))
        else:
            log(f"train {data.name}: {events:,} events (load {load_average()})")
            result = measure(data) | {"events": events, "users": users, "items": items}
            kept.write_text(json.dumps(result), encoding="utf-8")
        log(f"  {result['seconds']:.0f} s, peak {max(result['stage_peak_mb'].values()):.0f} MB")
        rows.append(result)
    about = f"{machine(TRAIN_LIBS)}; training threads 2 (`TrainConfig.threads`)"
    publish(section(rows, about, command_line("train_scale", argv),
                    (time.perf_counter() - started) / 60), "train_scale", args.docs, BEGIN, END,
            args.no_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
