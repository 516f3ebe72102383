"""The `minillava` command.

    minillava toy [--quick] [--out DIR]          the whole paper in miniature on a CPU (the main job)
                                                  (--vqa 0: the paper's data only; --projector mlp2x_gelu)
    minillava ablate [--quick] [--seeds 0 1 2]    the paper's tables (data types, ScienceQA design, POPE) in
                                                  the toy world, mean +- std over seeds (runs/ablate)
    minillava gen-data --toy N --out DIR          the paper's data pipeline: contexts -> teacher -> LLaVA JSON
                                                  (or --coco FOLDER with a chat teacher; see --help)
    minillava fit -c toy/stage2 [--overrides]     any stage through LightningCLI; -c takes a packaged config
                                                  name (minillava/configs/NAME.yaml) or a YAML path;
                                                  `minillava fit --help` lists every option, and
                                                  `minillava fit -c NAME --print_config` the whole resolved config
    minillava {validate,test,predict} ...         the other LightningCLI subcommands
    minillava configs                             the packaged configs (toy/*, paper/*), one line each
    minillava chat RUN --image PATH               chat about an image, answers streamed (a toy run folder or a
                                                  transformers Llava folder; --web: the gradio demo; see --help)
    minillava plan -c paper/llava-v1-13b-stage2 --devices 8
                                                  parameters, memory per GPU, FLOPs and hours of a config's run
                                                  (--gpu, --mfu, --batch, --seq, --json; see --help)
    minillava merge ADAPTERS --out DIR [--hf-out DIR]
                                                  fold LoRA adapters into their base LLaVA; write the original
                                                  and/or transformers layout (docs/custom_data.md)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def packaged_config(name: str) -> Path | None:
    """`toy/stage2` or `toy/stage2.yaml` -> the YAML file shipped inside the package, if there is one."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    path = Path(str(resources.files("minillava") / "configs" / f"{stem}.yaml"))
    return path if path.is_file() else None


def check_yaml(path: Path) -> None:
    """A config file that is not valid YAML stops the run with its name and the parser's line and column
    (jsonargparse's own message names no file)."""
    import yaml

    try:
        yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SystemExit(f"minillava: config {path} is not valid YAML: {exc}") from None


def resolve_config_args(argv: list[str]) -> list[str]:
    """Replace packaged config names after -c/--config with their file paths; real files win."""
    out = list(argv)
    for i, arg in enumerate(out):
        value = None
        if arg in ("-c", "--config") and i + 1 < len(out):
            value, where = out[i + 1], i + 1
        elif arg.startswith("--config="):
            value, where = arg.split("=", 1)[1], i
        if value is None:
            continue
        if Path(value).is_file():
            check_yaml(Path(value))
            continue
        found = packaged_config(value)
        if found is None:
            known = sorted(str(p.relative_to(p.parents[1])).removesuffix(".yaml")
                           for p in Path(str(resources.files("minillava") / "configs")).glob("*/*.yaml"))
            raise SystemExit(f"minillava: config {value!r} is neither a file nor a packaged config ({', '.join(known)})")
        out[where] = str(found) if where == i + 1 else f"--config={found}"
    return out


def packaged_configs() -> dict[str, str]:
    """Every packaged config name -> the first line of its leading comment."""
    root = Path(str(resources.files("minillava") / "configs"))
    out = {}
    for path in sorted(root.glob("*/*.yaml")):
        first = next((line for line in path.read_text().splitlines() if line.strip()), "")
        out[str(path.relative_to(root).with_suffix(""))] = first.lstrip("#").strip() if first.startswith("#") else ""
    return out


def configs_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="minillava configs",
                                     description="List the packaged configs that -c accepts by name.")
    parser.parse_args(argv)
    found = packaged_configs()
    width = max(map(len, found), default=0)
    for name, line in found.items():
        print(f"{name:<{width}}  {line}")
    print("\nminillava fit -c NAME (toy configs read runs/toy from `minillava toy`; paper configs need the weights "
          "and data their comments name); minillava plan -c NAME --devices N")


def lightning_main(argv: list[str]) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.cli import LightningCLI

    class MinillavaCLI(LightningCLI):
        """LightningCLI with tqdm's progress bar: trained by steps (max_epochs unset), Lightning's default rich bar
        labels the epoch "Epoch 1/-2". A bar switched off, or one the config names, is left as it is."""

        def before_instantiate_classes(self) -> None:
            trainer = (self.config[self.subcommand] if self.subcommand else self.config).trainer
            named = [str(getattr(cb, "class_path", cb)) for cb in (trainer.get("callbacks") or [])]
            if trainer.get("enable_progress_bar") is not False and not any("ProgressBar" in n for n in named):
                self.trainer_defaults.setdefault("callbacks", [TQDMProgressBar()])

    # through sys.argv, not `args=`: LightningCLI warns about `args` whenever the process has arguments of its own,
    # and Lightning's launcher re-runs sys.argv in its workers (which then get the resolved config paths too)
    saved, sys.argv = sys.argv, [sys.argv[0], *resolve_config_args(argv)]
    try:
        MinillavaCLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
        )
    finally:
        sys.argv = saved


