"""`socialrec evaluate … --report DIR`: the evaluation report as one self-contained HTML file.

Plots are drawn with matplotlib (the `train` extra) from the report dict `evaluate()` returns
and embedded as data URIs, so `report.html` opens anywhere, offline, and can be mailed around.
Optional parts of the dict (the truncated-history protocol, cold items, baselines) get their
section only when present.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

# Cut-offs of the Recall/NDCG curves; the CLI ranks deep enough for the largest.
CURVE_KS: tuple[int, ...] = (1, 5, 10, 20, 50)
REPORT_FILE = "report.html"
VARIANT_LABELS = {"full": "full pipeline", "no_social": "no social stages",
                  "no_rerank": "no rerank"}
COLORS = {"full": "#2f6fde", "no_social": "#d9822b", "no_rerank": "#7a7f8c"}
BASELINE_COLORS = ("#0f7b55", "#b54708", "#7a2ed6", "#667085")


Baselines = Mapping[str, Mapping[str, Mapping[str, float]]]


def write_report(report: Mapping[str, Any], out_dir: Path, ks: tuple[int, ...],
                 about: Mapping[str, str] | None = None,
                 baselines: Baselines | None = None) -> Path:
    """Write `out_dir/report.html`; `ks` are the cut-offs the user asked for (the largest is
    the one the sections quote), `about` is shown as a header table. `baselines` are other
    recommenders ranked on the same users, by name: `{"all": metrics}` on every test user (same
    keys as `report["full"]`) and, when they ran the truncated-history protocol, `{"0": …,
    "1": …}` per number of known items."""
    out_dir.mkdir(parents=True, exist_ok=True)
    k = max(ks)
    baselines = baselines or {}
    sections = [_curves(report, {name: b["all"] for name, b in baselines.items() if "all" in b}),
                _buckets(report, k), _truncated(report, k, baselines), _coverage(report, k),
                _cold(report, k)]
    path = out_dir / REPORT_FILE
    path.write_text(_page(report, about or {}, [s for s in sections if s]), encoding="utf-8")
    return path


def _at(metrics: Mapping[str, Any], name: str) -> dict[int, float]:
    """{K: value} of one metric, from keys like `recall@20`."""
    out = {}
    for key, value in metrics.items():
        match = re.fullmatch(rf"{name}@(\d+)", key)
        if match:
            out[int(match.group(1))] = float(value)
    return dict(sorted(out.items()))


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")  # a bare Figure: no pyplot, no global state
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(panels: int) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=(4.6 * panels, 3.3), dpi=100, layout="constrained")
    axes = [fig.add_subplot(1, panels, n + 1) for n in range(panels)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, axes


def _section(title: str, text: str, fig: Figure, alt: str, table: str = "") -> str:
    return (f"<section><h2>{html.escape(title)}</h2><p>{text}</p>"
            f'<img src="{_png(fig)}" alt="{html.escape(alt)}">{table}</section>')


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _curves(report: Mapping[str, Any], baselines: Mapping[str, Mapping[str, float]]) -> str:
    curves = report.get("curves") or {name: report[name] for name in VARIANT_LABELS}
    fig, axes = _figure(2)
    for ax, metric in zip(axes, ("recall", "ndcg"), strict=True):
        for name, label in VARIANT_LABELS.items():
            points = _at(curves[name], metric)
            ax.plot(list(points), list(points.values()), marker="o", label=label,
                    color=COLORS[name], linestyle="-" if name == "full" else "--")
        for n, (name, metrics) in enumerate(baselines.items()):
            points = _at(metrics, metric)
            ax.plot(list(points), list(points.values()), marker="s", label=name,
                    color=BASELINE_COLORS[n % len(BASELINE_COLORS)], linestyle=":")
        ax.set_xscale("log")
        ax.set_xticks(list(_at(curves["full"], metric)))
        ax.set_xticklabels([str(x) for x in _at(curves["full"], metric)])
        ax.set_xlabel("K (list length)")
        ax.set_title(f"{'Recall' if metric == 'recall' else 'NDCG'}@K")
    axes[0].legend(fontsize=8)
    cutoffs = list(_at(curves["full"], "recall"))
    named = [(label, curves[name]) for name, label in VARIANT_LABELS.items()]
    rows = [[label, *(f"{v:.4f}" if (v := _at(m, "recall").get(k)) is not None else "—"
                      for k in cutoffs)]
            for label, m in [*named, *baselines.items()]]
    header = ["Recall@K", *(str(k) for k in cutoffs)]
    return _section("Recall and NDCG by list length",
                    "Every test user ranked over the whole catalogue minus their train items, "
                    "through the serving pipeline; the ablations switch the friends' "
                    "vectors and engagement (no social stages) or the rerank off.",
                    fig, "Recall@K and NDCG@K curves", _table(header, rows))


def _gain_bars(ax: Any, labels: list[str], gains: list[Mapping[str, float]],
               offset: float, color: str, legend: str) -> None:
    means = [g["mean"] for g in gains]
    errors = [[g["mean"] - g["low"] for g in gains], [g["high"] - g["mean"] for g in gains]]
    xs = [n + offset for n in range(len(labels))]
    ax.bar(xs, means, width=0.38, color=color, label=legend)
    ax.errorbar(xs, means, yerr=errors, fmt="none", ecolor="#1d2330", capsize=4)


def _buckets(report: Mapping[str, Any], k: int) -> str:
    buckets = report.get("buckets") or {}
    labels = [label for label, b in buckets.items() if b.get("users")]
    if not labels:
        return ""
    fig, axes = _figure(2)
    with_intervals = all("social_gain" in buckets[label] for label in labels)
    ax = axes[0]
    for offset, metric, color in ((-0.2, "recall", "#2f6fde"), (0.2, "ndcg", "#0f7b55")):
        key = f"{metric}@{k}"
        if with_intervals:
            gains = [buckets[label]["social_gain"][key] for label in labels]
        else:  # a report written without per-bucket intervals: the difference of the means
            diffs = [buckets[label][key] - buckets[label]["no_social"][key] for label in labels]
            gains = [{"mean": d, "low": d, "high": d} for d in diffs]
        _gain_bars(ax, labels, gains, offset, color, f"{metric.capitalize()}@{k}")
    ax.axhline(0, color="#1d2330", linewidth=0.8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{label}\n{buckets[label]['users']} users" for label in labels])
    ax.set_xlabel("train items per user")
    ax.set_title("gain of the social stages (full − no social)")
    ax.legend(fontsize=8)
    ax = axes[1]
    width = 0.27
    for n, (name, label) in enumerate(VARIANT_LABELS.items()):
        values = [(buckets[b] if name == "full" else buckets[b][name])[f"recall@{k}"]
                  for b in labels]
        ax.bar([x + (n - 1) * width for x in range(len(labels))], values, width=width,
               color=COLORS[name], label=label)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_xlabel("train items per user")
    ax.set_title(f"Recall@{k} by bucket")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend above the bars
    ax.legend(fontsize=8, ncols=3, loc="upper center")
    rows = []
    for label in labels:
        b = buckets[label]
        changes = b.get("social_changes_hits", {})
        row = [label, str(b["users"]), f"{b[f'recall@{k}']:.4f}",
               f"{b['no_social'][f'recall@{k}']:.4f}"]
        if with_intervals:
            g = b["social_gain"][f"recall@{k}"]
            row.append(f"{g['mean']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}]")
        row.append(f"{changes.get('more', '—')} / {changes.get('fewer', '—')}")
        rows.append(row)
    header = ["bucket", "users", f"full R@{k}", f"no social R@{k}",
              *(["gain, 95 % interval"] if with_intervals else []), "users helped / hurt"]
    text = ("Users grouped by how many items they had in train. The bars on the left are the "
            "mean per-user difference the social stages make")
    text += (", with 95 % paired-bootstrap intervals (users resampled): an interval that "
             "crosses zero is no evidence either way." if with_intervals else ".")
    return _section("Where the friends help: gains per history bucket", text, fig,
                    "per-bucket gains of the social stages", _table(header, rows))


def _truncated(report: Mapping[str, Any], k: int, baselines: Baselines) -> str:
    truncated = report.get("truncated")
    if not truncated:
        return ""
    ns = sorted(truncated, key=int)
    xs = [int(n) for n in ns]
    fig, axes = _figure(2)
    for ax, metric in zip(axes, ("recall", "ndcg"), strict=True):
        key = f"{metric}@{k}"
        for name, label in (("full", "with friends"), ("no_social", "without friends")):
            ax.plot(xs, [truncated[n][name][key] for n in ns], marker="o", label=label,
                    color=COLORS[name], linestyle="-" if name == "full" else "--")
        for b, (name, runs) in enumerate(baselines.items()):
            points = [(int(n), runs[n][key]) for n in ns if n in runs and key in runs[n]]
            if points:
                ax.plot(*zip(*points, strict=True), marker="s", label=name, linestyle=":",
                        color=BASELINE_COLORS[b % len(BASELINE_COLORS)])
        gains = [truncated[n].get("social_gain", {}).get(key) for n in ns]
        if all(gains):
            low = [truncated[n]["no_social"][key] + g["low"] for n, g in zip(ns, gains,
                                                                              strict=True)]
            high = [truncated[n]["no_social"][key] + g["high"] for n, g in zip(ns, gains,
                                                                                strict=True)]
            ax.fill_between(xs, low, high, color=COLORS["full"], alpha=0.15,
                            label="95 % interval of the gain")
        ax.set_xticks(xs)
        ax.set_xlabel("items known of the user (0 = friends only)")
        ax.set_title(f"{'Recall' if metric == 'recall' else 'NDCG'}@{k}")
    axes[0].legend(fontsize=8)
    rows = [[n, str(truncated[n]["users"]), f"{truncated[n]['full'][f'recall@{k}']:.4f}",
             f"{truncated[n]['no_social'][f'recall@{k}']:.4f}"] for n in ns]
    return _section("Short histories: quality by number of known items",
                    "The same test users (those with enough train items) ranked again knowing "
                    "only n of their items, chosen at random, with their friends unchanged; "
                    "all their train items stay excluded. This is where most shop users are.",
                    fig, "quality against the number of known items",
                    _table(["known items", "users", f"with friends R@{k}",
                            f"without friends R@{k}"], rows))


def _coverage(report: Mapping[str, Any], k: int) -> str:
    names = [n for n in VARIANT_LABELS if f"popular_share@{k}" in report[n]]
    if not names:
        return ""
    fig, axes = _figure(2)
    labels = [VARIANT_LABELS[n] for n in names]
    colors = [COLORS[n] for n in names]
    coverage = [report[n][f"coverage@{k}"] for n in names]
    share = [report[n][f"popular_share@{k}"] for n in names]
    axes[0].bar(labels, coverage, color=colors)
    axes[0].set_title(f"catalogue coverage@{k}")
    axes[0].set_ylim(0, 1)
    axes[1].bar(labels, share, color=colors)
    axes[1].axhline(0.01, color="#1d2330", linestyle=":", linewidth=1)
    axes[1].annotate("1 %: blind to popularity", (-0.4, 0.01), xytext=(0, 3),
                     textcoords="offset points", fontsize=8)
    axes[1].set_title(f"top-{k} slots from the top 1 % items")
    axes[1].set_ylim(0, max(0.05, *share) * 1.2)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    rows = [[VARIANT_LABELS[n], f"{c:.4f}", f"{s:.4f}"]
            for n, c, s in zip(names, coverage, share, strict=True)]
    return _section("Catalogue coverage and popularity bias",
                    f"Coverage: the share of the catalogue that appears in at least one test "
                    f"user's top {k}. Popularity bias: the share of all top-{k} slots taken by "
                    f"the 1 % most popular items (by training interactions); a recommender "
                    f"blind to popularity would sit near 1 %.",
                    fig, "coverage and popularity bias",
                    _table(["variant", f"coverage@{k}", "top-1 % share"], rows))


def _cold(report: Mapping[str, Any], k: int) -> str:
    cold = report.get("cold_items")
    if not cold:
        return ""
    fig, axes = _figure(1)
    ax = axes[0]
    metrics = [m for m in ("recall", "ndcg", "hitrate") if f"{m}@{k}" in cold["full"]]
    for offset, values, label, color in (
            (-0.2, cold["full"], f"{cold['items']} new products, {cold['users']} users",
             COLORS["full"]),
            (0.2, report["full"], "whole catalogue (for scale)", "#a5b4cf")):
        ax.bar([n + offset for n in range(len(metrics))], [values[f"{m}@{k}"] for m in metrics],
               width=0.38, color=color, label=label)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([f"{m}@{k}" for m in metrics])
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("new products, ranked from their text alone")
    rows = [[f"{m}@{k}", f"{cold['full'][f'{m}@{k}']:.4f}", f"{report['full'][f'{m}@{k}']:.4f}"]
            for m in metrics]
    return _section("New products (cold items)",
                    "Items held out of training with all their interactions; their vectors "
                    "come from their text alone. Test users are ranked over the cold items "
                    "only, so the numbers are not comparable with the whole catalogue's "
                    "(fewer candidates), only with other models on the same split.",
                    fig, "cold-item quality",
                    _table(["metric", "new products", "whole catalogue"], rows))


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1d2330; max-width: 1000px;
       margin: 0 auto; padding: 16px 20px 40px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
img { max-width: 100%; display: block; margin: 8px 0; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border-bottom: 1px solid #e4e7ec; padding: 3px 10px; text-align: left;
         font-variant-numeric: tabular-nums; }
p { color: #475467; }
"""


def _page(report: Mapping[str, Any], about: Mapping[str, str], sections: list[str]) -> str:
    facts = {"test users": str(report.get("users", "")), **about}
    header = _table(["", ""], [[key, value] for key, value in facts.items()])
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>socialrec evaluation report</title>"
            f"<style>{STYLE}</style></head><body><h1>socialrec evaluation report</h1>"
            f"{header}{''.join(sections)}</body></html>\n")
