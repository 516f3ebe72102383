"""Shared fixtures: a toy tokenizer and one tiny end-to-end run of the pipeline, both built offline.

The `slow` marker (the fast lane is `python -m pytest -m "not slow"`) is set here for whole families: every
notebook cell (nbval) and every test that needs the tiny end-to-end run; single slow tests carry it themselves.
"""

from __future__ import annotations

import json

import pytest

from minillava.conversation import TEMPLATES
from minillava.data.dataset import record_turns
from minillava.data.toy_data import ToyDataConfig, generate_toy_data
from minillava.tokenizer import load_tokenizer, train_bpe_tokenizer
from minillava.toy import StageConfig, ToyConfig, ToyRun

# the smallest pipeline that still exercises every stage (about half a minute on 2 cores)
TINY = ToyConfig(
    data=ToyDataConfig(n_train=96, n_eval=12, n_lm=96),
    clip=StageConfig(steps=4, batch_size=32, lr=2e-3, warmup_ratio=0.1),
    lm=StageConfig(steps=4, batch_size=8, lr=3e-3),
    stage1=StageConfig(steps=3, batch_size=8, lr=2e-3),
    stage2=StageConfig(steps=3, batch_size=8, lr=1e-3),
)


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    return generate_toy_data(out, ToyDataConfig(n_train=64, n_eval=8, n_lm=64))


@pytest.fixture(scope="session")
def tokenizer(toy_data, tmp_path_factory):
    texts = [TEMPLATES["v0"].render(record_turns(r))[0]
             for key in ("lm", "stage1", "stage2") for r in json.loads(toy_data[key].read_text())]
    path = tmp_path_factory.mktemp("tokenizer")
    train_bpe_tokenizer(texts, vocab_size=511).save_pretrained(path)
    return load_tokenizer(path)


@pytest.fixture(scope="session")
def tiny_config() -> ToyConfig:
    return TINY


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished run folder of the whole pipeline at the TINY size, and its report."""
    out = tmp_path_factory.mktemp("run") / "runs" / "toy"
    report = ToyRun(TINY, out, progress=False).run()
    return out, report


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.path.suffix == ".ipynb" or "tiny_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
