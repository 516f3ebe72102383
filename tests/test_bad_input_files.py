"""Bad files, paths and model options: each gets a clear, early error that names the item (issue 20, part 5-6).

Every case asserts the error class and that the message names the file, path or option.
"""

from __future__ import annotations

import os
import re
import time

import pytest
import torch
from real_checkpoints import hf_llama_folder
from safetensors.torch import load_file, save_file
from tiny_llava import tiny_cfg

from minillava import load_hf_llama
from minillava.checkpoints import load_weights, save_hf_llama, save_weights
from minillava.checkpoints.files import CheckpointFiles, read_json, read_weights, save_state
from minillava.checkpoints.loaders import save_llava
from minillava.model import Llava, llava_preset, override
from minillava.projector import PROJECTOR_KINDS, build_projector
from minillava.tokenizer import load_tokenizer
from minillava.training import ClipModule, LanguageModule, LlavaModule

# --------------------------------------------------------------------------------------------------------------
# tokenizer paths: never a Hugging Face Hub lookup


@pytest.mark.parametrize("name", ["missing", "empty", "file", "hub-like"])
def test_missing_tokenizer_is_not_looked_up_on_the_hub(tmp_path, name):
    path = {"missing": tmp_path / "no" / "such" / "tokenizer", "empty": tmp_path / "empty",
            "file": tmp_path / "tokenizer.txt", "hub-like": "nobody-minillava/no-such-model"}[name]
    if name == "empty":
        path.mkdir()
    if name == "file":
        path.write_text("not a tokenizer")
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match=re.escape(f"tokenizer not found at {path}")):
        load_tokenizer(path)
    assert time.monotonic() - start < 10  # was 51 s and a network error


def test_save_llava_with_a_missing_tokenizer_writes_nothing(tmp_path):
    cfg = tiny_cfg()
    with pytest.raises(FileNotFoundError, match=re.escape(f"tokenizer not found at {tmp_path / 'tok'}")):
        save_llava(tmp_path / "out", cfg, Llava(cfg).state_dict(), tokenizer=tmp_path / "tok")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------------------
# corrupt checkpoint files


@pytest.fixture
def weights_file(tmp_path):
    model = Llava(tiny_cfg())
    save_weights(model.projector, tmp_path / "projector.safetensors")
    return model, tmp_path / "projector.safetensors"


def test_truncated_safetensors_names_the_file(weights_file):
    model, file = weights_file
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(str(file)) + ".*not a readable safetensors file"):
        read_weights(model.projector, file, "projector")
    with pytest.raises(ValueError, match=re.escape(str(file))):
        dict(CheckpointFiles(file))  # the header survives: the tensor read fails, naming the file and key


def test_garbage_safetensors_names_the_file(weights_file):
    model, file = weights_file
    file.write_bytes(b"\x00\x01not safetensors at all")
    with pytest.raises(ValueError, match=re.escape(str(file)) + ".*not a readable safetensors file"):
        load_weights(model.projector, file, "projector")
    with pytest.raises(ValueError, match=re.escape(str(file)) + ".*not a readable safetensors file"):
        CheckpointFiles(file)


def test_corrupt_bin_names_the_file(tmp_path):
    save_hf_llama(Llava(tiny_cfg()).llm, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(4)}, tmp_path / "pytorch_model.bin")
    data = (tmp_path / "pytorch_model.bin").read_bytes()
    (tmp_path / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "pytorch_model.bin"))):
        load_hf_llama(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"garbage, not a torch file")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "pytorch_model.bin"))):
        load_hf_llama(tmp_path)


@pytest.mark.parametrize("text", ['{"vocab_size": 64,', "[1, 2]", "\xff\xfe"])
def test_bad_config_json_names_the_file(tmp_path, text):
    save_hf_llama(Llava(tiny_cfg()).llm, tmp_path)
    (tmp_path / "config.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "config.json"))):
        load_hf_llama(tmp_path)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "config.json"))):
        read_json(tmp_path / "config.json")


def test_bad_shard_index_names_the_file(tmp_path):
    save_hf_llama(Llava(tiny_cfg()).llm, tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "model.safetensors.index.json")) + ".*weight_map"):
        load_hf_llama(tmp_path)


# --------------------------------------------------------------------------------------------------------------
# output paths


