"""Datasets and Lightning DataModules over LLaVA JSON: instruction data, text-only chats, image-caption pairs.

Every record is tokenized and every image checked (`images.check_image`: missing, empty, not an image, corrupt,
truncated, over Pillow's decompression limit) when the data is set up, so a bad record stops the run before training
starts, with an error naming the record and the file; `bad_images="skip"` leaves the records of bad images out
instead, and warns with their count and list. Options are checked when the data module is made (`check_options`).

The original release files are read unchanged: stage 1's `blip_laion_cc_sbu_558k.json` and CC-595K `chat.json`
(image paths relative to their image folder), stage 2's `llava_instruct_158k.json` (relative to COCO train2017)
and LLaVA-1.5's `llava_v1_5_mix665k.json` (relative to the data root; ShareGPT rows have no image). The options
that differ between the paper's recipe and LLaVA-1.5's: `image_aspect_ratio` ("crop" / "pad", images.py),
`image_first` (conversation.py), `truncation` and the template.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ..constants import IGNORE_INDEX, IMAGE_TOKEN
from ..conversation import ConversationError, Example, pad_batch, template_named, tokenize_turns
from ..tokenizer import load_tokenizer
from .context import caption_lines
from .images import (ASPECT_RATIOS, CLIP_MEAN, CLIP_STD, BadImageError, ImageCache,  # noqa: F401  (re-exported)
                     check_image, clip_transform, load_image)
from .sampler import ModalityLengthGroupedBatchSampler
from .validate import load_llava_json

log = logging.getLogger(__name__)
TRUNCATION = ("error", "truncate")
SUPERVISE = ("answers", "all")
BAD_IMAGES = ("error", "skip")


def check_options(*, template: str = "v0", supervise: str = "answers", image_aspect_ratio: str = "crop",
                  truncation: str = "error", bad_images: str = "error", num_image_tokens: int = 1,
                  image_size: int = 1, max_len: int = 1, limit: int | None = None, batch_size: int = 1,
                  num_workers: int = 0) -> None:
    """Refuse a misspelled or out-of-range option at construction, naming it and what it may be."""
    template_named(template)
    for name, value, allowed in (("supervise", supervise, SUPERVISE),
                                 ("image_aspect_ratio", image_aspect_ratio, ASPECT_RATIOS),
                                 ("truncation", truncation, TRUNCATION), ("bad_images", bad_images, BAD_IMAGES)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    for name, value, least in (("num_image_tokens", num_image_tokens, 1), ("image_size", image_size, 1),
                               ("max_len", max_len, 1), ("batch_size", batch_size, 1),
                               ("num_workers", num_workers, 0), ("limit", limit, 1)):
        if name == "limit" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            extra = " or None" if name == "limit" else ""
            raise ValueError(f"{name} must be an integer >= {least}{extra}, got {value!r}")


def select_kinds(records: list[dict], kinds: Sequence[str], path: str | Path) -> list[dict]:
    """The records whose "kind" field (the toy data's record kinds: caption, conv, detail, complex, vqa) is one of
    `kinds`, in their order. A record without a kind, or a selection that leaves nothing, is an error that names it:
    a filter must never empty a data set silently."""
    if isinstance(kinds, str) or not kinds:
        raise ValueError(f"kinds must be a non-empty list of record kinds, got {kinds!r}")
    for rec in records:
        if "kind" not in rec:
            raise ValueError(f"record {rec.get('id', '?')} of {path} has no \"kind\" field, so kinds={list(kinds)} "
                             f"cannot select it")
    kept = [rec for rec in records if rec["kind"] in kinds]
    if not kept:
        found = sorted({str(rec["kind"]) for rec in records})
        raise ValueError(f"{path}: no record of kinds {list(kinds)}; its records are of kinds {found}")
    return kept


def record_turns(rec: dict) -> list[tuple[str, str]]:
    return [(turn["from"], turn["value"]) for turn in rec["conversations"]]


class LlavaDataset(Dataset):
    """LLaVA JSON records -> tokenized examples with their image (or none for text-only records)."""

    def __init__(
        self,
        json_path: str | Path,
        image_folder: str | Path | None,
        tokenizer,
        template: str = "v0",
        num_image_tokens: int = 256,
        image_size: int = 224,
        max_len: int = 2048,
        supervise: str = "answers",  # "answers": assistant turns only (LLaVA); "all": every token (LM pretraining)
        limit: int | None = None,
        cache_images: bool = False,  # keep decoded images in memory (see ImageCache)
        image_aspect_ratio: str = "crop",  # "crop": CLIP's centre crop (paper); "pad": pad to square (LLaVA-1.5)
        image_first: bool = False,  # "<image>\n" opens the first turn (LLaVA-1.5); off: the data's side (paper)
        truncation: str = "error",  # longer than max_len: "error", or "truncate" as the official code does
        bad_images: str = "error",  # a missing/corrupt/undecodable image: "error", or "skip" its record (listed)
        check_images: bool = True,  # decode-check every image at set-up; False: only that each file exists
        kinds: Sequence[str] | None = None,  # only the records whose "kind" is one of these (None: every record)
    ) -> None:
        check_options(template=template, supervise=supervise, image_aspect_ratio=image_aspect_ratio,
                      truncation=truncation, bad_images=bad_images, num_image_tokens=num_image_tokens,
                      image_size=image_size, max_len=max_len, limit=limit)
        self.json_path = Path(json_path)
        self.image_folder = Path(image_folder) if image_folder else None
        self.images = ImageCache(self.image_folder, clip_transform(image_size, image_aspect_ratio), cache_images)
        records = load_llava_json(self.json_path)
        if not records:
            raise ValueError(f"{self.json_path} holds no records: nothing to train on")
        if kinds is not None:
            records = select_kinds(records, kinds, self.json_path)
        records = records[:limit]
        self.examples: list[Example] = []
        self.skipped: list[tuple[str, str]] = []  # (record id, why) of records left out for a bad image
        checked: dict[str, str | None] = {}  # image name -> None if good, else the error (shared images)
        self.pad_id = tokenizer.pad_token_id
        template_ = replace(template_named(template), image_first=image_first)
        for rec in records:
            name = f"{rec['id']} of {self.json_path}"
            ex = tokenize_turns(record_turns(rec), tokenizer, template_, num_image_tokens, max_len, record=name,
                                truncate=truncation == "truncate")
            if ex.n_images != (1 if "image" in rec else 0):
                raise ConversationError(f"record {name}: {ex.n_images} <image> tokens after tokenization")
            if "image" in rec:
                if self.image_folder is None:
                    raise ConversationError(f"record {name} has an image but no image folder was given")
                if rec["image"] not in checked:
                    try:
                        if check_images:
                            check_image(self.image_folder / rec["image"], name)
                        elif not (self.image_folder / rec["image"]).is_file():
                            raise BadImageError(f"record {name}: image {self.image_folder / rec['image']} not found")
                        checked[rec["image"]] = None
                    except BadImageError as exc:
                        if bad_images == "error":
                            raise
                        checked[rec["image"]] = str(exc)
                if checked[rec["image"]] is not None:
                    self.skipped.append((str(rec["id"]), checked[rec["image"]]))
                    continue
            if supervise == "all":
                ex.labels = torch.where(ex.input_ids == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                                        IGNORE_INDEX, ex.input_ids)
            ex.meta = {"id": rec["id"], "image": rec.get("image")}
            self.examples.append(ex)
        if self.skipped:
            lines = "\n".join(f"  {why}" for _, why in self.skipped)
            msg = (f"{self.json_path}: skipped {len(self.skipped)} of {len(records)} records for bad images "
                   f"(bad_images='skip'):\n{lines}")
            log.warning(msg)
            warnings.warn(msg, stacklevel=2)
        if not self.examples:
            raise ValueError(f"{self.json_path}: no records left to train on ({len(records)} read"
                             f"{f', limit={limit}' if limit is not None else ''}, {len(self.skipped)} skipped for "
                             f"bad images)")
        self.n_truncated = sum(ex.truncated > 0 for ex in self.examples)
        if self.n_truncated:
            cut = sum(ex.truncated for ex in self.examples)
            log.warning("%s: truncated %d of %d records to max_len=%d (%d tokens cut)", self.json_path,
                        self.n_truncated, len(self.examples), max_len, cut)

    @property
    def lengths(self) -> list[int]:
        """Tokens per example, image placeholders included: what a batch pads to."""
        return [len(ex.input_ids) for ex in self.examples]

    @property
    def has_image(self) -> list[bool]:
        return [ex.meta["image"] is not None for ex in self.examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[Example, torch.Tensor | None]:
        ex = self.examples[i]
        image = None
        if ex.meta["image"] is not None:
            image = self.images.get(ex.meta["image"], f"{ex.meta['id']} of {self.json_path}")
        return ex, image

    def collate(self, items: list[tuple[Example, torch.Tensor | None]]) -> dict[str, torch.Tensor]:
        batch = pad_batch([ex for ex, _ in items], self.pad_id, side="right")
        images = [img for _, img in items if img is not None]
        if images:
            batch["pixel_values"] = torch.stack(images)  # (m, c, H, W), in placeholder order
        return batch


class LlavaDataModule(L.LightningDataModule):
    """Train (and optional validation) LLaVA JSON files with an image folder, for stage 1, stage 2 or text-only.

    With `group_by_length`, training batches come from `ModalityLengthGroupedBatchSampler` (sampler.py): one
    modality and similar length per batch, sharded over ranks. On a resumed run the trainer's epoch and the
    batches it already ran in that epoch are passed on, so the run continues where it stopped.
    """

    def __init__(
        self,
        train_json: str,
        tokenizer: str,
        image_folder: str | None = None,
        val_json: str | None = None,
        template: str = "v0",
        num_image_tokens: int = 256,
        image_size: int = 224,
        max_len: int = 2048,
        supervise: str = "answers",
        batch_size: int = 16,
        group_by_length: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        limit: int | None = None,
        cache_images: bool = False,
        image_aspect_ratio: str = "crop",
        image_first: bool = False,
        truncation: str = "error",
        bad_images: str = "error",  # "error": a bad image stops set-up, named; "skip": its records are left out
        # decode-check every image at set-up (about 3 ms per COCO-sized JPEG here: minutes for 158K images, on
        # every rank); False checks only that each file exists, and a bad image then fails when loaded, named
        check_images: bool = True,
        kinds: list[str] | None = None,  # train on the records of these "kind"s only (None: every record)
    ) -> None:
        super().__init__()
        check_options(template=template, supervise=supervise, image_aspect_ratio=image_aspect_ratio,
                      truncation=truncation, bad_images=bad_images, num_image_tokens=num_image_tokens,
                      image_size=image_size, max_len=max_len, limit=limit, batch_size=batch_size,
                      num_workers=num_workers)
        self.save_hyperparameters()
        self.train_set: LlavaDataset | None = None
        self.val_set: LlavaDataset | None = None

    def _dataset(self, path: str) -> LlavaDataset:
        h = self.hparams
        tok = load_tokenizer(h.tokenizer)
        return LlavaDataset(path, h.image_folder, tok, h.template, h.num_image_tokens, h.image_size, h.max_len,
                            h.supervise, h.limit, h.cache_images, h.image_aspect_ratio, h.image_first, h.truncation,
                            h.bad_images, h.check_images, h.kinds)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset(self.hparams.train_json)
        if self.hparams.val_json and self.val_set is None:
            self.val_set = self._dataset(self.hparams.val_json)

    def train_dataloader(self) -> DataLoader:
        ds, h = self.train_set, self.hparams
        world = getattr(self.trainer, "world_size", 1)
        accumulate = _attr(self.trainer, "accumulate_grad_batches", 1)
        drop_last = len(ds) >= h.batch_size * world * accumulate  # a tiny data set still yields its one short step
        if h.group_by_length:
            # built inside this hook, so Lightning can re-create it around its DistributedSampler (sampler.py)
            sampler = ModalityLengthGroupedBatchSampler(
                None, h.batch_size, drop_last, lengths=ds.lengths, has_image=ds.has_image, seed=h.seed,
                epoch=self._epoch(), start_batch=self._batches_done_in_epoch(),
                accumulate=accumulate)
            return DataLoader(ds, batch_sampler=sampler, collate_fn=ds.collate, num_workers=h.num_workers)
        return DataLoader(ds, batch_size=h.batch_size, shuffle=True, collate_fn=ds.collate,
                          num_workers=h.num_workers, drop_last=drop_last)

    def _epoch(self) -> int:
        """The epoch the trainer is in or about to begin: the number its fit loop passes to `set_epoch`
        (`epoch_progress.current.processed`). Not `trainer.current_epoch`, the completed epochs, which is one
        behind after a checkpoint written at an epoch's end; and the sampler's first pass can start before
        Lightning calls `set_epoch` (with DataLoader workers, the iterator draws batches as soon as it is made)."""
        return _attr(self.trainer, "fit_loop.epoch_progress.current.processed")

    def _batches_done_in_epoch(self) -> int:
        """Training batches this rank already ran in that epoch: 0 unless resuming from a checkpoint mid-epoch.

        Counted only while the loop restarts from a checkpoint inside a started epoch: after a checkpoint at an
        epoch's end, or when `reload_dataloaders_every_n_epochs` asks again before an epoch starts, the batch
        progress still holds the previous epoch's count. `processed`, not `completed`: a checkpoint saved in
        `on_train_batch_end` (ModelCheckpoint's `every_n_train_steps`) holds completed = processed - 1, and
        Lightning adds the missing one only after it has asked for this dataloader. All as Lightning 2.6 does;
        tests/test_dataset.py resumes real runs from each kind of checkpoint.
        """
        fit = _attr(self.trainer, "fit_loop", None)
        epochs = _attr(fit, "epoch_progress.current", None)
        if not _attr(fit, "epoch_loop.restarting", False) or _attr(epochs, "started") <= _attr(epochs, "processed"):
            return 0
        return _attr(fit, "epoch_loop.batch_progress.current.processed")

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, collate_fn=self.val_set.collate,
                          num_workers=self.hparams.num_workers)


def _attr(obj: object, path: str, default=0):
    """obj.a.b.c for path "a.b.c", or `default` where a link is missing (no trainer attached, ...)."""
    for name in path.split("."):
        obj = getattr(obj, name, None)
    return default if obj is None else obj


class CaptionDataset(Dataset):
    """Image-caption pairs for contrastive CLIP training (toy stage 0)."""

    def __init__(self, contexts_json: str | Path, image_folder: str | Path, tokenizer, image_size: int,
                 context_length: int = 64, split: str = "train", cache_images: bool = False) -> None:
        contexts: dict[str, str] = json.loads(Path(contexts_json).read_text())
        self.items = [(sid, caption_lines(ctx)) for sid, ctx in contexts.items()
                      if sid.startswith(split)]
        if not self.items:
            raise ValueError(f"{contexts_json} has no scenes of split {split!r}")
        self.image_folder = Path(image_folder)
        self.tokenizer = tokenizer
        self.images = ImageCache(self.image_folder, clip_transform(image_size), cache_images)
        self.context_length = context_length

    def __len__(self) -> int:
        return len(self.items)

    def encode_text(self, text: str) -> torch.Tensor:
        """Caption -> (context_length,) ids ending in EOS (the text tower pools at EOS), padded with PAD."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.context_length - 1]
        ids = ids + [self.tokenizer.eos_token_id]
        return torch.tensor(ids + [self.tokenizer.pad_token_id] * (self.context_length - len(ids)))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        sid, caps = self.items[i]
        image = self.images.get(f"{sid}.png", sid)
        # all captions together: one caption alone ("Three shapes on a plain background.") is shared by many
        # scenes, which leaves a contrastive loss little to learn from; CLIP's context window truncates the rest
        return image, self.encode_text(" ".join(caps))


class CaptionDataModule(L.LightningDataModule):
    def __init__(self, contexts_json: str, image_folder: str, tokenizer: str, image_size: int = 32,
                 context_length: int = 64, batch_size: int = 128, num_workers: int = 0,
                 cache_images: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_set: CaptionDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        if self.train_set is None:
            self.train_set = CaptionDataset(h.contexts_json, h.image_folder, load_tokenizer(h.tokenizer),
                                            h.image_size, h.context_length, cache_images=h.cache_images)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.hparams.num_workers)
