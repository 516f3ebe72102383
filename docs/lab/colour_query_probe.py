"""Lab script behind docs/experiments.md, "2026-12-03 (afternoon): What caps colour and relations" (not part of
the package, not tested): "What colour is the <shape>?" asked about 1200 training scenes; a linear probe (trained on
3/4, tested on the rest) reads the asked shape from the last prompt position after each block.

    python docs/lab/colour_query_probe.py runs/ablate/seed-0/toy
"""
import json, re, sys, torch, torch.nn as nn
from pathlib import Path
from collections import Counter
torch.set_num_threads(1)
from minillava.toy import load_stage2_model
from minillava.evaluate import pad_batch, load_image, prompt_example
from minillava.data.images import clip_transform
from minillava.constants import SHORT_ANSWER
run = Path(sys.argv[1])
model, tok = load_stage2_model(run)
model.llm.cfg.pack_tokens = False; model.llm.cfg.share_prefix = False
ctx = json.loads((run / "data/contexts.json").read_text())
SH = ("circle", "square", "triangle")
# training-scene colour questions, built from the contexts (many more than the 172 eval ones)
qs = []
for sid, c in ctx.items():
    if not sid.startswith("train"): continue
    objs = re.findall(r"^(\w+) (\w+): \[", c, re.M)
    shapes = Counter(s for _, s in objs)
    for col, s in objs:
        if shapes[s] == 1: qs.append((sid, s, col))
qs = qs[:1200]
tf = clip_transform(32)
caps = {}
def hook(i):
    def f(mod, inp, out): caps.setdefault(i, []).append(out[:, -1].detach())
    return f
hs = [blk.register_forward_hook(hook(i)) for i, blk in enumerate(model.llm.layers)]
Y = []
with torch.no_grad():
    for j in range(0, len(qs), 64):
        chunk = qs[j:j + 64]
        ex = [prompt_example(f"What colour is the {s}?", tok, "v0", model.cfg.num_image_tokens, SHORT_ANSWER, None) for _, s, _ in chunk]
        b = pad_batch(ex, tok.pad_token_id, side="left")
        px = torch.stack([load_image(run / "data/images", f"{sid}.png", sid, tf) for sid, _, _ in chunk])
        model(b["input_ids"], px, attention_mask=b["attention_mask"])
        Y += [SH.index(s) for _, s, _ in chunk]
Y = torch.tensor(Y); n = len(Y); tr = slice(0, int(n * 0.75)); te = slice(int(n * 0.75), n)
for i in sorted(caps):
    X = torch.cat(caps[i]); X = (X - X[tr].mean(0)) / (X[tr].std(0) + 1e-5)
    p = nn.Linear(X.shape[1], 3); o = torch.optim.Adam(p.parameters(), 1e-2)
    for _ in range(300):
        l = nn.functional.cross_entropy(p(X[tr]), Y[tr]); o.zero_grad(); l.backward(); o.step()
    print(f"after block {i}: the asked shape decoded from the last position: {(p(X[te]).argmax(-1) == Y[te]).float().mean():.3f}")
