"""Starting the TypeScript rollout server (`specactor serve`) from Python, without npx.

The server is started as ``node <root>/bin/specactor.js serve ...``: npm's ``npx`` runs the command
under a shell that does not pass SIGTERM on, which would leave a node server holding its port after
its parent was told to stop. ``--parent-pid`` makes the server shut itself down when the process that
started it is gone (SIGKILL included), so a dead Ray actor leaves no orphan behind.

Where the server is (``server_root()``):

- a wheel install carries the compiled server in ``specactor/_server/`` (marked by ``wheel.json``;
  see setup.py). Its npm packages are installed once, with ``npm ci --omit=dev``, into
  ``<cache>/server/npm-<lockfile hash>/`` (``python -m specactor.server install``, or the first
  ``server_command``), under a file lock so that concurrent processes install once; the server
  finds them through ``NODE_PATH``. ``<cache>`` is ``SPECACTOR_CACHE``, else
  ``$XDG_CACHE_HOME/specactor``, else ``~/.cache/specactor``, and it is the server's cache too
  (prepared models), never site-packages.
- a clone (an editable install) runs the clone's server: ``make setup`` built it and installed its
  npm packages, and the clone's ``.cache/`` stays its cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

MIN_NODE_MAJOR = 20
WHEEL_SERVER = Path(__file__).resolve().parent / "_server"
INSTALLED_MARK = "installed.json"  # written last into an npm directory: its presence marks it complete


class ServerStartError(RuntimeError):
    """The server could not be started (no Node, no built server, or it exited before it was ready)."""


def node_binary() -> str:
    """The ``node`` to run the server with (``SPECACTOR_NODE`` overrides ``PATH``); checks its version."""
    node = os.environ.get("SPECACTOR_NODE") or shutil.which("node")
    if not node:
        raise ServerStartError(
            f"specactor needs Node.js >= {MIN_NODE_MAJOR} on this node to run its rollout server, and no "
            "`node` is on PATH (set SPECACTOR_NODE to its path, or install Node.js 20)"
        )
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ServerStartError(f"cannot run {node} --version: {e}") from e
    m = re.match(r"v(\d+)\.", out.strip())
    if not m or int(m.group(1)) < MIN_NODE_MAJOR:
        raise ServerStartError(
            f"specactor needs Node.js >= {MIN_NODE_MAJOR}; {node} is {out.strip() or 'unknown'}"
        )
    return node


def npm_binary(node: str | None = None) -> str:
    """The ``npm`` beside ``node`` (so both are one installation), else the one on ``PATH``."""
    node = node or node_binary()
    beside = Path(node).resolve().parent / "npm"
    npm = str(beside) if beside.is_file() else shutil.which("npm")
    if not npm:
        raise ServerStartError(
            f"installing the server's packages needs npm, found neither beside {node} nor on PATH"
        )
    return npm


def is_wheel_install() -> bool:
    """True when this package carries its own server (a wheel install), not a clone's."""
    return (WHEEL_SERVER / "wheel.json").is_file()


def server_root() -> Path:
    """The directory holding the server's ``package.json``, ``bin/`` and compiled ``dist/``: the
    wheel's ``specactor/_server/``, else the clone this file lies in."""
    if is_wheel_install():
        return WHEEL_SERVER
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "package.json").is_file() and (parent / "bin" / "specactor.js").is_file():
            return parent
    raise ServerStartError(
        f"cannot find the specactor server: {WHEEL_SERVER} is missing (a wheel built without `make setup`, "
        f"or from an sdist) and {here} is not in a clone"
    )


