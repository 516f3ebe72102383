"""An append-only JSON Lines file of records, the data pipeline's crash-safe memory of what it has written."""

from __future__ import annotations

import json
from pathlib import Path


class Journal:
    """An append-only JSON Lines file of records: one complete line per record, flushed when written.

    Reopening a journal recovers the ids already written, and cuts off a torn last line (the record that was in
    flight when the process was killed); a bad line anywhere else is damage and is refused.
    """

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
