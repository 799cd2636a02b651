"""Shared fixtures: prepared models (via the real CLI) and a runner for the `specactor` command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node") or "/usr/bin/node"
CLI = [NODE, str(ROOT / "bin" / "specactor.js")]


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Polls instead of sleeping a fixed time: a loaded CI machine may need longer than a guess."""
    deadline = time.time() + timeout
    while not ready():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def run_cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"specactor {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def no_python_env(tmp_path: Path) -> dict:
    """An environment in which no Python can be found: PATH holds only node."""
    bin_dir = tmp_path / "node-only-bin"
    bin_dir.mkdir(exist_ok=True)
    link = bin_dir / "node"
    if not link.exists():
        link.symlink_to(NODE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "CONDA"))}
    env.update(PATH=str(bin_dir), PYTHON_BIN="/nonexistent/python", SPECACTOR_PYTHON="/nonexistent/python")
    return env


def naive_decode(
    model, prompt: list[int], params, seed: int, max_tokens: int, eos
) -> tuple[list[int], list[float]]:
    """Transformers recomputing the whole sequence for every token, sampled at absolute positions:
    the slowest and plainest path to what every engine must return."""
    import torch
    from specactor.sampling import sample

    seq, out, lps = list(prompt), [], []
    while len(out) < max_tokens:
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, -1].numpy()
        tok, lp = sample(logits, params, seed, len(seq))
        seq.append(tok)
        out.append(tok)
        lps.append(lp)
        if tok in eos:
            break
    return out, lps


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli_rollout(
    model_dir, prompts: list[dict], tmp_path: Path, name: str, *args: str, env: dict | None = None
):
    """`specactor rollout` over `prompts` (JSONL rows): returns (the output's bytes, the summary)."""
    src = write_jsonl(tmp_path / f"{name}.prompts.jsonl", prompts)
    out, summary = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.summary.json"
    cli = ("rollout", "--model", str(model_dir), "--prompts", str(src), "--out", str(out), "--quiet")
    run_cli(*cli, "--summary-json", str(summary), *args, env=env)
    return out.read_bytes(), json.loads(summary.read_text())


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return Path(run_cli("prepare-model", "tiny").stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return Path(run_cli("prepare-model", "smollm2").stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def torch_threads() -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)


sys.path.insert(0, str(ROOT / "python"))


class Server:
    """A real `specactor serve` process on a free loopback port; `stop()` kills what is left of it.

    Its stderr is drained by a thread (a full pipe would block the server) into `lines`.
    """

    def __init__(self, model_dir: Path, *args: str) -> None:
        cmd = [*CLI, "serve", "--model", str(model_dir), "--address", "tcp://127.0.0.1:*", *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        line = self.proc.stdout.readline()
        if "ready on " not in line:
            self.proc.kill()
            self._drain.join(10)
            raise AssertionError(f"server did not start: {line}{''.join(self.lines)}")
        self.address = line.split("ready on ", 1)[1].split()[0]

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def log_line(self, needle: str, timeout: float = 30) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.lines):
                if needle in line:
                    return line.strip()
            time.sleep(0.05)
        raise AssertionError(f"no server log line with {needle!r}: {''.join(self.lines)}")

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._drain.join(10)
        return "".join(self.lines)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
