"""`socialrec train`: fit the model on a dataset folder, pick everything on a validation split
carved out of the training data, refit on all of it and export the artifacts (docs/ARTIFACTS.md).

Steps (test.csv is never read):

1. validation: for every user with ≥ 2 items, hold out `validation_fraction` of them (seeded; at
   least one item stays in the history);
2. weighted ALS on the remaining pairs for at most a fixed budget of iterations (the same for
   every shop size, so the ALS work per event does not grow with the shop); the number of
   iterations is chosen by validation NDCG@20 of the *served* encoder (ONNX-equivalent fold-in
   of the capped history) on a seeded sample of validation users, every other iteration, with
   early stopping that can only end sooner;
3. the serving weights are learned per history band (app/serving/artifacts.HistoryBand): the
   validation users are truncated to each band's lengths (a seeded random choice of their kept
   items, as the evaluation's truncated-history protocol does; all kept items still excluded,
   friends seen with everything they did), and the band's friend weight, popularity weights
   and social-proof weight are fitted on the held-out items (softmax cross-entropy over the
   retrieved candidates, seen items excluded as in serving). A fold-in from one item is much
   shorter than one from fifty, so one set of weights for everyone was chosen by the long
   histories and wrong for the short ones (docs/BENCHMARKS.md);
4. on the validation model's exported artifacts, per band: the friend, popularity and
   social weights are refined by a grid on the band's validation Recall@20 + NDCG@20, ranked
   with the exported item vectors as the service ranks (the softmax fit's values are grid
   points too: the surrogate loss was measured to leave short histories' weights off the
   metric's optimum), then the rerank's match weight is chosen by a grid search through the
   real `Recommender`; the weights a user without friends is served
   (`popularity_weight_alone`, `match_weight_alone`) by a grid on the same users with the
   social stages off, ranked with the exported item vectors; then the similar-items
   parameters (app/serving/similar.py) the same way: for each validation user the
   neighbours of one of their kept items (seeded) are scored against their held-out items,
   first without the user (the popularity weight), then personalised (the user weight);
5. ALS is refitted on all training pairs with the chosen iterations, the bands are kept, and
   the artifacts are exported with the validation metrics in the manifest. Refitting was
   measured with a nested split on lastfm-split: item factors from 80 % instead of 64 % of
   train scored R@20 0.259 vs 0.248 on the same validation items (+4.5 %), so the final model
   is the refit one, not the validation-trained one.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from app.config import DEFAULT_EVENT_WEIGHTS
from app.offline.dataset import Dataset, interactions_file, item_counts, load_dataset
from app.offline.evaluate import (
    UserRanking,
    metrics_at,
    rank_similar,
    rank_users,
    similar_queries,
    truncate,
    user_states,
)
from app.offline.export import default_kind, export_artifacts, fingerprint
from app.offline.model import (
    ENCODER_FILE,
    BandScorer,
    FoldInEncoder,
    encode_all,
    export_onnx,
    fewest_cg_steps,
    fit_als,
    popularity_feature,
)
from app.offline.stages import StageClock, gc_frozen_scope, gc_paused
from app.offline.text import ItemText, has_text
from app.serving.artifacts import (
    BlendParams,
    HistoryBand,
    Manifest,
    ModelArtifacts,
    RerankParams,
    SimilarParams,
    band_for,
)
from app.serving.pipeline import Recommender, UserState

log = logging.getLogger(__name__)

Histories = list[list[tuple[int, float]]]
SCORE_BLOCK = 1 << 25  # floats (128 MiB) in one block of users × items validation scores


@dataclass
class TrainConfig:
    """Defaults were chosen on a validation split of lastfm-split's train.csv (see the module
    docstring and docs/BENCHMARKS.md); no flag is needed for a good model."""

    dim: int = 128
    regularization: float = 50.0
    alpha: float = 10.0
    # ALS iterations at most: a fixed budget, whatever the shop's size, so that the ALS work
    # per event does not grow with the shop; validation only stops sooner and picks the count
    # (docs/OPERATIONS.md §10)
    iterations: int = 10
    eval_every: int = 2  # ALS iterations between two validation scores
    patience: int = 3  # evaluations without a gain of `min_als_gain` before ALS stops early
    min_als_gain: float = 0.002  # relative NDCG@20 gain an evaluation must bring to count
    als_validation_users: int = 2000  # seeded sample of the validation users scoring ALS
    cg_steps: int = 3  # CG steps per ALS half-iteration
    # CG steps of the fold-in inside the ONNX encoder: the fewest up to `encoder_cg_steps`
    # whose vectors of a sample of the training users are within `encoder_tolerance` of it
    encoder_cg_steps: int = 12
    encoder_tolerance: float = 1e-4
    encoder_check_users: int = 2000
    epochs: int = 60  # Adam steps fitting each history band's weights
    lr: float = 0.05
    seed: int = 7
    max_history: int = 50
    max_friends: int = 100
    validation_fraction: float = 0.2
    candidates: int = 200
    match_weights: str = "0,0.5,1,2"  # rerank match-weight grid (comma-separated)
    # per-band grids searched on validation Recall@20 + NDCG@20 after the softmax fit (whose
    # own values are candidates too): the surrogate loss alone was measured to leave the
    # friend and popularity weights of short histories off the metric's optimum
    band_friend_grid: str = "0.1,0.2,0.3,0.5,0.8"
    band_popularity_grid: str = "-0.4,-0.2,-0.1,0,0.1"
    band_social_grid: str = "0,0.03"
    band_popularity_alone_grid: str = "-0.2,-0.1,0,0.1,0.2,0.4"
    min_rerank_gain: float = 0.001  # a non-zero match weight must beat zero by this much
    # similar items: grids of the neighbour search's popularity weight and of the user weight
    similar_popularity_weights: str = "0,0.1,0.2,0.4,0.8,1.6"
    similar_user_weights: str = "0,0.5,1,2,4,8"
    history_bands: str = "0,1,2,3,5,10,20"  # first known-history length of each band
    max_band_users: int = 800  # validation users per band (seeded sample)
    min_band_users: int = 10  # fewer: the band takes the shorter band's weights
    refit_full: bool = True
    max_validation_users: int = 5000
    threads: int = 2
    engine: str = "implicit"  # ALS engine: implicit (this machine) or spark (docs/OPERATIONS.md)
    spark_master: str = "local[2]"
    spark_driver_memory: str = "1g"
    text: bool = True  # items.csv text → the item text encoder and vectors for untrained items
    text_quantize: bool = True  # int8 per-channel (see app/offline/text.py)
    text_ridge: float = 10.0  # these two are chosen on validation; used only without one
    text_label_weight: float = 0.5


@dataclass
class _Fitted:
    item_factors: torch.Tensor
    iterations: int
    scores: dict[str, float]
    iterations_run: int  # ALS iterations computed on the validation split


def carve_validation(histories: Histories, fraction: float, seed: int) -> tuple[
        Histories, dict[int, set[int]]]:
    """Hold out `fraction` of each user's items (at least one, never all); users with fewer
    than two items keep everything."""
    rng = np.random.default_rng(seed)
    kept: Histories = []
    held: dict[int, set[int]] = {}
    for u, history in enumerate(histories):
        n = len(history)
        k = min(n - 1, max(1, round(fraction * n))) if n >= 2 and fraction > 0 else 0
        if k <= 0:
            kept.append(list(history))
            continue
        out = set(rng.choice(n, size=k, replace=False).tolist())
        kept.append([p for j, p in enumerate(history) if j not in out])
        held[u] = {history[j][0] for j in sorted(out)}
    return kept, held


def _pairs(histories: Histories, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    users = np.fromiter((u for u, h in enumerate(histories) for _ in h), dtype=np.int64)
    items = np.fromiter((i for h in histories for i, _ in h), dtype=np.int64)
    values = np.fromiter((w for h in histories for _, w in h), dtype=np.float32) / scale
    return users, items, values


def _weight_scale(histories: Histories) -> float:
    weights = [w for h in histories for _, w in h if w > 0]
    return float(np.median(weights)) if weights else 1.0


def _friend_mean(data: Dataset, own: torch.Tensor, max_friends: int) -> tuple[
        torch.Tensor, torch.Tensor]:
    """Tie-weighted mean of friends' own vectors and whether the blend applies, per user — the
    serving blend's inputs (friends capped at `max_friends` as the evaluator does)."""
    rows, cols, ties = [], [], []
    for u, friends in enumerate(data.friends):
        for f, t in friends[:max_friends]:
            rows.append(u)
            cols.append(f)
            ties.append(t)
    n = data.n_users
    total = torch.zeros(n).index_add_(0, torch.as_tensor(rows, dtype=torch.int64),
                                      torch.as_tensor(ties, dtype=torch.float32))
    mean = torch.zeros_like(own)
    if rows:
        r = torch.as_tensor(rows, dtype=torch.int64)
        w = torch.as_tensor(ties, dtype=torch.float32)
        mean.index_add_(0, r, w[:, None] * own[torch.as_tensor(cols, dtype=torch.int64)])
    has = (total > 0).float()
    return mean / total.clamp_min(1e-12)[:, None], has


