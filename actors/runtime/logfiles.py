"""Log files: what `rig up`'s actors write (JSON lines), and how `rig logs` reads them.

Every actor logs to stderr; with `RIG_LOG_FILE` set (as `rig up` sets it, one file per
process under `$RIG_HOME/logs`) it also appends each line, as JSON, to that file.
Handlers bind `job` to every line they log, so one job's lines can be found in all of
them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import structlog


class JsonFileWriter:
    """A structlog processor that appends the event as a JSON line to a file, unchanged."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered: a line is in the file once logged, even if the process is killed.
        self._file: IO[str] = path.open("a", buffering=1, encoding="utf-8")

    def __call__(
        self, logger: Any, method: str, event_dict: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        self._file.write(json.dumps(event_dict, default=str) + "\n")
        return event_dict


def job_lines(files: list[Path], job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every JSON line of `files` about `job_id`, with the file it came from, in time order."""
    found: list[tuple[str, dict[str, Any]]] = []
    needle = json.dumps(job_id)
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if needle not in line:  # cheap filter before parsing
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and job_id in (entry.get("job"), entry.get("job_id")):
                    found.append((path.stem, entry))
    found.sort(key=lambda item: str(item[1].get("timestamp", "")))
    return found
