"""The recipes' global batch: the arithmetic, and the GlobalBatch callback inside a real (tiny) Trainer."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset
from torch.utils.data import DataLoader

from minillava.recipe import (RECIPES, GlobalBatch, accumulation_for, check_global_batch, global_batch_size,
                              recipe_for)


def test_global_batch_is_the_product_of_its_factors():
    assert global_batch_size(devices=8, num_nodes=1, batch_size=4, accumulate=1) == 32
    assert global_batch_size(devices=8, num_nodes=2, batch_size=16, accumulate=1) == 256
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        global_batch_size(8, 1, 0, 1)


def test_accumulation_keeps_the_recipe_batch_on_other_hardware():
    assert accumulation_for(32, devices=8, num_nodes=1, batch_size=4) == 1
    assert accumulation_for(32, devices=4, num_nodes=1, batch_size=4) == 2
    assert accumulation_for(128, devices=1, num_nodes=1, batch_size=16) == 8
    with pytest.raises(ValueError, match="global batch 32 is not a multiple of devices 3 x num_nodes 1 x batch_size 4"):
        accumulation_for(32, devices=3, num_nodes=1, batch_size=4)


def test_check_names_the_three_factors_and_the_recipe():
    with pytest.raises(ValueError) as err:
        check_global_batch(32, data_parallel=4, batch_size=4, accumulate=1)
    msg = str(err.value)
    for part in ("global batch 16", "devices 4", "data.batch_size 4", "accumulate_grad_batches 1",
                 "recipe's global batch is 32", "--trainer.accumulate_grad_batches 2"):
        assert part in msg
    with pytest.warns(UserWarning, match="recipe's global batch is 32"):
        assert check_global_batch(32, 4, 4, 1, strict=False) == 16
    assert check_global_batch(32, 4, 4, 2) == 32


def test_recipes_follow_the_papers():
    v1s1, v1s2 = recipe_for("llava-v1-13b", 1), recipe_for("llava-v1-7b", 2)
    assert (v1s1.lr, v1s1.global_batch, v1s1.epochs, v1s1.template) == (2e-3, 128, 1, "v0")
    assert (v1s2.lr, v1s2.global_batch, v1s2.epochs, v1s2.samples) == (2e-5, 32, 3, 158_000)
    s1, s2 = recipe_for("llava-1.5-7b", 1), recipe_for("llava-1.5-13b", 2)
    assert (s1.lr, s1.global_batch, s1.template, s2.lr, s2.global_batch, s2.epochs, s2.template) == (
        1e-3, 256, "plain", 2e-5, 128, 1, "v1")
    assert all(r.warmup_ratio == 0.03 and r.weight_decay == 0 and r.max_len == 2048 for r in RECIPES.values())
    assert recipe_for("toy", 2) is None


class _Data(L.LightningDataModule):
    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self):
        return DataLoader(RandomDataset(32, 16), batch_size=self.hparams.batch_size)


def _fit(callback: GlobalBatch, batch_size: int, accumulate: int) -> L.Trainer:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, accumulate_grad_batches=accumulate, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[callback])
    torch.manual_seed(0)
    trainer.fit(BoringModel(), datamodule=_Data(batch_size))
    return trainer


def test_callback_refuses_a_run_that_trains_another_recipe():
    with pytest.raises(ValueError, match=r"global batch 4 = data-parallel devices 1 .* x data.batch_size 2 x "
                                         r"trainer.accumulate_grad_batches 2, but the recipe's global batch is 8"):
        _fit(GlobalBatch(8), batch_size=2, accumulate=2)
    assert _fit(GlobalBatch(8), batch_size=2, accumulate=4).global_step == 1
    with pytest.warns(UserWarning, match="recipe's global batch is 8"):
        _fit(GlobalBatch(8, strict=False), batch_size=2, accumulate=2)
