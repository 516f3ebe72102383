"""Training with Lightning (Algorithm 3): the two LLaVA stages, plus the toy world's stage 0.

- stage 1, feature alignment: only the projector W trains; vision tower and LLM are frozen.
- stage 2, end-to-end fine-tuning: W and the LLM train; the vision tower stays frozen.
- stage 0 (toy only): a tiny CLIP (open_clip + ClipLoss) and a tiny LLaMA chat model stand in for the pretrained
  CLIP ViT-L/14 and Vicuna that the paper starts from.

All use AdamW with linear warmup then cosine decay, stepped every optimiser step. Weights move between stages as
safetensors files (`save_to` / `*_weights`), never as pickles.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import open_clip
import torch
from open_clip.model import CLIPTextCfg

from .checkpoints import initial_state, llava_config, save_llava, save_state, save_weights
from .checkpoints.files import writing
from .checkpoints.keymaps import assign
from .distributed import full_state, load_full_state, shard_llava
from .constants import IMAGE_TOKEN
from .llama import Llama, LlamaConfig, causal_lm_loss
from .model import Llava, LlavaConfig, llava_preset
from .tokenizer import load_tokenizer
from .vision import VisionConfig


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    """LR multiplier: linear warmup over warmup_ratio * total_steps, then cosine decay to 0 (Alg 3, line 4)."""
    warmup = max(1, math.ceil(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _AdamWCosine(L.LightningModule):
    """configure_optimizers shared by every stage: AdamW on the trainable parameters, cosine schedule."""

    def configure_optimizers(self):
        h = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self).__name__}: no trainable parameters")
        # Alg 3, line 9: Lightning steps this optimiser after each backward pass
        # the fused kernel updates all tensors in one pass, faster than the per-tensor loop (benchmarks/train_step.py
        # times both); same update rule
        fused = all(p.device.type in ("cpu", "cuda") for p in params)  # trainable tensors are floats already
        opt = torch.optim.AdamW(params, lr=h.lr, weight_decay=h.weight_decay, betas=tuple(h.betas), fused=fused)
        sched = cosine_with_warmup(opt, int(self.trainer.estimated_stepping_batches), h.warmup_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


IMAGE_ASPECT_RATIOS = ("square", "pad")


def check_optimizer_options(owner: str, lr: float, weight_decay: float, warmup_ratio: float) -> None:
    """The optimiser's options, range-checked at construction (not at the first step, minutes later)."""
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"{owner}: lr must be a number > 0, got {lr!r}")
    if (not isinstance(weight_decay, (int, float)) or isinstance(weight_decay, bool) or not weight_decay >= 0
            or not math.isfinite(weight_decay)):
        raise ValueError(f"{owner}: weight_decay must be a number >= 0, got {weight_decay!r}")
    if not isinstance(warmup_ratio, (int, float)) or isinstance(warmup_ratio, bool) or not 0 <= warmup_ratio < 1:
        raise ValueError(f"{owner}: warmup_ratio must be in [0, 1) (a fraction of the steps), got {warmup_ratio!r}")


def apply_stage_check(stage: int) -> None:
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 (feature alignment) or 2 (end-to-end fine-tuning), got {stage}")


def apply_stage(model: Llava, stage: int) -> None:
    """Algorithm 3's freezing policy: which parameters receive gradients in each stage."""
    apply_stage_check(stage)
    # Alg 3, line 3: the trainable set is {W} in stage 1 and {W, phi} in stage 2
    model.vision.requires_grad_(False)  # frozen in both stages
    model.projector.requires_grad_(True)  # W trains in both stages
    model.llm.requires_grad_(stage == 2)  # the LLM trains only in stage 2


