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
