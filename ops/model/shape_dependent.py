"""Writes tests/data/shape-dependent: a model whose scores depend on an ORT call's row count
but not on the call's other rows, as a GPU GEMM's do when its kernel is chosen by shape
(seen with the demo MLP on CUDA: up to 2e-5 between a row scored alone and in a batch).

    score = sigmoid(x · w + 0.001 × rows in the call)

verdict's start-up check finds the dependence, finds that calls padded to a fixed row count
are bit-for-bit invariant, and pads every call (tests/model.rs). The manifest takes the demo
MLP's inputs (the same 16 columns), without its baseline.

    python3 ops/model/shape_dependent.py        # needs the onnx package (pip install onnx)
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

root = os.path.join(os.path.dirname(__file__), "..", "..")
out = os.path.join(root, "tests", "data", "shape-dependent")
os.makedirs(out, exist_ok=True)

manifest = json.load(open(os.path.join(root, "models", "demo-mlp", "manifest.json")))
width = len(manifest["inputs"])
w = (np.arange(width, dtype=np.float32) % 5 - 2.0) / 1000.0

nodes = [
    helper.make_node("MatMul", ["input", "w"], ["dot"]),
    helper.make_node("Shape", ["input"], ["shape"]),
    helper.make_node("Gather", ["shape", "zero"], ["rows"], axis=0),
    helper.make_node("Cast", ["rows"], ["rows_f"], to=TensorProto.FLOAT),
    helper.make_node("Mul", ["rows_f", "eps"], ["shift"]),
    helper.make_node("Add", ["dot", "shift"], ["logit"]),
    helper.make_node("Sigmoid", ["logit"], ["score"]),
]
graph = helper.make_graph(
    nodes,
    "shape_dependent",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", width])],
    [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
    initializer=[
        numpy_helper.from_array(w.reshape(width, 1), "w"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array(0.001, dtype=np.float32), "eps"),
    ],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, os.path.join(out, "model.onnx"))

for key in ("baseline", "training", "sha256", "test_vectors"):
    manifest.pop(key, None)
manifest.update(
    name="shape-dependent",
    version="1",
    output_name="score",
    positive_index=0,
    execution_providers=["cpu"],
)
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
print("wrote", out)
