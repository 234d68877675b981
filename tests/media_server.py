"""A real HTTP server on 127.0.0.1 serving media from memory, with faults on chosen paths (for tests and
benchmarks of HTTP(S) media).

`files` maps a path to bytes. `rules` act on the first `times` requests whose path contains `path_contains`
(or on all of them):
  - status: answer with that status (`retry_after` adds a Retry-After header);
  - reset: close the connection without answering;
  - redirect: answer 302 to `location` (a URL or a path);
  - trickle: send the headers, then one byte every `seconds` (a slowloris server);
  - no_length: serve the file without Content-Length (streamed until the connection closes).
`hits` counts requests per path; `bytes_sent` what bodies were sent per path (a refused or aborted
download shows here).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Rule:
    path_contains: str
    action: str  # "status" | "reset" | "redirect" | "trickle" | "no_length"
    times: int | None = None
    status: int = 503
    retry_after: str | None = None
    location: str = ""
    seconds: float = 0.0
    seen: int = 0


class MediaServer:
    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.rules: list[Rule] = []
        self.hits: Counter = Counter()
        self.bytes_sent: Counter = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                rule = server._match(path)
                if rule is not None and rule.action == "reset":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if rule is not None and rule.action == "status":
                    self.send_response(rule.status)
                    if rule.retry_after is not None:
                        self.send_header("Retry-After", rule.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if rule is not None and rule.action == "redirect":
                    self.send_response(302)
                    self.send_header("Location", rule.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                streamed = rule is not None and rule.action in ("trickle", "no_length")
                if streamed:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = 1 if rule is not None and rule.action == "trickle" else 64 * 1024
                try:
                    for start in range(0, len(body), step):
                        self.wfile.write(body[start : start + step])
                        self.wfile.flush()
                        with server._lock:
                            server.bytes_sent[path] += len(body[start : start + step])
                        if rule is not None and rule.action == "trickle":
                            time.sleep(rule.seconds)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _match(self, path: str) -> Rule | None:
        with self._lock:
            self.hits[path] += 1
            for rule in self.rules:
                if rule.path_contains in path and (rule.times is None or rule.seen < rule.times):
                    rule.seen += 1
                    return rule
        return None

    def __enter__(self) -> MediaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
