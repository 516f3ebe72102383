"""`minillava gen-data`: the paper's data pipeline, from images to LLaVA JSON, resumable.

    image source (toy scenes, or a COCO-style folder) -> symbolic context -> teacher -> records

Output folder:
- ``stage2.jsonl`` / ``stage1.jsonl``: the journals. Each record is appended as one line and flushed as soon as
  it exists, so a crash or kill loses at most the records in flight (one with the toy teacher; up to
  `concurrency` with a chat teacher); a torn last line is cut off on restart.
  A restart with the same settings skips every id already written. Each line is a LLaVA record.
- ``stage2.json`` (instruction data: one record per image, conv / detail / complex in the `mix` proportions,
  the paper's 58K : 23K : 77K by default) and ``stage1.json`` (one caption pair per image, for feature
  alignment): LLaVA JSON in the original format, written once every record is there, in image order.
- ``contexts.json`` ({image id: symbolic context}), ``images/`` (toy scenes, or copies of COCO images with
  ``--copy-images``; otherwise records name files in the COCO image folder), ``meta.json`` (the settings, checked
  on restart), ``summary.json`` (counts and lengths), ``errors.jsonl`` (records the teacher failed on in the last
  run; running again retries them).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from minillava.data.generate import _record  # one record layout for every generator
from minillava.data.teacher import STAGE2_KINDS, Teacher, caption_pair
from minillava.data.validate import IMAGE_TOKEN, check_record, validate_records, write_json

PAPER_MIX = (58, 23, 77)  # thousands of conversation, detail and complex-reasoning records in LLaVA-Instruct-158K


@dataclass(frozen=True)
class SourceImage:
    """One image of a source: its id, its file name in the image folder, its context, and how to write it."""

    id: str
    image: str
    context: str
    write: Callable[[Path], None] | None = None  # writes the image file to the given path; None: it exists


@dataclass
class Source:
    images: list[SourceImage]
    image_folder: Path | None  # where existing images live; None: they are written into out/images
    settings: dict[str, Any]  # what defines the content, for meta.json


def toy_source(n: int, seed: int = 0, world=None) -> Source:
    """The toy world's train scenes (the same ones `minillava toy` uses), rendered on demand."""
    from minillava.data.world import WorldConfig, make_scenes, render, symbolic_context

    world = world or WorldConfig()

    def writer(scene) -> Callable[[Path], None]:
        return lambda path: render(scene, world).save(path, format="PNG")

    images = [SourceImage(s.id, f"{s.id}.png", symbolic_context(s, world), writer(s))
              for s in make_scenes("train", n, seed, world)]
    settings = {"source": "toy", "n": n, "world": vars(world)}
    return Source(images, None, settings)


def coco_source(folder: str | Path, captions: str | Path | None = None, instances: str | Path | None = None,
                images: str | Path | None = None, limit: int | None = None, copy_images: bool = False) -> Source:
    """Images of a COCO-style folder (see ``coco.py``); with `copy_images`, copies go into out/images."""
    from minillava.data.coco import find_annotation_files, find_image_folder, load_coco

    folder = Path(folder)
    if captions is None or instances is None:
        found = find_annotation_files(folder)
        captions, instances = captions or found[0], instances or found[1]
    coco = load_coco(captions, instances, limit)
    image_folder = Path(images) if images else find_image_folder(folder, Path(captions), coco)

    def copier(name: str) -> Callable[[Path], None]:
        return lambda path: shutil.copyfile(image_folder / name, path)

    out = [SourceImage(c.id, c.file_name, c.context, copier(c.file_name) if copy_images else None) for c in coco]
    missing = [s.image for s in out if not (image_folder / s.image).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) are not in {image_folder}, e.g. {missing[:3]}")
    settings = {"source": "coco", "captions": str(Path(captions).resolve()),
                "instances": str(Path(instances).resolve()), "limit": limit}
    return Source(out, None if copy_images else image_folder.resolve(), settings)


