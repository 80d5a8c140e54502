"""The ONNX user encoder computes what the PyTorch module computes (the exact ALS fold-in), for
any batch size and history length, and an empty history gives a finite vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from app.offline.model import (  # noqa: E402
    BandScorer,
    FoldInEncoder,
    export_onnx,
    fewest_cg_steps,
    fit_als,
    pad_histories,
    popularity_feature,
)

N_ITEMS, DIM, REG, ALPHA, SCALE = 300, 16, 5.0, 4.0, 2.0


@pytest.fixture(scope="module")
def encoder() -> FoldInEncoder:
    gen = torch.Generator().manual_seed(0)
    factors = torch.randn(N_ITEMS, DIM, generator=gen) * 0.3
    return FoldInEncoder(factors, REG, ALPHA, weight_scale=SCALE, cg_steps=12).eval()


@pytest.fixture(scope="module")
def session(encoder: FoldInEncoder, tmp_path_factory: pytest.TempPathFactory):
    path = export_onnx(encoder, tmp_path_factory.mktemp("onnx") / "encoder.onnx")
    assert sorted(p.name for p in path.parent.iterdir()) == ["encoder.onnx"]  # one file
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _histories(rng: np.random.Generator, lengths: list[int]) -> list[list[tuple[int, float]]]:
    return [[(int(i), float(w)) for i, w in zip(rng.choice(N_ITEMS, n, replace=False),
                                               rng.choice([1.0, 2.0, 4.0, 8.0], n), strict=True)]
            for n in lengths]


def _exact(encoder: FoldInEncoder, history: list[tuple[int, float]]) -> np.ndarray:
    """(YᵀY + λI + α Σ (w/w̄) y yᵀ)⁻¹ Σ (1 + α w/w̄) y, in float64."""
    y = encoder.factors.double()
    a = y.T @ y + REG * torch.eye(DIM, dtype=torch.float64)
    b = torch.zeros(DIM, dtype=torch.float64)
    for i, w in history:
        c = ALPHA * w / SCALE
        a += c * torch.outer(y[i], y[i])
        b += (1 + c) * y[i]
    return torch.linalg.solve(a, b).numpy()


def _run(session, ids: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
    return session.run(None, {"item_ids": ids.numpy(), "item_weights": weights.numpy()})[0]


def test_contract_names_and_types(session) -> None:
    inputs = [(i.name, i.type) for i in session.get_inputs()]
    assert inputs == [("item_ids", "tensor(int64)"), ("item_weights", "tensor(float)")]
    assert [o.name for o in session.get_outputs()] == ["user_vector"]


@pytest.mark.parametrize("lengths", [[0], [1], [50], [0, 3, 17, 50, 1], [5] * 7,
                                     [12, 0, 0, 40]])
def test_onnx_matches_torch_and_exact_fold_in(encoder: FoldInEncoder, session,
                                              lengths: list[int]) -> None:
    rng = np.random.default_rng(sum(lengths) + len(lengths))
    histories = _histories(rng, lengths)
    ids, weights = pad_histories(histories, 50)
    with torch.no_grad():
        expected = encoder(ids, weights).numpy()
    got = _run(session, ids, weights)
    assert got.shape == (len(lengths), DIM + 1) and got.dtype == np.float32
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(got[:, -1], 1.0)  # the bias coordinate
    for row, history in enumerate(histories):
        np.testing.assert_allclose(got[row, :-1], _exact(encoder, history), atol=1e-4)


def test_empty_history_is_zero_vector_not_nan(session) -> None:
    for width in (1, 5):
        ids = torch.zeros((2, width), dtype=torch.int64)
        out = _run(session, ids, torch.zeros((2, width)))
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(out[:, :-1], 0.0)


def test_padding_and_its_position_do_not_change_the_vector(session) -> None:
    ids = torch.tensor([[7, 9, 0, 0], [7, 9, 3, 3]])
    weights = torch.tensor([[2.0, 1.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0]])
    out = _run(session, ids, weights)
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    short = _run(session, ids[:1, :2], weights[:1, :2])
    np.testing.assert_allclose(out[0], short[0], atol=1e-6)


def test_band_scorer_is_the_served_formula() -> None:
    gen = torch.Generator().manual_seed(1)
    own, friends = torch.randn(5, 40, generator=gen), torch.randn(5, 40, generator=gen)
    social = torch.rand(5, 40, generator=gen) * 3
    pop = popularity_feature(np.arange(40, dtype=np.float32))
    has = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    scorer = BandScorer(friend_weight=0.3, popularity_weight=-0.2, social_weight=0.1)
    with torch.no_grad():
        scorer.popularity_weight_alone.fill_(0.7)
        got = scorer(own, friends, torch.from_numpy(pop).expand(5, -1), social, has)
    for row in range(5):
        with_friends = bool(has[row])
        expected = own[row] + (0.3 * friends[row] + 0.1 * torch.log1p(social[row])
                               if with_friends else 0.0) \
            + (-0.2 if with_friends else 0.7) * torch.from_numpy(pop)
        torch.testing.assert_close(got[row], expected, atol=1e-5, rtol=1e-5)


def test_popularity_feature_is_zero_only_without_interactions() -> None:
    feature = popularity_feature(np.array([0.0, 1.0, 3.0, 100.0], dtype=np.float32))
    assert feature[0] == 0.0 and feature[-1] == pytest.approx(1.0)
    assert np.all(np.diff(feature) > 0)


def test_fit_als_is_deterministic_and_learns_structure() -> None:
    rng = np.random.default_rng(0)
    # two taste groups: users 0-19 take items 0-9, users 20-39 take items 10-19
    users = np.repeat(np.arange(40), 5)
    items = np.concatenate([rng.choice(10, 5, replace=False) + (10 if u >= 20 else 0)
                            for u in range(40)])
    values = np.ones(len(users), dtype=np.float32)
    args = (users, items, values, 40, 20, 4, 0.1, 10.0, 10, 3)
    _, first = fit_als(*args)
    _, second = fit_als(*args)
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    enc = FoldInEncoder(first, 0.1, 10.0)
    ids, weights = pad_histories([[(0, 1.0), (1, 1.0)], [(10, 1.0), (11, 1.0)]], 50)
    with torch.no_grad():
        u = enc(ids, weights)[:, :-1]
    scores = u @ first.T
    assert scores[0, 2:10].mean() > scores[0, 12:20].mean()
    assert scores[1, 12:20].mean() > scores[1, 2:10].mean()


def test_export_is_self_contained(encoder: FoldInEncoder, tmp_path: Path) -> None:
    path = export_onnx(encoder, tmp_path / "enc.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["enc.onnx"]
    import onnx

    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17


@pytest.mark.parametrize("lengths, most", [([1] * 20, 2), ([5] * 20, 6), ([0, 3, 17, 50], 12)])
def test_the_fewest_cg_steps_fold_in_as_the_full_count_does(
        encoder: FoldInEncoder, lengths: list[int], most: int) -> None:
    """PCG from the exact inverse of the constant part converges in at most (history length
    + 1) steps: one-item histories need at most 2, five-item ones at most 6; the count chosen
    is the fewest within the tolerance, and its vectors are the exact fold-in's."""
    histories = _histories(np.random.default_rng(len(lengths)), lengths)
    steps, gap = fewest_cg_steps(encoder, histories, 50, 1e-4)
    assert steps <= most and gap <= 1e-4
    ids, weights = pad_histories(histories, 50)

    def fold_in(n: int) -> np.ndarray:
        with torch.no_grad():
            return FoldInEncoder(encoder.factors, REG, ALPHA, weight_scale=SCALE,
                                 cg_steps=n)(ids, weights).numpy()[:, :-1]

    full, got = fold_in(12), fold_in(steps)
    if steps > 1:  # one step fewer is out of tolerance for some user
        gaps = np.linalg.norm(fold_in(steps - 1) - full, axis=1) / np.maximum(
            np.linalg.norm(full, axis=1), 1e-20)
        assert gaps.max() > 1e-4
    for row, history in enumerate(histories):
        np.testing.assert_allclose(got[row], _exact(encoder, history), rtol=1e-3,
                                   atol=1e-5)