def cache_dir() -> Path:
    """``SPECACTOR_CACHE``, else ``$XDG_CACHE_HOME/specactor``, else ``~/.cache/specactor``."""
    if os.environ.get("SPECACTOR_CACHE"):
        return Path(os.environ["SPECACTOR_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "specactor"


def lock_hash(root: Path | None = None) -> str:
    """The first 16 hex digits of the sha256 of the server's ``package-lock.json``."""
    root = root or server_root()
    return hashlib.sha256((root / "package-lock.json").read_bytes()).hexdigest()[:16]


def node_modules_dir() -> Path:
    """Where the server's npm packages are (installed or not): the wheel's cache directory for its
    lockfile, or the clone's ``node_modules``."""
    root = server_root()
    if not is_wheel_install():
        return root / "node_modules"
    return cache_dir() / "server" / f"npm-{lock_hash(root)}" / "node_modules"


def install_server(*, quiet: bool = True) -> Path:
    """Makes sure the server's npm packages are installed; returns their ``node_modules``.

    From a wheel: ``npm ci --omit=dev`` (``ONNXRUNTIME_NODE_INSTALL=skip``: onnxruntime-node's CPU
    binaries are in its package, and the CUDA ones are not fetched) into the cache directory keyed by
    the lockfile's hash, once, under a file lock; a half-finished install (no ``installed.json``) is
    redone. From a clone: only checks, since ``make setup`` installs them.
    """
    root = server_root()
    modules = node_modules_dir()
    if not is_wheel_install():
        if not modules.is_dir():
            raise ServerStartError(f"the server's npm packages are missing in {root}: run `make setup` there")
        return modules
    target = modules.parent
    if (target / INSTALLED_MARK).is_file():
        return modules
    node = node_binary()
    npm = npm_binary(node)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing: wait for it
        if (target / INSTALLED_MARK).is_file():
            return modules
        if target.exists():
            shutil.rmtree(target)  # a previous install that did not finish
        target.mkdir()
        for f in ("package.json", "package-lock.json"):
            shutil.copy2(root / f, target / f)
        env = dict(
            os.environ, ONNXRUNTIME_NODE_INSTALL="skip", npm_config_fund="false", npm_config_audit="false"
        )
        # npm and the packages' install scripts run this node
        env["PATH"] = os.pathsep.join([str(Path(node).parent), env.get("PATH", "")])
        cmd = [npm, "ci", "--omit=dev", "--no-fund", "--no-audit", "--prefer-offline", "--loglevel=error"]
        if not quiet:
            print(
                f"specactor: installing the server's npm packages into {target}", file=sys.stderr, flush=True
            )
        proc = subprocess.run(cmd, cwd=target, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise ServerStartError(
                f"`{' '.join(cmd)}` failed in {target} (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        mark = {"lock_sha256": hashlib.sha256((root / "package-lock.json").read_bytes()).hexdigest()}
        mark["node"] = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        (target / INSTALLED_MARK).write_text(json.dumps(mark, indent=1) + "\n")
    return modules


def server_command(args: Sequence[str]) -> list[str]:
    """``[node, .../bin/specactor.js, *args]``; from a wheel, installs the npm packages first if needed.
    Run it with ``server_env()``."""
    root = server_root()
    if not (root / "dist" / "src" / "cli" / "main.js").is_file():
        raise ServerStartError(f"the server in {root} is not built: run `make setup` there")
    node = node_binary()
    install_server()
    return [node, str(root / "bin" / "specactor.js"), *args]


def server_env() -> dict[str, str]:
    """The server's environment: the Python it starts (workers, model preparation) is this one; from
    a wheel also its cache (``SPECACTOR_CACHE``, the user's) and its npm packages (``NODE_PATH``)."""
    env = dict(os.environ)
    env.setdefault("SPECACTOR_PYTHON", sys.executable)
    if is_wheel_install():
        env.setdefault("SPECACTOR_CACHE", str(cache_dir()))
        env["NODE_PATH"] = os.pathsep.join(p for p in (str(node_modules_dir()), env.get("NODE_PATH")) if p)
    return env


class ServerProcess:
    """A running ``specactor serve``: started on a free loopback port unless an address is given.

    Its stderr is drained by a thread (a full pipe would stall the server) and kept in ``lines``.
    The server is told our pid (``--parent-pid``) and exits by itself when this process dies.
    """

    def __init__(self, args: Sequence[str], *, ready_timeout_s: float = 600) -> None:
        argv = ["serve", *args]
        if not any(a == "--address" or a.startswith("--address=") for a in args):
            argv += ["--address", "tcp://127.0.0.1:*"]
        argv += ["--parent-pid", str(os.getpid())]
        cmd = server_command(argv)
        self.lines: list[str] = []
        self.proc = subprocess.Popen(  # in the caller's directory: relative --model/--config paths are its
            cmd,
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        self.address = self._wait_ready(ready_timeout_s)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if len(self.lines) > 2000:
                del self.lines[:1000]

    def _wait_ready(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        line = result[0] if result else ""
        if "ready on " not in line:
            self.stop()
            why = "timed out" if not result else f"exited with {self.proc.returncode}"
            raise ServerStartError(f"specactor serve {why} before it was ready:\n{self.log_tail()}")
        return line.split("ready on ", 1)[1].split()[0]

    def log_tail(self, lines: int = 40) -> str:
        return "".join(self.lines[-lines:])

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)
        self._drain.join(5)
        return self.proc.returncode

    def wait(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
