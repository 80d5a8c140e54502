"""The README's examples are real output: every request it shows, replayed in order against the
shipped demo model (its demo users loaded under this test's own key prefix), answers what the
README shows.

Compared as parsed JSON (however the README wraps it), exactly, with one exception: `score`
values may differ by 1e-4. They are float32 sums from onnxruntime and FAISS, whose rounding
depends on the CPU's vector instructions and the libraries' builds; the README rounds them to
six decimals. Everything else — ids, order, strategy, model version, reasons, counts, error
messages, metric lines — is deterministic for a given demo model, so it must match exactly.
When the demo model changes, `python -m app.tools.readme_examples` rewrites the README."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from app.tools.readme_examples import (
    README,
    demo_client,
    examples,
    parse_output,
    render,
    replay,
    rewrite,
)

SCORE_TOLERANCE = 1e-4
ADMIN_TOKEN = "readme-test-admin-token-0123456789"
CATALOG_TOKEN = "readme-test-catalog-token-0123456789"


def same(shown: Any, live: Any, where: str = "") -> list[str]:
    """Where `shown` and `live` differ (empty: the same), scores within SCORE_TOLERANCE."""
    if isinstance(shown, dict) and isinstance(live, dict):
        if shown.keys() != live.keys():
            return [f"{where}: keys {sorted(shown)} != {sorted(live)}"]
        problems = []
        for key in shown:
            if key == "score" and isinstance(shown[key], float | int):
                if not math.isclose(shown[key], live[key], rel_tol=0, abs_tol=SCORE_TOLERANCE):
                    problems.append(f"{where}.score: {shown[key]} != {live[key]}")
            else:
                problems += same(shown[key], live[key], f"{where}.{key}")
        return problems
    if isinstance(shown, list) and isinstance(live, list):
        if len(shown) != len(live):
            return [f"{where}: {len(shown)} entries shown, {len(live)} answered"]
        return [p for n, (s, v) in enumerate(zip(shown, live, strict=True))
                for p in same(s, v, f"{where}[{n}]")]
    if shown == live and type(shown) is type(live):
        return []
    return [f"{where}: {shown!r} != {live!r}"]


def test_the_readme_has_examples_of_every_route() -> None:
    paths = {e.request.path for e in examples(README.read_text(encoding="utf-8"))
             if e.request is not None}
    for route in ("/recommend", "/events", "/users", "/healthz", "/readyz", "/metrics",
                  "/admin", "/items"):
        assert any(p.startswith(route) for p in paths), f"no README example for {route}"


@pytest.mark.slow
async def test_every_readme_example_is_what_the_demo_service_answers(
        redis_url: str, key_prefix: str) -> None:
    found = examples(README.read_text(encoding="utf-8"))
    async with demo_client(redis_url, key_prefix, ADMIN_TOKEN, CATALOG_TOKEN) as client:
        answers = await replay(client, [e.request for e in found], ADMIN_TOKEN, CATALOG_TOKEN)
    problems = []
    for example, answer in zip(found, answers, strict=True):
        if answer is None:
            assert not example.output, f"a setup step shows output: {example.command[0]}"
            continue
        live = parse_output(answer.splitlines())
        for problem in same(parse_output(example.output), live):
            problems.append(f"{example.command[0]}\n    {problem}")
    assert not problems, ("README examples differ from the demo service; run "
                          "`python -m app.tools.readme_examples`:\n" + "\n".join(problems))


def test_the_readme_is_in_the_form_the_tool_writes() -> None:
    """Regenerating with the same answers changes nothing, so a regeneration's diff shows only
    what the service answers differently."""
    text = README.read_text(encoding="utf-8")
    shown = []
    for e in examples(text):
        value = parse_output(e.output) if e.request is not None else None
        shown.append(None if value is None else
                     "\n".join(value) if isinstance(value, list) else json.dumps(value))
    assert rewrite(text, shown) == text


def test_rendering_wraps_a_list_and_keeps_it_parseable() -> None:
    answer = {"user_id": "u1", "model_version": "m-1", "strategy": "personal", "degraded": False,
              "items": [{"item_id": f"p{n}", "score": 1.0 / (n + 1), "title": "t" * 40,
                         "reasons": [{"kind": "similar_to_history"}]} for n in range(3)]}
    lines = render(json.dumps(answer))
    assert len(lines) == 1 + 2 * 3
    assert json.loads("\n".join(lines)) == answer
    assert render('{"status":"ok"}') == ['{"status":"ok"}']
    assert render("a 1.0\nb 2.0") == ["a 1.0", "b 2.0"]
