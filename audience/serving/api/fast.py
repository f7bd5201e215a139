"""The hot path: a well-formed, authorised `GET /recommend/{product_id}` answered below
FastAPI's routing.

FastAPI's routing, dependency injection and parameter validation, not the cached lookup,
capped one worker near 4k requests/s on the load test (docs/benchmarks.md). This ASGI layer
recognises the common case (a GET on /recommend/<id>, a valid key, `n`, `like` and
`category` well formed and in bounds) and answers it from the same `recommend_body` the
FastAPI route uses. Anything else, every error included, goes on to FastAPI unchanged,
so each error is still produced and worded in one place and the OpenAPI document still
describes the route. It sits inside `Observe`, so these requests are counted, timed and
logged like any other, under the route's own template.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from audience.serving.api.auth import HEADER, ApiKeys
from audience.serving.api.errors import ApiError
from audience.serving.api.holder import IndexHolder
from audience.serving.api.models import MAX_ID, MAX_LIKE_TEXT
from audience.serving.api.observe import ASGIApp, Receive, Scope, Send
from audience.serving.api.routes import BATCH, RECOMMEND, recommend_body

PREFIX = "/recommend/"
_HEADERS = [(b"content-type", b"application/json")]
_KEY = HEADER.lower().encode()  # ASGI header names are lower-case bytes


@dataclass(frozen=True)
class Template:
    """Stands in for FastAPI's route in `scope["route"]`: Observe labels by its `path`."""

    path: str


_ROUTE = Template(RECOMMEND)


class FastRecommend:
    """ASGI layer: answer plain /recommend GETs itself, pass everything else on."""

    def __init__(self, app: ASGIApp, holder: IndexHolder, keys: ApiKeys) -> None:
        self.app, self.holder, self.keys = app, holder, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self._answer(scope) if scope["type"] == "http" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = _ROUTE  # the template Observe labels the metrics with
        headers = [*_HEADERS, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _answer(self, scope: Scope) -> bytes | None:
        """The answer's bytes, or None when FastAPI should handle the request."""
        path: str = scope["path"]
        if scope["method"] != "GET" or not path.startswith(PREFIX) or scope.get("root_path"):
            return None
        if path == BATCH:
            return None  # the batch endpoint's path: a 405 for GET, from FastAPI
        product = path[len(PREFIX) :]
        if not 0 < len(product) <= MAX_ID or "/" in product:
            return None
        if self.keys and not self.keys.accepts(_header(scope, _KEY)):
            return None
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        n, like, category = query.get("n"), query.get("like"), query.get("category")
        if n is not None and not (n.isascii() and n.isdigit()):
            return None
        if like is not None and len(like) > MAX_LIKE_TEXT:
            return None
        if category is not None and len(category) > MAX_ID:
            return None
        loaded = self.holder.loaded
        if loaded is None:
            return None
        try:
            return recommend_body(loaded, product, None if n is None else int(n), like, category)
        except ApiError:
            return None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None
