"""The paper configs (minillava/configs/paper/*.yaml): each follows its published recipe, names only arguments that
the module and data module take, and `minillava fit -c paper/NAME --print_config` prints it without building the
model."""

from __future__ import annotations

import inspect

import pytest
import yaml

from minillava.cli import main, packaged_config, packaged_configs
from minillava.data.dataset import LlavaDataModule
from minillava.model import llava_preset
from minillava.recipe import recipe_for
from minillava.training import LlavaModule

PAPER = [f"paper/{model}-stage{stage}" for model in ("llava-v1-13b", "llava-v1-7b", "llava-1.5-7b", "llava-1.5-13b")
         for stage in (1, 2)]


def load(name: str) -> dict:
    return yaml.safe_load(packaged_config(name).read_text())


def callbacks(doc: dict) -> dict[str, dict]:
    return {cb["class_path"].rsplit(".", 1)[-1]: cb.get("init_args", {}) for cb in doc["trainer"]["callbacks"]}


@pytest.mark.parametrize("name", PAPER)
def test_config_follows_its_recipe(name):
    doc = load(name)
    trainer, model, data = doc["trainer"], doc["model"]["init_args"], doc["data"]["init_args"]
    recipe = recipe_for(model["preset"], model["stage"])
    assert f"-stage{model['stage']}" in name and name.split("/")[1].startswith(model["preset"])
    global_batch = trainer["devices"] * trainer["num_nodes"] * data["batch_size"] * trainer["accumulate_grad_batches"]
    assert global_batch == recipe.global_batch == callbacks(doc)["GlobalBatch"]["global_batch"]
    assert (model["lr"], model["weight_decay"], model["warmup_ratio"]) == (recipe.lr, recipe.weight_decay,
                                                                           recipe.warmup_ratio)
    assert (trainer["max_epochs"], data["template"], data["max_len"]) == (recipe.epochs, recipe.template,
                                                                          recipe.max_len)
    assert trainer["precision"] == "bf16-mixed" and model["activation_checkpointing"] is True
    strategy = trainer["strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.ModelParallelStrategy"
    assert strategy["init_args"] == {"data_parallel_size": trainer["devices"] * trainer["num_nodes"],
                                     "tensor_parallel_size": 1}
    ckpt = callbacks(doc)["ModelCheckpoint"]
    assert ckpt["save_last"] is True and ckpt["every_n_train_steps"] > 0 and ckpt["dirpath"].startswith("runs/")
    assert trainer["logger"]["class_path"] == "lightning.pytorch.loggers.CSVLogger"
    cfg = llava_preset(model["preset"])
    assert (data["num_image_tokens"], data["image_size"]) == (cfg.num_image_tokens, cfg.vision.image_size)
    is_15 = model["preset"].startswith("llava-1.5")
    assert data["image_first"] is is_15
    assert data["image_aspect_ratio"] == ("pad" if is_15 and model["stage"] == 2 else "crop")


@pytest.mark.parametrize("model", ["llava-v1-13b", "llava-v1-7b", "llava-1.5-7b", "llava-1.5-13b"])
def test_stage2_starts_from_what_stage1_saves(model):
    stage1, stage2 = load(f"paper/{model}-stage1"), load(f"paper/{model}-stage2")
    assert "projector_weights" not in stage1["model"]["init_args"]
    assert stage2["model"]["init_args"]["projector_weights"] == stage1["model"]["init_args"]["save_to"]
    for key in ("vision_weights", "llm_weights"):
        assert stage1["model"]["init_args"][key] == stage2["model"]["init_args"][key]


@pytest.mark.parametrize("name", PAPER)
def test_config_names_only_real_arguments(name):
    doc = load(name)
    for section, cls in (("model", LlavaModule), ("data", LlavaDataModule)):
        unknown = set(doc[section]["init_args"]) - set(inspect.signature(cls.__init__).parameters)
        assert not unknown, f"{name}: {cls.__name__} takes no {sorted(unknown)}"


def test_configs_command_lists_every_packaged_config(capsys):
    main(["configs"])
    out = capsys.readouterr().out
    for name in PAPER + ["toy/stage1", "toy/stage2"]:
        assert name in out
    assert packaged_configs()["paper/llava-v1-13b-stage2"].startswith("LLaVA v1 13B (the paper), stage 2")


@pytest.mark.parametrize("name", PAPER)
def test_print_config_resolves_without_building_the_model(name, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("--print_config built the model")

    monkeypatch.setattr("minillava.training.llava_config", refuse)  # LlavaModule.__init__'s first real work
    monkeypatch.setattr("sys.argv", ["minillava"])  # pytest's own arguments are not the CLI's
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "-c", name, "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "minillava.training.LlavaModule"
    assert printed["model"]["init_args"]["preset"] == load(name)["model"]["init_args"]["preset"]
    assert printed["trainer"]["strategy"]["init_args"]["data_parallel_size"] == 8