def _engaged(data: Dataset, users: list[int], max_friends: int, max_history: int) -> torch.Tensor:
    """(B, n_items) summed ties of each user's friends (capped as served) who have the item in
    their recent history (capped as served): the rerank's social-proof input."""
    rows, cols, ties = [], [], []
    for row, u in enumerate(users):
        for f, t in data.friends[u][:max_friends]:
            recent = [i for i, _ in data.histories[f][:max_history]]
            rows += [row] * len(recent)
            cols += recent
            ties += [t] * len(recent)
    out = torch.zeros(len(users), data.n_items)
    return out.index_put_((torch.as_tensor(rows, dtype=torch.int64),
                           torch.as_tensor(cols, dtype=torch.int64)),
                          torch.as_tensor(ties, dtype=torch.float32), accumulate=True)


def _seen_mask(histories: Histories, users: list[int], n_items: int) -> torch.Tensor:
    mask = torch.zeros(len(users), n_items, dtype=torch.bool)
    for row, u in enumerate(users):
        if histories[u]:
            mask[row, [i for i, _ in histories[u]]] = True
    return mask


def _targets(held: dict[int, set[int]], users: list[int], n_items: int) -> torch.Tensor:
    t = torch.zeros(len(users), n_items)
    for row, u in enumerate(users):
        t[row, list(held[u])] = 1.0
    return t


