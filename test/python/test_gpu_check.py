"""The GPU check script runs where there is no pyzmq, msgpack or Node (here on the CPU, small)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

BLOCKED = "import sys, runpy; sys.modules.update(zmq=None, msgpack=None); sys.argv = sys.argv[1:]; "


def test_gpu_check_runs_without_the_bridge_packages():
    args = ["--size", "small", "--device", "cpu", "--tokens", "16", "--batch", "2"]
    args += ["--cost-batches", "1,2", "--cost-nodes", "0,4", "--cost-context", "16", "--context", "128"]
    script = str(ROOT / "test" / "gpu" / "spec_check.py")
    code = BLOCKED + "runpy.run_path(sys.argv[0], run_name='__main__')"
    proc = subprocess.run(
        [sys.executable, "-c", code, script, *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "exactness: 2/2 sequences identical to plain" in out, out
    assert "plain:" in out and "vanilla:" in out and "acceptance" in out and "nodes=4" in out
