"""A scriptable OpenAI-compatible chat-completions server on 127.0.0.1 (ephemeral port), for teacher tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Action:
    """What the stub does with one request: reply with text, or answer `status`, optionally after `delay` s."""

    text: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None  # a body that is not a chat-completions response at all
    trickle: float = 0.0  # > 0: the whole response (status line, headers, body) is sent a byte at a time, this far apart
    endless: bool = False  # with `trickle`: the body never ends (until the client leaves)


def reply(text: str, delay: float = 0.0) -> Action:
    return Action(text=text, delay=delay)


class ChatStub:
    """Serves POST /v1/chat/completions; `respond(request_json, n)` picks the action for the n-th request."""

    def __init__(self, respond: Callable[[dict, int], Action]) -> None:
        self.respond = respond
        self.requests: list[dict] = []  # {"body", "headers"} of every request, in arrival order
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub._lock:
                    n = len(stub.requests)
                    stub.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    action = stub.respond(body, n)
                    time.sleep(action.delay)
                    if action.raw is not None:
                        payload = action.raw
                    elif action.status == 200:
                        message = {"role": "assistant", "content": action.text}
                        payload = json.dumps({"choices": [{"message": message}]}).encode()
                    else:
                        payload = json.dumps({"error": {"message": f"stub status {action.status}"}}).encode()
                    if action.trickle > 0:
                        self._trickle(action, payload)
                        return
                    try:
                        self.send_response(action.status)
                        for key, value in action.headers.items():
                            self.send_header(key, value)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                    except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                        pass
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

            def _trickle(self, action: Action, payload: bytes) -> None:
                length = 10**9 if action.endless else len(payload)
                head = (f"HTTP/1.1 {action.status} Stub\r\nContent-Type: application/json\r\n"
                        + "".join(f"{k}: {v}\r\n" for k, v in action.headers.items())
                        + f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()
                data = head + payload
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i:i + 1])
                        time.sleep(action.trickle)
                    while action.endless:  # padding after the JSON, never reaching Content-Length
                        self.wfile.write(b" ")
                        time.sleep(action.trickle)
                except OSError:  # the client gave up and left
                    pass
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> ChatStub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
