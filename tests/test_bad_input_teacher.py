"""Bad teacher endpoints and gen-data options: a deadline per request, Retry-After, clean stops, named options."""

from __future__ import annotations

import email.utils
import json
import time

import pytest
from chat_stub import Action, ChatStub, reply
from coco_folder import make_coco

from minillava.cli import gen_data_main
from minillava.data.chat_teacher import ChatTeacher, TeacherError, parse_retry_after
from minillava.data.pipeline import GenerationFailed, generate_dataset
from minillava.data.prompts import format_reply
from minillava.data.sources import toy_source

HI = [{"role": "user", "content": "hi"}]


def teacher(stub: ChatStub, **kw) -> ChatTeacher:
    kw = {"timeout": 0.5, "backoff": 0.01, "max_retries": 0, **kw}
    return ChatTeacher(stub.base_url, "stub-model", None, **kw)


@pytest.mark.parametrize("action", [
    Action(text="a reply that comes a byte at a time", trickle=0.01),  # status line, headers and body trickled
    Action(text="x", trickle=0.0005, endless=True),  # headers arrive, the body never ends
], ids=["trickle", "endless"])
def test_a_trickling_or_endless_reply_is_cut_off_at_the_deadline(action):
    """The measured case: --timeout 3 took 198 s against a trickling server; one that never stops hung the run."""
    with ChatStub(lambda body, n: action) as stub:
        t = teacher(stub, timeout=0.5)
        start = time.monotonic()
        with pytest.raises(TeacherError, match=r"/v1/chat/completions: gave up after 1 tries; last: no complete "
                                               r"reply within the 0\.5 s timeout") as err:
            t.complete(HI)
        assert time.monotonic() - start < 1.5
    assert err.value.fatal, "every try ran out of time: the run stops"


def test_retries_each_get_the_deadline_and_a_later_good_reply_is_taken():
    sleeps = []
    script = lambda body, n: Action(text="slow", trickle=0.01) if n < 2 else reply("on time")  # noqa: E731
    with ChatStub(script) as stub:
        t = teacher(stub, timeout=0.4, max_retries=2, sleep=sleeps.append)
        start = time.monotonic()
        assert t.complete(HI) == "on time"
        assert time.monotonic() - start < 2.5
    assert len(stub.requests) == 3 and len(sleeps) == 2


def test_a_mix_of_timeouts_and_server_errors_is_not_fatal():
    script = lambda body, n: Action(text="slow", trickle=0.01) if n == 0 else Action(status=500)  # noqa: E731
    with ChatStub(script) as stub:
        with pytest.raises(TeacherError, match="gave up after 2 tries; last: HTTP 500") as err:
            teacher(stub, max_retries=1, sleep=lambda s: None).complete(HI)
    assert not err.value.fatal, "only a server that never answers in time stops the run"


@pytest.mark.parametrize("status", [503, 429])
def test_retry_after_in_seconds_or_as_a_date_is_honoured_and_capped(status):
    in_3s = email.utils.formatdate(time.time() + 3, usegmt=True)
    headers = [{"Retry-After": "2"}, {"Retry-After": in_3s}, {"Retry-After": "86400"}]
    script = lambda body, n: Action(status=status, headers=headers[n]) if n < 3 else reply("ok")  # noqa: E731
    sleeps = []
    with ChatStub(script) as stub:
        assert teacher(stub, max_retries=3, max_backoff=30, sleep=sleeps.append).complete(HI) == "ok"
    assert sleeps[0] == pytest.approx(2, abs=0.01)
    assert 1.0 <= sleeps[1] <= 3.01, "an HTTP date: the time until it"
    assert sleeps[2] == 30, "capped at max_backoff"


def test_parse_retry_after():
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("1.5") == 1.5 and parse_retry_after("-4") == 0.0 and parse_retry_after("nan") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0, "a date in the past: no wait"
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_stop_at_once_naming_the_endpoint(status):
    with ChatStub(lambda body, n: Action(status=status)) as stub:
        with pytest.raises(TeacherError, match=rf"127\.0\.0\.1:\d+/v1/chat/completions: HTTP {status}") as err:
            teacher(stub, max_retries=3).complete(HI)
    assert err.value.fatal and len(stub.requests) == 1


