"""The main job: the whole paper, in miniature, on a CPU.

data (toy world + rule-based teacher) -> tokenizer -> stage 0 (tiny CLIP, tiny LLaMA chat model) -> stage 1
(projector only) -> stage 2 (projector + LLM) -> held-out exact-match evaluation, and the same stage 2 once more
without stage 1 (the paper's ablation). Writes report.json, report.md and loss_curves.png into the run folder.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from .checkpoints import load_weights
from .constants import IMAGE_TOKEN, STAGE2_KINDS
from .conversation import TEMPLATES
from .data.dataset import CaptionDataModule, LlavaDataModule, record_turns
from .data.questions import EVAL_KINDS, EXISTENCE_KINDS
from .data.toy_data import ToyDataConfig, generate_toy_data, scene_description, toy_data_files
from .data.validate import load_llava_json
from .evaluate import evaluate_exact_match
from .model import Llava, llava_preset, override
from .tokenizer import load_tokenizer, train_bpe_tokenizer
from .training import ClipModule, LanguageModule, LlavaModule, LossHistory


LM_KINDS = ("caption",) + STAGE2_KINDS  # the record kinds of lm.json (toy_data.generate_toy_data)


@dataclass
class StageConfig:
    steps: int
    batch_size: int
    lr: float
    warmup_ratio: float = 0.03


@dataclass
class ToyConfig:
    # Besides each image's instruction record, 8 short-answer VQA questions about it: LLaVA-1.5's recipe for
    # short-answer benchmarks such as our evaluation; they lift relations and yes/no (vqa_questions=0 gives the
    # paper's v1 data; docs/experiments.md, "How the default got to 0.70"). One record per question, as VQAv2
    # stores them (merged, a later turn can copy an earlier answer instead of looking), and about a third of
    # them one-attribute existence questions ("Is there a triangle in the image?"), stepping stones to the
    # colour-and-shape yes/no question: together they took yes/no above 0.8 at 6 training seeds of 7; merged
    # records without them passed 0.75 at 2 seeds of 3 (docs/experiments.md, 2026-12-03 (evening), part 5).
    # Drawn round-robin over the kinds (vqa_balanced): drawn from all candidates alike, yes/no and existence
    # questions took 69% of the records and colour 9%, and colour and relations were starved of the lookups they
    # need (docs/experiments.md, 2026-12-03 (late night))
    data: ToyDataConfig = field(default_factory=lambda: ToyDataConfig(
        n_train=6000, vqa_questions=8, vqa_kinds=EVAL_KINDS + EXISTENCE_KINDS, vqa_merged=False, vqa_balanced=True))
    vocab_size: int = 1024
    # lr 5e-4: at 2e-3 the contrastive loss can sit on its ln(batch) plateau for the whole run, depending on seed
    # and tokenizer (docs/experiments.md, "What is known about yes/no")
    clip: StageConfig = field(default_factory=lambda: StageConfig(steps=150, batch_size=128, lr=5e-4, warmup_ratio=0.1))
    lm: StageConfig = field(default_factory=lambda: StageConfig(steps=250, batch_size=32, lr=3e-3, warmup_ratio=0.05))
    # The lm.json record kinds stage 0 trains the LLM on: the scene's text, its captions, detailed descriptions and
    # complex reasoning, but not the conversations' short questions. An LLM that has learnt to answer those from
    # the text without looking anything up answers yes/no from the object count alone once it sees images, at
    # every seed; without them yes/no leaves chance in stage 2 at every seed, 0.69-0.80 (docs/experiments.md,
    # "What holds yes/no at chance" and "A stage 0 without conversations"). Add "conv" for the earlier stage 0
    lm_kinds: tuple[str, ...] = ("caption", "detail", "complex")
    # the paper: stage 1 = 1 epoch of captions, stage 2 = 3 epochs of instructions. Stage 1 keeps that; stage 2
    # runs 7200 steps of 8, 1.07 epochs of the 54,000 records (6000 instruction + 48,000 one-question VQA), as
    # many as fit the time budget: single-question records are short, so 7200 steps take about as long as 3600
    # of merged ones did. Batch 8, not 32: the skills that need the question and the image together sit on a
    # saddle, and the same records in 4x as many steps get further off it in the same time (docs/experiments.md,
    # "Stage 2 in small batches")
    stage1: StageConfig = field(default_factory=lambda: StageConfig(steps=100, batch_size=64, lr=2e-3))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(steps=7200, batch_size=8, lr=1e-3))
    # "linear": the paper's single W. "mlp2x_gelu": LLaVA-1.5's Linear-GELU-Linear, which can say per visual token
    # which colour *and* shape its patch holds, where a linear map cannot quite (a probe of the frozen CLIP;
    # docs/experiments.md, "What is known about yes/no")
    projector: str = "linear"
    template: str = "v0"
    max_len: int = 512
    seed: int = 0
    ablate_stage1: bool = True  # also train stage 2 from an untrained projector (report["no_stage1"])
    # independent stages (the two stage-0 models; stage 1+2 and the no-stage-1 ablation) run side by side in this
    # many processes, the CPU's cores shared out between them. On 2 cores two 1-thread processes get through more
    # work than one 2-thread process: these tiny models keep a second thread busy only part of the time
    # (docs/experiments.md, "Independent stages side by side"). 1 = one stage after another, in this process
    workers: int = 2
    model_overrides: dict = field(default_factory=dict)  # dotted-key changes to the "toy" preset, e.g. llm.n_layers

    def __post_init__(self) -> None:
        self.lm_kinds = tuple(self.lm_kinds)  # YAML and JSON give lists
        unknown = [k for k in self.lm_kinds if k not in LM_KINDS]
        if unknown or not self.lm_kinds:
            raise ValueError(f"lm_kinds: {unknown or 'empty'}; choose from {LM_KINDS}")

    def model_config_overrides(self) -> dict:
        """Everything that turns the "toy" model preset into this run's model."""
        return _model_overrides(asdict(self))