class _Validator:
    """Scores the served encoder (no social blend) on the held-out items, in user batches."""

    def __init__(self, kept: Histories, held: dict[int, set[int]], users: list[int],
                 n_items: int, max_history: int, batch: int = 1024) -> None:
        self.kept, self.users, self.max_history = kept, users, max_history
        # a block of scores stays within SCORE_BLOCK floats, whatever the catalogue's size
        self.batch = max(16, min(batch, SCORE_BLOCK // max(n_items, 1)))
        self.held = [held[u] for u in users]
        self.n_items = n_items

    def __call__(self, encoder: FoldInEncoder) -> dict[str, float]:
        vectors = encode_all(encoder, [self.kept[u] for u in self.users], self.max_history)
        items = torch.cat([encoder.factors, torch.zeros(self.n_items, 1)], dim=1)
        rankings = []
        for s in range(0, len(self.users), self.batch):
            block = self.users[s: s + self.batch]
            scores = (vectors[s: s + len(block)] @ items.T).masked_fill(
                _seen_mask(self.kept, block, self.n_items), float("-inf"))
            top = scores.topk(min(20, self.n_items), dim=1).indices.tolist()
            rankings += [UserRanking(u, row, relevant) for u, row, relevant
                         in zip(block, top, self.held[s: s + len(block)], strict=True)]
        m = metrics_at(rankings, (20,), self.n_items)
        return {key: m[key] for key in ("recall@20", "ndcg@20")}


def _solver(cfg: TrainConfig) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """fit_als of the configured engine."""
    if cfg.engine == "implicit":
        return fit_als
    if cfg.engine == "spark":
        from app.offline.spark_als import fit_als_spark

        return functools.partial(fit_als_spark, master=cfg.spark_master,
                                 driver_memory=cfg.spark_driver_memory)
    raise ValueError(f"engine {cfg.engine!r}: expected implicit or spark")


def _fit_with_validation(kept: Histories,
                         validator: Callable[[FoldInEncoder], dict[str, float]] | None,
                         n_users: int, n_items: int, scale: float, cfg: TrainConfig,
                         bar: tqdm[Any]) -> _Fitted:
    """ALS for at most `cfg.iterations` iterations, validated every `eval_every`: an
    evaluation counts as progress only when its NDCG@20 beats the best so far by
    `min_als_gain` (relative); `patience` evaluations without progress stop it. The chosen
    count is the last iteration that made progress."""
    users, items, values = _pairs(kept, scale)
    best: dict[str, Any] = {"ndcg": -1.0, "factors": None, "it": 0, "scores": {}}
    stale = [0]
    trace: list[tuple[int, float]] = []

    def callback(it: int, _user_f: torch.Tensor, item_f: torch.Tensor) -> bool:
        bar.update(1)
        trace.append((it, math.nan))
        if validator is None or (it % cfg.eval_every and it != cfg.iterations):
            return False
        scores = validator(FoldInEncoder(item_f, cfg.regularization, cfg.alpha, scale,
                                         cfg.encoder_cg_steps))
        bar.set_postfix(stage="als", it=it, val_ndcg=f"{scores['ndcg@20']:.4f}")
        trace[-1] = (it, scores["ndcg@20"])
        if scores["ndcg@20"] > best["ndcg"] * (1.0 + cfg.min_als_gain):
            best.update(ndcg=scores["ndcg@20"], factors=item_f.clone(), it=it, scores=scores)
            stale[0] = 0
        else:
            stale[0] += 1
        return stale[0] >= cfg.patience

    _, item_f = _solver(cfg)(users, items, values, n_users, n_items, cfg.dim,
                             cfg.regularization, cfg.alpha, cfg.iterations, cfg.seed,
                             cfg.cg_steps, callback, cfg.threads)
    log.info("ALS validation NDCG@20 by iteration: %s",
             ", ".join(f"{it} {v:.4f}" for it, v in trace if not math.isnan(v)))
    run = trace[-1][0] if trace else cfg.iterations
    if best["factors"] is None:
        return _Fitted(item_f, cfg.iterations, {}, run)
    return _Fitted(best["factors"], best["it"], best["scores"], run)


def _sample(users: list[int], size: int, seed: int) -> list[int]:
    """At most `size` of `users` (sorted), a seeded choice when there are more."""
    if len(users) <= size:
        return list(users)
    return sorted(np.random.default_rng([seed, size]).choice(users, size, replace=False).tolist())


def _band_histories(kept: Histories, users: list[int], lo: int, hi: float, cfg: TrainConfig,
                    ) -> dict[int, list[tuple[int, float]]]:
    """Validation users as the band sees them: each user with ≥ `lo` kept items, truncated to
    a seeded random length in [lo, hi] when longer (the test protocol's random choice of
    items), at most `max_band_users` of them."""
    rng = np.random.default_rng([cfg.seed, lo])
    eligible = [u for u in users if len(kept[u]) >= lo]
    if len(eligible) > cfg.max_band_users:
        eligible = sorted(rng.choice(eligible, cfg.max_band_users, replace=False).tolist())
    out = {}
    for u in eligible:
        n = len(kept[u]) if len(kept[u]) <= hi else int(rng.integers(lo, int(hi) + 1))
        out[u] = truncate(kept, [u], n, seed=cfg.seed)[u]
    return out


def _learn_band(band: HistoryBand, encoder: FoldInEncoder, pop: torch.Tensor,
                friend_mean: torch.Tensor, has: torch.Tensor, data: Dataset,
                known: dict[int, list[tuple[int, float]]], held: dict[int, set[int]],
                cfg: TrainConfig, bar: tqdm[Any]) -> HistoryBand:
    """friend_weight, the two popularity weights and social_weight of one band: Adam on the
    softmax cross-entropy of the served scores over each user's top-`candidates` retrieved
    items (what retrieval hands to the rerank), seen items excluded, each user once with their
    friends and once without (the no-friends prior). A full-catalogue softmax was measured to
    reward popularity that hurts the top-20; the candidate softmax is the ranking serving does.
    Candidates follow the current parameters (refreshed every 10 steps); friend and social
    weights stay ≥ 0 (projected step)."""
    users = list(known)
    idx = torch.as_tensor(users, dtype=torch.int64)
    d = encoder.factors.shape[1]
    own = encode_all(encoder, [known[u] for u in users], cfg.max_history)[:, :d]
    own_part = own @ encoder.factors.T
    friend_part = friend_mean[idx, :d] @ encoder.factors.T
    social = _engaged(data, users, cfg.max_friends, cfg.max_history)
    seen = _seen_mask(data.histories, users, data.n_items)
    targets = _targets(held, users, data.n_items)
    has_rows = torch.cat([has[idx], torch.zeros(len(users))])
    scorer = BandScorer(friend_weight=band.friend_weight,
                        popularity_weight=band.popularity_weight,
                        social_weight=band.social_weight)
    opt = torch.optim.Adam(scorer.parameters(), lr=cfg.lr)
    n_cand = min(cfg.candidates, data.n_items)
    sub: tuple[torch.Tensor, ...] = ()
    for step in range(cfg.epochs):
        if step % 10 == 0:
            with torch.no_grad():
                blocks = []
                for half in range(2):
                    h = has_rows[half * len(users): (half + 1) * len(users)]
                    r = scorer.retrieval(own_part, friend_part, pop[None, :], h)
                    cols = r.masked_fill(seen, float("-inf")).topk(n_cand, dim=1).indices
                    blocks.append([m.gather(1, cols) for m in (own_part, friend_part,
                                                               pop.expand(len(users), -1),
                                                               social, seen, targets)])
                parts = [torch.cat([a, b]) for a, b in zip(*blocks, strict=True)]
                rows = parts[5].sum(1) > 0
                sub = (*(p[rows] for p in parts[:4]), has_rows[rows], parts[4][rows],
                       parts[5][rows])
        opt.zero_grad()
        loss = scorer.loss(*sub)
        loss.backward()
        opt.step()
        with torch.no_grad():
            scorer.friend_weight.clamp_(min=0.0)
            scorer.social_weight.clamp_(min=0.0)
        bar.update(1)
        bar.set_postfix(stage=f"band {band.min_items}", loss=f"{loss.item():.4f}")
    return band.model_copy(update={
        "friend_weight": float(scorer.friend_weight.item()),
        "popularity_weight": float(scorer.popularity_weight.item()),
        "popularity_weight_alone": float(scorer.popularity_weight_alone.item()),
        "social_weight": float(scorer.social_weight.item())})


class _TopGain:
    """Validation Recall@k + NDCG@k of `users`' held-out items, averaged over the users, for
    candidate lists `cand` (B, C) ordered by `scores` (B, C)."""

    def __init__(self, held: dict[int, set[int]], users: list[int], n_items: int,
                 k: int = 20) -> None:
        self.k = k
        self.targets = _targets(held, users, n_items)
        self.n_rel = self.targets.sum(1)
        self.discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float32))
        self.ideal = torch.cumsum(self.discounts, 0)[(self.n_rel.clamp(max=k) - 1).long()]

    def __call__(self, scores: torch.Tensor, cand: torch.Tensor) -> float:
        top = scores.topk(self.k, dim=1).indices
        hits = self.targets.gather(1, cand.gather(1, top))
        return float((hits.sum(1) / self.n_rel + (hits * self.discounts).sum(1) /
                      self.ideal).mean())


