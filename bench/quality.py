#!/usr/bin/env python3
"""Ranking quality on a fixed train/test split: socialrec (through the serving pipeline) vs
baselines trained in the same run, scored by the same metric code over the same test users.

    bench/quality [--data data/lastfm-split] [--artifacts DIR] [--no-docs] [--report DIR]
    bench/quality --similar [...]      similar items (bench/similar.py)
    bench/quality --cold-items SPLIT   new products (bench/coldstart.py)

Trains socialrec's model with its default (validation-tuned) config on train.csv, evaluates it
with app.offline.evaluate.evaluate (ONNX encoder → blend → FAISS → rerank, train items
excluded; all test users, history buckets and the truncated-history protocol), ranks the
baselines of bench/baselines.py (most popular, item-kNN, ALS folded in, ALS + friends' mean)
on the same users with the same known items, prints a table and writes the "Ranking quality"
section of docs/BENCHMARKS.md (between the quality markers).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from app.events import type_weights
from app.offline.dataset import Dataset, load_dataset, load_test
from app.offline.evaluate import BUCKETS, TRUNCATED, evaluate, metrics_at, rank_users, truncate
from app.offline.report import CURVE_KS, write_report
from app.serving.artifacts import Manifest
from bench import baselines
from bench.common import ROOT, command_line, machine, publish, table

BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"
KS = (10, 20)
TARGET_RATIO = 1.05  # what "winning" a column means: 5 % over the best baseline
QUALITY_LIBS = ("torch", "numpy", "onnxruntime", "faiss-cpu", "implicit", "scipy")


VALIDATION_TABLE = """\
| variant (validation split, seed 0 unless noted) | R@20 | N@20 |
|---|---|---|
| implicit ALS, benchmark params (64 f, reg 10, α 5) | 0.2348 | 0.2015 |
| same + friends' mean vector, weight 0.3 / + social rerank 0.1 | 0.2397 / 0.2412 | 0.2071 / 0.2091 |
| Mult-DAE-style linear encoder d 256, full softmax, 50 % dropout, 200 epochs (2.6 s/epoch) | 0.2392 | 0.2073 |
| same, lr 1e-2: peak at 40 epochs, then overfits | 0.2358 | 0.2035 |
| ALS grid: 64 f reg 30 α 10 / 128 f reg 50 α 10 / 256 f reg 50 α 10 | 0.2451 / 0.2519 / 0.2528 | 0.2128 / 0.2194 / 0.2202 |
| fold-in encoder (PCG in ONNX) on the 128/50/10 item factors | 0.2520 | 0.2196 |
| + end-to-end softmax fine-tuning of item vectors (best epoch) / also of the encoder | 0.2538 / overfits (0.21) | 0.2221 / 0.17 |
| + Mult-DAE ensemble (z-scored, 0.6) | 0.2548 | 0.2223 |
| trainer (seed 7 split): torch ALS, 6 iterations chosen by early stopping | 0.2592 | 0.2264 |
| + blend and bias learned with a full-catalogue softmax (fw −0.10, β +0.067) | 0.2486 | 0.2183 |
| + blend and bias learned with a softmax over the 200 served candidates (fw 0.105, β −0.014) | 0.2602 | 0.2272 |
| + rerank grid through the Recommender (match 1.0, social 0.01) = shipped | 0.2635 | 0.2287 |
| + blend weight by history length, w(h) = fw·(1+h)^γ learned with fw: 0.2637 / 0.2290 here (γ −0.13), but on a nested split (train minus 20 %, seed 11) fw collapsed to 0.008 (γ −0.28): 0.2613 / 0.2271 vs 0.2630 / 0.2299 without γ — rejected | — | — |
| one set of weights for every user (the rows above) left friends-only and one-item users below most-popular on test (issue 11's table): the learned item bias was negative, items without training interactions scored exactly 0 and outranked everything for a short vector | — | — |
| history bands (0, 1, 2, 3, 5, 10, 20 items): per band, friend weight, popularity weights with / without friends and social-proof weight learned on the validation users truncated to the band's lengths (≤ 800 per band); items without information never shown over informed ones; natural histories | 0.2613 | 0.2280 |
| same, per band (validation users truncated, full / social off): ≥ 0 items 0.1819 / 0.0925, 1: 0.1929 / 0.1398, 2: 0.1978 / 0.1641, 3: 0.2170 / 0.1939, 5-9: 0.2330 / 0.2256, 10-19: 0.2417 / 0.2363, ≥ 20: 0.2594 / 0.2580 (R@20) | — | — |
| rerank match term on the taste coordinates: weight 0 chosen in every band (grid 0, 0.5, 1, 2; e.g. ≥ 20 items N@20 0.2253 at 0 vs 0.2170 at 1 and 0.1946 at 2) | — | — |
| friends only (n = 0), other uses of the friends on a validation harness (validation model, users with ≥ 5 kept items, full catalogue; ALS + w × friends' mean baseline 0.1806 / 0.1618 on the same users): friends' mean vector with popularity weight −0.3 × the friend weight 0.1880 / 0.1673; + friends' engagement log1p(s) or its share of the friends: best weight 0; friends weighted by mutual friends 0.1856 / 0.1658; by their degree^0.5 0.1802 / 0.1611; friends' vectors scaled to one length 0.1873 / 0.1667; fold-in of the friends' pooled items 0.1834 / 0.1631; + friends-of-friends' mean (the user left out) 0.1878 / 0.1681 at weight 0.25, lower above (left in, the user's own vector leaks back through their friends' friends: 0.197 — not usable); a ridge map of the friends' mean onto the user's own vector (5 user folds, cross-fitted) 0.1901 / 0.1696 | — | — |
"""  # noqa: E501


Table = dict[str, dict[str, dict[str, float]]]  # method → column → metrics


def baseline_tables(data: Dataset, test: dict[int, set[int]]) -> tuple[Table, dict[str, float],
                                                                       float]:
    """Every baseline's metrics on all test users (`all`) and per truncated length (str(n))
    plus "full" over the protocol's users; the friend weights chosen on validation; ALS's fit
    time."""
    eligible = {u: items for u, items in test.items() if len(data.histories[u]) >= max(TRUNCATED)}
    weights = baselines.choose_friend_weights(data, TRUNCATED, max(TRUNCATED))
    als = baselines.Als.fit(data.histories, data.n_items)
    scorers = {"most popular": baselines.popular_scorer(data),
               "item-kNN (cosine)": baselines.knn_scorer(data),
               "ALS (64 f) folded in": als.scorer(data)}
    everything = {u: data.histories[u] for u in test}
    out: Table = {}
    for name, scorer in scorers.items():
        out[name] = {"all": _score(scorer, data, test, everything)}
        for n in (*TRUNCATED, None):
            if n == 0 and name != "most popular":
                continue  # nothing to fold in or to be similar to
            key = "full" if n is None else str(n)
            known = everything if n is None else truncate(data.histories, eligible, n)
            out[name][key] = _score(scorer, data, eligible, known)
    social = "ALS + w × friends' mean vector"
    out[social] = {"all": _score(als.scorer(data, weights["full"]), data, test, everything)}
    for n in (*TRUNCATED, None):
        key = "full" if n is None else str(n)
        known = everything if n is None else truncate(data.histories, eligible, n)
        out[social][key] = _score(als.scorer(data, weights[key]), data, eligible, known)
    return out, weights, als.seconds


def _score(scorer: baselines.Scorer, data: Dataset, test: dict[int, set[int]],
           known: baselines.Known) -> dict[str, float]:
    return metrics_at(baselines.rank(scorer, data, test, known, max(KS)), KS, data.n_items)


def fmt(v: float) -> str:
    return f"{v:.4f}"


def build_section(report: dict[str, Any], eligible_full: dict[str, float], base: Table,
                  weights: dict[str, float], timings: dict[str, float], manifest: Manifest,
                  info: str,
                  command: str, data_dir: Path) -> str:
    truncated = report["truncated"]
    lengths = [*truncated, "full"]
    users = next(iter(truncated.values()))["users"]

    def ours(key: str, variant: str = "full") -> dict[str, float] | None:
        if key == "full":
            return eligible_full if variant == "full" else None
        entry = truncated[key][variant]
        return None if variant == "no_social" and key == "0" else entry

    def cell(m: dict[str, float] | None) -> str:
        return "—" if m is None else f"{m['recall@20']:.3f} / {m['ndcg@20']:.3f}"

    head = ["method", *(f"n = {n}" if n != "full" else "full" for n in lengths)]
    rows = [head]
    for name, by_n in base.items():
        label = name + (" (w " + ", ".join(f"{weights[n]:g}" for n in lengths) + ")"
                        if name.startswith("ALS +") else "")
        rows.append([label, *(cell(by_n.get(n)) for n in lengths)])
    rows.append(["**socialrec, full pipeline**", *(cell(ours(n)) for n in lengths)])
    rows.append(["socialrec, social off", *(cell(ours(n, "no_social")) for n in lengths)])
    ratio = ["socialrec / best baseline (R@20, N@20; target ≥ 1.05)"]
    met: list[int] = []  # per column: 0 behind, 1 ahead, 2 ahead by the target ratio
    for n in lengths:
        mine = ours(n)
        assert mine is not None
        best = {k: max(b[n][k] for b in base.values() if n in b) for k in ("recall@20",
                                                                           "ndcg@20")}
        ratios = [mine[k] / best[k] for k in ("recall@20", "ndcg@20")]
        ratio.append(f"{ratios[0]:.3f}, {ratios[1]:.3f}")
        met.append(0 if min(ratios) < 1.0 else 1 if min(ratios) < TARGET_RATIO else 2)
    rows.append(ratio)
    groups = [(2, f"at least {TARGET_RATIO}× the best baseline (both metrics)"),
              (1, f"ahead of it but by less than {TARGET_RATIO}×"), (0, "behind it")]
    standing = "Where we stand: " + "; ".join(
        f"{text} at n = {', '.join(n for n, g in zip(lengths, met, strict=True) if g == level)}"
        for level, text in groups if level in met) + "."
    gains = [["n", "R@20 full − social off [95 % CI]", "N@20 full − social off [95 % CI]"]]
    for n, entry in truncated.items():
        g = entry["social_gain"]
        gains.append([n, *(f"{g[k]['mean']:+.4f} [{g[k]['low']:+.4f}, {g[k]['high']:+.4f}]"
                           for k in ("recall@20", "ndcg@20"))])

    metric_names = [f"{m}@{k}" for k in KS for m in ("recall", "ndcg")]
    als_all = base["ALS (64 f) folded in"]["all"]
    methods = [("socialrec full", report["full"]), ("socialrec no_social", report["no_social"]),
               ("socialrec no_rerank", report["no_rerank"]),
               *((name, by_n["all"]) for name, by_n in base.items())]
    overall = [["method", "Recall@10", "NDCG@10", "Recall@20", "NDCG@20", "R@20 / ALS",
                "N@20 / ALS"]]
    for name, m in methods:
        overall.append([name] + [fmt(m[k]) for k in metric_names]
                       + [f"{m['recall@20'] / als_all['recall@20']:.3f}",
                          f"{m['ndcg@20'] / als_all['ndcg@20']:.3f}"])
    brows = [["history bucket", "users", "full R@20", "no_social R@20", "full N@20",
              "no_social N@20", "users with more / fewer hits@20"]]
    for label, _, _ in BUCKETS:
        b = report["buckets"][label]
        brows.append([label, str(b["users"]), fmt(b["recall@20"]),
                      fmt(b["no_social"]["recall@20"]), fmt(b["ndcg@20"]),
                      fmt(b["no_social"]["ndcg@20"]),
                      f"{b['social_changes_hits']['more']} / {b['social_changes_hits']['fewer']}"])
    m = manifest
    val = m.metrics
    lines = [
        BEGIN,
        "## Ranking quality",
        "",
        f"Dataset `{data_dir.name}` (train.csv → models, test.csv → scores only), "
        f"{report['users']} test users. Metrics over all items with the user's train items "
        "excluded (Recall@K: hits in the top K / the user's test items; NDCG@K: gain 1 per hit, "
        "discount 1/log2(rank + 1), normalised by the ideal list). socialrec is ranked "
        "through the serving pipeline (`app.offline.evaluate`: ONNX encoder → social blend → "
        "FAISS → rerank); every baseline is trained and ranked in the same run and scored by the "
        "same `app.offline.evaluate.metrics_at`.",
        "",
        "### Short histories (truncated-history protocol)",
        "",
        f"Every test user with ≥ {max(TRUNCATED)} train items ({users} users) ranked again "
        "knowing only n of them (seeded random choice, the same items for every method and "
        "variant), friends unchanged, all train items still excluded; n = 0 is a friends-only "
        "user; *full* is the same users with their whole train history. Recall@20 / NDCG@20:",
        "",
        table(rows),
        "",
        standing,
        "",
        "The friend weight w of the ALS + friends baseline is chosen per column on a validation "
        "split of train.csv (as socialrec's parameters are). What the social stages add, per "
        "user (paired bootstrap over users, 2,000 resamples; at n = 0 social off means the "
        "popularity fallback):",
        "",
        table(gains),
        "",
        "### All test users",
        "",
        table(overall),
        "",
        f"Metric names in the table: {', '.join(metric_names)}.",
        "",
        "Per history-length bucket (number of train items), full pipeline vs no social blend:",
        "",
        table(brows),
        "",
        f"Model: `{m.model.get('architecture')}`, {m.model.get('factors')} factors "
        f"(embedding dim {m.embedding_dim}), regularization "
        f"{m.model.get('regularization')}, alpha {m.model.get('alpha')}, "
        f"{m.model.get('iterations')} ALS iterations (chosen on validation); serving "
        f"parameters (chosen on validation): {serving_parameters(m)}; FAISS index as served: "
        f"{m.index.kind} {', '.join(f'{k} {v}' for k, v in m.index.params.items()) or 'exact'}.",
        f"Validation split (20 % of each user's train items, seeded; {int(val.get('val_users', 0))}"
        f" users): full R@20 {val.get('val_recall@20', float('nan')):.4f} / N@20 "
        f"{val.get('val_ndcg@20', float('nan')):.4f}, no_social R@20 "
        f"{val.get('val_no_social_recall@20', float('nan')):.4f} / N@20 "
        f"{val.get('val_no_social_ndcg@20', float('nan')):.4f}.",
        "",
        "Validation per history band (the band's validation users truncated to its lengths, "
        "as the trainer chose the band's weights; R@20 / N@20):",
        "",
        table(band_rows(m)),
        "",
        "How the model was chosen (validation split carved from train.csv only; test.csv "
        "was read only by this benchmark). Validation Recall@20 / NDCG@20:",
        "",
        VALIDATION_TABLE,
        "",
        f"Training time: socialrec {timings['socialrec']:.1f} s (validation selection, learned "
        f"blend, rerank grid and the refit on all train data, ONNX/FAISS export), implicit ALS "
        f"{timings['als']:.1f} s; evaluation of the pipeline variants "
        f"{timings['evaluate']:.1f} s.",
        "",
        f"Machine: {info}.",
        "",
        f"Command: `{command}`",
        END,
    ]
    return "\n".join(lines) + "\n"


def band_rows(m: Manifest) -> list[list[str]]:
    rows = [["band (known items)", "users", "full", "social off"]]
    for b in m.bands:
        key = f"val_band{b.min_items}"
        if f"{key}_recall@20" not in m.metrics:
            continue
        v = m.metrics
        rows.append([f"≥ {b.min_items}", str(int(v[f"{key}_users"])),
                     f"{v[f'{key}_recall@20']:.4f} / {v[f'{key}_ndcg@20']:.4f}",
                     f"{v[f'{key}_no_social_recall@20']:.4f} / "
                     f"{v[f'{key}_no_social_ndcg@20']:.4f}"])
    return rows


def serving_parameters(m: Manifest) -> str:
    bands = "; ".join(
        f"≥ {b.min_items} items: friends {b.friend_weight:.3f}, popularity "
        f"{b.popularity_weight:+.3f} (alone {b.popularity_weight_alone:+.3f}), match "
        f"{b.match_weight:g} (alone {b.match_weight_alone:g}), social {b.social_weight:.3f}"
        for b in m.bands)
    return f"rerank candidates {m.rerank.candidates}; per history band: {bands}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "lastfm-split")
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="where to write socialrec's artifacts (default: a temp folder)")
    parser.add_argument("--trained", type=Path, default=None,
                        help="evaluate these artifacts instead of training (no training time)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs/BENCHMARKS.md")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument("--report", type=Path, default=None, metavar="DIR",
                        help="also write DIR/report.html (evaluate's report, with the "
                             "baselines drawn beside socialrec)")
    parser.add_argument("--cold-items", type=Path, default=None, metavar="SPLIT_DIR",
                        help="instead: the new-product benchmark (bench/coldstart.py) on a "
                             "split written by `socialrec split --cold-items`")
    parser.add_argument("--similar", action="store_true",
                        help="instead: the similar-items benchmark (bench/similar.py)")
    args = parser.parse_args(argv)
    if args.similar:
        from bench import similar

        result = similar.run(args.data.resolve(), args.artifacts, args.trained)
        publish(similar.section(result, machine(QUALITY_LIBS), command_line("quality", argv)),
                "similar", args.docs, similar.BEGIN, similar.END, args.no_docs)
        return 0
    if args.cold_items is not None:
        from bench import coldstart

        result = coldstart.run(args.cold_items.resolve(), args.artifacts)
        publish(coldstart.section(result, machine(QUALITY_LIBS), command_line("quality", argv)),
                "coldstart", args.docs, coldstart.BEGIN, coldstart.END, args.no_docs)
        return 0
    import torch

    torch.set_num_threads(2)
    from app.offline.train import TrainConfig, train
    from app.serving.artifacts import ModelArtifacts
    from app.serving.pipeline import Recommender

    data_dir = args.data.resolve()
    with tempfile.TemporaryDirectory(prefix="socialrec-bench-") as tmp:
        out = args.artifacts or Path(tmp) / "model"
        started = time.perf_counter()
        if args.trained:
            out = args.trained
            manifest = ModelArtifacts.load(out).manifest
        else:
            manifest = train(data_dir, out, TrainConfig(), progress=True)
        timings = {"socialrec": manifest.metrics.get("train_seconds", math.nan)}
        recommender = Recommender(ModelArtifacts.load(out))
        data = load_dataset(data_dir, type_weights(None, recommender.manifest.event_weights))
        test = {u: items for u, items in load_test(data_dir, data).items() if items}
        started = time.perf_counter()
        curve_ks = CURVE_KS if args.report else ()
        report = evaluate(recommender, data, test, KS, progress=True, curve_ks=curve_ks)
        eligible = {u: items for u, items in test.items()
                    if len(data.histories[u]) >= max(TRUNCATED)}
        eligible_full = metrics_at(rank_users(recommender, data, eligible, max(KS)), KS,
                                   data.n_items)
        timings["evaluate"] = time.perf_counter() - started
    base, weights, timings["als"] = baseline_tables(data, test)
    section = build_section(report, eligible_full, base, weights, timings, manifest,
                            machine(QUALITY_LIBS), command_line("quality", argv), data_dir)
    publish(section, "quality", args.docs, BEGIN, END, args.no_docs)
    if args.report:
        about = {"model": manifest.model_version, "data": str(data_dir)}
        print(f"report: {write_report(report, args.report, KS, about, baselines=base)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
