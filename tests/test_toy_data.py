"""The toy run's data: the data pipeline's records plus VQA records, evaluation questions and the LM corpus."""

from __future__ import annotations

import json

import pytest

from minillava.cli import gen_data_main
from minillava.data.toy_data import ToyDataConfig, generate_toy_data
from minillava.data.validate import load_llava


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
    generate_toy_data(out, ToyDataConfig(n_train=20, n_eval=4, n_lm=8, mix=(1, 1, 1)))
    # a run folder written with other settings is regenerated, not refused (the run owns its data folder)
    files = generate_toy_data(out, ToyDataConfig(n_train=24, n_eval=5, n_lm=8))
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
