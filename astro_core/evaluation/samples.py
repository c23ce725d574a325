"""`samples.jsonl`: one graded sample per line, appended round by round, read back on resume.

A line:

    {"benchmark", "problem_id", "sample_index", "response", "extracted_answer", "correct",
     "tokens", "finish_reason", "backtracks", "reflections", "positive_verdicts",
     "verdict", "model_version", "seed"}

`verdict` is the verifier's reason ("equal", "not equal", "no answer", "timeout", "error:
...").

A round's lines are written with one `write` and fsync'd, so a killed run leaves at most one
torn last line; `SampleLog` cuts it off when it opens the file. A sample is identified by
(benchmark, problem_id, sample_index): a key already on disk is never written again, and if
one were (a file edited by hand) only its first line counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

SampleKey = tuple[str, str, int]
# The files of an evaluation's output directory.
SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
PROTOCOL_FILE = "eval.json"


@dataclass(frozen=True)
class SampleRecord:
    benchmark: str
    problem_id: str
    sample_index: int
    response: str
    extracted_answer: str
    correct: bool
    tokens: int
    finish_reason: str
    backtracks: int
    reflections: int
    positive_verdicts: int
    model_version: str
    seed: int  # the seed of the problem's generate call; sample i draws stream i of it
    verdict: str = ""  # the verifier's reason for `correct`

    @property
    def key(self) -> SampleKey:
        return (self.benchmark, self.problem_id, self.sample_index)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleRecord:
        missing = [f.name for f in fields(cls) if f.name not in data and f.name != "verdict"]
        if missing:
            raise ValueError(f"missing fields {', '.join(missing)}")
        if not isinstance(data["correct"], bool):
            raise ValueError("correct must be true or false")
        return cls(
            benchmark=str(data["benchmark"]),
            problem_id=str(data["problem_id"]),
            sample_index=int(data["sample_index"]),
            response=str(data["response"]),
            extracted_answer=str(data["extracted_answer"]),
            correct=bool(data["correct"]),
            tokens=int(data["tokens"]),
            finish_reason=str(data["finish_reason"]),
            backtracks=int(data["backtracks"]),
            reflections=int(data["reflections"]),
            positive_verdicts=int(data["positive_verdicts"]),
            model_version=str(data["model_version"]),
            seed=int(data["seed"]),
            verdict=str(data.get("verdict", "")),
        )


def iter_samples(path: str | Path) -> Iterator[SampleRecord]:
    """Every complete sample line of a file; a torn last line is skipped, others are errors."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                yield SampleRecord.from_dict(data)
            except (ValueError, TypeError) as exc:
                if not line.endswith("\n"):
                    return  # the torn end of an interrupted write
                raise ValueError(f"{path}:{number}: not a valid sample: {exc}") from exc


class SampleLog:
    """The samples of an output directory: the ones on disk, plus appends.

    Kept in memory without their response text (what scores need is small; a 32K-token
    evaluation's responses are not), the file has them in full.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: dict[SampleKey, SampleRecord] = {}
        if self.path.exists():
            self._cut_torn_end()
            for record in iter_samples(self.path):
                self.records.setdefault(record.key, replace(record, response=""))

    def _cut_torn_end(self) -> None:
        """Drop bytes after the last newline: an interrupted write's partial line."""
        with self.path.open("rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            position = size
            while position > 0:
                step = min(65536, position)
                handle.seek(position - step)
                chunk = handle.read(step)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    end = position - step + newline + 1
                    break
                position -= step
            else:
                end = 0
            if end < size:
                handle.truncate(end)

    def has(self, key: SampleKey) -> bool:
        return key in self.records

    def versions(self) -> set[str]:
        return {r.model_version for r in self.records.values()}

    def append(self, records: Iterable[SampleRecord]) -> int:
        """Write the records whose keys are new, in one write, then fsync; returns how many."""
        new = [r for r in records if r.key not in self.records]
        if not new:
            return 0
        text = "".join(r.to_json() + "\n" for r in new)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        for record in new:
            self.records[record.key] = replace(record, response="")
        return len(new)

    def of_problem(self, benchmark: str, problem_id: str, n: int) -> list[SampleRecord] | None:
        """The problem's n samples in index order, or None while any is missing."""
        found = [self.records.get((benchmark, problem_id, i)) for i in range(n)]
        if any(r is None for r in found):
            return None
        return [r for r in found if r is not None]
