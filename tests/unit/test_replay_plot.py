"""`spothub replay --plot`: cost against availability, one panel per trace folder, written as an image."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spothub.cli import main
from spothub.replay.pareto import pareto_frontier
from spothub.replay.plot import DPI, PANEL_INCHES, NinesAxis, draw, grid
from spothub.replay.policies import POLICIES
from tests.unit.test_replay_cli import write_trace

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    """Two small trace folders of two regions each (prices from data/prices.json)."""
    root = tmp_path / "traces"
    for name, dips in {"steady": [], "choppy": [10, 25, 40]}.items():
        (root / name).mkdir(parents=True)
        for zone in ("us-east-1a", "us-west-2a"):
            data = [0 if tick in dips else 2 for tick in range(60)]
            write_trace(root / name, f"{zone}_v100_1.json", data)
    return root


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def result(trace: str, **policies: tuple[float, float]) -> dict[str, Any]:
    return {
        "trace": trace,
        "shape": "v100_1",
        "replicas": 1,
        "cold_start_s": 300,
        "policies": {
            name.replace("_", "-"): {"availability": availability, "cost_vs_on_demand": cost}
            for name, (availability, cost) in policies.items()
        },
    }


def test_the_plot_is_a_png_with_a_panel_per_folder(
    parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "replay.png"
    assert main(["replay", "--traces", str(parent), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"plot: {png} (2 panels)")
    width, height = png_size(png)
    # Two panels side by side at the figure's size (the legend's strip below adds 0.4 in).
    assert (width, height) == (round(2 * PANEL_INCHES[0] * DPI), round((PANEL_INCHES[1] + 0.4) * DPI))
    assert png.stat().st_size > 20_000  # drawn, not blank


def test_one_folder_is_one_panel_and_svg_works(parent: Path, tmp_path: Path) -> None:
    svg = tmp_path / "one.svg"
    assert main(["replay", "--traces", str(parent / "steady"), "--plot", str(svg)]) == 0
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml")
    assert text.count("steady") >= 1
    assert "choppy" not in text


def test_each_panel_is_a_folder_with_every_policy_labelled(parent: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--traces", str(parent), "--json"]) == 0
    outputs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    figure = draw(outputs)
    assert [ax.get_title() for ax in figure.axes] == ["choppy", "steady"]
    for ax in figure.axes:
        labels = {text.get_text().splitlines()[0] for text in ax.texts}
        assert labels == set(POLICIES)
        ticks = [tick.get_text() for tick in ax.get_yticklabels()]
        assert ticks[-1] == "100 %"
        assert "99 %" in ticks
        assert "99.9 %" in ticks
        assert "98 %" in ticks  # even where every policy is at 100 % (steady)


@pytest.mark.parametrize(("panels", "layout"), [(1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (4, (2, 3)), (7, (3, 3))])
def test_the_grid_holds_three_panels_a_row_and_spare_cells_go(panels: int, layout: tuple[int, int]) -> None:
    assert grid(panels) == layout
    results = [
        result(f"t{i}", hedge=(0.99, 0.6), spothub_standby=(0.98, 0.3), on_demand=(1.0, 1.0)) for i in range(panels)
    ]
    figure = draw(results)
    assert len(figure.axes) == panels
    assert [ax.get_title() for ax in figure.axes] == [f"t{i}" for i in range(panels)]


def test_the_availability_axis_spreads_the_nines_and_keeps_their_order() -> None:
    axis = NinesAxis.fitting([0.3, 0.986, 0.993, 1.0])
    assert axis.ceiling == 3.0  # the long-run target, 99.9 %, is always in view
    assert axis.height(0.9) == pytest.approx(1.0)
    assert axis.height(0.99) == pytest.approx(2.0)
    assert axis.height(1.0) > axis.ceiling  # on-demand's row, above the scale
    availabilities = [0.0, 0.3, 0.9, 0.98, 0.986, 0.99, 0.993, 0.999, 1.0]
    heights = [axis.height(a) for a in availabilities]
    assert heights == sorted(heights)
    assert len(set(heights)) == len(heights)
    # A policy near 99.99 % raises the top so that it is still below 100 %'s row, and drawn where it belongs.
    high = NinesAxis.fitting([0.9999, 1.0])
    assert high.height(0.9999) == pytest.approx(4.0)
    assert high.height(0.9999) < high.ceiling < high.height(1.0)


def test_the_candidate_is_drawn_and_the_frontier_is_what_pareto_says() -> None:
    figure = draw([result("t", hedge=(0.993, 0.6), spothub_standby=(0.986, 0.38), rule_of_thumb=(0.9, 0.5))])
    (ax,) = figure.axes
    bold = [t.get_text().splitlines()[0] for t in ax.texts if t.get_fontweight() == "bold"]
    assert bold == ["spothub-standby"]
    points = {"hedge": (60.0, 0.993), "spothub-standby": (38.0, 0.986), "rule-of-thumb": (50.0, 0.9)}
    assert pareto_frontier(points) == ["spothub-standby", "hedge"]  # rule-of-thumb is dominated by spothub
    frontier = next(line for line in ax.get_lines() if line.get_label() == "Pareto frontier")
    assert list(frontier.get_xdata()) == [38.0, 60.0, 105.0]
    assert draw([result("t", hedge=(0.993, 0.6))], candidate="hedge").axes[0].texts[0].get_fontweight() == "bold"


@pytest.mark.parametrize(
    ("plot", "message"),
    [
        ("{tmp}/nowhere/replay.png", "--plot {tmp}/nowhere/replay.png: no folder {tmp}/nowhere to write it in"),
        ("{tmp}/replay.txt", "--plot {tmp}/replay.txt: name a .png, .svg or .pdf file"),
        ("{tmp}/folder.png", "--plot {tmp}/folder.png is a folder; name a file"),
    ],
)
def test_a_plot_that_cannot_be_written_is_refused_before_the_replay(
    parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], plot: str, message: str
) -> None:
    (tmp_path / "folder.png").mkdir()
    assert main(["replay", "--traces", str(parent), "--plot", plot.format(tmp=tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"spothub replay: {message.format(tmp=tmp_path)}\n"


def test_a_plot_refused_from_the_command_line_shows_no_traceback(parent: Path, tmp_path: Path) -> None:
    plot = tmp_path / "nowhere" / "replay.png"
    completed = subprocess.run(
        [sys.executable, "-m", "spothub.cli", "replay", "--traces", str(parent), "--plot", str(plot)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.splitlines() == [f"spothub replay: --plot {plot}: no folder {plot.parent} to write it in"]


def test_an_unknown_pareto_policy_is_refused(parent: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--traces", str(parent), "--pareto", "spothub-turbo"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"spothub replay: --pareto: unknown policy 'spothub-turbo'; the policies are {', '.join(POLICIES)}\n"
    )


def test_matplotlib_is_imported_only_for_a_plot(parent: Path, tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from spothub.cli import main\n"
        f"assert main(['replay', '--traces', {str(parent)!r}, '--json']) == 0\n"
        "print('matplotlib' in sys.modules)\n"
        f"assert main(['replay', '--traces', {str(parent)!r}, '--json', '--plot', {str(tmp_path / 'p.png')!r}]) == 0\n"
        "print('matplotlib' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    lines = completed.stdout.splitlines()
    # Only the JSON objects and the two answers reach stdout: the notes and the plot's line go to stderr.
    assert [json.loads(line)["trace"] for line in lines[:2]] == ["choppy", "steady"]
    assert lines[2] == "False"
    assert [json.loads(line)["trace"] for line in lines[3:5]] == ["choppy", "steady"]
    assert lines[5:] == ["True"]
    assert f"plot: {tmp_path / 'p.png'} (2 panels)" in completed.stderr
