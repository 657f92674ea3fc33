"""Trains the clickstream demo's next-category model (models/clickstream): which content
category a user opens next, from the page they are on, their session so far and their
windows: a multinomial logistic regression (softmax over the eight categories), trained
with numpy and written as an ONNX graph (standardize, linear layer, softmax), so it needs
no scikit-learn.

Its rows come from `verdict generate --scenario clickstream --labels` through
`ops/model/features.py` with `config/clickstream.toml`'s [enrich] section (session window
and sliding windows computed exactly as verdict computes them); the label is each event's
`next_category`. The manifest carries the classes, `top_k`, `min_score`, a drift baseline
(per input, the best score, and per class) and integrity checks (sha256, test vectors).

    cargo build --release && python3 ops/model/train_clickstream.py
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features import graph_feed, rows as feature_rows  # noqa: E402
from train import column_baseline  # noqa: E402

CATEGORIES = ["sports", "news", "music", "travel", "games", "food", "tech", "fashion"]


def inputs() -> list[dict]:
    """The model's columns: the page's category one-hot, click or view, device, dwell time,
    the user's session so far and their windows."""
    cols = [{"name": f"on_{c}", "source": "category", "kind": "lookup", "table": {c: 1.0}, "unknown": 0.0,
             "missing": {"default": 0.0}} for c in CATEGORIES]
    cols += [
        {"name": "is_click", "source": "type", "kind": "lookup", "table": {"view": 0.0, "click": 1.0},
         "unknown": 0.0, "missing": {"default": 0.0}},
        {"name": "device", "source": "device", "kind": "lookup", "table": {"mobile": 0.0, "desktop": 1.0, "tablet": 2.0},
         "unknown": -1.0, "missing": {"default": -1.0}},
        {"name": "dwell_ms", "source": "dwell_ms", "kind": "number", "missing": {"default": 0.0}},
    ]
    for v in ["events", "duration_s", "since_start_s", "distinct"]:
        cols.append({"name": f"session_{v}", "source": f"session:user.{v}", "kind": "number", "missing": {"default": 0.0}})
    for w in ["1h", "24h"]:
        for a in ["count", "distinct", "avg"]:
            cols.append({"name": f"user_{w}_{a}", "source": f"window:user.{w}.{a}", "kind": "number",
                         "missing": {"default": -1.0 if a == "avg" else 0.0}})
    cols.append({"name": "since_last_s", "source": "window:user.since_last_s", "kind": "number",
                 "missing": {"default": -1.0}})
    return cols


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit(x: np.ndarray, y: np.ndarray, k: int, steps: int, lr: float = 0.5, l2: float = 1e-4):
    """Full-batch gradient descent with momentum on the cross-entropy."""
    w, b = np.zeros((x.shape[1], k)), np.zeros(k)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    onehot = np.eye(k)[y]
    for _ in range(steps):
        p = softmax(x @ w + b)
        g = (p - onehot) / len(x)
        gw, gb = x.T @ g + l2 * w, g.sum(axis=0)
        vw, vb = 0.9 * vw - lr * gw, 0.9 * vb - lr * gb
        w, b = w + vw, b + vb
    return w, b


