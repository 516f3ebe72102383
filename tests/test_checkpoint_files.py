"""Checkpoint files (`minillava.checkpoints.files`): a .bin file is read as tensors only, never unpickled."""

from __future__ import annotations

import pytest
import torch
from tiny_llava import tiny_cfg

from minillava import load_hf_llama
from minillava.checkpoints import save_hf_llama
from minillava.model import Llava


def test_pickled_objects_are_refused(tmp_path):
    save_hf_llama(Llava(tiny_cfg()).llm, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save({"weights": torch.zeros(2), "payload": print}, tmp_path / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):  # never unpickled
        load_hf_llama(tmp_path)


def test_weights_move_between_stages_by_name_and_shape(tmp_path):
    """save_weights / load_weights: what the training stages hand each other (safetensors, every key checked)."""
    from minillava.checkpoints import load_weights, save_weights

    torch.manual_seed(0)
    model = Llava(tiny_cfg())
    save_weights(model.projector, tmp_path / "projector.safetensors")
    other = Llava(tiny_cfg())
    load_weights(other.projector, tmp_path / "projector.safetensors", "projector")
    torch.testing.assert_close(other.projector.weight, model.projector.weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"projector weights .*missing keys \['0.bias'"):
        load_weights(Llava(tiny_cfg("mlp2x_gelu")).projector, tmp_path / "projector.safetensors", "projector")
    projector = model.projector
    save_weights(torch.nn.Linear(projector.in_features, projector.out_features // 2), tmp_path / "small.safetensors")
    with pytest.raises(ValueError, match=r"small\.safetensors: \w+ has shape \(32\S*\), model expects \(64\S*\)"):
        load_weights(projector, tmp_path / "small.safetensors", "projector")
