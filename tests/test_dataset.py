"""The original LLaVA release files, read unchanged and prepared as the official training code prepares them.

A miniature of each release file, in its exact shape, with real image files in the release's nested folders:
stage 1's blip_laion_cc_sbu_558k.json and CC-595K chat.json, stage 2's llava_instruct_158k.json (images in COCO
train2017) and LLaVA-1.5's llava_v1_5_mix665k.json (images under the data root; ShareGPT rows text-only).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.data import _replace_dunder_methods
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.data import _update_dataloader
from llama_tokenizer import tiny_llama_tokenizer
from PIL import Image
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from minillava.constants import IGNORE_INDEX
from minillava.conversation import TEMPLATES, ConversationError
from minillava.data.dataset import LlavaDataModule, LlavaDataset
from minillava.data.images import CLIP_MEAN, CLIP_STD, PAD_COLOUR
from minillava.data.sampler import ModalityLengthGroupedBatchSampler
from minillava.tokenizer import load_tokenizer

SHORT = "\nAnswer the question using a single word or phrase."

BLIP_558K = [
    {"id": "004539375", "image": "00453/004539375.jpg", "conversations": [
        {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
        {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"}]},
    {"id": "000000010", "image": "00000/000000010.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWrite a terse but informative summary of the picture."},
        {"from": "gpt", "value": "a grey watch with an army style strap"}]},
]
CC_595K = [
    {"id": "GCC_train_002582585", "image": "GCC_train_002582585.jpg", "conversations": [
        {"from": "human", "value": "Provide a brief description of the given image.\n<image>"},
        {"from": "gpt", "value": "olive oil is a healthy ingredient used liberally ."}]},
]
INSTRUCT_158K = [
    {"id": "000000033471", "image": "000000033471.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
    {"id": "000000052846", "image": "000000052846.jpg", "conversations": [
        {"from": "human", "value": "Where is the cat positioned in the image?\n<image>"},
        {"from": "gpt", "value": "The cat is positioned on top of the back of the couch."}]},
]
MIX_665K = [
    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": INSTRUCT_158K[0]["conversations"]},
    {"id": "000000052846", "image": "coco/train2017/000000052846.jpg",
     "conversations": INSTRUCT_158K[1]["conversations"]},
    {"id": "2354786", "image": "gqa/images/2354786.jpg", "conversations": [
        {"from": "human", "value": "<image>\nIs the sky dark?" + SHORT}, {"from": "gpt", "value": "Yes"},
        {"from": "human", "value": "What is on the white wall?" + SHORT}, {"from": "gpt", "value": "Pipe"}]},
    {"id": "140031996", "image": "ocr_vqa/images/140031996.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWho wrote this book?"}, {"from": "gpt", "value": "Steve Hurley"},
        {"from": "human", "value": "Is this a comics book?"}, {"from": "gpt", "value": "No"}]},
    {"id": "0a0bc91825468c45", "image": "textvqa/train_images/0a0bc91825468c45.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is the brand of this camera?\nReference OCR token: nous, les"
         + SHORT}, {"from": "gpt", "value": "dakota"}]},
    {"id": 2345, "image": "vg/VG_100K/2345.jpg", "conversations": [  # an integer id, as VG's
        {"from": "human", "value": "<image>\nPlease provide the bounding box coordinate of the region this "
         "sentence describes: a white cup."}, {"from": "gpt", "value": "[0.41, 0.31, 0.52, 0.76]"}]},
    {"id": "i6IyJda_0", "model": "", "conversations": [  # ShareGPT: text-only
        {"from": "human", "value": "Write a haiku about rain."}, {"from": "gpt", "value": "Soft rain on the roof"},
        {"from": "human", "value": "Another one."}, {"from": "gpt", "value": "Grey sky, wet street"}]},
    {"id": "Hm3Rk2B_0", "model": "", "conversations": [
        {"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi!"}]},
]


def _image(path: Path, size: tuple[int, int], colour: tuple[int, int, int], fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, colour)
    (im.quantize(4) if fmt == "PNG" else im).save(path, format=fmt)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> dict[str, Path]:
    """The release's files, folders as their download scripts lay them out; a tokenizer folder like Vicuna's."""
    root = tmp_path_factory.mktemp("release")
    files = {
        "558k": (root / "LLaVA-Pretrain" / "blip_laion_cc_sbu_558k.json", root / "LLaVA-Pretrain" / "images",
                 BLIP_558K),
        "595k": (root / "LLaVA-CC3M-Pretrain-595K" / "chat.json", root / "LLaVA-CC3M-Pretrain-595K" / "images",
                 CC_595K),
        "158k": (root / "LLaVA-Instruct-150K" / "llava_instruct_158k.json", root / "coco" / "train2017",
                 INSTRUCT_158K),
        "665k": (root / "LLaVA-Instruct-150K" / "llava_v1_5_mix665k.json", root, MIX_665K),
    }
    for i, (json_path, folder, records) in enumerate(files.values()):
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(records))
        for j, rec in enumerate(records):
            if "image" in rec and not (folder / rec["image"]).exists():
                # wide and tall photos; OCR-VQA's "jpg" files are not all JPEGs: one is a palette PNG here
                fmt = "PNG" if rec["image"].startswith("ocr_vqa") else "JPEG"
                _image(folder / rec["image"], (64, 40) if j % 2 else (30, 48), (40 * i, 200, 30 * j), fmt)
    out = {name: json_path for name, (json_path, _, _) in files.items()}
    out |= {f"{name} images": folder for name, (_, folder, _) in files.items()}
    out["tokenizer"] = tiny_llama_tokenizer(root / "vicuna")
    return out


def module(release, name: str, **kw) -> LlavaDataModule:
    kw = {"template": "v1", "num_image_tokens": 4, "image_size": 28, "batch_size": 2} | kw
    dm = LlavaDataModule(str(release[name]), str(release["tokenizer"]), str(release[f"{name} images"]), **kw)
    dm.setup("fit")
    return dm


def answers(rec: dict, template: str) -> str:
    """What the labels must hold: every answer with its stop marker (the answer's leading space in v0 / v1)."""
    stop = TEMPLATES[template].stop
    lead = "" if template == "plain" else " "
    return "".join(lead + t["value"] + stop for t in rec["conversations"][1::2])


@pytest.mark.parametrize("name,template", [("558k", "plain"), ("558k", "v0"), ("595k", "plain"), ("158k", "v0"),
                                           ("158k", "v1"), ("665k", "v1")])
def test_release_files_train_on_their_answers_only(release, name, template):
    dm = module(release, name, template=template)
    tok = load_tokenizer(release["tokenizer"])
    records = json.loads(release[name].read_text())
    assert len(dm.train_set) == len(records)
    image_id = tok.convert_tokens_to_ids("<image>")
    for rec, ex in zip(records, dm.train_set.examples):
        assert ex.meta["id"] == str(rec["id"]) and ex.n_images == ("image" in rec)
        assert int((ex.input_ids == image_id).sum()) == 4 * ("image" in rec)
        assert ex.input_ids[0] == tok.bos_token_id
        supervised = ex.input_ids[ex.labels != IGNORE_INDEX]
        assert tok.decode(supervised) == answers(rec, template).lstrip(" ")  # the decoder drops one lead space
        assert not (supervised == image_id).any()


@pytest.mark.parametrize("size", [224, 336])
@pytest.mark.parametrize("aspect", ["crop", "pad"])
def test_images_come_at_the_towers_size(release, size, aspect):
    ds = module(release, "665k", image_size=size, image_aspect_ratio=aspect).train_set
    for i, rec in enumerate(MIX_665K):
        _, image = ds[i]
        assert (image is None) == ("image" not in rec)
        assert image is None or image.shape == (3, size, size)
    _, wide = ds[1]  # 64 x 40: padded above and below with the mean colour, or cropped at the sides
    corner = (wide[:, 0, 0] * torch.tensor(CLIP_STD) + torch.tensor(CLIP_MEAN)) * 255
    assert torch.allclose(corner, torch.tensor(PAD_COLOUR, dtype=torch.float), atol=1) == (aspect == "pad")


def test_batches_stack_images_in_placeholder_order_and_pad_right(release):
    dm = module(release, "665k", group_by_length=False, batch_size=8)
    ds = dm.train_set
    batch = ds.collate([ds[i] for i in range(len(ds))])
    n = len(ds)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["pixel_values"].shape == (sum("image" in r for r in MIX_665K), 3, 28, 28)
    lengths = torch.tensor(ds.lengths)
    assert torch.equal(batch["attention_mask"].sum(1), lengths) and batch["input_ids"].shape == (n, max(lengths))
    assert ds.has_image == ["image" in r for r in MIX_665K]


def test_image_first_moves_the_image_for_llava_1_5(release):
    tok = load_tokenizer(release["tokenizer"])
    for image_first in (False, True):
        ex = module(release, "158k", image_first=image_first).train_set.examples[1]  # "...?\n<image>" in the file
        at = int((ex.input_ids == tok.convert_tokens_to_ids("<image>")).nonzero()[0])
        before = tok.decode(ex.input_ids[:at])
        assert before.endswith("USER: " if image_first else "positioned in the image?\n")


def test_a_literal_stop_marker_in_an_answer_names_the_record(release, tmp_path):
    records = [{**INSTRUCT_158K[1], "conversations": [
        INSTRUCT_158K[1]["conversations"][0], {"from": "gpt", "value": "On the couch.</s> Done."}]}]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    with pytest.raises(ConversationError, match=f"record 000000052846 of {path}: turn 1 contains '</s>'"):
        LlavaDataset(path, release["158k images"], load_tokenizer(release["tokenizer"]), "v1", 4, 28)


def test_over_long_records_fail_or_are_truncated_and_counted(release, caplog):
    lengths = module(release, "158k").train_set.lengths  # 4 image tokens each
    max_len = min(lengths) - 2
    with pytest.raises(ConversationError, match=f"record 000000033471 of .*: {lengths[0]} tokens is longer than "
                                                f"max_len={max_len}"):
        module(release, "158k", max_len=max_len)
    with caplog.at_level(logging.WARNING, logger="minillava.data.dataset"):
        ds = module(release, "158k", max_len=max_len, truncation="truncate").train_set
    assert ds.lengths == [max_len, max_len] and ds.n_truncated == 2
    assert "truncated 2 of 2 records to max_len=" in caplog.text
    with pytest.raises(ValueError, match="truncation must be one of"):
        module(release, "158k", truncation="cut")


def test_grouped_batches_are_one_modality_and_resume_where_the_trainer_stopped(release):
    dm = module(release, "665k", batch_size=2)
    loader = dm.train_dataloader()
    sampler = loader.batch_sampler
    assert isinstance(sampler, ModalityLengthGroupedBatchSampler)
    assert (sampler.epoch, dm._epoch(), dm._batches_done_in_epoch()) == (0, 0, 0)  # no trainer
    has_image = dm.train_set.has_image
    batches = list(sampler)
    assert len(batches) == len(loader) == 3 + 1  # 6 image rows and 2 text rows, batches of 2
    assert all(len({has_image[i] for i in b}) == 1 for b in batches)
    # a trainer restored from a checkpoint taken after 2 batches of epoch 3
    epochs = SimpleNamespace(started=4, processed=3, completed=3)
    batch_progress = SimpleNamespace(current=SimpleNamespace(processed=2, completed=1))
    dm.trainer = SimpleNamespace(world_size=1, fit_loop=SimpleNamespace(
        epoch_progress=SimpleNamespace(current=epochs),
        epoch_loop=SimpleNamespace(restarting=True, batch_progress=batch_progress)))
    resumed = dm.train_dataloader().batch_sampler
    assert (resumed.epoch, list(resumed)) == (3, sampler.plan(3)[2:])


class BatchRecorder(L.LightningModule):
    """Records what each training step gets; learns nothing (lr 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(1, 1)
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["input_ids"].sum(1).tolist())  # a fingerprint of each row
        return self.w(batch["attention_mask"][:, :1].float()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.filterwarnings("ignore")  # Lightning's: "dataloader is not resumable" (it is: see dataset.py), ...
@pytest.mark.parametrize("workers,reload", [(0, 0), (2, 1)])
def test_a_resumed_run_sees_the_batches_the_uninterrupted_run_saw(release, tmp_path, workers, reload):
    """Checkpoints mid-epoch, at an epoch's last batch and at an epoch's end; DataLoader workers (which draw
    batches before Lightning calls set_epoch) and dataloaders reloaded every epoch."""
    records = [{"id": str(i), "conversations": [{"from": "human", "value": "Say " + "x " * (i % 13)},
                                                {"from": "gpt", "value": "ok " * (1 + i % 7)}]} for i in range(46)]
    (tmp_path / "chat.json").write_text(json.dumps(records))

    def fit(ckpt_path: Path | None = None, callbacks: tuple = ()) -> list[list[int]]:
        model = BatchRecorder()
        data = LlavaDataModule(str(tmp_path / "chat.json"), str(release["tokenizer"]), template="v1", batch_size=4,
                               num_workers=workers, seed=1)  # 11 batches an epoch
        trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=bool(callbacks), callbacks=list(callbacks),
                            reload_dataloaders_every_n_epochs=reload, default_root_dir=tmp_path)
        trainer.fit(model, data, ckpt_path=ckpt_path)
        return model.seen

    full = fit(callbacks=(ModelCheckpoint(tmp_path / "steps", every_n_train_steps=1, save_top_k=-1),
                          ModelCheckpoint(tmp_path / "epochs", every_n_epochs=1, save_top_k=-1)))
    assert len(full) == 33 and full[:11] != full[11:22]
    for ckpt, done in [("steps/epoch=0-step=5.ckpt", 5), ("steps/epoch=0-step=11.ckpt", 11),
                       ("steps/epoch=1-step=14.ckpt", 14), ("epochs/epoch=0-step=11.ckpt", 11)]:
        assert fit(tmp_path / ckpt) == full[done:], ckpt


def test_lightning_shards_the_datamodules_loader_over_ranks(release):
    """The path `Trainer(strategy="ddp", devices=2)` takes: the hook's loader re-created per rank."""
    dm = module(release, "665k", batch_size=1)
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):  # as Lightning
        loader = dm.train_dataloader()
    seen = []
    for rank in range(2):
        ranked = _update_dataloader(loader, DistributedSampler(loader.dataset, num_replicas=2, rank=rank))
        assert ranked.batch_sampler.world_size == 2 and len(ranked) == 3 + 1  # 6 image rows, 2 text rows
        batches = list(ranked.batch_sampler)
        assert all(len({dm.train_set.has_image[i] for i in b}) == 1 for b in batches)
        assert [len(b["input_ids"]) for b in ranked] == [len(b) for b in batches]
        seen += [i for b in batches for i in b]
    assert sorted(seen) == list(range(8))  # each row once, over both ranks