def _grid_band(band: HistoryBand, states: dict[int, UserState], recommender: Recommender,
               data: Dataset, held: dict[int, set[int]], cfg: TrainConfig) -> HistoryBand:
    """The band's friend, popularity and social weights for users with friends, with the best
    validation Recall@20 + NDCG@20, ranked as `recommender` ranks (its item vectors, items
    without information left out, seen items excluded): the retrieval score over the
    catalogue, its top candidates reranked with the social-proof term. The band's softmax-fit
    weights are one of the candidates, so the choice never scores below them."""
    vectors = {u: s.vector for u, s in states.items() if s.vector is not None and
               s.friends is not None and float(s.friends.ties.sum()) > 0}
    users = list(vectors)
    if not users:
        return band
    items = torch.tensor(recommender.artifacts.item_vectors)  # a copy: the array is read-only
    own = torch.from_numpy(np.stack([vectors[u][:-1] for u in users]))
    mean = []
    social = torch.zeros(len(users), data.n_items)
    for row, u in enumerate(users):
        friends = states[u].friends
        assert friends is not None
        mean.append(friends.ties @ friends.vectors[:, :-1] / float(friends.ties.sum()))
        for tie, recent in zip(friends.ties.tolist(), friends.items.rows(len(friends.ids)),
                               strict=True):
            social[row, torch.tensor(recent, dtype=torch.int64)] += tie
    own_part = own @ items[:, :-1].T
    friend_part = torch.from_numpy(np.stack(mean)) @ items[:, :-1].T
    pop = items[:, -1]
    banned = _seen_mask(data.histories, users, data.n_items) | \
        ~torch.from_numpy(recommender.informed)[None, :]
    log_social = torch.log1p(social)
    gain = _TopGain(held, users, data.n_items)
    n_cand = min(recommender.manifest.rerank.candidates, data.n_items)
    learned = (band.friend_weight, band.popularity_weight, band.social_weight)
    best, choice = -1.0, learned
    for fw in sorted({learned[0], *_floats(cfg.band_friend_grid)}):
        base = own_part + fw * friend_part
        for pw in sorted({learned[1], *_floats(cfg.band_popularity_grid)}):
            scores, cand = (base + pw * pop).masked_fill(banned, float("-inf")).topk(
                n_cand, dim=1)
            extra = log_social.gather(1, cand)
            for sw in sorted({learned[2], *_floats(cfg.band_social_grid)}):
                g = gain(scores + sw * extra, cand)
                if g > best + 1e-9:
                    best, choice = g, (fw, pw, sw)
    return band.model_copy(update=dict(zip(
        ("friend_weight", "popularity_weight", "social_weight"), choice, strict=True)))


