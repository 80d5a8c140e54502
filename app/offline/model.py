"""The offline model: implicit-feedback matrix factorisation with an inductive fold-in encoder,
item biases, and the social blend weight — plus the ONNX export of the user encoder.

Why this shape (measured on a validation split carved out of lastfm-split's train.csv, see
docs/BENCHMARKS.md and app/offline/train.py): a well-regularised weighted ALS beat denoising
softmax encoders trained under the 5-minute CPU budget, and an ALS user vector is an exact
function of the user's history, so the encoder is *inductive* by construction:

    u(h) = argmin_u  Σ_i c_i (p_i − u·y_i)² + λ‖u‖²   with c_i = 1 + α·w_i/w̄ on the history,
           c = 1, p = 0 on every other item
         = (YᵀY + λI + α Σ_{i∈h} (w_i/w̄) y_i y_iᵀ)⁻¹ Σ_{i∈h} (1 + α w_i/w̄) y_i

The D×D solve is done inside the ONNX graph by a fixed number of preconditioned conjugate-gradient
steps (preconditioner (YᵀY + λI)⁻¹, a constant): the system is the constant matrix plus a rank-≤L
update, so PCG converges in a handful of steps and the graph is only MatMul/Gather/elementwise
ops. An empty history gives u = 0 (every division is guarded), never NaN.

The encoder output is `[u, 1]` and the item vectors `[y, c]` with c the popularity feature; serving
blends `[u, 1]` with friends' vectors (app/serving/blend.py) and sets the last coordinate to the
user's history band's popularity weight, so the prior is part of the inner product FAISS computes.
A fold-in from few items is short (about an eighth of a full history's length from one item on
lastfm), so how much the taste, the friends and the prior count differs with the history length:
`BandScorer` is the served scoring of one band, where those weights are learned.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.serving.artifacts import ENCODER_INPUTS, ENCODER_OUTPUT

ENCODER_FILE = "encoder.onnx"
OPSET = 17
_EPS = 1e-20


def _gram(factors: torch.Tensor, regularization: float) -> torch.Tensor:
    f = factors.double()
    return f.T @ f + regularization * torch.eye(f.shape[1], dtype=torch.float64)


class FoldInEncoder(nn.Module):
    """History (item ids, event weights; weight 0 = padding) → user vector `[u, 1]` (B, D+1)."""

    factors: torch.Tensor  # buffers, declared for the type checker
    gram: torch.Tensor
    gram_inv: torch.Tensor

    def __init__(self, item_factors: np.ndarray | torch.Tensor, regularization: float,
                 alpha: float, weight_scale: float = 1.0, cg_steps: int = 12) -> None:
        super().__init__()
        factors = torch.as_tensor(np.asarray(item_factors), dtype=torch.float32)
        gram = _gram(factors, regularization)
        self.register_buffer("factors", factors.contiguous())
        self.register_buffer("gram", gram.float())
        self.register_buffer("gram_inv", torch.linalg.inv(gram).float())
        self.alpha = float(alpha) / float(weight_scale)
        self.cg_steps = int(cg_steps)

    @property
    def dim(self) -> int:
        return int(self.factors.shape[1]) + 1

    def forward(self, item_ids: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
        present = (item_weights > 0).to(torch.float32)  # (B, L)
        conf = self.alpha * torch.clamp(item_weights, min=0.0) * present  # c − 1
        hist = self.factors[item_ids] * present.unsqueeze(-1)  # (B, L, D)
        rhs = ((1.0 + conf) * present).unsqueeze(1).matmul(hist).squeeze(1)  # (B, D)

        def apply(p: torch.Tensor) -> torch.Tensor:
            proj = hist.matmul(p.unsqueeze(-1)).squeeze(-1) * conf  # (B, L)
            return p.matmul(self.gram) + proj.unsqueeze(1).matmul(hist).squeeze(1)

        x = torch.zeros_like(rhs)
        r = rhs
        z = r.matmul(self.gram_inv)
        p = z
        rz = (r * z).sum(dim=1, keepdim=True)
        for _ in range(self.cg_steps):
            ap = apply(p)
            step = rz / torch.clamp((p * ap).sum(dim=1, keepdim=True), min=_EPS)
            x = x + step * p
            r = r - step * ap
            z = r.matmul(self.gram_inv)
            rz_next = (r * z).sum(dim=1, keepdim=True)
            p = z + (rz_next / torch.clamp(rz, min=_EPS)) * p
            rz = rz_next
        return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


@torch.no_grad()
def fewest_cg_steps(encoder: FoldInEncoder, histories: list[list[tuple[int, float]]],
                    max_history: int, tolerance: float) -> tuple[int, float]:
    """The fewest CG steps (up to `encoder.cg_steps`) whose user vectors for `histories` are
    all within `tolerance` of `encoder`'s, relatively (‖Δu‖ / ‖u‖; a vector under a thousandth
    of the mean length, as from items without interactions, is ~0 and measured against that),
    and that largest gap. The served encoder pays for every step on every encode, whatever
    the history (a step is ~25 ONNX nodes, each with a fixed cost), while PCG from the exact
    preconditioner of the constant part converges in a few steps."""
    reference = encode_all(encoder, histories, max_history)[:, :-1]
    norms = reference.norm(dim=1)
    norms = torch.clamp(norms, min=max(1e-3 * float(norms.mean()) if len(norms) else 0.0, _EPS))
    for steps in range(1, encoder.cg_steps):
        fewer = copy.copy(encoder)
        fewer.cg_steps = steps
        gaps = (encode_all(fewer, histories, max_history)[:, :-1] - reference).norm(dim=1) \
            / norms
        gap = float(gaps.max()) if len(gaps) else 0.0
        if gap <= tolerance:
            return steps, gap
    return encoder.cg_steps, 0.0


def popularity_feature(counts: np.ndarray) -> np.ndarray:
    """The items' popularity coordinate: log1p(users who interacted) scaled to [0, 1]; 0 for an
    item nobody interacted with. Bounded like the taste coordinates, so it neither dominates
    the vector's geometry nor the 4-bit codes of an approximate index."""
    logs = np.log1p(np.asarray(counts, dtype=np.float32))
    return logs / max(float(logs.max()), 1e-12)


