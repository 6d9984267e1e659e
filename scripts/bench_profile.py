"""Where an actor's CPU goes under load: py-spy samples each actor process (from outside:
nothing in Rig changes to be profiled), and each sample is put in the area its
innermost known frame belongs to (decoding, validating, encoding, metrics, tracing,
logging, the NATS client, the event loop, SQLite, the rules, ...).

`scripts/bench profile` runs the five-step pipeline at 64 jobs in flight with one
process per actor kind and prints, per kind, the share of its samples in each area and
its busiest functions (by samples in the function itself). The method is what is kept
(this file); a run's output is read, then written up in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

# (area, pattern on a frame "function (file:line)"): the first area, from the innermost
# frame outwards, whose pattern a frame matches takes the sample.
AREAS: tuple[tuple[str, str], ...] = (
    (
        "decode + validate",
        r"unpackb|model_validate|validate_python|validate_json|decode_as|_decode|check_plain|\(.*pydantic",
    ),
    ("encode", r"packb|model_dump|dump_python|\bencode\b|canonical"),
    ("metrics", r"prometheus_client|/metrics\.py"),
    ("tracing", r"opentelemetry|/tracing\.py"),
    ("logging", r"structlog|/log\.py|logging/__init__"),
    ("sqlite", r"sqlite3|aiosqlite"),
    ("socket writes", r"writelines|_send_publish|_flusher"),
    ("nats client", r"\(nats/"),
    ("event loop (uvloop, in C)", r"^Runner\.run "),
    ("event loop", r"uvloop|asyncio/"),
    ("rules", r"/jobs/rules\.py"),
    ("rig, other", r"\((actors|protocols)/"),
)
# Frames every sample of an actor process has (its start): not counted as Rig's work.
_START = re.compile(r"\((actors/__main__|actors/cli/|actors/runtime/loop\.py|<frozen)")
_COMPILED = tuple((area, re.compile(pattern)) for area, pattern in AREAS)


@dataclass
class Profile:
    """One process's samples: how many, per area, and per function (its own samples)."""

    samples: int = 0
    areas: Counter[str] = field(default_factory=Counter)
    functions: Counter[str] = field(default_factory=Counter)
    within: Counter[str] = field(default_factory=Counter)  # Rig's functions, with callees

    def shares(self) -> dict[str, float]:
        return {area: round(n / max(self.samples, 1), 3) for area, n in self.areas.most_common()}


def read_raw(path: Path) -> Profile:
    """py-spy's `--format raw` output: `frame;frame;...;leaf COUNT` per line, outermost first."""
    profile = Profile()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        profile.samples += n
        profile.functions[_short(frames[-1])] += n
        profile.areas[_area(frames)] += n
        mine = (
            f for f in frames if re.search(r"\((actors|protocols)/", f) and not _START.search(f)
        )
        for rig in {_short(f) for f in mine}:
            profile.within[rig] += n
    return profile


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):
        for area, pattern in _COMPILED:
            if pattern.search(frame):
                return area
    return "other"


def _short(frame: str) -> str:
    """`function (path/to/module.py:12)` as `function (module.py)`."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    return f"{match[1]} ({Path(match[2]).name})"


async def sampled(
    pids: dict[str, int], out: Path, run: Callable[[], Awaitable[None]], *, rate: int = 250
) -> dict[str, Profile]:
    """Sample each process (by kind) with py-spy while `run` runs; their profiles."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    recorders = {}
    for kind, pid in pids.items():
        recorders[kind] = await asyncio.create_subprocess_exec(
            *(spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"),
            *("--nonblocking", "--output", str(out / f"{kind}.txt")),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    try:
        await run()
    finally:
        for recorder in recorders.values():
            with contextlib.suppress(ProcessLookupError):
                recorder.send_signal(signal.SIGINT)  # py-spy writes what it has, then exits
        for recorder in recorders.values():
            await asyncio.wait_for(recorder.wait(), 60)
    return await asyncio.to_thread(
        lambda: {k: read_raw(out / f"{k}.txt") for k in pids if (out / f"{k}.txt").exists()}
    )


def lines(kind: str, profile: Profile, top: int = 12) -> list[str]:
    """A profile as text: the areas' shares, then the busiest functions."""
    said = [f"{kind}: {profile.samples} samples"]
    said += [f"  {share:6.1%}  {area}" for area, share in profile.shares().items()]
    said.append("  busiest functions (own samples):")
    for function, n in profile.functions.most_common(top):
        said.append(f"  {n / max(profile.samples, 1):6.1%}  {function}")
    said.append("  Rig's functions, with what they call:")
    for function, n in profile.within.most_common(2 * top):
        said.append(f"  {n / max(profile.samples, 1):6.1%}  {function}")
    return said
