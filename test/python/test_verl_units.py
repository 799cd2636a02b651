"""The veRL shim's rules without Ray: registration, settings, sampling parameters, seeds."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from specactor.sampling import derive_seed
from specactor.verl.sampling_params import UnsupportedSamplingParams, translate
from specactor.verl.seeds import SeedPolicy, prompt_hash32, step_seed
from specactor.verl.settings import SettingsError, SpecActorSettings, resolve_model

RESOLVE = (
    "import verl\n"
    "from verl.workers.rollout.replica import RolloutReplicaRegistry\n"
    "from verl.workers.rollout.base import _ROLLOUT_REGISTRY, get_rollout_class\n"
    "print(RolloutReplicaRegistry.get('specactor').__name__, _ROLLOUT_REGISTRY[('specactor', 'async')])\n"
)


def _resolve(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    proc = subprocess.run(
        [sys.executable, "-c", RESOLVE], capture_output=True, text=True, env={**clean, **env}, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_import_verl_registers_specactor_through_the_entry_point_with_no_variable_set():
    assert _resolve({}) == "SpecActorReplica specactor.verl.adapter.ServerAdapter"


def test_verl_use_external_modules_registers_it_too():
    env = {"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": "specactor.verl"}
    assert _resolve(env) == "SpecActorReplica specactor.verl.adapter.ServerAdapter"


def test_the_trainer_rank_rollout_class_is_our_adapter():
    import specactor.verl  # noqa: F401
    from specactor.verl.adapter import ServerAdapter
    from verl.workers.rollout.base import BaseRollout, get_rollout_class

    cls = get_rollout_class("specactor", "async")
    assert cls is ServerAdapter and issubclass(cls, BaseRollout)


def test_settings_defaults_and_errors(tiny_dir):
    s = SpecActorSettings.from_rollout_config({"custom": None})
    assert s.mode == "plain" and s.drafter is None
    assert s.serve_args("M", 1024)[:8] == [
        "--model",
        "M",
        "--mode",
        "plain",
        "--draft-len",
        "4",
        "--max-batch",
        "256",
    ]
    v = SpecActorSettings.from_rollout_config(
        {"custom": {"specactor": {"mode": "vanilla", "drafter": "suffix"}}}
    )
    assert v.serve_args("M", 8)[-4:] == ["--drafter", "suffix", "--ort-spinning", "off"]
    sa = SpecActorSettings.from_mapping({"mode": "specactor", "drafters": ["suffix", "ngram"]})
    assert sa.serve_args("M", 8)[-6:] == [
        "--drafters",
        "suffix,ngram",
        "--policy",
        "cost",
        "--ort-spinning",
        "off",
    ]
    assert not sa.uses_model_drafter()
    assert SpecActorSettings.from_mapping(
        {"mode": "specactor"}
    ).uses_model_drafter()  # the default set has it
    for bad, msg in [
        (
            {"mode": "specactor", "drafter": "suffix"},
            "needs actor_rollout_ref.rollout.custom.specactor.mode=vanilla",
        ),
        ({"mode": "specactor", "drafters": ["suffix", "beam"]}, "a non-empty list of distinct drafters"),
        ({"mode": "vanilla", "drafter": "suffix", "drafters": ["suffix"]}, "drafters needs"),
        ({"mode": "specactor", "policy": "magic"}, "policy='magic' is not supported"),
        ({"mode": "fast"}, "mode='fast' is not supported"),
        ({"mode": "vanilla"}, "needs actor_rollout_ref.rollout.custom.specactor.drafter"),
        ({"drafter": "suffix"}, "needs actor_rollout_ref.rollout.custom.specactor.mode=vanilla"),
        ({"draft_len": 0}, "draft_len must be an integer >= 1"),
        ({"colour": "red"}, "unknown key"),
        ({"engine": "tpu"}, "engine='tpu' is not supported"),
    ]:
        with pytest.raises(SettingsError, match=msg):
            SpecActorSettings.from_mapping(bad)
    assert resolve_model(s, str(tiny_dir / "hf")) == str(tiny_dir)
    with pytest.raises(SettingsError, match="not a prepared specactor model"):
        resolve_model(s, "/no/such/Qwen2.5-0.5B")


def test_sampling_params_translate_like_vllm_and_refuse_what_we_do_not_implement():
    # no max_tokens: min(response_length, prompt_length + response_length - len(prompt)), then the context
    r = translate(
        [1] * 10,
        {"temperature": 0.7, "top_p": 0.9, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True},
        prompt_length=16,
        response_length=8,
        max_context=64,
    )
    assert (r.max_tokens, r.temperature, r.top_p, r.top_k, r.stop_token_ids, r.seed) == (
        8,
        0.7,
        0.9,
        -1,
        None,
        None,
    )
    assert translate([1] * 20, {}, prompt_length=16, response_length=8, max_context=64).max_tokens == 4
    assert (
        translate(
            [1] * 60, {"max_tokens": 32}, prompt_length=16, response_length=8, max_context=64
        ).max_tokens
        == 4
    )
    # a prompt with no room is sent as it is: the server's own message says what is wrong
    assert (
        translate([1] * 64, {"max_tokens": 5}, prompt_length=16, response_length=8, max_context=64).max_tokens
        == 5
    )
    assert translate(
        [1], {"top_k": 0, "stop_token_ids": [7, 3, 7]}, prompt_length=4, response_length=4, max_context=64
    ).stop_token_ids == [3, 7]
    with pytest.raises(UnsupportedSamplingParams, match="repetition_penalty=1.1"):
        translate([1], {"repetition_penalty": 1.1}, prompt_length=4, response_length=4, max_context=64)
    with pytest.raises(UnsupportedSamplingParams, match="does not know sampling parameter mirostat"):
        translate([1], {"mirostat": 2}, prompt_length=4, response_length=4, max_context=64)
    with pytest.raises(UnsupportedSamplingParams, match="min_p"):
        translate([1], {"min_p": 0.1}, prompt_length=4, response_length=4, max_context=64)


def test_seeds_fresh_by_default_and_reproducible_on_the_switch():
    assert SeedPolicy(reproducible=False, seed=7, n=4).seed_for("det-3", [1, 2]) is None
    p = SeedPolicy(reproducible=True, seed=7, n=4)
    # veRL's deterministic ids name the batch row: prompt row // n, sample row % n
    assert p.seed_for("det-6", [9]) == derive_seed(7, 1, 2)
    # otherwise the k-th call of a prompt in this global step; siblings differ
    sibling = [p.seed_for("uuid", [5, 6]) for _ in range(4)]
    assert sibling == [derive_seed(7, prompt_hash32([5, 6]), k) for k in range(4)] and len(set(sibling)) == 4
    p.set_global_steps(3)
    assert p.seed_for("uuid", [5, 6]) == derive_seed(step_seed(7, 3), prompt_hash32([5, 6]), 0)
    assert step_seed(7, 3) == derive_seed(7, 2**32 - 1, 3) and step_seed(7, 0) == 7


def test_a_node_without_node_20_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    from specactor.server_process import ServerProcess, ServerStartError

    monkeypatch.delenv("SPECACTOR_NODE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerStartError, match="needs Node.js >= 20 .* no `node` is on PATH"):
        ServerProcess(["--model", "tiny"])
    old = tmp_path / "node"
    old.write_text("#!/bin/sh\necho v18.19.0\n")
    old.chmod(0o755)
    monkeypatch.setenv("SPECACTOR_NODE", str(old))
    with pytest.raises(ServerStartError, match="needs Node.js >= 20; .* is v18.19.0"):
        ServerProcess(["--model", "tiny"])


def test_kv_capacity_follows_verls_rollout_settings(tiny_dir):
    from types import SimpleNamespace

    from specactor.verl.adapter import kv_capacity

    s = SpecActorSettings()
    cfg = SimpleNamespace(max_model_len=None, prompt_length=100, response_length=50, max_num_seqs=32)
    assert kv_capacity(cfg, s, str(tiny_dir), "cpu", "float32") == (32, 150)
    cfg.max_model_len = 4096  # at most the model's context
    assert kv_capacity(cfg, s, str(tiny_dir), "cpu", "float32") == (32, 1024)
    assert kv_capacity(cfg, SpecActorSettings(max_batch=8), str(tiny_dir), "cpu", "float32") == (8, 1024)
