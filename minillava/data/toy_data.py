"""The toy run's data: the data pipeline's records, plus what only the toy run needs.

`generate_toy_data` writes the stage-1 and stage-2 instruction records through the same pipeline as
`minillava gen-data --toy` (``pipeline.py``: same scenes, same teacher, same seed, same records), and adds:
- ``stage2.json``: after each image's instruction record, if `vqa_questions` > 0, one short-answer VQA record
  (LLaVA-1.5 added academic VQA data to its stage-2 mix);
- ``eval.json``: short-answer questions about held-out scenes, with exact answers;
- ``lm.json``: a text-only corpus for the toy language model (stage 0): the teacher's data with the scene's
  captions in place of the image;
- ``contexts.json``: the symbolic context of every train and eval scene; ``images/``: train and eval images.

A LLaVA record: {"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": "..."}, ...]}; "<image>" appears once, at the start of the first turn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from minillava.constants import PAPER_MIX, STAGE2_KINDS, check_mix
from minillava.data.context import caption_lines
from minillava.data.instructions import caption_pair
from minillava.data.pipeline import generate_dataset, make_record, record_rng
from minillava.data.questions import EVAL_KINDS, EXISTENCE_KINDS, QUESTION_KINDS
from minillava.data.sources import toy_source
from minillava.data.teacher import ToyTeacher
from minillava.data.validate import write_json
from minillava.data.world import WorldConfig, make_scenes, render, symbolic_context


@dataclass
class ToyDataConfig:
    n_train: int = 4000
    n_eval: int = 200
    n_lm: int = 6000
    seed: int = 0
    mix: tuple[float, float, float] = PAPER_MIX  # conv : detail : complex
    world: WorldConfig = field(default_factory=WorldConfig)
    # Questions per short-answer VQA record (LLaVA-1.5's VQAv2-style data: one record per train image, besides
    # its instruction record). 0: the paper's v1 stage 2, instruction data only
    # (docs/experiments.md, "Short-answer VQA data")
    vqa_questions: int = 0
    # The question kinds a VQA record draws from: the evaluated ones, and optionally EXISTENCE_KINDS
    # (one-attribute "Is there a triangle?" questions; docs/experiments.md, 2026-12-03)
    vqa_kinds: tuple[str, ...] = EVAL_KINDS
    # True: all of an image's VQA questions in one multi-turn record, as LLaVA-1.5 merged VQAv2's. False: one
    # record per question, as VQAv2 itself stores them; the same questions either way. Merged, a later turn can
    # often be answered by copying an earlier turn's text instead of looking at the image (docs/experiments.md,
    # 2026-12-03, "What caps colour and relations")
    vqa_merged: bool = True
    # True: an image's VQA questions drawn round-robin over `vqa_kinds` (about as many of each kind). False: drawn
    # uniformly from all candidates, where yes/no and existence questions (one per object, attribute and absent
    # one) outnumber colour questions (one per unique shape) about 8 to 1
    vqa_balanced: bool = False
    # Share of lm.json that is caption pairs; the rest follows `mix`. Captions are
    # there so the language model has seen stage-1 text before stage 1.
    lm_caption_share: float = 0.25

    def __post_init__(self) -> None:
        for name in ("n_train", "n_eval", "n_lm", "vqa_questions"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_mix(self.mix)
        self.vqa_kinds = tuple(self.vqa_kinds)  # YAML and JSON give lists
        unknown = [k for k in self.vqa_kinds if k not in QUESTION_KINDS + EXISTENCE_KINDS]
        if unknown or not self.vqa_kinds:
            raise ValueError(f"vqa_kinds: {unknown or 'empty'}; choose from {QUESTION_KINDS + EXISTENCE_KINDS}")
        if not 0 <= self.lm_caption_share <= 1:
            raise ValueError(f"lm_caption_share must be in [0, 1], got {self.lm_caption_share}")


def vqa_record(teacher: ToyTeacher, scene_id: str, image: str, context: str, k: int, seed: int,
               kinds: tuple[str, ...] = EVAL_KINDS) -> dict:
    """A LLaVA-1.5-style short-answer VQA record of up to `k` questions of `kinds` about one image (see
    ``ToyTeacher.short_answers``)."""
    return vqa_records(teacher, scene_id, image, context, k, seed, kinds)[0]


def vqa_records(teacher: ToyTeacher, scene_id: str, image: str, context: str, k: int, seed: int,
                kinds: tuple[str, ...] = EVAL_KINDS, merged: bool = True, balanced: bool = False) -> list[dict]:
    """The image's short-answer questions: one record of up to `k` turns if `merged`, else one single-question
    record per turn (ids "<scene>-vqa-<j>"), the same questions in the same order."""
    turns = teacher.short_answers(context, record_rng("vqa", seed, scene_id), k, kinds, balanced)
    if merged:
        return [make_record(f"{scene_id}-vqa", "vqa", turns, image)]
    return [make_record(f"{scene_id}-vqa-{j}", "vqa", [turn], image) for j, turn in enumerate(turns)]


def scene_description(context: str) -> str:
    """The scene in words, as the text-only records of lm.json give it to the stage-0 LLM in place of the image:
    the context's captions, without the boxes (they are for the teacher, and would triple the length of every
    sequence the toy LLM trains on)."""
    return "\n".join(caption_lines(context))


def toy_data_files(out_dir: Path) -> dict[str, Path]:
    """Where `generate_toy_data` puts each of its outputs in `out_dir` (see the module docstring)."""
    out_dir = Path(out_dir)
    return {"images": out_dir / "images"} | {name: out_dir / f"{name}.json"
                                             for name in ("stage1", "stage2", "eval", "lm", "contexts")}


# meta.json's teacher entry for the toy run: the records are gen-data's, but the folder also holds the toy run's own
# files (VQA records inside stage2.json, eval scenes in contexts.json), so `minillava gen-data` must not resume it
TOY_RUN_TEACHER = {"name": "toy", "written_by": "minillava toy"}
_SCENE_IMAGE = re.compile(r"^(train|eval)-\d{6}\.png$")  # the file names of toy scenes (world.make_scenes)


def _check_owned(out_dir: Path) -> None:
    """Refuse to overwrite a data folder that another writer (e.g. `minillava gen-data`) is building."""
    meta = out_dir / "meta.json"
    if meta.exists():
        teacher = json.loads(meta.read_text()).get("teacher")
        if teacher != TOY_RUN_TEACHER:
            raise ValueError(f"{out_dir} holds data that `minillava toy` did not write (meta.json: teacher {teacher}); "
                             "use another folder for the toy run")
    elif any((out_dir / name).exists() for name in ("stage1.jsonl", "stage2.jsonl")):
        raise ValueError(f"{out_dir} holds journals without a meta.json; use another folder for the toy run")


def held_out_items(cfg: ToyDataConfig, image_folder: Path, n_scenes: int | None = None
                   ) -> tuple[list[dict], dict[str, str]]:
    """The evaluation's short-answer questions (eval.json's items) about the first `n_scenes` held-out scenes (all
    `cfg.n_eval` by default), with their images rendered into `image_folder`; and each scene's symbolic context."""
    teacher = ToyTeacher(cfg.world.n_columns, cfg.world.n_rows)
    items, contexts = [], {}
    for scene in make_scenes("eval", cfg.n_eval if n_scenes is None else n_scenes, cfg.seed, cfg.world):
        context = contexts[scene.id] = symbolic_context(scene, cfg.world)
        image = f"{scene.id}.png"
        render(scene, cfg.world).save(image_folder / image)
        for q in teacher.eval_questions(context, record_rng("eval", cfg.seed, scene.id)):
            items.append({"id": f"{scene.id}-{q.kind}", "image": image, "kind": q.kind,
                          "question": q.question, "answer": q.answer})
    return items, contexts


