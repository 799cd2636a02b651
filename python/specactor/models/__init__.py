"""Model preparation: checkpoints (``hf/``) and the tree-ready ONNX export (``onnx/``)."""