def toy_main(argv: list[str]) -> None:
    from .conversation import TEMPLATES
    from .toy import LM_KINDS

    parser = argparse.ArgumentParser(prog="minillava toy", description="Train and evaluate a toy LLaVA on a CPU.")
    parser.add_argument("--quick", action="store_true", help="a smoke-test preset (about 2 minutes)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/toy, or runs/toy-quick)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the data set stays the same)")
    parser.add_argument("--no-ablation", action="store_true", help="skip the stage-2-without-stage-1 run")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for stages that can run side by side (1: one after another)")
    parser.add_argument("--projector", choices=("linear", "mlp2x_gelu"), default=None,
                        help="linear: the paper's W (default); mlp2x_gelu: LLaVA-1.5's")
    parser.add_argument("--vqa", type=int, default=None, metavar="K",
                        help="questions per short-answer VQA record: stage 2 trains on one such record per image "
                             "besides its instruction record, as LLaVA-1.5 mixed VQAv2 into its instruction data "
                             "(default: the preset's, 8; 0: the paper's instruction data only)")
    parser.add_argument("--existence-questions", action=argparse.BooleanOptionalAction, default=None,
                        help="VQA records also ask one-attribute existence questions ('Is there a triangle in the "
                             "image?', 'Is there a red object in the image?'): stepping stones to the colour-and-shape "
                             "yes/no question (default: yes; docs/experiments.md, 2026-12-03)")
    layout = parser.add_mutually_exclusive_group()
    layout.add_argument("--vqa-single", dest="vqa_merged", action="store_false", default=None,
                        help="one stage-2 record per VQA question, as VQAv2 stores them (the default): no answer to "
                             "copy from an earlier turn, and short sequences")
    layout.add_argument("--vqa-merged", dest="vqa_merged", action="store_true", default=None,
                        help="all of an image's VQA questions in one conversation, as LLaVA-1.5 merged them (the "
                             "default before last: --vqa-merged --no-existence-questions --no-vqa-balanced "
                             "--stage2-steps 3600)")
    parser.add_argument("--vqa-balanced", action=argparse.BooleanOptionalAction, default=None,
                        help="draw an image's VQA questions round-robin over the question kinds, so that yes/no and "
                             "existence questions (one per object, attribute and absent one) do not crowd out colour "
                             "and relation questions (default: yes; docs/experiments.md, 2026-12-03 (late night))")
    parser.add_argument("--template", choices=sorted(TEMPLATES), default=None,
                        help="chat template of the tokenizer, the language model, stage 1, stage 2 and evaluation "
                             "(default: the preset's)")
    parser.add_argument("--lm-kinds", nargs="+", choices=LM_KINDS, default=None, metavar="KIND",
                        help=f"the lm.json record kinds stage 0 trains the LLM on, of {', '.join(LM_KINDS)} (default: "
                             f"caption detail complex; add conv for the earlier default's stage 0)")
    parser.add_argument("--stage2-steps", type=int, default=None, metavar="N",
                        help="stage-2 training steps (default: the preset's, 7200 of batch 8; with --vqa-merged, 3600 "
                             "take about as long)")
    parser.add_argument("--llm-layers", type=int, default=None, metavar="N",
                        help="transformer blocks of the toy LLM (default: the preset's, 4); 6 blocks lifted relations at "
                             "one training seed of three, at about 1.4x the time of the LLM's stages "
                             "(docs/experiments.md, 2026-12-03, \"What caps colour and relations\")")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.stage2_steps is not None and args.stage2_steps < 1:
        parser.error(f"--stage2-steps must be at least 1, got {args.stage2_steps}")
    if args.llm_layers is not None and args.llm_layers < 1:
        parser.error(f"--llm-layers must be at least 1, got {args.llm_layers}")
    if args.vqa is not None and args.vqa < 0:
        parser.error(f"--vqa must be 0 (none) or a number of questions, got {args.vqa}")

    from .toy import TOY_PRESETS, format_report, run_toy

    preset = "quick" if args.quick else "default"
    out = Path(args.out or ("runs/toy-quick" if args.quick else "runs/toy"))
    options = {}
    data = TOY_PRESETS[preset].data
    if args.vqa is not None:
        data = replace(data, vqa_questions=args.vqa)

    def needs_vqa(flag: str) -> None:
        if data.vqa_questions == 0:
            parser.error(f"{flag} needs VQA records (--vqa K with K > 0)")

    if args.existence_questions is not None:
        from .data.questions import EVAL_KINDS, EXISTENCE_KINDS

        if args.existence_questions:
            needs_vqa("--existence-questions")
        data = replace(data, vqa_kinds=EVAL_KINDS + EXISTENCE_KINDS if args.existence_questions else EVAL_KINDS)
    if args.vqa_merged is not None:
        needs_vqa(f"--vqa-{'merged' if args.vqa_merged else 'single'}")
        data = replace(data, vqa_merged=args.vqa_merged)
    if args.vqa_balanced is not None:
        needs_vqa(f"--{'' if args.vqa_balanced else 'no-'}vqa-balanced")
        data = replace(data, vqa_balanced=args.vqa_balanced)
    if data != TOY_PRESETS[preset].data:
        options["data"] = data
    if args.projector:
        options["projector"] = args.projector
    if args.template:
        options["template"] = args.template
    if args.lm_kinds:
        options["lm_kinds"] = tuple(dict.fromkeys(args.lm_kinds))
    if args.stage2_steps is not None:
        options["stage2"] = replace(TOY_PRESETS[preset].stage2, steps=args.stage2_steps)
    if args.llm_layers is not None:
        options["model_overrides"] = {**TOY_PRESETS[preset].model_overrides, "llm.n_layers": args.llm_layers}
    report = run_toy(preset, out=out, progress=not args.quiet, seed=args.seed, ablate_stage1=not args.no_ablation,
                     workers=args.workers, **options)
    print(format_report(report))
    print(f"run folder: {out.resolve()} (report.md, report.json, loss_curves.png)")
    print(json.dumps({"seconds": round(report["seconds"], 1), "accuracy": report["accuracy"]["overall"],
                      "chance": report["chance"]["overall"]}))


