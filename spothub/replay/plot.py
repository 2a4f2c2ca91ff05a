"""Cost against availability for every policy, one panel per trace folder (`spothub replay --plot FILE.png`).

Availability is drawn on a "nines" scale, -log10(1 - availability): 90 %, 99 %, 99.9 % are evenly spaced, so
the 98-100 % where the serious policies sit is readable beside a baseline at 30 %. 100 % (on-demand) has no
place on that scale: it gets a row of its own above the panel's top (at least 99.9 %, the long-run target),
past a dotted break. Each panel shades where a policy beats `hedge` (the Pareto check's bar), draws the Pareto
frontier and outlines the long-run target.

Matplotlib is imported when a figure is drawn, never at the CLI's start-up (which reads FORMATS from here). The
figure is drawn on the Agg canvas directly (no screen, no pyplot state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spothub.replay.pareto import BASELINE, COST_FACTOR, DEFAULT_CANDIDATE, pareto_frontier

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# The long-run target, outlined in every panel: at least this availability at most this cost.
TARGET_AVAILABILITY = 0.999
TARGET_COST = 0.45
# The availability ticks a panel may show (those in its range do), 100 % aside.
AVAILABILITY_TICKS = (0.0, 0.5, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999, 0.99995, 0.99999)
# Every panel shows this availability and up, at least.
LOWEST_SHOWN = 0.98
# The 100 % row sits this far (in nines) above the panel's top; the break line halfway.
FULL_ROW_GAP = 0.5
MAX_COLUMNS = 3
PANEL_INCHES = (5.6, 4.8)
DPI = 110
LABEL_FONT = 7.5
# The formats --plot accepts, by suffix.
FORMATS = (".png", ".svg", ".pdf")


@dataclass(frozen=True)
class NinesAxis:
    """Heights on one panel's availability axis: -log10(1 - a) up to `ceiling`, 100 % in its own row above."""

    ceiling: float

    @classmethod
    def fitting(cls, availabilities: Sequence[float]) -> NinesAxis:
        below_full = [_nines(a) for a in availabilities if a < 1.0]
        highest = max(below_full, default=0.0)
        # Half a nine of room above the best policy short of 100 %, and never below the target.
        return cls(ceiling=max(_nines(TARGET_AVAILABILITY), math.ceil(2 * highest + 1) / 2))

    @property
    def full_row(self) -> float:
        return self.ceiling + FULL_ROW_GAP

    def height(self, availability: float) -> float:
        if availability >= 1.0:
            return self.full_row
        return min(_nines(availability), self.ceiling)

    def ticks(self, bottom: float) -> list[tuple[float, str]]:
        shown = [(_nines(a), _percent(a)) for a in AVAILABILITY_TICKS if bottom <= _nines(a) <= self.ceiling + 1e-9]
        return [*shown, (self.full_row, "100 %")]


def _nines(availability: float) -> float:
    """-log10(1 - availability), below 1: 0.9 -> 1, 0.99 -> 2, 0.999 -> 3."""
    return -math.log10(1.0 - availability)


def grid(panels: int) -> tuple[int, int]:
    """Rows and columns for `panels` panels: at most MAX_COLUMNS a row."""
    columns = max(1, min(panels, MAX_COLUMNS))
    return math.ceil(panels / columns), columns


