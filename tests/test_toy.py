"""The main job end to end at a tiny size, its report, and the packaged LightningCLI configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from minillava.cli import packaged_config, resolve_config_args
from minillava.toy import TOY_PRESETS, ToyConfig

CONFIG_DIR = Path(__file__).parents[1] / "minillava" / "configs" / "toy"


def test_tiny_run_writes_the_report(tiny_run):
    out, report = tiny_run
    for name in ("report.md", "report.json", "loss_curves.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "report.json").read_text())
    assert saved["seconds"] > 0
    side_by_side = (os.cpu_count() or 1) > 1  # TINY keeps the default of 2 workers
    assert saved["side_by_side"] is side_by_side
    assert ("ran side by side" in (out / "report.md").read_text()) is side_by_side
    kinds = {"count", "colour", "yesno", "relation"}
    for key in ("accuracy", "chance", "no_stage1", "text_only"):
        assert set(saved[key]) == kinds | {"overall"}, key
        assert all(0.0 <= v <= 1.0 for v in saved[key].values())
    assert set(saved["final_loss"]) == {"stage0_clip", "stage0_lm", "stage1", "stage2", "stage2_no_stage1"}
    assert "| overall |" in (out / "report.md").read_text()


def test_same_seed_same_data(tiny_run, tiny_config, tmp_path):
    from minillava.data.toy_data import generate_toy_data

    out, _ = tiny_run
    again = generate_toy_data(tmp_path, tiny_config.data)
    for key in ("stage1", "stage2", "eval", "lm", "contexts"):
        assert again[key].read_bytes() == (out / "data" / again[key].name).read_bytes(), key


@pytest.mark.parametrize("name", ["clip", "lm", "stage1", "stage2"])
def test_packaged_configs_match_the_default_preset(name):
    """The YAML files and the `minillava toy` defaults describe the same recipe, so they cannot drift."""
    cfg = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    stage = getattr(TOY_PRESETS["default"], name)
    assert cfg["trainer"]["max_steps"] == stage.steps
    assert cfg["model"]["init_args"]["lr"] == stage.lr
    assert cfg["model"]["init_args"]["warmup_ratio"] == stage.warmup_ratio
    assert cfg["data"]["init_args"]["batch_size"] == stage.batch_size
    if name.startswith("stage"):
        assert cfg["model"]["init_args"]["overrides"] == {"projector": TOY_PRESETS["default"].projector}
    if name == "lm":  # stage 0 trains on the same record kinds
        assert tuple(cfg["data"]["init_args"]["kinds"]) == TOY_PRESETS["default"].lm_kinds


def test_lm_kinds_are_checked():
    assert ToyConfig(lm_kinds=["caption", "conv"]).lm_kinds == ("caption", "conv")  # YAML and JSON give lists
    with pytest.raises(ValueError, match=r"lm_kinds: \['vqa'\]"):
        ToyConfig(lm_kinds=("caption", "vqa"))  # VQA records are stage-2 data, not in lm.json
    with pytest.raises(ValueError, match="lm_kinds: empty"):
        ToyConfig(lm_kinds=())


def test_config_names_resolve_to_packaged_files(tmp_path):
    assert packaged_config("toy/stage2") == packaged_config("toy/stage2.yaml") == CONFIG_DIR / "stage2.yaml"
    assert resolve_config_args(["fit", "-c", "toy/stage1"])[2] == str(CONFIG_DIR / "stage1.yaml")
    own = tmp_path / "mine.yaml"
    own.write_text("{}")
    assert resolve_config_args(["fit", "--config", str(own)])[2] == str(own)  # a real file wins
    with pytest.raises(SystemExit, match="neither a file nor a packaged config"):
        resolve_config_args(["fit", "-c", "toy/nope"])


def test_cli_fit_runs_a_packaged_stage_config(tiny_run):
    """`minillava fit -c toy/stage2` trains from the run folder that `minillava toy` wrote."""
    out, _ = tiny_run
    root = out.parents[1]  # the folder holding runs/toy
    (out / "weights" / "stage2.safetensors").unlink()
    cmd = [sys.executable, "-m", "minillava.cli", "fit", "-c", "toy/stage2", "--trainer.max_steps", "2",
           "--data.init_args.batch_size", "4"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = proc.stdout + proc.stderr
    assert "Epoch 0" in shown and "/-" not in shown  # tqdm's bar, not the rich "Epoch 0/-2"
    assert (out / "weights" / "stage2.safetensors").is_file()


def _stage_inputs(run_folder: Path, dest: Path) -> dict[str, Path]:
    """A copy of a run folder's data and tokenizer (no weights): what the training stages start from."""
    import shutil

    shutil.copytree(run_folder / "data", dest / "data")
    shutil.copytree(run_folder / "tokenizer", dest / "tokenizer")
    from minillava.data.toy_data import toy_data_files

    return toy_data_files(dest / "data")


