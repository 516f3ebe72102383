"""The data pipeline (`minillava gen-data`): the mix, toy and COCO sources, journals and resuming, the chat
teacher, and the command's argument errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from chat_stub import Action, ChatStub, reply
from coco_folder import COCO_CONTEXTS, make_coco

from minillava.cli import gen_data_main
from minillava.data.context import caption_lines
from minillava.data.instructions import STAGE1_INSTRUCTIONS
from minillava.data.journal import Journal
from minillava.data.pipeline import GenerationFailed, generate_dataset, plan_kinds
from minillava.data.prompts import SYSTEM, format_reply, parse_reply
from minillava.data.sources import toy_source
from minillava.data.validate import load_llava
from minillava.data.world import make_scenes

ROOT = Path(__file__).parents[1]


# -- the mix ------------------------------------------------------------------------------


def test_plan_kinds_follows_the_mix():
    assert Counter(plan_kinds(158)) == {"conv": 58, "detail": 23, "complex": 77}
    assert Counter(plan_kinds(1000)) == {"conv": 367, "detail": 146, "complex": 487}  # largest remainders
    assert Counter(plan_kinds(10, (1, 0, 1))) == {"conv": 5, "complex": 5}
    assert plan_kinds(100, seed=1) == plan_kinds(100, seed=1) != plan_kinds(100, seed=2)
    with pytest.raises(ValueError, match="mix must be"):
        plan_kinds(10, (1, -1, 1))


# -- toy runs -----------------------------------------------------------------------------


def run_cli(args: list[str], capsys) -> str:
    gen_data_main(args + ["--quiet"])
    return capsys.readouterr().out


def test_toy_run_writes_llava_json_and_a_summary(tmp_path, capsys):
    out = tmp_path / "toy"
    printed = run_cli(["--toy", "40", "--out", str(out), "--mix", "2:1:1", "--seed", "3"], capsys)
    for kind in ("caption", "conv", "detail", "complex"):
        assert any(line.startswith(kind + " ") for line in printed.splitlines()), printed
    assert "generated 80 record(s)" in printed
    stage2, report = load_llava(out / "stage2.json", image_folder=out / "images", unique_ids=True)
    stage1, _ = load_llava(out / "stage1.json", image_folder=out / "images", unique_ids=True)
    assert not report.skipped and len(stage1) == len(stage2) == 40
    assert Counter(stage2["kind"]) == {"conv": 20, "detail": 10, "complex": 10}
    contexts = json.loads((out / "contexts.json").read_text())
    assert list(contexts) == [s.id for s in make_scenes("train", 40, seed=3)]
    for rec in stage1:
        question, caption = (t["value"] for t in rec["conversations"])
        assert question.removeprefix("<image>\n") in STAGE1_INSTRUCTIONS
        assert caption in caption_lines(contexts[rec["id"]])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kinds"]["conv"]["records"] == 20 and summary["kinds"]["conv"]["share"] == 0.5
    assert summary["kinds"]["detail"]["turns_per_record"] == 1.0
    assert not (out / "errors.jsonl").exists()


@pytest.mark.slow  # a gen-data process, killed mid-run
def test_resume_after_a_kill_loses_and_repeats_nothing(tmp_path, capsys):
    n = 3000
    killed, fresh = tmp_path / "killed", tmp_path / "fresh"
    args = ["--toy", str(n), "--seed", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "minillava.cli", "gen-data", *args, "--out", str(killed), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = killed / "stage2.jsonl"
    deadline = time.monotonic() + 60
    while not (journal.exists() and journal.read_bytes().count(b"\n") >= 100):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no progress within 60 s"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "stage2.json").exists(), "killed before the end"
    complete = sum(data.count(b"\n") for data in (journal.read_bytes(), (killed / "stage1.jsonl").read_bytes()))
    assert complete < 2 * n

    run_cli(args + ["--out", str(killed)], capsys)
    run_cli(args + ["--out", str(fresh)], capsys)
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["run"]["resumed"] == complete, "every complete record was kept, only the torn one redone"
    assert summary["run"]["generated"] == 2 * n - complete
    for name in ("stage1.json", "stage2.json", "contexts.json"):
        assert (killed / name).read_bytes() == (fresh / name).read_bytes(), name
    ids = [json.loads(line)["id"] for line in journal.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == n


def test_a_torn_last_line_is_cut_off_and_redone(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--toy", "30", "--out", str(out)]
    run_cli(args, capsys)
    final = (out / "stage2.json").read_bytes()
    journal = out / "stage2.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:10]) + lines[10][:25])  # as if killed while writing line 11
    (out / "stage2.json").unlink()
    j = Journal(journal)
    j.close()
    assert j.torn and len(j.ids) == 10 and journal.read_bytes() == b"".join(lines[:10])
    run_cli(args, capsys)
    assert (out / "stage2.json").read_bytes() == final


def test_damage_and_changed_settings_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    run_cli(["--toy", "10", "--out", str(out)], capsys)
    with pytest.raises(SystemExit, match=r"other settings \(mix differ"):
        run_cli(["--toy", "10", "--out", str(out), "--mix", "1:1:1"], capsys)
    journal = out / "stage1.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:3] + ["{broken\n"] + lines[3:]))
    with pytest.raises(ValueError, match=r"stage1\.jsonl: line 4 is not a complete JSON record"):
        Journal(journal)


class ImageTokenTeacher:
    """A teacher whose reply would repeat the image token: the record must be refused, not written."""

    def respond(self, kind, context, rng):
        return [("What is in this <image>?", "Shapes.")] if "circle" in context else [("What is here?", "Shapes.")]


def test_turns_that_make_a_bad_record_are_refused_and_noted(tmp_path):
    source = toy_source(12)
    with pytest.raises(GenerationFailed, match=r"record\(s\) failed"):
        generate_dataset(source, tmp_path, ImageTokenTeacher(), {"name": "test"}, progress=False)
    errors = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    bad = {f"{im.id}-" for im in source.images if "circle" in im.context}
    assert errors and {e["id"].rsplit("-", 1)[0] + "-" for e in errors} == bad
    assert all("<image> exactly once, found 2" in e["error"] for e in errors)
    written = [json.loads(line)["id"] for line in (tmp_path / "stage2.jsonl").read_text().splitlines()]
    assert len(written) + len(errors) == len(source.images)


def test_cli_argument_errors(tmp_path, capsys):
    folder = make_coco(tmp_path / "coco")
    with pytest.raises(SystemExit, match="the toy teacher reads only toy-world contexts"):
        run_cli(["--coco", str(folder), "--teacher", "toy", "--out", str(tmp_path / "x")], capsys)
    with pytest.raises(SystemExit, match="--mix: mix must be"):
        run_cli(["--toy", "5", "--mix", "1:2", "--out", str(tmp_path / "x")], capsys)
    with pytest.raises(SystemExit, match="needs --base-url and --model"):
        run_cli(["--coco", str(folder), "--out", str(tmp_path / "x")], capsys)
    for mix in ("1:nan:1", "1:inf:1"):
        with pytest.raises(SystemExit, match="--mix: mix must be"):
            run_cli(["--toy", "5", "--mix", mix, "--out", str(tmp_path / "x")], capsys)
    with pytest.raises(SystemExit, match="--limit, --copy-images apply to --coco only"):
        run_cli(["--toy", "5", "--limit", "3", "--copy-images", "--out", str(tmp_path / "x")], capsys)
    assert not (tmp_path / "x").exists()  # refused before anything was written


# -- a COCO folder and the chat teacher ---------------------------------------------------------

REPLIES = {
    "conv": format_reply("conv", [("What animal do you see?", "A brown dog."), ("What is next to it?", "A ball.")]),
    "detail": "A brown dog sits on the grass on the left, with a small ball to its right.",
    "complex": format_reply("complex", [("Why might the dog be there?", "It has a ball. So it is likely playing.")]),
}


def teacher_reply(body: dict, broken: str | None = None) -> Action:
    kind = next(k for k, s in SYSTEM.items() if s == body["messages"][0]["content"])
    if broken and broken in body["messages"][-1]["content"]:
        return reply("Sorry, I can't see any image.")
    return reply(REPLIES[kind])


def test_coco_folder_with_a_chat_teacher_and_a_retry_of_failed_records(tmp_path, capsys, monkeypatch):
    folder = make_coco(tmp_path / "coco")
    out = tmp_path / "out"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ChatStub(lambda body, n: teacher_reply(body, broken="empty street")) as stub:
        args = ["--coco", str(folder), "--out", str(out), "--base-url", stub.base_url, "--model", "stub",
                "--api-key-env", "", "--concurrency", "2", "--mix", "1:1:1"]
        with pytest.raises(SystemExit, match=r"1 record\(s\) failed .*errors\.jsonl.*run the same command again"):
            run_cli(args, capsys)
    (error,) = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert error["id"].startswith("000000000002-") and "TeacherReplyError" in error["error"]
    assert "can't see any image" in error["error"]
    assert len((out / "stage2.jsonl").read_text().splitlines()) == 1, "the good record is kept"

    with ChatStub(lambda body, n: teacher_reply(body)) as stub:
        run_cli([a if a != args[args.index("--base-url") + 1] else stub.base_url for a in args], capsys)
    assert len(stub.requests) == 1, "only the failed record is asked again"
    assert not (out / "errors.jsonl").exists()
    ds, _ = load_llava(out / "stage2.json", image_folder=folder / "val2017", unique_ids=True)
    assert [r["image"] for r in ds] == ["000000000001.jpg", "000000000002.jpg"]
    for rec in ds:
        turns = [(h["value"].removeprefix("<image>\n"), g["value"])
                 for h, g in zip(rec["conversations"][::2], rec["conversations"][1::2])]
        if rec["kind"] == "detail":
            assert turns[0][1] == REPLIES["detail"]
        else:
            assert turns == parse_reply(rec["kind"], REPLIES[rec["kind"]])
    assert json.loads((out / "contexts.json").read_text()) == COCO_CONTEXTS
    assert json.loads((out / "summary.json").read_text())["run"]["image_folder"] == str((folder / "val2017").resolve())


def test_a_fatal_teacher_error_stops_at_once(tmp_path, capsys):
    folder = make_coco(tmp_path / "coco")
    with ChatStub(lambda body, n: Action(status=401)) as stub:
        with pytest.raises(SystemExit, match=r"stopping after 1 failed record.*HTTP 401"):
            run_cli(["--coco", str(folder), "--out", str(tmp_path / "out"), "--base-url", stub.base_url,
                     "--model", "stub", "--api-key-env", "", "--concurrency", "1"], capsys)
    assert len(stub.requests) == 1
