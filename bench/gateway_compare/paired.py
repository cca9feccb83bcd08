"""Paired rounds: one closed-loop load on each of a few servers in turn, every round recorded on its own.

`loads.run_paths` folds a path's rounds into one Run, which is what `make bench`'s tables need. A comparison of
two or three servers wants the rounds kept: these machines drift within a run, so the figure is the median of the
round-by-round ratios, with the lowest and the highest beside it to show the spread.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway_compare.callers import CallPath
from gateway_compare.loads import Run, run_load

# Unmeasured calls per server before the first round: connections, the runtime's workers, caches and threads.
WARMUP_CALLS = 200


@dataclass
class Contender:
    """One server of a comparison: what it is, the path its callers take, and what each of its rounds measured."""

    key: str
    label: str
    path: CallPath | None = None
    rounds: list[Run] = field(default_factory=list)
    idle_shares: list[float] = field(default_factory=list)


def idle_and_total() -> tuple[int, int]:
    """Idle and total jiffies of all cores since boot, from /proc/stat (idle counts iowait too)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


async def measure_rounds(contenders: list[Contender], function: str, callers: int, rounds: int, seconds: float) -> None:
    """`rounds` rounds of `callers` callers on each contender in turn, the order rotated each round."""
    for contender in contenders:
        assert contender.path is not None
        await run_load(contender.path, function, callers, calls=WARMUP_CALLS)
    for number in range(rounds):
        shift = number % len(contenders)
        for contender in [*contenders[shift:], *contenders[:shift]]:
            assert contender.path is not None
            idle_before, total_before = idle_and_total()
            contender.rounds.append(await run_load(contender.path, function, callers, seconds=seconds))
            idle_after, total_after = idle_and_total()
            contender.idle_shares.append((idle_after - idle_before) / max(1, total_after - total_before))


def figures(contender: Contender) -> dict[str, Any]:
    """A contender's figures over all its rounds: Run's summary, its median calls/s and the idle share of the cores."""
    total = Run()
    for run in contender.rounds:
        total.add(run)
    return {
        "label": contender.label,
        **total.summary(),
        "calls_per_s_median": round(statistics.median(run.calls_per_second for run in contender.rounds), 1),
        "idle_share": round(statistics.mean(contender.idle_shares), 3),
    }


def ratio(over: Contender, base: Contender) -> dict[str, Any]:
    """`over`'s calls/s divided by `base`'s, round by round: the median, the lowest, the highest, and each."""
    ratios = [
        mine.calls_per_second / theirs.calls_per_second if theirs.calls_per_second else 0.0
        for mine, theirs in zip(over.rounds, base.rounds, strict=True)
    ]
    return {
        "calls_per_s_median": round(statistics.median(ratios), 3),
        "calls_per_s_lowest": round(min(ratios), 3),
        "calls_per_s_highest": round(max(ratios), 3),
        "by_round": [round(value, 3) for value in ratios],
    }
