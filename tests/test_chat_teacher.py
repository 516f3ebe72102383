"""Prompts, reply parsing, and the chat teacher against a stub server on 127.0.0.1."""

from __future__ import annotations

import logging
import random
import threading

import pytest
from chat_stub import Action, ChatStub, reply

from minillava.constants import STAGE2_KINDS
from minillava.data.chat_teacher import ChatTeacher, TeacherError
from minillava.data.context import box_lines, caption_lines
from minillava.data.instructions import DETAIL_INSTRUCTIONS
from minillava.data.prompts import PROMPTS, SYSTEM, TeacherReplyError, format_reply, parse_reply
from minillava.data.world import make_scene, symbolic_context

KEY = "sk-test-0123456789-secret"
CONV_REPLY = format_reply("conv", [("How many shapes are there?", "There are two shapes."),
                                   ("Which one is on the left?", "The red circle is on the left.")])
COMPLEX_REPLY = format_reply("complex", [("Could the circle roll away?", "The circle is round. So yes, it could.")])
DETAIL_REPLY = "A red circle sits on the left, and a blue square on the right."


# -- prompts ---------------------------------------------------------------------


def test_prompts_follow_the_papers_structure():
    assert set(PROMPTS) == set(STAGE2_KINDS)
    for kind, prompt in PROMPTS.items():
        system = prompt.system.lower()
        # told it sees an image given as captions and boxes, to answer from that content only, as if seeing it
        assert "looking at a single image" in system and "[x1, y1, x2, y2]" in system
        assert "never mention" in system and ("with certainty" in system or "supports" in system
                                              or "depends on" in system)
        assert prompt.examples, kind
        for ex in prompt.examples:
            assert caption_lines(ex.context) and box_lines(ex.context), "examples use the context format"
            assert parse_reply(kind, format_reply(kind, list(ex.turns)))[0][1] == ex.turns[0][1]
            if kind != "detail":
                assert parse_reply(kind, format_reply(kind, list(ex.turns))) == list(ex.turns)
    assert "step by step" in SYSTEM["complex"] and "conclusion" in SYSTEM["complex"]
    assert "Cover every object" in SYSTEM["detail"]


def test_messages_are_system_then_examples_then_the_context():
    context = symbolic_context(make_scene("s", 3))
    for kind, prompt in PROMPTS.items():
        msgs = prompt.messages(context)
        assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * len(prompt.examples) + ["user"]
        assert msgs[0]["content"] == SYSTEM[kind] and msgs[-1]["content"] == context


def test_parse_reply_accepts_blocks_variants_and_json_lines():
    assert parse_reply("conv", CONV_REPLY) == [("How many shapes are there?", "There are two shapes."),
                                               ("Which one is on the left?", "The red circle is on the left.")]
    inline = "Question: What is it?\nAnswer: A circle.\n===\n**Question:** Colour?\n**Answer:** Red,\nbright red."
    assert parse_reply("conv", inline) == [("What is it?", "A circle."), ("Colour?", "Red,\nbright red.")]
    lines = '{"question": "What is it?", "answer": "A circle."}\n{"question": "Colour?", "answer": "Red."}'
    assert parse_reply("conv", lines) == [("What is it?", "A circle."), ("Colour?", "Red.")]
    assert parse_reply("detail", "  " + DETAIL_REPLY + "\n") == [("", DETAIL_REPLY)]


@pytest.mark.parametrize("kind, text, why", [
    ("conv", "", "empty"),
    ("conv", "I'm sorry, I cannot help with that.", "text before the first Question"),
    ("conv", "Question:\nWhat?\n===\nQuestion:\nWhy?\n===", "alternate"),
    ("conv", "Question:\nWhat?\n===\nAnswer:\n\n===", "empty answer"),
    ("complex", CONV_REPLY, "one question and answer expected, got 2"),
    ("detail", CONV_REPLY, "a description was asked for"),
])
def test_parse_reply_names_what_is_wrong(kind, text, why):
    with pytest.raises(TeacherReplyError, match=why) as err:
        parse_reply(kind, text)
    assert repr(text.strip()[:20])[1:-1] in str(err.value), "the error quotes the reply"


# -- the chat teacher against a stub server ----------------------------------------------


def by_kind(body: dict) -> Action:
    """A well-behaved teacher: answers each prompt in its format."""
    system = body["messages"][0]["content"]
    kind = next(k for k, s in SYSTEM.items() if s == system)
    return reply({"conv": CONV_REPLY, "detail": DETAIL_REPLY, "complex": COMPLEX_REPLY}[kind])


def teacher(stub: ChatStub, monkeypatch, **kw) -> ChatTeacher:
    monkeypatch.setenv("STUB_KEY", KEY)
    kw = {"timeout": 5.0, "backoff": 0.01, "max_retries": 3, **kw}
    return ChatTeacher(stub.base_url, "stub-model", "STUB_KEY", **kw)


