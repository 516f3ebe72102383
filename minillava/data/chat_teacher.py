"""A teacher that sends the paper's prompts to any OpenAI-compatible chat-completions endpoint.

Like the paper's GPT-4, it is given text only (the symbolic context inside ``prompts.PROMPTS``) and never an
image. Standard library only: ``urllib`` for HTTP; callers run it from threads (``gen_data`` uses a thread pool),
and a semaphore caps the requests in flight at ``concurrency``.

Failure handling, for long runs against rate-limited services:
- each try has a wall-clock deadline of ``timeout`` seconds for the whole exchange (connecting, sending, the
  headers and the body): a server that trickles its reply, or never finishes it, is cut off when it passes;
- 429, 408 and 5xx answers, timeouts and dropped connections are retried with exponential backoff (honouring a
  ``Retry-After`` header, in seconds or as an HTTP date, up to ``max_backoff``), up to ``max_retries`` times,
  then raise ``TeacherError``; when every try ran out of time the error is fatal (``fatal=True``): a server that
  answers nothing in time would make every record wait as long;
- any other 4xx (bad key, unknown model, ...) raises at once with ``fatal=True``: retrying cannot help;
- a reply that does not fit the format raises ``prompts.TeacherReplyError``, quoting the reply.
The API key is read from an environment variable and goes only into the Authorization header: it is never
logged, printed or put into an error message.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import math
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from minillava.constants import STAGE2_KINDS, Turns
from minillava.data.instructions import DETAIL_INSTRUCTIONS
from minillava.data.prompts import PROMPTS, Prompt, parse_reply

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 429}  # and every 5xx


class TeacherError(RuntimeError):
    """A request that failed for good. `fatal`: it would fail the same way for every record (e.g. HTTP 401)."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class ChatTeacher:
    """The ``Teacher`` interface over an OpenAI-compatible ``POST {base_url}/chat/completions``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        *,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        concurrency: int = 4,
        temperature: float | None = None,
        max_tokens: int | None = None,
        prompts: dict[str, Prompt] = PROMPTS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError(f"need concurrency >= 1, max_retries >= 0 and timeout > 0; got {concurrency}, "
                             f"{max_retries}, {timeout}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env or None
        self._api_key: str | None = None
        if self.api_key_env:
            self._api_key = os.environ.get(self.api_key_env)
            if not self._api_key:
                raise ValueError(f"environment variable {self.api_key_env} is not set; set it to the API key, "
                                 "or pass no key variable for an endpoint that needs none")
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.concurrency = concurrency
        self.options = {k: v for k, v in (("temperature", temperature), ("max_tokens", max_tokens)) if v is not None}
        self.prompts = prompts
        self._slots = threading.BoundedSemaphore(concurrency)
        self._sleep = sleep

    def __repr__(self) -> str:  # the key stays out; only the name of its variable is shown
        return f"ChatTeacher(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    # -- the Teacher interface -------------------------------------------------

    def respond(self, kind: str, context: str, rng: random.Random) -> Turns:
        if kind not in STAGE2_KINDS:
            raise ValueError(f"unknown response kind {kind!r}; expected one of {STAGE2_KINDS}")
        turns = parse_reply(kind, self.complete(self.prompts[kind].messages(context)))
        if kind == "detail":  # the teacher writes the description; the question is one of ours, as in the paper
            return [(rng.choice(DETAIL_INSTRUCTIONS), turns[0][1])]
        return turns

    # -- HTTP ----------------------------------------------------------------------

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant's reply to `messages`, retrying what can succeed on a later try."""
        body = json.dumps({"model": self.model, "messages": messages, **self.options}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        timed_out = 0
        for attempt in range(self.max_retries + 1):
            retry_after = None
            with self._slots:  # held only while a request is in flight, not while backing off
                deadline = _Deadline(self.timeout)
                try:
                    request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                    with deadline.opener().open(request, timeout=self.timeout) as response:
                        payload = response.read()
                    if deadline.expired:  # cut off mid-body: what came is not the reply
                        raise TimeoutError("deadline")
                    return self._content(payload)
                except urllib.error.HTTPError as exc:
                    detail = "" if deadline.expired else _snippet(_read_quietly(exc))
                    if exc.code not in RETRY_STATUS and exc.code < 500:
                        raise TeacherError(f"{self.url}: HTTP {exc.code}: {detail}", fatal=True) from None
                    problem, retry_after = f"HTTP {exc.code}: {detail}", exc.headers.get("Retry-After")
                except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
                    if isinstance(exc, urllib.error.URLError) and not deadline.expired:
                        problem = f"cannot connect: {exc.reason}"  # refused, reset, DNS: the server may come back
                    else:
                        problem = f"{type(exc).__name__}: {exc}"
                finally:
                    deadline.cancel()
                if deadline.expired or "timed out" in problem.lower():
                    timed_out += 1
                    problem = f"no complete reply within the {self.timeout:g} s timeout"
            if attempt == self.max_retries:
                every = timed_out == attempt + 1
                raise TeacherError(f"{self.url}: gave up after {attempt + 1} tries; last: {problem}"
                                   + ("; every try ran out of time, so the run stops" if every else ""), fatal=every)
            delay = self._delay(attempt, retry_after)
            log.warning("%s: %s; retry %d of %d in %.1f s", self.url, problem, attempt + 1, self.max_retries, delay)
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.backoff * 2**attempt * random.uniform(0.8, 1.2)  # jitter: threads do not retry in lockstep
        wait = parse_retry_after(retry_after)
        if wait is not None:
            delay = max(delay, wait)
        return min(delay, self.max_backoff)

    def _content(self, payload: bytes) -> str:
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise TeacherError(f"{self.url}: not a chat-completions response: {_snippet(payload)}") from None
        if not isinstance(content, str):
            raise TeacherError(f"{self.url}: the reply's content is {type(content).__name__}, not text")
        return content


def _snippet(data: bytes, limit: int = 200) -> str:
    text = data.decode("utf-8", errors="replace").strip()
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def _read_quietly(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read()
    except (OSError, http.client.HTTPException):
        return b""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds, or an HTTP date); None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


class _Deadline:
    """A wall-clock limit on one HTTP exchange: when it passes, the connection's socket is shut down.

    A socket timeout bounds each wait for a byte, not the whole exchange; this bounds the whole exchange. It plugs
    into urllib through its own HTTP(S) handlers, so proxies and everything else urllib does are kept.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def _watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)
        return sock

    def cancel(self) -> None:
        self._timer.cancel()

    def opener(self) -> urllib.request.OpenerDirector:
        deadline = self

        def watched(base: type) -> type:
            class Connection(base):  # type: ignore[misc, valid-type]
                def __init__(self, *args, **kwargs) -> None:
                    super().__init__(*args, **kwargs)
                    create = self._create_connection
                    self._create_connection = lambda *a, **k: deadline._watch(create(*a, **k))

            return Connection

        http_connection, https_connection = watched(http.client.HTTPConnection), None
        handlers: list[urllib.request.BaseHandler] = []

        class HTTPHandler(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(http_connection, req)

        handlers.append(HTTPHandler())
        if hasattr(http.client, "HTTPSConnection"):
            https_connection = watched(http.client.HTTPSConnection)

            class HTTPSHandler(urllib.request.HTTPSHandler):
                def https_open(self, req):
                    kwargs = {"context": self._context}
                    if hasattr(self, "_check_hostname"):  # Python < 3.12
                        kwargs["check_hostname"] = self._check_hostname
                    return self.do_open(https_connection, req, **kwargs)

            handlers.append(HTTPSHandler())
        return urllib.request.build_opener(*handlers)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv(); close() alone would not
    except OSError:
        pass
