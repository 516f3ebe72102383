"""Lab script behind docs/experiments.md, "2026-12-03 (afternoon): What caps colour and relations" (not part of
the package, not tested). Probes a toy CLIP's layer -2 patch features (a run's, or a variant trained here on the
run's captions): per patch, which of the 12 colour-shape pairs (or nothing) sits there, by a linear and an MLP
probe trained on 3000 training scenes and tested on the held-out scenes; the patch's column and row, linearly;
and the share of the occupied patches' feature variance that colour, shape and position explain.

    python docs/lab/clip_probe.py runs/ablate/seed-0/toy                        # the run's own CLIP
    python docs/lab/clip_probe.py runs/ablate/seed-0/toy --train --steps 300    # twice the default's steps
    python docs/lab/clip_probe.py runs/ablate/seed-0/toy --train --neg          # NegCLIP-style hard negatives
"""
import argparse, json, re, time, torch, torch.nn as nn
from pathlib import Path
p = argparse.ArgumentParser(); p.add_argument("run"); p.add_argument("--train", action="store_true")
p.add_argument("--steps", type=int, default=150); p.add_argument("--batch", type=int, default=128)
p.add_argument("--lr", type=float, default=5e-4); p.add_argument("--seed", type=int, default=0)
p.add_argument("--set", nargs="*", default=[]); p.add_argument("--save", default=None)
p.add_argument("--threads", type=int, default=1); p.add_argument("--neg", action="store_true")
a = p.parse_args(); torch.set_num_threads(a.threads)
from minillava.model import llava_preset, override
from minillava.vision import VisionTower
from minillava.checkpoints import load_weights
from minillava.data.images import clip_transform
from minillava.toy import StageConfig, quiet_lightning, stage_trainer
from minillava.training import ClipModule, LossHistory
from minillava.data.dataset import CaptionDataModule
from minillava.tokenizer import load_tokenizer
import lightning as L
class NegClip(ClipModule):
    def training_step(self, batch, batch_idx):
        images, pos, neg = batch
        out = self.clip(images, torch.cat([pos, neg]))
        im, tx, sc = out["image_features"], out["text_features"], out["logit_scale"]
        B = im.shape[0]; y = torch.arange(B)
        loss = (nn.functional.cross_entropy(sc * im @ tx.T, y) + nn.functional.cross_entropy(sc * tx[:B] @ im.T, y)) / 2
        self.log("train/loss", loss); return loss
from PIL import Image
run = Path(a.run)
import random
from minillava.data.context import caption_lines
COLS = ("red", "green", "blue", "yellow"); SHS = ("circle", "square", "triangle")
def negative(text, rng):
    """A caption that differs from `text` in binding: two objects' names swapped (order and position), two
    objects' colours or shapes swapped, or (one object) one attribute changed."""
    names = re.findall(r"\b(red|green|blue|yellow) (circle|square|triangle)\b", text)
    objs = list(dict.fromkeys(names))
    if len(objs) >= 2:
        (c1, s1), (c2, s2) = rng.sample(objs, 2); mode = rng.randrange(3)
        if mode == 0: mp = {(c1, s1): (c2, s2), (c2, s2): (c1, s1)}
        elif mode == 1 and c1 != c2: mp = {(c1, s1): (c2, s1), (c2, s2): (c1, s2)}
        elif s1 != s2: mp = {(c1, s1): (c1, s2), (c2, s2): (c2, s1)}
        else: mp = {(c1, s1): (c2, s2), (c2, s2): (c1, s1)}
    else:
        c, sh = objs[0]
        mp = {(c, sh): (rng.choice([x for x in COLS if x != c]), sh) if rng.random() < 0.5 else (c, rng.choice([x for x in SHS if x != sh]))}
    return re.sub(r"\b(red|green|blue|yellow) (circle|square|triangle)\b",
                  lambda m: " ".join(mp.get((m.group(1), m.group(2)), (m.group(1), m.group(2)))), text)
class NegSet(torch.utils.data.Dataset):
    def __init__(self, base): self.base = base; self.rng = random.Random(0)
    def __len__(self): return len(self.base)
    def __getitem__(self, i):
        img, pos = self.base[i]; sid, caps = self.base.items[i]
        return img, pos, self.base.encode_text(negative(" ".join(caps), self.rng))
class NegData(L.LightningDataModule):
    def __init__(self, dm): super().__init__(); self.dm = dm
    def setup(self, stage=None): self.dm.setup(stage); self.ds = NegSet(self.dm.train_set)
    def train_dataloader(self): return torch.utils.data.DataLoader(self.ds, batch_size=self.dm.hparams.batch_size, shuffle=True, drop_last=True)
def val(v):
    for t in (int, float):
        try: return t(v)
        except ValueError: pass
    return v
