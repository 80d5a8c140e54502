"""Item text → item vector at run time: the pretrained sentence encoder (ONNX), the item's labels
(tags and category) and the learned projection into the item-vector space — with the
`tokenizers` package and onnxruntime only (no PyTorch).

An item the model never saw in training gets `[embedding, label_weight·labels, 1] @ W` as its
vector, so it can be retrieved and ranked like any other item. The same code turns the
catalogue's untrained items into vectors at export time and a new product's description into a
vector while the service runs (`TextEncoder.item_vectors`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, Field
from tokenizers import Tokenizer

TEXT_INPUTS = ("input_ids", "attention_mask")
TEXT_OUTPUT = "text_vector"


class TextEncoderInfo(BaseModel):
    """The manifest's `text` section: the files of the item text encoder and how it was made."""

    encoder_file: str = "text_encoder.onnx"
    tokenizer_file: str = "tokenizer.json"
    projection_file: str = "text_projection.npy"
    labels_file: str = "text_labels.json"
    source: str  # the pretrained model and the package that shipped it
    quantization: str  # "none" or the onnxruntime quantization applied
    text_dim: int = Field(ge=1)
    max_tokens: int = Field(ge=2)
    ridge: float = Field(ge=0)  # the projection's regularisation, chosen on validation
    label_weight: float = Field(ge=0)  # the labels' share of the features, chosen likewise


@dataclass(frozen=True)
class ItemDescription:
    """What a shop knows about a product besides its interactions."""

    title: str = ""
    category: str = ""
    tags: tuple[str, ...] = ()
    description: str = ""

    def text(self) -> str:
        """What the sentence encoder reads: "title. category. tag, tag. description"."""
        parts = [self.title.strip(), self.category.strip(),
                 ", ".join(t.strip() for t in self.tags if t.strip()), self.description.strip()]
        return ". ".join(p for p in parts if p)

    def labels(self) -> set[str]:
        """Tags and category as exact labels, case-insensitive."""
        return {t.strip().lower() for t in (*self.tags, self.category) if t.strip()}

    def __bool__(self) -> bool:
        return bool(self.text())


# Padded tokens per encoder call (texts × the batch's longest text): enough texts per call to
# pay the call's overhead once, few enough that the activations stay in the CPU caches (twice
# this was slower per token on shop titles).
BATCH_TOKENS = 512
TOKENIZE_CHUNK = 4096  # texts tokenized at once (memory stays bounded on a large catalogue)


def token_batches(lengths: Sequence[int], budget: int) -> list[range]:
    """Consecutive batches of `lengths` (sorted ascending) each holding at most `budget`
    padded tokens (its size × its longest text), one text at least."""
    batches: list[range] = []
    start = 0
    for end in range(1, len(lengths) + 1):
        if end - start > 1 and (end - start) * max(1, lengths[end - 1]) > budget:
            batches.append(range(start, end - 1))
            start = end - 1
    if start < len(lengths):
        batches.append(range(start, len(lengths)))
    return batches


def load_tokenizer(path: Path, max_tokens: int) -> Tokenizer:
    """The exported tokenizer with its padding set to the longest text of each batch (as
    shipped it pads everything to a fixed length) and truncation at `max_tokens`."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0, pad_token="[PAD]")
    return tokenizer


def label_features(items: Sequence[ItemDescription], vocabulary: dict[str, int]) -> np.ndarray:
    """(n, len(vocabulary)) unit-norm bags of each item's known labels."""
    out = np.zeros((len(items), len(vocabulary)), dtype=np.float32)
    for row, item in enumerate(items):
        cols = [vocabulary[x] for x in item.labels() if x in vocabulary]
        if cols:
            out[row, cols] = 1.0 / np.sqrt(len(cols))
    return out


