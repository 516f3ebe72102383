"""A Lightning callback that kills its whole run with SIGKILL after a given optimiser step, as a lost node or an
out-of-memory kill would: no hook runs, nothing is flushed. Used by the resume tests through a config's
`trainer.callbacks` (the test puts this folder on PYTHONPATH)."""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.killpg(os.getpgid(0), signal.SIGKILL)  # every rank: they share the launcher's process group
