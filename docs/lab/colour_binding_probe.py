"""Lab script behind docs/experiments.md, 2026-12-04 (not part of the package, not tested: a record of how those
numbers were made).

Does a colour answer depend on the shape asked about? For each of the 200 held-out scenes, ask "What colour is the
{shape}?" for every shape that occurs once in it, and count the scenes where those shapes differ in colour but the
model gives one colour to all of them:

    python docs/lab/colour_binding_probe.py notebooks/results/course-run
"""
import os
os.environ.setdefault("OMP_NUM_THREADS", "1")
import sys
import tempfile
from collections import Counter
from pathlib import Path

from minillava.course import load_course_model
from minillava.data.toy_data import ToyDataConfig
from minillava.data.world import make_scenes, render
from minillava.evaluate import answer_questions, normalise

run = Path(sys.argv[1])
data, images = ToyDataConfig(), Path(tempfile.mkdtemp())
items, truth = [], []
for scene in make_scenes("eval", data.n_eval, data.seed, data.world):
    render(scene, data.world).save(images / f"{scene.id}.png")
    shapes = Counter(o.shape for o in scene.objects)
    for o in scene.objects:
        if shapes[o.shape] == 1:  # "the {shape}" names one object
            items.append({"id": f"{scene.id}-{o.shape}", "image": f"{scene.id}.png",
                          "question": f"What colour is the {o.shape}?"})
            truth.append((scene.id, o.colour))
for stage in ("stage2", "stage2_no_stage1"):
    model, tokenizer = load_course_model(run, stage)
    preds = [normalise(p) for p in answer_questions(model, tokenizer, items, images)]
    by_scene: dict[str, list[tuple[str, str]]] = {}
    for (sid, colour), pred in zip(truth, preds):
        by_scene.setdefault(sid, []).append((colour, pred))
    mixed = [v for v in by_scene.values() if len({c for c, _ in v}) >= 2]
    one = sum(len({p for _, p in v}) == 1 for v in mixed)
    acc = sum(c == p for c, p in zip((c for _, c in truth), preds)) / len(preds)
    print(f"{stage}: {len(items)} questions, accuracy {acc:.3f}; {len(mixed)} scenes whose single shapes differ in "
          f"colour, {one} of them answered with one colour for all")
