"""Lab script behind docs/experiments.md, "2026-12-03 (night)" (not part of the package, not tested: a record of
how those rows were made).

One `minillava toy` run (the shipped pipeline, `ToyRun`) on one thread, no no-stage-1 ablation, with the
stepping-stone recipe (single-question VQA records with the existence questions, 7200 stage-2 steps) and the
changes the options name:

    python docs/lab/recipe_variants.py OUT --seed 0 --lr 2e-3
    python docs/lab/recipe_variants.py OUT --seed 0 --llm-layers 6
    python docs/lab/recipe_variants.py OUT --seed 0 --balanced     # docs/experiments.md, 2026-12-03 (late night)

`--balanced` sets `vqa_balanced`, whose meaning moved with the code: as of commit f08f3f4 the two existence kinds
take one turn between them (docs/experiments.md, 2026-12-04), so `--balanced --seed S` is the current default's
stage 2 (seeds 1 and 2 of that entry). The 2026-12-03 (late night) rows, one turn per existence kind, need
commit 7e9cb47.
"""
import argparse, json, os
os.environ.setdefault("OMP_NUM_THREADS", "1")
from dataclasses import replace
from pathlib import Path
import torch
torch.set_num_threads(1)
from minillava.data.questions import EVAL_KINDS, EXISTENCE_KINDS
from minillava.toy import TOY_PRESETS, ToyRun

p = argparse.ArgumentParser()
p.add_argument("out"); p.add_argument("--seed", type=int, default=0)
p.add_argument("--steps", type=int, default=7200); p.add_argument("--lr", type=float, default=None)
p.add_argument("--llm-layers", type=int, default=None); p.add_argument("--vqa", type=int, default=None)
p.add_argument("--merged", action="store_true", help="keep the preset's merged VQA records")
p.add_argument("--balanced", action="store_true", help="VQA questions drawn round-robin over the kinds")
p.add_argument("--no-count", action="store_true", help="no count questions among the VQA kinds")
a = p.parse_args()

cfg = TOY_PRESETS["default"]
kinds = tuple(k for k in EVAL_KINDS + EXISTENCE_KINDS if not (a.no_count and k == "count"))
data = replace(cfg.data, vqa_kinds=kinds, vqa_merged=a.merged, vqa_balanced=a.balanced,
               **({"vqa_questions": a.vqa} if a.vqa is not None else {}))
stage2 = replace(cfg.stage2, steps=a.steps, **({"lr": a.lr} if a.lr is not None else {}))
overrides = {**cfg.model_overrides, **({"llm.n_layers": a.llm_layers} if a.llm_layers else {})}
cfg = replace(cfg, data=data, stage2=stage2, seed=a.seed, workers=1, ablate_stage1=False, model_overrides=overrides)
report = ToyRun(cfg, Path(a.out), progress=False).run()
print(json.dumps({"accuracy": report["accuracy"], "seconds": report.get("seconds")}), flush=True)
