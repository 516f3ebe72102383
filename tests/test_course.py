"""The course's shared pieces: the running example, and a course run packed from a toy run and loaded per stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minillava.course import RUNNING_QUESTION, STAGES, load_course_model, pack_course_run, running_example
from minillava.data.dataset import clip_transform
from minillava.evaluate import answer_questions
from minillava.toy import load_stage2_model

COMMITTED = Path(__file__).parents[1] / "notebooks" / "results" / "course-run"


def test_running_example_is_the_held_out_scene_and_its_truth():
    ex = running_example()
    assert ex.scene.id == "eval-000003"
    assert [o.name for o in ex.scene.objects] == ["blue triangle", "green square", "red square", "yellow circle"]
    assert ex.question == RUNNING_QUESTION and ex.answer == "yellow"
    assert ex.image.size == (32, 32)
    assert "yellow circle: [" in ex.context  # the teacher's box line for the object asked about
    assert running_example().context == ex.context  # rebuilt from seeds, the same every time


@torch.no_grad()
def _visual_tokens(model, image) -> torch.Tensor:  # (1, N, d)
    return model.encode_images(clip_transform(model.cfg.vision.image_size)(image)[None])


@pytest.fixture(scope="module")
def packed(tiny_run, tmp_path_factory):
    run, _ = tiny_run
    return run, pack_course_run(run, tmp_path_factory.mktemp("course") / "course-run", "pytest tiny run")


def test_pack_stores_each_part_once_and_loads_every_stage(packed):
    run, course = packed
    files = sorted(p.name for p in (course / "weights").iterdir())
    assert files == ["llm.safetensors", "projector_init.safetensors", "projector_stage1.safetensors",
                     "stage2.safetensors", "stage2_no_stage1.safetensors", "vision.safetensors"]
    assert json.loads((course / "provenance.json").read_text())["produced_by"] == "pytest tiny run"
    image = running_example().image
    models = {stage: load_course_model(course, stage)[0] for stage in STAGES}
    reference, _ = load_stage2_model(run)  # the run's own stage-2 weights, tower included
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(models["stage2"].state_dict()[name], tensor, rtol=0, atol=0)
    # the tower is the same frozen stage-0 tower at every stage; the projector moves in stage 1, the LLM in stage 2
    for stage in STAGES[:-1]:
        torch.testing.assert_close(models[stage].vision.visual.conv1.weight, reference.vision.visual.conv1.weight)
    assert not torch.equal(models["stage0"].projector.weight, models["stage1"].projector.weight)
    assert torch.equal(models["stage0"].llm.embed_tokens.weight, models["stage1"].llm.embed_tokens.weight)
    assert not torch.equal(models["stage1"].llm.embed_tokens.weight, models["stage2"].llm.embed_tokens.weight)
    assert not torch.equal(_visual_tokens(models["stage2"], image), _visual_tokens(models["stage2_no_stage1"], image))


def test_load_refuses_an_unknown_stage_and_a_folder_that_is_not_a_course_run(packed, tmp_path):
    _, course = packed
    with pytest.raises(ValueError, match="stage must be one of"):
        load_course_model(course, "stage3")
    with pytest.raises(FileNotFoundError, match="not a course run"):
        load_course_model(tmp_path)


def test_pack_refuses_a_run_without_its_stage1_ablation(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"accuracy": {}}))
    with pytest.raises(ValueError, match="stage-1 ablation"):
        pack_course_run(run, tmp_path / "course", "x")


@pytest.mark.skipif(not COMMITTED.is_dir(), reason="no committed course run")
def test_committed_course_run_answers_the_running_question(tmp_path):
    """The notebooks' model: trained, it names the running scene's circle colour; before training it does not."""
    ex = running_example()
    ex.image.save(tmp_path / "scene.png")
    item = [{"id": "running", "image": "scene.png", "question": ex.question}]
    answers = {}
    for stage in ("stage0", "stage2"):
        model, tokenizer = load_course_model(COMMITTED, stage)
        answers[stage] = answer_questions(model, tokenizer, item, tmp_path)[0]
    assert answers["stage2"] == ex.answer
    assert answers["stage0"] != ex.answer
