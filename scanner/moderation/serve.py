"""`scanner serve`: the review queue in a browser (Starlette + Jinja2, served by uvicorn) over the same SQL database.

Security model: loopback by default; any other address needs reviewer tokens (SCANNER_SERVE_TOKEN or
SCANNER_SERVE_REVIEWERS) and refuses to start without them. Requests naming another host than this server's
(a DNS-rebinding page's) are refused before anything else. Every state-changing request needs the session
cookie (HttpOnly, SameSite=Strict) and its CSRF token; sessions are stored only once a token logs in.
Templates autoescape all text; images are served only for items in the database, through the scanner's size
and pixel limits; a strict Content-Security-Policy allows nothing but this server's own files.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from scanner.connect import SetupError, describe_db_error
from scanner.db import MAX_ID, Decision, Item, Job
from scanner.moderation import queue
from scanner.moderation.images import HEATMAP, SIDES, ImageCache, ImageUnavailable
from scanner.moderation.reports import (
    DECISION_FIELDS,
    JobNotFound,
    errors_by_code,
    iter_decision_rows,
    job_overview,
    job_status,
    recent_jobs,
    render_csv,
    render_json,
)
from scanner.safe_text import mask_passwords, printable
from scanner.settings import Settings

LOG = logging.getLogger("fauxscan.serve")
CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")  # fmt: skip
COOKIE = "fauxscan_session"
MAX_SESSIONS = 10_000
MAX_FORM_BYTES = 64_000
GRID_PAGE = 48  # thumbnails per grid page


@dataclass
class ServeConfig:
    """How the review app runs: where it listens, who may decide, and how it finds reviewer names."""

    host: str = "127.0.0.1"
    port: int = 8800
    tokens: dict[str, str | None] | None = None  # token -> reviewer (None: the reviewer types a name)
    reviewer: str = "reviewer"  # on loopback without tokens
    heatmaps: bool = True
    origin: str = ""  # the public origin behind a proxy (SCANNER_SERVE_ORIGIN), e.g. https://review.example.org

    @property
    def public_host(self) -> str:
        """The host name of the public origin ('' without one)."""
        return (urlsplit(self.origin).hostname or "") if self.origin else ""

    @property
    def requires_login(self) -> bool:
        """Whether a token is needed (always when one is configured)."""
        return bool(self.tokens)

    @property
    def asks_name(self) -> bool:
        """Whether the login form asks for a name (a shared token does not say who is reviewing)."""
        return bool(self.tokens) and None in (self.tokens or {}).values()


def is_loopback(host: str) -> bool:
    """Whether binding `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def reviewer_tokens(settings: Settings) -> dict[str, str | None]:
    """Tokens from SCANNER_SERVE_TOKEN (reviewer types a name) and SCANNER_SERVE_REVIEWERS (`name:token` lines)."""
    tokens: dict[str, str | None] = {}
    if settings.serve_token:
        tokens[settings.serve_token] = None
    if settings.serve_reviewers:
        try:
            lines = Path(settings.serve_reviewers).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise SetupError(
                f"cannot read SCANNER_SERVE_REVIEWERS {settings.serve_reviewers}: {exc.strerror}"
            ) from None
        for number, line in enumerate(lines, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, _, token = line.strip().partition(":")
            if not name.strip() or len(token.strip()) < 16:
                raise SetupError(f"SCANNER_SERVE_REVIEWERS line {number}: expected name:token, token of 16+ characters")
            tokens[token.strip()] = name.strip()
    for token in tokens:
        if len(token) < 16:
            raise SetupError("SCANNER_SERVE_TOKEN must be at least 16 characters (e.g. `openssl rand -hex 16`)")
    return tokens


def check_origin(origin: str) -> str:
    """SCANNER_SERVE_ORIGIN as scheme://host[:port], or a SetupError saying what is wrong with it."""
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username:  # fmt: skip
        raise SetupError(f"SCANNER_SERVE_ORIGIN must be like https://review.example.org[:port], not {origin!r}")
    return f"{parts.scheme}://{parts.netloc}"


def host_allowed(config: ServeConfig, host_header: str) -> bool:
    """Whether a request's Host names this server: loopback names, an address, the bound or the public name.

    A DNS-rebinding page reaches 127.0.0.1 under its own name, so any other name is refused; an address
    cannot be rebound, so addresses are accepted when the server listens beyond loopback.
    """
    try:
        name = (urlsplit(f"//{host_header}").hostname or "").lower()
    except ValueError:
        return False
    if name in ("localhost", config.host.lower().strip("[]"), config.public_host.lower()) and name:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or not is_loopback(config.host)


def check_binding(config: ServeConfig) -> None:
    """Refuse to listen beyond this machine without reviewer tokens."""
    if not is_loopback(config.host) and not config.requires_login:
        raise SetupError(
            f"--host {config.host} accepts connections from other machines: set SCANNER_SERVE_TOKEN "
            "(or SCANNER_SERVE_REVIEWERS) so that only reviewers with a token can see and decide"
        )


@dataclass
class Visitor:
    """One browser session: who it is (once logged in) and its CSRF token."""

    reviewer: str | None
    csrf: str
    draft: tuple[int, str] | None = None  # a note typed on an item whose decision found the session gone


DECISION_PATH = re.compile(r"/items/(\d{1,10})(/decision)?")


class Visitors:
    """Browser sessions: logged-in ones in memory (a restart logs everyone out), at most MAX_SESSIONS, oldest
    dropped first; anonymous ones stored nowhere, their CSRF token derived from the cookie, so that requests
    without a token cannot push a reviewer's session out."""

    def __init__(self, anonymous_reviewer: str | None) -> None:
        self._sessions: OrderedDict[str, Visitor] = OrderedDict()
        self._lock = threading.Lock()
        self._secret = secrets.token_bytes(32)
        self.anonymous_reviewer = anonymous_reviewer

    def get(self, session_id: str | None) -> Visitor | None:
        """The visitor for a cookie value: a logged-in one, else an anonymous one; None without a cookie."""
        if not session_id:
            return None
        with self._lock:
            stored = self._sessions.get(session_id)
        return stored or Visitor(self.anonymous_reviewer, self._anonymous_csrf(session_id))

    def anonymous(self) -> tuple[str, Visitor]:
        """A fresh cookie value and its anonymous visitor (nothing is stored)."""
        session_id = secrets.token_urlsafe(32)
        return session_id, Visitor(self.anonymous_reviewer, self._anonymous_csrf(session_id))

    def new(self, reviewer: str) -> tuple[str, Visitor]:
        """A fresh logged-in session id and visitor."""
        session_id, visitor = secrets.token_urlsafe(32), Visitor(reviewer, secrets.token_urlsafe(32))
        with self._lock:
            self._sessions[session_id] = visitor
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session_id, visitor

    def _anonymous_csrf(self, session_id: str) -> str:
        return hmac.new(self._secret, session_id.encode(), "sha256").hexdigest()

    def drop(self, session_id: str | None) -> None:
        """Forget a session (logout)."""
        with self._lock:
            self._sessions.pop(session_id or "", None)


def _shown(text: object) -> str:
    """User text for a page: URL passwords masked, control characters as \\xNN (HTML escaping is Jinja's)."""
    return printable(mask_passwords(str(text)) if text is not None else "")


def _templates() -> Jinja2Templates:
    loader = jinja2.FileSystemLoader(str(resources.files("scanner.moderation") / "templates" / "serve"))
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["shown"] = _shown
    env.filters["score"] = lambda value: "" if value is None else f"{value:.4f}"
    env.filters["utc"] = lambda moment: _aware(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Jinja2Templates(env=env)


class ReviewApp:
    """The routes, bound to one database, one image cache and one set of sessions."""

    def __init__(self, settings: Settings, sessions: Any, config: ServeConfig, images: ImageCache) -> None:
        self.settings, self.sessions, self.config, self.images = settings, sessions, config, images
        self.visitors = Visitors(None if config.requires_login else config.reviewer)
        self.templates = _templates()

    # ---- pages ------------------------------------------------------------------------------------------------
    def jobs(self, request: Request) -> Response:
        """Recent jobs with live progress."""
        return self._page(request, "jobs.html", {"jobs": self._job_rows()})

    def jobs_json(self, request: Request) -> Response:
        """The jobs page's figures as JSON (polled while jobs run)."""
        rows = self._job_rows()
        keep = ("job_id", "status", "items", "done", "queued", "errors", "flagged", "reviewed", "images_per_second")
        return JSONResponse([{k: row[k] for k in keep} for row in rows], headers={"Cache-Control": "no-store"})

    def _job_rows(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            return [self._job_row(session, job) for job in recent_jobs(session, 50)]

    def _job_row(self, session: Any, job: dict[str, Any]) -> dict[str, Any]:
        row = session.get(Job, job["job_id"])
        end = _aware(row.finished_at) if row.finished_at else datetime.now(UTC)
        elapsed = (end - _aware(row.created_at)).total_seconds() if row.created_at else 0.0
        reviewed = session.scalar(
            select(func.count(func.distinct(Decision.item_id)))
            .join(Item, Item.id == Decision.item_id)
            .where(Item.job_id == job["job_id"], queue.STANDING)
        )
        rate = round(job["done"] / elapsed, 1) if elapsed > 0 and job["done"] else None
        return {**job, "model_version": row.model_version, "threshold": row.threshold,
                "reviewed": reviewed or 0, "images_per_second": rate}  # fmt: skip

    def job_queue(self, request: Request) -> Response:
        """A job's queue: flagged first by score, filtered and paginated."""
        job_id = request.path_params["job_id"]
        problem = ""
        try:
            filters = queue.QueueFilter.parse(request.query_params)
        except queue.FilterError as exc:  # the queue page again, its form cleared, saying what was wrong
            filters, problem = queue.QueueFilter(), str(exc)
        page_number = _int(request.query_params.get("page"), 1)
        with self.sessions() as session:
            try:
                page = None if problem else queue.queue_page(session, job_id, filters, page_number)
                status = job_overview(session, job_id)
            except JobNotFound as exc:
                return self._error(request, 404, str(exc))
        context = {"job": status, "page": page, "filters": filters, "codes": list(status["errors_by_code"]),
                   "problem": problem}  # fmt: skip
        return self._page(request, "queue.html", context, 400 if problem else 200)

    def job_grid(self, request: Request) -> Response:
        """A job's queue as a grid of thumbnails, to select many and decide on them at once."""
        job_id = request.path_params["job_id"]
        filters = self._filters(request)
        if isinstance(filters, Response):
            return filters
        with self.sessions() as session:
            try:
                page = queue.queue_page(session, job_id, filters, _int(request.query_params.get("page"), 1), GRID_PAGE)
                status = job_overview(session, job_id)
            except JobNotFound as exc:
                return self._error(request, 404, str(exc))
        context = {"job": status, "page": page, "filters": filters, "toast": _bulk_toast(request.query_params)}
        return self._page(request, "grid.html", context)

    async def bulk_decide(self, request: Request) -> Response:
        """Record one decision on every selected item of a grid page that nobody decided on since it was shown."""
        posted = await self._posted(request, max_fields=queue.BULK_LIMIT + 10)
        if isinstance(posted, Response):
            return posted
        form, visitor, filters = posted
        job_id = request.path_params["job_id"]
        seen_by_item = {}
        for value in form.getlist("item"):
            item_id, _, seen = str(value).partition(":")
            if not (item_id.isdigit() and seen.isdigit()) or not 1 <= int(item_id) <= MAX_ID:
                return self._error(request, 400, f"unusable item selection {str(value)[:40]!r}")
            seen_by_item[int(item_id)] = int(seen)
        decision, note = str(form.get("decision", "")), (form.get("note") or "").strip() or None
        if not seen_by_item:
            return self._error(request, 400, "no item selected: select items (x, or a for the whole page) first")
        try:
            outcome = await run_in_threadpool(
                queue.decide_many, self.sessions, job_id, seen_by_item, decision, visitor.reviewer or "", note
            )
        except queue.ReviewError as exc:
            return self._error(request, 400, str(exc))
        except SQLAlchemyError:
            return self._error(request, 503, "the database did not answer; reload the grid to see what was recorded")
        missed = ",".join(map(str, outcome.conflicts[:50]))
        page = _int(request.query_params.get("page"), 1)
        back = filters.query_string(page=page, bulk=decision, recorded=len(outcome.recorded), missed=missed)
        return RedirectResponse(f"/jobs/{job_id}/grid?{back}", status_code=303)

    def job_errors(self, request: Request) -> Response:
        """A job's errors by code, and the skipped files."""
        job_id = request.path_params["job_id"]
        with self.sessions() as session:
            try:
                status = job_status(session, job_id)
            except JobNotFound as exc:
                return self._error(request, 404, str(exc))
            codes = errors_by_code(session, job_id)
        return self._page(request, "errors.html", {"job": status, "codes": codes})

    def decisions_export(self, request: Request) -> Response:
        """Every decision on the job's items, oldest first, as CSV or JSON (a download, streamed)."""
        job_id, fmt = request.path_params["job_id"], request.path_params["fmt"]
        if fmt not in ("csv", "json"):
            return self._error(request, 404, f"decisions are exported as .csv or .json, not .{fmt}")
        with self.sessions() as session:
            try:
                status = job_status(session, job_id)
            except JobNotFound as exc:
                return self._error(request, 404, str(exc))

        def chunks() -> Iterator[str]:
            with self.sessions() as session:
                rows = iter_decision_rows(session, job_id)
                yield from render_csv(rows, DECISION_FIELDS) if fmt == "csv" else render_json(rows, status, "decisions")

        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
        headers = {"Content-Disposition": f'attachment; filename="job-{job_id}-decisions.{fmt}"'}
        return StreamingResponse(chunks(), media_type=media, headers=headers)

    def next_item(self, request: Request) -> Response:
        """Go to the next unreviewed item of the filtered queue (after `after`, if given)."""
        job_id = request.path_params["job_id"]
        if not 1 <= job_id <= MAX_ID:
            return self._error(request, 404, f"no job with id {job_id}")
        filters = self._filters(request)
        if isinstance(filters, Response):
            return filters
        after = _int(request.query_params.get("after"), 0) or None
        recorded = _int(request.query_params.get("recorded"), 0) or None  # the toast on the page it lands on
        with self.sessions() as session:
            busy = queue.held_by_others(session, _holder(request))
            item_id = queue.next_unreviewed(session, job_id, filters, after, busy)
        if item_id is None:
            return RedirectResponse(f"/jobs/{job_id}?{filters.query_string(done=1)}", status_code=303)
        return RedirectResponse(f"/items/{item_id}?{filters.query_string(recorded=recorded)}", status_code=303)

    def item(self, request: Request, conflict: queue.DecisionOutcome | None = None) -> Response:
        """One item: the image large, its heatmap, the verdict, and every decision so far."""
        item_id = request.path_params["item_id"]
        filters = self._filters(request)
        if isinstance(filters, Response):
            return filters
        holder = _holder(request)
        with self.sessions() as session:
            detail = queue.item_detail(session, item_id)
        if detail is None:
            return self._error(request, 404, f"no item with id {item_id}")
        with self.sessions.begin() as session:  # held only once it exists: every queue query carries these ids
            queue.hold(session, item_id, holder)  # the write first: SQLite cannot turn a read into a write waiting
            job_id = detail["item"].job_id
            previous = queue.neighbour(session, job_id, filters, item_id, forward=False)
            following = queue.neighbour(session, job_id, filters, item_id, forward=True)
            skip_to = queue.next_unreviewed(session, job_id, filters, item_id, queue.held_by_others(session, holder))
        standing = [decision for decision in detail["history"] if decision.retracted_at is None]
        seen = standing[-1].id if standing else 0
        visitor: Visitor | None = getattr(request.state, "visitor", None)
        toast, undoable = self._toast(request, job_id, visitor)
        draft_note = ""
        if visitor is not None and visitor.draft is not None and visitor.draft[0] == item_id:
            draft_note, visitor.draft = visitor.draft[1], None
        context = {**detail, "filters": filters, "previous": previous, "following": following, "skip_to": skip_to,
                   "seen": seen, "conflict": conflict, "heatmaps": self.config.heatmaps,
                   "draft_note": draft_note, "toast": toast, "undoable": undoable}  # fmt: skip
        return self._page(request, "item.html", context, status_code=409 if conflict else 200)

    def _toast(self, request: Request, job_id: int, visitor: Visitor | None) -> tuple[str, Any]:
        """What the page says the reviewer just did (a decision recorded, one undone), and their last decision in
        the job that still counts, which the undo key retracts."""
        if visitor is None or not visitor.reviewer:
            return "", None
        recorded = _int(request.query_params.get("recorded"), 0)
        undone = _int(request.query_params.get("undone"), 0)
        with self.sessions() as session:
            undoable = queue.last_standing_by(session, job_id, visitor.reviewer)
            shown = session.get(Decision, recorded or undone) if recorded or undone else None
        if shown is None or shown.reviewer != visitor.reviewer:
            return "", undoable
        if undone:
            return f"Undone: your {shown.decision} on item {shown.item_id} no longer counts.", undoable
        return f"Recorded {shown.decision} on item {shown.item_id}.", undoable

    async def decide(self, request: Request) -> Response:
        """Record a decision (if nobody decided since the page was shown) and go to the next unreviewed item."""
        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        form, visitor, filters = posted
        item_id = request.path_params["item_id"]
        note = (form.get("note") or "").strip() or None
        decision, seen = str(form.get("decision", "")), _int(form.get("seen"), 0)
        try:
            job_id, outcome = await run_in_threadpool(
                self._decide, item_id, decision, visitor.reviewer or "", seen, note
            )
        except queue.ReviewError as exc:
            return self._error(request, 400, str(exc))
        except SQLAlchemyError:
            return self._error(request, 503, "the database did not take the decision; nothing was recorded: try again")
        if not outcome.recorded:
            return self.item(request, conflict=outcome)
        recorded = outcome.latest.id if outcome.latest is not None else None
        next_page = f"/jobs/{job_id}/next?{filters.query_string(after=item_id, recorded=recorded)}"
        return RedirectResponse(next_page, status_code=303)

    async def undo(self, request: Request) -> Response:
        """Retract one of the reviewer's own decisions (kept in the history, marked) and open its item again."""
        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        _, visitor, filters = posted
        decision_id = request.path_params["decision_id"]
        if not 1 <= decision_id <= MAX_ID:
            return self._error(request, 404, f"no decision with id {decision_id}")
        try:
            item_id = await run_in_threadpool(self._retract, decision_id, visitor.reviewer or "")
        except queue.ReviewError as exc:
            return self._error(request, 409, str(exc))
        except SQLAlchemyError:
            return self._error(request, 503, "the database did not take the undo; nothing changed: try again")
        return RedirectResponse(f"/items/{item_id}?{filters.query_string(undone=decision_id)}", status_code=303)

    def _retract(self, decision_id: int, reviewer: str) -> int:
        with self.sessions.begin() as session:
            return queue.retract(session, decision_id, reviewer).item_id

    def _decide(
        self, item_id: int, decision: str, reviewer: str, seen: int, note: str | None
    ) -> tuple[int, queue.DecisionOutcome]:
        with self.sessions.begin() as session:
            outcome = queue.decide(session, item_id, decision, reviewer, seen, note)
            return session.scalar(select(Item.job_id).where(Item.id == item_id)) or 0, outcome

    def image(self, request: Request) -> Response:
        """An item's image (thumb or large, face boxes drawn) or its heatmap; only items in the database."""
        item_id, kind = request.path_params["item_id"], request.path_params["kind"]
        if kind not in SIDES and kind != HEATMAP:
            return PlainTextResponse("unknown image kind", status_code=404)
        with self.sessions() as session:
            detail = queue.item_detail(session, item_id)
        if detail is None:
            return PlainTextResponse("no such item", status_code=404)
        try:
            path = self.images.get(detail["item"], detail["verdict"], detail["faces"], kind)
        except ImageUnavailable as exc:
            return PlainTextResponse(f"image unavailable: {exc}", status_code=404)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    # ---- login ------------------------------------------------------------------------------------------------
    def login_page(self, request: Request) -> Response:
        """The token form (only when tokens are configured)."""
        return self._page(request, "login.html", self._login_context(""))

    def _login_context(self, message: str, return_to: str = "", draft_note: str = "") -> dict[str, Any]:
        return {"ask_name": self.config.asks_name, "message": message, "return_to": return_to,
                "draft_note": draft_note}  # fmt: skip

    async def _session_ended(self, request: Request, item_id: int) -> Response:
        """A decision from a session the server no longer knows (it restarted): nothing is recorded, and the login
        form keeps the typed note, which comes back on the item's page once the reviewer has logged in again."""
        length = request.headers.get("content-length", "")
        form = (
            await request.form(max_files=0, max_fields=20) if length.isdigit() and int(length) <= MAX_FORM_BYTES else {}
        )
        note = str(form.get("note") or "")[:10_000]
        message = ("Your session ended (the server restarted), so your decision was not recorded. Log in again: "
                   "the item opens again with your note kept, and you choose again.")  # fmt: skip
        context = self._login_context(message, f"/items/{item_id}", note)
        return self._page(request, "login.html", context, status_code=403)

    async def login(self, request: Request) -> Response:
        """Exchange a token for a session cookie."""
        form = await self._verified_form(request)
        if isinstance(form, Response):
            return form
        reviewer = self._reviewer_for(str(form.get("token", "")), str(form.get("reviewer", "")))
        if reviewer is None:
            await asyncio.sleep(0.5)  # slows guessing without holding up other requests
            message = "unknown token, or no reviewer name given"
            context = self._login_context(message, str(form.get("return_to", "")), str(form.get("draft_note", "")))
            return self._page(request, "login.html", context, status_code=403)
        self.visitors.drop(request.cookies.get(COOKIE))
        session_id, visitor = self.visitors.new(reviewer)
        back = DECISION_PATH.fullmatch(str(form.get("return_to", "")))
        if back and not back[2] and form.get("draft_note"):
            visitor.draft = (int(back[1]), str(form.get("draft_note"))[:10_000])
        response = RedirectResponse(back[0] if back and not back[2] else "/", status_code=303)
        self._set_cookie(response, session_id)
        return response

    async def logout(self, request: Request) -> Response:
        """End the session."""
        form = await self._verified_form(request)
        if isinstance(form, Response):
            return form
        self.visitors.drop(request.cookies.get(COOKIE))
        return RedirectResponse("/login" if self.config.requires_login else "/", status_code=303)

    def _reviewer_for(self, token: str, typed_name: str) -> str | None:
        for known, name in (self.config.tokens or {}).items():
            if hmac.compare_digest(known.encode(), token.encode()):
                chosen = name or typed_name.strip()
                return chosen[:128] if chosen else None
        return None

    # ---- plumbing -----------------------------------------------------------------------------------------------
    async def _verified_form(self, request: Request, max_fields: int = 20) -> Any:
        """The posted form, once its size, origin and CSRF token are checked; else a 403/413 response."""
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return PlainTextResponse("a form needs a Content-Length", status_code=411)
        if int(length) > MAX_FORM_BYTES:
            return PlainTextResponse("request too large", status_code=413)
        origin = request.headers.get("origin")
        if origin and origin not in (f"{request.url.scheme}://{request.url.netloc}", self.config.origin):
            return PlainTextResponse("cross-site request refused", status_code=403)
        form = await request.form(max_files=0, max_fields=max_fields)
        visitor: Visitor | None = getattr(request.state, "visitor", None)
        sent = str(form.get("csrf", ""))
        if visitor is None or not hmac.compare_digest(visitor.csrf.encode(), sent.encode()):
            return PlainTextResponse("missing or stale CSRF token: reload the page and try again", status_code=403)
        return form

    async def _posted(
        self, request: Request, max_fields: int = 20
    ) -> tuple[Any, Visitor, queue.QueueFilter] | Response:
        """A decision request's verified form, who sent it and the queue filters it carries; else the refusal."""
        form = await self._verified_form(request, max_fields)
        if isinstance(form, Response):
            return form
        filters = self._filters(request)
        if isinstance(filters, Response):
            return filters
        return form, request.state.visitor, filters

    def _filters(self, request: Request) -> queue.QueueFilter | Response:
        try:
            return queue.QueueFilter.parse(request.query_params)
        except queue.FilterError as exc:
            return self._error(request, 400, str(exc))

    def _page(self, request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        visitor = getattr(request.state, "visitor", None)
        context = {**context, "visitor": visitor, "login": self.config.requires_login}
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def _database_away(self, request: Request, exc: SQLAlchemyError) -> Response:
        """A page saying the database does not answer (one log line, no traceback); the next request tries again."""
        reason = describe_db_error(exc, self.settings.database_url)
        LOG.error("database unreachable (%s %s): %s", request.method, request.url.path, reason)
        return self._error(request, 503, f"the database does not answer, so nothing can be shown or recorded now; "
                                         f"reload in a moment ({reason})")  # fmt: skip

    def _set_cookie(self, response: Response, session_id: str) -> None:
        secure = self.config.origin.startswith("https://")  # behind a TLS proxy: never sent over plain HTTP
        response.set_cookie(COOKIE, session_id, httponly=True, samesite="strict", path="/", secure=secure)

    def _error(self, request: Request, status_code: int, message: str) -> Response:
        return self._page(request, "error.html", {"message": message}, status_code=status_code)

    async def guard(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        """Refuse other hosts' names, attach the visitor, send strangers to the login page, add security headers."""
        if not host_allowed(self.config, request.headers.get("host", "")):
            return PlainTextResponse(
                "this server is not reached under that name (a DNS-rebinding page?); set SCANNER_SERVE_ORIGIN "
                "to the public origin if a proxy serves it under another name",
                status_code=421,
            )
        request.state.session_id = request.cookies.get(COOKIE)
        visitor = self.visitors.get(request.state.session_id)
        new_cookie = None
        open_paths = request.url.path in ("/login",) or request.url.path.startswith("/static/")
        if visitor is None:
            new_cookie, visitor = self.visitors.anonymous()
            request.state.session_id = new_cookie
        request.state.visitor = visitor
        if self.config.requires_login and (visitor is None or visitor.reviewer is None) and not open_paths:
            if request.method == "GET" and not request.url.path.startswith("/api/"):
                response: Response = RedirectResponse("/login", status_code=303)
            elif request.method == "POST" and (found := DECISION_PATH.fullmatch(request.url.path)) and found[2]:
                response = await self._session_ended(request, int(found[1]))
            else:
                response = PlainTextResponse("log in first", status_code=403)
        else:
            try:
                response = await call_next(request)
            except SQLAlchemyError as exc:
                response = self._database_away(request, exc)
        if new_cookie:
            self._set_cookie(response, new_cookie)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"  # "no-referrer" would send Origin: null
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response


def _holder(request: Request) -> str:
    """Who holds what a request opens: the reviewer and their browser session (the same in every serve process)."""
    visitor: Visitor | None = getattr(request.state, "visitor", None)
    reviewer = (visitor.reviewer or "") if visitor else ""
    session = hashlib.sha256(str(getattr(request.state, "session_id", "")).encode()).hexdigest()[:16]
    return f"{reviewer[:128]}/{session}"


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive UTC datetimes; PostgreSQL aware ones."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _int(raw: Any, default: int) -> int:
    try:
        value = int(str(raw))
    except ValueError:
        return default
    return value if 0 <= value <= MAX_ID else default


def create_app(settings: Settings, sessions: Any, config: ServeConfig, cache_dir: Path | None = None) -> Starlette:
    """The review app as an ASGI application (uvicorn serves it; tests use Starlette's TestClient)."""
    images = ImageCache(settings, cache_dir or settings.cache_dir / "images", _explain_loader(settings))
    review = ReviewApp(settings, sessions, config, images)
    static = str(resources.files("scanner.moderation") / "static")
    routes = [
        Route("/", review.jobs),
        Route("/api/jobs", review.jobs_json),
        Route("/jobs/{job_id:int}", review.job_queue),
        Route("/jobs/{job_id:int}/errors", review.job_errors),
        Route("/jobs/{job_id:int}/grid", review.job_grid),
        Route("/jobs/{job_id:int}/bulk", review.bulk_decide, methods=["POST"]),
        Route("/jobs/{job_id:int}/next", review.next_item),
        Route("/jobs/{job_id:int}/decisions.{fmt}", review.decisions_export),
        Route("/items/{item_id:int}", review.item),
        Route("/items/{item_id:int}/decision", review.decide, methods=["POST"]),
        Route("/decisions/{decision_id:int}/undo", review.undo, methods=["POST"]),
        Route("/items/{item_id:int}/image/{kind}", review.image),
        Route("/login", review.login_page),
        Route("/login", review.login, methods=["POST"]),
        Route("/logout", review.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=review.guard)])


def _explain_loader(settings: Settings) -> Any:
    def load() -> tuple[str, Any]:
        from scanner.detector.checkpoint import load_model
        from scanner.model_store import checkpoint_path
        from scanner.moderation.explain import explainer
        from scanner.pipeline.model import model_identity

        version, _ = model_identity(settings)
        return version, explainer(load_model(checkpoint_path(settings), settings.device))

    return load


def serve(settings: Settings, sessions: Any, config: ServeConfig) -> None:
    """Run the review app with uvicorn until interrupted."""
    import uvicorn

    check_binding(config)
    app = create_app(settings, sessions, config)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", server_header=False)


def _bulk_toast(params: Any) -> str:
    """What the last bulk decision did, from the grid's query parameters (numbers and a decision name only)."""
    decision, recorded, missed = params.get("bulk", ""), params.get("recorded", ""), params.get("missed", "")
    if decision not in queue.DECISIONS or not recorded.isdigit():
        return ""
    said = f"Recorded {decision} on {recorded} item{'' if recorded == '1' else 's'}."
    conflicts = [part for part in missed.split(",") if part.isdigit()]
    if conflicts:
        said += f" Not recorded on item{'' if len(conflicts) == 1 else 's'} {', '.join(conflicts)}: someone decided"
        said += " on them since the page was shown; open them to decide again."
    return said
