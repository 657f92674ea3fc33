#!/usr/bin/env python3
"""A deliberately slow model for overload benchmarks: a random-weight MLP with the demo
model's inputs and manifest (no baseline). Its scores mean nothing; its cost per row is set
by --hidden (two hidden layers of that width).

    python3 ops/model/heavy.py --hidden 1024 --out /tmp/heavy
    BENCH_MODEL=/tmp/heavy BENCH_DEADLINE_MS=50 cargo bench --bench spine
"""
import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

root = Path(__file__).resolve().parents[2]
ap = argparse.ArgumentParser()
ap.add_argument("--hidden", type=int, default=1024)
ap.add_argument("--out", required=True)
args = ap.parse_args()

manifest = json.loads((root / "models/demo/manifest.json").read_text())
width, h = len(manifest["inputs"]), args.hidden
rng = np.random.default_rng(0)
weights = {
    "w1": rng.normal(0, 1e-3, (width, h)), "b1": np.zeros(h),
    "w2": rng.normal(0, (2 / h) ** 0.5, (h, h)), "b2": np.zeros(h),
    "w3": rng.normal(0, (2 / h) ** 0.5, (h, 2)), "b3": np.zeros(2),
}
inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
nodes = [
    helper.make_node("MatMul", ["input", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["a1"]),
    helper.make_node("Relu", ["a1"], ["r1"]),
    helper.make_node("MatMul", ["r1", "w2"], ["m2"]), helper.make_node("Add", ["m2", "b2"], ["a2"]),
    helper.make_node("Relu", ["a2"], ["r2"]),
    helper.make_node("MatMul", ["r2", "w3"], ["m3"]), helper.make_node("Add", ["m3", "b3"], ["a3"]),
    helper.make_node("Softmax", ["a3"], ["probabilities"], axis=1),
]
graph = helper.make_graph(nodes, "heavy", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, width])],
                          [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
onnx.save(model, str(out / "model.onnx"))
manifest.pop("baseline", None)
# The demo model's hash and known answers are not this model's.
manifest.pop("test_vectors", None)
manifest["sha256"] = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
manifest.update(name=f"bench-heavy-mlp-{h}", version="1",
                training={"note": "random weights: a cost fixture for overload benchmarks, not a model"})
(out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
print(f"wrote {out}: {width} → {h} → {h} → 2, {sum(v.size for v in weights.values()):,} weights")
