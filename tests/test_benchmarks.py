"""The benchmark scripts run end to end on a tiny finished run and leave that run untouched."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from minillava.data.validate import load_llava_json

pytestmark = pytest.mark.slow  # each script starts a Python process and trains

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_stage2_recipe_trains_in_a_scratch_folder_and_reports(tiny_run):
    out, _ = tiny_run
    before = {p.name: p.read_bytes() for p in (out / "weights").iterdir()}
    data_before = (out / "data" / "stage2.json").read_bytes()
    cmd = [sys.executable, str(BENCHMARKS / "stage2_recipe.py"), str(out), "--steps", "2", "--batch", "4",
           "--projector", "mlp2x_gelu", "--vqa", "3", "--seed", "7", "--template", "v0_no_system"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (line["steps"], line["batch"], line["projector"], line["stage1"], line["vqa"]) == (2, 4, "mlp2x_gelu", True, 3)
    assert (line["seed"], line["template"]) == (7, "v0_no_system")
    assert set(line["accuracy"]) == {"count", "colour", "yesno", "relation", "overall"}
    assert {"stage1", "stage2"} <= set(line["stage_seconds"])
    assert {p.name: p.read_bytes() for p in (out / "weights").iterdir()} == before  # RUN is only read
    assert (out / "data" / "stage2.json").read_bytes() == data_before


def test_stage2_recipe_adds_one_vqa_record_per_training_image(tiny_run, tmp_path):
    spec = importlib.util.spec_from_file_location("stage2_recipe", BENCHMARKS / "stage2_recipe.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    out, _ = tiny_run
    recipe.with_vqa(out / "data", tmp_path / "data", 3)
    before = load_llava_json(out / "data" / "stage2.json")
    after = load_llava_json(tmp_path / "data" / "stage2.json")
    vqa = [r for r in after if r["kind"] == "vqa"]
    assert after[: len(before)] == before and len(vqa) == len(before)  # one per training image
    assert {r["image"] for r in vqa} == {r["image"] for r in before}
    assert all(1 <= len(r["conversations"]) // 2 <= 3 for r in vqa)
    assert (tmp_path / "data" / "images").resolve() == (out / "data" / "images").resolve()


def test_stage2_recipe_names_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"config": {
        "vocab_size": 64, "max_len": 64, "template": "v0", "seed": 0, "model_overrides": {},
        "stage1": {"steps": 1, "batch_size": 2, "lr": 1e-3, "warmup_ratio": 0.0},
        "stage2": {"steps": 1, "batch_size": 2, "lr": 1e-3, "warmup_ratio": 0.0}}}))
    for name in ("data", "tokenizer"):
        (tmp_path / name).mkdir()
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "stage2_recipe.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"{tmp_path / 'weights' / 'vision.safetensors'} not found" in proc.stderr
