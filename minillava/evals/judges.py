"""Judges for LLaVA-Bench: one interface, a rule-based judge that knows the scene, and the paper's GPT-4 judge.

Every judge reads the symbolic context, the question and two answers (Assistant 1: the reference, Assistant 2: the
model, as in the paper) and scores each 1-10 (``Review``).

- ``ChatJudge``: the official review, ``llava/eval/eval_gpt_review_bench.py`` with the ``llava_bench_*`` rules of
  ``llava/eval/table/rule.json`` (haotian-liu/LLaVA), sent to any OpenAI-compatible endpoint through
  ``ChatTeacher.complete`` (its deadlines and retries). Its reply is read by the official ``parse_score``.
- ``RuleJudge``: no model at all. It parses the scene's exact truth from the context's box lines, extracts the
  claims an answer makes with a small set of patterns, checks each against the truth, and scores what the question
  asks for (coverage) and how much of what was said is true (precision). It lives in ``rule_judge``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from minillava.data.chat_teacher import ChatTeacher

__all__ = ["RULES", "SYSTEM", "ChatJudge", "Judge", "Review", "RuleJudge", "judge_content", "parse_score"]

KINDS = ("conv", "detail", "complex")


@dataclass(frozen=True)
class Review:
    score_1: float  # Assistant 1: the reference
    score_2: float  # Assistant 2: the model
    explanation: str

    @property
    def failed(self) -> bool:
        """The official code's mark of a review it could not read: scores -1 -1."""
        return self.score_1 == -1 and self.score_2 == -1


class Judge(Protocol):
    def review(self, question: str, context: str, answer_1: str, answer_2: str, kind: str) -> Review: ...


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown LLaVA-Bench kind {kind!r}; expected one of {KINDS}")


# -- the paper's judge ---------------------------------------------------------------------------------------------

# haotian-liu/LLaVA, llava/eval/eval_gpt_review_bench.py, get_eval: the system message, temperature 0.2 and
# --max-tokens 1024 (the default), model 'gpt-4-0314'.
SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
TEMPERATURE, MAX_TOKENS = 0.2, 1024

# haotian-liu/LLaVA, llava/eval/table/rule.json: "llava_bench_conv", "llava_bench_detail" and "llava_bench_complex"
# are the same {"role": "Assistant", "prompt": ...}, verbatim (the space before the first "\n" is theirs).
_RULE = ("We would like to request your feedback on the performance of two AI assistants in response to the user "
         "question displayed above. The user asks the question on observing an image. For your reference, the "
         "visual content in the image is represented with a few sentences describing the image. \n"
         "Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant "
         "receives an overall score on a scale of 1 to 10, where a higher score indicates better overall "
         "performance.\n"
         "Please first output a single line containing only two values indicating the scores for Assistant 1 and "
         "2, respectively. The two scores are separated by a space.\n"
         "In the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any "
         "potential bias and ensuring that the order in which the responses were presented does not affect your "
         "judgment.")
RULES = {f"llava_bench_{kind}": {"role": "Assistant", "prompt": _RULE} for kind in KINDS}


def judge_content(context: str, question: str, answer_1: str, answer_2: str, kind: str) -> str:
    """The user message, laid out as in eval_gpt_review_bench.py:

        content = (f'[Context]\\n{cap_str}\\n\\n'
                   f'[Question]\\n{ques["text"]}\\n\\n'
                   f'[{role} 1]\\n{ans1["text"]}\\n\\n[End of {role} 1]\\n\\n'
                   f'[{role} 2]\\n{ans2["text"]}\\n\\n[End of {role} 2]\\n\\n'
                   f'[System]\\n{prompt}\\n\\n')

    The context here is the whole symbolic context (captions and boxes), what the paper's judge read.
    """
    _check_kind(kind)
    rule = RULES[f"llava_bench_{kind}"]
    role, prompt = rule["role"], rule["prompt"]
    return (f"[Context]\n{context}\n\n"
            f"[Question]\n{question}\n\n"
            f"[{role} 1]\n{answer_1}\n\n[End of {role} 1]\n\n"
            f"[{role} 2]\n{answer_2}\n\n[End of {role} 2]\n\n"
            f"[System]\n{prompt}\n\n")


def parse_score(review: str) -> list[float]:
    """The official parse_score (eval_gpt_review_bench.py): the first line, commas as spaces, exactly two fields
    split on single spaces, else [-1, -1]. Kept as is, quirks included: "8, 6" splits into three fields and fails."""
    try:
        score_pair = review.split("\n")[0]
        score_pair = score_pair.replace(",", " ")
        sp = score_pair.split(" ")
        if len(sp) == 2:
            return [float(sp[0]), float(sp[1])]
        return [-1, -1]
    except Exception:  # noqa: BLE001 - the official code catches everything, and so must a faithful copy
        return [-1, -1]


class ChatJudge:
    """The paper's GPT-4 judge on any OpenAI-compatible chat endpoint.

    HTTP goes through ``ChatTeacher.complete`` (wall-clock deadline per try, retries of 429 / 5xx / timeouts, then
    ``TeacherError``). A reply ``parse_score`` cannot read gives -1 -1, as in the official code; ``failed`` counts
    them and the review keeps the reply as its explanation.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY", *,
                 timeout: float = 120.0, max_retries: int = 5, temperature: float = TEMPERATURE,
                 max_tokens: int | None = MAX_TOKENS) -> None:
        self.client = ChatTeacher(base_url, model, api_key_env, timeout=timeout, max_retries=max_retries,
                                  temperature=temperature, max_tokens=max_tokens)
        self.failed = 0

    def review(self, question: str, context: str, answer_1: str, answer_2: str, kind: str) -> Review:
        content = judge_content(context, question, answer_1, answer_2, kind)
        reply = self.client.complete([{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}])
        score_1, score_2 = parse_score(reply)
        review = Review(float(score_1), float(score_2), reply)
        self.failed += review.failed
        return review


# the rule judge needs Review from this module, so it is imported after it (and re-exported here)
from .rule_judge import RuleJudge  # noqa: E402