class LlavaModule(_AdamWCosine):
    """LLaVA stage 1 or 2, from the toy world's weights or from real checkpoints, on one CPU or sharded over GPUs.

    The model is a named preset with dotted-key overrides; the LLM's and the tower's shapes come from their
    checkpoints where those are folders or named open_clip files (`checkpoints.parts`). It is built in
    `configure_model`, on the meta device: under `ModelParallelStrategy` it is sharded with FSDP2 before any memory
    is allocated and filled from rank 0 (`distributed.py`); otherwise it is filled in place from the files. Either
    way no rank holds a second copy. `module.model` builds it on first use outside a Trainer too.
    """

    def __init__(
        self,
        stage: int = 2,  # Alg 3, line 2: one run per stage (minillava toy runs stage 1, then stage 2)
        preset: str = "toy",
        overrides: dict[str, Any] | None = None,
        lr: float = 2e-5,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        betas: tuple[float, float] = (0.9, 0.999),
        vision_weights: str | None = None,  # ours | an open_clip file (with vision_name) | a transformers CLIP folder
        vision_name: str | None = None,  # open_clip architecture of vision_weights, e.g. "ViT-L-14-quickgelu"
        llm_weights: str | None = None,  # ours | an HF Llama / Vicuna folder
        projector_weights: str | None = None,  # ours | the original stage-1 mm_projector.bin
        save_to: str | None = None,  # stage 1: a projector file; stage 2: ours (.safetensors) or a LLaVA folder
        tokenizer: str | None = None,  # an HF tokenizer folder: its <image> id; copied into a saved LLaVA folder
        activation_checkpointing: bool = False,  # recompute each decoder block in backward (memory for time)
        image_aspect_ratio: str = "square",  # written into a saved folder's config ("pad" for LLaVA-1.5)
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        apply_stage_check(stage)
        check_optimizer_options("LlavaModule", lr, weight_decay, warmup_ratio)
        if image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
            raise ValueError(f"LlavaModule: image_aspect_ratio must be one of {IMAGE_ASPECT_RATIOS}, "
                             f"got {image_aspect_ratio!r}")
        self.cfg: LlavaConfig = llava_config(preset, overrides, vision_weights, vision_name, llm_weights)
        if tokenizer is not None:  # the placeholder is the id the tokenizer gives <image> (32000 for Vicuna's)
            self.cfg.image_token_id = load_tokenizer(tokenizer).convert_tokens_to_ids(IMAGE_TOKEN)

    def __getattr__(self, name: str):
        if name == "model" and "model" not in self._modules:  # outside a Trainer: build on first use
            self.configure_model()
            return self._modules["model"]
        return super().__getattr__(name)

    def configure_model(self) -> None:
        """Build the model on the meta device, shard it where a device mesh is given, fill it (Alg 3, line 1)."""
        if "model" in self._modules:
            return
        h = self.hparams
        with torch.device("meta"):
            model = Llava(self.cfg)
        apply_stage(model, h.stage)
        model.llm.activation_checkpointing = h.activation_checkpointing
        mesh = self._data_parallel_mesh()
        if mesh is None:
            state = initial_state(self.cfg, h.vision_weights, h.vision_name, h.llm_weights, h.projector_weights)
            assign(model, {k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        else:
            shard_llava(model, mesh, param_dtype=self._compute_dtype())
            rank0 = mesh.get_rank() == 0
            state = (initial_state(self.cfg, h.vision_weights, h.vision_name, h.llm_weights, h.projector_weights)
                     if rank0 else {})
            load_full_state(model, state, self.trainer.strategy.root_device)
        self.model = model
        self.train(self.training)  # the mode set before the model existed, the tower in eval mode

    def _data_parallel_mesh(self):
        """The device mesh of `ModelParallelStrategy` (its data-parallel dimension), or None for other strategies."""
        try:
            mesh = self.device_mesh
        except (AttributeError, RuntimeError):
            return None
        if mesh is None:
            return None
        if "tensor_parallel" in mesh.mesh_dim_names and mesh["tensor_parallel"].size() > 1:
            raise ValueError("LlavaModule shards with FSDP2 only: set ModelParallelStrategy(tensor_parallel_size=1)")
        return mesh["data_parallel"] if "data_parallel" in mesh.mesh_dim_names else mesh

    def _compute_dtype(self) -> torch.dtype | None:
        """bf16 under a bf16 precision (FSDP2's compute copies of the fp32 master shards; saved folders), else None:
        the parameters' own dtype."""
        trainer = self._trainer
        return torch.bfloat16 if trainer is not None and "bf16" in str(trainer.precision) else None

    def train(self, mode: bool = True):
        super().train(mode)
        if "model" in self._modules:
            self.model.vision.eval()  # frozen tower: never in training mode (no dropout / patch dropout)
        return self

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # Alg 3, line 5: Lightning's fit loop draws the minibatches; Alg 3, line 8: it calls backward on this loss
        loss = self.model(**batch, return_logits=False)["loss"]  # Alg 3, line 7
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss = self.model(**batch, return_logits=False)["loss"]
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0], sync_dist=True)

    def on_train_end(self) -> None:
        if self.hparams.save_to:
            self.save(self.hparams.save_to)

    def save(self, path: str | Path) -> None:
        """Alg 3, line 10: stage 1 saves only what it trained (the projector: ours as .safetensors, the original
        layout as mm_projector.bin); stage 2 the whole model, ours as one .safetensors file or an original-LLaVA
        folder. Sharded, every rank takes part in gathering, and rank 0 writes."""
        path = Path(path)
        stage1 = self.hparams.stage == 1
        keys = [k for k in self.model.state_dict() if k.startswith("projector.")] if stage1 else None
        state = full_state(self.model, keys)
        trainer = self._trainer
        if trainer is not None and not trainer.is_global_zero:
            return
        if stage1:
            projector = {k.removeprefix("projector."): v for k, v in state.items()}
            if path.suffix == ".bin":  # the original stage-1 file
                with writing(path):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    torch.save({"model.mm_projector." + k: v for k, v in projector.items()}, path)
            else:
                save_state(projector, path)
        elif path.suffix == ".safetensors":
            save_state(state, path)
        else:
            save_llava(path, self.cfg, state, self.hparams.tokenizer, self._compute_dtype(),
                       self.hparams.image_aspect_ratio)


class LanguageModule(_AdamWCosine):
    """Toy stage 0b: a LLaMA language model trained on the world's text-only chats (stands in for Vicuna)."""

    def __init__(
        self,
        llm: LlamaConfig | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        save_to: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_optimizer_options("LanguageModule", lr, weight_decay, warmup_ratio)
        self.llm = Llama(llm or llava_preset("toy").llm)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.llm(batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = causal_lm_loss(logits, batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def on_train_end(self) -> None:
        if self.hparams.save_to and self.trainer.is_global_zero:
            save_weights(self.llm, self.hparams.save_to)


class ClipModule(_AdamWCosine):
    """Toy stage 0a: a tiny CLIP trained contrastively with open_clip's ClipLoss (stands in for CLIP ViT-L/14).

    The text tower uses our BPE tokenizer; it pools at the EOS token (`pool_type="eos"`), because open_clip's
    default argmax pooling assumes EOT is the largest id of its own tokenizer.
    """

    def __init__(
        self,
        vision: VisionConfig | None = None,
        vocab_size: int = 1024,
        eos_id: int = 2,
        pad_id: int = 3,
        context_length: int = 64,
        text_width: int = 128,
        text_layers: int = 2,
        text_heads: int = 4,
        lr: float = 5e-4,  # at 2e-3 ClipLoss can stay on its ln(batch) plateau (see ToyConfig.clip)
        weight_decay: float = 0.1,
        warmup_ratio: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.98),
        save_vision_to: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_optimizer_options("ClipModule", lr, weight_decay, warmup_ratio)
        vision = vision or llava_preset("toy").vision
        text_cfg = CLIPTextCfg(context_length=context_length, vocab_size=vocab_size, width=text_width,
                               heads=text_heads, layers=text_layers, pool_type="eos", eos_id=eos_id, pad_id=pad_id)
        self.clip = open_clip.CLIP(vision.embed_dim, vision.open_clip_cfg(), text_cfg,
                                   quick_gelu=vision.quick_gelu, output_dict=True)
        self.loss_fn = open_clip.ClipLoss()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, texts = batch
        out = self.clip(images, texts)
        loss = self.loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def on_train_batch_end(self, *args) -> None:
        with torch.no_grad():  # CLIP clamps its temperature so logits stay <= 100
            self.clip.logit_scale.clamp_(0, math.log(100))

    def on_train_end(self) -> None:
        if self.hparams.save_vision_to and self.trainer.is_global_zero:
            # LLaVA's VisionTower has no CLIP output projection `proj` (it never uses it), so it is not saved
            save_weights(self.clip.visual, self.hparams.save_vision_to, exclude=("proj",))


class LossHistory(L.Callback):
    """Records the training loss of every optimiser step (for loss curves and reports)."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.steps.append(trainer.global_step)
        self.losses.append(float(loss.detach()))


class StepLosses(L.Callback):
    """Appends every training batch's loss on every rank to a JSON-lines file (rank 0 writes), one line per batch:
    {"step": optimiser steps before it, "batch": batch index in the epoch, "losses": [rank 0, rank 1, ...]}.

    For comparing runs batch by batch: a resumed run against an uninterrupted one, a sharded run against one
    process (the tests do both).
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._step = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach().float().reshape(1)
        loss = loss * trainer.accumulate_grad_batches  # Lightning hands over the loss divided by it
        losses = trainer.strategy.all_gather(loss).flatten().tolist() if trainer.world_size > 1 else loss.tolist()
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"step": self._step, "batch": batch_idx, "losses": losses}) + "\n")
