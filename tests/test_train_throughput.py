"""benchmarks/train_throughput.py runs on the CPU with the tiny preset and reports tokens/s from real steps."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script loads
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_tiny_preset_reports_throughput_on_cpu(bench, capsys):
    result = bench.main(["--preset", "tiny", "--steps", "2", "--warmup", "1", "--cpu", "--peak-tflops", "1"])
    out = capsys.readouterr().out
    assert "tokens/s" in out and "MFU" in out
    line = json.loads(out.strip().splitlines()[-1])
    assert line == json.loads(json.dumps(result))
    assert (line["steps"], line["batch"], line["seq"], line["checkpointing"]) == (2, 4, 64, True)
    assert line["tokens_per_s"] == pytest.approx(4 * 64 / line["step_seconds"])
    assert line["hardware_flops_per_step"] > line["model_flops_per_step"] > 0  # recompute counted in HFU only
    assert line["mfu"] == pytest.approx(line["tflops"] / 1)


def test_fake_rows_have_one_image_and_supervised_second_halves(bench):
    data = bench.FakeLlavaData(3, seq=64, vocab=32, image_token_id=4, num_image_tokens=16, image_size=32)
    row = data[1]
    assert int((row["input_ids"] == 4).sum()) == 16 and row["pixel_values"].shape == (3, 32, 32)
    assert bool((row["labels"][:32] == -100).all()) and bool((row["labels"][32:] == row["input_ids"][32:]).all())
    assert bool((row["labels"][32:] != 4).all())
    with pytest.raises(ValueError, match="too short"):
        bench.FakeLlavaData(1, seq=32, vocab=32, image_token_id=4, num_image_tokens=16, image_size=32)
