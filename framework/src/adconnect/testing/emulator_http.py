"""The HTTP plumbing of emulators (stdlib only): messages, routes and the request handler.

A handler of an :class:`~adconnect.testing.emulator.Emulator` is declared with :func:`route`,
receives a :class:`Request` and returns a :class:`Response` (or a mapping, meaning a JSON
200), or raises :class:`Abort` to answer with an error from deep inside helper code.
:func:`handler_class` adapts an emulator's ``dispatch`` to ``http.server``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json as jsonlib
import re
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from typing import IO, Any, TypeVar
from urllib.parse import parse_qs, unquote_plus

__all__ = [
    "METHODS",
    "ROUTES_ATTR",
    "Abort",
    "EmulatorServer",
    "Handler",
    "Request",
    "Response",
    "RouteEntry",
    "compile_template",
    "handler_class",
    "read_body",
    "route",
]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: The attribute :func:`route` sets on a handler: a list of ``(method, template)``.
ROUTES_ATTR = "__emulator_routes__"
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Request:
    """One request as a handler sees it.

    ``query`` maps each parameter to its first value; ``query_lists`` keeps every value.
    ``headers`` has lower-case names. ``route`` is the matched template (``None``: no route).
    """

    method: str
    path: str
    route: str | None
    path_params: dict[str, str]
    query: dict[str, str]
    query_lists: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    received_at: float = 0.0

    @property
    def key(self) -> str:
        """``"METHOD /template"`` (or the raw path when no route matched)."""
        return f"{self.method} {self.route or self.path}"

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header value by case-insensitive name."""
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        """The body parsed as JSON (raises :class:`Abort` 400 when it is not JSON)."""
        try:
            return jsonlib.loads(self.body or b"null")
        except ValueError:
            raise Abort(400, {"error": {"message": "body is not JSON", "type": "BadRequest"}}) from None

    def form_lists(self) -> dict[str, list[str]]:
        """The body parsed as ``application/x-www-form-urlencoded``, every value kept."""
        return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)

    def form(self) -> dict[str, str]:
        """The body parsed as a form, first value of each field."""
        return {k: v[0] for k, v in self.form_lists().items()}

    @property
    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer ...`` header, if any."""
        scheme, _, value = (self.header("authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return value.strip() or None

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        """``(user, password)`` of an ``Authorization: Basic`` header, form-decoded.

        RFC 6749 §2.3.1 has clients form-urlencode the client id and secret before encoding
        them, so both parts are ``unquote_plus``-ed. Malformed headers give ``None``.
        """
        scheme, _, value = (self.header("authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        return (unquote_plus(user), unquote_plus(password)) if sep else None


@dataclass
class Response:
    """What a handler answers. ``json`` (unless ``None``) wins over ``body``."""

    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    headers: dict[str, str] | None = field(default=None)

    def encode(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers (with Content-Type and Content-Length) and body bytes."""
        headers = dict(self.headers or {})
        names = {k.lower() for k in headers}
        if self.json is not None:
            payload = jsonlib.dumps(self.json).encode()
            content_type = "application/json; charset=utf-8"
        elif isinstance(self.body, str):
            payload, content_type = self.body.encode(), "text/plain; charset=utf-8"
        else:
            payload, content_type = self.body or b"", "application/octet-stream"
        if payload and "content-type" not in names:
            headers["Content-Type"] = content_type
        items = [(k, v) for k, v in headers.items() if k.lower() != "content-length"]
        items.append(("Content-Length", str(len(payload))))
        return self.status, items, payload


class Abort(Exception):
    """Raise inside a handler to answer with this response instead."""

    def __init__(
        self,
        status: int,
        json: Any = None,
        *,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status)
        self.response = Response(
            status=status, json=json, body=body, headers=dict(headers) if headers else None
        )


#: What an emulator handler is: a request in, a response (or a JSON mapping) out.
Handler = Callable[[Request], Response | Mapping[str, Any]]
#: ``(method, raw path, headers, body) -> response``; ``None`` drops the connection.
Dispatch = Callable[[str, str, Mapping[str, str], bytes], Response | None]


def read_body(stream: IO[bytes] | BufferedIOBase, headers: Message) -> bytes:
    """Read a request body framed by Content-Length or chunked transfer encoding."""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        chunks: list[bytes] = []
        while True:
            size = int(stream.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while stream.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(stream.read(size))
            stream.readline()
    length = int(headers.get("Content-Length") or 0)
    return stream.read(length) if length > 0 else b""


def route(method: str, template: str) -> Callable[[F], F]:
    """Declare the decorated method as the handler of ``method`` requests to ``template``.

    ``{name}`` in the template matches one path segment, ``{name:path}`` the rest of the path;
    a trailing slash on the request is ignored. Stack the decorator for several routes.
    """
    method = method.upper()
    if method not in METHODS:
        raise ValueError(f"unsupported method {method!r}; use one of {METHODS}")
    compile_template(template)

    def decorate(func: F) -> F:
        setattr(func, ROUTES_ATTR, [*getattr(func, ROUTES_ATTR, ()), (method, template)])
        return func

    return decorate


def compile_template(template: str) -> re.Pattern[str]:
    """The regular expression a route template compiles to (trailing slash optional)."""
    if not template.startswith("/"):
        raise ValueError(f"route template {template!r} must start with '/'")
    parts: list[str] = []
    pos = 0
    for match in _PARAM.finditer(template):
        parts.append(re.escape(template[pos : match.start()]))
        parts.append(f"(?P<{match.group(1)}>{'.+' if match.group(2) else '[^/]+'})")
        pos = match.end()
    parts.append(re.escape(template[pos:]))
    body = "".join(parts)
    body = body[:-1] if body.endswith("/") else body
    return re.compile(f"^{body}/?$")


@dataclass(frozen=True)
class RouteEntry:
    """A declared route: method, template, compiled pattern, handler."""

    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler
    order: int

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def rank(self) -> tuple[int, int]:  # static segments win over parameters
        return (self.pattern.groups, self.order)


def handler_class(dispatch: Dispatch) -> type[BaseHTTPRequestHandler]:
    """A request handler class answering every request with ``dispatch`` (``None``: drop)."""

    class _EmulatorHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body leave in separate writes
        server_version = "adconnect-emulator"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default stderr log (it would print query strings with tokens)."""

        def _handle(self) -> None:
            body = read_body(self.rfile, self.headers)
            response = dispatch(self.command, self.path, dict(self.headers.items()), body)
            if response is None:
                self.close_connection = True
                return
            status, headers, payload = response.encode()
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return _EmulatorHandler


class EmulatorServer(ThreadingHTTPServer):
    """A threading HTTP server that can also close its open keep-alive connections."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every connection still open (clients see the server go away)."""
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