def plan_kinds(n: int, mix: tuple[float, ...] = PAPER_MIX, seed: int = 0) -> list[str]:
    """A response kind for each of n images: counts in the `mix` proportions (largest remainder), order shuffled."""
    if len(mix) != len(STAGE2_KINDS) or min(mix) < 0 or sum(mix) <= 0:
        raise ValueError(f"mix must be {len(STAGE2_KINDS)} non-negative weights with a positive sum, got {mix}")
    exact = [n * w / sum(mix) for w in mix]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(mix)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    kinds = [k for k, c in zip(STAGE2_KINDS, counts) for _ in range(c)]
    random.Random(f"mix/{seed}").shuffle(kinds)
    return kinds


class Journal:
    """An append-only JSON Lines file of records: one complete line per record, flushed when written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: set[str] = set()
        self.torn = False  # whether a partial last line (the record in flight at a kill) was cut off
        if path.exists():
            self._recover()
        self._file = path.open("a", encoding="utf-8")

    def _recover(self) -> None:
        data = self.path.read_bytes()
        good = 0  # byte offset just past the last complete, parseable line
        for lineno, line in enumerate(data.splitlines(keepends=True), 1):
            try:
                record = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                record = None
            if record is None:
                if good + len(line) < len(data):  # a bad line before the end is damage, not an interrupted write
                    raise ValueError(f"{self.path}: line {lineno} is not a complete JSON record; "
                                     "remove the file to start again")
                self.torn = True
                break
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise ValueError(f"{self.path}: line {lineno} is not a LLaVA record with a string id")
            if record["id"] in self.ids:
                raise ValueError(f"{self.path}: line {lineno}: id {record['id']!r} is written twice")
            self.ids.add(record["id"])
            good += len(line)
        if self.torn:
            with self.path.open("r+b") as f:
                f.truncate(good)

    def append(self, record: dict) -> None:
        if record["id"] in self.ids:
            raise ValueError(f"{self.path}: id {record['id']!r} is already written")
        # one write of the whole line: a kill leaves either the line or a torn tail that _recover cuts off
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        self.ids.add(record["id"])

    def close(self) -> None:
        self._file.close()


def _write_image(write: Callable[[Path], None], path: Path) -> None:
    """Write to a temporary name, then rename: an image file that exists is always complete."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


@dataclass
class Result:
    out: Path
    files: dict[str, Path]
    summary: dict[str, Any]


class GenerationFailed(RuntimeError):
    """Some records could not be generated; the journals keep everything else, and a rerun retries them."""


