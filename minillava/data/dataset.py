"""Datasets and Lightning DataModules over LLaVA JSON: instruction data, text-only chats, image-caption pairs.

Every record is tokenized when the data is set up, so a bad record (wrong roles, missing image, too long, ...)
stops the run before training starts, with an error naming the record and the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from open_clip import image_transform
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from ..constants import IGNORE_INDEX, IMAGE_TOKEN
from ..conversation import TEMPLATES, ConversationError, Example, pad_batch, tokenize_turns
from ..tokenizer import load_tokenizer
from .context import caption_lines
from .validate import load_llava_json

# OpenAI CLIP's pixel statistics; our toy tower is trained with the same normalisation
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_transform(image_size: int):
    """PIL image -> normalised (3, H, W) tensor: resize the short side, centre crop, normalise (CLIP eval)."""
    return image_transform(image_size, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)


def load_image(folder: Path, name: str, record: str, transform) -> torch.Tensor:
    path = folder / name
    try:
        with Image.open(path) as im:
            return transform(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"record {record}: cannot read image {path}: {exc}") from None


class ImageCache:
    """Decoded, transformed images kept in memory after their first use (`enabled=False`: always read from disk).

    Worth it when every image fits in memory and is read many times, as in the toy world (6000 images of
    3x32x32 floats are 74 MB, and re-decoding PNGs costs more than a toy training step's compute); not for COCO.
    """

    def __init__(self, folder: Path, transform, enabled: bool) -> None:
        self.folder, self.transform, self.enabled = folder, transform, enabled
        self.images: dict[str, torch.Tensor] = {}

    def get(self, name: str, record: str) -> torch.Tensor:
        if not self.enabled:
            return load_image(self.folder, name, record, self.transform)
        if name not in self.images:
            self.images[name] = load_image(self.folder, name, record, self.transform)
        return self.images[name]


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
    ) -> None:
        self.json_path = Path(json_path)
        self.image_folder = Path(image_folder) if image_folder else None
        self.images = ImageCache(self.image_folder, clip_transform(image_size), cache_images)
        records = load_llava_json(self.json_path)[:limit]
        self.examples: list[Example] = []
        self.pad_id = tokenizer.pad_token_id
        template_ = TEMPLATES[template]
        for rec in records:
            name = f"{rec['id']} of {self.json_path}"
            ex = tokenize_turns(record_turns(rec), tokenizer, template_, num_image_tokens, max_len, record=name)
            if ex.n_images != (1 if "image" in rec else 0):
                raise ConversationError(f"record {name}: {ex.n_images} <image> tokens after tokenization")
            if "image" in rec:
                if self.image_folder is None:
                    raise ConversationError(f"record {name} has an image but no image folder was given")
                if not (self.image_folder / rec["image"]).is_file():
                    raise FileNotFoundError(f"record {name}: image {self.image_folder / rec['image']} not found")
            if supervise == "all":
                ex.labels = torch.where(ex.input_ids == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                                        IGNORE_INDEX, ex.input_ids)
            ex.meta = {"id": rec["id"], "image": rec.get("image")}
            self.examples.append(ex)

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


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar length, so little compute goes to padding (LLaVA's `group_by_length`).

    Each epoch: shuffle, cut into mega-batches of `group` batches, sort each mega-batch by length, cut it into
    batches, and shuffle the order of all batches. Seeded by (seed, epoch), so runs are reproducible.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, group: int = 32, drop_last: bool = True):
        self.lengths, self.batch_size, self.seed, self.group, self.drop_last = lengths, batch_size, seed, group, drop_last
        self.epoch = 0

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        mega = self.batch_size * self.group
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        order = torch.randperm(len(batches), generator=g).tolist()
        rank, world = _rank_and_world()
        for i in order[rank : len(order) - len(order) % world : world]:  # each process its own share
            yield batches[i]

    def __len__(self) -> int:
        n = len(self.lengths)
        batches = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return batches // _rank_and_world()[1]


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class LlavaDataModule(L.LightningDataModule):
    """Train (and optional validation) LLaVA JSON files with an image folder, for stage 1, stage 2 or text-only."""

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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_set: LlavaDataset | None = None
        self.val_set: LlavaDataset | None = None

    def _dataset(self, path: str) -> LlavaDataset:
        h = self.hparams
        tok = load_tokenizer(h.tokenizer)
        return LlavaDataset(path, h.image_folder, tok, h.template, h.num_image_tokens, h.image_size, h.max_len,
                            h.supervise, h.limit, h.cache_images)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset(self.hparams.train_json)
        if self.hparams.val_json and self.val_set is None:
            self.val_set = self._dataset(self.hparams.val_json)

    def train_dataloader(self) -> DataLoader:
        ds, h = self.train_set, self.hparams
        if h.group_by_length:
            lengths = [len(ex.input_ids) for ex in ds.examples]
            sampler = LengthGroupedBatchSampler(lengths, h.batch_size, seed=h.seed,
                                                drop_last=len(ds) > h.batch_size)
            return DataLoader(ds, batch_sampler=sampler, collate_fn=ds.collate, num_workers=h.num_workers)
        return DataLoader(ds, batch_size=h.batch_size, shuffle=True, collate_fn=ds.collate,
                          num_workers=h.num_workers, drop_last=len(ds) > h.batch_size)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, collate_fn=self.val_set.collate,
                          num_workers=self.hparams.num_workers)


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