def text_session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # idle threads sleep: spinning ones halved the training's catalogue embedding on 2 cores
    # shared with other work (88-95 vs 200-219 texts/s)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class TextEncoder:
    """Tokenizer + ONNX sentence encoder (mean-pooled, unit-norm) + label vocabulary +
    projection W of `[embedding, label_weight·labels, 1]` into the item-vector space."""

    info: TextEncoderInfo
    tokenizer: Tokenizer
    session: ort.InferenceSession
    vocabulary: dict[str, int]
    projection: np.ndarray  # (text_dim + len(vocabulary) + 1, item dim)

    @classmethod
    def load(cls, folder: Path, info: TextEncoderInfo, threads: int = 1) -> TextEncoder:
        labels = json.loads((folder / info.labels_file).read_text(encoding="utf-8"))
        projection = np.load(folder / info.projection_file, allow_pickle=False)
        return cls(info, load_tokenizer(folder / info.tokenizer_file, info.max_tokens),
                   text_session(folder / info.encoder_file, threads),
                   {str(x): n for n, x in enumerate(labels)}, projection.astype(np.float32))

    def check(self, item_dim: int) -> list[str]:
        """What is inconsistent between the encoder, the projection and the item vectors."""
        problems = []
        names = tuple(i.name for i in self.session.get_inputs())
        if names != TEXT_INPUTS:
            problems.append(f"text encoder inputs {names} != {TEXT_INPUTS}")
        expected = (self.info.text_dim + len(self.vocabulary) + 1, item_dim)
        if self.projection.shape != expected:
            problems.append(f"text projection has shape {self.projection.shape}, "
                            f"expected {expected}")
        return problems

    def embed(self, texts: Sequence[str], batch_tokens: int = BATCH_TOKENS,
              done: Callable[[int], object] | None = None) -> np.ndarray:
        """Unit-norm sentence embeddings (n, text_dim). Texts are batched in order of token
        length, each batch as many texts as fit in `batch_tokens` padded tokens (at least one):
        the encoder's work is the padded tokens, so short titles go many to a batch and long
        descriptions few, instead of a fixed row count that pads little texts' batches with
        per-call overhead. An int8 encoder quantizes activations per batch, so a text's vector
        moves slightly with its batch mates (cosine ≥ 0.95 to the same text alone,
        tests/offline/test_text_export.py). `done(n)` is told after each batch of n texts (a
        progress bar)."""
        out = np.zeros((len(texts), self.info.text_dim), dtype=np.float32)
        by_chars = sorted(range(len(texts)), key=lambda n: len(texts[n]))
        for start in range(0, len(by_chars), TOKENIZE_CHUNK):
            chunk = by_chars[start: start + TOKENIZE_CHUNK]
            encoded = self.tokenizer.encode_batch([texts[n] for n in chunk])
            lengths = [sum(e.attention_mask) for e in encoded]
            order = sorted(range(len(chunk)), key=lambda k: lengths[k])
            for rows in token_batches([lengths[k] for k in order], batch_tokens):
                picked = [order[k] for k in rows]
                width = max(1, max(lengths[k] for k in picked))
                ids = np.asarray([encoded[k].ids[:width] for k in picked], dtype=np.int64)
                mask = np.asarray([encoded[k].attention_mask[:width] for k in picked],
                                  dtype=np.int64)
                out[[chunk[k] for k in picked]] = self.session.run(
                    [TEXT_OUTPUT], {"input_ids": ids, "attention_mask": mask})[0]
                if done is not None:
                    done(len(picked))
        return out

    def features(self, embeddings: np.ndarray,
                 items: Sequence[ItemDescription]) -> np.ndarray:
        return feature_matrix(embeddings, label_features(items, self.vocabulary),
                              self.info.label_weight)

    def item_vectors(self, items: Sequence[ItemDescription]) -> np.ndarray:
        """Item vectors (n, item dim) for items known only by their description."""
        embeddings = self.embed([item.text() for item in items])
        return self.features(embeddings, items) @ self.projection

    def item_vector(self, item: ItemDescription) -> np.ndarray:
        """The vector of one new product (what the catalogue's `PUT /items` needs)."""
        return self.item_vectors([item])[0]


def feature_matrix(embeddings: np.ndarray, labels: np.ndarray, label_weight: float) -> np.ndarray:
    """`[embedding, label_weight·labels, 1]`, the projection's input (one source for training
    and serving)."""
    ones = np.ones((len(embeddings), 1), dtype=np.float32)
    return np.hstack([embeddings.astype(np.float32), label_weight * labels, ones])