def draw(results: Sequence[dict[str, Any]], *, candidate: str = DEFAULT_CANDIDATE) -> Figure:
    """A figure of one panel per result of `report.replay`, in order (`figure.axes`); the grid's spare cells go."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (see the module's docstring)
    from matplotlib.figure import Figure  # noqa: PLC0415

    if not results:
        raise ValueError("nothing to plot: no replay result")
    rows, columns = grid(len(results))
    figure = Figure(figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows + 0.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    cells = figure.subplots(rows, columns, squeeze=False).flatten()
    # One colour per policy, the same in every panel.
    names = list(dict.fromkeys(name for result in results for name in result["policies"]))
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    panels = [_panel(ax, result, colours, candidate) for ax, result in zip(cells, results, strict=False)]
    for ax in cells[len(results) :]:
        ax.remove()
    first = results[0]
    replicas = first["replicas"]
    figure.suptitle(
        f"spothub replay: cost against availability ({first['shape']}, {replicas} "
        f"{'replica' if replicas == 1 else 'replicas'}, cold start {first['cold_start_s']:g} s)"
    )
    handles, labels = cells[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8, frameon=False)
    # The labels are placed once the layout has sized the panels: where they fit depends on it.
    figure.draw_without_rendering()
    for ax, (points, axis) in zip(cells, panels, strict=False):
        _label_points(ax, points, axis, candidate)
    return figure


def write_plot(results: Sequence[dict[str, Any]], path: Path, *, candidate: str = DEFAULT_CANDIDATE) -> Figure:
    figure = draw(results, candidate=candidate)
    figure.savefig(path)
    return figure


def _panel(
    ax: Axes, result: dict[str, Any], colours: dict[str, str], candidate: str
) -> tuple[dict[str, tuple[float, float]], NinesAxis]:
    """Everything of one panel but the points' labels; its points (name -> cost %, availability) and axis."""
    policies = result["policies"]
    points = {name: (100 * p["cost_vs_on_demand"], p["availability"]) for name, p in policies.items()}
    axis = NinesAxis.fitting([a for _, a in points.values()])
    # From below the least available policy, and never above 98 %: the range the serious policies sit in.
    bottom = max(0.0, min(_nines(LOWEST_SHOWN), *(axis.height(a) for _, a in points.values())) - 0.35)
    top = axis.full_row + 0.3
    right = max(105.0, max(c for c, _ in points.values()) + 5)
    if BASELINE in points:
        cost, availability = points[BASELINE]
        ax.fill_between(
            [0, COST_FACTOR * cost],
            axis.height(availability),
            top,
            color="tab:green",
            alpha=0.13,
            linewidth=0,
            label=f"beats {BASELINE}: ≥ its availability, ≤ {COST_FACTOR:g} x its cost",
        )
    target = axis.height(TARGET_AVAILABILITY)
    ax.plot(
        [0, 100 * TARGET_COST, 100 * TARGET_COST],
        [target, target, top],
        color="tab:purple",
        linestyle=":",
        linewidth=1.2,
        label=f"long-run target: ≥ {_percent(TARGET_AVAILABILITY)} at ≤ {100 * TARGET_COST:g} %",
    )
    frontier = pareto_frontier(points)
    ax.step(
        [points[n][0] for n in frontier] + [right],
        [axis.height(points[n][1]) for n in frontier] + [axis.height(points[frontier[-1]][1])],
        where="post",
        color="0.45",
        linestyle="--",
        linewidth=1,
        label="Pareto frontier",
    )
    ax.axhline(axis.ceiling + FULL_ROW_GAP / 2, color="0.6", linestyle=(0, (1, 3)), linewidth=0.8)
    for name, (cost, availability) in points.items():
        emphasis = name in (candidate, BASELINE)
        ax.scatter(
            cost,
            axis.height(availability),
            s=90 if name == candidate else 55 if emphasis else 35,
            marker="*" if name == candidate else "o",
            color=colours[name],
            edgecolors="black" if emphasis else "none",
            zorder=3,
        )
    ax.set_xlim(0, right)
    ax.set_ylim(bottom, top)
    heights, labels = zip(*axis.ticks(bottom), strict=True)
    ax.set_yticks(heights, labels)
    ax.grid(True, color="0.9", linewidth=0.6)
    ax.set_xlabel("cost, % of on-demand")
    ax.set_ylabel("availability (nines scale)")
    ax.set_title(result["trace"], fontsize=10)
    return points, axis


# Where a label may go around its point, in points: right-below, right-above, left-below, left-above.
LABEL_PLACES = ((6, -3, "left", "top"), (6, 3, "left", "bottom"), (-6, -3, "right", "top"), (-6, 3, "right", "bottom"))


def _label_points(ax: Axes, points: dict[str, tuple[float, float]], axis: NinesAxis, candidate: str) -> None:
    """Name each point with its figures, at the first place around it (LABEL_PLACES) that stays inside the panel and
    clear of the labels and points placed so far (boxes estimated from the text's length, in display units)."""
    to_display = ax.transData.transform
    frame = ax.get_window_extent()
    scale = DPI / 72  # display pixels per point
    anchors = {name: to_display((cost, axis.height(a))) for name, (cost, a) in points.items()}
    taken = [(x - 5 * scale, y - 5 * scale, x + 5 * scale, y + 5 * scale) for x, y in anchors.values()]
    # The candidate and the baseline choose first, then the rest from the cheapest.
    order = sorted(points, key=lambda n: (n != candidate, n != BASELINE, points[n][0]))
    for name in order:
        cost, availability = points[name]
        text = f"{name}\n{100 * availability:.2f} %, {cost:.0f} %"
        width = max(len(line) for line in text.splitlines()) * 0.55 * LABEL_FONT * scale
        height = 2.4 * LABEL_FONT * scale
        x, y = anchors[name]
        places = []
        for dx, dy, ha, va in LABEL_PLACES:
            left = x + dx * scale - (width if ha == "right" else 0)
            low = y + dy * scale - (height if va == "top" else 0)
            box = (left, low, left + width, low + height)
            inside = frame.x0 <= box[0] and box[2] <= frame.x1 and frame.y0 <= box[1] and box[3] <= frame.y1
            clashes = sum(_overlap(box, other) for other in taken if not _contains(other, (x, y)))
            places.append((clashes + (0 if inside else 1e9), box, dx, dy, ha, va))
        # The first place with the least clash (min keeps the first of equals).
        _, box, dx, dy, ha, va = min(places, key=lambda place: place[0])
        taken.append(box)
        ax.annotate(
            text,
            (cost, axis.height(availability)),
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            va=va,
            fontsize=LABEL_FONT,
            fontweight="bold" if name == candidate else "normal",
        )


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _contains(box: tuple[float, ...], point: tuple[float, float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def _percent(availability: float) -> str:
    return f"{100 * availability:.10g} %"
