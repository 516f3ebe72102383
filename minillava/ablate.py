"""`minillava ablate`: the paper's tables, reproduced in the toy world, with mean +- std over training seeds.

For each training seed, one `minillava toy` run (data, tokenizer, stage 0, stage 1, stage 2, exact match) is the
"full" model; every variant starts from that run's files and changes one thing:

- **Data types** (the paper's Table 4, LLaVA-Bench relative score judged against the teacher's text-only answer):
  stage 2 on all instruction data ("full"), on detailed description + complex reasoning only, on conversation only
  (our short-answer VQA records count as conversation: they are question-answer turns), and none (the stage-1 model,
  no instruction tuning). A variant trains as many epochs of its data as the full model did, as the paper trained
  each subset for the same epochs, so smaller subsets take fewer steps.
- **ScienceQA design choices** (the paper's Table 8): stage 2 on toy ScienceQA problems from the stage-1 projector,
  reasoning first (QCM-LEA, the paper's best variant), answer first (QCM-ALE), features of layer -1 instead of -2
  (stage 1 again with layer -1), no stage 1, and a smaller LLM (its own stage 0 and stage 1).
- **POPE** for the full model: random, popular, adversarial and similar negatives.

Stage 0 (the toy CLIP and the toy LLM, our stand-ins for the released CLIP and Vicuna) is trained once per seed and
shared by all of that seed's variants. Every job writes its result to `<out>/seed-<s>/results/<job>.json` and is
skipped when that file exists (a toy run when its report.json does), so an interrupted ablation resumes where it
stopped. All jobs, the toy runs too, run side by side in `workers` processes of one thread each (see
`ToyConfig.workers` for why that pays on 2 cores); a seed's variants start as soon as its toy run ends.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .data.toy_data import toy_data_files
from .data.validate import write_json
from .evaluate import answer_questions
from .ablate_tables import mean_std, write_tables
from .toy import TOY_PRESETS, StageConfig, ToyConfig, ToyRun, quiet_lightning

# The paper's numbers: LLaVA-Bench (COCO) relative scores, Table 4; ScienceQA accuracy, Table 8 (facts.md).
PAPER = {
    "data": {"full": 85.1, "detail + complex": 81.9, "conversation": 73.8, "none": 21.5},
    "scienceqa": {"reasoning first (best)": 90.92, "layer -1": 89.96, "answer first": 89.77, "no stage 1": 85.81,
                  "smaller LLM": 89.84},
}
DATA_VARIANTS = {"full": None, "detail + complex": ("detail", "complex"), "conversation": ("conv", "vqa"), "none": ()}
SQA_VARIANTS = ("reasoning first (best)", "layer -1", "answer first", "no stage 1", "smaller LLM")
POPE_SETTINGS = ("random", "popular", "adversarial", "similar")


@dataclass
class AblateConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    toy: ToyConfig = field(default_factory=lambda: replace(TOY_PRESETS["default"], ablate_stage1=False))
    bench_scenes: int = 60  # held-out scenes asked LLaVA-Bench questions (one per kind each)
    pope_scenes: int = 100
    sqa_test_scenes: int = 200
    # toy ScienceQA fine-tuning: the paper fine-tuned on ScienceQA's 12.7K training problems from the stage-1
    # projector; here one problem per training scene
    sqa: StageConfig = field(default_factory=lambda: StageConfig(steps=600, batch_size=8, lr=1e-3))
    small_llm: dict = field(default_factory=lambda: {"llm.n_layers": 2})  # "7B instead of 13B": half the blocks
    workers: int = 2


ABLATE_PRESETS = {
    "default": AblateConfig(),
    # a smoke run of every path (tests): tiny data and stages, one seed, results meaningless
    "quick": AblateConfig(
        seeds=(0,),
        toy=replace(TOY_PRESETS["quick"], ablate_stage1=False,
                    data=replace(TOY_PRESETS["quick"].data, n_train=200, n_eval=20, n_lm=200),
                    clip=StageConfig(steps=5, batch_size=32, lr=5e-4), lm=StageConfig(steps=5, batch_size=16, lr=3e-3),
                    stage1=StageConfig(steps=5, batch_size=16, lr=2e-3), stage2=StageConfig(steps=10, batch_size=4,
                                                                                             lr=1e-3)),
        bench_scenes=4, pope_scenes=4, sqa_test_scenes=6, sqa=StageConfig(steps=6, batch_size=4, lr=1e-3)),
}


# -- folders ---------------------------------------------------------------------------------------------------

def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve(), target_is_directory=target.is_dir())


def variant_run(cfg: ToyConfig, base: Path, out: Path, stage2_records: list[dict] | None = None,
                weights: tuple[str, ...] = ("vision", "llm", "projector")) -> ToyRun:
    """A ToyRun in `out` that shares the finished run `base`'s data, tokenizer and the named weights (symlinks),
    with its own stage-2 records if given."""
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    data.mkdir(exist_ok=True)
    for entry in (base / "data").iterdir():
        if entry.name != "stage2.json" or stage2_records is None:
            _link(entry, data / entry.name)
    if stage2_records is not None:
        write_json(data / "stage2.json", stage2_records)
    _link(base / "tokenizer", out / "tokenizer")
    for name in weights:
        _link(base / "weights" / f"{name}.safetensors", out / "weights" / f"{name}.safetensors")
    run = ToyRun(cfg, out, progress=False)
    run.use_existing(toy_data_files(data))
    return run


# -- evaluations -------------------------------------------------------------------------------------------------

def _eval_items(root: Path, name: str) -> list[dict]:
    return json.loads((root / "evals" / f"{name}.json").read_text())


def run_bench(model, run: ToyRun, root: Path) -> dict:
    """Toy LLaVA-Bench: open answers (no short-answer suffix), judged by the rule-based judge against the teacher's
    reference."""
    from .evals.judges import RuleJudge
    from .evals.llava_bench import judge_bench

    items = _eval_items(root, "llava_bench")
    answers = answer_questions(model, run.tokenizer, items, run.data_dir / "images", run.cfg.template, suffix="",
                               max_new_tokens=160)
    result = judge_bench(items, answers, RuleJudge(run.cfg.data.world.n_columns, run.cfg.data.world.n_rows))
    for review, answer in zip(result["reviews"], answers):  # kept whole: a judge can be re-run on them later
        review["answer"] = answer
    return result


def run_pope(model, run: ToyRun, root: Path) -> dict:
    from .evals.pope import pope_metrics

    out = {}
    for setting in POPE_SETTINGS:
        items = _eval_items(root, f"pope_{setting}")
        answers = answer_questions(model, run.tokenizer, items, run.data_dir / "images", run.cfg.template)
        out[setting] = pope_metrics(items, answers)
    return out


def run_sqa(model, run: ToyRun, root: Path) -> dict:
    from .evals.scienceqa import sqa_metrics, sqa_prompt

    problems = _eval_items(root, "sqa_test")
    items = [{"id": p["id"], "image": p["image"], "question": sqa_prompt(p)} for p in problems]
    answers = answer_questions(model, run.tokenizer, items, run.data_dir / "images", run.cfg.template, suffix="",
                               max_new_tokens=200)
    result = sqa_metrics(problems, answers)
    result["answers"] = [{"id": it["id"], "answer": a} for it, a in zip(items[:4], answers[:4])]
    return result


# -- jobs ------------------------------------------------------------------------------------------------------

def slug(variant: str) -> str:
    """A variant's folder and file name: "reasoning first (best)" -> "reasoning-first", "layer -1" -> "layer-1"."""
    return "-".join(variant.split(" (")[0].replace("+", " ").replace("-", "").split())


