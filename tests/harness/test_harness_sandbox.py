"""IS_SANDBOX is the service's decision (a job's `env` cannot set it for claude), so a harness run
whose tests skip permissions as root must start its services configured for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from stress.model import find_claude

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the CLI's root guard applies only to root"),
    pytest.mark.skipif(find_claude() is None, reason="claude not installed (./dev setup)"),
]


def test_root_run_that_skips_permissions_gets_a_sandboxed_service(tmp_path):
    suite = tmp_path / "sandbox.json"
    suite.write_text(json.dumps({"name": "sandbox", "tests": [{
        "id": "skip_perms", "timeout": 60, "expected_patterns": ["42"],
        "args": ["claude", "-p", "What is 6*7?", "--dangerously-skip-permissions"]}]}))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "stress.local", str(suite), "--model", "local",
                        "--out", str(out), "--quiet", "--max-load", "1000"], cwd=REPO,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    [run_dir] = [p for p in out.iterdir() if p.is_dir()]
    report = json.loads((run_dir / "report.json").read_text())
    [t] = report["tests"]
    assert t["status"] == "passed", t
