"""How long the replay takes: every policy over a synthetic 45-day, 9-zone trace (target: under a minute).

    .venv/bin/python benchmarks/replay_bench.py [--days 45] [--gap 32] [--seed 7]

The trace is written as a trace folder (9 zones in the 3 regions prices.json prices for p3.2xlarge)
and replayed the way `spothub replay` does it: load, then each registered policy in turn, then the Pareto
check. The default gap is the finest of the repository's traces (data/traces: 32 s), so the run has the most
ticks. Single-threaded throughout.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from spothub.replay.pareto import pareto_check
from spothub.replay.policies import POLICIES
from spothub.replay.report import render_table, replay
from spothub.replay.traces import DEFAULT_PRICES, load_trace_set

REGIONS = ("us-east-1", "us-east-2", "us-west-2")
ZONE_LETTERS = ("a", "b", "c")
MAX_CAPACITY = 4


def synthetic_series(ticks: int, gap_s: float, rng: random.Random) -> list[int]:
    """Capacity that holds a level for a while (about 2 h on average when up, 30 min when down), then moves."""
    series: list[int] = []
    level = rng.randint(0, MAX_CAPACITY)
    while len(series) < ticks:
        mean_s = 7200.0 if level else 1800.0
        hold = max(1, round(rng.expovariate(1.0 / mean_s) / gap_s))
        series.extend([level] * hold)
        level = rng.choice([n for n in range(MAX_CAPACITY + 1) if n != level])
    return series[:ticks]


def write_trace_folder(folder: Path, *, days: float, gap_s: float, seed: int) -> int:
    rng = random.Random(seed)  # noqa: S311 (a reproducible synthetic trace, not a secret)
    ticks = round(days * 86400 / gap_s)
    for region in REGIONS:
        for letter in ZONE_LETTERS:
            document = {"metadata": {"gap_seconds": gap_s}, "data": synthetic_series(ticks, gap_s, rng)}
            (folder / f"{region}{letter}_v100_1.json").write_text(json.dumps(document))
    return ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=45.0)
    parser.add_argument("--gap", type=float, default=32.0, help="seconds per tick")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
        folder = Path(tmp) / "synthetic"
        folder.mkdir()
        ticks = write_trace_folder(folder, days=args.days, gap_s=args.gap, seed=args.seed)
        started = time.perf_counter()
        cpu_started = time.process_time()
        traces = load_trace_set(folder, prices=DEFAULT_PRICES)
        loaded = time.perf_counter() - started
        timings = {}
        results = {}
        for name in POLICIES:
            policy_started = time.perf_counter()
            results.update(replay(traces, policies=[name])["policies"])
            timings[name] = time.perf_counter() - policy_started
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    result = {"trace": traces.name, "shape": traces.shape, "replicas": 1, "cold_start_s": 300, "policies": results}
    print(render_table(result, traces))
    print()
    print(pareto_check(result).line())
    print()
    print(f"replay benchmark: {args.days:g} days x 9 zones = {ticks} ticks x {args.gap:g} s")
    print(f"  load {loaded:.2f} s; " + "; ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items()))
    print(f"  all policies, load included: {wall:.1f} s wall, {cpu:.1f} s CPU (target: under 60 s on one core)")


if __name__ == "__main__":
    main()
