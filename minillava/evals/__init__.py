"""Benchmarks in miniature: POPE, ScienceQA and LLaVA-Bench-style evaluations on the toy world.

Modules (imported on their own; this package imports none of them):
- ``llava_bench``: the paper's LLaVA-Bench on held-out toy scenes (conversation, detail, complex), the relative
  score of ``summarize_gpt_review.py``;
- ``judges``: the judges behind one ``Judge`` interface: ``RuleJudge`` (exact scene truth) and ``ChatJudge`` (the
  paper's GPT-4 review prompt on any OpenAI-compatible endpoint);
- ``pope``: POPE-style object hallucination probes;
- ``scienceqa``: ScienceQA-style multiple choice.
"""
