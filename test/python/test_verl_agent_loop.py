"""veRL's own agent loop driving the real replica on CPU: a local Ray, veRL's Hydra config, veRL's
LLMServerManager and AgentLoopManager, our replica, its actor and the rollout server it starts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
import ray
from conftest import cli_rollout, wait_until
from specactor.verl import check
from specactor.verl.server import EXTRA_FIELD_KEYS as EXTRA_KEYS

PROMPTS = ["What is 2 plus 3?", "Name a colour.", "Count to five."]
BATCH_KEYS = (
    "prompts",
    "responses",
    "response_mask",
    "input_ids",
    "attention_mask",
    "position_ids",
    "rollout_log_probs",
)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def config(model_dir: Path, *flags: str, prompt_length: int = 64):
    args = check.parse_args(["--model", str(model_dir), "--prompts", "-", "--json", "-", *flags])
    return check.compose_config(args, model_dir, prompt_length)


def rollout(model_dir: Path, *flags: str, prompt_length: int = 64) -> check.VerlRollout:
    return check.VerlRollout(config(model_dir, *flags, prompt_length=prompt_length))


def prompt_rows(output) -> list[list[int]]:
    """Each row's prompt ids as veRL built them (left-padded, attention mask 1 on the prompt)."""
    width = output.batch["prompts"].shape[1]
    mask = output.batch["attention_mask"][:, :width].bool()
    return [output.batch["prompts"][r][mask[r]].tolist() for r in range(mask.shape[0])]


def cli_samples(
    model_dir: Path, tmp_path: Path, name: str, prompts: list[list[int]], *args: str
) -> list[dict]:
    raw, _ = cli_rollout(model_dir, [{"prompt_ids": p} for p in prompts], tmp_path, name, *args)
    return [json.loads(line) for line in raw.splitlines()]


def test_agent_loop_returns_verl_shapes_and_the_cli_tokens(local_ray, tiny_dir, tmp_path):
    r = rollout(tiny_dir, "--n", "2", "--response-length", "16", "--seed", "7")
    try:
        output, samples, _ = r.generate(PROMPTS)
    finally:
        r.close()
    rows = 2 * len(PROMPTS)
    shapes = {k: tuple(output.batch[k].shape) for k in BATCH_KEYS}
    assert shapes["prompts"] == (rows, 64) and shapes["responses"] == (rows, 16)
    assert shapes["response_mask"] == shapes["rollout_log_probs"] == (rows, 16)
    assert shapes["input_ids"] == shapes["attention_mask"] == shapes["position_ids"] == (rows, 80)
    for key in EXTRA_KEYS:
        assert len(output.non_tensor_batch[key]) == rows
    # the unique prompts (each is repeated n=2 times, interleaved), through `specactor rollout --seed 7`
    prompts = prompt_rows(output)[::2]
    cli = cli_samples(tiny_dir, tmp_path, "cli", prompts, "--n", "2", "--max-tokens", "16", "--seed", "7")
    assert [(s["prompt_index"], s["sample_index"]) for s in samples] == [
        (c["prompt_index"], c["sample_index"]) for c in cli
    ]
    for s, c in zip(samples, cli, strict=True):
        assert s["seed"] == c["seed"]
        assert s["token_ids"] == c["token_ids"]
        # rollout_log_probs are what our server returned (float32 on the wire and in veRL's tensor)
        assert s["log_probs"] == pytest.approx(c["logprobs"], abs=1e-6)


@pytest.mark.parametrize("mode", [("vanilla", "ngram"), ("vanilla", "suffix"), ("vanilla", "model")])
def test_speculative_configurations_return_plain_tokens(local_ray, tiny_dir, mode):
    flags = ("--n", "2", "--response-length", "24", "--seed", "11")
    plain = rollout(tiny_dir, *flags)
    try:
        _, expected, _ = plain.generate(PROMPTS)
    finally:
        plain.close()
    spec = rollout(tiny_dir, *flags, "--mode", mode[0], "--drafter", mode[1])
    try:
        output, got, _ = spec.generate(PROMPTS)
        stats = ray.get(spec.server.stats.remote())
    finally:
        spec.close()
    # plain's tokens and seeds; log-probs up to the float noise of batched verification
    assert [(s["token_ids"], s["seed"]) for s in got] == [(s["token_ids"], s["seed"]) for s in expected]
    for s, e in zip(got, expected, strict=True):
        assert s["log_probs"] == pytest.approx(e["log_probs"], abs=1e-4)
    assert stats["drafter"]["verify_steps"] > 0
    drafted = output.non_tensor_batch["spec_num_draft_tokens"]
    assert sum(int(x) for x in drafted) == stats["drafter"]["proposed_tokens"]


