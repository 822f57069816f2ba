"""Benchmark results name the commit they measured (benchmarks/common.py, used by every benchmark script)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks package lives beside tests/

from benchmarks import common  # noqa: E402


def test_a_saved_result_records_the_commit_it_ran_on(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    path = common.save_result("example", {"figure": 1.5})
    saved = json.loads(path.read_text())
    assert saved["figure"] == 1.5
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = None  # an unpacked source archive: no commit to name
    assert saved["environment"]["git"]["commit"] == head


def test_outside_a_checkout_it_says_why(tmp_path):
    record = common.git_commit(tmp_path)
    assert record["commit"] is None and record["why"].startswith("not a git checkout")


@pytest.mark.parametrize("script", sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py")
                                          if p.stem not in ("__init__", "common")))
def test_every_benchmark_script_saves_through_the_shared_helper(script):
    source = (ROOT / "benchmarks" / f"{script}.py").read_text()
    assert re.search(r"^from benchmarks\.common import .*\bsave_result\b", source, re.M) and "save_result(" in source