def _seed_dir(root: Path, seed: int) -> Path:
    return root / f"seed-{seed}"


def _toy_cfg(acfg: AblateConfig, seed: int, **model_overrides) -> ToyConfig:
    cfg = replace(acfg.toy, seed=seed, workers=1)
    if model_overrides:
        cfg = replace(cfg, model_overrides={**cfg.model_overrides, **model_overrides})
    return cfg


def job_data_variant(acfg: AblateConfig, root: Path, seed: int, variant: str) -> dict:
    """Stage 2 on one subset of the instruction data (or none), then LLaVA-Bench and exact match."""
    base = _seed_dir(root, seed) / "toy"
    kinds = DATA_VARIANTS[variant]
    cfg = _toy_cfg(acfg, seed)
    result: dict = {"variant": variant}
    if variant == "full":  # the seed's toy run itself
        run = variant_run(cfg, base, _seed_dir(root, seed) / "full", weights=("vision", "llm", "projector", "stage2"))
        from .toy import load_stage2_model
        model, _ = load_stage2_model(base)
        result["pope"] = run_pope(model, run, root)
        result["exact_match"] = json.loads((base / "report.json").read_text())["accuracy"]
    elif variant == "none":  # stage 1 only: the frozen LLM reads W's visual tokens
        run = variant_run(cfg, base, _seed_dir(root, seed) / "none")
        model = run._llava(1, cfg.stage1, run.weights / "projector.safetensors", None).model
    else:
        records = [r for r in json.loads((base / "data" / "stage2.json").read_text()) if r.get("kind") in kinds]
        full = json.loads((base / "data" / "stage2.json").read_text())
        # as many epochs as the full model: steps in proportion to the records
        steps = max(1, round(cfg.stage2.steps * len(records) / len(full)))
        cfg = replace(cfg, stage2=replace(cfg.stage2, steps=steps))
        run = variant_run(cfg, base, _seed_dir(root, seed) / slug(variant), stage2_records=records)
        module = run.stage2()
        model = module.model
        result["exact_match"] = run.evaluate(module, "stage2")["accuracy"]
        result["records"], result["steps"] = len(records), steps
    result["llava_bench"] = run_bench(model, run, root)
    return result


