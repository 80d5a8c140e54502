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

The encoder output is `[u, 1]` and the item vectors `[y, b]`, so the item bias `b` is part of the
inner product FAISS computes. Serving blends `[u, 1]` with friends' vectors (app/serving/blend.py);
`SocialScorer` is exactly that computation, and it is where `friend_weight` is learned.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

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


class SocialScorer(nn.Module):
    """The served scoring, with its learned parameters: friend_weight, the item-bias strength
    and a softmax temperature (the last only shapes the training loss; ranking ignores it).

    score(u, i) = (ũ + fw · Σ_f t_f ũ_f / Σ_f t_f) · [y_i, β·log1p(n_i)]     with ũ = [u, 1]
    """

    factors: torch.Tensor  # buffers, declared for the type checker
    log_counts: torch.Tensor

    def __init__(self, item_factors: np.ndarray | torch.Tensor, item_counts: np.ndarray,
                 friend_weight: float = 0.0, bias_strength: float = 0.0,
                 temperature: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("factors", torch.as_tensor(np.asarray(item_factors),
                                                        dtype=torch.float32))
        self.register_buffer("log_counts", torch.log1p(torch.as_tensor(
            np.asarray(item_counts), dtype=torch.float32)))
        self.friend_weight = nn.Parameter(torch.tensor(float(friend_weight)))
        self.bias_strength = nn.Parameter(torch.tensor(float(bias_strength)))
        self.log_temperature = nn.Parameter(torch.tensor(float(np.log(temperature))))

    def item_vectors(self) -> torch.Tensor:
        return torch.cat([self.factors, (self.bias_strength * self.log_counts)[:, None]], dim=1)

    def blended(self, own: torch.Tensor, friend_mean: torch.Tensor,
                has_friends: torch.Tensor) -> torch.Tensor:
        """`friend_mean` is the tie-weighted mean of friends' own vectors (rows of users without
        friends are ignored via `has_friends`) — app/serving/blend.py, batched."""
        return own + self.friend_weight * friend_mean * has_friends[:, None]

    def forward(self, own: torch.Tensor, friend_mean: torch.Tensor,
                has_friends: torch.Tensor) -> torch.Tensor:
        return self.blended(own, friend_mean, has_friends) @ self.item_vectors().T

    def parts(self, own: torch.Tensor, friend_mean: torch.Tensor) -> tuple[
            torch.Tensor, torch.Tensor]:
        """The parameter-free halves of `forward`: own·[y, 0] and friend_mean·[y, 0]. Since the
        last coordinate of `own` is 1 and that of a friend mean is 1 too (a tie-weighted mean of
        ones), forward = own_part + b + fw·has·(friend_part + b) with b = β·log1p(n) — the
        same numbers, but the (B, n_items) products are computed once, not every step."""
        d = self.factors.shape[1]
        return own[:, :d] @ self.factors.T, friend_mean[:, :d] @ self.factors.T

    def from_parts(self, own_part: torch.Tensor, friend_part: torch.Tensor,
                   has_friends: torch.Tensor,
                   log_counts: torch.Tensor | None = None) -> torch.Tensor:
        """`log_counts` (B, C) when the parts are restricted to C candidate columns per row."""
        bias = self.bias_strength * (self.log_counts if log_counts is None else log_counts)
        mix = (self.friend_weight * has_friends)[:, None]
        return own_part + bias + mix * (friend_part + bias)

    def loss(self, own_part: torch.Tensor, friend_part: torch.Tensor,
             has_friends: torch.Tensor, seen: torch.Tensor, targets: torch.Tensor,
             log_counts: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax cross-entropy of held-out items, with the user's seen items excluded as the
        service excludes them (dense (B, n_items) bool `seen`, float `targets`)."""
        logits = self.from_parts(own_part, friend_part, has_friends, log_counts)
        logits = (logits * self.log_temperature.exp()).masked_fill(seen, float("-inf"))
        logp = torch.log_softmax(logits, dim=1).masked_fill(seen, 0.0)
        return -(logp * targets).sum() / targets.sum().clamp_min(1.0)


def fit_als(users: np.ndarray, items: np.ndarray, values: np.ndarray, n_users: int,
            n_items: int, dim: int, regularization: float, alpha: float, iterations: int,
            seed: int, cg_steps: int = 3,
            callback: Callable[[int, torch.Tensor, torch.Tensor], bool] | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted ALS for implicit feedback (confidence 1 + α·value on observed pairs), each half
    step a few warm-started preconditioned CG steps. `callback(iteration, user_factors,
    item_factors)` may return True to stop. Deterministic for a given seed."""
    gen = torch.Generator().manual_seed(seed)
    user_f = torch.rand(n_users, dim, generator=gen) * 0.01
    item_f = torch.rand(n_items, dim, generator=gen) * 0.01
    u_idx = torch.as_tensor(users, dtype=torch.int64)
    i_idx = torch.as_tensor(items, dtype=torch.int64)
    conf = alpha * torch.as_tensor(values, dtype=torch.float32)
    for it in range(iterations):
        user_f = _cg_half_step(user_f, item_f, u_idx, i_idx, conf, regularization, cg_steps)
        item_f = _cg_half_step(item_f, user_f, i_idx, u_idx, conf, regularization, cg_steps)
        if callback is not None and callback(it + 1, user_f, item_f):
            break
    return user_f, item_f


def _cg_half_step(x: torch.Tensor, other: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                  conf: torch.Tensor, regularization: float, steps: int) -> torch.Tensor:
    gram = _gram(other, regularization)
    gram_inv = torch.linalg.inv(gram).float()
    gram = gram.float()
    linked = other[cols]  # (nnz, D)

    def apply(p: torch.Tensor) -> torch.Tensor:
        proj = (linked * p[rows]).sum(dim=1) * conf
        return (p @ gram).index_add_(0, rows, proj[:, None] * linked)

    rhs = torch.zeros_like(x).index_add_(0, rows, (1.0 + conf)[:, None] * linked)
    r = rhs - apply(x)
    z = r @ gram_inv
    p = z
    rz = (r * z).sum(dim=1, keepdim=True)
    for _ in range(steps):
        ap = apply(p)
        step = rz / torch.clamp((p * ap).sum(dim=1, keepdim=True), min=_EPS)
        x = x + step * p
        r = r - step * ap
        z = r @ gram_inv
        rz_next = (r * z).sum(dim=1, keepdim=True)
        p = z + (rz_next / torch.clamp(rz, min=_EPS)) * p
        rz = rz_next
    return x


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
            input_names=["item_ids", "item_weights"], output_names=["user_vector"],
            dynamic_axes={"item_ids": {0: "batch", 1: "length"},
                          "item_weights": {0: "batch", 1: "length"},
                          "user_vector": {0: "batch"}},
        )
    return path