def _grid_alone(band: HistoryBand, states: dict[int, UserState], recommender: Recommender,
                data: Dataset, held: dict[int, set[int]], cfg: TrainConfig) -> HistoryBand:
    """The band's weights for a user without friends, `popularity_weight_alone` and
    `match_weight_alone`, with the best validation Recall@20 + NDCG@20 of the band's users
    with a history, friends unused: ranked as `recommender` ranks without friends (retrieval
    over the catalogue, its top candidates reranked with the match term, app/serving/rerank).
    The softmax fit's popularity weight is a grid point; a non-zero match weight must beat
    zero by `min_rerank_gain`, as with friends."""
    vectors = {u: s.vector for u, s in states.items() if s.vector is not None and
               len(s.history)}
    users = list(vectors)
    if not users:
        return band
    items = torch.tensor(recommender.artifacts.item_vectors)
    taste, pop = items[:, :-1], items[:, -1]
    own = torch.from_numpy(np.stack([vectors[u][:-1] for u in users]))
    own_part = own @ taste.T
    banned = _seen_mask(data.histories, users, data.n_items) | \
        ~torch.from_numpy(recommender.informed)[None, :]
    gain = _TopGain(held, users, data.n_items)
    n_cand = min(recommender.manifest.rerank.candidates, data.n_items)
    norms = torch.from_numpy(recommender.taste_norms)
    own_norms = own.norm(dim=1, keepdim=True).clamp_min(1e-12)
    weights = _floats(cfg.match_weights)
    best: dict[float, tuple[float, float]] = {}  # match weight → (gain, popularity weight)
    for pw in sorted({band.popularity_weight_alone, *_floats(cfg.band_popularity_alone_grid)}):
        scores, cand = (own_part + pw * pop).masked_fill(banned, float("-inf")).topk(
            n_cand, dim=1)
        cos = own_part.gather(1, cand) / (norms[cand] * own_norms).clamp_min(1e-12)
        match = cos / (1.0 + (taste[cand] - own[:, None, :]).norm(dim=2))
        for w in weights:
            g = gain(scores + w * match, cand)
            if w not in best or g > best[w][0] + 1e-9:
                best[w] = (g, pw)
    zero = 0.0 if 0.0 in best else weights[0]
    choice = max(best, key=lambda w: best[w][0])
    if best[choice][0] < best[zero][0] + cfg.min_rerank_gain:
        choice = zero
    return band.model_copy(update={"popularity_weight_alone": best[choice][1],
                                   "match_weight_alone": choice})


