"""`minillava ablate`: the table arithmetic, and every path of the quick preset end to end (then resumed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from minillava.ablate import DATA_VARIANTS, PAPER, POPE_SETTINGS, SQA_VARIANTS, slug
from minillava.ablate_tables import direction, format_tables, mean_std


def test_slugs_are_distinct_file_names():
    names = [slug(v) for v in (*DATA_VARIANTS, *SQA_VARIANTS)]
    assert len(set(names)) == len(names)
    assert all(n and " " not in n and "+" not in n and "(" not in n for n in names)
    assert slug("layer -1") == "layer-1" and slug("reasoning first (best)") == "reasoning-first"


def test_mean_std_is_the_sample_std():
    ms = mean_std([1.0, 2.0, 3.0])
    assert ms["mean"] == 2.0 and ms["std"] == pytest.approx(1.0)
    assert mean_std([5.0])["std"] == 0.0


def test_direction_needs_a_change_larger_than_the_seeds_spread():
    base = {"mean": 80.0, "std": 1.0}
    assert direction({"mean": 70.0, "std": 2.0}, base, paper_delta=-5.0) == "reproduced"
    assert direction({"mean": 90.0, "std": 2.0}, base, paper_delta=-5.0) == "opposite"
    assert direction({"mean": 79.0, "std": 2.0}, base, paper_delta=-5.0) == "within noise"


def _fake_table() -> dict:
    ms = {"mean": 50.0, "std": 1.0, "values": [49.0, 51.0]}
    return {"seeds": [0, 1], "paper": PAPER,
            "data": {v: {k: ms for k in ("conv", "detail", "complex", "overall")} for v in DATA_VARIANTS},
            "scienceqa": {v: {"accuracy": ms, "per_category": {"between": ms}} for v in SQA_VARIANTS},
            "pope": {s: {m: ms for m in ("accuracy", "precision", "recall", "f1", "yes_ratio")} for s in POPE_SETTINGS},
            "toy_exact_match": {"overall": ms}, "toy_text_only": {"overall": ms}, "seconds": 12.0}


def test_tables_show_ours_beside_the_papers_numbers():
    text = format_tables(_fake_table())
    for v, number in PAPER["data"].items():
        assert f"| {v} |" in text and str(number) in text
    for v, number in PAPER["scienceqa"].items():
        assert f"| {v} |" in text and str(number) in text
    assert "50.0 ± 1.0" in text and "2 training seeds" in text


@pytest.mark.slow
def test_quick_ablation_runs_every_path_and_resumes(tmp_path):
    out = tmp_path / "ablate"
    # two seeds: a seed's variants are queued when its toy run ends, beside the other seed's toy run
    cmd = [sys.executable, "-m", "minillava", "ablate", "--quick", "--seeds", "0", "1", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((out / "ablation.json").read_text())
    assert set(table["data"]) == set(DATA_VARIANTS) and set(table["scienceqa"]) == set(SQA_VARIANTS)
    assert set(table["pope"]) == set(POPE_SETTINGS)
    for v in DATA_VARIANTS:
        overall = table["data"][v]["overall"]
        assert len(overall["values"]) == 2 and 0 <= overall["mean"] <= 100
    for name in ("ablation.md", "ablation.png"):
        assert (out / name).is_file()
    results = sorted(out.glob("seed-*/results/*.json"))
    assert len(results) == 2 * (len(DATA_VARIANTS) + len(SQA_VARIANTS))
    smaller = json.loads((out / "seed-0" / "results" / "sqa-smaller-LLM.json").read_text())
    assert "text_only" in smaller  # the smaller LLM's own stage 0 was trained and measured
    # a second call finds every result on disk and only rebuilds the tables
    stamps = {p: p.stat().st_mtime_ns for p in results}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in results} == stamps
