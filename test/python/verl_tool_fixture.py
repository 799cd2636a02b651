"""Loaded by veRL's agent-loop workers as ``multi_turn.function_tool_path``: one tool and one parser.

No model we can run here emits real tool calls, so the parser makes one: a response that ends with
the stop token (``STOP``, which it also declares as its stop token, as Gemma-style parsers do) is a
call of ``lookup``. That drives veRL's tool agent loop through its multi-turn path: generate with
``stop_token_ids``, a tool turn, generate again on the longer prompt.
"""

from __future__ import annotations

from verl.experimental.agent_loop.tool_parser import FunctionCall, ToolParser
from verl.tools.function_tool import function_tool

STOP = 98  # a token the tiny test model emits often


@function_tool
def lookup(query: str) -> str:
    """Looks a word up.

    Args:
        query: the word.
    """
    return "found"


@ToolParser.register("specactor_stop_token")
class StopTokenParser(ToolParser):
    @property
    def stop_token_ids(self) -> list[int]:
        return [STOP]

    async def extract_tool_calls(self, responses_ids, tools=None):
        if responses_ids and responses_ids[-1] == STOP:
            return "", [FunctionCall(name="lookup", arguments='{"query": "x"}')]
        return "", []
