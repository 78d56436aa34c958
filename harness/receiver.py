"""A callback receiver for tests and the demo: a real HTTP server on loopback, in a thread.

Each path answers from its own script of statuses (the last one repeats;
200 when none is scripted) and keeps every request it got, so a test can
script "503, 503, 200" and then read back the signed requests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["CallbackReceiver", "Received", "Reply", "run_receiver"]

#: A request body larger than this is refused (413) unread.
MAX_BODY_BYTES = 1 << 20
#: How often the server thread checks whether it was asked to stop.
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class CallbackReceiver:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Reply]] = {}
        self._received: dict[str, list[Received]] = {}

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, replies: Sequence[Reply | int]) -> None:
        """Answer ``path`` with these replies in turn; the last one repeats."""
        with self._lock:
            self._scripts[path] = [r if isinstance(r, Reply) else Reply(r) for r in replies]

    def received(self, path: str) -> list[Received]:
        with self._lock:
            return list(self._received.get(path, []))

    def _answer(self, request: Received) -> Reply:
        with self._lock:
            self._received.setdefault(request.path, []).append(request)
            script = self._scripts.get(request.path) or [Reply(200)]
            return script.pop(0) if len(script) > 1 else script[0]


def _handler(receiver: CallbackReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY_BYTES:
                self.send_error(413)
                return
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = receiver._answer(Received("POST", self.path, headers, body))
            self.send_response(reply.status)
            for name, value in (reply.headers or {}).items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: tests read what was received instead

    return Handler


@contextmanager
def run_receiver(port: int = 0) -> Iterator[CallbackReceiver]:
    """A receiver on 127.0.0.1 and ``port`` (0: a free one), stopped on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", port), BaseHTTPRequestHandler)
    receiver = CallbackReceiver(server)
    server.RequestHandlerClass = _handler(receiver)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, args=(POLL_SECONDS,), name="callback-receiver", daemon=True
    )
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
