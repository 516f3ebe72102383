"""Lab script behind docs/experiments.md, "2026-12-03 (later): What holds yes/no at chance", "2026-12-03
(midday): A stage 0 without conversations, the new default", "2026-12-03 (afternoon): What caps colour and
relations" and "2026-12-03 (evening): Where the yes/no lottery is not" (not part of the
package, not tested: a record of how those rows were made, kept so they can be re-run).

One toy variant on a finished default run's data, tokenizer and stage-0 CLIP (BASE, by default
runs/ablate/seed-S/toy), at training seed S, on one thread; prints one JSON line per evaluation:

    python docs/lab/stage0_variants.py OUT --seed 1 --set llm.n_heads=8                 # part 1
    python docs/lab/stage0_variants.py OUT --seed 1 --reuse-llm --lr 2e-3               # part 2
    python docs/lab/stage0_variants.py OUT --seed 1 --reuse-llm --tvqa-steps 1000 --tvqa-kinds yesno --only-tvqa
    python docs/lab/stage0_variants.py OUT --seed 1 --fresh-llm --tvqa-steps 1000 --tvqa-kinds yesno --only-tvqa
    python docs/lab/stage0_variants.py OUT --seed 1 --fresh-llm                         # part 4
    python docs/lab/stage0_variants.py OUT --seed 1 --lm-steps 125 --stop-after-stage1  # part 6, then single_skill.py OUT
    python docs/lab/stage0_variants.py OUT --seed 1 --lm-drop-kinds conv                # part 8
    python docs/lab/stage0_variants.py OUT --seed 2 --base runs/exist-s2 --lm-drop-kinds conv
    python docs/lab/stage0_variants.py OUT --seed 2 --lm-drop-kinds conv --steps 3600                 # part 9
    python docs/lab/stage0_variants.py OUT --seed 0 --lm-drop-kinds conv --steps 3600   # next entry, part 1
    python docs/lab/stage0_variants.py OUT --seed 2 --lm-drop-kinds conv --steps 3600 --lr 2e-3       # part 2
    python docs/lab/stage0_variants.py OUT --seed 2 --lm-drop-kinds conv --steps 4200                 # part 5
    python docs/lab/stage0_variants.py OUT --seed 2 --reuse-llm --template v0_no_system --steps 3600  # next entry
    python docs/lab/stage0_variants.py OUT --seed S --lm-drop-kinds conv --set llm.n_layers=6 --steps 3600
    python docs/lab/stage0_variants.py OUT --seed S --reuse-llm --whiten 0.01 --steps 3600
    python docs/lab/stage0_variants.py OUT --seed S --base runs/lab/n12000-s2 --reuse-llm --steps 3600 --stage2-kinds vqa
    python docs/lab/stage0_variants.py OUT --seed 2 --base runs/lab/n24000-s2 --reuse-llm --steps 3600 --stage2-instr 6000

Stage 0 trains on every lm.json record kind unless --lm-drop-kinds says otherwise, and stage 2 runs 2600 steps
unless --steps does: the default before the next entry made part 8 + 9 the default (`ToyConfig.lm_kinds`).

(single_skill.py needs a report.json in OUT: copy BASE's.)
"""
import argparse, json, os, shutil, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
import lightning as L
from minillava.toy import LM_KINDS, ToyConfig, ToyRun, StageConfig, quiet_lightning
from minillava.evaluate import evaluate_exact_match

