"""What the course notebooks share: one held-out scene that every notebook follows, and a trained toy run.

The running example is a held-out scene of the default toy data (`minillava toy`: data seed 0, the `eval` split):
notebook 01 cuts it into patches, 02 turns it into a prompt and a loss, 04 trains on it, 05 talks about it.

Training the default toy run takes 7-14 minutes on two cores, too long for a notebook that nbval runs in CI, so the
notebooks read a *course run*: the weights of every stage of one `minillava toy --seed 0` run, packed by
`pack_course_run` (the command and commit are in its `provenance.json`). Only the parts a stage changed are stored,
once each: the tower and the stage-0 LLM, the projector before and after stage 1, and the LLM + projector after
stage 2 (with and without stage 1).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from PIL import Image

from .checkpoints import load_weights
from .checkpoints.files import load_safetensors, save_state
from .data.toy_data import ToyDataConfig, scene_description
from .data.world import Scene, make_scenes, render, symbolic_context
from .model import Llava, llava_preset, override
from .tokenizer import load_tokenizer

RUNNING_SCENE = 3  # index in the eval split: eval-000003 (blue triangle, green square, red square, yellow circle)
RUNNING_QUESTION = "What colour is the circle?"
# the states a course run holds, in training order
STAGES = ("stage0", "stage1", "stage2", "stage2_no_stage1")
STAGE_LABELS = {
    "stage0": "before LLaVA training (stage-0 tower and LLM, untrained projector)",
    "stage1": "after stage 1 (projector trained on captions)",
    "stage2": "after stage 2 (projector + LLM on instructions)",
    "stage2_no_stage1": "stage 2 without stage 1",
}


@dataclass(frozen=True)
class RunningExample:
    """The scene every notebook follows, as the model sees it (image) and as the teacher reads it (context)."""

    scene: Scene
    image: Image.Image  # 32 x 32 RGB
    context: str  # the paper's symbolic representation: captions, then one box per object
    description: str  # the scene in one sentence of words (what the text-only evaluation shows the LLM)
    question: str
    answer: str  # the exact short answer


def running_example(data: ToyDataConfig = ToyDataConfig()) -> RunningExample:
    """The running scene of the course, rebuilt from its seed (nothing is read from disk)."""
    scene = make_scenes("eval", RUNNING_SCENE + 1, data.seed, data.world)[RUNNING_SCENE]
    context = symbolic_context(scene, data.world)
    shape = RUNNING_QUESTION.removeprefix("What colour is the ").removesuffix("?")
    (target,) = [o for o in scene.objects if o.shape == shape]  # the question names a shape the scene has once
    return RunningExample(scene, render(scene, data.world), context, scene_description(context), RUNNING_QUESTION,
                          target.colour)


def _model(folder: Path) -> Llava:
    overrides = json.loads((folder / "model_overrides.json").read_text())
    return Llava(override(llava_preset("toy"), overrides))


def load_course_model(folder: str | Path, stage: str = "stage2"):
    """The toy LLaVA of a course run at one of `STAGES`, in eval mode, and its tokenizer."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    folder = Path(folder)
    if not (folder / "provenance.json").is_file():
        raise FileNotFoundError(f"{folder} is not a course run (no provenance.json); make one with pack_course_run")
    model = _model(folder)
    w = folder / "weights"
    load_weights(model.vision.visual, w / "vision.safetensors", "vision")
    if stage in ("stage0", "stage1"):
        load_weights(model.llm, w / "llm.safetensors", "stage-0 LLM")
        load_weights(model.projector, w / f"projector_{'init' if stage == 'stage0' else 'stage1'}.safetensors",
                     "projector")
    else:
        state = load_safetensors(w / f"{stage}.safetensors")
        model.llm.load_state_dict({k.removeprefix("llm."): v for k, v in state.items() if k.startswith("llm.")})
        model.projector.load_state_dict({k.removeprefix("projector."): v for k, v in state.items()
                                         if k.startswith("projector.")})
    return model.eval(), load_tokenizer(folder / "tokenizer")


def pack_course_run(run: str | Path, dest: str | Path, produced_by: str) -> Path:
    """Pack a finished toy run folder (with its stage-1 ablation) into a course run at `dest`.

    `produced_by` says which command and commit trained `run`; it goes into provenance.json.
    """
    from .toy import run_model_overrides

    run, dest = Path(run), Path(dest)
    report = json.loads((run / "report.json").read_text())
    if "no_stage1" not in report:
        raise ValueError(f"{run}: the course needs the run's stage-1 ablation (stage2_no_stage1 weights)")
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "weights").mkdir(parents=True)
    shutil.copytree(run / "tokenizer", dest / "tokenizer")
    for name in ("report.json", "report.md", "loss_curves.png"):
        shutil.copy(run / name, dest / name)
    (dest / "model_overrides.json").write_text(json.dumps(run_model_overrides(run), indent=1) + "\n")
    w = run / "weights"
    for name in ("vision", "llm"):
        shutil.copy(w / f"{name}.safetensors", dest / "weights" / f"{name}.safetensors")
    shutil.copy(w / "projector.safetensors", dest / "weights" / "projector_stage1.safetensors")
    # the projector stage 1 starts from, initialised from the run's seed as LlavaModule initialises it
    L.seed_everything(report["config"]["seed"], verbose=False)
    save_state(_model(dest).projector.state_dict(), dest / "weights" / "projector_init.safetensors")
    vision = load_safetensors(w / "vision.safetensors")
    for name in ("stage2", "stage2_no_stage1"):  # the frozen tower is stored once, in vision.safetensors
        state = load_safetensors(w / f"{name}.safetensors")
        for key, tensor in vision.items():
            if not state[f"vision.visual.{key}"].equal(tensor):
                raise ValueError(f"{w / name}.safetensors: the tower changed in training ({key})")
        save_state({k: v for k, v in state.items() if not k.startswith("vision.")},
                   dest / "weights" / f"{name}.safetensors")
    (dest / "provenance.json").write_text(json.dumps({"produced_by": produced_by, "run": str(run),
                                                      "accuracy": report["accuracy"],
                                                      "no_stage1": report["no_stage1"]}, indent=1) + "\n")
    return dest
