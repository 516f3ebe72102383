"""Sharded and resumed training, proved on this machine's 2 CPU cores (gloo), with `minillava fit` as users run it.

- FSDP2 through Lightning's `ModelParallelStrategy` on 2 processes gives the same per-batch losses and final weights
  as 1 process at the same global batch (2 processes x batch 2 against 1 process x batch 2 x 2 accumulated
  batches: the length-grouped sampler gives both the same micro-batches, and both average the two micro-batch
  losses). Tolerance: float32 rounding only (the gradient of a sum of two micro-batches is summed in another order
  by a reduce-scatter than by accumulation), which 8 AdamW steps keep below 1e-5.
- A stage-2 run killed with SIGKILL after a checkpoint and resumed with `--ckpt_path last` (a distributed
  checkpoint: each rank writes its shards) ends with the same weights and the same per-batch losses as a run that
  was never interrupted: model, optimiser, schedule and data order all resume.
"""

from __future__ import annotations

import pytest
import torch
from fit_runs import fit, fsdp, read_losses, step_losses, weights, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_inputs(toy_data, tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    tokenizer.save_pretrained(folder)
    model = {"class_path": "minillava.training.LlavaModule",
             "init_args": {"stage": 2, "preset": "toy", "overrides": {"llm.n_layers": 2}, "lr": 1e-3,
                           "warmup_ratio": 0.2}}
    data = {"class_path": "minillava.data.dataset.LlavaDataModule",
            "init_args": {"train_json": str(toy_data["stage2"]), "image_folder": str(toy_data["images"]),
                          "tokenizer": str(folder), "num_image_tokens": 16, "image_size": 32, "max_len": 512,
                          "batch_size": 2}}
    return model, data


def with_save(model: dict, path) -> dict:
    return {**model, "init_args": {**model["init_args"], "save_to": str(path)}}


def flat(losses: list[dict]) -> list[float]:
    return [x for line in losses for x in line["losses"]]


def test_two_sharded_processes_train_as_one(run_inputs, tmp_path):
    model, data = run_inputs
    recipe = {"class_path": "minillava.recipe.GlobalBatch", "init_args": {"global_batch": 4}}  # both layouts: 4
    one = write_config(tmp_path / "one.yaml", model=with_save(model, tmp_path / "one.safetensors"), data=data,
                       devices=1, accumulate=2, max_steps=8, callbacks=[step_losses(tmp_path / "one.jsonl"), recipe],
                       gradient_clip_val=0.5)
    two = write_config(tmp_path / "two.yaml", model=with_save(model, tmp_path / "two.safetensors"), data=data,
                       devices=2, strategy=fsdp(2), max_steps=8,
                       callbacks=[step_losses(tmp_path / "two.jsonl"), recipe],
                       gradient_clip_val=0.5)  # the paper configs clip too: FSDP2's sharded gradients clip alike
    fit(one)
    fit(two)
    a, b = flat(read_losses(tmp_path / "one.jsonl")), flat(read_losses(tmp_path / "two.jsonl"))
    assert len(a) == len(b) == 16  # 8 steps x 2 micro-batches, in the same order (rank 0, rank 1 = 1st, 2nd)
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), atol=1e-5, rtol=1e-5)
    wa, wb = weights(tmp_path / "one.safetensors"), weights(tmp_path / "two.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], atol=1e-5, rtol=1e-4, msg=key)


def test_a_killed_sharded_run_resumes_exactly(run_inputs, tmp_path):
    model, data = run_inputs
    checkpoints = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                   "init_args": {"dirpath": str(tmp_path / "ckpt"), "every_n_train_steps": 3, "save_last": True,
                                 "save_top_k": -1}}

    def config(name: str, extra: list) -> object:
        return write_config(tmp_path / f"{name}.yaml", model=with_save(model, tmp_path / f"{name}.safetensors"),
                            data=data, devices=2, strategy=fsdp(2), max_steps=10,
                            callbacks=[step_losses(tmp_path / f"{name}.jsonl"), *extra])

    fit(config("whole", []))
    killed = fit(config("killed", [checkpoints, {"class_path": "crash.KillAt", "init_args": {"step": 5}}]),
                 check=False)
    assert killed.returncode != 0 and not (tmp_path / "killed.safetensors").exists()
    assert (tmp_path / "ckpt" / "last.ckpt").exists()  # written at step 3, before the kill at step 5
    fit(config("killed", [checkpoints]), "--ckpt_path", "last")
    whole, resumed = read_losses(tmp_path / "whole.jsonl"), read_losses(tmp_path / "killed.jsonl")
    after = [line for line in resumed if line["step"] >= 3][-7:]  # the resumed run's batches: steps 3..9
    assert [line["step"] for line in after] == list(range(3, 10))
    torch.testing.assert_close(torch.tensor(flat(after)), torch.tensor(flat(whole[3:])), atol=0, rtol=0)
    wa, wb = weights(tmp_path / "whole.safetensors"), weights(tmp_path / "killed.safetensors")
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], atol=0, rtol=0, msg=key)
