"""`spothub replay` as a user runs it: a trace folder in, a table or one JSON object out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spothub.cli import main
from spothub.replay.policies import POLICIES
from spothub.replay.traces import DEFAULT_PRICES, load_trace_set

METRICS = {"availability", "cost", "cost_vs_on_demand", "preemptions", "launches", "failovers", "longest_outage_s"}
SHARED_TRACES = DEFAULT_PRICES.parent / "traces"


def write_trace(folder: Path, name: str, data: list[int], gap: int = 300) -> None:
    (folder / name).write_text(json.dumps({"metadata": {"gap_seconds": gap}, "data": data}))


@pytest.fixture
def prices(tmp_path: Path) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "shapes": {"v100_1": "p3.2xlarge", "k80_1": "p2.xlarge"},
                "instance_types": {
                    "p3.2xlarge": {"on_demand": 3.06, "spot": {"us-east-1": 0.645, "us-west-2": 0.975}},
                    "p2.xlarge": {"on_demand": 0.9, "spot": {"us-east-1": 0.27}},
                },
            }
        )
    )
    return path


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "my-traces"
    folder.mkdir()
    write_trace(folder, "us-east-1a_v100_1.json", [1] * 20 + [0] * 10 + [1] * 70)
    write_trace(folder, "us-west-2b_v100_1.json", [1] * 60)  # shorter: no capacity past its end
    write_trace(folder, "us-east-1a_k80_1.json", [1] * 10)
    (folder / "notes.txt").write_text("not a trace")
    return folder


def replay_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["replay", *args, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return json.loads(out)


def test_json_is_one_object_of_the_documented_shape(
    trace_dir: Path, prices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = replay_json(capsys, "--traces", str(trace_dir), "--prices", str(prices))
    assert set(result) == {"trace", "shape", "replicas", "cold_start_s", "policies"}
    assert (result["trace"], result["shape"], result["replicas"], result["cold_start_s"]) == (
        "my-traces",
        "v100_1",
        1,
        300,
    )
    assert list(result["policies"]) == list(POLICIES)
    for figures in result["policies"].values():
        assert set(figures) == METRICS
        assert 0.0 <= figures["availability"] <= 1.0
        assert all(isinstance(figures[k], int) for k in ("preemptions", "launches", "failovers"))
    assert result["policies"]["on-demand"]["cost_vs_on_demand"] == 1.0
    # 100 ticks of 300 s at $3.06/h: the longer file sets the length.
    assert result["policies"]["on-demand"]["cost"] == pytest.approx(3.06 * 100 * 300 / 3600, abs=0.01)


def test_options_reach_the_replay(trace_dir: Path, prices: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = replay_json(
        capsys,
        *("--traces", str(trace_dir), "--prices", str(prices), "--shape", "k80_1"),
        *("--replicas", "2", "--cold-start", "90"),
    )
    assert (result["shape"], result["replicas"], result["cold_start_s"]) == ("k80_1", 2, 90)
    # k80_1 is priced at $0.90/h on demand: 2 replicas over 10 ticks of 300 s.
    assert result["policies"]["on-demand"]["cost"] == pytest.approx(2 * 0.9 * 10 * 300 / 3600, abs=0.01)


def test_the_table_names_every_policy_and_the_trace(
    trace_dir: Path, prices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--traces", str(trace_dir), "--prices", str(prices)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("my-traces: v100_1 (p3.2xlarge), 2 zones in 2 regions, 100 ticks x 300 s")
    assert "us-west-2b (60 ticks)" in out
    for name in POLICIES:
        assert f"| {name} |" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--traces", "{missing}"], "no trace directory"),
        (["--traces", "{dir}", "--shape", "a100_8"], "unknown shape 'a100_8'; the prices file knows k80_1, v100_1"),
        (["--traces", "{empty}"], "no trace files in"),
        (["--traces", "{dir}", "--replicas", "0"], "--replicas must be at least 1"),
        (["--traces", "{dir}", "--cold-start", "-5"], "--cold-start cannot be negative"),
        (["--traces", "{broken}"], "us-east-1a_v100_1.json: not a trace file (JSONDecodeError"),
        (["--traces", "{gaps}"], "files disagree on gap_seconds"),
        (["--traces", "{dir}", "--prices", "{missing}"], "cannot read the prices file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(  # noqa: PLR0917 (fixtures and parameters)
    tmp_path: Path,
    trace_dir: Path,
    prices: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "us-east-1a_v100_1.json").write_text("{not json")
    (tmp_path / "gaps").mkdir()
    write_trace(tmp_path / "gaps", "us-east-1a_v100_1.json", [1], gap=300)
    write_trace(tmp_path / "gaps", "us-east-1b_v100_1.json", [1], gap=600)
    paths = {"missing": tmp_path / "nowhere", "dir": trace_dir, "empty": tmp_path / "empty"}
    paths |= {"broken": tmp_path / "broken", "gaps": tmp_path / "gaps"}
    argv = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args]
    if "--prices" not in argv:
        argv += ["--prices", str(prices)]
    assert main(["replay", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("spothub replay: ")
    assert message in captured.err


def test_bad_input_from_the_command_line_shows_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spothub.cli", "replay", "--traces", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"spothub replay: no trace directory {tmp_path / 'nowhere'}"]


@pytest.mark.skipif(not SHARED_TRACES.is_dir(), reason="the shared traces are not next to the repository")
@pytest.mark.parametrize("folder", sorted(p.name for p in SHARED_TRACES.glob("*") if p.is_dir()))
def test_every_shared_trace_folder_replays_with_the_default_prices(folder: str) -> None:
    traces = load_trace_set(SHARED_TRACES / folder)
    assert traces.shape == "v100_1"
    assert traces.instance_type == "p3.2xlarge"
    assert traces.ticks == max(traces.measured_ticks)
