"""LoRA fine-tuning from a released LLaVA (minillava/lora.py, minillava/finetune.py) on tiny stand-ins:

- the adapters sit on every linear layer of the LLM but lm_head (the official find_all_linear_names), and after
  training steps only the adapters and the projector have changed, the projector at its own learning rate;
- the merged model's logits equal the adapted model's (fp32, within 1e-5);
- adapters save on their own, load onto a fresh base, merge, and export to the original and transformers layouts
  (transformers' LlavaForConditionalGeneration gives the same logits, within 1e-4);
- bad input is refused by name (rank < 1, QLoRA on a CPU, a folder in neither layout, a missing adapter folder).
"""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from finetune_folders import batch, custom_data, released_folders

pytest.importorskip("peft", reason='LoRA needs peft: pip install "minillava[lora]" (the test extra installs it)')

from minillava import load_llava  # noqa: E402
from minillava.finetune import FinetuneDataModule, FinetuneModule, merge_adapters, read_released  # noqa: E402
from minillava.lora import (  # noqa: E402
    LoraSettings,
    add_lora,
    llm_linear_names,
    load_adapters,
    lora_param_count,
    merge_lora,
)

TARGETS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return released_folders(tmp_path_factory.mktemp("released"))


def fit(module, data, steps: int = 3):
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    return trainer


@pytest.fixture(scope="module")
def trained(folders, toy_data, tmp_path_factory):
    """A LoRA run of 3 steps from the original-layout folder: (module, its weights before, after, the trainer)."""
    root = tmp_path_factory.mktemp("lora-run")
    train_json, images = custom_data(toy_data, root)
    torch.manual_seed(0)
    module = FinetuneModule(str(folders["original"]), lr=5e-3, projector_lr=1e-3, warmup_ratio=0.0, lora_r=4,
                            lora_alpha=8, lora_dropout=0.0, save_to=str(root / "adapters"))
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    data = FinetuneDataModule(str(folders["original"]), str(train_json), str(images), batch_size=4)
    trainer = fit(module, data)
    after = {k: v.clone() for k, v in module.model.state_dict().items()}
    return module, before, after, trainer, root


def test_adapters_target_the_llms_linear_layers_only(folders):
    model = load_llava(folders["original"])
    assert llm_linear_names(model) == TARGETS  # lm_head, the projector and the tower are never targets
    add_lora(model, LoraSettings(r=4, alpha=8))
    wrapped = {n.rsplit(".", 1)[0] for n in model.state_dict() if ".lora_A." in n}
    assert len(wrapped) == 7 * model.cfg.llm.n_layers and all(n.startswith("llm.layers.") for n in wrapped)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in model.state_dict() if ".lora_" in n or n.startswith("projector.")}
    lora = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    assert lora == lora_param_count(model.cfg, r=4)


def test_only_adapters_and_projector_change(trained):
    module, before, after, trainer, _ = trained
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adapters = {k for k in before if ".lora_" in k}
    projector = {k for k in before if k.startswith("projector.")}
    assert changed == adapters | projector  # every adapter and the whole projector; nothing else
    groups = trainer.optimizers[0].param_groups
    assert [g["lr"] for g in groups] == [5e-3, 1e-3] or [g["initial_lr"] for g in groups] == [5e-3, 1e-3]
    assert sum(p.numel() for p in groups[1]["params"]) == sum(before[k].numel() for k in projector)


def test_merged_model_gives_the_adapted_models_logits(trained, folders):
    module = trained[0]
    adapted = module.model.eval()
    inputs = batch(adapted)
    with torch.no_grad():
        want = adapted(**inputs)["logits"]
        state = {k: v.clone() for k, v in adapted.state_dict().items()}
        merged = load_llava(folders["original"]).float()
        add_lora(merged, module.lora)
        merged.load_state_dict(state)
        merge_lora(merged)
        assert set(merged.state_dict()) == set(load_llava(folders["original"]).state_dict())
        got = merged(**inputs)["logits"]
    assert (got - want).abs().max() < 1e-5
    assert (want - load_llava(folders["original"])(**inputs)["logits"]).abs().max() > 1e-3  # training did move it


