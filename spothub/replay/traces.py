"""A trace folder as the replay reads it: one capacity series per zone on one clock, with prices.

Files are read by the sandbox market's loader (same format, same file names). Files of unequal
length are aligned to the longest: past the end of a shorter file its zone has no capacity (as in
the sandbox's replay), so the replay covers every measured tick and never invents capacity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from spothub.data import PRICES_FILE, TRACES_DIR
from spothub.sandbox.market import TRACE_FILE, load_prices, load_traces, region_of

DEFAULT_PRICES = PRICES_FILE
DEFAULT_TRACES = TRACES_DIR
DEFAULT_SHAPE = "v100_1"


class ReplayInputError(ValueError):
    """A trace folder or prices file the replay cannot use; the message says what to fix."""


@dataclass(frozen=True)
class TraceSet:
    name: str
    shape: str
    instance_type: str
    gap_seconds: float
    zones: tuple[str, ...]
    capacity: tuple[tuple[int, ...], ...]  # per zone (same order as `zones`), all of one length
    measured_ticks: tuple[int, ...]  # per zone: the length of its file before alignment
    spot_prices: Mapping[str, float]  # region -> hourly USD
    on_demand_price: float

    @property
    def ticks(self) -> int:
        return len(self.capacity[0])

    @property
    def duration_s(self) -> float:
        return self.ticks * self.gap_seconds

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(sorted({region_of(zone) for zone in self.zones}))


def align(series: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    """Pad every series with zeros (no capacity) to the longest one."""
    length = max(len(s) for s in series)
    return tuple(tuple(s) + (0,) * (length - len(s)) for s in series)


def trace_set(
    name: str,
    series: Mapping[str, Sequence[int]],
    *,
    gap_seconds: float,
    spot_prices: Mapping[str, float],
    on_demand_price: float,
    shape: str = DEFAULT_SHAPE,
    instance_type: str = "p3.2xlarge",
) -> TraceSet:
    """A trace set from in-memory series (zone -> capacity per tick)."""
    if not series or not any(series.values()):
        raise ReplayInputError(f"{name}: no ticks to replay")
    if gap_seconds <= 0:
        raise ReplayInputError(f"{name}: gap_seconds must be positive, not {gap_seconds}")
    zones = tuple(sorted(series))
    missing = sorted({region_of(z) for z in zones} - set(spot_prices))
    if missing:
        raise ReplayInputError(f"no spot price for {instance_type} in {', '.join(missing)}")
    return TraceSet(
        name=name,
        shape=shape,
        instance_type=instance_type,
        gap_seconds=float(gap_seconds),
        zones=zones,
        capacity=align([series[z] for z in zones]),
        measured_ticks=tuple(len(series[z]) for z in zones),
        spot_prices=dict(spot_prices),
        on_demand_price=float(on_demand_price),
    )


def holds_traces(directory: Path, shape: str | None = None) -> bool:
    """Whether `directory` itself holds trace files (of `shape`, when given)."""
    for file in directory.glob("*.json"):
        match = TRACE_FILE.match(file.name)
        if match and (shape is None or match["shape"] == shape):
            return True
    return False


def trace_folders(directory: Path) -> list[Path]:
    """The folders directly under `directory` that hold trace files, by name: `directory` is a parent of trace
    folders (like data/traces) when it holds none itself and this is not empty."""
    return sorted((p for p in directory.iterdir() if p.is_dir() and holds_traces(p)), key=lambda p: p.name)


def replica_limit(traces: TraceSet, replicas: int) -> str | None:
    """Why `replicas` cannot be replayed over these traces, or None. Production places at most one replica per
    region, and POST /spot-provisioning refuses more replicas than worker regions
    (spothub_core.logic.provisioning); the replay refuses the same in the same words, with the traces' regions
    standing in for the worker regions."""
    regions = traces.regions
    if replicas <= len(regions):
        return None
    held = f"{len(regions)} region" + ("" if len(regions) == 1 else "s")
    return f"replicas: at most one replica per region, and the traces hold {held} ({', '.join(regions)})"


def load_trace_set(directory: Path, *, shape: str = DEFAULT_SHAPE, prices: Path = DEFAULT_PRICES) -> TraceSet:
    if not directory.is_dir():
        raise ReplayInputError(f"no trace directory {directory}")
    try:
        shapes, instance_types = load_prices(prices)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReplayInputError(f"cannot read the prices file {prices}: {exc}") from exc
    if shape not in shapes:
        raise ReplayInputError(f"unknown shape {shape!r}; the prices file knows {', '.join(sorted(shapes))}")
    try:
        traces = load_traces(directory, shapes, shape)
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ReplayInputError(str(exc)) from exc
    gaps = {t.gap_seconds for t in traces}
    if len(gaps) > 1:
        raise ReplayInputError(f"{directory}: files disagree on gap_seconds ({', '.join(map(str, sorted(gaps)))})")
    instance_type = shapes[shape]
    known = instance_types.get(instance_type)
    if known is None:
        raise ReplayInputError(f"the prices file has no prices for {instance_type} (shape {shape})")
    return trace_set(
        directory.resolve().name,
        {t.zone: t.data for t in traces},
        gap_seconds=gaps.pop(),
        spot_prices={region: float(price) for region, price in known.get("spot", {}).items()},
        on_demand_price=float(known["on_demand"]),
        shape=shape,
        instance_type=instance_type,
    )
