"""Stage 1 + 2 recipes on a finished run's stage-0 models: which stage-2 batch, step count, lr or projector scores
best in about the same time?

Reuses RUN's data, tokenizer and stage-0 weights (vision.safetensors, llm.safetensors), trains stage 1 and stage 2
with the given recipe in a scratch folder (RUN itself is not touched) and prints one JSON line: the recipe, the
seconds of each stage and the held-out accuracy. It runs on one thread by default, as each stage-2 job of
`minillava toy` does on 2 cores. Issue 2 used it to choose the default stage-2 batch:

    python benchmarks/stage2_recipe.py runs/toy --steps 800 --batch 32     # an earlier default
    python benchmarks/stage2_recipe.py runs/toy --steps 3200 --batch 8     # the next one: same records
    python benchmarks/stage2_recipe.py runs/toy --steps 2600 --batch 8     # the default of 2026-11-28 (RUN's data has VQA)
    python benchmarks/stage2_recipe.py runs/toy --steps 3600 --batch 8     # the default now (with RUN's stage-0 LLM)
    python benchmarks/stage2_recipe.py runs/toy --steps 3200 --batch 8 --projector mlp2x_gelu
    python benchmarks/stage2_recipe.py runs/toy --steps 3600 --batch 8 --projector mlp2x_gelu --vqa 8

`--seed N` changes the training seed of stage 1 + 2 (initialisation and batch order; the data stay RUN's).
`--template v0_no_system` trains stage 1 + 2 and evaluates without the v0 system message (the lead on yes/no in
docs/experiments.md, "Across training seeds": `--vqa 8 --steps 4000 --template v0_no_system --seed 2` gave 0.738).
`--vqa K` adds one LLaVA-1.5-style short-answer VQA record of K questions per training image to stage 2 (written
by the rule-based teacher from RUN's contexts.json into the scratch folder; any VQA records RUN has are replaced).
Without it, stage 2 trains on RUN's own stage2.json, VQA records included if RUN made them (the default run does).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from minillava.conversation import TEMPLATES
from minillava.data.teacher import ToyTeacher
from minillava.data.toy_data import toy_data_files, vqa_record
from minillava.data.validate import load_llava_json, write_json
from minillava.toy import StageConfig, ToyConfig, ToyRun, quiet_lightning


def recipe_config(run: Path, steps: int, batch: int, lr: float, projector: str | None,
                  seed: int | None = None, template: str | None = None) -> ToyConfig:
    """The run's own configuration, with stage 2 (and optionally the projector, training seed and the chat
    template of stage 1, 2 and evaluation) replaced."""
    saved = json.loads((run / "report.json").read_text())["config"]
    overrides = dict(saved.get("model_overrides", {}))
    if projector:
        overrides.pop("projector", None)  # the asked-for projector wins over one the run set as an override
    return ToyConfig(vocab_size=saved["vocab_size"], max_len=saved["max_len"], template=template or saved["template"],
                     seed=saved["seed"] if seed is None else seed, model_overrides=overrides,
                     projector=projector or saved.get("projector", "linear"), stage1=StageConfig(**saved["stage1"]),
                     stage2=StageConfig(steps, batch, lr, saved["stage2"]["warmup_ratio"]))


def with_vqa(run_data: Path, out_data: Path, k: int, teacher: ToyTeacher | None = None, seed: int = 0) -> None:
    """`out_data`: RUN's data folder through symlinks, except stage2.json: RUN's instruction records, then one
    VQA record of up to `k` questions per training image (from contexts.json), as the run's data `seed` writes it."""
    out_data.mkdir(parents=True)
    for entry in run_data.iterdir():
        if entry.name != "stage2.json":
            (out_data / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    records = [r for r in load_llava_json(run_data / "stage2.json") if r.get("kind") != "vqa"]
    contexts = json.loads((run_data / "contexts.json").read_text())
    teacher, images = teacher or ToyTeacher(), {r["image"] for r in records}
    for scene, context in contexts.items():
        if f"{scene}.png" in images:  # training scenes only: the held-out ones have no instruction record
            records.append(vqa_record(teacher, scene, f"{scene}.png", context, k, seed))
    write_json(toy_data_files(out_data)["stage2"], records)


def scratch_run(run: Path, out: Path, cfg: ToyConfig, vqa: int = 0) -> ToyRun:
    """A ToyRun in `out` that reads RUN's data, tokenizer and stage-0 weights through symlinks."""
    (out / "weights").mkdir(parents=True, exist_ok=True)
    (out / "tokenizer").symlink_to((run / "tokenizer").resolve(), target_is_directory=True)
    if vqa:
        data = json.loads((run / "report.json").read_text())["config"]["data"]
        world = data["world"]
        # runs from before the 4 x 4 grid had 3 rows; their saved config has no n_rows
        with_vqa(run / "data", out / "data", vqa, ToyTeacher(world["n_columns"], world.get("n_rows", 3)), data["seed"])
    else:
        (out / "data").symlink_to((run / "data").resolve(), target_is_directory=True)
    for name in ("vision", "llm"):
        weights = run / "weights" / f"{name}.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found: RUN must be a finished `minillava toy` run folder")
        (out / "weights" / weights.name).symlink_to(weights.resolve())
    toy = ToyRun(cfg, out, progress=False)
    toy.use_existing()
    return toy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a finished `minillava toy` run folder (data, tokenizer, weights)")
    ap.add_argument("--steps", type=int, default=3200, help="stage-2 optimiser steps")
    ap.add_argument("--batch", type=int, default=8, help="stage-2 batch size (records per step)")
    ap.add_argument("--lr", type=float, default=1e-3, help="stage-2 peak learning rate")
    ap.add_argument("--projector", choices=("linear", "mlp2x_gelu"), default=None,
                    help="the projector kind (default: the run's)")
    ap.add_argument("--no-stage1", action="store_true", help="skip stage 1: stage 2 starts from an untrained W")
    ap.add_argument("--vqa", type=int, default=0, metavar="K",
                    help="add a short-answer VQA record of K questions per training image to stage 2")
    ap.add_argument("--seed", type=int, default=None, help="training seed of stage 1 + 2 (default: the run's)")
    ap.add_argument("--template", choices=sorted(TEMPLATES), default=None,
                    help="chat template of stage 1, 2 and evaluation (default: the run's; the tokenizer and "
                         "stage-0 LLaMA stay the run's)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    for name in ("steps", "batch", "threads"):
        if getattr(a, name) < 1:
            ap.error(f"--{name} must be at least 1, got {getattr(a, name)}")
    if a.vqa < 0:
        ap.error(f"--vqa must be 0 (none) or a number of questions, got {a.vqa}")
    torch.set_num_threads(a.threads)
    quiet_lightning()
    cfg = recipe_config(a.run, a.steps, a.batch, a.lr, a.projector, a.seed, a.template)
    with tempfile.TemporaryDirectory() as tmp:
        toy = scratch_run(a.run, Path(tmp) / "run", cfg, a.vqa)
        t0 = time.perf_counter()
        result = toy.train_and_evaluate(with_stage1=not a.no_stage1)
        print(json.dumps({
            "steps": a.steps, "batch": a.batch, "lr": a.lr, "projector": toy.model_cfg.projector,
            "stage1": not a.no_stage1, "vqa": a.vqa, "seed": cfg.seed, "template": cfg.template, "threads": a.threads,
            "seconds": round(time.perf_counter() - t0),
            "stage_seconds": {k: round(v) for k, v in toy.seconds.items()},
            "accuracy": {k: round(v, 3) for k, v in result["accuracy"].items()},
        }), flush=True)


if __name__ == "__main__":
    main()