def test_adapters_save_load_merge_and_export(trained, folders, tmp_path):
    import transformers

    module, *_, root = trained
    adapters = root / "adapters"  # written by on_train_end (save_to)
    assert sorted(p.name for p in adapters.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                         "non_lora_trainables.safetensors"]
    config = json.loads((adapters / "adapter_config.json").read_text())
    assert (config["r"], config["alpha"], config["targets"]) == (4, 8, TARGETS)
    assert config["base_model"] == str(folders["original"]) and config["template"] == "v1"
    size = sum(p.stat().st_size for p in adapters.iterdir())
    assert size < 0.5 * sum(p.stat().st_size for p in folders["original"].rglob("*.safetensors"))

    adapted = module.model.eval()
    inputs = batch(adapted, seed=1)
    with torch.no_grad():
        want = adapted(**inputs)["logits"]
        fresh = load_adapters(load_llava(folders["original"]).float(), adapters).eval()
        assert (fresh(**inputs)["logits"] - want).abs().max() < 1e-6  # the saved adapters are the trained ones
        merge_adapters(adapters, out=tmp_path / "merged", hf_out=tmp_path / "merged-hf")
        merged = load_llava(tmp_path / "merged")
        assert (merged(**inputs)["logits"] - want).abs().max() < 1e-5
        assert read_released(tmp_path / "merged").template == "v1"
        hf = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path / "merged-hf").eval()
        logits = hf(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits
        vocab = want.shape[-1]
        assert (logits[..., :vocab] - want).abs().max() < 1e-4


def test_merge_from_the_command_line(trained, tmp_path, capsys):
    from minillava.cli import main

    main(["merge", str(trained[4] / "adapters"), "--hf-out", str(tmp_path / "hf")])
    assert "transformers layout" in capsys.readouterr().out and (tmp_path / "hf" / "model.safetensors").is_file()
    with pytest.raises(SystemExit, match="minillava merge: adapter folder .*nowhere does not exist"):
        main(["merge", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match=r"merged[/\\]adapter_config.json does not exist"):
        (tmp_path / "merged").mkdir()
        main(["merge", str(tmp_path / "merged"), "--out", str(tmp_path / "x")])


def test_bad_settings_are_refused_by_name(folders, tmp_path):
    with pytest.raises(ValueError, match="lora_r must be an integer >= 1"):
        FinetuneModule(str(folders["original"]), lora_r=0)
    with pytest.raises(ValueError, match="lora_dropout must be in"):
        FinetuneModule(str(folders["original"]), lora_r=4, lora_dropout=1.5)
    with pytest.raises(ValueError, match="quantize='4bit' is QLoRA: it needs LoRA adapters"):
        FinetuneModule(str(folders["original"]), quantize="4bit")
    model = load_llava(folders["original"])
    with pytest.raises(ValueError, match=r"lora targets \['lm_head'\] are not linear layers of the LLM"):
        add_lora(model, LoraSettings(r=2, targets=["lm_head"]))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="plain.*neither an original LLaVA config .* nor a transformers Llava"):
        FinetuneModule(str(tmp_path / "plain"))
    with pytest.raises(FileNotFoundError, match="init_from .*absent: no such folder"):
        FinetuneModule(str(tmp_path / "absent"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_qlora_is_refused_on_a_cpu(folders):
    with pytest.raises(RuntimeError, match=r"quantize='4bit' \(QLoRA\) needs a CUDA GPU"):
        FinetuneModule(str(folders["original"]), lora_r=4, quantize="4bit")


def test_merge_matches_with_dropout_on_an_eval_model(folders):
    model = load_llava(folders["original"]).float()  # eval mode: the adapters' dropout must be off too
    add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.05))
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if ".lora_B." in name:
            param.data.normal_(0, 0.05)  # as if trained: B A no longer zero
    inputs = batch(model)
    with torch.no_grad():
        adapted = model(**inputs)["logits"]
        assert torch.equal(adapted, model(**inputs)["logits"])
        merged = merge_lora(model)(**inputs)["logits"]
    assert (merged - adapted).abs().max() < 1e-5  # measured 2.4e-7 (fp32)
    assert (adapted - load_llava(folders["original"])(**inputs)["logits"]).abs().max() > 1e-2
