"""The dashboard's FastAPI application factory and its server entry points."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from miroir import wire

from . import analytics, auth, fleet, prom, retention, schema
from . import db as store
from .ingest import Ingest
from .live import Hub
from .routes import api, boxes, cti, deps, health, ids, pages, session, stream
from .routes import fleet as fleet_routes
from .settings import DashboardSettings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
GRACEFUL_SHUTDOWN_S = 2
"""Seconds uvicorn gives open requests to finish at a stop before it closes them (a live stream
never finishes by itself), so that a stop or restart is quick."""


MAX_BODY_BYTES = auth.MAX_BODY_BYTES
"""Largest request body the dashboard reads: one limit with the CSRF check's read of a form
(:data:`dashboard.auth.MAX_BODY_BYTES`), 413 beyond."""


class _Dashboard(FastAPI):
    """FastAPI with the protective headers outermost: FastAPI puts its body limit (413) and its
    server error answer (500) outside every middleware added with ``add_middleware``."""

    def build_middleware_stack(self) -> ASGIApp:
        """The stack FastAPI builds, its body limit's answer as :class:`_TooLargeAnswer` gives
        it, wrapped in :class:`auth.SecurityHeadersMiddleware`."""
        return auth.SecurityHeadersMiddleware(
            _HeadAsGet(_TooLargeAnswer(super().build_middleware_stack())))


class _HeadAnswered(Exception):
    """Raised into the GET a HEAD runs as once the HEAD's answer is complete (its headers): the
    rest of a long body (the live stream, which never ends) is not made."""


class _HeadAsGet:
    """A HEAD request answered as its GET, without the body: FastAPI's routes take only the
    methods they name, so HEAD (uptime monitors, ``curl -I``) got 405 everywhere. The answer ends
    at the first part of the body: a stream's HEAD (``/api/stream``) held its request open, and a
    place of the user's live streams, until the client hung up."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] != "http.response.body":
                await send(message)
                return
            await send({"type": "http.response.body", "body": b""})
            if message.get("more_body", False):
                raise _HeadAnswered

        try:
            await self.app({**scope, "method": "GET", auth.HEAD_AS_GET: True}, receive,
                           send_headers_only)
        except _HeadAnswered:
            log.debug("HEAD %s answered before its body ended", scope["path"])


