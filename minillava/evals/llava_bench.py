"""LLaVA-Bench in miniature: held-out toy scenes, three question kinds, a judge, the relative score.

The paper (Section 5.1) evaluates on LLaVA-Bench (COCO): for each image one conversation question, one detailed
description and one complex-reasoning question. A text-only GPT-4 answers each from the symbolic context (captions
and boxes): that is the reference. A judge reads the context, the question and two answers, the reference as
Assistant 1 and the model's as Assistant 2, and scores each 1-10; the relative score of a category is
sum(model) / sum(reference) x 100. Here the toy teacher (``ToyTeacher``) writes the references and a ``Judge``
(``judges.py``) scores the answers.

    items = make_bench(contexts, [i for i in contexts if i.startswith("eval-")])
    result = judge_bench(items, model_answers, RuleJudge())   # {"relative": {...}, "reviews": [...]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from minillava.constants import SHORT_ANSWER, STAGE2_KINDS
from minillava.data.pipeline import record_rng
from minillava.data.teacher import ToyTeacher

__all__ = ["judge_bench", "make_bench", "read_bench", "relative_scores", "write_bench"]

KINDS = STAGE2_KINDS  # ("conv", "detail", "complex"): the official categories llava_bench_conv, _detail, _complex
FAILED = -1.0  # the score pair parse_score gives a review it cannot read (see judges.parse_score)


def make_bench(contexts: dict[str, str], scene_ids: Sequence[str], seed: int = 0, per_kind: int = 1,
               teacher: ToyTeacher | None = None) -> list[dict]:
    """`per_kind` questions of each kind per held-out scene: {"id", "image", "kind", "question", "reference",
    "context"}.

    The reference is the teacher's answer, written from the context alone (as GPT-4's was). A "conv" item is one
    turn of ``ToyTeacher.conversation``; turns with a full-sentence answer are preferred to short-answer ones, as
    LLaVA-Bench's conversation questions are open-ended. Each scene's items depend only on (seed, scene id).
    Distinct questions per scene and kind: a scene may support fewer than `per_kind` (then it gets fewer).
    """
    if per_kind < 1:
        raise ValueError(f"per_kind must be >= 1, got {per_kind}")
    teacher = teacher or ToyTeacher()
    items = []
    for scene_id in scene_ids:
        if scene_id not in contexts:
            raise ValueError(f"scene {scene_id!r} has no context")
        context = contexts[scene_id]
        for kind in KINDS:
            rng = record_rng(f"llava-bench/{kind}", seed, scene_id)
            seen: set[str] = set()
            for _ in range(8 * per_kind):  # a few draws: a small scene supports few distinct questions
                if len(seen) == per_kind:
                    break
                question, reference = _one_turn(teacher, kind, context, rng)
                if question in seen:
                    continue
                seen.add(question)
                items.append({"id": f"{scene_id}-{kind}-{len(seen) - 1}", "image": f"{scene_id}.png", "kind": kind,
                              "question": question, "reference": reference, "context": context})
    return items


def _one_turn(teacher: ToyTeacher, kind: str, context: str, rng) -> tuple[str, str]:
    if kind != "conv":
        return teacher.respond(kind, context, rng)[0]
    suffix = f"\n{SHORT_ANSWER}"
    for _ in range(4):  # about 1 conversation in 20 has only short-answer turns: draw another
        turns = teacher.conversation(context, rng)
        if full := [t for t in turns if not t[0].endswith(suffix)]:
            return rng.choice(full)
    question, answer = rng.choice(turns)  # never in practice: the bare question and its short answer
    return question[: -len(suffix)], answer


def write_bench(items: list[dict], path: str | Path) -> None:
    Path(path).write_text(json.dumps(items, indent=1) + "\n")


def read_bench(path: str | Path) -> list[dict]:
    items = json.loads(Path(path).read_text())
    for i, item in enumerate(items):
        _check_item(item, i)
    return items


def _check_item(item: dict, index: int) -> None:
    name = item.get("id", f"#{index}") if isinstance(item, dict) else f"#{index}"
    if not isinstance(item, dict) or item.get("kind") not in KINDS:
        kind = item.get("kind") if isinstance(item, dict) else None
        raise ValueError(f"bench item {name}: unknown kind {kind!r}; expected one of {KINDS}")
    missing = [k for k in ("question", "reference", "context") if not isinstance(item.get(k), str)]
    if missing:
        raise ValueError(f"bench item {name}: missing or non-text field(s) {missing}")


def relative_scores(items: list[dict], scores: Sequence[tuple[float, float]]) -> dict[str, dict]:
    """Per kind and "overall": {"relative", "reference", "model", "n", "failed"}.

    The arithmetic of LLaVA's ``llava/eval/summarize_gpt_review.py`` (haotian-liu/LLaVA):

        stats = np.asarray(v).mean(0).tolist()          # v: the [score_1, score_2] tuples of one category
        stats = [round(x, 3) for x in stats]
        print(k, round(stats[1]/stats[0]*100, 1), round(stats[0] * 10, 1), round(stats[1] * 10, 1))

    so "reference" and "model" are the mean scores rounded to 3 decimals (the official script prints them x10)
    and "relative" is round(model / reference x 100, 1): sum(model) / sum(reference), as the paper says. Like the
    official script, a failed review (-1, -1) is *not* dropped: its -1s enter both means. "failed" counts them.
    "overall" is the official "all". A zero reference mean (which the official script divides by) gives nan.
    """
    if len(scores) != len(items):
        raise ValueError(f"{len(scores)} score pairs for {len(items)} bench items")
    by_kind: dict[str, list[tuple[float, float]]] = {}
    for i, (item, pair) in enumerate(zip(items, scores)):
        _check_item(item, i)
        if len(pair) != 2 or not all(isinstance(s, (int, float)) and math.isfinite(s) for s in pair):
            raise ValueError(f"bench item {item['id']}: score pair must be two finite numbers, got {pair!r}")
        by_kind.setdefault(item["kind"], []).append((float(pair[0]), float(pair[1])))
    out = {kind: _summary(by_kind[kind]) for kind in KINDS if kind in by_kind}
    out["overall"] = _summary([p for kind in KINDS for p in by_kind.get(kind, [])])
    return out


def _summary(pairs: list[tuple[float, float]]) -> dict:
    if not pairs:
        return {"relative": float("nan"), "reference": float("nan"), "model": float("nan"), "n": 0, "failed": 0}
    reference, model = (round(x, 3) for x in np.asarray(pairs).mean(0).tolist())
    relative = round(model / reference * 100, 1) if reference != 0 else float("nan")
    failed = sum(p == (FAILED, FAILED) for p in pairs)
    return {"relative": relative, "reference": reference, "model": model, "n": len(pairs), "failed": failed}


def judge_bench(items: list[dict], answers: Sequence[str], judge) -> dict:
    """Review every answer against its item's reference: {"relative": relative_scores(...), "reviews": [...]}.

    As in the paper and ``eval_gpt_review_bench.py``, the reference is Assistant 1 and the model Assistant 2;
    each review keeps both scores and the judge's explanation (a failed review shows -1 -1 and is counted in
    "relative"'s "failed").
    """
    if len(answers) != len(items):
        raise ValueError(f"{len(answers)} answers for {len(items)} bench items")
    reviews = []
    for i, (item, answer) in enumerate(zip(items, answers)):
        _check_item(item, i)
        if not isinstance(answer, str):
            raise ValueError(f"bench item {item['id']}: the answer must be text, got {type(answer).__name__}")
        r = judge.review(item["question"], item["context"], item["reference"], answer, item["kind"])
        reviews.append({"id": item["id"], "kind": item["kind"], "reference_score": r.score_1,
                        "model_score": r.score_2, "explanation": r.explanation})
    relative = relative_scores(items, [(r["reference_score"], r["model_score"]) for r in reviews])
    return {"relative": relative, "reviews": reviews}