def test_validation_is_greedy_and_siblings_differ(local_ray, tiny_dir, tmp_path):
    r = rollout(tiny_dir, "--n", "4", "--response-length", "16", "--temperature", "1.0")
    try:
        _, samples, _ = r.generate(PROMPTS)
        val_output, greedy, _ = r.generate(PROMPTS, validate=True)
    finally:
        r.close()
    # no seed given: every sibling gets its own, so a GRPO group is not four copies of one sample
    for j in range(len(PROMPTS)):
        group = [s for s in samples if s["prompt_index"] == j]
        assert len({s["seed"] for s in group}) == 4
        assert len({tuple(s["token_ids"]) for s in group}) > 1
    cli = cli_samples(
        tiny_dir, tmp_path, "greedy", prompt_rows(val_output), "--max-tokens", "16", "--temperature", "0"
    )
    assert [s["token_ids"] for s in greedy] == [c["token_ids"] for c in cli]


def test_bad_input_raises_our_message_in_verl_and_the_server_keeps_serving(local_ray, tiny_dir):
    from verl.workers.rollout.replica import TokenOutput

    r = rollout(tiny_dir, "--response-length", "16", prompt_length=4096)
    try:
        client = r.manager.get_client()
        params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}

        async def call(prompt_ids, sampling_params):
            return await client.generate("r1", prompt_ids=prompt_ids, sampling_params=sampling_params)

        with pytest.raises(Exception, match="exceeds the model context"):
            asyncio.run(call([1] * 5000, {**params, "max_tokens": 8}))
        with pytest.raises(Exception, match="repetition_penalty=1.2"):
            asyncio.run(call([1, 2, 3], {**params, "repetition_penalty": 1.2}))
        out: TokenOutput = asyncio.run(call([1, 2, 3], {**params, "max_tokens": 8}))
        assert len(out.token_ids) == len(out.log_probs) and 1 <= len(out.token_ids) <= 8
        assert out.stop_reason == "completed" and set(EXTRA_KEYS) <= set(out.extra_fields)
        # stop_token_ids (what veRL's tool agent loop adds) end a sample at the stop token, kept
        full = asyncio.run(call([1, 2, 3], {**params, "max_tokens": 12, "seed": 5}))
        stop = full.token_ids[3]
        cut = asyncio.run(call([1, 2, 3], {**params, "max_tokens": 12, "seed": 5, "stop_token_ids": [stop]}))
        assert cut.token_ids == full.token_ids[: full.token_ids.index(stop) + 1]
    finally:
        r.close()


def test_abort_resume_reject_and_kv_release_have_real_effects(local_ray, smollm2_dir):
    r = rollout(smollm2_dir, "--response-length", "400", prompt_length=64)
    replica, server = r.replica, r.server
    params = {"temperature": 1.0, "max_tokens": 400}
    try:

        async def scenario():
            running = [server.generate.remote([1, 9690, 198, 28, 11], params, f"a{i}") for i in range(4)]
            deadline = time.monotonic() + 60
            while (await server.stats.remote())["generated_tokens"] < 16 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await replica.abort_all_requests()
            outputs = await asyncio.gather(*running)
            aborted = [o for o in outputs if o.stop_reason == "aborted"]
            assert aborted and all(o.stop_reason == "completed" for o in outputs if o not in aborted)
            # the aborted samples keep the tokens generated so far
            assert all(0 < len(o.token_ids) < 400 and len(o.log_probs) == len(o.token_ids) for o in aborted)
            # behind the closed gate a call waits for resume_generation
            parked = server.generate.remote([1, 2, 3], {"temperature": 1.0, "max_tokens": 4}, "p")
            await asyncio.sleep(0.5)
            ready, _ = ray.wait([parked], timeout=0)
            assert not ready
            await replica.resume_generation()
            assert len((await parked).token_ids) == 4
            # with reject_request=True it returns aborted at once, with no tokens
            await replica.abort_all_requests(reject_request=True)
            rejected = await server.generate.remote([1, 2, 3], {"temperature": 1.0, "max_tokens": 4}, "x")
            assert rejected.stop_reason == "aborted" and rejected.token_ids == []
            await replica.resume_generation()
            await replica.clear_kv_cache()
            await replica.set_global_steps(3)
            out = await server.generate.remote([1, 2, 3], {"temperature": 1.0, "max_tokens": 4}, "g")
            assert out.extra_fields["global_steps"] == 3 and len(out.token_ids) == 4

        asyncio.run(scenario())
    finally:
        r.close()


