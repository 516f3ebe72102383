"""Continuing from a released LLaVA (minillava/finetune.py) on tiny stand-ins in both release layouts:

- the settings come from the checkpoint: tower, projector, LLM, <image> id, template, visual tokens, image size,
  preprocessing, tokenizer;
- full fine-tuning from a transformers Llava folder trains (projector + LLM move, the tower does not), saves an
  original-LLaVA folder and exports back to transformers with the same logits (1e-4);
- a LoRA config trains under FSDP2 on 2 CPU processes through `minillava fit` (the real-scale strategy), and its
  adapters merge;
- the packaged task configs follow the official finetune_task.sh / finetune_task_lora.sh.
"""

from __future__ import annotations

import inspect
import json

import lightning as L
import pytest
import torch
import yaml
from finetune_folders import batch, custom_data, released_folders
from fit_runs import fit, fsdp, write_config

from minillava import export_hf_llava, load_llava
from minillava.cli import main, packaged_config
from minillava.data.dataset import LlavaDataModule
from minillava.finetune import FinetuneDataModule, FinetuneModule, read_released

TASK = [f"paper/llava-1.5-{size}-task{lora}" for size in ("7b", "13b") for lora in ("", "-lora")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return released_folders(tmp_path_factory.mktemp("released"))


def test_settings_come_from_the_checkpoint(folders, tmp_path):
    for layout in ("original", "transformers"):
        released = read_released(folders[layout])
        assert released.layout == layout and released.template == "v1" and released.cfg.projector == "mlp2x_gelu"
        assert released.cfg.num_image_tokens == 16 and released.cfg.vision.image_size == 32
        assert released.tokenizer == folders[layout]
    # the original config says pad; transformers' folder has no preprocessor_config.json: CLIP's centre crop
    assert read_released(folders["original"]).image_aspect_ratio == "pad"
    assert read_released(folders["transformers"]).image_aspect_ratio == "square"
    (tmp_path / "train.json").write_text("[]")
    data = FinetuneDataModule(str(folders["original"]), str(tmp_path / "train.json"))
    h = data.hparams
    assert (h.template, h.num_image_tokens, h.image_size, h.image_aspect_ratio, h.image_first) == (
        "v1", 16, 32, "pad", True)
    assert h.tokenizer == str(folders["original"])
    module = FinetuneModule(str(folders["transformers"]))
    assert module.cfg.image_token_id == read_released(folders["transformers"]).cfg.image_token_id
    with pytest.raises(ValueError, match="template must be one of"):
        FinetuneDataModule(str(folders["original"]), str(tmp_path / "train.json"), template="v9")
    # every option of LlavaDataModule reaches the datasets, except those the checkpoint decides
    ours = set(inspect.signature(FinetuneDataModule.__init__).parameters)
    theirs = set(inspect.signature(LlavaDataModule.__init__).parameters) - {"num_image_tokens", "image_size"}
    assert theirs <= ours, theirs - ours
    assert set(theirs) - {"self"} <= set(h), (set(theirs) - {"self"}) - set(h)


def test_full_finetuning_from_a_transformers_folder_trains_and_exports(folders, toy_data, tmp_path):
    import transformers

    train_json, images = custom_data(toy_data, tmp_path)
    torch.manual_seed(0)
    module = FinetuneModule(str(folders["transformers"]), lr=1e-3, warmup_ratio=0.0,
                            save_to=str(tmp_path / "llava-v1.5-tuned"))
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    data = FinetuneDataModule(str(folders["transformers"]), str(train_json), str(images), batch_size=4)
    L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, datamodule=data)
    after = module.model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"projector", "llm"}  # the tower stays frozen

    saved = load_llava(tmp_path / "llava-v1.5-tuned")  # an original-LLaVA folder, tokenizer and tower included
    assert read_released(tmp_path / "llava-v1.5-tuned").template == "v1"
    inputs = batch(saved)
    with torch.no_grad():
        want = module.model.eval()(**inputs)["logits"]
        assert (saved(**inputs)["logits"] - want).abs().max() < 1e-6
        export_hf_llava(saved, tmp_path / "hf")
        hf = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
        got = hf(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits
    assert (got[..., : want.shape[-1]] - want).abs().max() < 1e-4


@pytest.mark.slow
def test_lora_config_trains_under_fsdp2_on_two_processes(folders, toy_data, tmp_path):
    pytest.importorskip("peft", reason='LoRA needs peft: pip install "minillava[lora]"')
    from minillava.finetune import merge_adapters

    train_json, images = custom_data(toy_data, tmp_path)
    model = {"class_path": "minillava.finetune.FinetuneModule",
             "init_args": {"init_from": str(folders["original"]), "lr": 5e-3, "projector_lr": 1e-3, "lora_r": 4,
                           "lora_alpha": 8, "warmup_ratio": 0.0, "save_to": str(tmp_path / "adapters")}}
    data = {"class_path": "minillava.finetune.FinetuneDataModule",
            "init_args": {"init_from": str(folders["original"]), "train_json": str(train_json),
                          "image_folder": str(images), "batch_size": 2}}
    fit(write_config(tmp_path / "lora.yaml", model=model, data=data, devices=2, strategy=fsdp(2), max_steps=3))
    merged = merge_adapters(tmp_path / "adapters", out=tmp_path / "merged")
    base = load_llava(folders["original"])
    inputs = batch(base)
    with torch.no_grad():
        moved = (merged(**inputs)["logits"] - base(**inputs)["logits"]).abs().max()
    assert moved > 1e-4  # the adapters learnt something, and merge folded it in
    for key, value in base.vision.state_dict().items():  # the tower is the base's
        assert torch.equal(merged.vision.state_dict()[key], value)


def load(name: str) -> dict:
    return yaml.safe_load(packaged_config(name).read_text())


@pytest.mark.parametrize("name", TASK)
def test_task_configs_follow_the_official_scripts(name):
    doc = load(name)
    trainer, model, data = doc["trainer"], doc["model"]["init_args"], doc["data"]["init_args"]
    lora = name.endswith("-lora")
    size = "13b" if "13b" in name else "7b"
    assert model["init_from"] == data["init_from"] == f"checkpoints/llava-v1.5-{size}"
    # scripts/v1_5/finetune_task[_lora].sh: 16 per GPU x 8 = 128, 1 epoch, cosine, warmup 0.03, no weight decay
    global_batch = trainer["devices"] * trainer["num_nodes"] * data["batch_size"] * trainer["accumulate_grad_batches"]
    callbacks = {cb["class_path"].rsplit(".", 1)[-1]: cb.get("init_args", {}) for cb in trainer["callbacks"]}
    assert global_batch == 128 == callbacks["GlobalBatch"]["global_batch"]
    assert (trainer["max_epochs"], model["weight_decay"], model["warmup_ratio"], data["max_len"]) == (1, 0.0, 0.03,
                                                                                                       2048)
    assert trainer["precision"] == "bf16-mixed" and model["activation_checkpointing"] is True
    if lora:
        assert (model["lr"], model["projector_lr"], model["lora_r"], model["lora_alpha"], model["lora_dropout"]) == (
            2e-4, 2e-5, 128, 256, 0.05)
    else:
        assert model["lr"] == 2e-5 and "lora_r" not in model
    for section, cls in (("model", FinetuneModule), ("data", FinetuneDataModule)):
        unknown = set(doc[section]["init_args"]) - set(inspect.signature(cls.__init__).parameters)
        assert not unknown, f"{name}: {cls.__name__} takes no {sorted(unknown)}"
    # nothing the checkpoint says is declared again
    assert not {"template", "num_image_tokens", "image_size", "image_aspect_ratio", "tokenizer"} & set(data)


@pytest.mark.parametrize("name", TASK)
def test_task_configs_print_without_the_weights(name, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["minillava"])
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "-c", name, "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "minillava.finetune.FinetuneModule"


def test_plan_compares_full_lora_and_qlora(capsys):
    from minillava.plan import make_plan, read_setup

    plan = make_plan(read_setup("paper/llava-1.5-7b-task-lora", devices=1, batch=1), gpu="a100-80gb")
    modes = plan["finetune"]
    assert set(modes) == {"full", "lora", "qlora"}
    assert plan["params"]["trainable"] == modes["lora"]["trainable"] < modes["full"]["trainable"] / 10
    assert modes["qlora"]["total_gib"] < modes["lora"]["total_gib"] < modes["full"]["total_gib"]
    main(["plan", "-c", "paper/llava-1.5-7b-task-lora", "--devices", "1", "--batch", "1"])
    out = capsys.readouterr().out
    assert "LoRA r 128" in out and "QLoRA" in out and "24" in out
    json.dumps(plan)  # JSON-ready


def test_toy_flow_new_question_kind():
    from minillava.finetune_toy import highest

    ctx = "A picture.\n\nred circle: [0.000, 0.500, 0.200, 0.700]\nblue square: [0.250, 0.125, 0.450, 0.300]\n"
    assert highest(ctx) == "blue square"
    assert highest("red circle: [0.000, 0.500, 0.200, 0.700]") is None  # one object: no question
    assert highest(ctx.replace("0.125", "0.450")) is None  # a tie within 0.1: left out


def test_toy_flow_runs_on_a_finished_toy_run(tiny_run, tmp_path):
    pytest.importorskip("peft", reason='LoRA needs peft: pip install "minillava[lora]"')
    from minillava.finetune_toy import run_flow

    out, _ = tiny_run
    results = run_flow(out, tmp_path / "flow", steps=2, batch_size=4, n_old=8)
    assert set(results) >= {"before", "lora", "full"}
    assert results["lora"]["trainable"] < results["full"]["trainable"] < results["total"]
    assert "| + LoRA r 8 |" in (tmp_path / "flow" / "results.md").read_text()
