"""POPE-style object-hallucination probes on toy scenes (Li et al. 2023, "Evaluating Object Hallucination in
Large Vision-Language Models").

POPE asks "Is there a <object> in the image?" about each image's ground-truth objects ("yes") and, for each of
them, one absent object ("no"), drawn three ways (RUCAIBox/POPE ``utils.py``, ``pope``):
- random: any object of the vocabulary that is neither in the image nor asked about yet;
- popular: the most frequent such object (``generate_ground_truth_objects``: images that hold it);
- adversarial: the such object that co-occurs most often with the positive it follows (``compute_co_occurrence``);
popular and adversarial fall back to random when their ranking runs out. Here an object is a toy colour-shape name
("red circle"), the ground truth is ``parse_context`` of the scene's symbolic context, every object of a scene is
asked about (POPE asks 3 per image) and a fourth, toy-specific setting is added:
- similar: an absent object of the colour of the positive it follows, else of its shape, else sharing a colour,
  then a shape, with any present object, else random. The toy model's known weakness is saying "yes" when the
  colour is in the scene.

The toy world draws objects uniformly (``world.make_scene`` samples colour-shape pairs without replacement), so
frequencies and co-occurrences are flat up to sampling noise: "popular" and "adversarial" negatives are about as
hard as random ones there (the ranking is noise), and "similar" is the hard setting. Measured on the default toy
run's 4000 training scenes (seed 0): each of the 12 objects is in 0.200-0.218 of the scenes (sd 21 scenes, binomial
noise alone 26), each of the 66 pairs in 0.032-0.043 (sd 10, noise 12): flat within sampling noise.

POPE computes its statistics from the probed images themselves; ``object_stats`` takes whatever contexts it is
given (the brief's default: the training scenes). Answer parsing and metrics are LLaVA's ``llava/eval/eval_pope.py``.

An item: {"id", "image": "<scene id>.png", "question", "answer": "yes" | "no", "object", "setting"}; a scene's
items alternate yes, no, yes, no as POPE writes them.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from minillava.data.pipeline import record_rng
from minillava.data.questions import PHRASINGS, parse_context

__all__ = ["SETTINGS", "ObjectStats", "make_pope", "object_stats", "pope_answer", "pope_metrics"]

SETTINGS = ("random", "popular", "adversarial", "similar")
QUESTION = PHRASINGS["yesno"][0]  # "Is there a {name} in the image?": the toy model's own yes/no phrasing


@dataclass
class ObjectStats:
    """Object statistics of a set of scenes.

    frequency: {name: number of scenes holding it}; co_occurrence: {name: {other: scenes holding both}};
    n_scenes: how many scenes were counted.
    """

    n_scenes: int
    frequency: Counter = field(default_factory=Counter)
    co_occurrence: dict[str, Counter] = field(default_factory=dict)

    def by_frequency(self) -> list[str]:
        """Names, most frequent first; ties alphabetical (POPE's stable sort would keep first-seen order)."""
        return sorted(self.frequency, key=lambda n: (-self.frequency[n], n))

    def by_co_occurrence(self, name: str) -> list[str]:
        """Names seen with `name`, most often first; ties alphabetical."""
        co = self.co_occurrence.get(name, Counter())
        return sorted(co, key=lambda n: (-co[n], n))

    def spread(self) -> dict[str, float]:
        """Min and max share of scenes holding an object, and holding a pair of objects (seen pairs only)."""
        pairs = [k for a, co in self.co_occurrence.items() for b, k in co.items() if a < b]
        share = lambda ks: (min(ks) / self.n_scenes, max(ks) / self.n_scenes) if ks else (0.0, 0.0)
        (f_lo, f_hi), (c_lo, c_hi) = share(list(self.frequency.values())), share(pairs)
        return {"n_scenes": self.n_scenes, "n_objects": len(self.frequency), "n_pairs": len(pairs),
                "frequency_min": f_lo, "frequency_max": f_hi, "co_occurrence_min": c_lo, "co_occurrence_max": c_hi}


def object_stats(train_contexts: Iterable[str]) -> ObjectStats:
    """Frequencies and co-occurrence counts of the objects of symbolic contexts (POPE, ``utils.py``)."""
    stats = ObjectStats(0)
    for context in train_contexts:
        names = [o.name for o in parse_context(context)]
        stats.n_scenes += 1
        stats.frequency.update(names)
        for a in names:
            stats.co_occurrence.setdefault(a, Counter()).update(b for b in names if b != a)
    if not stats.n_scenes:
        raise ValueError("train_contexts is empty")
    return stats


def _negative(setting: str, positive, objs, used: set[str], stats: ObjectStats, rng: random.Random) -> str | None:
    """One absent object not asked about yet, for the positive `positive` (a ContextObject), or None."""
    present = {o.name for o in objs}
    free = lambda n: n not in used and n not in present
    if setting == "popular":
        ranked = stats.by_frequency()
    elif setting == "adversarial":
        ranked = stats.by_co_occurrence(positive.name)
    elif setting == "similar":
        # the positive's colour first (the toy model's weakness), then its shape, then any present object's
        for anchors in ([positive], objs):
            for part, attr in ((0, "colour"), (1, "shape")):
                near = [n for n in sorted(stats.frequency)
                        if free(n) and any(n.split(" ")[part] == getattr(o, attr) for o in anchors)]
                if near:
                    return rng.choice(near)
        ranked = []
    else:
        ranked = []
    if found := next((n for n in ranked if free(n)), None):
        return found
    candidates = [n for n in sorted(stats.frequency) if free(n)]  # random, and every setting's fallback
    return rng.choice(candidates) if candidates else None


def make_pope(contexts: dict[str, str], scene_ids: Sequence[str], stats: ObjectStats, setting: str,
              seed: int = 0) -> list[dict]:
    """POPE items for the scenes `scene_ids` (see the module docstring): each present object as a "yes" item,
    each followed by a "no" item about an absent object of the statistics' vocabulary drawn per `setting`.

    Deterministic per (setting, seed, scene id). Fewer "no" than "yes" items only if the vocabulary runs out."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    items = []
    for scene_id in scene_ids:
        if scene_id not in contexts:
            raise ValueError(f"scene_ids: {scene_id!r} has no context")
        objs = parse_context(contexts[scene_id])
        rng = record_rng(f"pope-{setting}", seed, scene_id)
        used: set[str] = set()
        pairs = []
        for o in objs:  # left to right, as POPE follows its segmentation's order
            pairs.append((o.name, "yes"))
            if (neg := _negative(setting, o, objs, used, stats, rng)) is not None:
                used.add(neg)
                pairs.append((neg, "no"))
        for k, (name, answer) in enumerate(pairs):
            items.append({"id": f"{scene_id}-pope-{setting}-{k}", "image": f"{scene_id}.png",
                          "question": QUESTION.format(name=name), "answer": answer, "object": name,
                          "setting": setting})
    return items


def pope_answer(text: str) -> str:
    """"yes" or "no" from a free-text answer, exactly as LLaVA's ``llava/eval/eval_pope.py`` reads it: the text up
    to the first ".", commas dropped, split on spaces; "No", "not" or "no" among the words is "no", anything else
    (even "NO" or an empty answer) "yes"."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if "No" in words or "not" in words or "no" in words else "yes"


def pope_metrics(items: Sequence[dict], predictions: Sequence[str]) -> dict:
    """Accuracy, precision, recall, F1 and yes-ratio with "yes" as the positive class (``eval_pope.py``), from
    the items and the model's raw answers (parsed by ``pope_answer``), in the same order.

    {"accuracy", "precision", "recall", "f1", "yes_ratio", "n", "tp", "fp", "tn", "fn"}. Where eval_pope.py would
    divide by zero (no "yes" predicted, or no positives), the ratio is 0.0."""
    if len(items) != len(predictions):
        raise ValueError(f"predictions: {len(predictions)} answers for {len(items)} items")
    if not items:
        raise ValueError("items is empty")
    tp = fp = tn = fn = 0
    for i, (item, text) in enumerate(zip(items, predictions)):
        if item.get("answer") not in ("yes", "no"):
            raise ValueError(f"items[{i}] ({item.get('id')!r}): answer must be 'yes' or 'no', "
                             f"got {item.get('answer')!r}")
        if not isinstance(text, str):
            raise ValueError(f"predictions[{i}] must be a string, got {type(text).__name__}")
        said_yes, is_yes = pope_answer(text) == "yes", item["answer"] == "yes"
        tp += said_yes and is_yes
        fp += said_yes and not is_yes
        tn += not said_yes and not is_yes
        fn += not said_yes and is_yes
    n = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / n, "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": (tp + fp) / n, "n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn}
