"""The course's shared pieces: the running example, and a course run packed from a toy run and loaded per stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minillava.course import RUNNING_QUESTION, STAGES, load_course_model, pack_course_run, running_example
from minillava.data.dataset import clip_transform
from minillava.data.toy_data import ToyDataConfig, held_out_items
from minillava.data.world import COLOURS
from minillava.evaluate import answer_questions, evaluate_exact_match, normalise
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
def test_committed_course_run_is_trained(tmp_path):
    """The notebooks' model: after stage 2 it answers held-out questions far above chance and the running question
    with a colour (right or wrong: one scene is an anecdote); before LLaVA training it answers nothing."""
    items, _ = held_out_items(ToyDataConfig(), tmp_path, n_scenes=40)  # the first 40 held-out scenes of eval.json
    ex = running_example()
    ex.image.save(tmp_path / "running.png")
    running = [{"id": "running", "image": "running.png", "question": ex.question}]
    scores, replies = {}, {}
    for stage in ("stage0", "stage2"):
        model, tokenizer = load_course_model(COMMITTED, stage)
        scores[stage] = evaluate_exact_match(model, tokenizer, items, tmp_path)
        replies[stage] = answer_questions(model, tokenizer, running, tmp_path)[0]
    chance = scores["stage2"]["chance"]["overall"]
    assert scores["stage2"]["accuracy"]["overall"] > chance + 0.25, (scores["stage2"]["accuracy"], chance)
    assert scores["stage0"]["accuracy"]["overall"] == 0.0  # the stage-0 LLM never learnt to give a short answer
    assert normalise(replies["stage2"]) in COLOURS, replies["stage2"]
    assert normalise(replies["stage0"]) not in COLOURS, replies["stage0"]
