"""Lab script behind docs/experiments.md, "2026-12-03 (evening): Where the yes/no lottery is not", part 1
(not part of the package, not tested: a record of how those rows were made).

One `minillava toy` run (the shipped pipeline, `ToyRun`) on one thread, with the ToyConfig changes the options
name, no no-stage-1 ablation; then the stage-2 model is asked the evaluation's questions about N *training* scenes
(one question per kind and scene, phrased and drawn as the held-out ones) to compare with the held-out figures:

    python docs/lab/more_scenes.py OUT --seed 2 --n-train 12000
    python docs/lab/more_scenes.py OUT --seed 2 --n-train 24000 [--vqa-single --steps 7200]
    python docs/lab/more_scenes.py OUT --train-eval-only       # the train-scene check on a finished run
"""
import argparse, json, os, sys
os.environ.setdefault("OMP_NUM_THREADS", "1")
from dataclasses import replace
from pathlib import Path
import torch
torch.set_num_threads(1)
from minillava.data.pipeline import record_rng
from minillava.data.teacher import ToyTeacher
from minillava.evaluate import evaluate_exact_match
from minillava.toy import TOY_PRESETS, ToyRun, load_stage2_model

p = argparse.ArgumentParser()
p.add_argument("out"); p.add_argument("--seed", type=int, default=0)
p.add_argument("--n-train", type=int, default=None); p.add_argument("--vqa", type=int, default=None)
p.add_argument("--vqa-single", action="store_true"); p.add_argument("--steps", type=int, default=None)
p.add_argument("--lr", type=float, default=None); p.add_argument("--batch", type=int, default=None)
p.add_argument("--train-scenes", type=int, default=400); p.add_argument("--train-eval-only", action="store_true")
a = p.parse_args()
out = Path(a.out)

if not a.train_eval_only:
    cfg = TOY_PRESETS["default"]
    data = replace(cfg.data, **{k: v for k, v in (("n_train", a.n_train), ("vqa_questions", a.vqa)) if v is not None},
                   **({"vqa_merged": False} if a.vqa_single else {}))
    stage2 = replace(cfg.stage2, **{k: v for k, v in (("steps", a.steps), ("lr", a.lr), ("batch_size", a.batch))
                                    if v is not None})
    cfg = replace(cfg, data=data, stage2=stage2, seed=a.seed, workers=1, ablate_stage1=False)
    report = ToyRun(cfg, out, progress=False).run()
    print(json.dumps({"held_out": report["accuracy"], "seconds": report.get("seconds")}), flush=True)

# the held-out questions' kinds and phrasing, asked about training scenes
report = json.loads((out / "report.json").read_text())
contexts = json.loads((out / "data" / "contexts.json").read_text())
stage2 = json.loads((out / "data" / "stage2.json").read_text())
world = report["config"]["data"]["world"]
teacher, items, seen = ToyTeacher(world["n_columns"], world["n_rows"]), [], []
for rec in stage2:
    if rec["image"] not in seen:
        seen.append(rec["image"])
for image in seen[: a.train_scenes]:
    scene_id = image.removesuffix(".png")
    for q in teacher.eval_questions(contexts[scene_id], record_rng("train-check", 0, scene_id)):
        items.append({"id": f"{scene_id}-{q.kind}", "image": image, "kind": q.kind, "question": q.question,
                      "answer": q.answer})
model, tokenizer = load_stage2_model(out)
res = evaluate_exact_match(model, tokenizer, items, out / "data" / "images", report["config"]["template"])
print(json.dumps({"train_scenes": res["accuracy"], "n": res["n"], "held_out": report["accuracy"]}), flush=True)
