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

import hashlib
import hmac
import inspect as introspection
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
    cacheable: bool = False  # a static file: browsers may keep it an hour
    status: int = 0  # 0: the handler's success, 200


def check_address(host: str, token: str) -> None:
    """Refuse a non-loopback address without a token (ConfigError)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        raise ConfigError(f"serving on {host} needs api.token in evolve.toml: only a "
                          "loopback address may serve without one")


def make_server(workspace: Workspace, host: str, port: int, token: str,
                more: Routes = ()) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (OSError if it cannot be); serve_forever() runs it.
    ``more`` routes (the dashboard's) are served beside the API's."""
    check_address(host, token)
    routes = [*_routes(workspace), *more]
    server = ThreadingHTTPServer((host, port), _Handler)  # bound now: its port is known
    # One cookie per server (cookies ignore ports); it holds a digest, not the token.
    cookie_name = f"{COOKIE}_{server.server_port}"
    cookie_value = hashlib.sha256(f"evolve-cookie:{token}".encode()).hexdigest()

    class Handler(BaseHTTPRequestHandler):
        server_version = "evolve"

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            given = query.pop("token", None)
            if not token and not self._loopback_host():
                self._send(421, {"error": "this server answers to a loopback name only"})
                return
            if token and not self._authorized(given):
                self._send(401, {"error": "a valid 'Authorization: Bearer <token>' is needed"})
                return
            if given is not None:  # a browser's first visit: a cookie, and no token in the URL
                self._remember(url.path, query)
                return
            for pattern, handler in routes:
                parts = _match(pattern, url.path)
                if parts is None:
                    continue
                unknown = sorted(set(query) - _parameters(handler))
                if unknown:
                    self._send(400, {"error": f"bad request: unknown parameter {unknown[0]!r}"})
                    return
                try:
                    self._send(200, handler(*parts, **query))
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

        def do_HEAD(self) -> None:
            self.send_response(405)
            self.send_header("content-length", "0")
            self.end_headers()

        def _loopback_host(self) -> bool:
            """Without a token only loopback names are answered: a page elsewhere that
            points a name of its own at 127.0.0.1 (DNS rebinding) reads nothing."""
            name = self.headers.get("Host", "").rsplit(":", 1)[0].strip("[]").lower()
            return name in ("localhost", "127.0.0.1", "::1") or name.startswith("127.")

        def _authorized(self, given: str | None) -> bool:
            """The token in the header or the query (a browser's first visit), or the
            cookie that visit left (a digest of the token, never the token)."""
            offered = [self.headers.get("Authorization", "").removeprefix("Bearer "),
                       given or ""]
            candidates = [hmac.compare_digest(o.encode(), token.encode()) for o in offered]
            cookie = _cookie(self.headers.get("Cookie", ""), cookie_name)
            candidates.append(hmac.compare_digest(cookie.encode(), cookie_value.encode()))
            return any(candidates)

        def _remember(self, path: str, query: dict[str, str]) -> None:
            """303 to the same address without the token, with the cookie set."""
            target = path + ("?" + urllib.parse.urlencode(query) if query else "")
            self.send_response(303)
            self.send_header("location", target)
            self.send_header("set-cookie", f"{cookie_name}={cookie_value}; HttpOnly; "
                                           "SameSite=Strict; Path=/")
            self.send_header("referrer-policy", "no-referrer")
            self.send_header("content-length", "0")
            self.end_headers()

        def _send(self, code: int, body: Any) -> None:
            if isinstance(body, Raw):
                data, kind, code = body.body, body.content_type, body.status or code
            else:
                data, kind = render.dumps(body).encode(), "application/json"
            self.send_response(code)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.send_header("x-content-type-options", "nosniff")
            self.send_header("referrer-policy", "no-referrer")
            if isinstance(body, Raw) and body.cacheable:
                self.send_header("cache-control", "max-age=3600")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass  # a dashboard polling every few seconds would flood the console

    server.RequestHandlerClass = Handler
    return server


class _Handler(BaseHTTPRequestHandler):
    """Replaced once the server is bound (the real handler needs its port)."""


def _parameters(handler: Callable[..., Any]) -> set[str]:
    """The query parameters a route takes: its keyword parameters."""
    return {name for name, parameter in introspection.signature(handler).parameters.items()
            if parameter.default is not introspection.Parameter.empty}


def _cookie(header: str, name: str) -> str:
    """One cookie's value; parsed by hand: one malformed cookie of another application
    on this host must not hide ours (http.cookies drops them all)."""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip()
    return ""


def _routes(workspace: Workspace) -> list[tuple[str, Callable[..., Any]]]:
    def agents(status: str = "living", sort: str = "created",
               limit: str | None = None) -> Any:
        if status not in ("living", "all", *STATUSES):
            raise ValueError(f"status must be living, all or one of {', '.join(STATUSES)}")
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}")
        if limit is not None and not limit.isdigit():
            raise ValueError("limit must be a whole number")
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
