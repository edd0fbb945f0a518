"""The base of every provider emulator: a stdlib HTTP server on loopback, for offline tests.

A provider emulator subclasses :class:`Emulator` and declares handlers with :func:`route`::

    class ItemsEmulator(Emulator):
        @route("GET", "/v1/items/{item_id}")
        def get_item(self, request: Request) -> Response:
            return Response(json={"id": request.path_params["item_id"], "n": self.rng.random()})

    with ItemsEmulator(seed=7) as emulator:
        httpx.get(f"{emulator.url}/v1/items/42")

The emulator serves from a ``ThreadingHTTPServer`` in a daemon thread and offers what provider
tests need: deterministic data (``self.rng``, seeded), fault injection per route
(:meth:`Emulator.inject`: status, body, headers, delay, dropped connection; FIFO, ``times``),
call counting (``calls`` keyed by ``"METHOD /template"``, ``requests``) and :meth:`reset`.
Components such as :class:`~adconnect.testing.oauth_server.OAuthServer` add routes with
:meth:`Emulator.mount`. Handlers run one at a time (under ``handler_lock``); delays do not
hold the lock.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from adconnect.testing.emulator_http import (
    METHODS,
    ROUTES_ATTR,
    Abort,
    EmulatorServer,
    Handler,
    Request,
    Response,
    RouteEntry,
    compile_template,
    handler_class,
    route,
)

__all__ = [
    "Abort",
    "Emulator",
    "Fault",
    "Handler",
    "Mountable",
    "Request",
    "Response",
    "route",
]

log = logging.getLogger(__name__)


@dataclass
class Fault:
    """One injected fault; see :meth:`Emulator.inject`. ``remaining`` is ``None`` forever."""

    status: int | None = None
    json: Any = None
    body: bytes | str | None = None
    headers: Mapping[str, str] | None = None
    delay: float = 0.0
    drop_connection: bool = False
    remaining: int | None = 1

    @property
    def replaces_response(self) -> bool:
        return self.status is not None or self.json is not None or self.body is not None


class Mountable(Protocol):
    """A reusable emulator component (an OAuth server...): routes plus resettable state."""

    def routes(self) -> Iterable[tuple[str, str, Handler]]:
        """``(method, template, handler)`` for every route the component serves."""
        ...

    def reset(self) -> None:
        """Forget everything the component recorded."""
        ...


_C = TypeVar("_C", bound=Mountable)


class Emulator:
    """A provider API on loopback with deterministic data, faults and call counting.

    :param seed: seed of ``self.rng``; :meth:`reset` restores it.
    :param host: interface to bind (loopback by default).
    :param port: port to bind; 0 picks a free one.
    """

    def __init__(self, seed: int = 0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.seed = seed
        self.host = host
        self.port = port
        self.rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
        self.handler_lock = threading.RLock()
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._requests: list[Request] = []
        self._faults: dict[str, deque[Fault]] = {}
        self._routes: list[RouteEntry] = []
        self._components: list[Mountable] = []
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None
        marks: dict[str, list[tuple[str, str]]] = {}
        for cls in reversed(type(self).__mro__):
            for name, attr in vars(cls).items():
                if getattr(attr, ROUTES_ATTR, None):
                    marks[name] = getattr(attr, ROUTES_ATTR)
        for name, routes in marks.items():
            for method, template in routes:
                self.add_route(method, template, getattr(self, name))

    # --- routes ----------------------------------------------------------------------------

    def add_route(self, method: str, template: str, handler: Handler) -> None:
        """Serve ``method template`` with ``handler`` (what :func:`route` does, at run time)."""
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"unsupported method {method!r}; use one of {METHODS}")
        with self._lock:
            if any(r.method == method and r.template == template for r in self._routes):
                raise ValueError(f"route {method} {template} is declared twice")
            self._routes.append(
                RouteEntry(method, template, compile_template(template), handler, len(self._routes))
            )
            self._routes.sort(key=lambda r: r.rank)

    def mount(self, component: _C) -> _C:
        """Add a component's routes; :meth:`reset` resets it too. Returns the component."""
        for method, template, handler in component.routes():
            self.add_route(method, template, handler)
        self._components.append(component)
        return component

    @property
    def components(self) -> tuple[Mountable, ...]:
        """The mounted components, in mounting order."""
        return tuple(self._components)

    @property
    def routes(self) -> tuple[str, ...]:
        """Every declared route as ``"METHOD /template"``."""
        return tuple(r.key for r in self._routes)

    def _match(self, method: str, path: str) -> tuple[RouteEntry | None, dict[str, str], list[str]]:
        allowed: list[str] = []
        for candidate in self._routes:
            found = candidate.pattern.match(path)
            if found is None:
                continue
            if candidate.method == method:
                return candidate, {k: unquote(v) for k, v in found.groupdict().items()}, allowed
            allowed.append(candidate.method)
        return None, {}, allowed

    # --- faults, counters, reset -----------------------------------------------------------

    def inject(
        self,
        route: str,
        *,
        status: int | None = None,
        json: Any = None,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        drop_connection: bool = False,
        times: int | None = 1,
    ) -> Fault:
        """Queue a fault for ``route`` (``"METHOD /template"`` as declared).

        Faults of one route are consumed first in, first out; each applies to ``times``
        requests (``None``: forever). ``delay`` sleeps before answering; ``drop_connection``
        closes the socket without a response. When ``status``, ``json`` or ``body`` is given
        the fault's response replaces the handler's (status 200 unless given); otherwise the
        handler answers and ``headers`` are added to its response.
        """
        method, _, template = route.strip().partition(" ")
        key = f"{method.upper()} {template.strip()}"
        if key not in self.routes:
            raise ValueError(f"no route {key!r}; declared: {', '.join(self.routes)}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for forever)")
        if delay < 0:
            raise ValueError("delay must not be negative")
        fault = Fault(
            status=status,
            json=json,
            body=body,
            headers=dict(headers or {}),
            delay=delay,
            drop_connection=drop_connection,
            remaining=times,
        )
        with self._lock:
            self._faults.setdefault(key, deque()).append(fault)
        return fault

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def _next_fault(self, key: str) -> Fault | None:
        queue = self._faults.get(key)
        if not queue:
            return None
        fault = queue[0]
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.popleft()
        return fault

    @property
    def calls(self) -> Counter[str]:
        """How many requests each ``"METHOD /template"`` received (a snapshot).

        Unknown paths are counted as ``"METHOD /raw/path"``.
        """
        with self._lock:
            return Counter(self._calls)

    @property
    def requests(self) -> tuple[Request, ...]:
        """Every request received since the last :meth:`reset`, oldest first (a snapshot)."""
        with self._lock:
            return tuple(self._requests)

    def reset(self) -> None:
        """Restore the seed, drop faults, counters and the request log, reset components."""
        with self._lock:
            self.rng = random.Random(self.seed)  # noqa: S311
            self._faults.clear()
            self._calls.clear()
            self._requests.clear()
        for component in self._components:
            component.reset()
        self.on_reset()

    def on_reset(self) -> None:
        """Hook for subclasses: rebuild generated data after :meth:`reset` (default: nothing)."""

    # --- serving ---------------------------------------------------------------------------

    def dispatch(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> Response | None:
        """Answer one request; ``None`` means: close the connection without answering."""
        split = urlsplit(raw_path)
        found, params, allowed = self._match(method, split.path)
        query = parse_qs(split.query, keep_blank_values=True)
        request = Request(
            method=method,
            path=split.path,
            route=found.template if found else None,
            path_params=params,
            query={k: v[0] for k, v in query.items()},
            query_lists=query,
            headers={k.lower(): v for k, v in headers.items()},
            body=body,
            received_at=time.time(),
        )
        key = found.key if found else f"{method} {split.path}"
        with self._lock:
            self._calls[key] += 1
            self._requests.append(request)
            fault = self._next_fault(key)
        log.debug("%s %s", type(self).__name__, key)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop_connection:
                return None
            if fault.replaces_response:
                return Response(
                    status=fault.status or 200,
                    json=fault.json,
                    body=fault.body,
                    headers=dict(fault.headers or {}),
                )
        response = self._answer(found, request, allowed)
        if fault is not None and fault.headers:
            response.headers = {**(response.headers or {}), **fault.headers}
        return response

    def _answer(self, found: RouteEntry | None, request: Request, allowed: list[str]) -> Response:
        if found is None:
            if allowed:
                return Response(
                    status=405,
                    json={
                        "error": {
                            "message": f"{request.method} not allowed on {request.path}",
                            "type": "MethodNotAllowed",
                        }
                    },
                    headers={"Allow": ", ".join(allowed)},
                )
            return Response(
                status=404, json={"error": {"message": f"unknown path {request.path}", "type": "NotFound"}}
            )
        try:
            with self.handler_lock:
                result = found.handler(request)
        except Abort as abort:
            return abort.response
        except Exception as exc:
            log.exception("%s handler for %s failed", type(self).__name__, found.key)
            return Response(
                status=500,
                json={
                    "error": {
                        "message": f"emulator handler failed: {type(exc).__name__}",
                        "type": "EmulatorError",
                    }
                },
            )
        return result if isinstance(result, Response) else Response(json=dict(result))

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (the emulator must be started)."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        """Bind and serve in a daemon thread (idempotent)."""
        if self._server is not None:
            return self
        server = EmulatorServer((self.host, self.port), handler_class(self.dispatch))
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-http",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and open connections (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