def ablate_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="minillava ablate",
        description="The paper's tables in the toy world: instruction data types on toy LLaVA-Bench, the ScienceQA "
                    "design choices on toy ScienceQA, POPE; mean +- std over training seeds, beside the paper's "
                    "numbers (ablation.md, ablation.json, ablation.png in --out). Resumes an interrupted run.")
    parser.add_argument("--quick", action="store_true", help="a smoke run of every path (one seed, tiny stages)")
    parser.add_argument("--out", default=None, help="folder (default: runs/ablate, or runs/ablate-quick)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default: 0 1 2)")
    parser.add_argument("--workers", type=int, default=2, help="jobs side by side, one thread each")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")

    from .ablate import ABLATE_PRESETS, run_ablation

    preset = ABLATE_PRESETS["quick" if args.quick else "default"]
    cfg = replace(preset, workers=args.workers, seeds=tuple(args.seeds) if args.seeds else preset.seeds)
    out = Path(args.out or ("runs/ablate-quick" if args.quick else "runs/ablate"))
    table = run_ablation(cfg, out)
    print((out / "ablation.md").read_text())
    print(json.dumps({"seconds": table["seconds"], "out": str(out.resolve())}))


def parse_mix(text: str) -> tuple[float, float, float]:
    """"58:23:77" (or "58,23,77") -> (58.0, 23.0, 77.0)."""
    from .constants import check_mix

    try:
        return check_mix(text.replace(",", ":").split(":"))
    except ValueError as err:
        raise ValueError(f"--mix: {err}") from None