class RankRecorder(BatchRecorder):
    """Writes the rows each rank trained on (as dataset indices, found by fingerprint) to rank<r>.json."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out

    def on_train_end(self) -> None:
        Path(self.out / f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))


@pytest.mark.slow  # two processes start and import torch
@pytest.mark.filterwarnings("ignore")  # Lightning's about the CPU run
def test_ddp_on_two_processes_shards_the_grouped_batches(release, tmp_path):
    """`minillava fit --trainer.strategy ddp --trainer.devices 2` crashed with the former sampler
    ("'DistributedSampler' object is not subscriptable"); now each rank gets its share of every step."""
    data = LlavaDataModule(str(release["665k"]), str(release["tokenizer"]), str(release["665k images"]),
                           template="v1", num_image_tokens=4, image_size=28, batch_size=1, seed=3)
    L.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
              enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
              default_root_dir=tmp_path).fit(RankRecorder(tmp_path), data)
    data.setup()
    fingerprints = [int(ex.input_ids.sum()) for ex in data.train_set.examples]
    for rank in range(2):
        expected = ModalityLengthGroupedBatchSampler(None, 1, True, lengths=data.train_set.lengths,
                                                     has_image=data.train_set.has_image, seed=3, rank=rank,
                                                     world_size=2)
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen == [[fingerprints[i] for i in batch] for batch in expected]


def _kinded(tmp_path: Path) -> Path:
    """Text-only records with the toy data's "kind" field, in an order the selection must keep."""
    recs = [{"id": f"r{i}", "kind": kind, "conversations": [{"from": "human", "value": f"Question {i}?"},
                                                             {"from": "gpt", "value": f"Answer {i}."}]}
            for i, kind in enumerate(["caption", "conv", "detail", "conv", "complex"])]
    path = tmp_path / "lm.json"
    path.write_text(json.dumps(recs))
    return path