def job_sqa(acfg: AblateConfig, root: Path, seed: int, variant: str) -> dict:
    """Stage 2 on toy ScienceQA in one of the paper's Table 8 variants, then its accuracy."""
    from .evals.scienceqa import to_llava

    base = _seed_dir(root, seed) / "toy"
    fmt = "QCM-ALE" if variant == "answer first" else "QCM-LEA"
    records = [to_llava(p, fmt) for p in _eval_items(root, "sqa_train")]
    overrides = {"layer -1": {"vision.feature_layer": -1}, "smaller LLM": acfg.small_llm}.get(variant, {})
    cfg = replace(_toy_cfg(acfg, seed, **overrides), stage2=acfg.sqa)
    out = _seed_dir(root, seed) / f"sqa-{slug(variant)}"
    weights = {"layer -1": ("vision", "llm"), "smaller LLM": ("vision",), "no stage 1": ("vision", "llm")}
    run = variant_run(cfg, base, out, stage2_records=records, weights=weights.get(variant, ("vision", "llm",
                                                                                             "projector")))
    result: dict = {"variant": variant, "format": fmt, "records": len(records)}
    if variant == "smaller LLM":
        result["text_only"] = run.stage0_lm()["accuracy"]  # its own stand-in for the smaller Vicuna
    if variant in ("layer -1", "smaller LLM"):
        run.stage1()
    model = run.stage2(with_stage1=variant != "no stage 1").model
    result["scienceqa"] = run_sqa(model, run, root)
    return result


def _job(acfg: AblateConfig, root: Path, seed: int, kind: str, variant: str) -> tuple[str, float]:
    """One job in a worker process: run it unless its result is already on disk. Kind "toy" is the seed's
    `minillava toy` run (the base of its variants, done when its report.json exists); "data" and "sqa" are
    variants, done when their result file exists."""
    torch.set_num_threads(1)
    quiet_lightning()
    if kind == "toy":
        path = _seed_dir(root, seed) / "toy" / "report.json"
        if path.exists():
            return str(path), 0.0
        t0 = time.perf_counter()
        ToyRun(_toy_cfg(acfg, seed), path.parent, progress=False).run()
        return str(path), round(time.perf_counter() - t0, 1)
    path = _seed_dir(root, seed) / "results" / f"{kind}-{slug(variant)}.json"
    if path.exists():
        return str(path), 0.0
    t0 = time.perf_counter()
    result = (job_data_variant if kind == "data" else job_sqa)(acfg, root, seed, variant)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return str(path), result["seconds"]


# -- the whole ablation ----------------------------------------------------------------------------------------

def write_eval_sets(acfg: AblateConfig, root: Path, run_dir: Path) -> None:
    """The held-out benchmarks, from the toy run's contexts (eval scenes) and, for POPE's statistics and toy
    ScienceQA's training problems, its training scenes. The same for every seed."""
    from .evals.llava_bench import make_bench
    from .evals.pope import make_pope, object_stats
    from .evals.scienceqa import make_sqa

    contexts = json.loads((run_dir / "data" / "contexts.json").read_text())
    train = sorted(k for k in contexts if k.startswith("train-"))
    held_out = sorted(k for k in contexts if k.startswith("eval-"))
    out = root / "evals"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "llava_bench.json", make_bench(contexts, held_out[: acfg.bench_scenes]))
    stats = object_stats(contexts[k] for k in train)
    for setting in POPE_SETTINGS:
        write_json(out / f"pope_{setting}.json", make_pope(contexts, held_out[: acfg.pope_scenes], stats, setting))
    write_json(out / "sqa_train.json", make_sqa(contexts, train, split="train"))
    write_json(out / "sqa_test.json", make_sqa(contexts, held_out[: acfg.sqa_test_scenes], split="test"))