def test_side_by_side_jobs_train_exactly_what_one_process_trains(tiny_run, tiny_config, tmp_path):
    """Running the stage-0 models in two worker processes changes nothing but the wall time."""
    from dataclasses import replace

    import torch
    from safetensors.torch import load_file

    from minillava.toy import ToyRun

    out, _ = tiny_run
    weights = {}
    for workers in (1, 2):
        folder = tmp_path / f"workers{workers}"
        run = ToyRun(replace(tiny_config, workers=workers), folder, progress=False)
        run.use_existing(_stage_inputs(out, folder))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # each worker runs on one thread; so does the one-process run here
        try:
            text_only, clip = run.side_by_side(("stage0_lm", {}), ("stage0_clip", {}))
        finally:
            torch.set_num_threads(threads)
        assert clip is None and set(text_only["accuracy"]) == {"count", "colour", "yesno", "relation", "overall"}
        assert set(run.losses) == {"stage0_lm", "stage0_clip"}  # losses and timings come back from the workers
        assert set(run.seconds) == {"stage0_lm", "stage0_clip", "eval_text_only"}
        weights[workers] = {name: load_file(folder / "weights" / f"{name}.safetensors") for name in ("llm", "vision")}
    for name, tensors in weights[1].items():
        for key, value in tensors.items():
            assert torch.equal(value, weights[2][name][key]), (name, key)


def test_a_failing_side_by_side_job_names_itself_and_its_cause(tiny_run, tiny_config, tmp_path):
    from dataclasses import replace

    from minillava.toy import ToyRun

    out, _ = tiny_run
    run = ToyRun(replace(tiny_config, workers=2), tmp_path, progress=False)
    run.use_existing(_stage_inputs(out, tmp_path))  # no weights: stage 1 finds no LLM to start from
    with pytest.raises(RuntimeError, match="job 'train_and_evaluate'.*llm.safetensors does not exist"):
        run.side_by_side(("train_and_evaluate", {"with_stage1": True}), ("train_and_evaluate", {"with_stage1": False}))


def test_workers_must_be_positive(tiny_config, tmp_path):
    from dataclasses import replace

    from minillava.toy import ToyRun

    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        ToyRun(replace(tiny_config, workers=0), tmp_path)


def test_cli_toy_options_reach_the_run_config(monkeypatch):
    """`minillava toy --vqa K --projector P --template T` and the other options reach the run; left out, the
    preset's values stand."""
    from dataclasses import replace

    import minillava.toy as toy
    from minillava.cli import toy_main

    seen = {}

    def fake_run_toy(preset, out, progress, **options):
        seen.update(options, preset=preset)
        raise KeyboardInterrupt  # stop before any work

    monkeypatch.setattr(toy, "run_toy", fake_run_toy)
    with pytest.raises(KeyboardInterrupt):
        toy_main(["--vqa", "0", "--projector", "mlp2x_gelu", "--template", "v0_no_system", "--quiet"])
    assert seen["data"].vqa_questions == 0 and seen["projector"] == "mlp2x_gelu" and seen["preset"] == "default"
    assert seen["template"] == "v0_no_system"
    assert seen["data"].n_train == toy.TOY_PRESETS["default"].data.n_train
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        toy_main(["--quick"])
    assert seen["preset"] == "quick" and not {"data", "projector", "template", "lm_kinds", "model_overrides",
                                               "stage2"} & set(seen)
    with pytest.raises(SystemExit):
        toy_main(["--template", "v9"])
    with pytest.raises(SystemExit):
        toy_main(["--vqa", "-1"])
    default = toy.TOY_PRESETS["default"]
    assert default.data.vqa_kinds == ("count", "colour", "yesno", "relation", "has_shape", "has_colour")
    assert default.data.vqa_merged is False and default.data.vqa_balanced is True and default.stage2.steps == 7200
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        toy_main(["--vqa-balanced"])  # the default, said out loud
    assert "data" not in seen
    with pytest.raises(KeyboardInterrupt):
        toy_main(["--no-vqa-balanced"])
    assert seen["data"] == replace(default.data, vqa_balanced=False)
    with pytest.raises(SystemExit):
        toy_main(["--vqa-balanced", "--vqa", "0"])  # nothing to balance
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        toy_main(["--existence-questions", "--vqa-single"])  # the default, said out loud
    assert "data" not in seen
    with pytest.raises(KeyboardInterrupt):
        toy_main(["--no-existence-questions"])
    assert seen["data"].vqa_kinds == ("count", "colour", "yesno", "relation")
    assert seen["data"].vqa_questions == default.data.vqa_questions and seen["data"].vqa_merged is False
    with pytest.raises(SystemExit):
        toy_main(["--existence-questions", "--vqa", "0"])  # no VQA records to put them in
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        toy_main(["--lm-kinds", "caption", "conv", "detail", "complex", "conv"])
    assert seen["lm_kinds"] == ("caption", "conv", "detail", "complex")  # the earlier default's stage 0
    with pytest.raises(SystemExit):
        toy_main(["--lm-kinds", "vqa"])  # stage-2 data, not in lm.json
    seen.clear()
    with pytest.raises(KeyboardInterrupt):  # the earlier default
        toy_main(["--vqa-merged", "--no-existence-questions", "--no-vqa-balanced", "--stage2-steps", "3600"])
    assert seen["data"].vqa_merged is True and seen["data"].vqa_questions == 8 and seen["data"].vqa_balanced is False
    assert seen["data"].vqa_kinds == ("count", "colour", "yesno", "relation")
    assert seen["stage2"] == replace(default.stage2, steps=3600)
    with pytest.raises(SystemExit):
        toy_main(["--vqa-merged", "--vqa-single"])
    with pytest.raises(SystemExit):
        toy_main(["--vqa-merged", "--vqa", "0"])
    with pytest.raises(SystemExit):
        toy_main(["--stage2-steps", "0"])
    with pytest.raises(SystemExit):
        toy_main(["--vqa-single", "--vqa", "0"])
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        toy_main(["--llm-layers", "6"])
    assert seen["model_overrides"] == {"llm.n_layers": 6}
    with pytest.raises(SystemExit):
        toy_main(["--llm-layers", "0"])