cfg = override(llava_preset("toy"), {k: val(v) for k, v in (s.split("=", 1) for s in a.set)})
t0 = time.time()
if a.train:
    quiet_lightning(); L.seed_everything(a.seed, verbose=False)
    tok = load_tokenizer(run / "tokenizer")
    save = a.save or "/tmp/an/vision.safetensors"
    M = NegClip if a.neg else ClipModule
    m = M(vision=cfg.vision, vocab_size=1024, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, lr=a.lr,
                   warmup_ratio=0.1, save_vision_to=save)
    dm = CaptionDataModule(str(run / "data/contexts.json"), str(run / "data/images"), str(run / "tokenizer"),
                           image_size=32, batch_size=a.batch, cache_images=True)
    if a.neg: dm = NegData(dm)
    h = LossHistory(); stage_trainer(a.steps, False, h).fit(m, datamodule=dm)
    print("clip loss", sum(h.losses[-20:]) / 20, "train s", round(time.time() - t0))
    wpath = save
else:
    wpath = run / "weights/vision.safetensors"
tower = VisionTower(cfg.vision); load_weights(tower.visual, wpath, "vision"); tower.eval()
ctx = json.loads((run / "data/contexts.json").read_text())
tf = clip_transform(32)
COL = ("red", "green", "blue", "yellow"); SH = ("circle", "square", "triangle")
def labels(c):
    lab = [12] * 16
    for m in re.finditer(r"^(\w+) (\w+): \[([\d., ]+)\]$", c, re.M):
        x0, y0, x1, y1 = map(float, m.group(3).split(","))
        col, row = int((x0 + x1) / 2 * 4), int((y0 + y1) / 2 * 4)
        lab[row * 4 + col] = COL.index(m.group(1)) * 3 + SH.index(m.group(2))
    return lab
def feats(ids):
    X, Y = [], []
    with torch.no_grad():
        for i in range(0, len(ids), 256):
            b = ids[i:i + 256]
            px = torch.stack([tf(Image.open(run / "data/images" / f"{s}.png").convert("RGB")) for s in b])
            X.append(tower(px).flatten(0, 1)); Y += [l for s in b for l in labels(ctx[s])]
    return torch.cat(X), torch.tensor(Y)
tr = [s for s in ctx if s.startswith("train")][:3000]; ev = [s for s in ctx if s.startswith("eval")]
Xt, Yt = feats(tr); Xe, Ye = feats(ev)
mu, sd = Xt.mean(0), Xt.std(0) + 1e-5; Xt, Xe = (Xt - mu) / sd, (Xe - mu) / sd
for name, probe in (("linear", nn.Linear(Xt.shape[1], 13)),
                    ("mlp", nn.Sequential(nn.Linear(Xt.shape[1], 256), nn.GELU(), nn.Linear(256, 13)))):
    opt = torch.optim.Adam(probe.parameters(), 3e-3, weight_decay=1e-4)
    for ep in range(300):
        loss = nn.functional.cross_entropy(probe(Xt), Yt); opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        pr = probe(Xe).argmax(-1); occ = Ye < 12
        print(name, "object-patch acc", round((pr[occ] == Ye[occ]).float().mean().item(), 3),
              "colour", round((pr[occ] // 3 == Ye[occ] // 3).float().mean().item(), 3),
              "shape", round((pr[occ] % 3 == Ye[occ] % 3).float().mean().item(), 3),
              "empty acc", round((pr[~occ] == 12).float().mean().item(), 3))
print("total s", round(time.time() - t0))
# position: column and row of each patch, linear
P = torch.arange(16).repeat(len(Xt) // 16); Pe = torch.arange(16).repeat(len(Xe) // 16)
for name, tgt, tge in (("column", P % 4, Pe % 4), ("row", P // 4, Pe // 4)):
    probe = nn.Linear(Xt.shape[1], 4); opt = torch.optim.Adam(probe.parameters(), 3e-3)
    for ep in range(300):
        loss = nn.functional.cross_entropy(probe(Xt), tgt); opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        pr = probe(Xe).argmax(-1); occ = Ye < 12
        print(name, "acc occupied", round((pr[occ] == tge[occ]).float().mean().item(), 3), "empty", round((pr[~occ] == tge[~occ]).float().mean().item(), 3))
# between-class variance of occupied patches: colour vs shape vs position, as a share of total variance (raw features)
Xr, _ = feats(tr[:1000]); Yr = torch.tensor([l for s in tr[:1000] for l in labels(ctx[s])]); Pr = torch.arange(16).repeat(len(Yr) // 16)
occ = Yr < 12; X = Xr[occ]; X = X - X.mean(0); tot = (X ** 2).sum(1).mean()
def share(lab):
    m = torch.zeros_like(X)
    for v in lab.unique(): m[lab == v] = X[lab == v].mean(0)
    return round(((m ** 2).sum(1).mean() / tot).item(), 3)
print("variance share: colour", share(Yr[occ] // 3), "shape", share(Yr[occ] % 3), "pair", share(Yr[occ]), "column", share(Pr[occ] % 4), "row", share(Pr[occ] // 4))
