"""The toy run's data: the data pipeline's records plus VQA records, evaluation questions and the LM corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minillava.cli import gen_data_main
from minillava.constants import IMAGE_TOKEN, SHORT_ANSWER
from minillava.data.questions import EVAL_KINDS
from minillava.data.toy_data import ToyDataConfig, generate_toy_data
from minillava.data.validate import load_llava, load_llava_json


def test_toy_run_and_gen_data_write_the_same_records(tmp_path, capsys):
    """One toy-data path: `minillava toy`'s stage-1 and stage-2 instruction records are those of
    `minillava gen-data --toy` for the same scenes and seed; the toy run only adds its VQA records."""
    cfg = ToyDataConfig(n_train=40, n_eval=4, n_lm=12, seed=3, vqa_questions=4)
    toy = generate_toy_data(tmp_path / "toy", cfg)
    gen_data_main(["--toy", "40", "--seed", "3", "--out", str(tmp_path / "gen"), "--quiet"])
    gen = tmp_path / "gen"
    assert toy["stage1"].read_bytes() == (gen / "stage1.json").read_bytes()
    toy_stage2 = json.loads(toy["stage2"].read_text())
    assert [r for r in toy_stage2 if r["kind"] != "vqa"] == json.loads((gen / "stage2.json").read_text())
    vqa = [r for r in toy_stage2 if r["kind"] == "vqa"]
    assert len(vqa) == 40 and all(len(r["conversations"]) == 8 for r in vqa)
    assert [r["image"] for r in toy_stage2[1::2]] == [r["image"] for r in toy_stage2[0::2]]  # each after its image
    for record in json.loads((gen / "stage1.json").read_text()):
        name = record["image"]
        assert (toy["images"] / name).read_bytes() == (gen / "images" / name).read_bytes(), name


def test_toy_data_is_valid_llava_json_and_regenerates_over_an_older_run(tmp_path):
    out = tmp_path / "data"
    generate_toy_data(out, ToyDataConfig(n_train=30, n_eval=6, n_lm=8, mix=(1, 1, 1)))
    # a folder that an earlier toy run wrote, with other settings, is regenerated, not refused; its extra scenes go
    files = generate_toy_data(out, ToyDataConfig(n_train=24, n_eval=5, n_lm=8))
    assert sorted(p.name for p in files["images"].iterdir()) == sorted(
        [f"train-{i:06d}.png" for i in range(24)] + [f"eval-{i:06d}.png" for i in range(5)])
    stage2, report = load_llava(files["stage2"], image_folder=files["images"], unique_ids=True)
    assert len(stage2) == 24 and not report.skipped
    evals = json.loads(files["eval"].read_text())
    assert {item["image"] for item in evals} <= {p.name for p in files["images"].iterdir()}
    assert len({item["image"] for item in evals}) == 5
    lm = json.loads(files["lm"].read_text())
    assert len(lm) == 8 and all("image" not in r and "<image>" not in json.dumps(r) for r in lm)
    contexts = json.loads(files["contexts"].read_text())
    assert len(contexts) == 24 + 5


@pytest.mark.parametrize("field, value", [("n_train", -1), ("vqa_questions", -2), ("mix", (1, 2)),
                                          ("mix", (1, -1, 1)), ("lm_caption_share", 1.5)])
def test_bad_config_is_refused(field, value):
    with pytest.raises(ValueError, match=field if field != "mix" else "mix must be"):
        ToyDataConfig(**{field: value})


TINY = ToyDataConfig(n_train=24, n_eval=10, n_lm=40, seed=5, vqa_questions=4)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return generate_toy_data(tmp_path_factory.mktemp("a"), TINY)


def _all_files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_is_deterministic(tiny_data, tmp_path):
    again = generate_toy_data(tmp_path, TINY)
    a, b = _all_files(tiny_data["stage1"].parent), _all_files(again["stage1"].parent)
    assert sum(p.parts[0] == "images" for p in a) == TINY.n_train + TINY.n_eval
    # summary.json describes the run (its seconds, its folder), not the data
    assert a.pop(Path("summary.json")) and b.pop(Path("summary.json"))
    assert a == b


def test_generated_records_are_valid(tiny_data):
    stage1, stage2 = load_llava_json(tiny_data["stage1"]), load_llava_json(tiny_data["stage2"])
    lm = load_llava_json(tiny_data["lm"])
    assert len(stage1) == TINY.n_train and len(lm) == TINY.n_lm
    for r in stage1 + stage2:
        assert (tiny_data["images"] / r["image"]).is_file()
        assert r["conversations"][0]["value"].startswith(IMAGE_TOKEN + "\n")
    assert all(r["id"] == f"{r['image'][:-4]}-{r['kind']}" for r in stage2)
    # one instruction record and one short-answer VQA record per train image
    instruct = [r for r in stage2 if r["kind"] != "vqa"]
    vqa = [r for r in stage2 if r["kind"] == "vqa"]
    assert len(instruct) == len(vqa) == TINY.n_train
    assert {r["kind"] for r in instruct} <= {"conv", "detail", "complex"}
    for r in vqa:
        questions = [t["value"] for t in r["conversations"][::2]]
        assert 1 <= len(questions) <= TINY.vqa_questions
        assert all(q.endswith("\n" + SHORT_ANSWER) for q in questions)
    contexts = json.loads(tiny_data["contexts"].read_text())
    assert len(contexts) == TINY.n_train + TINY.n_eval
    for r in lm:
        assert "image" not in r
        context, question = r["conversations"][0]["value"].rsplit("\n\n", 1)
        # the LM reads the captions only (no boxes): the paper's Vicuna never saw the teacher's boxes either
        assert context.strip() and question and IMAGE_TOKEN not in context and "[" not in context
    assert {r["kind"] for r in lm} == {"conv", "detail", "complex", "caption"}
    items = json.loads(tiny_data["eval"].read_text())
    assert {i["kind"] for i in items} <= set(EVAL_KINDS)
    for i in items:
        assert i["id"] == f"{i['image'][:-4]}-{i['kind']}" and (tiny_data["images"] / i["image"]).is_file()


def test_vqa_questions_one_record_each_are_the_merged_records_split(tiny_data, tmp_path):
    """vqa_merged=False: the same questions, in the same order, each in a record of its own that opens with the
    image; the instruction records are unchanged."""
    from dataclasses import replace

    single = generate_toy_data(tmp_path, replace(TINY, vqa_merged=False))
    merged_records = json.loads(tiny_data["stage2"].read_text())
    single_records = json.loads(single["stage2"].read_text())
    assert [r for r in single_records if r["kind"] != "vqa"] == [r for r in merged_records if r["kind"] != "vqa"]
    n_turns = 0
    for merged in (r for r in merged_records if r["kind"] == "vqa"):
        scene = merged["id"].removesuffix("-vqa")
        mine = [r for r in single_records if r["id"].startswith(f"{scene}-vqa-")]
        turns = merged["conversations"]
        assert [r["id"] for r in mine] == [f"{scene}-vqa-{j}" for j in range(len(turns) // 2)]
        for j, r in enumerate(mine):
            question, answer = r["conversations"]  # one question each
            assert r["image"] == merged["image"] and question["value"].startswith(IMAGE_TOKEN + "\n")
            assert question["value"].removeprefix(IMAGE_TOKEN + "\n") == turns[2 * j]["value"].removeprefix(
                IMAGE_TOKEN + "\n") and answer == turns[2 * j + 1]
        n_turns += len(turns) // 2
    assert sum(r["kind"] == "vqa" for r in single_records) == n_turns > TINY.n_train
    assert load_llava(single["stage2"], image_folder=single["images"], unique_ids=True)[1].skipped == []


# -- load_llava_json (validate.py) ----------------------------------------------------


def test_a_toy_run_and_gen_data_never_take_over_each_others_folder(tmp_path, capsys):
    generate_toy_data(tmp_path / "toy", ToyDataConfig(n_train=12, n_eval=2, n_lm=4, vqa_questions=2))
    with pytest.raises(SystemExit, match=r"other settings \(teacher differ"):  # its stage2.json holds VQA records
        gen_data_main(["--toy", "12", "--out", str(tmp_path / "toy"), "--quiet"])
    gen_data_main(["--toy", "12", "--out", str(tmp_path / "gen"), "--quiet"])
    with pytest.raises(ValueError, match="that `minillava toy` did not write"):
        generate_toy_data(tmp_path / "gen", ToyDataConfig(n_train=12, n_eval=2, n_lm=4))
    assert len(json.loads((tmp_path / "gen" / "stage2.json").read_text())) == 12  # untouched
