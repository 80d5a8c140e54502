"""The scheduling examples of docs/OPERATIONS.md run the command as it exists: the cron line and
the Kubernetes CronJob parse, and their `socialrec retrain` arguments are accepted."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from app.cli import build_parser

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"


def blocks(language: str) -> list[str]:
    text = OPERATIONS.read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_the_cron_line_runs_retrain_with_valid_options() -> None:
    lines = [line for block in blocks("text") for line in block.splitlines()
             if "socialrec retrain" in line and not line.startswith("#")]
    assert len(lines) == 1
    schedule, command = lines[0].split(None, 5)[:5], lines[0].split(None, 5)[5]
    assert len(schedule) == 5
    words = shlex.split(command.split(">>")[0].split("&&")[1])
    args = words[words.index("socialrec") + 1:]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "retrain" and parsed.artifacts_root and parsed.data


def test_the_cronjob_manifest_runs_one_retrain_at_a_time() -> None:
    (manifest,) = [yaml.safe_load(b) for b in blocks("yaml") if "kind: CronJob" in b]
    assert manifest["kind"] == "CronJob" and manifest["spec"]["concurrencyPolicy"] == "Forbid"
    job = manifest["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    (container,) = job["template"]["spec"]["containers"]
    assert container["args"][0] == "socialrec"
    parsed = build_parser().parse_args(container["args"][1:])
    assert parsed.command == "retrain"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert parsed.artifacts_root in mounts and parsed.data in mounts
