"""LLaVA-Bench in miniature: the items, the relative score's arithmetic, judging a whole bench."""

from __future__ import annotations

import math
import random

import pytest

from minillava.constants import SHORT_ANSWER
from minillava.data.teacher import ToyTeacher
from minillava.data.world import make_scenes, symbolic_context
from minillava.evals.judges import Review, RuleJudge
from minillava.evals.llava_bench import judge_bench, make_bench, read_bench, relative_scores, write_bench


@pytest.fixture(scope="module")
def contexts() -> dict[str, str]:
    scenes = make_scenes("train", 3, seed=0) + make_scenes("eval", 20, seed=0)
    return {s.id: symbolic_context(s) for s in scenes}


def eval_ids(contexts: dict[str, str]) -> list[str]:
    return [i for i in contexts if i.startswith("eval-")]


def test_items_hold_the_three_kinds_of_every_held_out_scene(contexts):
    ids = eval_ids(contexts)
    items = make_bench(contexts, ids, seed=0)
    assert len(items) == 3 * len(ids) and len({it["id"] for it in items}) == len(items)
    for it in items:
        assert set(it) == {"id", "image", "kind", "question", "reference", "context"}
        scene = it["id"].rsplit("-", 2)[0]
        assert it["image"] == f"{scene}.png" and it["context"] == contexts[scene] and scene.startswith("eval-")
        assert it["kind"] in ("conv", "detail", "complex") and it["question"] and it["reference"]
        assert not it["question"].endswith(SHORT_ANSWER)  # conversation items are full-sentence turns
    assert [it["kind"] for it in items[:3]] == ["conv", "detail", "complex"]
    # a conversation item's reference is the teacher's sentence for that question, written from the context alone
    teacher = ToyTeacher()
    for conv in items[::3]:
        sentences = {q.sentence for seed in range(20) for q in teacher.questions(conv["context"], random.Random(seed))
                     if q.question == conv["question"]}
        assert sentences == {conv["reference"]}


def test_items_depend_on_seed_and_scene_only(contexts):
    ids = eval_ids(contexts)
    items = make_bench(contexts, ids, seed=0)
    assert make_bench(contexts, ids, seed=0) == items
    assert make_bench(contexts, ids[5:], seed=0) == items[15:]  # not on the scenes before it
    assert make_bench(contexts, ids, seed=1) != items
    more = make_bench(contexts, ids, seed=0, per_kind=2)
    assert len(more) > len(items) and all(it["id"].endswith(("-0", "-1")) for it in more)
    for kind in ("conv", "complex"):
        pairs = {}
        for it in more:
            if it["kind"] == kind:
                pairs.setdefault(it["image"], []).append(it["question"])
        assert all(len(set(qs)) == len(qs) for qs in pairs.values())  # distinct questions per scene and kind


def test_bad_input_is_named(contexts, tmp_path):
    with pytest.raises(ValueError, match="eval-999999"):
        make_bench(contexts, ["eval-999999"])
    with pytest.raises(ValueError, match="per_kind"):
        make_bench(contexts, eval_ids(contexts), per_kind=0)
    items = make_bench(contexts, eval_ids(contexts)[:2])
    with pytest.raises(ValueError, match="5 answers for 6"):
        judge_bench(items, ["x"] * 5, RuleJudge())
    with pytest.raises(ValueError, match="5 score pairs for 6"):
        relative_scores(items, [(1, 1)] * 5)
    bad = [dict(it) for it in items]
    bad[3]["kind"] = "caption"
    with pytest.raises(ValueError, match=f"{bad[3]['id']}.*'caption'"):
        relative_scores(bad, [(1, 1)] * 6)
    with pytest.raises(ValueError, match=f"{items[1]['id']}.*two finite numbers"):
        relative_scores(items, [(1, 1), (1, float("nan"))] + [(1, 1)] * 4)
    write_bench(bad, tmp_path / "bench.json")
    with pytest.raises(ValueError, match=bad[3]["id"]):
        read_bench(tmp_path / "bench.json")
    write_bench(items, tmp_path / "bench.json")
    assert read_bench(tmp_path / "bench.json") == items


def test_relative_scores_match_summarize_gpt_review():
    """Hand-computed with the arithmetic of LLaVA's summarize_gpt_review.py: per category the mean of the
    (reference, model) pairs, each rounded to 3 decimals, then round(model / reference x 100, 1); a failed review
    (-1, -1) stays in the means."""
    items = [{"id": str(i), "kind": k, "question": "q", "reference": "r", "context": "c"}
             for i, k in enumerate(["conv", "conv", "detail", "complex", "complex", "complex"])]
    scores = [(8, 6), (10, 9), (-1, -1), (9, 3), (7, 7), (8, 6)]
    out = relative_scores(items, scores)
    assert out["conv"] == {"relative": 83.3, "reference": 9.0, "model": 7.5, "n": 2, "failed": 0}  # 7.5 / 9
    assert out["detail"] == {"relative": 100.0, "reference": -1.0, "model": -1.0, "n": 1, "failed": 1}
    # complex: 24 / 3 = 8.0 and 16 / 3 = 5.333 (rounded), 5.333 / 8 = 66.6625 -> 66.7
    assert out["complex"] == {"relative": 66.7, "reference": 8.0, "model": 5.333, "n": 3, "failed": 0}
    # overall, the official "all": (8 + 10 - 1 + 9 + 7 + 8) / 6 = 6.833, (6 + 9 - 1 + 3 + 7 + 6) / 6 = 5.0
    assert out["overall"] == {"relative": 73.2, "reference": 6.833, "model": 5.0, "n": 6, "failed": 1}
    # dropping the failed review instead would give 6.2 / 8.4 = 73.8
    assert round(round(31 / 5, 3) / round(42 / 5, 3) * 100, 1) != out["overall"]["relative"]
    assert list(out) == ["conv", "detail", "complex", "overall"]
    assert math.isnan(relative_scores(items[:1], [(0, 3)])["conv"]["relative"])  # zero reference mean


class Constant:
    """A judge that gives every answer the same scores."""

    def __init__(self, score_1: float, score_2: float) -> None:
        self.scores, self.calls = (score_1, score_2), []

    def review(self, question, context, answer_1, answer_2, kind) -> Review:
        self.calls.append((question, context, answer_1, answer_2, kind))
        return Review(*self.scores, "same for all")


def test_judge_bench_sends_reference_first_and_keeps_every_review(contexts):
    items = make_bench(contexts, eval_ids(contexts)[:4])
    answers = [f"answer {i}" for i in range(len(items))]
    judge = Constant(8, 6)
    result = judge_bench(items, answers, judge)
    assert judge.calls[0] == (items[0]["question"], items[0]["context"], items[0]["reference"], "answer 0", "conv")
    assert [r["id"] for r in result["reviews"]] == [it["id"] for it in items]
    assert result["reviews"][0] == {"id": items[0]["id"], "kind": "conv", "reference_score": 8,
                                    "model_score": 6, "explanation": "same for all"}
    assert {k: v["relative"] for k, v in result["relative"].items()} == {k: 75.0 for k in
                                                                         ("conv", "detail", "complex", "overall")}


def test_rule_judge_on_a_whole_bench(contexts):
    items = make_bench(contexts, eval_ids(contexts))
    perfect = judge_bench(items, [it["reference"] for it in items], RuleJudge())
    assert all(v["relative"] == 100.0 and v["reference"] == 10 for v in perfect["relative"].values())
    empty = judge_bench(items, [""] * len(items), RuleJudge())
    assert all(v["relative"] == 10.0 and v["model"] == 1 for v in empty["relative"].values())
