"""HF config translation (`minillava.checkpoints.hf_config`): the fields a config.json lacks are named."""

from __future__ import annotations

import json

import pytest

from minillava import load_hf_llama


def test_config_errors_name_the_missing_fields(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ValueError, match=r"config.json: missing field\(s\) \['vocab_size'"):
        load_hf_llama(tmp_path)
