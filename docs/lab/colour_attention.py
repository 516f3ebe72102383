"""Lab script behind docs/experiments.md, "2026-12-03 (afternoon): What caps colour and relations" (not part of
the package, not tested): for the held-out colour questions about scenes of 2+ objects, how much attention the last
prompt position pays, per block and head, to the asked object's visual token and to the most-attended other object.

    python docs/lab/colour_attention.py runs/ablate/seed-0/toy
"""
import json, re, sys, torch, torch.nn.functional as F
from pathlib import Path
from einops import rearrange
torch.set_num_threads(1)
from minillava.toy import load_stage2_model
from minillava.evaluate import pad_batch, load_image, prompt_example
from minillava.data.images import clip_transform
from minillava.constants import SHORT_ANSWER
import minillava.llama as LL
from minillava.llama import apply_rotary
run = Path(sys.argv[1]); kind = sys.argv[2] if len(sys.argv) > 2 else "colour"
model, tok = load_stage2_model(run)
model.llm.cfg.pack_tokens = False; model.llm.cfg.share_prefix = False  # the reference path: plain attention calls
items = [it for it in json.loads((run / "data/eval.json").read_text()) if it["kind"] == kind]
ctx = json.loads((run / "data/contexts.json").read_text())
probs = []
orig = LL.Attention.attend
def attend(self, q, k, v, cos, sin, mask, cache=None, layer=0):
    qq = apply_rotary(rearrange(q, "b t (h e) -> b h t e", h=self.n_heads), cos, sin)
    kk = apply_rotary(rearrange(k, "b t (k e) -> b k t e", k=self.n_kv_heads), cos, sin)
    A = qq[:, :, -1:] @ kk.transpose(-1, -2) / qq.shape[-1] ** 0.5  # last position only
    if mask is not None: A = A.masked_fill(~mask[:, :, -1:], float("-inf"))
    probs.append(A.softmax(-1)[:, :, 0])  # (b, h, s)
    return orig(self, q, k, v, cos, sin, mask, cache, layer)
LL.Attention.attend = attend
tf = clip_transform(32)
def objs(c):
    out = []
    for m in re.finditer(r"^(\w+) (\w+): \[([\d., ]+)\]$", c, re.M):
        x0, y0, x1, y1 = map(float, m.group(3).split(","))
        out.append((m.group(1), m.group(2), int((y0 + y1) / 2 * 4) * 4 + int((x0 + x1) / 2 * 4)))
    return out
stats = {}
for it in items:
    ob = objs(ctx[Path(it["image"]).stem])
    if len(ob) < 2: continue
    shape = re.search(r"the (\w+)\?", it["question"]).group(1)
    tgt = [o[2] for o in ob if o[1] == shape][0]; others = [o[2] for o in ob if o[1] != shape]
    ex = prompt_example(it["question"], tok, "v0", model.cfg.num_image_tokens, SHORT_ANSWER, None)
    b = pad_batch([ex], tok.pad_token_id, side="left")
    ids = b["input_ids"][0]
    probs.clear()
    with torch.no_grad():
        out = model(b["input_ids"], torch.stack([load_image(run / "data/images", it["image"], it["id"], tf)]), attention_mask=b["attention_mask"])
        pred = tok.decode([out["logits"][0, -1].argmax().item()]).strip()
    # visual positions: the run of num_image_tokens identical placeholder ids
    from collections import Counter
    img_tok = Counter(ids.tolist()).most_common(1)[0][0]
    pos = (ids == img_tok).nonzero().flatten()
    assert len(pos) == 16, len(pos)
    ok = pred == it["answer"]
    for L_, P in enumerate(probs):
        for h in range(P.shape[1]):
            p = P[0, h, pos]
            s = stats.setdefault((L_, h), [0, 0, 0, 0])
            s[0] += p[tgt].item(); s[1] += max(p[o].item() for o in others); s[2] += p.sum().item(); s[3] += 1
for (L_, h), s in sorted(stats.items()):
    print(f"layer {L_} head {h}: visual mass {s[2]/s[3]:.3f}  on target {s[0]/s[3]:.3f}  on the most-attended other object {s[1]/s[3]:.3f}")
