"""The bench's command line without a node: ``list``, ``compare`` on synthetic reports,
and the pure parts the figures rest on (counter accounting, histogram quantiles).
The real runs are for humans and the bench itself; nothing here starts a node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import prom  # noqa: E402
from bench.figures import Figure, median_figures  # noqa: E402
from bench.viewer import CounterTracker  # noqa: E402


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def report(
    fps: float = 30.0, p99_ms: float = 8.0, cpu: float = 0.12, rss: float = 160.0
) -> dict[str, Any]:
    return {
        "schema": 1,
        "scenario": {"name": "whep", "description": "synthetic"},
        "machine": {"cpu_model": "test", "cores": 2},
        "figures": {
            "viewer_frames_per_second": {"value": fps, "unit": "frames/s", "better": "higher"},
            "encode_p99_ms": {"value": p99_ms, "unit": "ms", "better": "lower"},
            "node_cpu_cores": {"value": cpu, "unit": "cores", "better": "lower"},
            "node_rss_max_mib": {"value": rss, "unit": "MiB", "better": "lower"},
            "node_bitrate_kbps": {"value": 750.0, "unit": "kbit/s"},
        },
    }


def write_report(directory: Path, data: dict[str, Any]) -> Path:
    directory.mkdir(parents=True)
    (directory / "report.json").write_text(json.dumps(data))
    return directory


def test_list_names_whep_and_smoke_first_on_their_lines() -> None:
    result = bench("list")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert {"whep", "whep2", "smoke"} <= set(names)
    assert all(len(line.split(maxsplit=1)) == 2 for line in result.stdout.splitlines())


def test_compare_equal_reports_exits_0(tmp_path: Path) -> None:
    a = write_report(tmp_path / "a", report())
    b = write_report(tmp_path / "b", report())
    result = bench("compare", str(a), str(b))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no regression" in result.stdout
    assert "drop > 10%" in result.stdout  # the thresholds are printed


@pytest.mark.parametrize(
    ("changes", "figure"),
    [
        ({"fps": 25.0}, "viewer_frames_per_second"),
        ({"p99_ms": 16.0}, "encode_p99_ms"),
        ({"cpu": 0.2}, "node_cpu_cores"),
        ({"rss": 220.0}, "node_rss_max_mib"),
    ],
)
def test_compare_regression_exits_1(tmp_path: Path, changes: dict[str, float], figure: str) -> None:
    a = write_report(tmp_path / "a", report())
    b = write_report(tmp_path / "b", report(**changes))
    result = bench("compare", str(a), str(b / "report.json"))
    assert result.returncode == 1, result.stdout + result.stderr
    regression = [line for line in result.stdout.splitlines() if "REGRESSION" in line]
    assert [line.split()[0] for line in regression] == [figure]


def test_compare_improvement_and_noise_exit_0(tmp_path: Path) -> None:
    a = write_report(tmp_path / "a", report())
    # Better fps and CPU; RSS up 3% (under its threshold).
    b = write_report(tmp_path / "b", report(fps=31.0, cpu=0.08, rss=165.0))
    result = bench("compare", str(a), str(b))
    assert result.returncode == 0, result.stdout


def test_compare_without_a_report_is_an_error(tmp_path: Path) -> None:
    result = bench("compare", str(tmp_path / "missing"), str(tmp_path / "missing"))
    assert result.returncode == 2
    assert "bench:" in result.stderr


def test_counter_tracker_counts_gaps_duplicates_and_wraps() -> None:
    t = CounterTracker()
    # A duplicate, the wrap with 65535 missed, then 1 and 2 missed, and 2 arriving late.
    for c in (65533, 65534, 65534, 0, 3, 2, 4):
        t.add(c)
    assert (t.frames, t.duplicates, t.missed, t.reordered) == (7, 1, 3, 1)
    assert t.discontinuities == 0


def test_counter_tracker_restart_is_a_discontinuity_not_missed_frames() -> None:
    t = CounterTracker()
    for c in (5000, 5001, 0, 1, 2):  # a worker restart counts from 0 again
        t.add(c)
    assert (t.missed, t.reordered, t.discontinuities) == (0, 0, 1)


def test_histogram_quantiles_are_bucket_upper_bounds_of_the_window() -> None:
    def scrape(counts: tuple[int, int, int], total_s: float) -> prom.Samples:
        lines = [
            f'h_seconds_bucket{{le="0.001"}} {counts[0]}',
            f'h_seconds_bucket{{le="0.004"}} {counts[1]}',
            f'h_seconds_bucket{{le="+Inf"}} {counts[2]}',
            f"h_seconds_sum {total_s}",
            f"h_seconds_count {counts[2]}",
        ]
        return prom.parse("# TYPE h_seconds histogram\n" + "\n".join(lines) + "\n")

    start, end = scrape((10, 10, 10), 0.005), scrape((60, 109, 110), 0.205)
    hist = prom.histogram(prom.diff(end, start), "h_seconds")
    assert hist is not None
    assert hist.count == 100
    assert hist.quantile(0.5) == 0.001
    assert hist.quantile(0.99) == 0.004
    assert hist.quantile(1.0) == float("inf")
    assert hist.mean == pytest.approx(0.002)


def test_median_over_runs_skips_missing_values() -> None:
    runs = [
        {"fps": Figure(30.0, "frames/s", "higher")},
        {"fps": Figure(None, "frames/s", "higher")},
        {"fps": Figure(28.0, "frames/s", "higher")},
    ]
    median = median_figures(runs)["fps"]
    assert median.value == 29.0
    assert "2 of 3 runs" in median.note