p = argparse.ArgumentParser()
p.add_argument("out"); p.add_argument("--seed", type=int, default=1)
p.add_argument("--base", default=None); p.add_argument("--vision", default=None)  # another stage-0 CLIP tower
p.add_argument("--stage2-kinds", default="")  # comma list: stage 2 trains only on records of these kinds (e.g. vqa)
p.add_argument("--stage2-instr", type=int, default=0)  # > 0: keep the instruction records of the first N images only
p.add_argument("--vqa-split", type=int, default=0)  # > 0: each VQA record becomes up to K one-question records
p.add_argument("--feature-scale", type=float, default=1)  # the tower's output times this, before W
p.add_argument("--whiten", type=float, default=0)  # > 0: W reads ZCA-whitened CLIP features (eps = this x mean eigenvalue)
p.add_argument("--set", nargs="*", default=[])  # model overrides k=v (int/float parsed)
p.add_argument("--steps", type=int, default=2600); p.add_argument("--batch", type=int, default=8)
p.add_argument("--lr", type=float, default=1e-3); p.add_argument("--lm-steps", type=int, default=250)
p.add_argument("--lm-lr", type=float, default=3e-3)
p.add_argument("--every", type=int, default=400); p.add_argument("--reuse-llm", action="store_true")
p.add_argument("--template", default="v0")
p.add_argument("--tvqa-steps", type=int, default=0); p.add_argument("--tvqa-batch", type=int, default=64)
p.add_argument("--tvqa-desc", default="short"); p.add_argument("--tvqa-template", default="v0_no_system")
p.add_argument("--tvqa-suffix", action="store_true"); p.add_argument("--tvqa-per-scene", type=int, default=3)
p.add_argument("--tvqa-mix-lm", action="store_true"); p.add_argument("--tvqa-supervise", default="answers"); p.add_argument("--stop-after-stage1", action="store_true"); p.add_argument("--lm-drop-kinds", default=""); p.add_argument("--fresh-llm", action="store_true"); p.add_argument("--only-tvqa", action="store_true"); p.add_argument("--tvqa-lr", type=float, default=3e-3); p.add_argument("--tvqa-kinds", default="count,colour,yesno,relation")
a = p.parse_args()
base = Path(a.base or f"runs/ablate/seed-{a.seed}/toy").resolve()
out = Path(a.out); (out / "weights").mkdir(parents=True, exist_ok=True)
if not (out / "tokenizer").exists(): (out / "tokenizer").symlink_to(base / "tokenizer", target_is_directory=True)
def own_stage2(records):  # base's data in OUT, but with these stage-2 records
    (out / "data").mkdir()
    for f in (base / "data").iterdir():
        if f.name != "stage2.json": (out / "data" / f.name).symlink_to(f, target_is_directory=f.is_dir())
    (out / "data/stage2.json").write_text(json.dumps(records))
if a.vqa_split and not (out / "data").exists():  # base's data, but each VQA question in a record of its own
    from minillava.data.teacher import ToyTeacher
    from minillava.data.toy_data import vqa_records
    meta = json.loads((base / "report.json").read_text())["config"]["data"]
    contexts = json.loads((base / "data/contexts.json").read_text()); teacher = ToyTeacher(meta["world"]["n_columns"], meta["world"]["n_rows"])
    records = []
    for r in json.loads((base / "data/stage2.json").read_text()):
        if r["kind"] != "vqa":
            sid = r["id"].rsplit("-", 1)[0]
            records += [r, *vqa_records(teacher, sid, r["image"], contexts[sid], meta["vqa_questions"], meta["seed"],
                                        tuple(meta["vqa_kinds"]), merged=False)[:a.vqa_split]]
    own_stage2(records)
if (a.stage2_kinds or a.stage2_instr) and not (out / "data").exists():  # stage 2's records of the named kinds only
    keep = a.stage2_kinds.split(",") if a.stage2_kinds else None
    recs, instr = [], 0
    for r in json.loads((base / "data/stage2.json").read_text()):
        if keep is not None and r["kind"] not in keep: continue
        if a.stage2_instr and r["kind"] != "vqa":
            instr += 1
            if instr > a.stage2_instr: continue
        recs.append(r)
    own_stage2(recs)
    from collections import Counter
    print(json.dumps({"stage2_records": Counter(r["kind"] for r in recs)}), flush=True)
if not (out / "data").exists(): (out / "data").symlink_to(base / "data", target_is_directory=True)
shutil.copy(a.vision or base / "weights/vision.safetensors", out / "weights/vision.safetensors")
if a.reuse_llm: shutil.copy(base / "weights/llm.safetensors", out / "weights/llm.safetensors")
def val(v):
    for t in (int, float):
        try: return t(v)
        except ValueError: pass
    return {"true": True, "false": False}.get(v, v)