def generate_toy_data(out_dir: Path, cfg: ToyDataConfig, progress: bool = False) -> dict[str, Path]:
    """Write the toy run's data into `out_dir` from scratch (see the module docstring); returns the file paths.

    A folder that an earlier toy run wrote is overwritten, its scene images of other runs removed; any other
    data folder is refused."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_owned(out_dir)
    paths = toy_data_files(out_dir)
    teacher = ToyTeacher(cfg.world.n_columns, cfg.world.n_rows)
    source = toy_source(cfg.n_train, cfg.seed, cfg.world)
    # the instruction and caption records: the data pipeline itself, as `minillava gen-data --toy` runs it
    generate_dataset(source, out_dir, teacher, TOY_RUN_TEACHER, cfg.mix, cfg.seed, progress=progress,
                     overwrite=True)

    contexts = {im.id: im.context for im in source.images}
    if cfg.vqa_questions:
        stage2 = []
        for record, im in zip(json.loads(paths["stage2"].read_text()), source.images, strict=True):
            assert record["image"] == im.image, (record["id"], im.image)  # the pipeline writes in image order
            stage2 += [record, *vqa_records(teacher, im.id, im.image, im.context, cfg.vqa_questions, cfg.seed,
                                            cfg.vqa_kinds, cfg.vqa_merged, cfg.vqa_balanced)]
        write_json(paths["stage2"], stage2)

    eval_items, eval_contexts = held_out_items(cfg, paths["images"])
    contexts.update(eval_contexts)

    # The LM corpus: the same teacher data, but the "image" is described in words.
    lm_kinds = STAGE2_KINDS + ("caption",)
    lm_weights = [w / sum(cfg.mix) * (1 - cfg.lm_caption_share) for w in cfg.mix] + [cfg.lm_caption_share]
    lm_records = []
    for scene in make_scenes("lm", cfg.n_lm, cfg.seed, cfg.world):
        context = symbolic_context(scene, cfg.world)
        rng = record_rng("lm", cfg.seed, scene.id)
        kind = rng.choices(lm_kinds, weights=lm_weights)[0]
        turns = [caption_pair(context, rng)] if kind == "caption" else teacher.respond(kind, context, rng)
        lm_records.append(make_record(f"{scene.id}-{kind}", kind, turns, None,
                                      prefix=scene_description(context) + "\n\n"))

    for name, data in (("eval", eval_items), ("lm", lm_records), ("contexts", contexts)):
        write_json(paths[name], data)
    for stale in paths["images"].iterdir():  # scenes of an earlier, larger run in this folder
        if _SCENE_IMAGE.match(stale.name) and stale.stem not in contexts:
            stale.unlink()
    return paths
