"""The item text encoder at run time: tokenizers + onnxruntime only, and a new product's text
lands among the items it describes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.serving.artifacts import ArtifactError, ModelArtifacts
from app.serving.text import ItemDescription
from tests.support.data import item_categories

ROOT = Path(__file__).resolve().parents[2]


def test_text_encoding_needs_neither_torch_nor_transformers(artifacts_dir: Path) -> None:
    script = (
        "import sys\n"
        "from app.serving.artifacts import ModelArtifacts\n"
        f"a = ModelArtifacts.load({str(artifacts_dir)!r})\n"
        "from app.serving.text import ItemDescription\n"
        "v = a.text.item_vector(ItemDescription('Northpeak Waterproof Hiking Boots', 'outdoor',\n"
        "                                       ('hiking',)))\n"
        "assert v.shape == (a.manifest.embedding_dim,), v.shape\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'sentence_transformers')\n"
        "               if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_a_new_product_is_retrieved_among_items_like_it(artifacts_dir: Path,
                                                        synth_dir: Path) -> None:
    artifacts = ModelArtifacts.load(artifacts_dir)
    assert artifacts.text is not None
    categories = item_categories(synth_dir)
    for title, category, tags in [
            ("Trailhead Insulated Sleeping Bag", "outdoor", ("camping", "hiking")),
            ("ChefCraft Cast Iron Dutch Oven", "kitchen", ("cooking", "cookware"))]:
        # taste coordinates (the last one is popularity), relative to the catalogue's mean item
        taste = artifacts.item_vectors[:, :-1]
        mean = taste.mean(axis=0)
        vector = artifacts.text.item_vector(ItemDescription(title, category, tags))[:-1] - mean
        centred = taste - mean
        cosine = centred @ vector / np.linalg.norm(centred, axis=1).clip(1e-12)
        nearest = np.argsort(-cosine)[:10]
        share = np.mean([categories[artifacts.catalog.ids[i]] == category for i in nearest])
        assert share >= 0.8, (title, share)


def test_a_broken_text_encoder_is_refused_with_a_message(artifacts_dir: Path,
                                                         tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(artifacts_dir, folder)
    np.save(folder / "text_projection.npy", np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(ArtifactError, match="text projection has shape"):
        ModelArtifacts.load(folder)
    (folder / "text_encoder.onnx").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="item text encoder"):
        ModelArtifacts.load(folder)