def test_good_replies_become_turns(monkeypatch):
    context = symbolic_context(make_scene("s", 5))
    with ChatStub(lambda body, n: by_kind(body)) as stub:
        t = teacher(stub, monkeypatch, temperature=0.2)
        rng = random.Random(0)
        assert t.respond("conv", context, rng) == parse_reply("conv", CONV_REPLY)
        assert t.respond("complex", context, rng) == parse_reply("complex", COMPLEX_REPLY)
        ((question, answer),) = t.respond("detail", context, rng)
        assert question in DETAIL_INSTRUCTIONS and answer == DETAIL_REPLY
    request = stub.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["body"]["model"] == "stub-model" and request["body"]["temperature"] == 0.2
    assert request["body"]["messages"] == PROMPTS["conv"].messages(context), "the teacher is sent text only"


def test_garbage_reply_is_a_clear_error(monkeypatch):
    with ChatStub(lambda body, n: reply("lorem ipsum dolor")) as stub:
        with pytest.raises(TeacherReplyError, match="cannot parse the 'conv' reply.*lorem ipsum"):
            teacher(stub, monkeypatch).respond("conv", "A caption.", random.Random(0))
    assert len(stub.requests) == 1, "a reply that arrived is not re-requested"


def test_a_body_that_is_not_chat_completions_is_a_clear_error(monkeypatch):
    with ChatStub(lambda body, n: Action(raw=b"<html>gateway</html>")) as stub:
        with pytest.raises(TeacherError, match="not a chat-completions response.*gateway"):
            teacher(stub, monkeypatch).complete([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("status", [429, 500, 503])
def test_429_and_5xx_are_retried_with_backoff(monkeypatch, status):
    sleeps = []
    headers = {"Retry-After": "0.5"} if status == 429 else {}
    script = lambda body, n: Action(status=status, headers=headers) if n < 2 else reply("fine")  # noqa: E731
    with ChatStub(script) as stub:
        t = teacher(stub, monkeypatch, sleep=sleeps.append, backoff=0.1, max_backoff=10)
        assert t.complete([{"role": "user", "content": "hi"}]) == "fine"
    assert len(stub.requests) == 3 and len(sleeps) == 2
    if status == 429:
        assert all(s >= 0.5 for s in sleeps), "Retry-After is honoured"
    else:
        assert 0.08 <= sleeps[0] <= 0.12 and 0.16 <= sleeps[1] <= 0.24, "exponential backoff with jitter"


def test_retries_give_up_with_the_last_error(monkeypatch):
    with ChatStub(lambda body, n: Action(status=500)) as stub:
        with pytest.raises(TeacherError, match=r"gave up after 3 tries; last: HTTP 500") as err:
            teacher(stub, monkeypatch, max_retries=2, sleep=lambda s: None).complete([])
    assert not err.value.fatal and len(stub.requests) == 3


def test_timeout_is_retried(monkeypatch):
    script = lambda body, n: reply("late", delay=1.0) if n == 0 else reply("on time")  # noqa: E731
    with ChatStub(script) as stub:
        t = teacher(stub, monkeypatch, timeout=0.3, sleep=lambda s: None)
        assert t.complete([{"role": "user", "content": "hi"}]) == "on time"
    assert len(stub.requests) == 2


def test_client_errors_are_fatal_and_not_retried(monkeypatch):
    with ChatStub(lambda body, n: Action(status=401)) as stub:
        with pytest.raises(TeacherError, match="HTTP 401") as err:
            teacher(stub, monkeypatch).complete([])
    assert err.value.fatal and len(stub.requests) == 1


def test_concurrency_limit(monkeypatch):
    with ChatStub(lambda body, n: reply("ok", delay=0.15)) as stub:
        t = teacher(stub, monkeypatch, concurrency=2)
        threads = [threading.Thread(target=t.complete, args=([],)) for _ in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert len(stub.requests) == 6 and stub.max_in_flight == 2


def test_the_api_key_is_never_shown(monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with ChatStub(lambda body, n: Action(status=500) if n == 0 else Action(status=403)) as stub:
        t = teacher(stub, monkeypatch)
        with pytest.raises(TeacherError) as err:
            t.complete([])
    shown = str(err.value) + repr(t) + caplog.text + "".join(capsys.readouterr())
    assert "HTTP 500" in caplog.text, "the retry was logged"
    assert KEY not in shown and "STUB_KEY" in repr(t)


def test_a_missing_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR is not set"):
        ChatTeacher("http://127.0.0.1:9/v1", "m", "NO_SUCH_KEY_VAR")
    assert ChatTeacher("http://127.0.0.1:9/v1", "m", None)._api_key is None  # endpoints without a key