ov = {k: val(v) for k, v in (s.split("=", 1) for s in a.set)}
cfg = ToyConfig(seed=a.seed, workers=1, ablate_stage1=False, model_overrides=ov, template=a.template,
                lm_kinds=tuple(k for k in LM_KINDS if k not in a.lm_drop_kinds.split(",")),
                lm=StageConfig(a.lm_steps, 32, a.lm_lr, 0.05), stage2=StageConfig(a.steps, a.batch, a.lr))
run = ToyRun(cfg, out, progress=False); run.use_existing()
t0 = time.perf_counter()
def log(**kw): print(json.dumps({"t": round(time.perf_counter() - t0), **kw}), flush=True)
if not a.reuse_llm and not a.fresh_llm:
    to = run.stage0_lm(); log(stage="lm", text_only=to["accuracy"])
if a.tvqa_steps:
    import random
    from minillava.data.teacher import ToyTeacher
    from minillava.data.toy_data import caption_lines
    def describe(ctx):  # the scene as the text phase shows it: all captions, or the "Left to right" line
        lines = caption_lines(ctx)
        return "\n".join(lines) if a.tvqa_desc == "full" else next((l for l in lines if l.startswith("Left to right")), lines[0])
    from minillava.data.validate import write_json
    from minillava.constants import SHORT_ANSWER
    from minillava.training import LanguageModule
    from minillava.checkpoints import load_weights
    from minillava.toy import stage_trainer
    from minillava.training import LossHistory
    teacher, rng = ToyTeacher(), random.Random(1234)
    kinds = a.tvqa_kinds.split(",")
    contexts = json.loads(run.files["contexts"].read_text())
    recs = []
    for scene, ctx in contexts.items():
        if not scene.startswith("train"): continue
        desc = describe(ctx)
        pool = [q for q in teacher.questions(ctx, rng) if q.kind in kinds]
        if "has_shape" in kinds or "has_colour" in kinds:
            pool += [q for q in teacher.builder.existence(ctx, rng) if q.kind in kinds]
        rng.shuffle(pool)
        for j, q in enumerate(pool[:a.tvqa_per_scene]):
            qq = q.question + (f"\n{SHORT_ANSWER}" if a.tvqa_suffix else "")
            recs.append({"id": f"{scene}-t{j}", "conversations": [{"from": "human", "value": f"{desc}\n\n{qq}"}, {"from": "gpt", "value": q.answer}]})
    if a.tvqa_mix_lm:
        from minillava.data.validate import load_llava_json
        recs = recs + [r for r in load_llava_json(run.files["lm"]) if r["kind"] in cfg.lm_kinds]; rng.shuffle(recs)
    write_json(out / "tvqa.json", recs)
    c = StageConfig(a.tvqa_steps, a.tvqa_batch, a.tvqa_lr, 0.05)
    L.seed_everything(a.seed, verbose=False)
    mod = LanguageModule(llm=run.model_cfg.llm, lr=c.lr, warmup_ratio=c.warmup_ratio, save_to=str(out / "weights/llm.safetensors"))
    if not a.fresh_llm: load_weights(mod.llm, out / "weights/llm.safetensors", "llama")
    saved = run.cfg.template; run.cfg.template = a.tvqa_template
    dm = run._llava_data(out / "tvqa.json", c, supervise=a.tvqa_supervise); run.cfg.template = saved
    quiet_lightning(); h = LossHistory(); t1 = time.perf_counter()
    from minillava.model import Llava as _Llava
    _its = json.loads(run.files["eval"].read_text())
    _descs = [describe(contexts[Path(i["image"]).stem]) for i in _its]
    class TEvery(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, i):
            s = trainer.global_step
            if s % a.every == 0 and s < c.steps:
                m2 = _Llava(run.model_cfg); m2.llm.load_state_dict(module.llm.state_dict()); m2.eval()
                r = evaluate_exact_match(m2, run.tokenizer, _its, run.data_dir / "images", a.tvqa_template, suffix=SHORT_ANSWER if a.tvqa_suffix else "", descriptions=_descs)
                log(tstep=s, loss=round(sum(h.losses[-50:]) / 50, 4), acc={k: round(v, 3) for k, v in r["accuracy"].items()})
    tr = stage_trainer(c.steps, False, h); tr.callbacks.append(TEvery()); tr.fit(mod, datamodule=dm)
    to = run.evaluate_text_only(mod.llm)
    from minillava.model import Llava
    mdl = Llava(run.model_cfg); mdl.llm.load_state_dict(mod.llm.state_dict())
    its = _its  # the same held-out items the text phase was evaluated on
    own = evaluate_exact_match(mdl, run.tokenizer, its, run.data_dir / "images", a.tvqa_template, suffix=SHORT_ANSWER if a.tvqa_suffix else "", descriptions=_descs)
    log(stage="tvqa-own-format", acc={k: round(v, 3) for k, v in own["accuracy"].items()})
    log(stage="tvqa", n=len(recs), secs=round(time.perf_counter() - t1), loss=sum(h.losses[-20:]) / 20, text_only={k: round(v, 3) for k, v in to["accuracy"].items()})