def test_kv_release_frees_the_workers_memory_and_resume_brings_it_back(local_ray, tiny_dir):
    # torch workers hold their KV cache whole; the ONNX engine allocates per live sequence (docs/VERL.md)
    flags = ("--override", "+actor_rollout_ref.rollout.custom.specactor.engine=workers")
    r = rollout(tiny_dir, "--response-length", "16", "--seed", "2", *flags)
    replica, server = r.replica, r.server
    try:

        async def scenario():
            before = await server.generate.remote([1, 2, 3], {"max_tokens": 12}, "det-0")
            held = (await server.stats.remote())["kv_bytes"]
            await replica.release_kv_cache()
            assert held > 0 and (await server.stats.remote())["kv_bytes"] == 0
            # a call while the memory is released waits for it (the server is paused)
            waiting = server.generate.remote([1, 2, 3], {"max_tokens": 12}, "det-0")
            await asyncio.sleep(0.5)
            assert not ray.wait([waiting], timeout=0)[0]
            await replica.resume_kv_cache()
            after = await waiting
            assert (await server.stats.remote())["kv_bytes"] == held
            assert (
                after.token_ids == before.token_ids
                and after.extra_fields["seed"] == before.extra_fields["seed"]
            )
            # veRL's sleep / wake_up (free_cache_engine is true by default) do the same
            await replica.sleep()
            assert (await server.stats.remote())["kv_bytes"] == 0
            await replica.wake_up()
            assert (await server.stats.remote())["kv_bytes"] == held

        asyncio.run(scenario())
    finally:
        r.close()


def test_an_engine_failure_reaches_verl_as_an_exception(local_ray, tiny_dir):
    flags = ("--override", "+actor_rollout_ref.rollout.custom.specactor.engine=workers")
    r = rollout(tiny_dir, "--response-length", "16", *flags)
    try:
        workers = ray.get(r.server.stats.remote())["workers"]
        for w in workers:
            os.kill(int(w["pid"]), signal.SIGKILL)
        with pytest.raises(Exception, match="engine_failed|no engine worker"):
            r.generate(PROMPTS[:1])
    finally:
        r.close()


def test_the_server_dies_with_its_actor(local_ray, tiny_dir):
    r = rollout(tiny_dir, "--response-length", "8")
    try:
        actor_pid = ray.get(r.server.pid.remote())
        server_pid = ray.get(r.server.server_pid.remote())
        os.kill(actor_pid, signal.SIGKILL)

        def gone() -> bool:
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                return True
            # a zombie counts as gone: its parent (the dead actor) can no longer reap it
            return Path(f"/proc/{server_pid}/stat").read_text().split()[2] == "Z"

        wait_until(gone, "the server to exit after its actor was killed", timeout=20)
    finally:
        r.manager.get_replicas()[0].servers = []


def test_check_command_on_smollm2_plain_equals_suffix_and_the_cli(smollm2_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:2]))
    outs = {}
    for name, extra in [("plain", []), ("suffix", ["--mode", "vanilla", "--drafter", "suffix"])]:
        out = tmp_path / f"{name}.json"
        argv = ["--model", str(smollm2_dir), "--prompts", str(prompts), "--n", "2", "--response-length", "24"]
        assert check.main([*argv, "--seed", "3", "--json", str(out), *extra]) == 0
        outs[name] = json.loads(out.read_text())
    plain, suffix = outs["plain"]["samples"], outs["suffix"]["samples"]
    assert [s["token_ids"] for s in plain] == [s["token_ids"] for s in suffix]
    assert {"prompt_index", "sample_index", "token_ids", "log_probs", "seed"} == set(plain[0])
    assert outs["plain"]["rollout_s"] > 0
    # the same prompts and seed through `specactor rollout` (the chat template applied there too)
    src = [{"prompt": p} for p in PROMPTS[:2]]
    raw, _ = cli_rollout(smollm2_dir, src, tmp_path, "cli", "--n", "2", "--max-tokens", "24", "--seed", "3")
    cli = [json.loads(line) for line in raw.splitlines()]
    assert [s["token_ids"] for s in plain] == [c["token_ids"] for c in cli]
