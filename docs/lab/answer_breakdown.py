"""Lab script behind docs/experiments.md, "2026-12-03 (afternoon): What caps colour and relations" (not part of
the package, not tested): a finished toy run's held-out answers broken down by the scene's number of objects, the
asked object's size and the kind of error.

    python docs/lab/answer_breakdown.py runs/ablate/seed-0/toy [stage2]
"""
import json, sys, re, torch
from collections import defaultdict, Counter
from pathlib import Path
torch.set_num_threads(2)
from minillava.toy import load_stage2_model
from minillava.evaluate import answer_questions, normalise
run = Path(sys.argv[1]); name = sys.argv[2] if len(sys.argv) > 2 else "stage2"
model, tok = load_stage2_model(run, name)
items = json.loads((run / "data/eval.json").read_text())
ctx = json.loads((run / "data/contexts.json").read_text())
preds = answer_questions(model, tok, items, run / "data/images", "v0")
def objs(c):
    o = []
    for m in re.finditer(r"^(\w+ \w+): \[([\d., ]+)\]$", c, re.M):
        x0, y0, x1, y1 = map(float, m.group(2).split(","))
        o.append((m.group(1), x0, x1 - x0))
    return sorted(o, key=lambda t: t[1])
stats = defaultdict(lambda: [0, 0]); errs = Counter()
for it, p in zip(items, preds):
    ob = objs(ctx[Path(it["image"]).stem]); n = len(ob)
    ok = normalise(p) == normalise(it["answer"]); k = it["kind"]
    stats[(k, "n", n)][0] += ok; stats[(k, "n", n)][1] += 1
    names = [o[0] for o in ob]
    if k == "colour":
        shape = re.search(r"the (\w+)\?", it["question"]).group(1)
        tgt = [o for o in ob if o[0].endswith(shape)][0]
        size = "large" if tgt[2] > 0.18 else "small"
        stats[(k, "size", size)][0] += ok; stats[(k, "size", size)][1] += 1
        if not ok: errs[(k, "pred colour in scene" if any(o[0].startswith(p.strip()) for o in ob) else "pred colour not in scene")] += 1
    if k == "relation":
        if not ok:
            errs[(k, "pred is a scene object" if p.strip() in names else "pred not in scene")] += 1
            if p.strip() in names: errs[(k, "wrong obj: subject itself" if p.strip() in it["question"] else "wrong obj: other")] += 1
    if k == "yesno":
        stats[(k, "ans", it["answer"])][0] += ok; stats[(k, "ans", it["answer"])][1] += 1
for key in sorted(stats, key=str): print(key, stats[key], round(stats[key][0] / stats[key][1], 3))
for e, c in sorted(errs.items()): print(e, c)
print("--- colour errors, 2 objects")
for it, p in zip(items, preds):
    ob = objs(ctx[Path(it["image"]).stem])
    if it["kind"] == "colour" and len(ob) == 2 and normalise(p) != normalise(it["answer"]):
        print(it["question"], it["answer"], "->", p, [(o[0], round(o[2], 3)) for o in ob])
from collections import Counter
pc = Counter(); ac = Counter(); yes_present = [0, 0]
for it, p in zip(items, preds):
    if it["kind"] == "colour":
        ob = objs(ctx[Path(it["image"]).stem])
        if len(ob) > 1:
            ok = normalise(p) == normalise(it["answer"])
            if not ok: pc[p.strip()] += 1
            ac[(it["answer"], ok)] += 1
print("wrong-pred colours", pc); print("by answer", sorted(ac.items()))
