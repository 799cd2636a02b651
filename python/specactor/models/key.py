"""``python -m specactor.models.key``: the key of a prepared model directory (``<cache>/models/NAME-KEY``).

The key hashes what shapes a prepared model: the preparation sources (every ``.py`` file of this
package) and the installed versions of the packages that write or read its files (``PACKAGES``), as
this interpreter sees them. Editing a source or changing a pin therefore prepares anew, and the
TypeScript side (``src/models/registry.ts``) removes the older keys' directories. Only the standard
library is imported, so asking for the key costs an interpreter start, not a torch import.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

# The distributions whose versions are part of the key: they export, quantise, tokenise and load.
PACKAGES = ("torch", "transformers", "tokenizers", "gguf", "onnx", "onnxscript", "onnxruntime", "numpy")
KEY_LENGTH = 12  # hex digits; registry.ts matches `NAME-[0-9a-f]{12}` when it prunes older keys


def installed_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """``{distribution: version}`` from the installed metadata; ``"absent"`` for one not installed."""
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def preparation_key(versions: dict[str, str] | None = None, sources: Path | None = None) -> str:
    """The key for ``versions`` (default: the installed ones) and the sources in ``sources``
    (default: this package's directory)."""
    versions = installed_versions() if versions is None else versions
    sources = Path(__file__).resolve().parent if sources is None else sources
    h = hashlib.sha256()
    for f in sorted(p for p in sources.iterdir() if p.suffix == ".py"):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    for name in sorted(versions):
        h.update(f"{name}=={versions[name]}\0".encode())
    return h.hexdigest()[:KEY_LENGTH]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--json"]:
        print(json.dumps({"key": preparation_key(), "versions": installed_versions()}))
    elif not args:
        print(preparation_key())
    else:
        raise SystemExit("usage: python -m specactor.models.key [--json]")


if __name__ == "__main__":
    main()
