"""`spothub replay` as a user runs it: a trace folder in, a table or one JSON object out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spothub.cli import main
from spothub.replay.pareto import DEFAULT_CANDIDATE
from spothub.replay.policies import POLICIES
from spothub.replay.traces import DEFAULT_PRICES, DEFAULT_TRACES, load_trace_set
from stacks.paths import REPO_ROOT

METRICS = {"availability", "cost", "cost_vs_on_demand", "preemptions", "launches", "failovers", "longest_outage_s"}
# The traces and prices that ship in the repository (data/), the defaults of `spothub replay`.
SHIPPED_TRACES = DEFAULT_TRACES
SHIPPED_FOLDERS = ("aws-04-22-2023-preemption", "aws-08-03-2023-preemption-4node", "aws-10-26-2022-availability")


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
        *("--traces", str(trace_dir), "--prices", str(prices), "--shape", "k80_1", "--cold-start", "90"),
    )
    assert (result["shape"], result["replicas"], result["cold_start_s"]) == ("k80_1", 1, 90)
    # k80_1 is priced at $0.90/h on demand: 1 replica over 10 ticks of 300 s.
    assert result["policies"]["on-demand"]["cost"] == pytest.approx(0.9 * 10 * 300 / 3600, abs=0.01)
    # v100_1 is measured in two regions: two replicas (one a region) can be replayed.
    result = replay_json(capsys, "--traces", str(trace_dir), "--prices", str(prices), "--replicas", "2")
    assert result["replicas"] == 2
    assert result["policies"]["on-demand"]["cost"] == pytest.approx(2 * 3.06 * 100 * 300 / 3600, abs=0.01)


def test_the_table_names_every_policy_and_the_trace(
    trace_dir: Path, prices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--traces", str(trace_dir), "--prices", str(prices)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("my-traces: v100_1 (p3.2xlarge), 2 zones in 2 regions, 100 ticks x 300 s")
    assert "us-west-2b (60 ticks)" in out
    for name in POLICIES:
        assert f"| {name} |" in out
    # The table is followed by the Pareto check of the default candidate against hedge.
    table, check = out.rstrip("\n").split("\n\n")[-2:]
    assert table.splitlines()[-1].startswith("| ")
    assert check.startswith(f"pareto {DEFAULT_CANDIDATE} vs hedge: availability ")
    assert check.endswith(("-> win", "-> miss (availability)", "-> miss (cost)", "-> miss (availability, cost)"))


def test_pareto_names_the_candidate_and_checks_it_against_hedge(
    trace_dir: Path, prices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = replay_json(capsys, "--traces", str(trace_dir), "--prices", str(prices))
    hedge = result["policies"]["hedge"]
    # hedge against itself: as available, but not at 0.8 x its own cost.
    assert main(["replay", "--traces", str(trace_dir), "--prices", str(prices), "--pareto", "hedge"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line == (
        f"pareto hedge vs hedge: availability {100 * hedge['availability']:.3f} % >= "
        f"{100 * hedge['availability']:.3f} % ok, cost {100 * hedge['cost_vs_on_demand']:.2f} % > "
        f"{80 * hedge['cost_vs_on_demand']:.2f} % (0.8 x hedge) miss -> miss (cost)"
    )
    # With --json the objects stay alone on stdout; the check goes to stderr, named by its folder.
    assert main(["replay", "--traces", str(trace_dir), "--prices", str(prices), "--json", "--pareto", "on-demand"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["trace"] == "my-traces"
    assert captured.err.startswith("my-traces: pareto on-demand vs hedge: availability 100.000 % >= ")
    assert captured.err.endswith("-> miss (cost)\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--traces", "{missing}"], "no trace directory"),
        (["--traces", "{dir}", "--shape", "a100_8"], "unknown shape 'a100_8'; the prices file knows k80_1, v100_1"),
        (["--traces", "{empty}"], "no trace files in"),
        (["--traces", "{dir}", "--replicas", "0"], "--replicas must be at least 1"),
        # As POST /spot-provisioning refuses more replicas than worker regions (one replica per region).
        (
            ["--traces", "{dir}", "--replicas", "3"],
            "replicas: at most one replica per region, and the traces hold 2 regions (us-east-1, us-west-2)",
        ),
        (
            ["--traces", "{dir}", "--shape", "k80_1", "--replicas", "2"],
            "replicas: at most one replica per region, and the traces hold 1 region (us-east-1)",
        ),
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


@pytest.mark.parametrize("folder", SHIPPED_FOLDERS)
def test_every_shipped_trace_folder_replays_with_the_default_prices(folder: str) -> None:
    traces = load_trace_set(SHIPPED_TRACES / folder)
    assert traces.shape == "v100_1"
    assert traces.instance_type == "p3.2xlarge"
    assert traces.ticks == max(traces.measured_ticks)


def test_the_traces_and_prices_ship_in_the_repository_with_their_attribution() -> None:
    assert SHIPPED_TRACES == REPO_ROOT / "data" / "traces"
    assert DEFAULT_PRICES == REPO_ROOT / "data" / "prices.json"
    assert DEFAULT_PRICES.is_file()
    assert tuple(sorted(p.name for p in SHIPPED_TRACES.iterdir() if p.is_dir())) == SHIPPED_FOLDERS
    notice = (SHIPPED_TRACES / "NOTICE").read_text()
    readme = (SHIPPED_TRACES / "README.md").read_text()
    for text in (notice, readme):
        assert "https://github.com/skypilot-org/spot-traces" in text
        assert "Can't Be Late: Optimizing Spot Instance Savings under Deadlines" in text
        assert "NSDI 24" in text
        assert "licence" in text
    # Nothing points next to the repository any more: a clone runs on what it holds.
    for source in ("Makefile", "spothub/replay/traces.py", "spothub/sandbox/sandbox.py", "benchmarks/replay_bench.py"):
        assert "../shared" not in (REPO_ROOT / source).read_text(), source
        assert '"shared"' not in (REPO_ROOT / source).read_text(), source


def test_with_no_options_it_replays_every_shipped_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith(f"{SHIPPED_TRACES} holds 3 trace folders: {', '.join(SHIPPED_FOLDERS)}; replaying each")
    assert f"(--traces {SHIPPED_TRACES / SHIPPED_FOLDERS[0]} replays one)" in first
    for folder in SHIPPED_FOLDERS:
        assert f"\n\n{folder}: v100_1 (p3.2xlarge)" in out


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    """A folder of two trace folders (one region, two regions) and a stray file."""
    root = tmp_path / "all"
    for name, files in {
        "one-region": ["us-east-1a", "us-east-1b"],
        "two-regions": ["us-east-1a", "us-west-2b"],
    }.items():
        (root / name).mkdir(parents=True)
        for zone in files:
            write_trace(root / name, f"{zone}_v100_1.json", [1] * 30)
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not a trace")
    return root


def test_a_parent_folder_lists_its_trace_folders_and_replays_each(
    parent: Path, prices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--traces", str(parent), "--prices", str(prices)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == (
        f"{parent} holds 2 trace folders: one-region, two-regions; replaying each "
        f"(--traces {parent / 'one-region'} replays one)"
    )
    assert lines[1] == ""
    assert lines[2].startswith("one-region: v100_1 (p3.2xlarge), 2 zones in 1 region")
    assert "\n\ntwo-regions: v100_1 (p3.2xlarge), 2 zones in 2 regions" in captured.out
    # A Pareto line a folder, and one over them all at the end.
    assert sum(line.startswith(f"pareto {DEFAULT_CANDIDATE} vs hedge: availability") for line in lines) == 2
    assert lines[-1].startswith(f"pareto {DEFAULT_CANDIDATE} vs hedge: win on ")
    assert lines[-1].split(" folders")[0].endswith(" of 2")
    assert captured.err == ""


def test_a_parent_folder_in_json_is_one_object_a_folder(
    parent: Path, prices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--traces", str(parent), "--prices", str(prices), "--json"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["trace"] for line in captured.out.splitlines()] == ["one-region", "two-regions"]
    assert captured.err.startswith(f"{parent} holds 2 trace folders")  # the listing stays off the JSON


def test_a_parent_folder_skips_the_folders_the_options_do_not_fit(
    parent: Path, prices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--traces", str(parent), "--prices", str(prices), "--replicas", "2", "--json"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["trace"] for line in captured.out.splitlines()] == ["two-regions"]
    assert (
        "spothub replay: skipped one-region: replicas: at most one replica per region, and the traces hold 1 region "
        "(us-east-1)\n" in captured.err
    )
    # No folder fits: refused, exit 2.
    assert main(["replay", "--traces", str(parent), "--prices", str(prices), "--replicas", "3"]) == 2
    captured = capsys.readouterr()
    assert "skipped one-region" in captured.err
    assert "skipped two-regions" in captured.err
    assert captured.err.endswith(f"spothub replay: none of the folders of {parent} fits these options\n")
    assert main(["replay", "--traces", str(parent), "--prices", str(prices), "--shape", "k80_1"]) == 2
    assert "skipped one-region: no trace files for shape k80_1" in capsys.readouterr().err


def test_a_broken_folder_of_a_parent_is_named_and_stops_the_run(
    parent: Path, prices: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (parent / "two-regions" / "us-west-2b_v100_1.json").write_text("{not json")
    assert main(["replay", "--traces", str(parent), "--prices", str(prices)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("spothub replay: two-regions: us-west-2b_v100_1.json: not a trace file")


@pytest.mark.parametrize("command", ["up", "demo"])
def test_the_sandbox_names_the_folders_of_a_parent_before_it_starts(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sandbox", command, "--traces", str(SHIPPED_TRACES), "--port", "0", "--state-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"spothub: --traces {SHIPPED_TRACES}: no trace files in {SHIPPED_TRACES}; it holds trace ")
    assert f"folders ({', '.join(SHIPPED_FOLDERS)}): name one, e.g. {SHIPPED_TRACES / SHIPPED_FOLDERS[0]}" in err
    assert not (tmp_path / "sandbox.json").exists()
