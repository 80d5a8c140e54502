"""A lean route for GET /recommend/{user_id}, the service's hot route.

FastAPI's generic request handler resolves the dependencies and validates every parameter
through pydantic on each request (~0.1 ms here, a large share of a cached list's hit).
`QuickRecommendRoute` is declared exactly like a plain route (same endpoint, same signature),
so the OpenAPI document is FastAPI's own; its handler reads the parameters itself when every
one is in the plain, unambiguous form a client sends (`k=20`, `explain=true`, ids matching
the id pattern, no repeated scalar) and calls the endpoint directly. Anything else — an
invalid value, or a valid one in another spelling pydantic also accepts (`k=+5`,
`explain=yes`) — goes to FastAPI's generic handler, so a 422 body, and every accepted
spelling, is exactly the plain route's (tests/api/test_quick_route.py compares them).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import annotated_types
from fastapi import Request, Response
from fastapi.routing import APIRoute

from app.api.deps import get_state

_SMALL_INT = re.compile(r"[1-9][0-9]{0,5}")
_BOOLS = {"true": True, "false": False}

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


@dataclass(frozen=True, slots=True)
class _Param:
    """A query parameter as the endpoint declares it: `kind` int, bool or list (of strings,
    each matching `pattern` when set), its bounds and its default."""

    kind: str
    default: Any
    low: int | None = None
    high: int | None = None  # an int's maximum, or a list's maximum length
    pattern: re.Pattern[str] | None = None


class QuickRecommendRoute(APIRoute):
    """A GET route whose plainly spelled requests skip FastAPI's generic handler. Every
    parameter's rules are read from the endpoint's declaration once; a declaration this
    handler cannot read (another type, an alias, a constraint it does not know, a dependency
    besides the app state, which the shortcut would skip) fails at startup instead."""

    def get_route_handler(self) -> Handler:
        generic = super().get_route_handler()
        d = self.dependant
        if [p.name for p in d.path_params] != ["user_id"] or d.header_params or \
                d.cookie_params or d.body_params:
            raise TypeError(f"{self.path}: QuickRecommendRoute reads one path parameter, "
                            "user_id, and query parameters")
        if [(s.name, s.call) for s in d.dependencies] != [("state", get_state)]:
            raise TypeError(f"{self.path}: QuickRecommendRoute passes the app state as "
                            "`state` and would skip any other dependency")
        user_id = _pattern(d.path_params[0].field_info.metadata)
        if user_id is None:
            raise TypeError(f"{self.path}: user_id needs a pattern")
        params = {p.alias: _param(p.name, p.alias, p.field_info) for p in d.query_params}
        endpoint = self.endpoint
        # the request itself, when the endpoint asks for it (FastAPI passes it by that name)
        wants_request = d.request_param_name

        async def handler(request: Request) -> Response:
            args = quick_args(request, user_id, params)
            if args is None:
                return await generic(request)
            if wants_request is not None:
                args[wants_request] = request
            return await endpoint(state=await get_state(request), **args)

        return handler


def quick_args(request: Request, user_id: re.Pattern[str],
               params: dict[str, _Param]) -> dict[str, Any] | None:
    """The endpoint's arguments, or None when the generic handler should decide."""
    uid = request.path_params.get("user_id")
    if not isinstance(uid, str) or user_id.fullmatch(uid) is None:
        return None
    args: dict[str, Any] = {"user_id": uid}
    lists: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        p = params.get(name)
        if p is None:
            continue  # an unknown parameter: ignored, as FastAPI does
        if p.kind == "list":
            if p.pattern is not None and p.pattern.fullmatch(value) is None:
                return None
            lists.setdefault(name, []).append(value)
            continue
        if name in args:
            return None  # a repeated scalar: which one counts is FastAPI's rule
        if p.kind == "int":
            if _SMALL_INT.fullmatch(value) is None:
                return None
            n = int(value)
            if (p.low is not None and n < p.low) or (p.high is not None and n > p.high):
                return None
            args[name] = n
        else:
            flag = _BOOLS.get(value)
            if flag is None:
                return None
            args[name] = flag
    for name, p in params.items():
        if p.kind == "list":
            got = lists.get(name)
            if got is None:
                args[name] = list(p.default)
            elif p.high is not None and len(got) > p.high:
                return None
            else:
                args[name] = got
        elif name not in args:
            args[name] = p.default
    return args


def _param(name: str, alias: str, info: Any) -> _Param:
    if alias != name:
        raise TypeError(f"query parameter {name}: an alias is not supported here")
    low = high = None
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            low = int(m.ge)  # type: ignore[call-overload]
        elif isinstance(m, annotated_types.Le):
            high = int(m.le)  # type: ignore[call-overload]
        elif isinstance(m, annotated_types.MaxLen):
            high = m.max_length
        else:
            raise TypeError(f"query parameter {name}: constraint {m!r} is not supported here")
    default = info.get_default(call_default_factory=True)
    annotation = info.annotation
    if annotation is int:
        return _Param("int", default, low, high)
    if annotation is bool and low is None and high is None:
        return _Param("bool", default)
    if typing.get_origin(annotation) is list and low is None:
        (element,) = typing.get_args(annotation)
        if element is str:
            return _Param("list", default, high=high)
        if typing.get_origin(element) is typing.Annotated:
            base, *extra = typing.get_args(element)
            pattern = _pattern(extra)
            if base is str and pattern is not None and len(extra) == 1:
                return _Param("list", default, high=high, pattern=pattern)
    raise TypeError(f"query parameter {name}: {annotation} is not supported here")


def _pattern(metadata: Any) -> re.Pattern[str] | None:
    """The one pattern constraint in `metadata`, anchored at both ends and matched whole
    (fullmatch: Python's `$` would also let a trailing newline through, pydantic's does not);
    None when there is none, TypeError for anything else."""
    found = None
    for m in metadata:
        pattern = getattr(m, "pattern", None)
        if not isinstance(pattern, str):
            raise TypeError(f"constraint {m!r} is not supported here")
        if not (pattern.startswith("^") and pattern.endswith("$")) or found is not None:
            raise TypeError(f"pattern {pattern!r} is not supported here")
        if any(getattr(m, f, None) not in (None, pattern) for f in (
                "min_length", "max_length", "strip_whitespace", "to_upper", "to_lower",
                "strict", "ascii_only")):
            raise TypeError(f"constraint {m!r} is not supported here")
        found = re.compile(pattern[1:-1])
    return found
