"""Admin token handling beyond tests/api/test_admin.py: the comparison is hmac.compare_digest
(constant time) on every attempt, odd headers are refused without a 500, and the token is
never echoed or logged."""

from __future__ import annotations

import hmac
import logging

import httpx
import pytest

from tests.support.auth import ADMIN_TOKEN


@pytest.fixture
def compare_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


async def test_every_token_is_checked_with_compare_digest(
        client: httpx.AsyncClient, compare_calls: list[tuple[bytes, bytes]]) -> None:
    wrong_same_length = "y" * len(ADMIN_TOKEN)
    prefix_of_the_token = ADMIN_TOKEN[:-1]
    for token, status in [(wrong_same_length, 403), (prefix_of_the_token, 403),
                          (ADMIN_TOKEN + "x", 403), (ADMIN_TOKEN, 200)]:
        response = await client.post("/admin/reload",
                                     headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == status, token
    assert compare_calls == [(t.encode(), ADMIN_TOKEN.encode()) for t in (
        wrong_same_length, prefix_of_the_token, ADMIN_TOKEN + "x", ADMIN_TOKEN)]


@pytest.mark.parametrize("header", [
    b"Bearer \xe9\xe9\xe9-latin-1", b"Bearer " + "\u00fc".encode() * 20, b"Bearer",
    b"Bearer ", b"Basic " + ADMIN_TOKEN.encode(), b"bearer", ADMIN_TOKEN.encode()])
async def test_odd_authorization_headers_are_refused_not_500(client: httpx.AsyncClient,
                                                             header: bytes) -> None:
    response = await client.post("/admin/reload", headers={"Authorization": header})
    assert response.status_code in (401, 403)
    assert "detail" in response.json()


async def test_the_token_is_never_echoed_or_logged(client: httpx.AsyncClient,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="app")
    near_miss = ADMIN_TOKEN[:-1] + "!"
    bodies = [(await client.post("/admin/reload", headers={
        "Authorization": f"Bearer {token}"})).text for token in (near_miss, ADMIN_TOKEN)]
    for text in [*bodies, *(r.getMessage() for r in caplog.records)]:
        assert ADMIN_TOKEN not in text and near_miss not in text