if a.only_tvqa: sys.exit(0)
if a.fresh_llm and not a.tvqa_steps:
    from minillava.llama import Llama
    from minillava.checkpoints import save_weights
    L.seed_everything(a.seed, verbose=False); save_weights(Llama(run.model_cfg.llm), out / "weights/llm.safetensors")
if a.whiten:  # the frozen tower's output, whitened once from 3000 training images: a preconditioner for W
    import minillava.vision as V
    from PIL import Image
    from minillava.checkpoints import load_weights
    from minillava.data.images import clip_transform
    tower = V.VisionTower(run.model_cfg.vision); load_weights(tower.visual, out / "weights/vision.safetensors", "vision")
    tf = clip_transform(run.model_cfg.vision.image_size)
    ids = sorted((base / "data/images").glob("train-*.png"))[:3000]
    with torch.no_grad():
        Z = torch.cat([tower(torch.stack([tf(Image.open(f).convert("RGB")) for f in ids[i:i + 250]])).flatten(0, 1)
                       for i in range(0, len(ids), 250)])
    mu = Z.mean(0); lam, U = torch.linalg.eigh(torch.cov((Z - mu).T))
    T = U @ torch.diag((lam.clamp_min(0) + a.whiten * lam.mean()).rsqrt()) @ U.T
    forward = V.VisionTower.forward
    V.VisionTower.forward = lambda self, px: (forward(self, px) - mu) @ T
    log(stage="whiten", top_eigenvalue_share=round((lam[-1] / lam.sum()).item(), 3))
if a.feature_scale != 1:  # e.g. 0.02: W's input (and so, at first, the visual tokens) near the text embeddings' norm
    import minillava.vision as V
    scaled = V.VisionTower.forward
    V.VisionTower.forward = lambda self, px: scaled(self, px) * a.feature_scale
run.stage1(); log(stage="stage1")
if a.stop_after_stage1: sys.exit(0)
items = json.loads(run.files["eval"].read_text())
class Every(L.Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, i):
        s = trainer.global_step
        if s % a.every == 0 and s < a.steps:
            module.model.eval()
            r = evaluate_exact_match(module.model, run.tokenizer, items, run.data_dir / "images", cfg.template)
            module.model.train(); log(step=s, acc={k: round(v, 3) for k, v in r["accuracy"].items()})
import minillava.toy as toy
orig = toy.stage_trainer
def st(steps, progress, history):
    tr = orig(steps, progress, history); tr.callbacks.append(Every()); return tr
toy.stage_trainer = st
m = run.stage2(True)
r = run.evaluate(m, "stage2")
from minillava.chat import read_image
with torch.no_grad():  # how large the visual tokens are against the text embeddings, after training
    px = torch.stack([read_image(run.data_dir / "images" / it["image"], run.model_cfg.vision.image_size) for it in items[:200:4]])
    norms = {"visual_tokens": m.model.projector(m.model.vision(px)).norm(dim=-1).mean().item(),
             "text_embeddings": m.model.llm.embed_tokens.weight.norm(dim=-1).mean().item()}
log(step=a.steps, final=True, norms={k: round(v, 3) for k, v in norms.items()}, acc={k: round(v, 3) for k, v in r["accuracy"].items()}, seconds=run.seconds, cfg=vars(a))
