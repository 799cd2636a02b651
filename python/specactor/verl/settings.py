"""SpecActor's settings inside veRL's rollout config, and the server command line they give.

veRL's ``RolloutConfig`` has no field for us, but it has an extension dict, ``custom``. Our keys live
under ``custom.specactor``; Hydra needs ``+`` to add keys the schema lacks::

    actor_rollout_ref.rollout.name=specactor \\
    +actor_rollout_ref.rollout.custom.specactor.mode=vanilla \\
    +actor_rollout_ref.rollout.custom.specactor.drafter=suffix

Every key, its default and its meaning is in ``SpecActorSettings`` below (and docs/VERL.md). The
default mode is ``plain``: speculation is opt-in until the cost-model policy is never slower than
plain on the user's hardware.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MODES = ("plain", "vanilla", "decoupled", "specactor")
DRAFTERS = ("ngram", "suffix", "model")
POLICIES = ("cost", "const-price", "fixed", "batch-table")
SPECACTOR_DRAFTERS = ("suffix", "ngram", "model")
ENGINES = ("onnx", "workers")
MODEL_NAMES = ("tiny", "smollm2")


class SettingsError(ValueError):
    """A ``custom.specactor`` key (or a veRL setting we depend on) has a value we cannot run."""


@dataclass(frozen=True)
class SpecActorSettings:
    """``actor_rollout_ref.rollout.custom.specactor``: every key is optional."""

    mode: str = "plain"
    """plain | vanilla (drafter and verifier take turns) | decoupled (the model drafter runs ahead) |
    specactor (several drafters merged per request under the cost-model policy)."""
    drafter: str | None = None
    """ngram | suffix | model: the drafter of mode vanilla (decoupled implies model)."""
    drafters: list[str] | None = None
    """Mode specactor: the drafters merged per request (default suffix, ngram, model)."""
    policy: str = "cost"
    """Mode specactor: cost (the measured cost model) or an ablation: const-price, fixed, batch-table."""
    draft_len: int = 4
    """Deepest draft per verify step."""
    drafter_model: str | None = None
    """For drafter model: q8 (the policy's 8-bit copy, default), layers8, or a prepared directory."""
    model: str | None = None
    """A prepared model (tiny, smollm2 or a directory with onnx/ and hf/); default: derived from
    ``actor_rollout_ref.model.path`` when that is a prepared model's ``hf/`` directory."""
    engine: str = "onnx"
    """onnx: the in-process ONNX engine; workers: Python torch engine workers started by the server."""
    workers: int = 1
    """With engine workers: how many local workers the server starts."""
    worker_device: str = "cpu"
    """With engine workers: cpu | cuda."""
    threads: int | None = None
    """Engine threads (default: all cores of the node)."""
    ort_spinning: bool = False
    """ONNX engine: let onnxruntime's pool threads spin between nodes. Off by default here: Ray's own
    processes share the node's cores, and a preempted spinning thread stalls its partners (measured:
    64 samples x 128 tokens on 2 cores beside an idle local Ray, 52.4 s spinning, 37.4 s not)."""
    max_batch: int | None = None
    """Most sequences in one engine step (default: veRL's ``max_num_seqs``, at most 256)."""
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port (0: any free port); off by default."""
    server_args: list[str] = field(default_factory=list)
    """Extra ``specactor serve`` flags, passed as they are."""
    ready_timeout_s: float = 900.0
    """How long the server may take to start (a first start prepares the model)."""

    @classmethod
    def from_rollout_config(cls, rollout_config: Any) -> SpecActorSettings:
        custom = config_value(rollout_config, "custom") or {}
        raw = config_value(custom, "specactor") or {}
        if not isinstance(raw, Mapping) and not hasattr(raw, "items"):
            raise SettingsError(f"actor_rollout_ref.rollout.custom.specactor must be a mapping, got {raw!r}")
        return cls.from_mapping(dict(raw.items()))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> SpecActorSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SettingsError(
                f"unknown key(s) in actor_rollout_ref.rollout.custom.specactor: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        values = dict(raw)
        if values.get("drafters") is not None:
            values["drafters"] = [str(d) for d in values["drafters"]]
        if "server_args" in values:
            values["server_args"] = [str(a) for a in values["server_args"] or []]
        s = cls(**values)
        s.validate()
        return s

    def validate(self) -> None:
        key = "actor_rollout_ref.rollout.custom.specactor"
        if self.mode not in MODES:
            raise SettingsError(f"{key}.mode={self.mode!r} is not supported ({', '.join(MODES)})")
        if self.mode == "vanilla" and self.drafter not in DRAFTERS:
            raise SettingsError(f"{key}.mode=vanilla needs {key}.drafter, one of {', '.join(DRAFTERS)}")
        if self.mode == "decoupled" and self.drafter not in (None, "model"):
            raise SettingsError(f"{key}.mode=decoupled drafts with the model drafter, not {self.drafter!r}")
        if self.mode in ("plain", "specactor") and self.drafter is not None:
            raise SettingsError(f"{key}.drafter={self.drafter!r} needs {key}.mode=vanilla or decoupled")
        if self.drafters is not None:
            if self.mode != "specactor":
                raise SettingsError(f"{key}.drafters needs {key}.mode=specactor (vanilla takes one drafter)")
            bad = [d for d in self.drafters if d not in DRAFTERS]
            if bad or not self.drafters or len(set(self.drafters)) != len(self.drafters):
                raise SettingsError(
                    f"{key}.drafters={self.drafters!r}: a non-empty list of distinct drafters from {', '.join(DRAFTERS)}"
                )
        if self.policy not in POLICIES:
            raise SettingsError(f"{key}.policy={self.policy!r} is not supported ({', '.join(POLICIES)})")
        if self.engine not in ENGINES:
            raise SettingsError(f"{key}.engine={self.engine!r} is not supported ({', '.join(ENGINES)})")
        for name in ("draft_len", "workers"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise SettingsError(f"{key}.{name} must be an integer >= 1, got {v!r}")
        if self.max_batch is not None and (not isinstance(self.max_batch, int) or self.max_batch < 1):
            raise SettingsError(f"{key}.max_batch must be an integer >= 1, got {self.max_batch!r}")
        if self.metrics_port is not None and not (
            isinstance(self.metrics_port, int) and self.metrics_port >= 0
        ):
            raise SettingsError(f"{key}.metrics_port must be an integer >= 0, got {self.metrics_port!r}")

    def specactor_drafters(self) -> list[str]:
        return list(self.drafters) if self.drafters is not None else list(SPECACTOR_DRAFTERS)

    def uses_model_drafter(self) -> bool:
        if self.mode == "specactor":
            return "model" in self.specactor_drafters()
        return self.mode == "decoupled" or self.drafter == "model"

    def batch(self, max_num_seqs: int) -> int:
        return self.max_batch or max(1, min(max_num_seqs, 256))

    def serve_args(self, model: str, max_num_seqs: int, *, hybrid: bool = False) -> list[str]:
        """The ``specactor serve`` flags for these settings (the address and parent pid are added later).

        ``hybrid``: the engines are the trainer ranks' workers, which register after the server is
        ready, so the server starts none and is ready with none."""
        args = ["--model", model, "--mode", self.mode, "--draft-len", str(self.draft_len)]
        args += ["--max-batch", str(self.batch(max_num_seqs))]
        if self.drafter is not None:
            args += ["--drafter", self.drafter]
        if self.mode == "specactor":
            args += ["--drafters", ",".join(self.specactor_drafters()), "--policy", self.policy]
        if self.drafter_model is not None:
            args += ["--drafter-model", self.drafter_model]
        if hybrid:
            args += ["--engine", "workers", "--workers", "0", "--min-workers", "0"]
        elif self.engine == "workers":
            args += [
                "--engine",
                "workers",
                "--workers",
                str(self.workers),
                "--worker-device",
                self.worker_device,
            ]
        if self.threads is not None:
            args += ["--threads", str(self.threads)]
        if self.engine == "onnx" and not hybrid:
            args += ["--ort-spinning", "on" if self.ort_spinning else "off"]
        if self.metrics_port is not None:
            args += ["--metrics-port", str(self.metrics_port)]
        return args + list(self.server_args)


HYBRID_DTYPES = ("float32", "float64")


def check_hybrid(settings: SpecActorSettings, rollout_config: Any, model_config: Any) -> None:
    """What the hybrid engine (weights synced from the trainer ranks) cannot run, refused at start-up
    with the setting named: the replica and every trainer rank's adapter call this."""
    key = "actor_rollout_ref.rollout.custom.specactor"
    if settings.uses_model_drafter():
        # the model drafters (the 8-bit copy, the truncated layers) are derived from the policy when
        # the model is prepared; nothing rebuilds them from synced weights, so they would draft for a
        # stale policy (exact, but ever slower) with no sign of it
        raise SettingsError(
            f"{key}.mode={settings.mode} drafter={settings.drafter or 'model'}: the model drafter is not "
            "rebuilt from synced weights, so the hybrid engine does not support it; use drafter=ngram or "
            "drafter=suffix (mode=vanilla), drafters=[suffix,ngram] (mode=specactor), or mode=plain"
        )
    tp = int(config_value(rollout_config, "tensor_model_parallel_size") or 1)
    if tp != 1:
        raise SettingsError(
            f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp}: specactor's torch engine runs a "
            "whole model on one device; set it to 1"
        )
    pp = int(config_value(rollout_config, "pipeline_model_parallel_size") or 1)
    if pp != 1:
        raise SettingsError(f"actor_rollout_ref.rollout.pipeline_model_parallel_size={pp}: set it to 1")
    dtype = str(config_value(rollout_config, "dtype") or "float32").removeprefix("torch.")
    if dtype not in HYBRID_DTYPES:
        raise SettingsError(
            f"actor_rollout_ref.rollout.dtype={dtype}: specactor's torch engine runs "
            f"{' or '.join(HYBRID_DTYPES)} (its trie attention does not run in half precision); set "
            "actor_rollout_ref.rollout.dtype=float32 (synced weights of any float dtype are converted)"
        )
    backend = config_value(config_value(rollout_config, "checkpoint_engine"), "backend") or "naive"
    if backend != "naive":
        # other backends send weights to a receiver in the rollout's own process, which we do not
        # have: our engines live in the trainer ranks
        raise SettingsError(
            f"actor_rollout_ref.rollout.checkpoint_engine.backend={backend}: the hybrid engine loads "
            "weights in the trainer ranks' own processes; set it to naive"
        )
    lora = config_value(model_config, "lora") or {}
    rank = max(int(config_value(model_config, "lora_rank") or 0), int(config_value(lora, "rank") or 0))
    if rank > 0 and not config_value(lora, "merge"):
        raise SettingsError(
            f"actor_rollout_ref.model.lora_rank={rank}: specactor loads full weights, not LoRA adapters; "
            "set actor_rollout_ref.model.lora.merge=True (veRL then syncs merged weights) or train "
            "without LoRA"
        )


