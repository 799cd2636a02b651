"""veRL's tool agent loop, multi-turn, with the stop tokens its parser adds, through our replica."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from specactor.verl import check
from verl_tool_fixture import STOP

FIXTURE = Path(__file__).with_name("verl_tool_fixture.py")
PROMPTS = ["What is 2 plus 3?", "Name a colour.", "Count to five.", "Say hello."]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tool_rollout(tiny_dir: Path, *flags: str) -> tuple[object, list[dict], dict]:
    overrides = [
        "actor_rollout_ref.rollout.agent.default_agent_loop=tool_agent",
        "actor_rollout_ref.rollout.multi_turn.enable=True",
        "actor_rollout_ref.rollout.multi_turn.format=specactor_stop_token",
        f"actor_rollout_ref.rollout.multi_turn.function_tool_path={FIXTURE}",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=3",
    ]
    argv = ["--model", str(tiny_dir), "--prompts", "-", "--json", "-", "--n", "2", "--response-length", "96"]
    argv += ["--seed", "5", *flags, *[x for o in overrides for x in ("--override", o)]]
    args = check.parse_args(argv)
    r = check.VerlRollout(check.compose_config(args, tiny_dir, 256))
    try:
        output, samples, _ = r.generate(PROMPTS)
        stats = ray.get(r.server.stats.remote())
    finally:
        r.close()
    return output, samples, stats


def test_multi_turn_stops_at_the_parser_token_and_speculation_keeps_every_turn(local_ray, tiny_dir):
    output, samples, stats = tool_rollout(tiny_dir)
    mask = output.batch["response_mask"]
    responses = output.batch["responses"]
    multi = 0
    for row in range(mask.shape[0]):
        m = mask[row].tolist()
        length = int(output.batch["attention_mask"][row, -mask.shape[1] :].sum())
        # a tool turn: model tokens (1), then the tool's tokens (0), then model tokens again
        turns = sum(1 for i in range(1, length) if m[i] == 1 and m[i - 1] == 0)
        if turns:
            multi += 1
            first_turn_end = m.index(0)
            assert int(responses[row][first_turn_end - 1]) == STOP
    assert multi >= 2, "no trajectory took a tool turn"
    # every turn is a generate call of its own
    assert stats["requests_accepted"] > len(samples)
    _, spec, _ = tool_rollout(tiny_dir, "--mode", "vanilla", "--drafter", "suffix")
    assert [s["token_ids"] for s in spec] == [s["token_ids"] for s in samples]
