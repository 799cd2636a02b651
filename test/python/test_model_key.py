"""The prepared-model key (python/specactor/models/key.py) hashes the preparation sources and the
versions of the packages that shape a prepared model, so a pin change prepares anew."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from specactor.models import key as model_key

MODELS_SRC = Path(model_key.__file__).resolve().parent


def key_cli(env: dict | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "specactor.models.key"], capture_output=True, text=True, env=env, check=True
    )
    return proc.stdout.strip()


def test_the_key_covers_the_packages_that_shape_a_model():
    for name in ("transformers", "torch", "onnx", "onnxscript", "onnxruntime", "gguf", "tokenizers"):
        assert name in model_key.PACKAGES
    versions = model_key.installed_versions()
    assert versions["transformers"] != "absent" and versions["torch"] != "absent"
    assert model_key.preparation_key(versions) == model_key.preparation_key()


def test_a_version_change_changes_the_key():
    versions = model_key.installed_versions()
    base = model_key.preparation_key(versions)
    for name in model_key.PACKAGES:
        bumped = model_key.preparation_key({**versions, name: versions[name] + ".post1"})
        assert bumped != base, name
        assert len(bumped) == model_key.KEY_LENGTH and all(c in "0123456789abcdef" for c in bumped)


def test_a_source_change_changes_the_key(tmp_path):
    copy = tmp_path / "models"
    shutil.copytree(MODELS_SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    versions = model_key.installed_versions()
    assert model_key.preparation_key(versions, copy) == model_key.preparation_key(versions)
    (copy / "prepare.py").write_text((copy / "prepare.py").read_text() + "\n# edited\n")
    assert model_key.preparation_key(versions, copy) != model_key.preparation_key(versions)


def test_an_installed_version_change_gives_the_cli_a_new_directory(tiny_dir, tmp_path):
    """The CLI names the prepared directory with the key its Python computes; a distribution that
    reports another onnx version (metadata first on the path) gives another key, hence another
    directory, which `prepare-model` prepares anew and whose older keys it prunes (test_rollout_cli)."""
    assert tiny_dir.name == f"tiny-{key_cli()}"
    manifest = json.loads((tiny_dir / "manifest.json").read_text())
    assert manifest["versions"] == model_key.installed_versions()
    assert manifest["key"] == key_cli()
    fake = tmp_path / "fake-site"
    info = fake / "onnx-99.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnx\nVersion: 99.0\n")
    env = {**os.environ, "PYTHONPATH": str(fake)}
    assert key_cli(env) != key_cli()
    probe = "from specactor.models.key import installed_versions as v; print(v()['onnx'])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "99.0"