def _match_grid(folder: Path, data: Dataset, held: dict[int, set[int]],
                band_users: list[dict[int, list[tuple[int, float]]]], cfg: TrainConfig,
                bar: tqdm[Any]) -> tuple[list[HistoryBand], dict[str, float]]:
    """Per band, the rerank's match weight by a grid search through the real Recommender on
    the validation model (the band's own truncated users); returns the bands and the
    validation metrics of each band (full and no_social) and of the natural histories."""
    artifacts = ModelArtifacts.load(folder)
    bands = list(artifacts.manifest.bands)
    ks = (10, 20)

    def recommender() -> Recommender:
        manifest = artifacts.manifest.model_copy(update={"bands": bands})
        return Recommender(dataclasses.replace(artifacts, manifest=manifest))

    def run(states: dict[int, UserState], **flags: bool) -> dict[str, float]:
        test = {u: held[u] for u in states}
        return metrics_at(rank_users(recommender(), data, test, max(ks), states=states,
                                     **flags), ks, data.n_items)

    def gain(m: dict[str, float]) -> float:
        return m["recall@20"] + m["ndcg@20"]

    metrics: dict[str, float] = {}
    base = recommender()
    for b, known in enumerate(band_users):
        if not known:
            continue
        states = user_states(base, data, known, known=known)
        with torch.no_grad():
            bands[b] = _grid_alone(_grid_band(bands[b], states, base, data, held, cfg),
                                   states, base, data, held, cfg)
        results = {}
        for w in _floats(cfg.match_weights):
            bands[b] = bands[b].model_copy(update={"match_weight": w})
            results[w] = run(states)
            bar.update(1)
            bar.set_postfix(stage=f"match {bands[b].min_items}", w=w,
                            val_ndcg=f"{results[w]['ndcg@20']:.4f}")
        zero = results.get(0.0, next(iter(results.values())))
        choice = max(results, key=lambda w: gain(results[w]))
        if gain(results[choice]) < gain(zero) + cfg.min_rerank_gain:
            choice = 0.0 if 0.0 in results else next(iter(results))
        bands[b] = bands[b].model_copy(update={"match_weight": choice})
        alone = run(states, social=False)
        name = f"val_band{bands[b].min_items}"
        metrics |= {f"{name}_users": float(len(known))}
        metrics |= {f"{name}_{k}": v for k, v in results[choice].items() if "@20" in k}
        metrics |= {f"{name}_no_social_{k}": v for k, v in alone.items() if "@20" in k}
    natural = user_states(recommender(), data, held)
    metrics |= {f"val_{k}": v for k, v in run(natural).items()}
    metrics |= {f"val_no_social_{k}": v for k, v in run(natural, social=False).items()
                if k.startswith(("recall", "ndcg"))}
    metrics |= {f"val_no_rerank_{k}": v for k, v in run(natural, rerank_stage=False).items()
                if k.startswith(("recall", "ndcg"))}
    return bands, metrics


def _similar_grid(folder: Path, data: Dataset, held: dict[int, set[int]],
                  bands: list[HistoryBand], cfg: TrainConfig,
                  bar: tqdm[Any]) -> tuple[SimilarParams, dict[str, float]]:
    """The similar-items parameters by grid search through the real Recommender on the
    validation model: the popularity weight on the lists without the user, then the user
    weight on the personalised ones (Recall@20 + NDCG@20 of the held-out items)."""
    artifacts = ModelArtifacts.load(folder)
    users = sorted(u for u in held if data.histories[u])
    if len(users) > cfg.max_band_users:
        rng = np.random.default_rng(cfg.seed)
        users = sorted(rng.choice(users, cfg.max_band_users, replace=False).tolist())
    test = {u: held[u] for u in users}
    queries = similar_queries(data, test, cfg.seed)

    def recommender(params: SimilarParams) -> Recommender:
        manifest = artifacts.manifest.model_copy(update={"bands": bands, "similar": params})
        return Recommender(dataclasses.replace(artifacts, manifest=manifest))

    def run(params: SimilarParams, states: dict[int, UserState] | None) -> dict[str, float]:
        m = metrics_at(rank_similar(recommender(params), data, test, 20, queries, states),
                       (20,), data.n_items)
        bar.update(1)
        bar.set_postfix(stage="similar", popularity=params.popularity_weight,
                        user=params.user_weight)
        return m

    def gain(m: dict[str, float]) -> float:
        return m["recall@20"] + m["ndcg@20"]

    params = SimilarParams(candidates=cfg.candidates)
    alone = {w: run(params.model_copy(update={"popularity_weight": w}), None)
             for w in _floats(cfg.similar_popularity_weights)}
    params.popularity_weight = max(alone, key=lambda w: gain(alone[w]))
    states = user_states(recommender(params), data, test)
    personal = {w: run(params.model_copy(update={"user_weight": w}), states)
                for w in _floats(cfg.similar_user_weights)}
    params.user_weight = max(personal, key=lambda w: gain(personal[w]))
    metrics = {"val_similar_users": float(len(test))}
    for name, results, w in (("item", alone, params.popularity_weight),
                             ("user", personal, params.user_weight)):
        metrics |= {f"val_similar_{name}_{k}": v for k, v in results[w].items()
                    if k.startswith(("recall", "ndcg"))}
    return params, metrics


def _floats(spec: str) -> list[float]:
    return [float(x) for x in spec.split(",") if x.strip()] or [0.0]


def _item_vectors(factors: torch.Tensor, counts: np.ndarray) -> np.ndarray:
    """[y, c]: taste factors (all-zero for an item without interactions, whose factor is only
    its random start shrunk by regularization) and the popularity feature."""
    y = factors.detach().numpy().copy()
    y[counts == 0] = 0.0
    return np.concatenate([y, popularity_feature(counts)[:, None]], axis=1).astype(np.float32)


