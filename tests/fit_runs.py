"""Runs of `minillava fit` in subprocesses, as a user starts them, for the multi-process tests: a config written
from a dict, 1 or 2 CPU processes (gloo), one thread each, and the per-batch losses that `StepLosses` records.

pytest cannot host Lightning's workers itself (the launcher would re-run the pytest command in each of them), so
every run is its own `python -m minillava fit` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from safetensors.torch import load_file

TESTS = Path(__file__).parent


def fsdp(devices: int) -> dict:
    return {"class_path": "lightning.pytorch.strategies.ModelParallelStrategy",
            "init_args": {"data_parallel_size": devices, "tensor_parallel_size": 1}}


def write_config(path: Path, *, model: dict, data: dict, devices: int = 1, strategy: str | dict = "auto",
                 max_steps: int = 6, accumulate: int = 1, callbacks: list | None = None, **trainer) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": devices, "strategy": strategy, "max_steps": max_steps,
                    "accumulate_grad_batches": accumulate, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "enable_checkpointing": any("ModelCheckpoint" in c["class_path"] for c in callbacks or []),
                    "callbacks": callbacks or [], **trainer},
        "model": model,
        "data": data,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def step_losses(path: Path) -> dict:
    return {"class_path": "minillava.training.StepLosses", "init_args": {"path": str(path)}}


def fit(config: Path, *args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m minillava fit -c config ...` in its own session (a crash callback may SIGKILL its group)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "minillava", "fit", "-c", str(config), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, start_new_session=True,
                          cwd=config.parent)  # where LightningCLI writes its config.yaml
    if check and proc.returncode != 0:
        raise AssertionError(f"minillava fit -c {config} {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def read_losses(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def weights(path: Path) -> dict:
    return load_file(str(path))
