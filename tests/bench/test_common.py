"""What a benchmark writes into the docs names paths as a reader has them."""

from __future__ import annotations

from bench.common import ROOT, command_line


def test_a_command_line_names_datasets_and_repository_paths_as_readers_have_them() -> None:
    argv = ["--data", "/srv/shared/datasets/lastfm-split", "--artifacts",
            str(ROOT / "model_artifacts" / "demo"), "--out", "/tmp/run 1", "--k", "20"]

    assert command_line("quality", argv) == (
        "bench/quality --data data/lastfm-split --artifacts model_artifacts/demo "
        "--out '/tmp/run 1' --k 20")