def generate_dataset(
    source: Source,
    out: str | Path,
    teacher: Teacher,
    teacher_settings: dict[str, Any],
    mix: tuple[float, ...] = PAPER_MIX,
    seed: int = 0,
    progress: bool = True,
    max_failures: int = 20,
    concurrency: int = 1,
) -> Result:
    """Generate (or finish generating) the data set of `source` into `out`; see the module docstring.

    Records are deterministic given (source, teacher, mix, seed): each draws from its own seeded rng, so a
    resumed run writes exactly what an uninterrupted one would have (for a deterministic teacher).
    Raises GenerationFailed if the teacher failed on some records (after its own retries), once more than
    `max_failures` have failed, or at once on a fatal teacher error (e.g. a rejected API key).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images_dir = out / "images"
    if source.image_folder is None:
        images_dir.mkdir(exist_ok=True)
    kinds = plan_kinds(len(source.images), mix, seed)
    meta = {"format": 1, **source.settings, "mix": list(mix), "seed": seed, "teacher": teacher_settings}
    _check_meta(out / "meta.json", meta)

    stage1, stage2 = Journal(out / "stage1.jsonl"), Journal(out / "stage2.jsonl")
    todo = list(zip(source.images, kinds))
    n_total = 2 * len(todo)
    n_resumed = len(stage1.ids) + len(stage2.ids)
    failures: list[dict] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_total, initial=n_resumed, desc="gen-data", unit="record", smoothing=0.05)
    t0 = time.perf_counter()
    prefix = IMAGE_TOKEN + "\n"

    def finish(im: SourceImage, kind: str, outcome: Callable[[], list[tuple[str, str]]]) -> None:
        """Write the record whose turns `outcome` returns, or note the teacher's failure on it."""
        rid = f"{im.id}-{kind}"
        try:
            record = _record(rid, kind, outcome(), prefix, im.image)
            if problem := check_record(record):  # e.g. a teacher that wrote "<image>" into its reply
                raise ValueError(f"the teacher's turns make a bad record: {problem}")
        except Exception as exc:  # a teacher's error belongs to its record: noted, and the run goes on
            failures.append({"id": rid, "kind": kind, "error": f"{type(exc).__name__}: {exc}"})
            if getattr(exc, "fatal", False) or len(failures) > max_failures:
                raise GenerationFailed(f"stopping after {len(failures)} failed record(s); last, {rid}: {exc}") from exc
            return
        stage2.append(record)
        if bar:
            bar.update()

    pool = ThreadPoolExecutor(concurrency) if concurrency > 1 else None
    pending: dict[Future, tuple[SourceImage, str]] = {}
    try:
        for im, kind in todo:
            if source.image_folder is None and im.write and not (images_dir / im.image).exists():
                _write_image(im.write, images_dir / im.image)
            if im.id not in stage1.ids:
                rng = random.Random(f"stage1/{seed}/{im.id}")
                stage1.append(_record(im.id, "caption", [caption_pair(im.context, rng)], prefix, im.image))
                if bar:
                    bar.update()
            rid = f"{im.id}-{kind}"
            if rid in stage2.ids:
                continue
            rng = random.Random(f"stage2/{seed}/{rid}")
            if pool is None:
                finish(im, kind, partial(teacher.respond, kind, im.context, rng))
                continue
            pending[pool.submit(teacher.respond, kind, im.context, rng)] = (im, kind)
            while len(pending) >= 2 * concurrency:  # keep the pool busy without queueing the whole data set
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for job in done:
                    finish(*pending.pop(job), job.result)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for job in done:
                finish(*pending.pop(job), job.result)
    finally:
        if pool is not None:
            for job in pending:
                job.cancel()
            pool.shutdown(wait=True)
        stage1.close()
        stage2.close()
        if bar:
            bar.close()
        errors_path = out / "errors.jsonl"
        if failures:
            errors_path.write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))
        elif errors_path.exists():
            errors_path.unlink()
    seconds = time.perf_counter() - t0
    if failures:
        raise GenerationFailed(f"{len(failures)} record(s) failed (see {out / 'errors.jsonl'}); the rest is kept "
                               "in the .jsonl journals: run the same command again to retry them")

    files = _finalise(out, source)
    records = {name: json.loads(files[name].read_text()) for name in ("stage1", "stage2")}
    summary = summarise(records["stage1"] + records["stage2"])
    summary["run"] = {"generated": n_total - n_resumed, "resumed": n_resumed, "seconds": round(seconds, 2),
                      "records_per_second": round((n_total - n_resumed) / seconds, 1) if seconds > 0 else None,
                      "image_folder": str(source.image_folder or images_dir)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return Result(out, files, summary)


def _check_meta(path: Path, meta: dict) -> None:
    """Refuse to resume a folder generated with other settings: its records would not fit together."""
    meta = json.loads(json.dumps(meta))  # tuples as lists, as they come back from the file
    if path.exists():
        old = json.loads(path.read_text())
        if old != meta:
            keys = sorted(k for k in old.keys() | meta.keys() if old.get(k) != meta.get(k))
            raise ValueError(f"{path.parent} was generated with other settings ({', '.join(keys)} differ: "
                             f"{ {k: old.get(k) for k in keys} } there, { {k: meta.get(k) for k in keys} } now); "
                             "use another output folder, or delete this one to start again")
    else:
        path.write_text(json.dumps(meta, indent=2) + "\n")


def _finalise(out: Path, source: Source) -> dict[str, Path]:
    """The journals -> LLaVA JSON in image order, each record validated on the way."""
    order = {im.id: i for i, im in enumerate(source.images)}
    files = {}
    for name, key in (("stage1", lambda r: r["id"]), ("stage2", lambda r: r["id"].rsplit("-", 1)[0])):
        records, _ = validate_records(out / f"{name}.jsonl", unique_ids=True)
        expected = len(source.images)
        if len(records) != expected:
            raise ValueError(f"{out / f'{name}.jsonl'} has {len(records)} records, expected {expected}")
        records.sort(key=lambda r: order[key(r)])
        files[name] = out / f"{name}.json"
        write_json(files[name], records)
    files["contexts"] = out / "contexts.json"
    write_json(files["contexts"], {im.id: im.context for im in source.images})
    files["images"] = source.image_folder or out / "images"
    return files


# -- statistics -------------------------------------------------------------------


def _words(text: str) -> int:
    return len(text.replace(IMAGE_TOKEN, " ").split())


def summarise(records: list[dict]) -> dict[str, Any]:
    """Counts and lengths (in words) per kind: records, turns, question and answer lengths."""
    kinds: dict[str, dict[str, Any]] = {}
    for r in records:
        k = kinds.setdefault(r.get("kind", "?"), {"records": 0, "turns": 0, "q_words": 0, "a_words": [],
                                                    "words": 0})
        turns = r["conversations"]
        k["records"] += 1
        k["turns"] += len(turns) // 2
        k["q_words"] += sum(_words(t["value"]) for t in turns[0::2])
        k["a_words"] += [_words(t["value"]) for t in turns[1::2]]
        k["words"] += sum(_words(t["value"]) for t in turns)
    n_instruct = sum(v["records"] for k, v in kinds.items() if k in STAGE2_KINDS)
    table = {}
    known = ("caption", *STAGE2_KINDS)
    for name in [*(k for k in known if k in kinds), *sorted(set(kinds) - set(known))]:
        v = kinds[name]
        table[name] = {
            "records": v["records"],
            "share": round(v["records"] / n_instruct, 3) if name in STAGE2_KINDS and n_instruct else None,
            "turns_per_record": round(v["turns"] / v["records"], 2),
            "question_words": round(v["q_words"] / v["turns"], 1),
            "answer_words": round(sum(v["a_words"]) / len(v["a_words"]), 1),
            "answer_words_max": max(v["a_words"]),
            "words_per_record": round(v["words"] / v["records"], 1),
        }
    return {"kinds": table}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a text table, plus the run's timing."""
    header = ("kind", "records", "share", "turns/record", "words/question", "words/answer", "max answer",
              "words/record")
    rows = [header]
    for name, v in summary["kinds"].items():
        share = "-" if v["share"] is None else f"{100 * v['share']:.1f}%"
        rows.append((name, str(v["records"]), share, f"{v['turns_per_record']:.2f}", f"{v['question_words']:.1f}",
                     f"{v['answer_words']:.1f}", str(v["answer_words_max"]), f"{v['words_per_record']:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if run := summary.get("run"):
        rate = run["records_per_second"]
        lines.append(f"generated {run['generated']} record(s) in {run['seconds']:.1f} s"
                     + (f" ({rate:.0f} records/s)" if rate else "")
                     + (f"; {run['resumed']} were already written" if run["resumed"] else "")
                     + f"; images in {run['image_folder']}")
    return "\n".join(lines)


# -- the command ----------------------------------------------------------------------


def parse_mix(text: str) -> tuple[float, float, float]:
    """"58:23:77" (or "58,23,77") -> (58.0, 23.0, 77.0)."""
    try:
        mix = tuple(float(v) for v in text.replace(",", ":").split(":"))
    except ValueError:
        mix = ()
    if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
        raise ValueError(f"--mix takes three non-negative weights conv:detail:complex, e.g. 58:23:77; got {text!r}")
    return mix  # type: ignore[return-value]


def main(argv: list[str]) -> None:
    import argparse

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
        mix = parse_mix(args.mix)
        teacher_name = args.teacher or ("toy" if args.toy is not None else "chat")
        if args.toy is not None:
            if args.toy < 1:
                raise ValueError(f"--toy takes a positive number of scenes, got {args.toy}")
            source = toy_source(args.toy, args.seed)
        else:
            if teacher_name == "toy":
                raise ValueError("the toy teacher reads only toy-world contexts; use --teacher chat with --coco")
            source = coco_source(args.coco, args.captions, args.instances, args.images, args.limit, args.copy_images)
        if teacher_name == "toy":
            from minillava.data.teacher import ToyTeacher

            teacher, settings, concurrency = ToyTeacher(), {"name": "toy"}, 1
        else:
            from minillava.data.chat_teacher import ChatTeacher

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
