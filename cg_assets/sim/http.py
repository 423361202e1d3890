"""The loopback HTTP plumbing both HTTP stand-ins share: the CoinGlass REST simulator and the
Telegram Bot API stand-in.

Apps answer plain `Response` values from `handle_http(method, target, headers, body)`, so their
routing stays socket-free and is tested directly; `LoopbackServer` serves an app on a thread
with keep-alive connections (as `requests.Session` and httpx expect) and, on `stop()`, closes
the connections clients still hold, so a client sees the server gone, as after a real outage.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, Self


@dataclass(frozen=True)
class Response:
    """One HTTP answer, built without sockets so the routing logic stays plain functions."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, headers or {})


def plain_response(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, text.encode(), headers or {}, "text/plain; charset=utf-8")


class Knobs(Protocol):
    def update(self, values: dict[str, Any]) -> None: ...

    def as_dict(self) -> dict[str, Any]: ...


def faults_endpoint(faults: Knobs, method: str, body: bytes) -> Response:
    """`GET /_sim/faults` shows the knobs, `POST` sets some of them (a JSON object)."""
    if method == "POST":
        try:
            values = json.loads(body or b"{}")
            if not isinstance(values, dict):
                raise ValueError("expected a JSON object of fault knobs")
            faults.update(values)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
    return json_response(200, faults.as_dict())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = 60  # idle keep-alive connections are closed after this many seconds
    disable_nagle_algorithm = True  # headers and body go out in two writes; avoid a 40 ms stall
    server: _TrackingServer

    def do_GET(self) -> None:
        self._respond("GET")

    def do_POST(self) -> None:
        self._respond("POST")

    def do_PUT(self) -> None:
        self._respond("PUT")

    def do_DELETE(self) -> None:
        self._respond("DELETE")

    def do_PATCH(self) -> None:
        self._respond("PATCH")

    def do_HEAD(self) -> None:
        self._respond("HEAD")

    def _respond(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        response = self.server.app.handle_http(method, self.path, self.headers, body)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a benchmark sends thousands of requests."""


class _TrackingServer(ThreadingHTTPServer):
    """Tracks open connections so stop() can close keep-alive sockets held by clients."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: LoopbackServer) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out and hung up is a test scenario here, not a server error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackServer:
    """An app served over HTTP on a thread; `with` starts and stops it."""

    label = "the server"

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._httpd: _TrackingServer | None = None
        self._thread: threading.Thread | None = None

    def handle_http(self, method: str, target: str, headers: Message, body: bytes) -> Response:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"{self.label} is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._httpd = _TrackingServer(self._address, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections, so clients see the server gone."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
