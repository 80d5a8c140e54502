"""Service configuration: one Settings class, read from `SOCIALREC_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
PLACEHOLDER_TOKENS = frozenset({"changeme", "change-me", "secret", "token", "admin", "password"})

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "listen": 2.0,
    "like": 3.0,
    "rate": 3.0,
    "cart": 4.0,
    "purchase": 8.0,
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOCIALREC_", extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="redis:// URL of the live state")
    redis_cluster: bool = Field(False, description="treat redis_url as a Redis Cluster seed node")
    redis_timeout_s: float = Field(0.25, gt=0, description="socket timeout for every Redis call")
    catalog_write_timeout_s: float = Field(
        5.0, gt=0, description="reply timeout of a catalogue write (PUT, POST and DELETE "
        "/items): one Lua script stores up to 1,000 records at once, which may take longer than "
        "redis_timeout_s on a busy Redis")
    redis_max_connections: int = Field(128, ge=1, le=10_000,
                                       description="Redis connections per API process")
    key_prefix: str = Field("sr", description="prefix of every Redis key this service writes")
    artifacts: Path = Field(Path("model_artifacts/demo"), description="model artifact folder")
    admin_token: str | None = Field(
        None, description="bearer token for /admin and /users/{id} (GET and DELETE); unset = "
        "admin off, GET /users open, DELETE /users refused (403)")
    catalog_token: str | None = Field(
        None, description="bearer token for catalogue writes (PUT, POST and DELETE /items); "
        "unset = catalogue writes refused (403), GET /items/{id} open")
    history_len: int = Field(50, ge=1, le=1000,
                             description="most recent distinct items kept per user "
                             "(the encoder's input)")
    seen_len: int = Field(2000, ge=8, le=100_000,
                          description="items remembered per user to exclude as seen "
                          "(8 bytes each)")
    dedup_ttl_s: int = Field(24 * 3600, ge=60, description="how long event ids are remembered")
    stream_maxlen: int = Field(10_000_000, ge=1000, description="approximate event-log length "
                               "cap (the whole log: each partition keeps its share)")
    log_partitions: int = Field(
        12, ge=1, le=1024, description="event-log partitions by user hash, each in its own "
        "Redis Cluster slot, spread evenly over the masters; partitions of an earlier count "
        "stay readable (docs/OPERATIONS.md)")
    cache_ttl_s: int = Field(
        30, ge=0, le=24 * 3600, description="seconds a user's ranked list stays cached in "
        "Redis: the user's own events and follows drop it at once, friends' behaviour reaches "
        "it within this (each list lives a random 80-100 % of it, so lists computed together do "
        "not expire together); 0 = no list cache (every request computes; docs/OPERATIONS.md)")
    recommend_concurrency: int = Field(
        32, ge=1, le=4096, description="GET /recommend requests one process works on at once; "
        "later ones wait their turn in arrival order. Under overload this keeps the time "
        "between a computed list's read and its write short, so the users' own events do not "
        "void the lists being computed and the cache hit rate holds; a waiting request whose "
        "client went away is dropped when its turn comes, not computed (status 499 in "
        "socialrec_http_requests_total; docs/OPERATIONS.md)")
    recommend_wait_s: float = Field(
        1.0, ge=0, le=60, description="longest a GET /recommend request waits for its turn; "
        "past it the answer is the popularity list, marked degraded (socialrec_fallback_total "
        "reason overloaded), so an overloaded process answers at once instead of queueing "
        "without bound; 0 = wait as long as it takes")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest accepted request body")
    onnx_threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads")
    reason_friend_ids: bool = Field(
        True, description="name the friends in friends_engaged reasons; false = only their "
        "number (friend_count), for shops that show reasons to end users")
    opentelemetry: bool = Field(
        False, description="FastAPI's native OpenTelemetry spans, metrics and logs, sent to the "
        "providers an OpenTelemetry SDK set up in the process (docs/OPERATIONS.md); false = "
        "none: without an SDK there is nothing to send them to, and looking for its providers "
        "costs every request")
    ui: bool = Field(True, description="serve the inspector page at /ui (it uses only the public "
                     "API); false = no /ui routes")
    event_weights: dict[str, float] | None = Field(
        None, description="JSON object type → weight; default: the weights the model was "
        "trained with. Types outside it are rejected with 422")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        return check_redis_url(url)

    @field_validator("admin_token", "catalog_token")
    @classmethod
    def _refuse_placeholder(cls, token: str | None, info: ValidationInfo) -> str | None:
        if token is None:
            return None
        if not token.strip() or token.strip().lower() in PLACEHOLDER_TOKENS or len(token) < 16:
            name = f"SOCIALREC_{(info.field_name or '').upper()}"
            what = "admin routes" if info.field_name == "admin_token" else "catalogue writes"
            raise ValueError(
                f"{name} is a placeholder or shorter than 16 characters; set a real secret "
                f"(e.g. `openssl rand -hex 24`) or leave it unset to disable {what}"
            )
        return token


def check_redis_url(url: str) -> str:
    """redis-py accepts these schemes only; anything else fails at the first command."""
    if not url.startswith(REDIS_SCHEMES):
        raise ValueError(f"{url!r} is not a Redis URL; expected one starting with "
                         + ", ".join(REDIS_SCHEMES))
    return url
