"""report.html: one self-contained file, a section per part of the evaluation present."""

from __future__ import annotations

import re
from pathlib import Path

from app.offline.report import write_report

KS = (10, 20)


def metrics(scale: float, ks: tuple[int, ...] = KS) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ks:
        out |= {f"recall@{k}": scale * k / 100, f"ndcg@{k}": scale * k / 150,
                f"precision@{k}": scale / 20, f"hitrate@{k}": min(1.0, scale * k / 30),
                f"coverage@{k}": 0.2 * scale, f"popular_share@{k}": 0.05 * scale}
    return out


def gain(mean: float) -> dict[str, float]:
    return {"mean": mean, "low": mean - 0.01, "high": mean + 0.01}


def a_report(truncated: bool = True, cold: bool = True) -> dict:
    """The shape `evaluate()` returns (with the keys the CLI's --report asks for)."""
    report: dict = {"full": metrics(1.0), "no_social": metrics(0.9), "no_rerank": metrics(0.95),
                    "curves": {name: metrics(s, (1, 5, 10, 20, 50)) for name, s in
                               (("full", 1.0), ("no_social", 0.9), ("no_rerank", 0.95))},
                    "users": 120, "buckets": {}}
    for label, users in (("1-5", 10), ("6-20", 50), (">20", 60)):
        report["buckets"][label] = metrics(1.0) | {
            "no_social": metrics(0.9), "no_rerank": metrics(0.95), "users": users,
            "social_changes_hits": {"k": 20, "more": 5, "fewer": 2},
            "social_gain": {"recall@20": gain(0.02), "ndcg@20": gain(0.015)}}
    if truncated:
        report["truncated"] = {str(n): {"users": 80, "full": metrics(0.5 + n / 10),
                                        "no_social": metrics(0.4 + n / 10),
                                        "social_gain": {"recall@20": gain(0.02),
                                                        "ndcg@20": gain(0.01)}}
                               for n in (0, 1, 2, 3, 5)}
    if cold:
        report["cold_items"] = {"full": metrics(0.3), "users": 40, "items": 25}
    return report


def images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def test_every_section_is_an_embedded_image(tmp_path: Path) -> None:
    path = write_report(a_report(), tmp_path / "out", KS, about={"model": "m-test"},
                        baselines={"implicit ALS": {"all": metrics(0.8, (1, 5, 10, 20, 50)),
                                                    "1": metrics(0.4), "5": metrics(0.6)},
                                   "most popular": {"all": metrics(0.3)}})
    page = path.read_text(encoding="utf-8")
    assert path == tmp_path / "out" / "report.html"
    sources = images(page)
    assert len(sources) == 5
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    for title in ("Recall and NDCG by list length", "gains per history bucket",
                  "Short histories", "popularity bias", "New products"):
        assert title in page
    assert "implicit ALS" in page and "m-test" in page
    # a baseline measured at fewer cut-offs leaves the others blank, not shifted
    assert "<td>most popular</td><td>—</td><td>—</td><td>0.0300</td><td>0.0600</td><td>—</td>" \
        in page
    # self-contained: nothing to fetch from anywhere
    assert not re.search(r"(src|href)=\"(?!data:)", page)


def test_optional_sections_appear_only_with_their_data(tmp_path: Path) -> None:
    page = write_report(a_report(truncated=False, cold=False), tmp_path, KS).read_text()
    assert len(images(page)) == 3
    assert "Short histories" not in page and "New products" not in page