class _TooLargeAnswer:
    """The body limit's 413 answered as every other error: Starlette's limiter, outside the
    app's exception handlers, sends a plain English "Content Too Large"; a browser gets the
    error page in the user's language instead, a client of the JSON API a JSON ``detail``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_answer(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the rest of the limiter's plain answer
            if message["type"] == "http.response.start" and message["status"] == 413 \
                    and _plain_text(message):
                replaced = True
                exc = StarletteHTTPException(status_code=413, detail=TOO_LARGE)
                response = await deps.page_error(Request(scope), exc)
                await response(scope, receive, auth.no_store(send))  # as every other error
                return
            await send(message)

        await self.app(scope, receive, send_answer)


TOO_LARGE = "Content Too Large"
"""The ``detail`` of a 413 (the body limit's own words)."""


def _plain_text(message: Message) -> bool:
    """True for a response start whose body is plain text (the body limiter's, never a page's
    nor the API's)."""
    return any(k.lower() == b"content-type" and v.startswith(b"text/plain")
               for k, v in message.get("headers", []))


class _SlashRedirect:
    """The router's answer to a path no route takes: a 307 to the same path with its trailing
    slash taken off (or one added) when a route takes that, else the 404.

    Starlette's own (``redirect_slashes``) writes an absolute Location from the request as
    uvicorn saw it: behind the reverse proxy that is ``http://`` (uvicorn does not believe
    X-Forwarded-Proto) and whatever Host the client sent. This one writes the path and query
    only (:func:`local_location`), which the browser resolves on the address it asked."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope["type"] == "http" and path != "/":
            moved = {**scope, "path": path.rstrip("/") if path.endswith("/") else path + "/"}
            if any(route.matches(moved)[0] is not Match.NONE for route in self.router.routes):
                location = local_location(moved["path"], scope.get("query_string", b""))
                await RedirectResponse(location, status_code=307)(scope, receive, send)
                return
        await self.router.not_found(scope, receive, send)


def local_location(path: str, query_string: bytes) -> str:
    """``path`` and query as a Location on this site: never ``//host`` nor ``/\\host``, which a
    browser would take for another site (:class:`starlette.responses.RedirectResponse` then
    escapes what is not allowed in a URL, spaces and control characters included)."""
    location = path.replace("\\", "%5C").replace("?", "%3F").replace("#", "%23")
    if location.startswith("//"):
        location = "/%2F" + location[2:]
    query = quote(query_string, safe=QUERY_AS_IS)  # raw bytes escaped one by one, as sent
    return f"{location}?{query}" if query else location


QUERY_AS_IS = ":/?=@[]!$&'()*+,;%"
"""What :func:`local_location` keeps of a query as it was sent: its ``%`` escapes stay escapes."""


def create_app(settings: DashboardSettings, *, start_ingest: bool = True) -> FastAPI:
    """Build the dashboard app: schema, initial admin, routes, and (optionally) the ingest.

    Args:
        settings: The dashboard's settings.
        start_ingest: Start the MQTT ingest in the app's lifespan (off for HTTP-only tests).

    Returns:
        The app. While it runs, ``app.state.ingest`` is the :class:`Ingest` (or None) and
        ``app.state.hub`` the live-push :class:`Hub`; ``app.state.password_checks`` bounds the
        password checks running at once.
    """
    wire.check_id(settings.site, "site")
    if start_ingest and None in (settings.mqtt_ca, settings.mqtt_cert, settings.mqtt_key):
        raise ValueError("mqtt_ca, mqtt_cert and mqtt_key are required to start the ingest")
    metrics_token = prom.read_token(settings.metrics_token_file)
    cti_token = prom.read_token(settings.cti_token_file, "CTI")
    db = store.open_db(settings.db_path)
    try:
        schema.ensure_schema(db)
        auth.ensure_admin(db, settings.admin_user, settings.admin_password_file)
        for line in auth.shared_agent_accounts(db):
            log.warning("%s", line)
        analytics.store_day_start(db, settings.day_start_utc_h)
    finally:
        db.conn.close()

    hub = Hub()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.bind(asyncio.get_running_loop())
        ingest: Ingest | None = None
        if start_ingest:
            ingest = Ingest(settings, notify=hub.publish)
            ingest.start()
        app.state.ingest = ingest
        loop, begun = asyncio.get_running_loop(), asyncio.Event()
        app.state.erasure_begun = lambda: loop.call_soon_threadsafe(begun.set)
        purger = asyncio.create_task(_purge_loop(settings, begun))
        alerter = asyncio.create_task(_alert_loop(settings))
        try:
            yield
        finally:
            app.state.erasure_begun = None
            purger.cancel()
            alerter.cancel()
            hub.bind(None)
            if ingest is not None:
                await run_in_threadpool(ingest.close)

    app = _Dashboard(title="Miroir dashboard", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json", max_body_size=auth.MAX_BODY_BYTES,
                  redirect_slashes=False)
    app.state.settings = settings
    app.state.hub = hub
    app.state.ingest = None
    app.state.erasure_begun = None
    app.state.metrics_token = metrics_token
    app.state.cti_token = cti_token
    app.state.cti_rate = auth.RateLimit(settings.cti_rate_per_s, settings.cti_burst)
    app.state.cti_counts = cti.CallStateCounts()
    app.state.password_checks = auth.CheckGate(settings.login_max_concurrent_checks)
    for module in (session, pages, api, boxes, stream, health, fleet_routes, cti):
        app.include_router(module.router)
    app.add_exception_handler(RequestValidationError, deps.page_error)
    app.add_exception_handler(StarletteHTTPException, deps.page_error)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.router.default = _SlashRedirect(app.router)  # in place of Starlette's redirect_slashes
    app.add_middleware(ids.IdPaths)  # innermost: routing reads an id's %2F as part of it
    # The protective headers go on every response (auth redirects, 413, 500): see _Dashboard.
    app.add_middleware(auth.AuthMiddleware, db_path=settings.db_path,
                       idle_s=settings.session_idle_s, secure=settings.secure_cookies)
    return app



async def _once(settings: DashboardSettings, job: Callable[[Any], object], what: str) -> None:
    """Run ``job(db)`` on a fresh connection in the thread pool; log its failure."""
    def once() -> None:
        db = store.open_db(settings.db_path)
        try:
            job(db)
        finally:
            db.conn.close()

    try:
        await run_in_threadpool(once)
    except Exception:
        log.exception("%s failed", what)


async def _every(settings: DashboardSettings, period_s: float, job: Callable[[Any], object],
                 what: str) -> None:
    """Run ``job(db)`` on a fresh connection in the thread pool now and every ``period_s``."""
    while True:
        await _once(settings, job, what)
        await asyncio.sleep(period_s)


async def _alert_loop(settings: DashboardSettings) -> None:
    """Raise and clear the fleet's offline alerts every ``fleet.ALERT_CHECK_S``."""
    await _every(settings, fleet.ALERT_CHECK_S,
                 lambda db: fleet.evaluate_alerts(db, restart_grace_s=settings.restart_grace_s),
                 "fleet alert evaluation")


async def _purge_loop(settings: DashboardSettings, erasure_begun: asyncio.Event) -> None:
    """Run the retention purge at start and every ``purge_interval_s``, and in between finish
    each erasure as soon as it is begun (``erasure_begun`` set: :func:`finish_erasures`)."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        erasure_begun.clear()  # before the job: one begun while it runs is seen next time
        full = loop.time() >= due
        job = (lambda db: retention.purge_with(db, settings)) if full else finish_erasures
        await _once(settings, job, "retention purge" if full else "erasure")
        if full:
            due = loop.time() + settings.purge_interval_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(erasure_begun.wait(), max(0.0, due - loop.time()))


def finish_erasures(db: Any) -> None:
    """Delete the per-second rows of the erasures under way, then flush the deletion out of the
    write-ahead log (:func:`dashboard.retention.finish_erasures`)."""
    out = retention.finish_erasures(db)
    log.info("erasure finished: %s per-second rows deleted", out)
    retention.flush_deleted(db)


def _uvicorn_config(app: FastAPI, settings: DashboardSettings) -> Any:
    import uvicorn

    tls: dict[str, Any] = {}
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        tls = {"ssl_certfile": str(settings.tls_cert_file),
               "ssl_keyfile": str(settings.tls_key_file)}
    # X-Forwarded-For is read by the app itself, from trusted_proxies only (auth.client_address).
    return uvicorn.Config(app, host=settings.http_host, port=settings.http_port,
                          log_level="info", server_header=False, proxy_headers=False,
                          timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **tls)


def _listen(host: str, port: int) -> socket.socket:
    """The dashboard's HTTP socket, bound before anything else starts.

    Raises:
        OSError: the address cannot be had (a port another process holds), naming it and its
            settings; uvicorn, left to bind it, logged its own line and exited 3 after the
            database, the admin and the purge had run.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port} (MIROIR_DASH_HTTP_HOST, "
                                 f"MIROIR_DASH_HTTP_PORT): {exc.strerror}") from None
    return sock