def _unwritable(tmp_path):
    """A folder the test cannot write into: read-only where permissions bind, else a path under a file (root)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o500)
        return folder / "out", folder
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker / "out", blocker


def test_save_state_into_a_folder_under_a_file(tmp_path):
    (tmp_path / "a-file").write_text("")
    path = tmp_path / "a-file" / "sub" / "w.safetensors"
    with pytest.raises(NotADirectoryError, match=re.escape(f"cannot write {path}: {tmp_path / 'a-file'} is a file")):
        save_state({"w": torch.zeros(2)}, path)


def test_saves_into_an_unwritable_place_name_the_path(tmp_path):
    where, _ = _unwritable(tmp_path)
    model = Llava(tiny_cfg())
    for save in (lambda p: save_weights(model.projector, p / "projector.safetensors"),
                 lambda p: save_state({"w": torch.zeros(2)}, p / "w.safetensors"),
                 lambda p: save_hf_llama(model.llm, p),
                 lambda p: save_llava(p, model.cfg, model.state_dict())):
        with pytest.raises(OSError, match=re.escape(f"cannot write {where}")) as info:
            save(where)
        assert "\n" not in str(info.value)


def test_save_state_over_a_folder_names_the_path(tmp_path):
    (tmp_path / "w.safetensors").mkdir()
    with pytest.raises(OSError, match=re.escape(f"cannot write {tmp_path / 'w.safetensors'}")):
        save_state({"w": torch.zeros(2)}, tmp_path / "w.safetensors")


# --------------------------------------------------------------------------------------------------------------
# model options


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown model preset 'llava-2'.*'llava-1.5-7b'.*'toy'"):
        llava_preset("llava-2")


@pytest.mark.parametrize("key", ["llm.n_layerz", "llmx.n_layers", "vision.widht"])
def test_unknown_override_key_names_the_key_and_the_fields(key):
    with pytest.raises(ValueError, match=re.escape(f"override {key!r}") + r".*fields: \["):
        override(llava_preset("toy"), {key: 2})


def test_unknown_projector_kind_lists_the_kinds():
    with pytest.raises(ValueError, match=r"projector kind 'mlp3x'.*" + re.escape(str(PROJECTOR_KINDS))):
        build_projector("mlp3x", 8, 8)
    with pytest.raises(ValueError, match=r"override 'projector': projector kind 'mlp3x'.*'mlp2x_gelu'"):
        override(llava_preset("toy"), {"projector": "mlp3x"})
    with pytest.raises(ValueError, match=r"projector kind 'mlp3x'.*'linear'"):
        LlavaModule(stage=1, overrides={"projector": "mlp3x"})


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("stage", 3, "stage must be 1"),
    ("stage", 0, "stage must be 1"),
    ("lr", 0.0, "lr must be a number > 0"),
    ("lr", -1e-3, "lr must be a number > 0"),
    ("lr", float("nan"), "lr must be a number > 0"),
    ("warmup_ratio", 1.0, r"warmup_ratio must be in \[0, 1\)"),
    ("warmup_ratio", -0.1, r"warmup_ratio must be in \[0, 1\)"),
    ("weight_decay", -0.01, "weight_decay must be a number >= 0"),
    ("image_aspect_ratio", "anyres", r"image_aspect_ratio must be one of \('square', 'pad'\), got 'anyres'"),
])
def test_llava_module_options_are_checked_at_construction(option, value, expected):
    with pytest.raises(ValueError, match=expected):
        LlavaModule(**{option: value})


@pytest.mark.parametrize("module", [LanguageModule, ClipModule])
@pytest.mark.parametrize(("option", "value"), [("lr", 0), ("warmup_ratio", 1.5), ("weight_decay", -1)])
def test_toy_module_options_are_checked_at_construction(module, option, value):
    with pytest.raises(ValueError, match=f"{module.__name__}: {option} must"):
        module(**{option: value})


# --------------------------------------------------------------------------------------------------------------
# HF Llama folders whose tensors do not fit their config (pinned: keymaps.convert names the file and the key)


def test_hf_llama_wrong_shape_names_folder_and_key(tmp_path):
    folder = hf_llama_folder(tmp_path / "llama")
    file = folder / "model.safetensors"
    state = load_file(str(file))
    key = "model.layers.1.mlp.down_proj.weight"
    state[key] = state[key][:, :-1].contiguous()
    save_file(state, str(file), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=re.escape(str(folder)) + ".*" + re.escape(key) + ".*shape"):
        load_hf_llama(folder)


def test_hf_llama_missing_key_names_folder_and_key(tmp_path):
    folder = hf_llama_folder(tmp_path / "llama")
    file = folder / "model.safetensors"
    state = load_file(str(file))
    key = "model.layers.0.self_attn.k_proj.weight"
    del state[key]
    save_file(state, str(file), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=re.escape(f"{folder}: missing key {key!r}")):
        load_hf_llama(folder)


def test_a_broken_yaml_config_names_its_file(tmp_path):
    from minillava.cli import resolve_config_args

    broken = tmp_path / "stage2.yaml"
    broken.write_text("trainer:\n  max_steps: [1\n")
    with pytest.raises(SystemExit, match=re.escape(f"config {broken} is not valid YAML")):
        resolve_config_args(["-c", str(broken)])