def test_kinds_selects_records_in_order(release, tmp_path):
    path = _kinded(tmp_path)
    dm = LlavaDataModule(str(path), str(release["tokenizer"]), template="v0", batch_size=2,
                         kinds=["caption", "detail", "complex"])
    dm.setup("fit")
    assert [ex.meta["id"] for ex in dm.train_set.examples] == ["r0", "r2", "r4"]
    every = LlavaDataModule(str(path), str(release["tokenizer"]), template="v0", batch_size=2)
    every.setup("fit")
    assert len(every.train_set) == 5  # no kinds: every record


def test_kinds_never_empties_a_data_set_silently(release, tmp_path):
    path = _kinded(tmp_path)
    tok = load_tokenizer(release["tokenizer"])
    with pytest.raises(ValueError, match=r"no record of kinds \['vqa'\].*\['caption', 'complex', 'conv', 'detail'\]"):
        LlavaDataset(path, None, tok, kinds=["vqa"])
    with pytest.raises(ValueError, match="non-empty list"):
        LlavaDataset(path, None, tok, kinds="conv")  # a string is not a list of kinds
    # the release files have no kinds: selecting by kind names the record that cannot be selected
    with pytest.raises(ValueError, match=r"record 000000033471 of .*llava_instruct_158k.json has no \"kind\""):
        LlavaDataset(release["158k"], release["158k images"], tok, kinds=["conv"])
