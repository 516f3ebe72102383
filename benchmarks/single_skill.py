"""Learning curve of one question kind on its own: which skills can the toy LLaVA learn, and how fast?

Stage 2 from a finished `minillava toy` run's stage-0/1 weights, on single-question records of one kind (one per
training scene, written by the rule-based teacher from the scene's symbolic context), evaluated every `--every`
steps on the held-out scenes. It isolates a skill from the paper's mix; issue 2 used it to find that yes/no
questions sit on a saddle (neither the question nor the image predicts a balanced yes/no answer on its own) while
a colour lookup and a fixed question are learnt quickly.

    python benchmarks/single_skill.py runs/toy --kind yesno                  # chance for hundreds of steps
    python benchmarks/single_skill.py runs/toy --kind colour                 # 0.7 -> 0.9 in 1000 steps
    python benchmarks/single_skill.py runs/toy --kind fixed                  # "Is there a red circle ...?"
    python benchmarks/single_skill.py runs/toy --kind yesno --prompt short   # no system message, no suffix
    python benchmarks/single_skill.py runs/toy --kind has_shape --prompt short     # "Is there a triangle ...?"
    python benchmarks/single_skill.py runs/toy --kind stepping --prompt short      # has_shape, has_colour, yesno

Prints one JSON line per evaluation: step, mean training loss of the last 50 steps, held-out exact match, and the
score of always giving the most common answer.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from minillava.constants import SHORT_ANSWER
from minillava.conversation import TEMPLATES
from minillava.data.dataset import LlavaDataModule
from minillava.data.questions import EXISTENCE_KINDS
from minillava.data.teacher import ToyTeacher
from minillava.evaluate import chance_accuracy, evaluate_exact_match
from minillava.constants import IMAGE_TOKEN
from minillava.tokenizer import load_tokenizer
from minillava.toy import run_model_overrides
from minillava.training import LlavaModule, cosine_with_warmup

FIXED = "Is there a red circle in the image?"


def questions(kind: str, context: str, rng: random.Random, teacher: ToyTeacher) -> list[tuple[str, str]]:
    """(question, short answer) pairs of one kind that the scene's context supports."""
    if kind == "fixed":
        return [(FIXED, "yes" if "red circle: [" in context else "no")]
    if kind == "stepping":  # one record in three of each: has_shape, has_colour, yesno (evaluated on yesno alone)
        kind = rng.choice(("has_shape", "has_colour", "yesno"))
    if kind in EXISTENCE_KINDS:  # one-attribute existence questions, balanced per record
        pairs = [(q.question, q.answer) for q in teacher.builder.existence(context, rng) if q.kind == kind]
        yes = [p for p in pairs if p[1] == "yes"]
        no = [p for p in pairs if p[1] == "no"]
        return rng.choice([yes, no]) if no else yes  # a yes or a no question with equal odds, where a no exists
    return [(q.question, q.answer) for q in teacher.questions(context, rng) if q.kind == kind]


def build_records(run: Path, kind: str, split: str, suffix: str, seed: int) -> list[dict]:
    contexts = json.loads((run / "data" / "contexts.json").read_text())
    teacher, out = ToyTeacher(), []
    for scene, context in contexts.items():
        if not scene.startswith(split):
            continue
        rng = random.Random(f"{seed}-{scene}")
        pairs = questions(kind, context, rng, teacher)
        if not pairs:  # e.g. no shape appears only once, so no colour question is unambiguous
            continue
        question, answer = rng.choice(pairs)
        human = f"{IMAGE_TOKEN}\n{question}" + (f"\n{suffix}" if suffix else "")
        out.append({"id": f"{scene}-{kind}", "image": f"{scene}.png", "kind": kind, "question": question,
                    "answer": answer, "conversations": [{"from": "human", "value": human},
                                                        {"from": "gpt", "value": answer}]})
    if not out:
        raise ValueError(f"{run}: no {split!r} scene supports a {kind!r} question")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a finished `minillava toy` run folder (data, tokenizer, weights)")
    ap.add_argument("--kind", default="yesno", help="a teacher question kind (yesno, colour, count, relation, "
                    "shape, ...), has_shape / has_colour (one-attribute existence), 'fixed' (one yes/no question "
                    "asked of every image) or 'stepping' (has_shape, has_colour and yesno records in equal shares, "
                    "evaluated on yesno)")
    ap.add_argument("--prompt", choices=("v0", "short"), default="v0",
                    help="v0: the toy run's prompt; short: no system message and no short-answer suffix")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--no-stage1", action="store_true", help="start from an untrained projector")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    config = json.loads((a.run / "report.json").read_text())["config"]
    template, suffix = "v0", SHORT_ANSWER
    if a.prompt == "short":
        template, suffix = "v0-no-system", ""
        TEMPLATES[template] = replace(TEMPLATES["v0"], name=template, system="")
    train = build_records(a.run, a.kind, "train", suffix, a.seed)
    held_out = build_records(a.run, "yesno" if a.kind == "stepping" else a.kind, "eval", suffix, a.seed)

    weights = a.run / "weights"
    module = LlavaModule(
        stage=2, preset="toy", lr=a.lr,
        overrides=run_model_overrides(a.run),
        vision_weights=str(weights / "vision.safetensors"), llm_weights=str(weights / "llm.safetensors"),
        projector_weights=None if a.no_stage1 else str(weights / "projector.safetensors"),
    )
    model, tokenizer = module.model, load_tokenizer(a.run / "tokenizer")
    with tempfile.TemporaryDirectory() as tmp:
        train_json = Path(tmp) / "train.json"
        # LLaVA JSON has no question/answer fields (the validator rejects unknown ones); those are for evaluation
        train_json.write_text(json.dumps([{k: r[k] for k in ("id", "image", "kind", "conversations")} for r in train]))
        data = LlavaDataModule(train_json=str(train_json), tokenizer=str(a.run / "tokenizer"),
                               image_folder=str(a.run / "data" / "images"), template=template,
                               num_image_tokens=model.cfg.num_image_tokens, image_size=model.cfg.vision.image_size,
                               max_len=config["max_len"], batch_size=a.batch, cache_images=True)
        data.setup("fit")
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
        schedule = cosine_with_warmup(optimizer, a.steps, 0.03)
        chance = chance_accuracy(held_out)["overall"]
        print(json.dumps({"kind": a.kind, "prompt": a.prompt, "train": len(train), "held_out": len(held_out),
                          "chance": round(chance, 3)}), flush=True)
        step, losses, t0 = 0, [], time.perf_counter()
        while step < a.steps:
            for batch in data.train_dataloader():
                model.train()
                model.vision.eval()  # frozen, as in the paper
                loss = model(**batch, return_logits=False)["loss"]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                losses.append(loss.item())
                if step % a.every == 0 or step == a.steps:
                    acc = evaluate_exact_match(model, tokenizer, held_out, a.run / "data" / "images", template,
                                               suffix=suffix)["accuracy"]["overall"]
                    recent = losses[-50:]
                    print(json.dumps({"step": step, "seconds": round(time.perf_counter() - t0),
                                      "loss": round(sum(recent) / len(recent), 3), "accuracy": round(acc, 3)}),
                          flush=True)
                if step >= a.steps:
                    break


if __name__ == "__main__":
    main()
