"""Packaging: the wheel carries the built server and works from outside the clone; the verl extra resolves.

The wheel test builds the wheel (``python -m build --wheel --no-isolation``: a few seconds, so it is
built into tmp each run; ``--no-isolation`` keeps it offline, the project venv has setuptools),
creates a fresh virtual environment and installs the wheel into it with ``--no-deps``. The wheel's
dependencies (torch, transformers, onnx, ...) are not installed there: a full install would download
or copy GBs, so a ``.pth`` file makes the project venv's site-packages visible instead (as a plain
path, so its editable install of the clone, a ``.pth`` file of its own, is not). From a directory
outside the clone it then runs ``python -m specactor.server install`` (the server's npm packages into
a fresh cache), starts a server through ``ServerProcess(["--model", "tiny"])`` (tiny is prepared by
the installed package into that cache) and does one generate, which must return what the clone's
server returns for the same seed, from a server that lives under the install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from specactor.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [[1, 9, 17, 33], [1, 4]]
PARAMS = {"n": 2, "max_tokens": 12, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "seed": 11}


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        what = " ".join(map(str, cmd))
        raise AssertionError(f"{what} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not (ROOT / "dist" / "src" / "cli" / "main.js").is_file():
        pytest.fail("dist/ is not built: run `make setup`")
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)], cwd=ROOT)
    (whl,) = out.glob("specactor-*.whl")
    return whl


@pytest.fixture(scope="module")
def fresh_python(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(py)]
    run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)])
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(run([str(py), "-c", purelib]).stdout.strip())
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "specactor-test-deps.pth").write_text("".join(f"{p}\n" for p in ours))
    return py


def test_the_wheel_carries_the_server_and_not_the_tests(wheel):
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    server = "specactor/_server/"
    for f in ("bin/specactor.js", "package.json", "package-lock.json", "wheel.json", "dist/src/cli/main.js"):
        assert server + f in names, f
    assert "specactor/server/__main__.py" in names and "specactor/models/key.py" in names
    assert not [n for n in names if n.startswith(server + "dist/test") or n.endswith(".map")]
    assert not [n for n in names if "node_modules" in n]
    mark = json.loads(zipfile.ZipFile(wheel).read(server + "wheel.json"))
    assert mark["name"] == "specactor" and len(mark["lock_sha256"]) == 64


def test_an_installed_wheel_runs_its_own_server(fresh_python, tiny_dir, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "VIRTUAL_ENV"))}
    env["SPECACTOR_CACHE"] = str(cache)
    env.pop("SPECACTOR_PYTHON", None)  # the installing Python must be the one used
    installed = run([str(fresh_python), "-m", "specactor.server", "install"], cwd=work, env=env)
    site_root = Path(installed.stdout.strip().splitlines()[-1])
    assert site_root.is_relative_to(fresh_python.parent.parent) and site_root.name == "_server"
    (modules,) = (cache / "server").glob("npm-*/node_modules")
    assert (modules / "onnxruntime-node").is_dir() and not (modules / "typescript").exists()  # --omit=dev

    script = textwrap.dedent(
        f"""
        import json, sys
        import specactor
        from specactor.client import RolloutClient
        from specactor.server_process import ServerProcess, server_root
        server = ServerProcess(["--model", "tiny"])
        try:
            with RolloutClient(server.address) as client:
                results = client.generate({PROMPTS!r}, **{PARAMS!r})
            print(json.dumps({{
                "package": specactor.__file__, "root": str(server_root()), "argv": server.proc.args,
                "tokens": [[r.token_ids for r in per_prompt] for per_prompt in results],
                "log": server.log_tail(),
            }}))
        finally:
            server.stop()
        """
    )
    proc = run([str(fresh_python), "-c", script], cwd=work, env=env)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    install = fresh_python.parent.parent
    assert Path(out["package"]).is_relative_to(install), out["package"]
    assert Path(out["root"]) == site_root
    assert Path(out["argv"][1]) == site_root / "bin" / "specactor.js", out["argv"]
    assert not Path(out["argv"][1]).is_relative_to(ROOT)
    # tiny was prepared by the installed package into the fresh cache, never into site-packages
    (prepared,) = (cache / "models").glob("tiny-*")
    assert prepared.name == tiny_dir.name, "the wheel's preparation key differs from the clone's"
    assert not list(site_root.glob("**/.cache"))

    clone = ServerProcess(["--model", str(tiny_dir)])
    try:
        from specactor.client import RolloutClient

        with RolloutClient(clone.address) as client:
            expected = [[r.token_ids for r in p] for p in client.generate(PROMPTS, **PARAMS)]
    finally:
        clone.stop()
    assert out["tokens"] == expected


def test_an_installed_wheel_runs_the_verl_check_command_from_outside_the_clone(fresh_python, tmp_path):
    """`python -m specactor.verl.check` with the installed package: veRL's agent loop under a local Ray
    (its workers run the fresh venv's Python too) drives the replica, whose server is the install's."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "p.jsonl").write_text('{"prompt": "What is 2 plus 3?"}\n{"prompt": "Name a colour."}\n')
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "VIRTUAL_ENV", "SPECACTOR_"))
    }
    env["SPECACTOR_CACHE"] = str(tmp_path / "cache")
    argv = ["--model", "tiny", "--prompts", "p.jsonl", "--n", "2", "--response-length", "8", "--seed", "3"]
    run([str(fresh_python), "-m", "specactor.verl.check", *argv, "--json", "out.json"], cwd=work, env=env)
    out = json.loads((work / "out.json").read_text())
    assert [(s["prompt_index"], s["sample_index"]) for s in out["samples"]] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    assert all(
        1 <= len(s["token_ids"]) <= 8 and len(s["log_probs"]) == len(s["token_ids"]) for s in out["samples"]
    )
    assert Path(out["config"]["model"]).is_relative_to(tmp_path / "cache"), out["config"]["model"]


def test_the_verl_extra_resolves_with_the_plugin_entry_point():
    """`pip install -e '.[verl]'` gives one environment: every requirement of specactor and of its
    verl extra is met by what is installed, and veRL finds the plugin and can import it."""
    from packaging.requirements import Requirement

    eps = {ep.name: ep for ep in metadata.entry_points(group="verl.plugins")}
    assert "specactor" in eps and eps["specactor"].value == "specactor.verl"
    for spec in metadata.requires("specactor") or []:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate({"extra": "verl"}):
            continue
        version = metadata.version(req.name)
        assert req.specifier.contains(version, prereleases=True), f"{req.name} {version} does not meet {req}"
    for spec in metadata.requires("verl") or []:  # verl's own pins (transformers <5.11) hold too
        req = Requirement(spec)
        if req.marker is None and req.name == "transformers":
            assert req.specifier.contains(metadata.version("transformers"), prereleases=True), req
    run([sys.executable, "-m", "pip", "check"])
    probe = "import importlib.metadata as m; [e.load() for e in m.entry_points(group='verl.plugins')]; import cachetools"
    run([sys.executable, "-c", probe])
