"""A teacher that sends the paper's prompts to any OpenAI-compatible chat-completions endpoint.

Like the paper's GPT-4, it is given text only (the symbolic context inside ``prompts.PROMPTS``) and never an
image. Standard library only: ``urllib`` for HTTP; callers run it from threads (``gen_data`` uses a thread pool),
and a semaphore caps the requests in flight at ``concurrency``.

Failure handling, for long runs against rate-limited services:
- 429, 408 and 5xx answers, timeouts and dropped connections are retried with exponential backoff (honouring a
  ``Retry-After`` header), up to ``max_retries`` times, then raise ``TeacherError``;
- any other 4xx (bad key, unknown model, ...) raises at once with ``fatal=True``: retrying cannot help;
- a reply that does not fit the format raises ``prompts.TeacherReplyError``, quoting the reply.
The API key is read from an environment variable and goes only into the Authorization header: it is never
logged, printed or put into an error message.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
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
        for attempt in range(self.max_retries + 1):
            retry_after = None
            with self._slots:  # held only while a request is in flight, not while backing off
                try:
                    request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                    with urllib.request.urlopen(request, timeout=self.timeout) as response:
                        return self._content(response.read())
                except urllib.error.HTTPError as exc:
                    detail = _snippet(exc.read())
                    if exc.code not in RETRY_STATUS and exc.code < 500:
                        raise TeacherError(f"{self.url}: HTTP {exc.code}: {detail}", fatal=True) from None
                    problem, retry_after = f"HTTP {exc.code}: {detail}", exc.headers.get("Retry-After")
                except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                except urllib.error.URLError as exc:  # refused, reset, DNS: the server may come back
                    problem = f"cannot connect: {exc.reason}"
            if attempt == self.max_retries:
                raise TeacherError(f"{self.url}: gave up after {attempt + 1} tries; last: {problem}")
            delay = self._delay(attempt, retry_after)
            log.warning("%s: %s; retry %d of %d in %.1f s", self.url, problem, attempt + 1, self.max_retries, delay)
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.backoff * 2**attempt * random.uniform(0.8, 1.2)  # jitter: threads do not retry in lockstep
        if retry_after is not None:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:  # an HTTP date; the exponential delay will do
                pass
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
