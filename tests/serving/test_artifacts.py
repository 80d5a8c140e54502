"""Artifact loading refuses what it cannot serve, with a message that says why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.serving.artifacts import FORMAT_VERSION, ArtifactError, ModelArtifacts


@pytest.fixture
def copy(artifacts_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(artifacts_dir, tmp_path / "art"))


def test_loads_what_the_exporter_wrote(artifacts_dir: Path) -> None:
    artifacts = ModelArtifacts.load(artifacts_dir)
    assert artifacts.manifest.format_version == FORMAT_VERSION
    assert artifacts.index.ntotal == artifacts.manifest.item_count == len(artifacts.catalog.ids)


def test_unknown_format_version_is_refused(copy: Path) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format_version 99 is not supported"):
        ModelArtifacts.load(copy)


@pytest.mark.parametrize("victim", ["items.faiss", "popularity.npy", "items.json"])
def test_corrupt_or_missing_files_are_refused(copy: Path, victim: str) -> None:
    (copy / victim).write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="cannot read artifact"):
        ModelArtifacts.load(copy)


def test_corrupt_encoder_is_refused(copy: Path) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / manifest["encoder_file"]).write_bytes(b"not an onnx model")
    with pytest.raises(ArtifactError):
        ModelArtifacts.load(copy)


def test_item_count_mismatch_is_refused(copy: Path) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["item_count"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="inconsistent artifact"):
        ModelArtifacts.load(copy)