def check_gen_data_options(args: argparse.Namespace) -> None:
    """Range checks of gen-data's numeric options, before any file is read; the error names the option."""
    import math

    checks = (("toy", 1, "a positive number of scenes"), ("limit", 1, "a whole number >= 1"),
              ("concurrency", 1, "a whole number >= 1"), ("max_retries", 0, "a whole number >= 0"),
              ("max_failures", 0, "a whole number >= 0"))
    for name, least, what in checks:
        value = getattr(args, name, None)
        if value is not None and value < least:
            raise ValueError(f"--{name.replace('_', '-')} takes {what}, got {value}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ValueError(f"--timeout takes a number of seconds > 0, got {args.timeout}")
    if args.temperature is not None and not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise ValueError(f"--temperature takes a number >= 0, got {args.temperature}")


def gen_data_main(argv: list[str]) -> None:
    from .data.pipeline import GenerationFailed, format_summary, generate_dataset
    from .data.sources import coco_source, toy_source

    parser = argparse.ArgumentParser(
        prog="minillava gen-data",
        description="Generate LLaVA instruction data (conv / detail / complex) and stage-1 caption pairs from toy "
                    "scenes or a COCO-style folder, with the rule-based toy teacher or any OpenAI-compatible chat "
                    "endpoint. Resumable: run the same command again after a crash or kill.")
    parser.add_argument("--out", required=True, help="output folder (resumed if it holds a previous run)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--toy", type=int, nargs="?", const=4000, metavar="N",
                      help="N toy scenes (default 4000)")
    what.add_argument("--coco", metavar="FOLDER", help="a COCO-style folder: captions + instances JSON and images")
    parser.add_argument("--captions", help="the COCO captions file (default: found in FOLDER)")
    parser.add_argument("--instances", help="the COCO instances file (default: found in FOLDER)")
    parser.add_argument("--images", help="the COCO image folder (default: FOLDER/<split>, FOLDER/images)")
    parser.add_argument("--limit", type=int, help="only the first N COCO images (by file name)")
    parser.add_argument("--copy-images", action="store_true", help="copy COCO images into OUT/images")
    parser.add_argument("--mix", default="58:23:77", help="conv:detail:complex proportions (default: the paper's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scenes, the mix and every record")
    parser.add_argument("--teacher", choices=("toy", "chat"), default=None,
                        help="toy: rule-based, toy scenes only (default for --toy); chat: an OpenAI-compatible "
                             "endpoint (default for --coco)")
    parser.add_argument("--base-url", help="chat: endpoint base URL, e.g. https://api.openai.com/v1")
    parser.add_argument("--model", help="chat: model name")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                        help="chat: environment variable holding the API key; '' for none (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="chat: requests in flight (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120, help="chat: seconds per request (default: %(default)s)")
    parser.add_argument("--max-retries", type=int, default=5, help="chat: retries on 429 / 5xx / timeouts")
    parser.add_argument("--temperature", type=float, help="chat: sampling temperature (default: the server's)")
    parser.add_argument("--max-failures", type=int, default=20,
                        help="stop once more records than this have failed (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    try:
        check_gen_data_options(args)
        mix = parse_mix(args.mix)
        teacher_name = args.teacher or ("toy" if args.toy is not None else "chat")
        if args.toy is not None:
            coco_only = [f"--{name.replace('_', '-')}" for name in ("captions", "instances", "images", "limit")
                         if getattr(args, name) is not None] + (["--copy-images"] if args.copy_images else [])
            if coco_only:
                raise ValueError(f"{', '.join(coco_only)} apply to --coco only, not to --toy")
            source = toy_source(args.toy, args.seed)
        else:
            if teacher_name == "toy":
                raise ValueError("the toy teacher reads only toy-world contexts; use --teacher chat with --coco")
            source = coco_source(args.coco, args.captions, args.instances, args.images, args.limit, args.copy_images)
        if teacher_name == "toy":
            from .data.teacher import ToyTeacher

            teacher, settings, concurrency = ToyTeacher(), {"name": "toy"}, 1
        else:
            from .data.chat_teacher import ChatTeacher

            if not args.base_url or not args.model:
                raise ValueError("--teacher chat needs --base-url and --model")
            teacher = ChatTeacher(args.base_url, args.model, args.api_key_env, timeout=args.timeout,
                                  max_retries=args.max_retries, concurrency=args.concurrency,
                                  temperature=args.temperature)
            settings = {"name": "chat", "model": args.model, "temperature": args.temperature}
            concurrency = args.concurrency
        result = generate_dataset(source, args.out, teacher, settings, mix, args.seed, progress=not args.quiet,
                                  max_failures=args.max_failures, concurrency=concurrency)
    except (ValueError, FileNotFoundError, GenerationFailed) as exc:
        raise SystemExit(f"minillava gen-data: {exc}") from None
    print(format_summary(result.summary))
    print("files: " + ", ".join(f"{k} {v}" for k, v in result.files.items()))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    command, rest = argv[0], argv[1:]
    if command == "toy":
        toy_main(rest)
    elif command == "gen-data":
        gen_data_main(rest)
    elif command == "ablate":
        ablate_main(rest)
    elif command == "configs":
        configs_main(rest)
    elif command == "chat":
        from .chat import chat_main

        chat_main(rest)
    elif command == "plan":
        from .plan import plan_main

        plan_main(rest)
    elif command == "merge":
        from .finetune import merge_main

        merge_main(rest)
    elif command in LIGHTNING_SUBCOMMANDS:
        lightning_main(argv)
    else:
        raise SystemExit(f"minillava: unknown command {command!r}; "
                         f"try: toy, ablate, gen-data, configs, plan, merge, chat, {', '.join(LIGHTNING_SUBCOMMANDS)}")


if __name__ == "__main__":
    main()
