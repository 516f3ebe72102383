"""Your own data: continue training a released LLaVA, fully or with LoRA, and merge / export the result.

- `read_released(folder)` (`minillava.released`): what a released LLaVA folder says about itself, without reading
  a weight; `load_released` reads the weights.
- `FinetuneModule`: a `LlavaModule` that starts from such a folder. Full fine-tuning trains the projector and the
  LLM (the tower stays frozen, as in stage 2); `lora_r: N` adds LoRA adapters (peft) to every linear layer of the
  LLM but lm_head, as the official `--lora_enable` does, and trains them at `lr` and the whole projector at
  `projector_lr` (the official `--mm_projector_lr`). `quantize: 4bit` puts a 4-bit NF4 base under the adapters
  (QLoRA; a CUDA GPU and bitsandbytes). Saves: full -> an original-LLaVA folder; LoRA -> the adapters and the
  projector alone (`minillava.lora.save_adapters`).
- `FinetuneDataModule`: a `LlavaDataModule` whose template, image size, visual-token count, preprocessing and
  tokenizer come from the same folder.
- `merge_adapters` / `minillava merge`: base + adapters -> one model, written in the original layout and/or
  transformers' (`export_hf_llava`), which `minillava chat` and `generate` run.

The recipe (haotian-liu/LLaVA scripts/v1_5/finetune_task.sh and finetune_task_lora.sh) is in the packaged configs
`paper/llava-1.5-{7b,13b}-task[-lora]`; docs/custom_data.md walks through it.

The LoRA mechanics live in `minillava.lora`.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import torch

from .checkpoints import save_llava
from .checkpoints.files import PathLike
from .data.dataset import LlavaDataModule
from .distributed import full_state, load_full_state, shard_llava
from .lora import (
    LoraSettings,
    adapter_keys,
    add_lora,
    check_qlora,
    load_adapters,
    merge_lora,
    projector_keys,
    quantize_llm,
    read_adapter_config,
    save_adapters,
)
from .model import Llava, override
from .released import load_released, placeholder_id, read_released, write_template
from .tokenizer import load_tokenizer
from .training import LlavaModule, _AdamWCosine, apply_stage, check_optimizer_options

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# training


class FinetuneModule(LlavaModule):
    """Continue training a released LLaVA (`init_from`: an original-LLaVA or a transformers Llava folder) on your
    data: fully (projector + LLM, as stage 2) or, with `lora_r`, LoRA adapters on the LLM + the whole projector.

    Tower, projector kind, LLM shape and `<image>` id come from the folder's config; the tokenizer from the folder
    unless `tokenizer` names another. `save_to` (written when training ends): full -> an original-LLaVA folder;
    LoRA -> an adapter folder (`minillava merge` turns it into a model).
    """

    def __init__(
        self,
        init_from: str,
        lr: float = 2e-5,
        projector_lr: float | None = None,  # the official --mm_projector_lr; None: lr
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        betas: tuple[float, float] = (0.9, 0.999),
        lora_r: int | None = None,  # None: full fine-tuning; N >= 1: LoRA of rank N
        lora_alpha: float = 256,
        lora_dropout: float = 0.05,
        lora_targets: list[str] | None = None,  # None: every linear layer of the LLM but lm_head (official)
        quantize: str | None = None,  # "4bit": QLoRA (a CUDA GPU and bitsandbytes)
        vision_weights: str | None = None,  # a transformers CLIP folder, if the tower is not with the checkpoint
        tokenizer: str | None = None,  # default: the checkpoint folder's own
        template: str | None = None,  # default: the checkpoint's (written into what is saved)
        save_to: str | None = None,
        activation_checkpointing: bool = False,
        overrides: dict | None = None,  # switches of our implementation only, e.g. {"llm.pack_tokens": false}
    ) -> None:
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        _AdamWCosine.__init__(self)  # LlavaModule's own __init__ builds its config from a preset; ours is read
        self.save_hyperparameters(args)
        check_optimizer_options("FinetuneModule", lr, weight_decay, warmup_ratio)
        if projector_lr is not None:
            check_optimizer_options("FinetuneModule (projector_lr)", projector_lr, weight_decay, warmup_ratio)
        self.lora = (LoraSettings(r=lora_r, alpha=lora_alpha, dropout=lora_dropout, targets=list(lora_targets or []))
                     if lora_r is not None else None)
        if quantize is not None and self.lora is None:
            raise ValueError("quantize='4bit' is QLoRA: it needs LoRA adapters (set lora_r), since 4-bit weights "
                             "cannot be trained directly")
        check_qlora(quantize)
        if self.lora is not None:
            from .lora import require_peft

            require_peft()
        self.released = read_released(init_from, vision_weights, template)
        tok = tokenizer if tokenizer is not None else self.released.tokenizer
        if tok is None:
            raise ValueError(f"init_from {init_from}: the folder holds no tokenizer; pass tokenizer=")
        self.tokenizer_path = str(tok)
        self.cfg = override(replace(self.released.cfg), overrides)
        self.cfg.image_token_id = placeholder_id(self.released, tok)

    # -- building

    def _build(self, with_lora: bool = True) -> Llava:
        """The released weights on the CPU in fp32, with the run's trainable set (and adapters)."""
        h = self.hparams
        model = load_released(self.released)
        model.cfg = self.cfg
        model.float()
        if self.lora is not None and with_lora:
            if h.quantize:
                from .lora import llm_linear_names

                quantize_llm(model, self.lora.targets or llm_linear_names(model))
            add_lora(model, self.lora)
        else:
            apply_stage(model, 2)
        return model

    def configure_model(self) -> None:
        if "model" in self._modules:
            return
        h = self.hparams
        mesh = self._data_parallel_mesh()
        if mesh is None:
            model = self._build()
            if self.lora is not None and self._compute_dtype() == torch.bfloat16 and not h.quantize:
                for p in model.parameters():  # the frozen base in bf16, as the official LoRA runs (model.to(bf16))
                    if not p.requires_grad:
                        p.data = p.data.to(torch.bfloat16)
        else:
            if h.quantize:
                raise ValueError("quantize='4bit' (QLoRA) cannot be sharded with FSDP2 here: run it on one GPU "
                                 "(trainer.strategy: auto, devices: 1)")
            with torch.device("meta"):
                model = Llava(self.cfg)
            if self.lora is not None:
                add_lora(model, self.lora)
            else:
                apply_stage(model, 2)
            shard_llava(model, mesh, param_dtype=self._compute_dtype())
            state = self._build().state_dict() if mesh.get_rank() == 0 else {}
            load_full_state(model, state, self.trainer.strategy.root_device)
        model.llm.activation_checkpointing = h.activation_checkpointing
        self.model = model
        self.train(self.training)

    def configure_optimizers(self):
        """AdamW in two groups, as LLaVATrainer.create_optimizer with mm_projector_lr: the projector at
        `projector_lr`, everything else that trains (the LLM, or its adapters) at `lr`; cosine with warmup."""
        from .training import cosine_with_warmup

        h = self.hparams
        projector = [p for n, p in self.model.named_parameters() if n.startswith("projector.") and p.requires_grad]
        rest = [p for n, p in self.model.named_parameters() if not n.startswith("projector.") and p.requires_grad]
        groups = [{"params": rest, "lr": h.lr}, {"params": projector, "lr": h.projector_lr or h.lr}]
        groups = [g for g in groups if g["params"]]
        fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
        opt = torch.optim.AdamW(groups, lr=h.lr, weight_decay=h.weight_decay, betas=tuple(h.betas), fused=fused)
        sched = cosine_with_warmup(opt, int(self.trainer.estimated_stepping_batches), h.warmup_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- saving

    def save(self, path: str | Path) -> None:
        """LoRA: the adapters and the projector alone (an adapter folder); full: an original-LLaVA folder. Sharded,
        every rank takes part in gathering, and rank 0 writes."""
        h = self.hparams
        path = Path(path)
        if self.lora is not None:
            state = full_state(self.model, adapter_keys(self.model) + projector_keys(self.model))
        else:
            state = full_state(self.model)
        trainer = self._trainer
        if trainer is not None and not trainer.is_global_zero:
            return
        if self.lora is not None:
            extra = {"template": self.released.template, "image_aspect_ratio": self.released.image_aspect_ratio,
                     "vision_weights": h.vision_weights, "tokenizer": self.tokenizer_path, "quantize": h.quantize}
            save_adapters(path, state, self.lora, str(self.released.path), extra)
        else:
            save_llava(path, self.cfg, state, self.tokenizer_path, self._compute_dtype(),
                       self.released.image_aspect_ratio)
            write_template(path, self.released.template)


class FinetuneDataModule(LlavaDataModule):
    """`LlavaDataModule` for continuing from a released LLaVA: template, visual tokens, image size, preprocessing,
    `<image>` placement and tokenizer are the checkpoint's (`init_from`), not declared again. Any of them given
    here overrides it, with a warning when it differs."""

    def __init__(
        self,
        init_from: str,
        train_json: str,
        image_folder: str | None = None,
        val_json: str | None = None,
        tokenizer: str | None = None,
        template: str | None = None,
        image_aspect_ratio: str | None = None,
        image_first: bool | None = None,
        max_len: int = 2048,
        supervise: str = "answers",
        batch_size: int = 16,
        group_by_length: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        limit: int | None = None,
        cache_images: bool = False,
        truncation: str = "error",
        bad_images: str = "error",
        check_images: bool = True,
        vision_weights: str | None = None,
        kinds: list[str] | None = None,
    ) -> None:
        released = read_released(init_from, vision_weights, template)
        tok = tokenizer if tokenizer is not None else released.tokenizer
        if tok is None:
            raise ValueError(f"init_from {init_from}: the folder holds no tokenizer; pass tokenizer=")
        aspect = image_aspect_ratio or released.data_aspect_ratio
        if image_aspect_ratio is not None and image_aspect_ratio != released.data_aspect_ratio:
            log.warning("image_aspect_ratio %s, but %s was trained with %s", image_aspect_ratio, init_from,
                        released.data_aspect_ratio)
        first = released.template == "v1" if image_first is None else image_first
        resolved = dict(train_json=train_json, tokenizer=str(tok), image_folder=image_folder, val_json=val_json,
                        template=released.template, num_image_tokens=released.cfg.num_image_tokens,
                        image_size=released.cfg.vision.image_size, max_len=max_len, supervise=supervise,
                        batch_size=batch_size, group_by_length=group_by_length, seed=seed, num_workers=num_workers,
                        limit=limit, cache_images=cache_images, image_aspect_ratio=aspect, image_first=first,
                        truncation=truncation, bad_images=bad_images, check_images=check_images, kinds=kinds)
        super().__init__(**resolved)
        self.hparams.update(resolved)  # what the datasets are built from (save_hyperparameters saw both frames)
        self.released = released


# ---------------------------------------------------------------------------------------------------------------
# merge and export


def merge_adapters(adapters: PathLike, out: PathLike | None = None, hf_out: PathLike | None = None,
                   base: PathLike | None = None, vision_weights: PathLike | None = None,
                   dtype: torch.dtype | None = None) -> Llava:
    """Base + adapters -> one model (adapters folded into the base weights). `out`: an original-LLaVA folder;
    `hf_out`: a transformers Llava folder (mlp2x_gelu projectors). The base is the folder the adapters were
    trained from (adapter_config.json's base_model) unless `base` names another copy of it."""
    adapters = Path(adapters)
    _, config = read_adapter_config(adapters)
    base = base if base is not None else config.get("base_model")
    if base is None:
        raise ValueError(f"{adapters}: adapter_config.json names no base_model; pass base=")
    vision = vision_weights if vision_weights is not None else config.get("vision_weights")
    released = read_released(base, vision, config.get("template"))
    tokenizer = config.get("tokenizer") or released.tokenizer
    if tokenizer is not None and not Path(tokenizer).is_dir():
        tokenizer = released.tokenizer
    model = load_released(released).float()
    load_adapters(model, adapters)
    merge_lora(model)
    model.eval()
    if out is not None:
        save_llava(out, model.cfg, model.state_dict(), tokenizer, dtype, released.image_aspect_ratio)
        write_template(Path(out), released.template)
    if hf_out is not None:
        from .checkpoints import export_hf_llava

        export_hf_llava(model, hf_out, load_tokenizer(tokenizer) if tokenizer is not None else None)
        write_template(Path(hf_out), released.template)
    return model


def merge_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="minillava merge",
        description="Fold LoRA adapters (a folder FinetuneModule saved) into their base LLaVA and write the merged "
                    "model: --out in the original LLaVA layout, --hf-out as a transformers Llava folder (which "
                    "`minillava chat` reads; mlp2x_gelu projectors only).")
    parser.add_argument("adapters", help="the adapter folder (adapter_config.json + adapter_model.safetensors)")
    parser.add_argument("--out", help="write an original-LLaVA folder here")
    parser.add_argument("--hf-out", help="write a transformers LlavaForConditionalGeneration folder here")
    parser.add_argument("--base", help="the base checkpoint folder (default: the one in adapter_config.json)")
    parser.add_argument("--vision-weights", help="a transformers CLIP folder for the base's tower, if needed")
    parser.add_argument("--bf16", action="store_true", help="write bf16 weights (default: fp32)")
    args = parser.parse_args(argv)
    if args.out is None and args.hf_out is None:
        parser.error("give --out and/or --hf-out")
    try:
        merge_adapters(args.adapters, args.out, args.hf_out, args.base, args.vision_weights,
                       torch.bfloat16 if args.bf16 else None)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise SystemExit(f"minillava merge: {exc}") from None
    for name, value in (("original layout", args.out), ("transformers layout", args.hf_out)):
        if value:
            print(f"merged model ({name}): {value}")