class BandScorer(nn.Module):
    """The served retrieval and rerank scores of one history band (app/serving/pipeline.py),
    with its learned parameters and a softmax temperature (the last only shapes the loss):

        retrieval(u, i) = own·y_i + has · fw · friends·y_i + p · c_i
        score(u, i)     = retrieval(u, i) + has · sw · log1p(s_i)

    own·y and friends·y are the parameter-free taste products ("parts"), c the popularity
    feature, s_i the summed ties of the friends who engaged with i; p is popularity_weight for
    a user with friends and popularity_weight_alone without (both learned: the no-social
    ablation and users without friends get their own prior, not the social one's)."""

    def __init__(self, friend_weight: float = 0.5, popularity_weight: float = 0.0,
                 social_weight: float = 0.0, temperature: float = 10.0) -> None:
        super().__init__()
        self.friend_weight = nn.Parameter(torch.tensor(float(friend_weight)))
        self.popularity_weight = nn.Parameter(torch.tensor(float(popularity_weight)))
        self.popularity_weight_alone = nn.Parameter(torch.tensor(float(popularity_weight)))
        self.social_weight = nn.Parameter(torch.tensor(float(social_weight)))
        self.log_temperature = nn.Parameter(torch.tensor(float(np.log(temperature))))

    def retrieval(self, own: torch.Tensor, friends: torch.Tensor, pop: torch.Tensor,
                  has: torch.Tensor) -> torch.Tensor:
        """(B, C) blocks of the parts and the popularity feature; `has` (B,) 1 with friends."""
        h = has[:, None]
        prior = h * self.popularity_weight + (1 - h) * self.popularity_weight_alone
        return own + h * self.friend_weight * friends + prior * pop

    def forward(self, own: torch.Tensor, friends: torch.Tensor, pop: torch.Tensor,
                social: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
        return self.retrieval(own, friends, pop, has) + \
            has[:, None] * self.social_weight * torch.log1p(social)

    def loss(self, own: torch.Tensor, friends: torch.Tensor, pop: torch.Tensor,
             social: torch.Tensor, has: torch.Tensor, seen: torch.Tensor,
             targets: torch.Tensor) -> torch.Tensor:
        """Softmax cross-entropy of the held-out items among each row's candidates, seen items
        excluded as the service excludes them."""
        logits = self(own, friends, pop, social, has) * self.log_temperature.exp()
        logits = logits.masked_fill(seen, float("-inf"))
        logp = torch.log_softmax(logits, dim=1).masked_fill(seen, 0.0)
        return -(logp * targets).sum() / targets.sum().clamp_min(1.0)


def fit_als(users: np.ndarray, items: np.ndarray, values: np.ndarray, n_users: int,
            n_items: int, dim: int, regularization: float, alpha: float, iterations: int,
            seed: int, cg_steps: int = 3,
            callback: Callable[[int, torch.Tensor, torch.Tensor], bool] | None = None,
            threads: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted ALS for implicit feedback (confidence 1 + α·value on observed pairs, preference
    1 there, 0 with confidence 1 elsewhere), solved by implicit's ALS: each half step a few
    warm-started conjugate-gradient steps in compiled code, O(nnz·D) time and no (nnz, D)
    intermediate. implicit weighs an observed pair by its stored value (its confidence − 1
    enters YᵀCY), so the stored value is the whole confidence 1 + α·value and implicit's own
    alpha is 1. One `fit` call per iteration (implicit keeps the factors between calls), so
    `callback(iteration, user_factors, item_factors)` sees every iteration and may return True
    to stop; the tensors share memory with the solver's arrays, which the next iteration
    overwrites. Deterministic for a given seed (the solver's threads write disjoint rows)."""
    import scipy.sparse as sp
    import threadpoolctl
    from implicit.cpu.als import AlternatingLeastSquares

    conf = sp.csr_matrix(
        (1.0 + alpha * np.asarray(values, dtype=np.float32), (users, items)),
        shape=(n_users, n_items), dtype=np.float32)
    # implicit's threads do the work; BLAS threads inside them only contend (implicit warns).
    with threadpoolctl.threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=dim, regularization=regularization, alpha=1.0, use_cg=True, iterations=1,
            num_threads=threads, random_state=seed)
    model.cg_steps = cg_steps
    for it in range(iterations):
        with threadpoolctl.threadpool_limits(1, "blas"):
            model.fit(conf, show_progress=False)
        user_f = torch.from_numpy(model.user_factors)
        item_f = torch.from_numpy(model.item_factors)
        if callback is not None and callback(it + 1, user_f, item_f):
            break
    return torch.from_numpy(model.user_factors), torch.from_numpy(model.item_factors)


def pad_histories(histories: list[list[tuple[int, float]]], max_history: int) -> tuple[
        torch.Tensor, torch.Tensor]:
    """The serving encoder's batching (app/serving/encode.py): most recent `max_history` items,
    weight 0 = padding, pad id 0."""
    width = max(1, min(max_history, max((len(h) for h in histories), default=0)))
    ids = np.zeros((len(histories), width), dtype=np.int64)
    weights = np.zeros((len(histories), width), dtype=np.float32)
    for row, history in enumerate(histories):
        h = history[:width]
        if h:
            ids[row, : len(h)] = [i for i, _ in h]
            weights[row, : len(h)] = [w for _, w in h]
    return torch.from_numpy(ids), torch.from_numpy(weights)


@torch.no_grad()
def encode_all(encoder: FoldInEncoder, histories: list[list[tuple[int, float]]],
               max_history: int, batch: int = 1024) -> torch.Tensor:
    outs = []
    for start in range(0, max(len(histories), 1), batch):
        ids, weights = pad_histories(histories[start: start + batch], max_history)
        outs.append(encoder(ids, weights))
    return torch.cat(outs)[: len(histories)]


def export_onnx(encoder: FoldInEncoder, path: Path) -> Path:
    """One self-contained ONNX file: inputs item_ids int64 [B, L], item_weights float32 [B, L];
    output user_vector float32 [B, D+1]; B and L dynamic."""
    import warnings

    encoder = encoder.eval()
    ids = torch.zeros((2, 3), dtype=torch.int64)
    weights = torch.ones((2, 3), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder, (ids, weights), str(path), dynamo=False, opset_version=OPSET,
            input_names=list(ENCODER_INPUTS), output_names=[ENCODER_OUTPUT],
            dynamic_axes={ENCODER_INPUTS[0]: {0: "batch", 1: "length"},
                          ENCODER_INPUTS[1]: {0: "batch", 1: "length"},
                          ENCODER_OUTPUT: {0: "batch"}},
        )
    return path
