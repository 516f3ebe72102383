"""The custom-data flow in the toy world, on a CPU: teach a trained toy LLaVA a question kind it has never seen, with
LoRA and with full fine-tuning, and measure the new skill before and after and the old skills after (forgetting).

    python -m minillava.finetune_toy runs/toy [--out runs/finetune-toy] [--steps 150] [--old 200]

RUN is a finished `minillava toy` folder (report.json, weights/stage2.safetensors, tokenizer/, data/). The flow is
the one docs/custom_data.md gives for a real LLaVA:
1. the trained model is written as a released LLaVA folder (`save_llava`: original layout, template v0);
2. the new skill's records are written in the official format: "Which object is highest in the image?" answered
   with the colour and shape of the object whose box starts highest (scenes with one object, or a tie within 0.1,
   are left out), from the run's own training scenes; its test questions from the held-out scenes;
3. `FinetuneModule` + `FinetuneDataModule` continue from that folder, with LoRA (r 8, alpha 16, lr 1e-3, the
   projector at 1e-4) and fully (lr 1e-4), the same steps and batches;
4. exact match on the new kind (held-out scenes) and on the run's held-out questions of the old kinds.
Writes OUT/results.json and OUT/results.md (the table docs/custom_data.md shows).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from .evaluate import evaluate_exact_match
from .finetune import FinetuneDataModule, FinetuneModule
from .released import load_released, read_released, write_template
from .checkpoints import save_llava
from .toy import load_stage2_model, quiet_lightning

QUESTION = "Which object is highest in the image?"
BOX = re.compile(r"^(\w+ \w+): \[([\d.]+), ([\d.]+), ([\d.]+), ([\d.]+)\]$", re.M)


def highest(context: str) -> str | None:
    """The object whose box starts highest (smallest y1), if it leads the next one by at least 0.1."""
    boxes = sorted((float(m.group(3)), m.group(1)) for m in BOX.finditer(context))
    if len(boxes) < 2 or boxes[1][0] - boxes[0][0] < 0.1:
        return None
    return boxes[0][1]


def skill_data(run: Path, out: Path) -> tuple[Path, list[dict]]:
    """train.json (official record format) from the training scenes; test items from the held-out scenes."""
    contexts = json.loads((run / "data" / "contexts.json").read_text())
    train, test = [], []
    for sid, ctx in contexts.items():
        answer = highest(ctx)
        if answer is None:
            continue
        if sid.startswith("train"):
            train.append({"id": f"{sid}-highest", "image": f"{sid}.png", "conversations": [
                {"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": answer}]})
        else:
            test.append({"id": f"{sid}-highest", "image": f"{sid}.png", "kind": "highest", "question": QUESTION,
                         "answer": answer})
    path = out / "custom" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(train, indent=1))
    return path, test


def evaluate(model, tok, new: list[dict], old: list[dict], images: Path) -> dict:
    model.eval()
    with torch.no_grad():
        a = evaluate_exact_match(model, tok, new, images, "v0", suffix="")["accuracy"]["overall"]
        b = evaluate_exact_match(model, tok, old, images, "v0")["accuracy"]
    return {"new": a, "old": b["overall"], "old_by_kind": {k: v for k, v in b.items() if k != "overall"}}


def run_flow(run: str | Path, out: str | Path, steps: int = 150, batch_size: int = 8, n_old: int = 200,
             seed: int = 0) -> dict:
    import lightning as L

    quiet_lightning()
    run, out = Path(run), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = run / "data" / "images"
    model, tok = load_stage2_model(run)
    base = out / "toy-llava"
    save_llava(base, model.cfg, model.state_dict(), run / "tokenizer")
    write_template(base, "v0")
    train_json, new = skill_data(run, out)
    old = json.loads((run / "data" / "eval.json").read_text())[:n_old]
    started = time.time()
    results = {"run": str(run), "steps": steps, "batch_size": batch_size, "n_train": len(json.loads(
        train_json.read_text())), "n_new_test": len(new), "n_old_test": len(old),
        "before": evaluate(load_released(read_released(base)), tok, new, old, images)}
    modes = {"lora": dict(lora_r=8, lora_alpha=16, lora_dropout=0.05, lr=1e-3, projector_lr=1e-4),
             "full": dict(lr=1e-4)}
    for name, kw in modes.items():
        torch.manual_seed(seed)
        module = FinetuneModule(str(base), warmup_ratio=0.03, **kw)
        trainable = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
        data = FinetuneDataModule(str(base), str(train_json), str(images), batch_size=batch_size, seed=seed)
        t0 = time.time()
        L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False).fit(module, datamodule=data)
        seconds = time.time() - t0
        results[name] = evaluate(module.model, tok, new, old, images) | {"trainable": trainable,
                                                                         "train_seconds": round(seconds, 1)}
    results["total"] = sum(p.numel() for p in load_released(read_released(base)).parameters())
    results["seconds"] = round(time.time() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(format_results(results))
    return results


def format_results(r: dict) -> str:
    lines = ["| model | trainable parameters | new skill (highest object) | old skills (overall) | count | colour | "
             "yes/no | relation | train time |", "|---|---|---|---|---|---|---|---|---|"]
    for name, label in (("before", "trained toy model"), ("lora", "+ LoRA r 8"), ("full", "+ full fine-tuning")):
        m = r[name]
        k = m["old_by_kind"]
        trainable = f"{m['trainable']:,} of {r['total']:,}" if "trainable" in m else "-"
        seconds = f"{m['train_seconds']:.0f} s" if "train_seconds" in m else "-"
        lines.append(f"| {label} | {trainable} | {m['new']:.3f} | {m['old']:.3f} | {k.get('count', 0):.3f} | "
                     f"{k.get('colour', 0):.3f} | {k.get('yesno', 0):.3f} | {k.get('relation', 0):.3f} | {seconds} |")
    lines.append(f"\n{r['n_train']} training records, {r['steps']} steps of {r['batch_size']}; {r['n_new_test']} "
                 f"held-out questions of the new kind, {r['n_old_test']} of the old kinds.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minillava.finetune_toy", description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a finished `minillava toy` folder")
    parser.add_argument("--out", default="runs/finetune-toy")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--old", type=int, default=200, help="held-out questions of the old kinds to score")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (Path(args.run) / "report.json").is_file():
        raise SystemExit(f"{args.run}: not a finished `minillava toy` folder (no report.json)")
    results = run_flow(args.run, args.out, args.steps, args.batch_size, args.old, args.seed)
    print(format_results(results))


if __name__ == "__main__":
    main()
