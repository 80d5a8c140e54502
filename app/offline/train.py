"""`socialrec train`: fit the model on a dataset folder, pick everything on a validation split
carved out of the training data, refit on all of it and export the artifacts (docs/ARTIFACTS.md).

Steps (test.csv is never read):

1. validation: for every user with ≥ 2 items, hold out `validation_fraction` of them (seeded; at
   least one item stays in the history);
2. weighted ALS on the remaining pairs; the number of iterations is chosen by validation NDCG@20
   of the *served* encoder (ONNX-equivalent fold-in of the capped history), with early stopping;
3. the served scoring `(ũ + fw·Σ t_f ũ_f/Σ t_f)·[y, β·log1p(n)]` is fitted on the held-out items
   (softmax cross-entropy, seen items excluded as in serving): `friend_weight` and the item-bias
   strength β are learned parameters;
4. the rerank weights are chosen by a grid search through the real `Recommender` over the
   validation model's exported artifacts;
5. ALS is refitted on all training pairs with the chosen iterations, β and fw are kept, and
   the artifacts are exported with the validation metrics in the manifest. Refitting was
   measured with a nested split on lastfm-split: item factors from 80 % instead of 64 % of
   train scored R@20 0.259 vs 0.248 on the same validation items (+4.5 %), so the final model
   is the refit one, not the validation-trained one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from app.config import DEFAULT_EVENT_WEIGHTS
from app.offline.dataset import Dataset, interactions_file, load_dataset
from app.offline.evaluate import metrics_at, rank_users, user_states
from app.offline.export import default_kind, export_artifacts, fingerprint
from app.offline.model import (
    ENCODER_FILE,
    FoldInEncoder,
    SocialScorer,
    encode_all,
    export_onnx,
    fit_als,
)
from app.serving.artifacts import BlendParams, Manifest, ModelArtifacts, RerankParams
from app.serving.pipeline import Recommender

log = logging.getLogger(__name__)

Histories = list[list[tuple[int, float]]]


@dataclass
class TrainConfig:
    """Defaults were chosen on a validation split of lastfm-split's train.csv (see the module
    docstring and docs/BENCHMARKS.md); no flag is needed for a good model."""

    dim: int = 128
    regularization: float = 50.0
    alpha: float = 10.0
    iterations: int = 30  # ALS iterations at most; the best count is chosen on validation
    eval_every: int = 1
    patience: int = 5  # evaluations without improvement before ALS stops early
    cg_steps: int = 3  # CG steps per ALS half-iteration
    encoder_cg_steps: int = 12  # CG steps of the fold-in inside the ONNX encoder
    epochs: int = 60  # Adam steps fitting friend_weight and the item-bias strength
    lr: float = 0.05
    learn_bias: bool = True
    learn_friend_weight: bool = True
    seed: int = 7
    max_history: int = 50
    max_friends: int = 100
    validation_fraction: float = 0.2
    candidates: int = 200
    match_weights: str = "0,0.2,0.5,1,2"  # rerank grid (comma-separated)
    social_weights: str = "0,0.01,0.03"
    min_rerank_gain: float = 0.001  # a non-zero rerank weight must beat zero by this much
    refit_full: bool = True
    max_validation_users: int = 5000
    threads: int = 2


@dataclass
class _Fitted:
    item_factors: torch.Tensor
    iterations: int
    scores: dict[str, float]


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


def _item_counts(histories: Histories, n_items: int) -> np.ndarray:
    counts = np.zeros(n_items, dtype=np.float32)
    for h in histories:
        for i, _ in h:
            counts[i] += 1.0
    return counts


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


def _ranking_metrics(scores: torch.Tensor, seen: torch.Tensor, held: list[set[int]],
                     k: int = 20) -> dict[str, float]:
    """Recall@k / NDCG@k (docs/CLI.md) of a dense score block (seen items excluded)."""
    top = scores.masked_fill(seen, float("-inf")).topk(min(k, scores.shape[1]), dim=1).indices
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recall = ndcg = 0.0
    for row, relevant in zip(top.tolist(), held, strict=True):
        hits = np.fromiter((i in relevant for i in row), dtype=bool, count=len(row))
        recall += hits.sum() / len(relevant)
        ndcg += discounts[: len(row)][hits].sum() / discounts[: min(k, len(relevant))].sum()
    n = max(len(held), 1)
    return {f"recall@{k}": recall / n, f"ndcg@{k}": ndcg / n}


class _Validator:
    """Scores the served encoder (no social blend) on the held-out items, in user batches."""

    def __init__(self, kept: Histories, held: dict[int, set[int]], users: list[int],
                 n_items: int, max_history: int, batch: int = 1024) -> None:
        self.kept, self.users, self.max_history, self.batch = kept, users, max_history, batch
        self.held = [held[u] for u in users]
        self.n_items = n_items

    def __call__(self, encoder: FoldInEncoder) -> dict[str, float]:
        vectors = encode_all(encoder, [self.kept[u] for u in self.users], self.max_history)
        items = torch.cat([encoder.factors, torch.zeros(self.n_items, 1)], dim=1)
        totals = {"recall@20": 0.0, "ndcg@20": 0.0}
        for s in range(0, len(self.users), self.batch):
            block = self.users[s: s + self.batch]
            seen = _seen_mask(self.kept, block, self.n_items)
            m = _ranking_metrics(vectors[s: s + len(block)] @ items.T, seen,
                                 self.held[s: s + len(block)])
            for key in totals:
                totals[key] += m[key] * len(block)
        return {key: v / max(len(self.users), 1) for key, v in totals.items()}


def _fit_with_validation(kept: Histories, validator: _Validator | None, n_users: int,
                         n_items: int, scale: float, cfg: TrainConfig, bar: tqdm[Any]) -> _Fitted:
    users, items, values = _pairs(kept, scale)
    best: dict[str, Any] = {"ndcg": -1.0, "factors": None, "it": 0, "scores": {}}
    stale = [0]

    def callback(it: int, _user_f: torch.Tensor, item_f: torch.Tensor) -> bool:
        bar.update(1)
        if validator is None or (it % cfg.eval_every and it != cfg.iterations):
            return False
        scores = validator(FoldInEncoder(item_f, cfg.regularization, cfg.alpha, scale,
                                         cfg.encoder_cg_steps))
        bar.set_postfix(stage="als", it=it, val_ndcg=f"{scores['ndcg@20']:.4f}")
        if scores["ndcg@20"] > best["ndcg"]:
            best.update(ndcg=scores["ndcg@20"], factors=item_f.clone(), it=it, scores=scores)
            stale[0] = 0
        else:
            stale[0] += 1
        return stale[0] >= cfg.patience

    _, item_f = fit_als(users, items, values, n_users, n_items, cfg.dim, cfg.regularization,
                        cfg.alpha, cfg.iterations, cfg.seed, cfg.cg_steps, callback)
    if best["factors"] is None:
        return _Fitted(item_f, cfg.iterations, {})
    return _Fitted(best["factors"], best["it"], best["scores"])


def _learn_scorer(scorer: SocialScorer, own: torch.Tensor, friend_mean: torch.Tensor,
                  has: torch.Tensor, kept: Histories, held: dict[int, set[int]],
                  users: list[int], cfg: TrainConfig, bar: tqdm[Any]) -> None:
    """Fit friend_weight, bias strength and temperature on the held-out items: Adam on the
    softmax cross-entropy of the served scores over each user's top-`candidates` items (what
    retrieval hands to the rerank), seen items excluded. A full-catalogue softmax was measured
    to reward popularity that hurts the top-20; the candidate softmax is the ranking that serving
    actually does. The candidate sets follow the current parameters (refreshed every 10 steps);
    friend_weight is kept ≥ 0 (projected step)."""
    scorer.friend_weight.requires_grad_(cfg.learn_friend_weight)
    scorer.bias_strength.requires_grad_(cfg.learn_bias)
    params = [p for p in scorer.parameters() if p.requires_grad]
    idx = torch.as_tensor(users, dtype=torch.int64)
    with torch.no_grad():
        own_part, friend_part = scorer.parts(own[idx], friend_mean[idx])
    has_v = has[idx]
    seen = _seen_mask(kept, users, scorer.factors.shape[0])
    targets = _targets(held, users, scorer.factors.shape[0])
    n_cand = min(cfg.candidates, scorer.factors.shape[0])
    opt = torch.optim.Adam(params, lr=cfg.lr)
    cols = torch.zeros(len(users), n_cand, dtype=torch.int64)
    for step in range(cfg.epochs):
        if step % 10 == 0:
            with torch.no_grad():
                full = scorer.from_parts(own_part, friend_part, has_v).masked_fill(
                    seen, float("-inf"))
                cols = full.topk(n_cand, dim=1).indices
            sub_t = targets.gather(1, cols)
            rows = sub_t.sum(1) > 0
            sub_own, sub_friend = own_part.gather(1, cols)[rows], friend_part.gather(1, cols)[rows]
            sub_seen = seen.gather(1, cols)[rows]
            sub_t, sub_has = sub_t[rows], has_v[rows]
            log_counts = scorer.log_counts[cols[rows]]
        opt.zero_grad()
        loss = scorer.loss(sub_own, sub_friend, sub_has, sub_seen, sub_t, log_counts)
        loss.backward()
        opt.step()
        with torch.no_grad():
            scorer.friend_weight.clamp_(min=0.0)
        bar.update(1)
        bar.set_postfix(stage="blend", loss=f"{loss.item():.4f}",
                        fw=f"{scorer.friend_weight.item():.3f}",
                        bias=f"{scorer.bias_strength.item():.3f}")


def _rerank_grid(folder: Path, data: Dataset, held: dict[int, set[int]], cfg: TrainConfig,
                 bar: tqdm[Any]) -> tuple[RerankParams, dict[str, float]]:
    """Grid search of the rerank weights through the real Recommender on the validation
    model; returns the chosen params and the validation metrics of full/no_social/no_rerank."""
    artifacts = ModelArtifacts.load(folder)
    base = Recommender(artifacts)
    states = user_states(base, data, held)
    ks = (10, 20)

    def run(params: RerankParams, **flags: bool) -> dict[str, float]:
        manifest = artifacts.manifest.model_copy(update={"rerank": params})
        rec = Recommender(dataclasses.replace(artifacts, manifest=manifest))
        ranked = rank_users(rec, data, held, max(ks), states=states, **flags)
        return metrics_at(ranked, ks, data.n_items)

    grid = [(m, s) for m in _floats(cfg.match_weights) for s in _floats(cfg.social_weights)]
    results: dict[tuple[float, float], dict[str, float]] = {}
    for m, s in grid:
        results[(m, s)] = run(RerankParams(candidates=cfg.candidates, match_weight=m,
                                           social_weight=s))
        bar.update(1)
        bar.set_postfix(stage="rerank", match=m, social=s,
                        val_ndcg=f"{results[(m, s)]['ndcg@20']:.4f}")

    def gain(key: tuple[float, float]) -> float:
        return results[key]["recall@20"] + results[key]["ndcg@20"]

    zero = (0.0, 0.0) if (0.0, 0.0) in results else grid[0]
    choice = max(results, key=gain)
    if gain(choice) < gain(zero) + cfg.min_rerank_gain:
        choice = zero
    params = RerankParams(candidates=cfg.candidates, match_weight=choice[0],
                          social_weight=choice[1])
    metrics = {f"val_{k}": v for k, v in results[choice].items()}
    metrics |= {f"val_no_social_{k}": v for k, v in run(params, social=False).items()
                if k.startswith(("recall", "ndcg"))}
    metrics |= {f"val_no_rerank_{k}": v for k, v in results[zero].items()
                if k.startswith(("recall", "ndcg"))}
    return params, metrics


def _floats(spec: str) -> list[float]:
    return [float(x) for x in spec.split(",") if x.strip()] or [0.0]


def _export(out_dir: Path, data: Dataset, encoder: FoldInEncoder, scorer: SocialScorer,
            cfg: TrainConfig, rerank: RerankParams, metrics: dict[str, float],
            data_fingerprint: str, info: dict[str, float | int | str]) -> Manifest:
    queries = None
    if default_kind(data.n_items) != "flat":  # an approximate index: tuned for user vectors
        with torch.no_grad():
            queries = encode_all(encoder, [h for h in data.histories if h][:2000],
                                 cfg.max_history).numpy()
    return export_artifacts(
        out_dir, data=data, item_vectors=scorer.item_vectors().detach().numpy(),
        write_encoder=lambda folder: export_onnx(encoder, folder / ENCODER_FILE).name,
        max_history=cfg.max_history,
        blend=BlendParams(friend_weight=float(scorer.friend_weight.item()),
                          max_friends=cfg.max_friends),
        rerank=rerank, event_weights=dict(DEFAULT_EVENT_WEIGHTS),
        data_fingerprint=data_fingerprint, model_info=info, metrics=metrics, queries=queries)


def train(data_dir: Path, out_dir: Path, config: TrainConfig = TrainConfig(),  # noqa: B008
          progress: bool = True) -> Manifest:
    cfg = config
    started = time.perf_counter()
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    data = load_dataset(data_dir, DEFAULT_EVENT_WEIGHTS)
    read = [interactions_file(data_dir)] + [data_dir / n for n in ("social.csv", "items.csv")
                                            if (data_dir / n).is_file()]
    if not any(data.histories):
        raise ValueError(f"{data_dir}: no interactions to train on")
    scale = _weight_scale(data.histories)
    kept, held = carve_validation(data.histories, cfg.validation_fraction, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    val_users = sorted(held)
    if len(val_users) > cfg.max_validation_users:
        val_users = sorted(rng.choice(val_users, cfg.max_validation_users, replace=False).tolist())
    held = {u: held[u] for u in val_users}
    validate = bool(val_users)
    grid_size = len(_floats(cfg.match_weights)) * len(_floats(cfg.social_weights))
    total = cfg.iterations * (2 if cfg.refit_full else 1) + (
        cfg.epochs + grid_size if validate else 0)
    bar = tqdm(total=total, desc="train", disable=not progress, unit="step")
    counts_kept = _item_counts(kept, data.n_items)

    # 1-2. ALS on the kept pairs, iterations chosen on validation through the served encoder.
    validator = _Validator(kept, held, val_users, data.n_items, cfg.max_history) \
        if validate else None
    fitted = _fit_with_validation(kept, validator, data.n_users, data.n_items, scale, cfg, bar)
    encoder = FoldInEncoder(fitted.item_factors, cfg.regularization, cfg.alpha, scale,
                            cfg.encoder_cg_steps)
    scorer = SocialScorer(fitted.item_factors, counts_kept)
    metrics: dict[str, float] = {"val_users": float(len(val_users)),
                                 "als_iterations": float(fitted.iterations)}
    rerank = RerankParams(candidates=cfg.candidates)
    val_data = dataclasses.replace(data, histories=kept)
    if validate:
        metrics |= {f"val_encoder_{k}": v for k, v in fitted.scores.items()}
        # 3. learn friend_weight and the bias strength on the served blend + scoring.
        own = encode_all(encoder, kept, cfg.max_history)
        friend_mean, has = _friend_mean(val_data, own, cfg.max_friends)
        _learn_scorer(scorer, own, friend_mean, has, kept, held, val_users, cfg, bar)
        # 4. rerank weights through the real Recommender on the validation model.
        with tempfile.TemporaryDirectory(prefix="socialrec-val-") as tmp:
            _export(Path(tmp) / "model", val_data, encoder, scorer, cfg, rerank, {}, "validation",
                    {"architecture": "als-foldin"})
            rerank, val_metrics = _rerank_grid(Path(tmp) / "model", val_data, held, cfg, bar)
        metrics |= val_metrics
    # 5. refit on everything with the chosen iterations; keep the learned scorer parameters.
    if cfg.refit_full:
        users, items, values = _pairs(data.histories, scale)
        steps = [0]

        def tick(it: int, *_: torch.Tensor) -> bool:
            bar.update(1)
            bar.set_postfix(stage="refit", it=it)
            steps[0] = it
            return False

        _, item_f = fit_als(users, items, values, data.n_users, data.n_items, cfg.dim,
                            cfg.regularization, cfg.alpha, fitted.iterations, cfg.seed,
                            cfg.cg_steps, tick)
        bar.update(cfg.iterations - steps[0])
        encoder = FoldInEncoder(item_f, cfg.regularization, cfg.alpha, scale,
                                cfg.encoder_cg_steps)
        final = SocialScorer(item_f, _item_counts(data.histories, data.n_items),
                             friend_weight=scorer.friend_weight.item(),
                             bias_strength=scorer.bias_strength.item())
        scorer = final
    bar.close()
    metrics |= {"friend_weight": float(scorer.friend_weight.item()),
                "bias_strength": float(scorer.bias_strength.item()),
                "train_seconds": time.perf_counter() - started}
    info: dict[str, float | int | str] = {
        "architecture": "als-foldin", "factors": cfg.dim, "regularization": cfg.regularization,
        "alpha": cfg.alpha, "weight_scale": scale, "iterations": fitted.iterations,
        "encoder_cg_steps": cfg.encoder_cg_steps, "seed": cfg.seed,
        "refit_full": int(cfg.refit_full)}
    metrics = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    manifest = _export(out_dir, data, encoder, scorer, cfg, rerank, metrics,
                       fingerprint(read), info)
    log.info("trained %s in %.1f s: %s", manifest.model_version, metrics["train_seconds"],
             metrics)
    return manifest