def _taste(users: torch.Tensor) -> np.ndarray:
    """User vectors with the popularity coordinate zeroed: new products are ranked among
    themselves by taste, their popularity feature being equal."""
    out = users.detach().numpy().copy()
    out[:, -1] = 0.0
    return out


def _export(out_dir: Path, data: Dataset, encoder: FoldInEncoder, counts: np.ndarray,
            cfg: TrainConfig, bands: list[HistoryBand], metrics: dict[str, float],
            data_fingerprint: str, info: dict[str, float | int | str],
            text: ItemText | None = None, ridge: float = 0.0,
            label_weight: float = 0.0, similar: SimilarParams | None = None) -> Manifest:
    """`text`: items without training interactions get taste vectors projected from their
    text (their popularity feature stays that of an item nobody interacted with)."""
    vectors = _item_vectors(encoder.factors, counts)
    write_text = sources = None
    if text is not None:
        vectors, sources, projection = text.fill(
            vectors, counts > 0, ridge, label_weight,
            popularity=float(popularity_feature(np.zeros(1))[0]))
        write_text = text.writer(projection)
    queries = None
    if default_kind(data.n_items) != "flat":  # an approximate index: tuned for user vectors
        users = [h for h in data.histories if h][:2000]
        with torch.no_grad():
            queries = encode_all(encoder, users, cfg.max_history).numpy()
        queries[:, -1] = [band_for(bands, min(len(h), cfg.max_history)).popularity_weight
                          for h in users]
    return export_artifacts(
        out_dir, data=data, item_vectors=vectors, write_text=write_text, vector_sources=sources,
        write_encoder=lambda folder: export_onnx(encoder, folder / ENCODER_FILE).name,
        max_history=cfg.max_history, blend=BlendParams(max_friends=cfg.max_friends),
        rerank=RerankParams(candidates=cfg.candidates), bands=bands,
        event_weights=dict(DEFAULT_EVENT_WEIGHTS),
        data_fingerprint=data_fingerprint, model_info=info, metrics=metrics, queries=queries,
        similar=similar)


def _bands(cfg: TrainConfig) -> list[tuple[int, float]]:
    starts = sorted({int(x) for x in _floats(cfg.history_bands)} | {0})
    return list(zip(starts, [s - 1 for s in starts[1:]] + [math.inf], strict=True))


def _bar(desc: str, total: int, progress: bool) -> tqdm[Any]:
    return tqdm(total=total, desc=desc, disable=not progress, unit="step", leave=False)


def train(data_dir: Path, out_dir: Path, config: TrainConfig = TrainConfig(),  # noqa: B008
          progress: bool = True, clock: StageClock | None = None) -> Manifest:
    """`clock` (optional) also receives the export stage, which the manifest cannot record
    (it is the manifest's own writing); the manifest has every earlier stage's seconds and
    peak memory in its metrics."""
    with gc_frozen_scope():
        return _train(data_dir, out_dir, config, progress, clock)