def run_ablation(acfg: AblateConfig, root: str | Path, progress: bool = True) -> dict:
    root = Path(root)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if progress:
            print(f"[ablate {time.perf_counter() - t0:5.0f}s] {msg}", flush=True)

    # One pool for everything: each seed's toy run is a one-thread job like its variants, and a seed's variants
    # are queued as soon as its toy run ends, so no core idles while the last toy runs finish (a toy run on its
    # own, with its stage-0 pair side by side, leaves one core idle through stages 1 and 2).
    variants = {seed: [("data", v) for v in DATA_VARIANTS] + [("sqa", v) for v in SQA_VARIANTS]
                for seed in acfg.seeds}
    toy_reports: dict[int, dict] = {}
    n = max(1, min(acfg.workers, os.cpu_count() or 1))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=context) as pool:
        pending: dict[Future, tuple[int, str, str]] = {}

        def submit(seed: int, kind: str, variant: str) -> None:
            pending[pool.submit(_job, acfg, root, seed, kind, variant)] = (seed, kind, variant)

        for seed in acfg.seeds:
            if not (_seed_dir(root, seed) / "toy" / "report.json").exists():
                log(f"seed {seed}: minillava toy --seed {seed}")
            submit(seed, "toy", "")
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: pending[f]):
                seed, kind, v = pending.pop(future)
                try:
                    path, seconds = future.result()
                except Exception as err:
                    name = "toy run" if kind == "toy" else f"{kind} {v!r}"
                    raise RuntimeError(f"ablation job seed {seed} {name} in {root} failed: {err}") from err
                if kind != "toy":
                    log(f"seed {seed}: {kind} {v} done ({seconds:.0f}s)")
                    continue
                toy_reports[seed] = json.loads(Path(path).read_text())
                log(f"seed {seed}: toy overall {toy_reports[seed]['accuracy']['overall']:.3f} ({seconds:.0f}s)")
                if len(toy_reports) == 1:  # the eval sets come from the data, which every seed shares
                    write_eval_sets(acfg, root, Path(path).parent)
                for kind_, variant in variants[seed]:
                    submit(seed, kind_, variant)
    toy_reports = {seed: toy_reports[seed] for seed in acfg.seeds}
    table = summarise(acfg, root, toy_reports)
    table["seconds"] = round(time.perf_counter() - t0, 1)
    write_tables(root, table)
    log(f"done: {root / 'ablation.md'}")
    return table


def _result(root: Path, seed: int, kind: str, variant: str) -> dict:
    return json.loads((_seed_dir(root, seed) / "results" / f"{kind}-{slug(variant)}.json").read_text())


def summarise(acfg: AblateConfig, root: Path, toy_reports: dict) -> dict:
    seeds = list(acfg.seeds)
    data = {}
    for v in DATA_VARIANTS:
        results = [_result(root, s, "data", v)["llava_bench"]["relative"] for s in seeds]
        data[v] = {k: mean_std([r[k]["relative"] for r in results]) for k in ("conv", "detail", "complex", "overall")}
    sqa = {}
    for v in SQA_VARIANTS:
        results = [_result(root, s, "sqa", v)["scienceqa"] for s in seeds]
        sqa[v] = {"accuracy": mean_std([100 * r["accuracy"] for r in results]),
                  "per_category": {c: mean_std([100 * r["per_category"][c]["accuracy"] for r in results])
                                   for c in results[0]["per_category"]}}
    # what guessing scores: the mean of 1 / (number of choices) over the test problems, overall and per category
    problems = _eval_items(root, "sqa_test")
    guess = {c: 100 * sum(1 / len(p["choices"]) for p in group) / len(group)
             for c, group in _by_category(problems).items()}
    sqa_chance = {"accuracy": 100 * sum(1 / len(p["choices"]) for p in problems) / len(problems),
                  "per_category": guess}
    pope = {}
    for setting in POPE_SETTINGS:
        results = [_result(root, s, "data", "full")["pope"][setting] for s in seeds]
        pope[setting] = {m: mean_std([r[m] for r in results]) for m in ("accuracy", "precision", "recall", "f1",
                                                                         "yes_ratio")}
    toy = {k: mean_std([toy_reports[s]["accuracy"][k] for s in seeds]) for k in toy_reports[seeds[0]]["accuracy"]}
    text_only = {k: mean_std([toy_reports[s]["text_only"][k] for s in seeds])
                 for k in toy_reports[seeds[0]].get("text_only", {})}
    # the first seed's full model, answer by answer: a judge can be re-run on them without any training
    sample = {"seed": seeds[0], "variant": "full",
              "reviews": _result(root, seeds[0], "data", "full")["llava_bench"]["reviews"]}
    return {"seeds": seeds, "paper": PAPER, "data": data, "scienceqa": sqa, "scienceqa_chance": sqa_chance,
            "pope": pope, "toy_exact_match": toy,
            "bench_reviews": sample,
            "toy_text_only": text_only, "toy_seconds": {s: toy_reports[s]["seconds"] for s in seeds},
            "config": asdict(acfg)}


def _by_category(problems: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for p in problems:
        groups.setdefault(p["category"], []).append(p)
    return groups
