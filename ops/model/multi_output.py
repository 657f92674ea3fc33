"""Writes tests/data/multi-output: a small multi-output model (a softmax over five content
categories) for the tests of multi-output scoring: the manifest's `classes`, `top_k` and
`min_score`, top-k decision records, `scores.<class>` in rules, class-score parity with
onnxruntime in Python. It takes the demo MLP's inputs (the same 16 columns) and scales them
to comparable sizes before a fixed linear layer, so every class wins on some events.

    probabilities = softmax((x / scale) · W + b)

    python3 ops/model/multi_output.py        # needs the onnx package (pip install onnx)
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

root = os.path.join(os.path.dirname(__file__), "..", "..")
out = os.path.join(root, "tests", "data", "multi-output")
os.makedirs(out, exist_ok=True)

manifest = json.load(open(os.path.join(root, "models", "demo-mlp", "manifest.json")))
width = len(manifest["inputs"])
classes = ["sports", "news", "music", "travel", "games"]
# Typical size of each input (amount, category, channel, device, card age, distance, cross
# border, card present, merchant risk, 10m count, 10m distinct, 1h sum, 24h count, 24h avg,
# since last, chargebacks).
scale = np.array([100, 4, 2, 2, 365, 100, 1, 1, 1, 3, 3, 300, 10, 100, 3600, 1], dtype=np.float32)
assert len(scale) == width
i, j = np.meshgrid(np.arange(width), np.arange(len(classes)), indexing="ij")
w = (np.sin(1.7 * i + 2.3 * j + 0.5) * 1.5).astype(np.float32)
b = np.array([0.2, -0.1, 0.0, 0.1, -0.2], dtype=np.float32)

nodes = [
    helper.make_node("Div", ["input", "scale"], ["scaled"]),
    helper.make_node("MatMul", ["scaled", "w"], ["dot"]),
    helper.make_node("Add", ["dot", "b"], ["logits"]),
    helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
]
graph = helper.make_graph(
    nodes,
    "multi_output",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", width])],
    [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(classes)])],
    initializer=[
        numpy_helper.from_array(scale, "scale"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(b, "b"),
    ],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, os.path.join(out, "model.onnx"))

for key in ("baseline", "training", "sha256", "test_vectors", "positive_index"):
    manifest.pop(key, None)
manifest.update(
    name="demo-next-category",
    version="1",
    output_name="probabilities",
    classes=classes,
    top_k=2,
    min_score=0.2,
    execution_providers=["cpu"],
)
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
print("wrote", out)