def graph(mean: np.ndarray, std: np.ndarray, w: np.ndarray, b: np.ndarray):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    n, k = w.shape
    nodes = [
        helper.make_node("Sub", ["input", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "w"], ["dot"]),
        helper.make_node("Add", ["dot", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    g = helper.make_graph(
        nodes, "next_category",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k])],
        initializer=[numpy_helper.from_array(a.astype(np.float32), name)
                     for a, name in ((mean, "mean"), (std, "std"), (w, "w"), (b, "b"))],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def score_baseline(p: np.ndarray) -> dict:
    """A histogram of scores in [0, 1] on 20 equal bins (the form of `baseline.score`)."""
    edges = np.linspace(0.0, 1.0, 21)
    counts, _ = np.histogram(np.clip(p, 0.0, 1.0), bins=edges)
    return {"edges": [float(e) for e in edges], "proportions": [float(c) / max(len(p), 1) for c in counts]}


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(root / "target/release/verdict"))
    ap.add_argument("--events", type=int, default=240_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--config", default=str(root / "config/clickstream.toml"))
    ap.add_argument("--out", default=str(root / "models/clickstream"))
    args = ap.parse_args()

    with open(args.config, "rb") as f:
        enrich = tomllib.load(f)["enrich"]
    text = subprocess.run([args.binary, "generate", "--scenario", "clickstream", "--labels", "--count",
                           str(args.events), "--seed", str(args.seed)], check=True, capture_output=True,
                          text=True).stdout
    events = [json.loads(line) for line in text.splitlines()]
    manifest = {
        "name": "demo-next-category", "version": "1", "model_file": "model.onnx",
        "input_name": "input", "output_name": "probabilities",
        "classes": CATEGORIES, "top_k": 3, "min_score": 0.05,
        "execution_providers": ["cpu"], "inputs": inputs(),
    }
    rows = feature_rows(events, manifest, enrich)
    x = np.array(rows, dtype=np.float64)
    y = np.array([CATEGORIES.index(e["next_category"]) for e in events])
    # The first hour only fills the windows (a stream younger than its 1 h window shows
    # smaller counts than any the service sees later); rows after it train and validate.
    start = events[0]["event_time"]
    warm = np.array([e["event_time"] - start >= 3_600_000 for e in events])
    x, y, rows = x[warm], y[warm], [r for r, keep in zip(rows, warm) if keep]
    cut = int(len(x) * 0.8)
    mean, std = x[:cut].mean(axis=0), x[:cut].std(axis=0)
    std[std == 0] = 1.0
    w, b = fit((x[:cut] - mean) / std, y[:cut], len(CATEGORIES), args.steps)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(graph(mean, std, w, b).SerializeToString())
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(out / "model.onnx"), so, providers=["CPUExecutionProvider"])
    probs = sess.run(["probabilities"], graph_feed(rows, manifest))[0]
    top1 = float((probs[cut:].argmax(axis=1) == y[cut:]).mean())
    top3 = float(np.mean([y[cut + i] in np.argsort(-probs[cut + i])[:3] for i in range(len(y) - cut)]))
    stay = float(np.mean([e["next_category"] == e["category"] for e in events]))
    print(f"validation: top-1 accuracy {top1:.3f}, top-3 {top3:.3f} (the next page stays in its category "
          f"{stay:.3f} of the time)")

    hours = np.array([(e["event_time"] - start) // 3_600_000 for e, keep in zip(events, warm) if keep])
    features = {}
    for i, col in enumerate(manifest["inputs"]):
        default = col["missing"]["default"] if isinstance(col.get("missing"), dict) else None
        features[col["name"]] = column_baseline(col, list(x[:, i]), x[:, i], default, hours)
    best = probs.max(axis=1)
    manifest["baseline"] = {
        "features": features,
        "score": score_baseline(best),
        "classes": {c: score_baseline(probs[:, k]) for k, c in enumerate(CATEGORIES)},
    }
    manifest["training"] = {
        "events": len(events), "rows": int(len(x)), "validation_rows": int(len(x) - cut),
        "top1_accuracy": round(top1, 4), "top3_accuracy": round(top3, 4), "seed": args.seed,
        "trainer": "ops/model/train_clickstream.py (softmax regression, numpy)",
    }
    # Integrity: the file's hash and three real rows (lowest, median and highest best score),
    # each scored alone as verdict checks them at every load.
    order = np.argsort(best, kind="stable")
    names = [c["name"] for c in manifest["inputs"]]
    vectors = []
    for i in (order[0], order[len(order) // 2], order[-1]):
        row = [float(v) for v in rows[i]]
        alone = sess.run(["probabilities"], graph_feed([row], manifest))[0][0]
        vectors.append({"inputs": {n: None if math.isnan(v) else v for n, v in zip(names, row)},
                        "score": float(alone.max())})
    manifest["sha256"] = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    manifest["test_vectors"] = vectors
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
