"""``python -m specactor.verl.check``: prompts through veRL's own agent loop and the real replica.

Runs on one machine with no GPU: a local Ray, veRL's ``ppo_trainer`` config composed by Hydra with
``actor_rollout_ref.rollout.name=specactor``, veRL's ``LLMServerManager`` (which builds our
replica, whose actor starts the rollout server) and veRL's ``AgentLoopManager.generate_sequences``
(the single-turn agent loop: veRL applies the model's chat template to each prompt). The output is
read from the DataProto veRL returns::

    {"samples": [{"prompt_index", "sample_index", "token_ids", "log_probs", "seed"}, ...],
     "rollout_s": seconds in generate_sequences, "config": {...}}

``token_ids`` are the response tokens veRL kept (its ``response_mask``), EOS included; indices are
0-based. ``--seed S`` turns on veRL's ``full_determinism`` with ``rollout.seed=S``, so two runs with
one seed return the same tokens (and the same tokens as ``specactor rollout --seed S``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .settings import DRAFTERS, MODEL_NAMES, MODES, SettingsError, prepared_model_dir


def prepared_model(spec: str) -> Path:
    try:
        return prepared_model_dir(spec)
    except SettingsError as e:
        raise SystemExit(f"specactor.verl.check: error: --model {e}") from e


def read_prompts(path: Path) -> list[str]:
    prompts = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise SystemExit(f'specactor.verl.check: error: {path}:{i + 1}: expected {{"prompt": "..."}}')
        prompts.append(row["prompt"])
    if not prompts:
        raise SystemExit(f"specactor.verl.check: error: {path} holds no prompts")
    return prompts


def compose_config(args: argparse.Namespace, model_dir: Path, prompt_length: int) -> Any:
    """veRL's ``ppo_trainer`` config with the overrides a one-machine CPU rollout needs."""
    import verl
    from hydra import compose, initialize_config_dir

    overrides = [
        "actor_rollout_ref.rollout.name=specactor",
        f"actor_rollout_ref.model.path={model_dir / 'hf'}",
        f"actor_rollout_ref.rollout.n={args.n}",
        f"data.max_prompt_length={prompt_length}",
        f"data.max_response_length={args.response_length}",
        "actor_rollout_ref.rollout.nnodes=1",
        "actor_rollout_ref.rollout.n_gpus_per_node=1",
        "trainer.n_gpus_per_node=1",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        f"actor_rollout_ref.rollout.agent.num_workers={args.agent_workers}",
        f"actor_rollout_ref.rollout.temperature={args.temperature}",
        f"actor_rollout_ref.rollout.top_p={args.top_p}",
        f"actor_rollout_ref.rollout.top_k={args.top_k}",
        "actor_rollout_ref.rollout.calculate_log_probs=True",
        f"+actor_rollout_ref.rollout.custom.specactor.mode={args.mode}",
        f"+actor_rollout_ref.rollout.custom.specactor.model={model_dir}",
    ]
    if args.drafter:
        overrides.append(f"+actor_rollout_ref.rollout.custom.specactor.drafter={args.drafter}")
    if args.drafters:
        overrides.append(f"+actor_rollout_ref.rollout.custom.specactor.drafters=[{args.drafters}]")
    if args.max_batch:
        overrides.append(f"+actor_rollout_ref.rollout.custom.specactor.max_batch={args.max_batch}")
    if args.seed is not None:
        overrides += [
            "actor_rollout_ref.rollout.full_determinism=True",
            f"actor_rollout_ref.rollout.seed={args.seed}",
        ]
    overrides += args.override
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def build_batch(prompts: Sequence[str], n: int, validate: bool) -> Any:
    """veRL's layout: each prompt repeated n times, interleaved (rows p*n .. p*n+n-1)."""
    import numpy as np
    from verl import DataProto

    raw = np.empty(len(prompts), dtype=object)
    raw[:] = [[{"role": "user", "content": p}] for p in prompts]
    batch = DataProto.from_dict(
        non_tensors={"raw_prompt": raw, "index": np.arange(len(prompts))},
        meta_info={"global_steps": 0, "validate": validate},
    )
    return batch.repeat(repeat_times=n, interleave=True)


def samples_from(output: Any, n: int) -> list[dict[str, Any]]:
    responses = output.batch["responses"]
    mask = output.batch["response_mask"]
    log_probs = output.batch.get("rollout_log_probs", None)
    seeds = output.non_tensor_batch.get("seed")
    rows = []
    for row in range(responses.shape[0]):
        keep = mask[row].bool()
        rows.append(
            {
                "prompt_index": row // n,
                "sample_index": row % n,
                "token_ids": responses[row][keep].tolist(),
                "log_probs": None if log_probs is None else log_probs[row][keep].tolist(),
                "seed": None if seeds is None else int(seeds[row]),
            }
        )
    return rows