def resolve_model(settings: SpecActorSettings, model_path: str | None) -> str:
    """The prepared model the server runs: ``custom.specactor.model``, else the prepared model whose
    ``hf/`` directory ``actor_rollout_ref.model.path`` names (veRL loads its tokenizer from there)."""
    if settings.model is not None:
        return settings.model
    if model_path:
        p = Path(model_path).expanduser()
        for candidate in (p.parent, p):
            if (candidate / "onnx" / "model.json").is_file() and (candidate / "hf" / "config.json").is_file():
                return str(candidate)
    raise SettingsError(
        f"actor_rollout_ref.model.path={model_path!r} is not a prepared specactor model. Prepare one "
        "(`specactor prepare-model smollm2` prints its directory) and point model.path at its hf/ "
        "directory, or name it with +actor_rollout_ref.rollout.custom.specactor.model=tiny|smollm2|DIR"
    )


def prepared_model_dir(spec: str) -> Path:
    """The directory of a prepared model: a name (tiny, smollm2) is prepared on first use by the
    server's ``prepare-model``; a directory must hold ``onnx/`` and ``hf/``."""
    import subprocess

    from ..server_process import server_command, server_env

    d = Path(spec).expanduser()
    if (d / "onnx" / "model.json").is_file() and (d / "hf" / "config.json").is_file():
        return d.resolve()
    if spec not in MODEL_NAMES:
        raise SettingsError(
            f"model {spec!r}: not a prepared model directory (no onnx/ and hf/) nor a model name"
        )
    proc = subprocess.run(
        server_command(["prepare-model", spec]), capture_output=True, text=True, env=server_env(), check=False
    )
    if proc.returncode != 0:
        raise SettingsError(f"cannot prepare model {spec}:\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


def config_value(obj: Any, key: str, default: Any = None) -> Any:
    """``key`` of a dict, an OmegaConf DictConfig or one of veRL's config dataclasses (or ``default``)."""
    if obj is None:
        return default
    if isinstance(obj, Mapping) or hasattr(obj, "keys"):
        value = obj.get(key)
    else:
        value = getattr(obj, key, None)
    return default if value is None else value