def test_run_model_overrides_rebuild_the_run_model(tiny_run, tiny_config, tmp_path):
    """A finished run's models are rebuilt with its own projector, also when it is not the default."""
    from minillava.toy import run_model_overrides

    out, _ = tiny_run
    assert run_model_overrides(out) == tiny_config.model_config_overrides()
    report = json.loads((out / "report.json").read_text())
    report["config"]["projector"] = "mlp2x_gelu"
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert run_model_overrides(tmp_path)["projector"] == "mlp2x_gelu"
    del report["config"]["projector"]  # a run folder from before the field
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert run_model_overrides(tmp_path)["projector"] == "linear"


def test_the_progress_bar_names_no_negative_epoch_count(capsys):
    """Trained by steps (max_epochs unset), the toy stages once showed "Epoch 1/-2" in Lightning's rich bar."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from minillava.toy import quiet_lightning, stage_trainer
    from minillava.training import LossHistory

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def training_step(self, batch, batch_idx):
            return (self.w * batch).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    quiet_lightning()
    stage_trainer(5, progress=True, history=LossHistory()).fit(Tiny(), DataLoader(torch.ones(3, 1), batch_size=1))
    shown = capsys.readouterr()
    assert "Epoch 1" in shown.err + shown.out
    assert "/-" not in shown.err + shown.out


@pytest.mark.parametrize("lm_kinds", [("caption", "detail", "complex"), ("caption", "conv", "detail", "complex")])
def test_stage0_trains_on_the_chosen_record_kinds(tiny_run, tiny_config, lm_kinds, monkeypatch):
    """Stage 0 reads lm.json (unchanged on disk) and trains on the records of `lm_kinds` only, in their order."""
    from dataclasses import replace

    from minillava.toy import ToyRun

    out, _ = tiny_run
    run = ToyRun(replace(tiny_config, lm_kinds=lm_kinds), out, progress=False)
    run.use_existing()
    seen = {}

    def fake_fit(name, module, datamodule, stage):
        seen["name"], seen["data"] = name, datamodule
        raise KeyboardInterrupt  # stop before training

    monkeypatch.setattr(run, "_fit", fake_fit)
    with pytest.raises(KeyboardInterrupt):
        run.stage0_lm()
    seen["data"].setup("fit")
    records = json.loads((out / "data" / "lm.json").read_text())
    assert {r["kind"] for r in records} == {"caption", "conv", "detail", "complex"}
    want = [r["id"] for r in records if r["kind"] in lm_kinds]
    assert seen["name"] == "stage0_lm" and [ex.meta["id"] for ex in seen["data"].train_set.examples] == want
