"""``python -m specactor.bench.membw OUT.onnx``: a one-node graph (ReduceMax over a float vector)
whose run time over a large zero-copy input measures the read bandwidth onnxruntime achieves."""

import sys

import onnx
from onnx import TensorProto, helper


def build(path: str) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    node = helper.make_node("ReduceMax", ["x"], ["y"], keepdims=0)
    graph = helper.make_graph([node], "membw", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime we ship against
    onnx.save(model, path)


if __name__ == "__main__":
    build(sys.argv[1])