def serve(settings: DashboardSettings) -> None:
    """Run the dashboard (HTTP server and ingest) in this process until interrupted."""
    import uvicorn

    sock = _listen(settings.http_host, settings.http_port)
    try:
        server = uvicorn.Server(_uvicorn_config(create_app(settings), settings))
        server.run(sockets=[sock])
    finally:
        sock.close()


class DashboardServer:
    """The dashboard served by uvicorn in a background thread (tests and the demo)."""

    def __init__(self, settings: DashboardSettings, *, start_ingest: bool = True) -> None:
        self.settings = settings
        self.app = create_app(settings, start_ingest=start_ingest)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = settings.http_port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8000`` (``https`` when serving TLS directly)."""
        scheme = "https" if self.settings.tls_cert_file is not None else "http"
        return f"{scheme}://{self.settings.http_host}:{self.port}"

    @property
    def ingest(self) -> Ingest | None:
        """The running ingest (None before start or when not started)."""
        ingest: Ingest | None = self.app.state.ingest
        return ingest

    def start(self, timeout_s: float = 10.0) -> str:
        """Bind (port 0 picks a free port), start serving, wait until up; return the URL."""
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.http_host, self.settings.http_port))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(self.app, self.settings))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="dashboard-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._thread.is_alive():
            if self._server.started:
                return self.url
            time.sleep(0.02)
        raise RuntimeError("dashboard server did not start")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> DashboardServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