def _train(data_dir: Path, out_dir: Path, cfg: TrainConfig, progress: bool,
           clock: StageClock | None) -> Manifest:
    _solver(cfg)  # an unknown engine fails before the data is read
    started = time.perf_counter()
    clock = clock if clock is not None else StageClock()
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    with clock("load"), gc_paused():
        data = load_dataset(data_dir, DEFAULT_EVENT_WEIGHTS, progress)
    read = [interactions_file(data_dir)] + [data_dir / n for n in ("social.csv", "items.csv")
                                            if (data_dir / n).is_file()]
    if not any(data.histories):
        raise ValueError(f"{data_dir}: no interactions to train on")
    with clock("prepare"), gc_paused():
        scale = _weight_scale(data.histories)
        kept, held = carve_validation(data.histories, cfg.validation_fraction, cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        val_users = sorted(held)
        if len(val_users) > cfg.max_validation_users:
            val_users = sorted(rng.choice(val_users, cfg.max_validation_users,
                                          replace=False).tolist())
        held = {u: held[u] for u in val_users}
        validate = bool(val_users)
        ranges = _bands(cfg)
        grid_size = len(_floats(cfg.match_weights))
        similar_grid = len(_floats(cfg.similar_popularity_weights)) + len(
            _floats(cfg.similar_user_weights))
        counts_kept = item_counts(kept, data.n_items)

    # 1-2. ALS on the kept pairs, iterations chosen on validation through the served encoder.
    with clock("als"), _bar("als", cfg.iterations, progress) as bar:
        als_users = _sample(val_users, cfg.als_validation_users, cfg.seed)
        validator = _Validator(kept, held, als_users, data.n_items, cfg.max_history) \
            if validate else None
        fitted = _fit_with_validation(kept, validator, data.n_users, data.n_items, scale, cfg,
                                      bar)
    encoder = FoldInEncoder(fitted.item_factors, cfg.regularization, cfg.alpha, scale,
                            cfg.encoder_cg_steps)
    metrics: dict[str, float] = {"val_users": float(len(val_users)),
                                 "val_als_users": float(len(als_users) if validate else 0),
                                 "als_iterations": float(fitted.iterations),
                                 "als_iterations_run": float(fitted.iterations_run)}
    bands = [HistoryBand(min_items=lo) for lo, _ in ranges]
    val_data = dataclasses.replace(data, histories=kept)
    with clock("text"):  # every described item's text embedding
        text = ItemText.prepare(data, cfg.text_quantize, progress=progress) \
            if cfg.text and has_text(data) else None
    ridge, label_weight = cfg.text_ridge, cfg.text_label_weight
    similar = SimilarParams(candidates=cfg.candidates)
    if validate:
        metrics |= {f"val_encoder_{k}": v for k, v in fitted.scores.items()}
        # 3. per history band, the blend, priors and social weight on truncated users.
        with clock("bands"), _bar("bands", len(ranges) * cfg.epochs, progress) as bar:
            own = encode_all(encoder, kept, cfg.max_history)
            friend_mean, has = _friend_mean(val_data, own, cfg.max_friends)
            pop = torch.from_numpy(popularity_feature(counts_kept))
            band_users = [_band_histories(kept, val_users, lo, hi, cfg) for lo, hi in ranges]
            for b, known in enumerate(band_users):
                if len(known) < cfg.min_band_users:  # too few to learn from: the shorter band's
                    bands[b] = (bands[b - 1] if b else bands[b]).model_copy(
                        update={"min_items": bands[b].min_items})
                    band_users[b] = {}
                    bar.update(cfg.epochs)
                    continue
                start = bands[b - 1] if b else bands[b]
                bands[b] = _learn_band(start.model_copy(update={"min_items": bands[b].min_items}),
                                       encoder, pop, friend_mean, has, val_data, known, held, cfg,
                                       bar)
        if text is not None:  # the projection, on trained items treated as new
            with clock("text"):
                ridge, label_weight, grid = text.choose(
                    _item_vectors(encoder.factors, counts_kept), counts_kept > 0, kept,
                    lambda hs: _taste(encode_all(encoder, hs, cfg.max_history)), cfg.seed)
            log.info("text projection on validation (R@20 + N@20 of held-out items as new): %s",
                     grid)
            metrics |= {"text_ridge": ridge, "text_label_weight": label_weight}
            # R@20 + N@20 of the trained items held out as new, best ridge per label weight
            for weight in sorted({w for _, w in grid}):
                metrics[f"val_cold_r+n@20_labels_{weight:g}"] = max(
                    v for (_, w), v in grid.items() if w == weight)
        # 4. per band, the match weight through the real Recommender on the validation model.
        with clock("match"), tempfile.TemporaryDirectory(prefix="socialrec-val-") as tmp, \
                _bar("match", len(ranges) * grid_size + similar_grid, progress) as bar:
            _export(Path(tmp) / "model", val_data, encoder, counts_kept, cfg, bands, {},
                    "validation", {"architecture": "als-foldin"}, text, ridge, label_weight)
            bands, val_metrics = _match_grid(Path(tmp) / "model", val_data, held, band_users,
                                             cfg, bar)
            similar, similar_metrics = _similar_grid(Path(tmp) / "model", val_data, held,
                                                     bands, cfg, bar)
        metrics |= val_metrics | similar_metrics
    # 5. refit on everything with the chosen iterations; keep the chosen serving weights.
    if cfg.refit_full:
        with clock("refit"), _bar("refit", fitted.iterations, progress) as bar:
            users, items, values = _pairs(data.histories, scale)

            def tick(it: int, *_: torch.Tensor) -> bool:
                bar.update(1)
                return False

            _, item_f = _solver(cfg)(users, items, values, data.n_users, data.n_items,
                                     cfg.dim, cfg.regularization, cfg.alpha, fitted.iterations,
                                     cfg.seed, cfg.cg_steps, tick, cfg.threads)
            encoder = FoldInEncoder(item_f, cfg.regularization, cfg.alpha, scale,
                                    cfg.encoder_cg_steps)
    with clock("encoder"):
        check = _sample(list(range(len(data.histories))), cfg.encoder_check_users, cfg.seed)
        encoder.cg_steps, gap = fewest_cg_steps(
            encoder, [data.histories[u] for u in check], cfg.max_history, cfg.encoder_tolerance)
    metrics["encoder_fold_in_gap"] = gap
    info: dict[str, float | int | str] = {
        "architecture": "als-foldin", "factors": cfg.dim, "regularization": cfg.regularization,
        "alpha": cfg.alpha, "weight_scale": scale, "iterations": fitted.iterations,
        "iteration_budget": cfg.iterations,
        "encoder_cg_steps": encoder.cg_steps, "seed": cfg.seed,
        "refit_full": int(cfg.refit_full), "engine": cfg.engine}
    counts = item_counts(data.histories, data.n_items) if cfg.refit_full else counts_kept
    metrics["train_seconds"] = time.perf_counter() - started
    metrics |= clock.metrics()
    metrics = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    with clock("export"):
        manifest = _export(out_dir, data, encoder, counts, cfg, bands, metrics,
                           fingerprint(read), info, text, ridge, label_weight, similar)
    # One readable line; the whole metrics dict is in the manifest and the training report.
    log.info("trained %s in %.1f s: validation R@20 %.4f, NDCG@20 %.4f",
             manifest.model_version, metrics["train_seconds"],
             metrics.get("val_recall@20", math.nan), metrics.get("val_ndcg@20", math.nan))
    log.debug("training metrics: %s", metrics)
    return manifest
