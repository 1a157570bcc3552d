"""Smoke test of the TRL head-to-head: ``benchmarks/vs_trl.py --quick`` runs both systems end to end.

No timing is asserted: it checks that one TRL run and one distrl run finish, that the output ends
with the ratio line, and that the JSON report holds both runs' steps.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = [pytest.mark.subprocess]

pytest.importorskip("trl")

RATIO_LINE = re.compile(r"distrl/TRL throughput ratio: (\d+(?:\.\d+)?)")


def test_quick_benchmark_ends_with_the_ratio_line(tmp_path: Path):
    report_path = tmp_path / "report.json"
    command = [sys.executable, "benchmarks/vs_trl.py", "--quick", "--workdir", str(tmp_path / "work")]
    done = subprocess.run([*command, "--json", str(report_path)], cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    match = RATIO_LINE.fullmatch(last)
    assert match, last
    report = json.loads(report_path.read_text())
    assert [run["system"] for run in report["runs"]] == ["trl", "distrl"]
    assert all(len(run["step_s"]) == report["workload"]["steps"] for run in report["runs"])
    assert report["ratio"] == pytest.approx(float(match.group(1)), abs=1e-3)
