"""Exact-match evaluation on held-out short-answer questions, with the constant-answer baseline ("chance").

Each question is asked in a fresh single-turn chat with the LLaVA-1.5 short-answer suffix; the model's answer
(up to the stop marker) is compared with the exact answer after normalisation (case, spaces, final period).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .constants import IMAGE_TOKEN, SHORT_ANSWER
from .conversation import TEMPLATES, pad_batch, tokenize_text
from .data.dataset import clip_transform, load_image
from .generate import SamplingConfig, generate
from .model import Llava


def normalise(answer: str) -> str:
    return " ".join(answer.lower().strip().rstrip(".").split())


def chance_accuracy(items: list[dict]) -> dict[str, float]:
    """Accuracy of always giving each kind's most common answer (the best constant answerer per kind)."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for it in items:
        by_kind[it["kind"]].append(normalise(it["answer"]))
    hits = {k: Counter(v).most_common(1)[0][1] for k, v in by_kind.items()}
    out = {k: hits[k] / len(v) for k, v in sorted(by_kind.items())}
    out["overall"] = sum(hits.values()) / len(items)
    return out


def prompt_example(question: str, tokenizer, template_name: str, num_image_tokens: int, suffix: str = SHORT_ANSWER,
                   description: str | None = None):
    """The image (or, text-only, the scene's `description` in its place), the question and (unless `suffix` is
    empty) the short-answer instruction, as one human turn."""
    template = TEMPLATES[template_name]
    opening = IMAGE_TOKEN + "\n" if description is None else description + "\n\n"  # as lm.json's records open
    human = opening + question + (f"\n{suffix}" if suffix else "")
    text, _ = template.render([("human", human)], generation_prompt=True)
    return tokenize_text(text, [], tokenizer, num_image_tokens)


@torch.no_grad()
def answer_questions(
    model: Llava,
    tokenizer,
    items: list[dict],  # {"image", "question", ...}
    image_folder: str | Path,
    template: str = "v0",
    batch_size: int = 64,
    max_new_tokens: int = 12,
    progress: bool = False,
    suffix: str = SHORT_ANSWER,
    descriptions: list[str] | None = None,
) -> list[str]:
    """Greedy answers to `items`, each in a fresh single-turn chat about its image; with `descriptions` (one per
    item) the image is not shown and its description stands in its place (text only, as the stage-0 LLM reads
    a scene; `image_folder` is then unused)."""
    if descriptions is not None and len(descriptions) != len(items):
        raise ValueError(f"descriptions: {len(descriptions)} for {len(items)} items")
    model.eval()
    transform = clip_transform(model.cfg.vision.image_size)
    folder = Path(image_folder)
    answers: list[str] = []
    for start in tqdm(range(0, len(items), batch_size), desc="evaluate", disable=not progress, leave=False):
        chunk = items[start : start + batch_size]
        texts = None if descriptions is None else descriptions[start : start + batch_size]
        examples = [prompt_example(it["question"], tokenizer, template, model.cfg.num_image_tokens, suffix,
                                   None if texts is None else texts[i]) for i, it in enumerate(chunk)]
        batch = pad_batch(examples, tokenizer.pad_token_id, side="left")
        pixels = None if texts is not None else torch.stack(
            [load_image(folder, it["image"], it["id"], transform) for it in chunk])
        answers += generate(model, batch["input_ids"], batch["attention_mask"], tokenizer, TEMPLATES[template].stop,
                            pixels, SamplingConfig(max_new_tokens=max_new_tokens))
    return answers


def evaluate_exact_match(model: Llava, tokenizer, items: list[dict], image_folder: str | Path, template: str = "v0",
                         batch_size: int = 64, progress: bool = False, suffix: str = SHORT_ANSWER,
                         descriptions: list[str] | None = None) -> dict:
    """{"accuracy": {kind: acc, "overall": acc}, "chance": {...}, "n": {kind: count}, "samples": [...]}.

    With `descriptions`, text only: each question is asked about its scene's description instead of its image
    (the paper's premise, that the LLM can already answer from a text description, measured)."""
    preds = answer_questions(model, tokenizer, items, image_folder, template, batch_size, progress=progress,
                             suffix=suffix, descriptions=descriptions)
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for it, pred in zip(items, preds):
        by_kind[it["kind"]].append(normalise(pred) == normalise(it["answer"]))
    accuracy = {k: sum(v) / len(v) for k, v in sorted(by_kind.items())}
    accuracy["overall"] = sum(sum(v) for v in by_kind.values()) / len(items)
    samples = [{"id": it["id"], "question": it["question"], "answer": it["answer"], "prediction": p}
               for it, p in zip(items[:12], preds[:12])]
    return {"accuracy": accuracy, "chance": chance_accuracy(items),
            "n": {k: len(v) for k, v in sorted(by_kind.items())}, "samples": samples}
