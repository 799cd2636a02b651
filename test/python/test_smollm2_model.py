"""The prepared SmolLM2: tokenizer quirks fixed, special tokens right, drafter present."""

import json

import onnx
import pytest
from transformers import AutoConfig, AutoTokenizer


@pytest.fixture(scope="module")
def tok(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir / "hf")


def test_digits_are_split_one_by_one(tok):
    # SmolLM2 pre-tokenises digits individually; the GGUF converter drops that rule
    for text, pieces in [
        ("2024", ["2", "0", "2", "4"]),
        (" 42", ["Ġ", "4", "2"]),
        ("$3.50", ["$", "3", ".", "5", "0"]),
    ]:
        assert tok.convert_ids_to_tokens(tok.encode(text, add_special_tokens=False)) == pieces
    assert (
        tok.decode(tok.encode("It costs 1234567 dollars.", add_special_tokens=False))
        == "It costs 1234567 dollars."
    )


def test_special_tokens(tok, smollm2_dir):
    assert (tok.bos_token, tok.bos_token_id) == ("<|im_start|>", 1)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert tok.convert_ids_to_tokens([0]) == ["<|endoftext|>"]
    meta = json.loads((smollm2_dir / "onnx" / "model.json").read_text())
    assert meta["eos_ids"] == [2, 0] and meta["vocab_size"] == 49152 and meta["num_layers"] == 30


def test_chat_template(tok):
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tok.encode(text, add_special_tokens=False)
    assert ids[0] == 1 and ids.count(2) == 2


def test_drafters(smollm2_dir):
    """q8 (the default) is the policy's fused graph with 8-bit weight matmuls; layers8 its first 8 layers."""
    manifest = json.loads((smollm2_dir / "manifest.json").read_text())
    assert manifest["drafters"] == ["q8", "layers8"]
    policy = json.loads((smollm2_dir / "onnx" / "model.json").read_text())
    q8 = smollm2_dir / "drafters" / "q8"
    meta = json.loads((q8 / "onnx" / "model.json").read_text())
    assert meta["quantization"] == {"bits": 8, "block": 32, "accuracy_level": 4}
    assert meta["graph"] == "fused"
    assert {k: v for k, v in meta.items() if k not in ("name", "quantization", "graph")} == {
        k: v for k, v in policy.items() if k != "name"
    }
    graph = onnx.load(str(q8 / "onnx" / "model.onnx"), load_external_data=False)
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("MatMulNBits") == 5 * policy["num_layers"] + 1  # qkv, o, gate, up, down; the head
    assert ops.count("RotaryEmbedding") == 2 * policy["num_layers"]
    d = smollm2_dir / "drafters" / "layers8"
    cfg = AutoConfig.from_pretrained(d / "hf")
    meta = json.loads((d / "onnx" / "model.json").read_text())
    assert cfg.num_hidden_layers == meta["num_layers"] == 8
    assert (d / "onnx" / "model.onnx").exists() and (d / "hf" / "tokenizer.json").exists()