def _model_overrides(cfg: dict) -> dict:
    """The "toy" preset's changes from a ToyConfig as a dict (a live one, or one saved in report.json); run
    folders from before the projector field had the paper's linear W."""
    return {"llm.vocab_size": cfg["vocab_size"], "llm.max_seq_len": cfg["max_len"],
            "projector": cfg.get("projector", "linear"), **cfg.get("model_overrides", {})}


TOY_PRESETS: dict[str, ToyConfig] = {
    "default": ToyConfig(),
    "quick": ToyConfig(
        data=ToyDataConfig(n_train=1200, n_eval=60, n_lm=1200, vqa_questions=8, vqa_kinds=EVAL_KINDS + EXISTENCE_KINDS,
                           vqa_merged=False, vqa_balanced=True),
        clip=StageConfig(steps=40, batch_size=64, lr=5e-4, warmup_ratio=0.1),
        lm=StageConfig(steps=60, batch_size=32, lr=3e-3, warmup_ratio=0.05),
        stage1=StageConfig(steps=20, batch_size=64, lr=2e-3),
        stage2=StageConfig(steps=600, batch_size=8, lr=1e-3),
    ),
}


def quiet_lightning() -> None:
    """Keep the job's output to its own progress lines: no banners, tips or warnings about unused loops."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")


def stage_trainer(steps: int, progress: bool, history: LossHistory) -> L.Trainer:
    # tqdm's bar, not Lightning's default rich one: with max_steps and no max_epochs, the rich bar labels the
    # epoch "Epoch 1/-2" (max_epochs is -1 there)
    callbacks = [history, TQDMProgressBar()] if progress else [history]
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,  # weights move between stages as safetensors, not pickled checkpoints
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


def _corpus(files: list[Path], template: str):
    """Every text the models will read, rendered with the chat template, to train the BPE tokenizer on."""
    for path in files:
        for rec in load_llava_json(path):
            yield TEMPLATES[template].render(record_turns(rec))[0]


class ToyRun:
    """One run of the toy pipeline in `out`; each stage is a method so notebooks can run them one by one."""

    def __init__(self, cfg: ToyConfig, out: str | Path, progress: bool = True) -> None:
        if cfg.workers < 1:
            raise ValueError(f"ToyConfig.workers must be at least 1, got {cfg.workers}")
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.data_dir = self.out / "data"
        self.weights = self.out / "weights"
        self.losses: dict[str, list[float]] = {}
        self.seconds: dict[str, float] = {}
        self.ran_side_by_side = False
        self.model_cfg = override(llava_preset("toy"), cfg.model_config_overrides())

    def _log(self, msg: str) -> None:
        if self.progress:
            print(msg, flush=True)

    def _seed(self) -> None:
        """Every stage starts from the run's seed, so its result does not depend on what ran before it in this
        process (a stage may run in a worker process of its own; see ``side_by_side``)."""
        L.seed_everything(self.cfg.seed, verbose=False)

    def _fit(self, name: str, module: L.LightningModule, datamodule: L.LightningDataModule, stage: StageConfig):
        quiet_lightning()
        self._seed()  # again, for the data order
        history = LossHistory()
        t0 = time.perf_counter()
        self._log(f"[{name}] {stage.steps} steps, batch {stage.batch_size}, lr {stage.lr}")
        stage_trainer(stage.steps, self.progress, history).fit(module, datamodule=datamodule)
        self.seconds[name] = time.perf_counter() - t0
        self.losses[name] = history.losses
        self._log(f"[{name}] done in {self.seconds[name]:.0f}s, final loss {sum(history.losses[-20:]) / max(1, len(history.losses[-20:])):.3f}")
        return module

    def generate_data(self) -> None:
        t0 = time.perf_counter()
        self.files = generate_toy_data(self.data_dir, self.cfg.data, progress=self.progress)
        self.seconds["data"] = time.perf_counter() - t0

    def use_existing(self, files: dict[str, Path] | None = None) -> None:
        """Pick up data (by default this run folder's own) and the tokenizer that an earlier step or process
        already wrote into this run folder."""
        self.files = files if files is not None else toy_data_files(self.data_dir)
        self.tokenizer = load_tokenizer(self.out / "tokenizer")

    def train_tokenizer(self) -> None:
        t0 = time.perf_counter()
        files = [self.files["lm"], self.files["stage1"], self.files["stage2"]]
        # one slot is kept for the "###" separator added after training, so len(tokenizer) <= vocab_size
        tok = train_bpe_tokenizer(_corpus(files, self.cfg.template), vocab_size=self.cfg.vocab_size - 1)
        if len(tok) > self.cfg.vocab_size:
            raise ValueError(f"tokenizer has {len(tok)} tokens but the model's vocabulary is {self.cfg.vocab_size}")
        tok.save_pretrained(self.out / "tokenizer")
        self.tokenizer = load_tokenizer(self.out / "tokenizer")
        if self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != self.model_cfg.image_token_id:
            raise ValueError("the toy tokenizer's <image> id does not match the toy preset's image_token_id")
        self.seconds["tokenizer"] = time.perf_counter() - t0

    def _llava_data(self, json_file: Path, stage: StageConfig, supervise: str = "answers",
                    kinds: list[str] | None = None) -> LlavaDataModule:
        return LlavaDataModule(
            train_json=str(json_file),
            tokenizer=str(self.out / "tokenizer"),
            image_folder=str(self.data_dir / "images"),
            template=self.cfg.template,
            num_image_tokens=self.model_cfg.num_image_tokens,
            image_size=self.model_cfg.vision.image_size,
            max_len=self.cfg.max_len,
            supervise=supervise,
            batch_size=stage.batch_size,
            cache_images=True,  # the toy images fit in memory many times over
            kinds=kinds,
        )

    def stage0_clip(self) -> None:
        c, tok = self.cfg.clip, self.tokenizer
        self._seed()  # the initial weights
        module = ClipModule(vision=self.model_cfg.vision, vocab_size=self.cfg.vocab_size, eos_id=tok.eos_token_id,
                            pad_id=tok.pad_token_id, lr=c.lr, warmup_ratio=c.warmup_ratio,
                            save_vision_to=str(self.weights / "vision.safetensors"))
        data = CaptionDataModule(str(self.files["contexts"]), str(self.data_dir / "images"), str(self.out / "tokenizer"),
                                 image_size=self.model_cfg.vision.image_size, batch_size=c.batch_size,
                                 cache_images=True)
        self._fit("stage0_clip", module, data, c)

    def stage0_lm(self) -> dict:
        """Train the toy LLM on the world's text (no images) and return its text-only evaluation."""
        c = self.cfg.lm
        self._seed()
        module = LanguageModule(llm=self.model_cfg.llm, lr=c.lr, warmup_ratio=c.warmup_ratio,
                                save_to=str(self.weights / "llm.safetensors"))
        data = self._llava_data(self.files["lm"], c, supervise="all", kinds=list(self.cfg.lm_kinds))
        self._fit("stage0_lm", module, data, c)
        return self.evaluate_text_only(module.llm)

    def evaluate_text_only(self, llm) -> dict:
        """The held-out questions asked of the LLM alone, each scene described in words in place of its image:
        the paper's premise (the LLM answers from a text description, as text-only GPT-4 did) measured."""
        t0 = time.perf_counter()
        model = Llava(self.model_cfg)  # only its LLM is used: no question holds an image
        model.llm.load_state_dict(llm.state_dict())
        items = json.loads(self.files["eval"].read_text())
        contexts = json.loads(self.files["contexts"].read_text())
        descriptions = [scene_description(contexts[Path(it["image"]).stem]) for it in items]
        result = evaluate_exact_match(model, self.tokenizer, items, self.data_dir / "images", self.cfg.template,
                                      progress=self.progress, descriptions=descriptions)
        self.seconds["eval_text_only"] = time.perf_counter() - t0
        return result

    def _llava(self, stage: int, c: StageConfig, projector: Path | None, save_to: Path | None) -> LlavaModule:
        self._seed()
        module = LlavaModule(
            stage=stage,
            preset="toy",
            overrides=self.cfg.model_config_overrides(),
            lr=c.lr,
            warmup_ratio=c.warmup_ratio,
            vision_weights=str(self.weights / "vision.safetensors"),
            llm_weights=str(self.weights / "llm.safetensors"),
            projector_weights=str(projector) if projector else None,
            save_to=None if save_to is None else str(save_to),
        )
        return module

    def stage1(self) -> None:
        c = self.cfg.stage1
        module = self._llava(1, c, None, self.weights / "projector.safetensors")
        self._fit("stage1", module, self._llava_data(self.files["stage1"], c), c)

    def stage2(self, with_stage1: bool = True) -> LlavaModule:
        c = self.cfg.stage2
        name = "stage2" if with_stage1 else "stage2_no_stage1"
        projector = self.weights / "projector.safetensors" if with_stage1 else None
        module = self._llava(2, c, projector, self.weights / f"{name}.safetensors")
        return self._fit(name, module, self._llava_data(self.files["stage2"], c), c)

    def evaluate(self, module: LlavaModule, name: str) -> dict:
        t0 = time.perf_counter()
        items = json.loads(self.files["eval"].read_text())
        result = evaluate_exact_match(module.model, self.tokenizer, items, self.data_dir / "images",
                                      self.cfg.template, progress=self.progress)
        self.seconds[f"eval_{name}"] = time.perf_counter() - t0
        return result

    def train_and_evaluate(self, with_stage1: bool = True) -> dict:
        """Stage 2 (after stage 1, or from an untrained projector) and its held-out evaluation."""
        if with_stage1:
            self.stage1()
        return self.evaluate(self.stage2(with_stage1), "stage2" if with_stage1 else "stage2_no_stage1")

    def side_by_side(self, *jobs: tuple[str, dict]) -> list:
        """Run independent jobs (method name, keyword arguments) at once, each in its own process with its share
        of the cores, and return their results. Losses and timings come back into this run; so does the first
        job's progress output (the others run quietly, so that bars do not interleave)."""
        n = min(len(jobs), self.cfg.workers, os.cpu_count() or 1)
        if n <= 1:
            return [getattr(self, name)(**kwargs) for name, kwargs in jobs]
        threads = max(1, torch.get_num_threads() // n)
        self.ran_side_by_side = True
        labels = [name + "".join(f" {k}={v}" for k, v in kwargs.items()) for name, kwargs in jobs]
        self._log(f"[{' | '.join(labels)}] side by side: {n} processes, {threads} thread(s) each")
        context = multiprocessing.get_context("spawn")  # a fork would copy this process's thread pools and locks
        with ProcessPoolExecutor(max_workers=n, mp_context=context) as pool:
            futures = [pool.submit(_job, self.cfg, self.out, self.progress and i == 0, threads, self.files, name, kwargs)
                       for i, (name, kwargs) in enumerate(jobs)]
            outcomes = []
            for future, (name, kwargs) in zip(futures, jobs):
                try:
                    outcomes.append(future.result())
                except Exception as err:  # the worker's traceback rides along as the cause
                    raise RuntimeError(f"side-by-side job {name!r} {kwargs} of {self.out} failed: {err}") from err
        for result, losses, seconds in outcomes:
            self.losses.update(losses)
            self.seconds.update(seconds)
        for label in labels[1:]:
            self._log(f"[{label}] done (quietly, alongside)")
        return [result for result, _, _ in outcomes]

    def run(self) -> dict:
        t0 = time.perf_counter()
        torch.manual_seed(self.cfg.seed)
        self.generate_data()
        self.train_tokenizer()
        text_only, _ = self.side_by_side(("stage0_lm", {}), ("stage0_clip", {}))  # the longer one shows its progress
        jobs = [("train_and_evaluate", {"with_stage1": True})]
        if self.cfg.ablate_stage1:
            jobs.append(("train_and_evaluate", {"with_stage1": False}))
        main, *ablation = self.side_by_side(*jobs)
        report = {
            "accuracy": main["accuracy"],
            "chance": main["chance"],
            "n_questions": main["n"],
            "samples": main["samples"],
        }
        if ablation:
            report["no_stage1"] = ablation[0]["accuracy"]
        # the stage-0 LLM on the same questions, the scene described in words instead of shown
        report["text_only"] = text_only["accuracy"]
        report["seconds"] = time.perf_counter() - t0
        report["stage_seconds"] = {k: round(v, 1) for k, v in self.seconds.items()}
        report["side_by_side"] = self.ran_side_by_side
        report["final_loss"] = {k: sum(v[-20:]) / len(v[-20:]) for k, v in self.losses.items() if v}
        report["config"] = asdict(self.cfg)
        write_report(self.out, report, self.losses)
        return report


def _job(cfg: ToyConfig, out: Path, progress: bool, threads: int, files: dict[str, Path], name: str, kwargs: dict):
    """One side-by-side job, in a fresh process: a ToyRun over the same folder, after data and tokenizer exist."""
    torch.set_num_threads(threads)
    run = ToyRun(cfg, out, progress)
    run.use_existing(files)
    result = getattr(run, name)(**kwargs)
    return (None if isinstance(result, L.LightningModule) else result), run.losses, run.seconds


def run_model_overrides(out: str | Path) -> dict:
    """The changes to the "toy" model preset that a finished run folder's models were built with."""
    return _model_overrides(json.loads((Path(out) / "report.json").read_text())["config"])


def load_stage2_model(out: str | Path, name: str = "stage2"):
    """The trained toy LLaVA of a finished run folder, and its tokenizer (for notebooks and inference)."""
    out = Path(out)
    model = Llava(override(llava_preset("toy"), run_model_overrides(out)))
    load_weights(model, out / "weights" / f"{name}.safetensors", "llava")
    return model.eval(), load_tokenizer(out / "tokenizer")


def write_report(out: Path, report: dict, losses: dict[str, list[float]]) -> None:
    # a bare Figure, not pyplot: no global backend switch, so a notebook's inline plots keep working
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    fig = Figure(figsize=(3.2 * len(losses), 3))
    axes = fig.subplots(1, len(losses), squeeze=False)
    for ax, (name, values) in zip(axes[0], losses.items()):
        ax.plot(range(1, len(values) + 1), values, lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=100)
    (out / "report.md").write_text(format_report(report))


def format_report(report: dict) -> str:
    kinds = [k for k in report["accuracy"] if k != "overall"] + ["overall"]
    lines = [
        "# minillava toy run",
        "",
        f"Wall time: {report['seconds']:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in report['stage_seconds'].items())})",
        "",
    ]
    if report.get("side_by_side"):
        lines += ["Independent stages (the two stage-0 models; stage 1 + 2 and stage 2 without stage 1) ran side by "
                  "side, so the stage times add up to more than the wall time.", ""]
    lines += [
        "Exact match on held-out scenes (short answers):",
        "",
        "| question kind | n | LLaVA (stage 1 + 2) | stage 2 only (no stage 1) | chance (most common answer) |",
        "|---|---|---|---|---|",
    ]
    for k in kinds:
        n = report["n_questions"].get(k, sum(report["n_questions"].values()))
        no1 = report.get("no_stage1", {}).get(k)
        lines.append(f"| {k} | {n} | {report['accuracy'][k]:.3f} | "
                     f"{'-' if no1 is None else f'{no1:.3f}'} | {report['chance'][k]:.3f} |")
    lines += ["", "Final training loss (mean of the last 20 steps): "
              + ", ".join(f"{k} {v:.3f}" for k, v in report["final_loss"].items()), "",
              "Sample answers:", ""]
    for s in report["samples"]:
        lines.append(f"- {s['question']} -> `{s['prediction']}` (truth: {s['answer']})")
    lines += ["", "Loss curves: loss_curves.png", ""]
    return "\n".join(lines)


def run_toy(preset: str = "default", out: str | Path = "runs/toy", progress: bool = True, **overrides) -> dict:
    if preset not in TOY_PRESETS:
        raise ValueError(f"unknown toy preset {preset!r}; known: {sorted(TOY_PRESETS)}")
    cfg = replace(TOY_PRESETS[preset], **overrides)
    return ToyRun(cfg, out, progress).run()
