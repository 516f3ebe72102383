"""Write the toy data sets in LLaVA's JSON format.

Files (all deterministic for a given config):
- images/<scene id>.png   train and eval images
- stage1.json             feature-alignment pre-training: one caption pair per train image
- stage2.json             visual instruction tuning: one record per train image, conversation /
                          detail / complex mixed in the paper's 58K : 23K : 77K proportions, and
                          (if vqa_questions > 0) one short-answer VQA record per train image,
                          as LLaVA-1.5 added academic VQA data to its stage-2 mix
- eval.json               short-answer questions about eval images, with exact answers
- lm.json                 text-only corpus for pre-training the toy language model: the
                          teacher's data with the scene's captions in place of the image
- contexts.json           {scene id: symbolic context} for train and eval scenes

A LLaVA record: {"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": "..."}, ...]}; "<image>" appears once, at the start of the first turn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minillava.data.teacher import STAGE2_KINDS, ToyTeacher, caption_lines
from minillava.data.validate import IMAGE_TOKEN, load_llava_json
from minillava.data.validate import write_json as _write_json
from minillava.data.world import Scene, WorldConfig, make_scenes, render, symbolic_context

__all__ = ["IMAGE_TOKEN", "STAGE2_KINDS", "ToyDataConfig", "generate_toy_data", "load_llava_json", "toy_data_files",
           "vqa_record"]


@dataclass
class ToyDataConfig:
    n_train: int = 4000
    n_eval: int = 200
    n_lm: int = 6000
    seed: int = 0
    mix: tuple[float, float, float] = (58, 23, 77)  # conv : detail : complex, as the paper's 58K/23K/77K
    world: WorldConfig = field(default_factory=WorldConfig)
    # Questions per short-answer VQA record (LLaVA-1.5's VQAv2-style data: one record per train image, besides
    # its instruction record). 0, the default: the paper's v1 stage 2, instruction data only. With 8, relations
    # were learnt better, and yes/no sometimes, at 1.1-1.4x the stage-2 time (measured; see README)
    vqa_questions: int = 0
    # Share of lm.json that is caption pairs; the rest follows `mix`. Captions are
    # there so the language model has seen stage-1 text before stage 1.
    lm_caption_share: float = 0.25

    def __post_init__(self) -> None:
        for name in ("n_train", "n_eval", "n_lm", "vqa_questions"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if len(self.mix) != 3 or min(self.mix) < 0 or sum(self.mix) <= 0:
            raise ValueError(f"mix must be 3 non-negative weights with a positive sum, got {self.mix}")
        if not 0 <= self.lm_caption_share <= 1:
            raise ValueError(f"lm_caption_share must be in [0, 1], got {self.lm_caption_share}")


def _record(record_id: str, kind: str, turns: list[tuple[str, str]], prefix: str, image: str | None) -> dict:
    """A LLaVA record; `prefix` (the image token or the text context) opens the first question."""
    record: dict[str, Any] = {"id": record_id}
    if image is not None:
        record["image"] = image
    record["kind"] = kind
    conversations = []
    for i, (question, answer) in enumerate(turns):
        conversations.append({"from": "human", "value": prefix + question if i == 0 else question})
        conversations.append({"from": "gpt", "value": answer})
    record["conversations"] = conversations
    return record


def _turns(teacher: ToyTeacher, kind: str, context: str, rng: random.Random) -> list[tuple[str, str]]:
    return [teacher.caption(context, rng)] if kind == "caption" else teacher.respond(kind, context, rng)


def _scene_rng(purpose: str, scene: Scene) -> random.Random:
    # One rng per (purpose, scene): a record does not depend on how many scenes
    # came before it, so growing n_train keeps the existing records unchanged.
    return random.Random(f"{purpose}/{scene.seed}")


def vqa_record(teacher: ToyTeacher, scene_id: str, image: str, context: str, k: int, rng: random.Random) -> dict:
    """A LLaVA-1.5-style short-answer VQA record of up to `k` questions about one image (see
    ``ToyTeacher.short_answers``)."""
    return _record(f"{scene_id}-vqa", "vqa", teacher.short_answers(context, rng, k), IMAGE_TOKEN + "\n", image)


def toy_data_files(out_dir: Path) -> dict[str, Path]:
    """Where `generate_toy_data` puts each of its outputs in `out_dir` (see the module docstring)."""
    out_dir = Path(out_dir)
    return {"images": out_dir / "images"} | {name: out_dir / f"{name}.json"
                                             for name in ("stage1", "stage2", "eval", "lm", "contexts")}


def generate_toy_data(out_dir: Path, cfg: ToyDataConfig, progress: bool = False) -> dict[str, Path]:
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    teacher = ToyTeacher(cfg.world.n_columns, cfg.world.n_rows)
    train = make_scenes("train", cfg.n_train, cfg.seed, cfg.world)
    evals = make_scenes("eval", cfg.n_eval, cfg.seed, cfg.world)
    lm = make_scenes("lm", cfg.n_lm, cfg.seed, cfg.world)

    bar = None
    if progress:
        from tqdm import tqdm  # lazy: only needed for the progress bar

        bar = tqdm(total=len(train) + len(evals) + len(lm), desc="toy data", unit="scene")

    contexts: dict[str, str] = {}
    stage1, stage2, eval_items, lm_records = [], [], [], []
    image_prefix = IMAGE_TOKEN + "\n"

    for scene in train:
        context = contexts[scene.id] = symbolic_context(scene, cfg.world)
        image = f"{scene.id}.png"
        render(scene, cfg.world).save(images_dir / image)
        pair = teacher.caption(context, _scene_rng("stage1", scene))
        stage1.append(_record(scene.id, "caption", [pair], image_prefix, image))
        rng = _scene_rng("stage2", scene)
        kind = rng.choices(STAGE2_KINDS, weights=cfg.mix)[0]
        turns = _turns(teacher, kind, context, rng)
        stage2.append(_record(f"{scene.id}-{kind}", kind, turns, image_prefix, image))
        if cfg.vqa_questions:
            stage2.append(vqa_record(teacher, scene.id, image, context, cfg.vqa_questions, _scene_rng("vqa", scene)))
        if bar:
            bar.update()

    for scene in evals:
        context = contexts[scene.id] = symbolic_context(scene, cfg.world)
        image = f"{scene.id}.png"
        render(scene, cfg.world).save(images_dir / image)
        for q in teacher.eval_questions(context, _scene_rng("eval", scene)):
            eval_items.append({
                "id": f"{scene.id}-{q.kind}", "image": image, "kind": q.kind,
                "question": q.question, "answer": q.answer,
            })
        if bar:
            bar.update()

    # The LM corpus: the same teacher data, but the "image" is described in words.
    total = sum(cfg.mix)
    lm_kinds = STAGE2_KINDS + ("caption",)
    lm_weights = [w / total * (1 - cfg.lm_caption_share) for w in cfg.mix] + [cfg.lm_caption_share]
    for scene in lm:
        context = symbolic_context(scene, cfg.world)
        rng = _scene_rng("lm", scene)
        kind = rng.choices(lm_kinds, weights=lm_weights)[0]
        turns = _turns(teacher, kind, context, rng)
        # the scene is described to the LM by its captions only: the boxes are for the teacher, and they would
        # triple the length of every sequence the toy LM trains on
        description = "\n".join(caption_lines(context))
        lm_records.append(_record(f"{scene.id}-{kind}", kind, turns, description + "\n\n", image=None))
        if bar:
            bar.update()
    if bar:
        bar.close()

    paths = toy_data_files(out_dir)
    outputs = {"stage1": stage1, "stage2": stage2, "eval": eval_items, "lm": lm_records, "contexts": contexts}
    for name, data in outputs.items():
        _write_json(paths[name], data)
    return paths
