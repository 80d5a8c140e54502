"""Request and response models: the contract of docs/API.md, validated at the edge."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.events import ID_PATTERN, SOCIAL_TYPES

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]{0,31}$")]
MAX_EVENTS = 1000
MAX_ITEMS = 1000
# The length rule of catalogue texts: longer ones are refused (422), never cut silently. The
# text encoder reads at most its max_tokens (docs/ARTIFACTS.md) of "title. category. tags.
# description"; a description past that still counts for nothing but is kept for the shop.
MAX_TITLE = 300
MAX_CATEGORY = 100
MAX_TAGS = 50
MAX_DESCRIPTION = 5000
# A tag is one label: no ';' (the tag separator of items.csv) and no line breaks.
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^;\r\n]+$")]
Line = Annotated[str, StringConstraints(pattern=r"^[^\r\n]*$")]


class Reason(BaseModel):
    kind: Literal["friends_engaged", "friends_taste", "similar_to_history", "similar_to_item",
                  "popular"]
    friends: list[str] | None = Field(
        None, description="friends_engaged: the friends (SOCIALREC_REASON_FRIEND_IDS=true)")
    friend_count: int | None = Field(
        None, description="friends_engaged: how many friends engaged (always given)")


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    title: str | None = None
    category: str | None = None
    reasons: list[Reason] | None = None


class Recommendations(BaseModel):
    user_id: str
    model_version: str
    strategy: Literal["personal_social", "personal", "social_cold_start", "popular"]
    degraded: bool
    items: list[RecommendedItem]


class SimilarItems(BaseModel):
    item_id: str
    model_version: str
    degraded: bool
    items: list[RecommendedItem]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: Id | None = Field(
        None, description="your id of this event, unique per user: an event whose (user_id, "
        "event_id) was accepted in the last SOCIALREC_DEDUP_TTL_S seconds is a duplicate, not "
        "applied again; without one a retry cannot be recognised")
    user_id: Id
    type: EventType = Field(description="view, click, cart, purchase, rate, … or follow/unfollow")
    item_id: Id | None = None
    friend_id: Id | None = None
    # strict: a JSON number, as the document says; lax mode would take `true` for 1.0
    value: float | None = Field(None, allow_inf_nan=False, ge=0, le=1e12, strict=True)
    timestamp: float | None = Field(None, allow_inf_nan=False, ge=0, le=1e11, strict=True,
                                    description="unix seconds")

    @model_validator(mode="after")
    def _target_matches_type(self) -> EventIn:
        if self.type in SOCIAL_TYPES:
            if self.friend_id is None:
                raise ValueError(f"friend_id is required for type {self.type!r}")
            if self.friend_id == self.user_id:
                raise ValueError("friend_id must differ from user_id")
        elif self.item_id is None:
            raise ValueError(f"item_id is required for type {self.type!r}")
        return self


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsAccepted(BaseModel):
    accepted: int
    duplicates: int


class HistoryEntry(BaseModel):
    item_id: str
    weight: float
    known_to_model: bool
    title: str | None = None
    category: str | None = None


class Friend(BaseModel):
    user_id: str
    weight: float


class UserView(BaseModel):
    user_id: str
    history: list[HistoryEntry]
    friends: list[Friend]


class Removed(BaseModel):
    history_items: int = Field(description="items of the recent history")
    friends: int = Field(description="entries of the user's own friend list")
    follower_links: int = Field(description="the user's entries in other users' friend lists")
    seen_items: int = Field(description="items of the seen set (kept to exclude seen items)")
    cached_vectors: int
    event_markers: int = Field(description="de-duplication markers of the user's events")
    log_events: int = Field(description="durable log entries by the user or following or "
                            "unfollowing the user")


class UserErased(BaseModel):
    user_id: str
    removed: Removed


class Problem(BaseModel):
    """The body of every error but a 422: `{"detail": "what went wrong"}`."""

    detail: str


class Status(BaseModel):
    status: str
    model_version: str | None = None
    reason: str | None = Field(None, description="why the service is not ready")
    reload_error: str | None = Field(
        None, description="this process could not load the model of the last reload and "
        "still serves model_version")


class Reloaded(BaseModel):
    model_version: str
    previous_version: str | None


class ItemIn(BaseModel):
    """A catalogue write: only the fields given change; `available` defaults to true for a new
    item."""

    model_config = ConfigDict(extra="forbid")

    title: Line | None = Field(None, max_length=MAX_TITLE)
    category: Line | None = Field(None, max_length=MAX_CATEGORY)
    tags: list[Tag] | None = Field(None, max_length=MAX_TAGS)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    available: bool | None = Field(None, strict=True, description="false: never recommended "
                                   "until set true again")


class BulkItemIn(ItemIn):
    item_id: Id


class ItemsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[BulkItemIn] = Field(min_length=1, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _distinct(self) -> ItemsIn:
        seen: set[str] = set()
        for item in self.items:
            if item.item_id in seen:
                raise ValueError(f"item_id {item.item_id!r} appears twice")
            seen.add(item.item_id)
        return self


class ItemOut(BaseModel):
    item_id: str
    title: str
    category: str
    tags: list[str]
    description: str
    available: bool
    known_to_model: bool = Field(description="the served model learned or described this item")
    vector_source: Literal["model", "text", "none"] = Field(
        description="model: learned from interactions; text: projected from the item's text "
        "(the model's export or this catalogue); none: no vector (recommended only by "
        "popularity)")


class ItemsWritten(BaseModel):
    created: int
    updated: int
    unchanged: int


class ItemWithdrawn(BaseModel):
    item_id: str
    withdrawn: bool
    changed: bool = Field(description="false: it was withdrawn already")