def test_a_run_against_a_server_that_never_answers_in_time_stops_naming_endpoint_and_record(tmp_path):
    with ChatStub(lambda body, n: Action(text="x", trickle=0.001, endless=True)) as stub:
        t = teacher(stub, timeout=0.4, max_retries=1, sleep=lambda s: None)
        start = time.monotonic()
        with pytest.raises(GenerationFailed, match=r"stopping after 1 failed record\(s\); last, train-\d+-\w+: "
                                                   r"http://127\.0\.0\.1:\d+/v1/chat/completions: gave up after 2 "
                                                   r"tries; last: no complete reply within the 0\.4 s timeout"):
            generate_dataset(toy_source(3), tmp_path / "out", t, {"name": "chat"}, progress=False, max_failures=20)
        assert time.monotonic() - start < 3
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and "0.4 s timeout" in errors[0]["error"]


# -- gen-data's options ---------------------------------------------------------------------


@pytest.mark.parametrize("option, value, message", [
    ("--limit", "0", "--limit takes a whole number >= 1, got 0"),
    ("--limit", "-3", "--limit takes a whole number >= 1, got -3"),
    ("--concurrency", "0", "--concurrency takes a whole number >= 1, got 0"),
    ("--timeout", "0", r"--timeout takes a number of seconds > 0, got 0\.0"),
    ("--timeout", "nan", r"--timeout takes a number of seconds > 0, got nan"),
    ("--max-retries", "-1", "--max-retries takes a whole number >= 0, got -1"),
    ("--max-failures", "-1", "--max-failures takes a whole number >= 0, got -1"),
    ("--temperature", "-0.5", r"--temperature takes a number >= 0, got -0\.5"),
    ("--mix", "1:x:1", "--mix: mix must be 3 non-negative weights"),
])
def test_gen_data_options_are_range_checked_before_any_work(tmp_path, option, value, message):
    folder = make_coco(tmp_path / "coco")
    (folder / "annotations" / "captions_val2017.json").write_text("{broken")  # never read: options come first
    args = ["--coco", str(folder), "--out", str(tmp_path / "out"), "--base-url", "http://127.0.0.1:9/v1",
            "--model", "m", "--api-key-env", "", option, value, "--quiet"]
    with pytest.raises(SystemExit, match="minillava gen-data: " + message):
        gen_data_main(args)
    assert not (tmp_path / "out").exists()


def test_gen_data_toy_count_is_checked():
    with pytest.raises(SystemExit, match="--toy takes a positive number of scenes, got 0"):
        gen_data_main(["--toy", "0", "--out", "unused", "--quiet"])


def test_gen_data_names_a_box_wholly_outside_its_image(tmp_path):
    folder = make_coco(tmp_path / "coco", [{"id": 23, "image_id": 1, "bbox": [100, 100, 5, 5], "category_id": 18}])
    with pytest.raises(SystemExit, match=r"minillava gen-data: .*instances_val2017\.json: annotation 2 \(id 23\): "
                                         r"bbox \[100, 100, 5, 5\] lies wholly outside"):
        gen_data_main(["--coco", str(folder), "--out", str(tmp_path / "out"), "--base-url", "http://127.0.0.1:9/v1",
                       "--model", "m", "--api-key-env", "", "--quiet"])


def test_gen_data_with_a_clipped_box_runs_and_warns(tmp_path, capsys):
    folder = make_coco(tmp_path / "coco", [{"id": 23, "image_id": 1, "bbox": [48, 40, 32, 32], "category_id": 18}])
    conv = format_reply("conv", [("What is there?", "A dog.")])
    with ChatStub(lambda body, n: reply(conv)) as stub:
        with pytest.warns(UserWarning, match=r"annotation 2 \(id 23\)"):
            gen_data_main(["--coco", str(folder), "--out", str(tmp_path / "out"), "--base-url", stub.base_url,
                           "--model", "m", "--api-key-env", "", "--mix", "1:0:0", "--quiet"])
    assert "dog: [0.750, 0.833, 1.000, 1.000]" in stub.requests[0]["body"]["messages"][-1]["content"] + \
        stub.requests[1]["body"]["messages"][-1]["content"]