class VerlRollout:
    """veRL's LLM-server manager (our replica and its server) and agent-loop manager for one config."""

    def __init__(self, cfg: Any) -> None:
        from verl.experimental.agent_loop import AgentLoopManager
        from verl.workers.rollout.llm_server import LLMServerManager

        self.cfg = cfg
        self.n = int(cfg.actor_rollout_ref.rollout.n)
        self.manager = LLMServerManager.create(cfg, worker_group=None)
        try:
            self.agents = AgentLoopManager.create(cfg, llm_client=self.manager.get_client())
        except BaseException:
            self.close()
            raise

    @property
    def replica(self) -> Any:
        return self.manager.get_replicas()[0]

    @property
    def server(self) -> Any:
        """The replica's server actor."""
        return self.replica.servers[0]

    def generate(
        self, prompts: Sequence[str], *, validate: bool = False
    ) -> tuple[Any, list[dict[str, Any]], float]:
        """(veRL's DataProto, its samples as ``samples_from`` reads them, seconds in generate_sequences)."""
        n = 1 if validate else self.n
        batch = build_batch(prompts, n, validate)
        t0 = time.perf_counter()
        output = self.agents.generate_sequences(batch)
        return output, samples_from(output, n), time.perf_counter() - t0

    def close(self) -> None:
        import asyncio

        for replica in self.manager.get_replicas():
            asyncio.run(replica.shutdown())


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    model_dir = prepared_model(args.model)
    prompts = read_prompts(Path(args.prompts))
    cfg = compose_config(args, model_dir, args.prompt_length or 1024)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=args.verbose)
    try:
        rollout = VerlRollout(cfg)
        try:
            ray.get(rollout.server.take_timeline.remote())
            _, samples, rollout_s = rollout.generate(prompts, validate=args.validate)
            stats = ray.get(rollout.server.stats.remote())
            timeline = ray.get(rollout.server.take_timeline.remote())
        finally:
            rollout.close()
    finally:
        if started_ray:
            ray.shutdown()
    return {
        "samples": samples,
        "rollout_s": rollout_s,
        # from the first generate call reaching our actor to the last reply: the rest of rollout_s
        # is veRL's agent loop (building prompts, postprocessing) and Ray
        "server_span_s": max(t for t, _ in timeline) - min(t for t, _ in timeline) if timeline else None,
        "config": {
            "model": str(model_dir),
            "mode": args.mode,
            "drafter": args.drafter,
            "n": args.n,
            "response_length": args.response_length,
            "seed": args.seed,
            "agent_workers": args.agent_workers,
        },
        "server_stats": {
            k: stats.get(k) for k in ("engine_steps", "generated_tokens", "peak_batch", "drafter")
        },
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m specactor.verl.check",
        description="Run prompts through veRL's own agent loop with rollout.name=specactor on this machine "
        "(local Ray, no GPU) and write what veRL returned as JSON.",
    )
    p.add_argument("--model", required=True, help=f"{'|'.join(MODEL_NAMES)} or a prepared directory")
    p.add_argument(
        "--prompts", required=True, help='JSONL file of {"prompt": "..."} lines (chat template applied)'
    )
    p.add_argument("--n", type=int, default=1, help="samples per prompt (GRPO group size)")
    p.add_argument("--response-length", type=int, default=256, help="veRL's data.max_response_length")
    p.add_argument(
        "--prompt-length", type=int, default=None, help="veRL's data.max_prompt_length (default 1024)"
    )
    p.add_argument(
        "--seed", type=int, default=None, help="reproducible rollout (full_determinism, rollout.seed)"
    )
    p.add_argument("--mode", choices=MODES, default="plain")
    p.add_argument("--drafter", choices=DRAFTERS, default=None, help="the drafter of --mode vanilla")
    p.add_argument(
        "--drafters", default=None, metavar="LIST", help="--mode specactor: drafters merged per request (a,b)"
    )
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=-1)
    p.add_argument("--max-batch", type=int, default=None, help="most sequences per engine step")
    p.add_argument("--agent-workers", type=int, default=1, help="veRL agent loop workers")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs the local Ray may schedule")
    p.add_argument("--validate", action="store_true", help="a validation batch (veRL's val_kwargs: greedy)")
    p.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="another Hydra override"
    )
    p.add_argument("--json", required=True, metavar="OUT", help="where to write the result")
    p.add_argument("--verbose", action="store_true", help="show the Ray workers' logs")
    args = p.parse_args(argv)
    if args.n < 1 or args.response_length < 1 or args.agent_workers < 1:
        p.error("--n, --response-length and --agent-workers must be >= 1")
    if args.mode == "vanilla" and args.drafter is None:
        p.error("--mode vanilla needs --drafter")
    if args.drafters is not None and args.mode != "specactor":
        p.error("--drafters needs --mode specactor")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".partial")
    tmp.write_text(json.dumps(result))
    tmp.replace(out)
    tokens = sum(len(s["token_ids"]) for s in result["samples"])
    print(
        f"specactor.verl.check: {len(result['samples'])} samples, {tokens} tokens in {result['rollout_s']:.2f} s "
        f"through veRL's agent loop ({args.mode}{'/' + args.drafter if args.drafter else ''}) -> {out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
