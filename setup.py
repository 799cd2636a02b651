"""Build step that puts the compiled TypeScript server into the wheel (everything else is in pyproject.toml).

``python -m build --wheel`` copies, when present, ``dist/src/**/*.js`` (the compiled server, not the
tests; only files whose ``src/**/*.ts`` still exists), ``bin/specactor.js``, ``package.json`` and
``package-lock.json`` into ``specactor/_server/``, and writes ``specactor/_server/wheel.json``, the
mark by which both sides know they run from an install (``python/specactor/server_process.py``,
``src/paths.ts``). The server's npm packages are not in the wheel: ``python -m specactor.server
install`` (or the first ``ServerProcess``) installs them with ``npm ci --omit=dev`` into the user's
cache. An editable install copies nothing and keeps using the clone. Run ``make setup`` (which
builds ``dist/``) before building the wheel; without ``dist/`` the wheel carries no server.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SERVER_FILES = ("bin/specactor.js", "package.json", "package-lock.json")


def server_sources() -> list[tuple[Path, str]]:
    """``(source file, path under _server/)`` for the server, or ``[]`` when ``dist/`` is not built."""
    dist = ROOT / "dist" / "src"
    if not (dist / "cli" / "main.js").is_file():
        return []
    files = []
    for js in sorted(dist.rglob("*.js")):
        rel = js.relative_to(dist)
        if (ROOT / "src" / rel.with_suffix(".ts")).is_file():  # skip leftovers of deleted sources
            files.append((js, f"dist/src/{rel.as_posix()}"))
    files += [(ROOT / f, f) for f in SERVER_FILES]
    return files


def stale(files: list[tuple[Path, str]]) -> list[str]:
    """Compiled files older than their TypeScript source (``dist/`` not rebuilt since an edit)."""
    out = []
    for src, rel in files:
        if rel.startswith("dist/src/"):
            ts = ROOT / "src" / Path(rel[len("dist/src/") :]).with_suffix(".ts")
            if ts.stat().st_mtime > src.stat().st_mtime + 1:
                out.append(str(ts.relative_to(ROOT)))
    return out


class build_py_with_server(build_py):
    def run(self) -> None:
        editable = getattr(self, "editable_mode", False)
        if not editable:  # build/lib would otherwise keep modules deleted since the last build
            shutil.rmtree(Path(self.build_lib) / "specactor", ignore_errors=True)
        super().run()
        if editable:
            return  # an editable install runs the clone's server
        files = server_sources()
        if not files:
            print(
                "warning: dist/src is not built (run `make setup`): the wheel carries no server",
                file=sys.stderr,
            )
            return
        for ts in stale(files):
            print(f"warning: {ts} is newer than its compiled JavaScript (rebuild with tsc)", file=sys.stderr)
        out = Path(self.build_lib) / "specactor" / "_server"
        if out.exists():
            shutil.rmtree(out)
        for src, rel in files:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / rel)
        pkg = json.loads((ROOT / "package.json").read_text())
        mark = {
            "name": pkg["name"],
            "version": pkg["version"],
            "lock_sha256": hashlib.sha256((ROOT / "package-lock.json").read_bytes()).hexdigest(),
        }
        (out / "wheel.json").write_text(json.dumps(mark, indent=1) + "\n")


setup(cmdclass={"build_py": build_py_with_server})
