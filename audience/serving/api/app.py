"""`create_app(settings)`: the FastAPI service over one artifact root.

Start-up loads the current artifact (and fails if it cannot: a server without a model
is not ready to be anything). Then a poller checks `ARTIFACT/current` every
`reload_seconds` in a worker thread and swaps in a new version once it has loaded and
verified; SIGHUP to a worker triggers the same check at once (to uvicorn's supervisor,
with several workers, it starts a rolling restart, each new worker loading the current
artifact before the old one stops). Nothing happens at import time.

Opt-outs are read from the store (`audience.store`) at start-up, where a store that
cannot be read stops the start, and on every poll, where it keeps the last snapshot.

Access: /recommend*, /users/*, /abtest/*, /segments*, /optouts* and /campaigns* need a
key from AUDIENCE_API_KEYS in the X-API-Key header; with no keys configured they are
open and the start-up log says so.
/health, /ready, /metrics, /products* and the docs are always open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from audience import __version__
from audience.errors import ArtifactError
from audience.serving.api import errors, openapi
from audience.serving.api.abtest_routes import abtest_router
from audience.serving.api.auth import ApiKeys
from audience.serving.api.campaign_routes import campaign_router
from audience.serving.api.fast import FastRecommend
from audience.serving.api.holder import IndexHolder, Loaded
from audience.serving.api.observe import AccessLog, Metrics, Observe, stderr_warning
from audience.serving.api.optout_routes import optout_router
from audience.serving.api.routes import audience_router, catalog_router, ops_router
from audience.serving.api.segment_routes import segment_router
from audience.serving.index import Index
from audience.settings import Settings
from audience.store.store import Store

log = logging.getLogger("audience.api")

OPEN_WARNING = (
    "NO API KEYS CONFIGURED: /recommend, /users, /abtest, /segments, /optouts and /campaigns "
    "are OPEN to anyone who can reach this address (demo mode). Set "
    "AUDIENCE_API_KEYS=key1,key2 to require X-API-Key"
)
DESCRIPTION = """Who to contact about a product, with the evidence, from a trained artifact.

**Access.** `/recommend*`, `/users/*`, `/abtest/*`, `/segments*`, `/optouts*` and
`/campaigns*` need a key in the `X-API-Key` header when the server has keys
(`AUDIENCE_API_KEYS`); `/health`, `/ready`, `/metrics`, `/products*` and these docs are
open. Every error is JSON:
`{"error": {"code", "message", "field"}}`.
"""


def create_app(
    settings: Settings | None = None,
    *,
    index: Index | None = None,
    signals: bool = True,
    log_fd: int = 2,
    ui: bool = True,
) -> FastAPI:
    """The service. `index`: one already loaded from `settings.artifact` (saves a reload);
    `log_fd`: where access lines go (stderr); `ui`: mount the merchant UI under /ui."""
    settings = settings or Settings()
    store = Store.open(settings.database_url, settings.artifact)
    holder = IndexHolder(settings.artifact, store=store)
    metrics = Metrics()
    _watch(holder, metrics)
    if index is not None:
        holder.adopt(index)
    access = AccessLog(settings.access_log_sample, settings.log_level, log_fd)
    app = FastAPI(
        title="audience",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(holder, settings, signals, access),
    )
    app.state.holder = holder
    keys = ApiKeys(settings.api_keys)
    auth = keys.dependencies()
    app.include_router(audience_router(holder, settings.max_batch, auth))
    app.include_router(abtest_router(holder, auth))
    app.include_router(segment_router(holder, settings, auth))
    app.include_router(optout_router(holder, store, auth))
    app.include_router(campaign_router(holder, settings, auth))
    app.include_router(catalog_router(holder))
    app.include_router(ops_router(holder, metrics))
    errors.install(app)
    openapi.install(app, holder, settings.max_batch)
    if ui:
        from audience.serving import (
            ui as merchant_ui,  # gradio: imported only where the UI is served
        )

        merchant_ui.mount(app, holder.get, settings.results, store, settings)
    app.add_middleware(FastRecommend, holder=holder, keys=keys)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=False,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type", "X-Request-ID"],
        )
    app.add_middleware(Observe, metrics=metrics, access=access, max_body=settings.max_body_bytes)
    return app


def _watch(holder: IndexHolder, metrics: Metrics) -> None:
    """Keep the artifact metrics in step with the holder."""

    def swapped(old: Loaded | None, new: Loaded) -> None:
        before = None if old is None else old.index.version
        metrics.serving(before, new.index.version, new.index.created_at.timestamp())
        if old is not None:
            metrics.reloads.labels("ok").inc()

    def refused(exc: ArtifactError) -> None:
        metrics.reloads.labels("failed").inc()

    holder.status.on_swap.append(swapped)
    holder.status.on_refuse.append(refused)


def _lifespan(
    holder: IndexHolder, settings: Settings, signals: bool, access: AccessLog
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if holder.loaded is None:
            await asyncio.to_thread(holder.load)  # ArtifactError: the server does not start
        # A server never starts without knowing who opted out (StoreError: it does not).
        await asyncio.to_thread(_first_optouts, holder)
        index = holder.get()
        assert index is not None
        log.info("serving", extra={"version": index.version, "artifact": str(holder.root)})
        if not settings.api_keys:
            log.warning(OPEN_WARNING)
            stderr_warning(OPEN_WARNING)
        tasks: set[asyncio.Task[Any]] = set()
        if settings.reload_seconds > 0:
            tasks.add(asyncio.create_task(_poll(holder, settings.reload_seconds)))
        tasks.add(asyncio.create_task(_flush(access)))
        hup = _on_sighup(holder, tasks) if signals else False
        try:
            yield
        finally:
            if hup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            access.flush()

    return lifespan


def _first_optouts(holder: IndexHolder) -> None:
    assert holder.store is not None
    holder.store.optouts()  # raises StoreError: no snapshot to fall back on yet
    holder.sync_optouts()


async def _poll(holder: IndexHolder, every: float) -> None:
    """Every `every` seconds: check for a new version (loading it in a thread), and read
    the opt-outs."""
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(holder.check)
            await asyncio.to_thread(holder.sync_optouts)
        except Exception:  # never let the poller die: the next round tries again
            log.exception("artifact check failed")


async def _flush(access: AccessLog, every: float = 0.25) -> None:
    """Write buffered access lines at least every `every` seconds."""
    while True:
        await asyncio.sleep(every)
        access.flush()


def _check_all(holder: IndexHolder) -> None:
    holder.check(True)
    holder.sync_optouts()


def _on_sighup(holder: IndexHolder, tasks: set[asyncio.Task[Any]]) -> bool:
    """SIGHUP: check now, trying even a version refused before. False where unsupported."""
    loop = asyncio.get_running_loop()

    def handle() -> None:
        log.info("SIGHUP: checking for a new artifact")
        task = loop.create_task(asyncio.to_thread(_check_all, holder))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, handle)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        return False  # not the main thread (TestClient) or no SIGHUP (Windows)
    return True
