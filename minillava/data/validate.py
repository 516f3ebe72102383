"""Read, validate and write LLaVA JSON: the format of the paper's data files, and of ours.

A file is a JSON array of records (``.json``, the original format) or one record per line (``.jsonl``, what
``minillava gen-data`` appends to while it runs). A record::

    {"id": "000000033471", "image": "000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is ...?"}, {"from": "gpt", "value": "..."}, ...]}

Rules, as the original data follows them: turns alternate human / gpt, starting with human, none empty;
``<image>`` appears exactly once, in the first human turn, before the question ("<image>\\n...") or after it
("...\\n<image>"; the paper put it on either side at random); a record without "image" is text-only and has no
``<image>``. Optional string fields: "kind" (ours: conv / detail / complex / vqa / caption) and "model" (in
LLaVA-1.5's mix665k; nothing reads it, so it may be empty). An integer id, as some original files have, is read as
its decimal string.

Every problem raises ``LlavaDataError`` naming the file and the record (index and id, or line); with
``skip_bad=True`` bad records are left out instead and listed in the returned ``LoadReport``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minillava.constants import IMAGE_TOKEN

KNOWN_FIELDS = ("id", "image", "conversations", "kind", "model")
_OPTIONAL_STRINGS = ("image", "kind", "model")
_MAY_BE_EMPTY = ("model",)
_WHITESPACE = re.compile(r"\s*")

log = logging.getLogger(__name__)


class LlavaDataError(ValueError):
    """A bad LLaVA JSON file or record; the message names the file and the record."""


def llava_features():
    """Explicit `datasets` features: ids stay strings even when they look like numbers ("000000006")."""
    from datasets import Features, List, Value  # lazy: only loading through `datasets` needs it

    string = Value("string")
    return Features({
        "id": string,
        "image": string,  # None for text-only records
        "conversations": List({"from": string, "value": string}),
        "kind": string,
        "model": string,
    })


# -- one record -------------------------------------------------------------------


def check_record(record: Any) -> str | None:
    """The first problem with one LLaVA record, or None if it is well formed."""
    if not isinstance(record, dict):
        return f"record is not an object (got {type(record).__name__})"
    if unknown := sorted(set(record) - set(KNOWN_FIELDS)):
        return f"unknown field(s) {unknown}; known: {list(KNOWN_FIELDS)}"
    rid = record.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or rid == "":
        return 'missing or empty "id" (a string, or an integer)'
    for key in _OPTIONAL_STRINGS:
        if key in record and not isinstance(record[key], str):
            return f'"{key}" must be a string'
        if key in record and not record[key] and key not in _MAY_BE_EMPTY:
            return f'"{key}" must not be empty'
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return 'missing or empty "conversations"'
    if len(turns) % 2:
        return f"{len(turns)} turns: must be human/gpt pairs"
    for t, turn in enumerate(turns):
        expected = "human" if t % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or turn.get("from") != expected:
            got = turn.get("from") if isinstance(turn, dict) else turn
            return f"turn {t} must be from {expected!r}, got {got!r} (roles out of order)"
        value = turn.get("value")
        if not isinstance(value, str) or not value.replace(IMAGE_TOKEN, "").strip():
            return f"turn {t} has an empty or missing value"
        if t > 0 and IMAGE_TOKEN in value:
            return f"turn {t}: {IMAGE_TOKEN} may only appear in the first human turn"
    first = turns[0]["value"]
    if "image" not in record:
        return f'{IMAGE_TOKEN} in a record without "image"' if IMAGE_TOKEN in first else None
    if first.count(IMAGE_TOKEN) != 1:
        return f"first human turn must contain {IMAGE_TOKEN} exactly once, found {first.count(IMAGE_TOKEN)}"
    if not (first.startswith(IMAGE_TOKEN + "\n") or first.endswith("\n" + IMAGE_TOKEN)):
        return f"first human turn must start with {IMAGE_TOKEN!r} + newline or end with newline + {IMAGE_TOKEN!r}"
    return None


def check_image(folder: Path, name: str) -> str | None:
    """None if `folder/name` is an image Pillow can read, else the problem."""
    from PIL import Image

    path = Path(folder) / name
    if not path.is_file():
        return f"image {path} not found"
    try:
        with Image.open(path) as im:
            im.verify()  # reads the whole file and checks its structure without decoding pixels
    except Exception as exc:  # Pillow raises many types for broken files; all mean "unreadable"
        return f"image {path} cannot be read: {exc}"
    return None


# -- reading a file ---------------------------------------------------------------


@dataclass(frozen=True)
class _Malformed:
    """A record that is not valid JSON: where, and why."""

    line: int
    column: int
    message: str


def _iter_jsonl(text: str) -> Iterator[tuple[int, str, Any]]:
    index = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield index, f"line {lineno}", json.loads(line)
        except json.JSONDecodeError as exc:
            yield index, f"line {lineno}", _Malformed(lineno, exc.colno, exc.msg)
        index += 1


def _iter_array(text: str, path: Path) -> Iterator[tuple[int, str, Any]]:
    """The elements of a JSON array one by one, so a syntax error can be pinned to a record."""
    decoder = json.JSONDecoder()
    counted = [0, 1]  # (position, line number there): positions only grow, so lines are counted on from the last
    # call, not from the start of the file each time, which made loading quadratic in its size

    def where(pos: int) -> tuple[int, int]:
        last, line = counted
        line += text.count("\n", last, pos)
        counted[:] = [pos, line]
        return line, pos - text.rfind("\n", 0, pos)

    i = _WHITESPACE.match(text).end()
    if text[i : i + 1] != "[":
        try:
            found = type(json.loads(text)).__name__
        except json.JSONDecodeError as exc:
            raise LlavaDataError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        raise LlavaDataError(f"{path}: expected a list of records, got {found}")
    i = _WHITESPACE.match(text, i + 1).end()
    index = 0
    while text[i : i + 1] != "]":
        start = i
        try:
            record, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            yield index, f"line {exc.lineno}", _Malformed(exc.lineno, exc.colno, exc.msg)
            return
        yield index, f"line {where(start)[0]}", record
        index += 1
        i = _WHITESPACE.match(text, i).end()
        if text[i : i + 1] == ",":
            i = _WHITESPACE.match(text, i + 1).end()
        elif text[i : i + 1] != "]":
            yield index, f"line {where(i)[0]}", _Malformed(*where(i), "expected ',' or ']' after a record")
            return
    if text[i + 1 :].strip():
        line, column = where(i + 1 + len(text[i + 1 :]) - len(text[i + 1 :].lstrip()))
        yield index, f"line {line}", _Malformed(line, column, "extra data after the closing ']'")


@dataclass(frozen=True)
class SkippedRecord:
    index: int  # position in the file, counting from 0
    id: str | None
    reason: str


@dataclass
class LoadReport:
    path: Path
    n_read: int = 0
    skipped: list[SkippedRecord] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"{self.path}: kept {self.n_read - len(self.skipped)} of {self.n_read} records"
        if not self.skipped:
            return head
        lines = [f"  record {s.index} (id={s.id!r}): {s.reason}" for s in self.skipped]
        return "\n".join([f"{head}, skipped {len(self.skipped)}:"] + lines)


def validate_records(
    path: str | Path,
    image_folder: str | Path | None = None,
    skip_bad: bool = False,
    unique_ids: bool = False,
) -> tuple[list[dict], LoadReport]:
    """Every record of a .json / .jsonl file, checked; images too when `image_folder` is given.

    Ids may repeat unless `unique_ids` (the paper's files give the conversation, detail and complex records of
    one image the image's id). With `skip_bad`, bad records are left out and listed in the report; a syntax
    error inside a JSON array still raises, since the records after it cannot be found.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LlavaDataError(f"{path}: cannot read: {exc}") from None
    items = _iter_jsonl(text) if path.suffix == ".jsonl" else _iter_array(text, path)
    report = LoadReport(path)
    records: list[dict] = []
    seen: set[str] = set()
    for index, where, record in items:
        report.n_read += 1
        rid = record.get("id") if isinstance(record, dict) else None
        rid = str(rid) if isinstance(rid, int) and not isinstance(rid, bool) else rid
        if isinstance(record, _Malformed):
            problem = f"malformed JSON at line {record.line} column {record.column}: {record.message}"
            if path.suffix != ".jsonl":  # in an array, the records after it cannot be found: never skippable
                raise LlavaDataError(f"{path}: record {index} (id=None) at {where}: {problem}")
        else:
            problem = check_record(record)
        if problem is None and image_folder is not None and "image" in record:
            problem = check_image(Path(image_folder), record["image"])
        if problem is None and unique_ids and rid in seen:
            problem = "duplicate id"
        if problem is None:
            seen.add(rid)
            records.append({**record, "id": rid})
        elif skip_bad:
            report.skipped.append(SkippedRecord(index, rid if isinstance(rid, str) else None, problem))
        else:
            raise LlavaDataError(f"{path}: record {index} (id={rid!r}) at {where}: {problem}")
    if report.skipped:
        log.warning("%s", report)
    return records, report


def load_llava_json(path: str | Path) -> list[dict]:
    """A LLaVA JSON file as a list of records, strict: the first bad record or repeated id raises."""
    return validate_records(path, unique_ids=True)[0]


def load_llava(
    path: str | Path,
    image_folder: str | Path | None = None,
    skip_bad: bool = False,
    unique_ids: bool = False,
):
    """A LLaVA JSON file as a `datasets.Dataset` with `llava_features()`, and the report of what was skipped.

    Absent optional fields ("image" of a text-only record, "kind", "model") are None in the dataset;
    ``save_llava_json`` leaves them out again, so a file round-trips unchanged.
    """
    from datasets import Dataset

    records, report = validate_records(path, image_folder, skip_bad, unique_ids)
    rows = [{key: r.get(key) for key in KNOWN_FIELDS} for r in records]
    return Dataset.from_list(rows, features=llava_features()), report


def to_llava_records(rows) -> list[dict]:
    """Dataset rows (or dicts) -> records in the original format: fields that are None are left out."""
    return [{k: v for k, v in dict(row).items() if v is not None} for row in rows]


def write_json(path: Path, data: list | dict) -> None:
    """A JSON array (or object) with one record per line: valid JSON, easy to read and diff.

    Written by json's fast C encoder (indent=... falls back to the slow pure-Python one).
    """
    if isinstance(data, dict):
        items = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in data.items()]
        open_, close = "{", "}"
    else:
        items = [json.dumps(r, ensure_ascii=False) for r in data]
        open_, close = "[", "]"
    body = ",\n".join(items)
    Path(path).write_text(f"{open_}\n{body}\n{close}\n" if items else f"{open_}{close}\n", encoding="utf-8")


def save_llava_json(rows, path: str | Path) -> Path:
    """Write a Dataset (or records) as original-format LLaVA JSON; each record is checked first."""
    records = to_llava_records(rows)
    for index, record in enumerate(records):
        if problem := check_record(record):
            raise LlavaDataError(f"{path}: record {index} (id={record.get('id')!r}): {problem}")
    write_json(Path(path), records)
    return Path(path)
