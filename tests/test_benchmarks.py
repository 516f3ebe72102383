"""The benchmark scripts run end to end on a tiny finished run and leave that run untouched."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_stage2_recipe_trains_in_a_scratch_folder_and_reports(tiny_run):
    out, _ = tiny_run
    before = {p.name: p.read_bytes() for p in (out / "weights").iterdir()}
    cmd = [sys.executable, str(BENCHMARKS / "stage2_recipe.py"), str(out), "--steps", "2", "--batch", "4",
           "--projector", "mlp2x_gelu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (line["steps"], line["batch"], line["projector"], line["stage1"]) == (2, 4, "mlp2x_gelu", True)
    assert set(line["accuracy"]) == {"count", "colour", "yesno", "relation", "overall"}
    assert {"stage1", "stage2"} <= set(line["stage_seconds"])
    assert {p.name: p.read_bytes() for p in (out / "weights").iterdir()} == before  # RUN is only read


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
