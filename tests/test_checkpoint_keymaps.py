"""Key maps (`minillava.checkpoints.keymaps`): a file that does not fit the model fails naming the file and the key."""

from __future__ import annotations

import pytest
import torch
import transformers
from safetensors.torch import save_file
from tiny_llava import tiny_cfg

from minillava import load_hf_llama
from minillava.checkpoints import save_hf_llama
from minillava.model import Llava


def test_key_map_errors_name_the_file_and_key(tmp_path):
    llm = Llava(tiny_cfg()).llm
    save_hf_llama(llm, tmp_path)
    state = transformers.LlamaForCausalLM.from_pretrained(tmp_path).state_dict()
    cases = {
        "missing key 'model.norm.weight'": lambda s: s.pop("model.norm.weight"),
        "not used by the model, e.g. \\['model.extra'\\]": lambda s: s.update({"model.extra": torch.zeros(1)}),
        r"model.layers.1.mlp.up_proj.weight has shape \(96, 63\), the model expects \(96, 64\)":
            lambda s: s.update({"model.layers.1.mlp.up_proj.weight": torch.zeros(96, 63)}),
    }
    for message, corrupt in cases.items():
        bad = dict(state)
        corrupt(bad)
        save_file({k: v.contiguous() for k, v in bad.items()}, str(tmp_path / "model.safetensors"))
        with pytest.raises((KeyError, ValueError), match=f"{tmp_path}.*{message}"):
            load_hf_llama(tmp_path)
