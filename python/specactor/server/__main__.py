"""``python -m specactor.server COMMAND``: the TypeScript rollout server of this installation.

- ``install``: installs the server's npm packages now (from a wheel: ``npm ci --omit=dev`` into the
  user's cache, once per lockfile; from a clone: checks ``make setup`` did) and prints the server's
  directory. ``ServerProcess`` does the same on first use; run this up front, e.g. in an image build
  or before starting many Ray actors at once.
- ``info``: prints where the server, its npm packages, its cache, Node and Python are, as JSON.
- ``run ARGS...``: runs the ``specactor`` command line (``serve``, ``rollout``, ``prepare-model``, ...)
  with this Python and cache, e.g. ``python -m specactor.server run prepare-model tiny``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from ..server_process import (
    ServerStartError,
    cache_dir,
    install_server,
    is_wheel_install,
    node_binary,
    node_modules_dir,
    server_command,
    server_env,
    server_root,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m specactor.server", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="install the server's npm packages (once per lockfile)")
    sub.add_parser("info", help="print where the server and its parts are (JSON)")
    run = sub.add_parser("run", help="run the specactor command line with this Python and cache")
    run.add_argument("args", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    try:
        if args.command == "install":
            t = time.monotonic()
            modules = install_server(quiet=False)
            print(
                f"specactor: server packages ready in {modules} ({time.monotonic() - t:.1f}s)",
                file=sys.stderr,
            )
            print(server_root())
        elif args.command == "info":
            env = server_env()
            info = {
                "server_root": str(server_root()),
                "from_wheel": is_wheel_install(),
                "node_modules": str(node_modules_dir()),
                "node_modules_installed": node_modules_dir().is_dir(),
                "cache": env.get("SPECACTOR_CACHE")
                or str(cache_dir() if is_wheel_install() else server_root() / ".cache"),
                "node": node_binary(),
                "python": env["SPECACTOR_PYTHON"],
            }
            print(json.dumps(info, indent=1))
        else:
            cmd = server_command(args.args)
            if os.name == "posix":
                os.execve(cmd[0], cmd, server_env())
            return subprocess.run(cmd, env=server_env(), check=False).returncode
    except ServerStartError as e:
        print(f"specactor: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
