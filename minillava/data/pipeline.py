"""The paper's data pipeline, from images to LLaVA JSON, resumable: what `minillava gen-data` runs.

    image source (toy scenes, or a COCO-style folder; ``sources.py``) -> symbolic context -> teacher -> records

The toy run (``toy_data.py``) makes its stage-1 and stage-2 records through this same function, so `minillava toy`
and `minillava gen-data --toy` write the same records for the same scenes and seed.

Output folder:
- ``stage2.jsonl`` / ``stage1.jsonl``: the journals (``journal.py``). Each record is appended as one line and
  flushed as soon as it exists, so a crash or kill loses at most the records in flight (one with the toy teacher;
  up to `concurrency` with a chat teacher). Running again with the same settings resumes: it skips every id
  already written.
- ``stage2.json`` (instruction data: one record per image, conv / detail / complex in the `mix` proportions,
  the paper's 58K : 23K : 77K by default) and ``stage1.json`` (one caption pair per image, for feature
  alignment): LLaVA JSON in the original format, written once every record is there, in image order.
- ``contexts.json`` ({image id: symbolic context}), ``images/`` (toy scenes, or copies of COCO images with
  ``--copy-images``; otherwise records name files in the COCO image folder), ``meta.json`` (the settings, checked
  when resuming), ``summary.json`` (counts and lengths), ``errors.jsonl`` (records the teacher failed on in the last
  run; running again retries them).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from minillava.constants import IMAGE_TOKEN, PAPER_MIX, STAGE2_KINDS, Turns, check_mix
from minillava.data.instructions import caption_pair
from minillava.data.journal import Journal
from minillava.data.sources import Source, SourceImage
from minillava.data.teacher import Teacher
from minillava.data.validate import check_record, validate_records, write_json

IMAGE_PREFIX = IMAGE_TOKEN + "\n"  # how the image opens the first human turn of every record we write


def make_record(record_id: str, kind: str, turns: Turns, image: str | None, prefix: str = IMAGE_PREFIX) -> dict:
    """A LLaVA record: {"id", "image", "kind", "conversations"}; `prefix` (the image token, or for a text-only
    record the scene described in words) opens the first question."""
    record: dict[str, Any] = {"id": record_id}
    if image is not None:
        record["image"] = image
    record["kind"] = kind
    conversations = []
    for i, (question, answer) in enumerate(turns):
        conversations.append({"from": "human", "value": prefix + question if i == 0 else question})
        conversations.append({"from": "gpt", "value": answer})
    record["conversations"] = conversations
    return record


def record_rng(purpose: str, seed: int, record_id: str) -> random.Random:
    """One rng per record: a record depends only on (purpose, seed, id) and its kind, never on the records
    written before it, so a resumed run writes what an uninterrupted one would have. (Stage-2 kinds are planned
    over the whole source, so a larger source may give an image another kind.)"""
    return random.Random(f"{purpose}/{seed}/{record_id}")


def plan_kinds(n: int, mix: tuple[float, ...] = PAPER_MIX, seed: int = 0) -> list[str]:
    """A response kind for each of n images: counts in the `mix` proportions (largest remainder), order shuffled."""
    mix = check_mix(mix)
    exact = [n * w / sum(mix) for w in mix]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(mix)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    kinds = [k for k, c in zip(STAGE2_KINDS, counts) for _ in range(c)]
    random.Random(f"mix/{seed}").shuffle(kinds)
    return kinds


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
    overwrite: bool = False,
) -> Result:
    """Generate (or finish generating) the data set of `source` into `out`; see the module docstring.

    Records are deterministic given (source, teacher, mix, seed): each draws from its own seeded rng, so a
    resumed run writes exactly what an uninterrupted one would have (for a deterministic teacher).
    Raises GenerationFailed if the teacher failed on some records (after its own retries), once more than
    `max_failures` have failed, or at once on a fatal teacher error (e.g. a rejected API key).
    `overwrite` starts again instead of resuming: the journals, settings and errors of an earlier run in `out` are
    deleted and every image is written anew (the JSON files are rewritten at the end in any case).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images_dir = out / "images"
    if source.image_folder is None:
        images_dir.mkdir(exist_ok=True)
    kinds = plan_kinds(len(source.images), mix, seed)
    if overwrite:
        for name in ("meta.json", "stage1.jsonl", "stage2.jsonl", "errors.jsonl"):
            (out / name).unlink(missing_ok=True)
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

    def finish(im: SourceImage, kind: str, outcome: Callable[[], Turns]) -> None:
        """Write the record whose turns `outcome` returns, or note the teacher's failure on it."""
        rid = f"{im.id}-{kind}"
        try:
            record = make_record(rid, kind, outcome(), im.image)
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
            if source.image_folder is None and im.write and (overwrite or not (images_dir / im.image).exists()):
                _write_image(im.write, images_dir / im.image)
            if im.id not in stage1.ids:
                pair = caption_pair(im.context, record_rng("stage1", seed, im.id))
                stage1.append(make_record(im.id, "caption", [pair], im.image))
                if bar:
                    bar.update()
            rid = f"{im.id}-{kind}"
            if rid in stage2.ids:
                continue
            rng = record_rng("stage2", seed, rid)
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
