"""A small HTTP proxy on 127.0.0.1 in front of the moto S3 server that injects faults for chosen objects.

Rules match a substring of the request path and act on the first `times` matching requests (or all):
  - status: answer with an S3-style error (503 SlowDown, 500 InternalError, 403 AccessDenied) instead of
    forwarding;
  - reset: close the connection without answering (a connection reset);
  - delay: wait before forwarding (longer than the client's timeout makes a timeout);
  - trickle: forward, then send the body one byte every `seconds` (each read is quick; the whole never ends).
Everything else is forwarded unchanged. `hits` counts the requests per path.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}
S3_CODES = {503: "SlowDown", 500: "InternalError", 403: "AccessDenied"}


@dataclass
class Rule:
    path_contains: str
    action: str  # "status" | "reset" | "delay" | "trickle"
    times: int | None = None  # None: every matching request
    status: int = 503
    seconds: float = 0.0
    seen: int = 0


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.rules: list[Rule] = []
        self.hits: Counter = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rule = proxy._match(self.command, self.path)
                if rule and rule.action == "reset":
                    self.close_connection = True
                    self.connection.close()
                    return
                if rule and rule.action == "delay":
                    time.sleep(rule.seconds)
                if rule and rule.action == "status":
                    code = S3_CODES.get(rule.status, "Error")
                    payload = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>injected fault</Message></Error>"
                    ).encode()
                    self.send_response(rule.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                self._forward(body, trickle=rule.seconds if rule and rule.action == "trickle" else None)

            def _forward(self, body: bytes, trickle: float | None = None):
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header(
                    "Content-Length",
                    str(len(payload) if self.command != "HEAD" else response.getheader("Content-Length") or 0),
                )
                self.end_headers()
                conn.close()
                if self.command == "HEAD":
                    return
                if trickle is None:
                    self.wfile.write(payload)
                    return
                try:
                    for i in range(len(payload)):
                        self.wfile.write(payload[i : i + 1])
                        self.wfile.flush()
                        time.sleep(trickle)
                except OSError:  # the client gave up and closed the connection
                    self.close_connection = True

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            self.hits[(method, urlparse(path).path)] += 1
            for rule in self.rules:
                if rule.path_contains in path and (rule.times is None or rule.seen < rule.times):
                    rule.seen += 1
                    return rule
        return None

    def add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    def requests_for(self, path_contains: str) -> int:
        with self._lock:
            return sum(n for (_, path), n in self.hits.items() if path_contains in path)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
