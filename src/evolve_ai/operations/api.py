"""``evolve serve-api``: the store as read-only JSON over HTTP, for dashboards and scripts.

A server of its own (not the life cycle's): it reads the store the way ``evolve
status`` does, so it answers while a life cycle runs and after it has stopped, and a
slow client never touches the loop. Loopback by default; any other address needs
``api.token``, then sent by every client as ``Authorization: Bearer <token>`` (a
browser: ``?token=<token>`` once, kept in a cookie). ``evolve dashboard`` is this
server with the dashboard's pages added (``operations/dashboard.py``).

    GET /api/status                      what `evolve status --json` prints
    GET /api/history                     the per-generation rows
    GET /api/agents?status=&sort=&limit= what `evolve agents --json` prints
    GET /api/agents/<id>                 what `evolve show <id> --json` prints
    GET /api/agents/<id>/lineage         what `evolve lineage <id> --json` prints
    GET /api/templates                   what `evolve template --json` prints
"""

from __future__ import annotations

import hmac
import http.cookies
import ipaddress
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from evolve_ai import render
from evolve_ai.core.records import STATUSES
from evolve_ai.errors import ConfigError, EvolveError, UnknownAgent
from evolve_ai.operations import inspect
from evolve_ai.services.workspace import Workspace

SORTS = ("fitness", "generation", "evaluations", "restarts", "created")
COOKIE = "evolve_token"
Routes = Sequence[tuple[str, Callable[..., Any]]]


@dataclass(frozen=True, slots=True)
class Raw:
    """A response sent as it is (a page, a script), not as JSON."""

    body: bytes
    content_type: str


def check_address(host: str, token: str) -> None:
    """Refuse a non-loopback address without a token (ConfigError)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        raise ConfigError(f"serve-api on {host} needs api.token in evolve.toml: only a "
                          "loopback address may serve without one")


def make_server(workspace: Workspace, host: str, port: int, token: str,
                more: Routes = ()) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (OSError if it cannot be); serve_forever() runs it.
    ``more`` routes (the dashboard's) are served beside the API's."""
    check_address(host, token)
    routes = [*_routes(workspace), *more]

    class Handler(BaseHTTPRequestHandler):
        server_version = "evolve"

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            given = query.pop("token", None)
            if token and not self._authorized(given):
                self._send(401, {"error": "a valid 'Authorization: Bearer <token>' is needed"})
                return
            for pattern, handler in routes:
                parts = _match(pattern, url.path)
                if parts is None:
                    continue
                try:
                    self._send(200, handler(*parts, **query), remember=given is not None)
                except (UnknownAgent, LookupError) as error:
                    self._send(404, {"error": str(error)})
                except (TypeError, ValueError) as error:
                    self._send(400, {"error": f"bad request: {error}"})
                except EvolveError as error:
                    self._send(503, {"error": str(error)})
                return
            self._send(404, {"error": f"no such resource: {url.path}"})

        def do_POST(self) -> None:
            self._send(405, {"error": "read-only: GET only"})

        do_PUT = do_DELETE = do_PATCH = do_POST

        def _authorized(self, given: str | None) -> bool:
            """The token in the header, the query (a browser's first visit) or the cookie
            that visit left."""
            cookies = http.cookies.SimpleCookie(self.headers.get("Cookie", ""))
            offered = [self.headers.get("Authorization", "").removeprefix("Bearer "),
                       given or "", cookies[COOKIE].value if COOKIE in cookies else ""]
            return any(hmac.compare_digest(o.encode(), token.encode()) for o in offered)

        def _send(self, code: int, body: Any, remember: bool = False) -> None:
            if isinstance(body, Raw):
                data, kind = body.body, body.content_type
            else:
                data, kind = render.dumps(body).encode(), "application/json"
            self.send_response(code)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.send_header("x-content-type-options", "nosniff")
            if remember:  # the token came in the query: the pages' own requests carry it
                self.send_header("set-cookie", f"{COOKIE}={token}; HttpOnly; SameSite=Strict; "
                                               "Path=/")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass  # a dashboard polling every few seconds would flood the console

    return ThreadingHTTPServer((host, port), Handler)


def _routes(workspace: Workspace) -> list[tuple[str, Callable[..., Any]]]:
    def agents(status: str = "living", sort: str = "created",
               limit: str | None = None) -> Any:
        if status not in ("living", "all", *STATUSES):
            raise ValueError(f"status must be living, all or one of {', '.join(STATUSES)}")
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}")
        count = None if limit is None else int(limit)
        if count is not None and count < 1:
            raise ValueError("limit must be at least 1")
        return inspect.agents(workspace, status, sort, count)

    return [
        ("/api/status", lambda: inspect.status(workspace)),
        ("/api/history", lambda: inspect.status(workspace)["history"]),
        ("/api/agents", agents),
        ("/api/agents/*", lambda agent: inspect.show(workspace, agent)),
        ("/api/agents/*/lineage", lambda agent: inspect.lineage(workspace, agent)),
        ("/api/templates", lambda: inspect.templates(workspace)),
    ]


def _match(pattern: str, path: str) -> list[str] | None:
    """The ``*`` parts of ``path`` if it matches ``pattern`` (one segment each)."""
    want, got = pattern.split("/"), path.rstrip("/").split("/")
    if len(want) != len(got):
        return None
    parts = []
    for expected, actual in zip(want, got, strict=True):
        if expected == "*":
            parts.append(urllib.parse.unquote(actual))
        elif expected != actual:
            return None
    return parts
