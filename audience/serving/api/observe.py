"""Request ids, latency, Prometheus metrics, JSON logs and the body-size bound.

One pure ASGI layer does all of it (Starlette's `BaseHTTPMiddleware` costs more per
request than the lookup it would wrap). Metric children are cached per label set and the
access log can be sampled (`AUDIENCE_ACCESS_LOG_SAMPLE`; errors and slow requests are
always logged), so observing a request costs microseconds.

Metrics with several uvicorn workers: each worker is a process with its own counters.
`audience serve --workers N` (N > 1) sets PROMETHEUS_MULTIPROC_DIR to a fresh folder
before the workers start; prometheus_client then keeps the values in files there and
/metrics, whichever worker answers it, adds up every worker's.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Requests slower than this are always logged.
SLOW_SECONDS = 0.25
MAX_REQUEST_ID = 64
#: Longest query string accepted. A schema-valid query can carry `like` and `category` at
#: their longest (2,707 characters) with every character 4 UTF-8 bytes percent-encoded
#: (12 bytes): 32.5 KB. The bound sits above that, so an over-long parameter is refused
#: by the schema's own bound (a 422 naming it), and only an absurd query by this one.
MAX_QUERY_STRING = 40 * 1024
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every `extra` field."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def log_config(level: str) -> dict[str, Any]:
    """`logging.config.dictConfig` for uvicorn and audience: JSON lines on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"json": handler},
        "loggers": {
            name: {"handlers": ["json"], "level": level.upper(), "propagate": False}
            for name in ("audience", "uvicorn", "uvicorn.error")
        }
        | {"uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}},
    }


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        r = self.registry
        self.requests = Counter(
            "audience_http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "audience_http_request_duration_seconds",
            "Time from request to the end of the response, by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.artifact = Gauge(
            "audience_artifact_loaded",
            "1 for the artifact version being served, 0 for versions served before",
            ["version"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.created = Gauge(
            "audience_artifact_created_timestamp_seconds",
            "When the served artifact was trained (age = time() - this)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.reloads = Counter(
            "audience_artifact_reloads", "Artifact reloads, by result", ["result"], registry=r
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def serving(self, old: str | None, new: str, created: float) -> None:
        if old is not None and old != new:
            self.artifact.labels(old).set(0)
        self.artifact.labels(new).set(1)
        self.created.set(created)

    def exposition(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class AccessLog:
    """One JSON line per request: all errors and slow ones, 1 in k of the rest.

    At thousands of requests a second, `logging` (a LogRecord, a lock, a write and a
    flush per line) cost a fifth of the throughput when measured; so lines are encoded
    with orjson into a buffer written with one `os.write` per ~4 KB (whole lines, so
    workers sharing stderr never split one) and by `flush()`, which the app calls every
    quarter second and at shutdown. The fields match `JsonFormatter`'s; a log level
    above info (AUDIENCE_LOG_LEVEL) switches it off.
    """

    CHUNK = 4000

    def __init__(self, sample: float, level: str = "info", fd: int = 2) -> None:
        self.enabled = level in ("debug", "info")
        self.every = 0 if sample <= 0 else max(1, round(1 / sample))
        self.fd = fd
        self._count = itertools.count()
        self._lines: list[bytes] = []
        self._size = 0

    def __call__(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        ordinary = status < 400 and seconds < SLOW_SECONDS
        if ordinary and (self.every == 0 or next(self._count) % self.every):
            return
        if not self.enabled:
            return
        line = orjson.dumps(
            {
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "level": "info" if status < 500 else "error",
                "logger": "audience.access",
                "message": "request",
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "ms": round(seconds * 1000, 3),
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines, self._size = [], 0
        with contextlib.suppress(OSError):  # a closed stderr must not fail requests
            os.write(self.fd, data)


class BodyTooLargeError(HTTPException):
    """An HTTPException, so that FastAPI's body parsing passes it on unchanged."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"request body over {limit:,} bytes: send fewer items per call "
            "(AUDIENCE_MAX_BODY_BYTES sets the bound)",
        )


class Observe:
    """ASGI layer: request id, body bound, metrics and access log around every request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access: AccessLog, max_body: int) -> None:
        self.app, self.metrics, self.access, self.max_body = app, metrics, access, max_body
        self._prefix = f"{os.getpid():x}-"
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id, length = self._headers(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            if len(scope["query_string"]) > MAX_QUERY_STRING:
                status = 414
                message = f"query string over {MAX_QUERY_STRING:,} bytes"
                await _reject(send_with_id, 414, "query_too_long", message)
                return
            if length is not None and length > self.max_body:
                raise BodyTooLargeError(self.max_body)
            await self.app(scope, self._bounded(receive), send_with_id)
        except BodyTooLargeError as exc:
            status = 413
            await _reject(send_with_id, 413, "body_too_large", str(exc.detail))
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status, seconds)
            self.access(scope, status, seconds, request_id)

    def _headers(self, scope: Scope) -> tuple[str, int | None]:
        request_id, length = None, None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and 0 < len(value) <= MAX_REQUEST_ID and value.isascii():
                request_id = value.decode()
            elif name == b"content-length" and value.isdigit():
                length = int(value)
        return request_id or f"{self._prefix}{next(self._ids)}", length

    def _bounded(self, receive: Receive) -> Receive:
        """`receive` that stops a body (chunked or lying about its length) at max_body."""
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise BodyTooLargeError(self.max_body)
            return message

        return bounded


async def _reject(send: Send, status: int, code: str, message: str) -> None:
    """Answer before the app sees the request (it is out of bounds)."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except RuntimeError:
        pass  # the response had started; the server closes the connection


def stderr_warning(text: str) -> None:
    """A banner no operator can miss, besides the JSON log line."""
    print(f"\n!!! {text} !!!\n", file=sys.stderr, flush=True)
