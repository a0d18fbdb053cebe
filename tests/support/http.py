"""A real HTTP(S) server on loopback standing in for the registry's /v2/."""

from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
from collections.abc import Iterator


class V2Handler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with ``status`` and ``body`` (`{}`, as /v2/ does); logs nothing."""

    status = 200
    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(
    handler: type[http.server.BaseHTTPRequestHandler] = V2Handler,
    context: ssl.SSLContext | None = None,
) -> Iterator[http.server.HTTPServer]:
    """A server on a free port of 127.0.0.1 (HTTPS with ``context``), answered from a
    thread; shut down and closed on exit."""
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
