#!/usr/bin/env python3
"""Train the demo fraud model and write models/demo/{model.onnx,manifest.json}.

Training data comes from verdict's own generator (`verdict generate --labels`), so
the model sees the distribution the demo later scores, and rows are built with
features.py, the Python twin of verdict's vectorizer (training-serving parity).

    python3 ops/model/train.py                      # uses target/release/verdict
    python3 ops/model/train.py --rows 300000 --out models/demo

Needs: numpy, scikit-learn, skl2onnx, onnxruntime (pip install -r ops/model/requirements.txt).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features import vectorize  # noqa: E402

CATEGORIES = ["grocery", "fuel", "restaurant", "fashion", "travel", "gaming", "electronics", "digital"]
CHANNELS = ["pos", "ecom", "atm"]
DEVICE_TYPES = ["mobile", "desktop", "tablet", "emulator"]


def table(values):
    return {v: float(i) for i, v in enumerate(values)}


INPUTS = [
    {"name": "amount", "source": "amount", "kind": "number", "missing": "reject"},
    {"name": "merchant_category", "source": "merchant_category", "kind": "lookup",
     "table": table(CATEGORIES), "unknown": -1.0, "missing": {"default": -1.0}},
    {"name": "channel", "source": "channel", "kind": "lookup", "table": table(CHANNELS), "unknown": -1.0,
     "missing": {"default": -1.0}},
    {"name": "device_type", "source": "device.type", "kind": "lookup", "table": table(DEVICE_TYPES),
     "unknown": -1.0, "missing": {"default": -1.0}},
    {"name": "card_age_days", "source": "card_age_days", "kind": "number", "missing": {"default": -1.0}},
    {"name": "distance_km", "source": "distance_km", "kind": "number", "missing": {"default": -1.0}},
    {"name": "cross_border", "source": "cross_border", "kind": "bool", "missing": {"default": 0.0}},
    {"name": "card_present", "source": "card_present", "kind": "bool", "missing": {"default": 0.0}},
    {"name": "merchant_risk", "source": "merchant_risk", "kind": "number", "missing": "reject"},
    # Window aggregates of the card, as the enrich stage computes them (before the event).
    {"name": "card_10m_count", "source": "window:card.10m.count", "kind": "number", "missing": {"default": 0.0}},
    {"name": "card_10m_distinct_merchants", "source": "window:card.10m.distinct", "kind": "number",
     "missing": {"default": 0.0}},
    {"name": "card_1h_sum", "source": "window:card.1h.sum", "kind": "number", "missing": {"default": 0.0}},
    {"name": "card_24h_count", "source": "window:card.24h.count", "kind": "number", "missing": {"default": 0.0}},
    {"name": "card_24h_avg", "source": "window:card.24h.avg", "kind": "number", "missing": {"default": -1.0}},
    {"name": "card_since_last_s", "source": "window:card.since_last_s", "kind": "number",
     "missing": {"default": -1.0}},
    # Online feature from Redis; unknown offline, so trained on its default.
    {"name": "card_chargebacks_90d", "source": "feature:card.chargebacks_90d", "kind": "number",
     "missing": {"default": 0.0}},
]


def nan_inputs() -> list[dict]:
    """The same columns, but nullable event fields pass NaN through (for models that route
    missing values natively, like HistGradientBoosting)."""
    out = []
    for c in INPUTS:
        c = dict(c)
        if c["source"] in ("card_age_days", "distance_km", "device.type"):
            c["missing"] = "nan"
        out.append(c)
    return out


def pipeline_inputs() -> list[dict]:
    """Columns for the scikit-learn pipeline model: categorical fields as raw strings (one-hot
    encoded inside the ONNX graph), nullable numbers as NaN, hour and day of week of the
    event in the card holder's zone as int64, and the same window aggregates."""
    strings = {"merchant_category", "channel", "device_type"}
    out = []
    for c in nan_inputs():
        if c["name"] in strings:
            c = {"name": c["name"], "source": c["source"], "kind": "string", "missing": {"default": "none"}}
        out.append(c)
    out.insert(9, {"name": "hour", "source": "event_time", "kind": "timestamp", "part": "hour",
                   "timezone": "Europe/Berlin", "missing": "reject"})
    out.insert(10, {"name": "dow", "source": "event_time", "kind": "timestamp", "part": "dow",
                    "timezone": "Europe/Berlin", "missing": "reject"})
    return out


def pipeline_graph_inputs(inputs: list[dict]) -> list[dict]:
    """One graph input per column (skl2onnx's convention for DataFrame pipelines), typed."""
    def ty(c):
        if c["kind"] == "string":
            return "string"
        if c["kind"] == "timestamp":
            return "int64"
        return "float32"
    return [{"name": c["name"], "type": ty(c), "columns": [c["name"]]} for c in inputs]


def drift_matrix(rows: list[list], manifest: dict) -> np.ndarray:
    """What verdict's drift statistics see per column: the float value; an int64 column as a
    float; a string column as 0, or NaN where its default was used (so its null rate counts)."""
    from features import lanes
    out = np.zeros((len(rows), len(manifest["inputs"])), dtype=np.float32)
    for j, (c, lane) in enumerate(zip(manifest["inputs"], lanes(manifest))):
        if lane == "string":
            default = c["missing"].get("default") if isinstance(c.get("missing"), dict) else None
            out[:, j] = [np.nan if r[j] == default else 0.0 for r in rows]
        else:
            out[:, j] = [float(r[j]) for r in rows]
    return out


def drop_half_round_trips(model):
    """The float16 converter casts float32 graph inputs to float16 and back before ops it keeps
    in float32 (the Scaler): inputs above 65504 (a 1 h amount sum) become inf, and the score
    NaN. Feed such ops the float32 tensor directly."""
    from onnx import TensorProto
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    to = lambda n: next((a.i for a in n.attribute if a.name == "to"), None)
    for n in g.node:
        for i, name in enumerate(n.input):
            back = producer.get(name)
            if back is None or back.op_type != "Cast" or to(back) != TensorProto.FLOAT:
                continue
            down = producer.get(back.input[0])
            if down is not None and down.op_type == "Cast" and to(down) == TensorProto.FLOAT16:
                n.input[i] = down.input[0]
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [n for n in g.node if n.op_type != "Cast" or any(o in used for o in n.output)]
    while len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        keep = [n for n in g.node if n.op_type != "Cast" or any(o in used for o in n.output)]
    return model


def patch_skl2onnx_bool_attributes() -> None:
    """skl2onnx 1.20 passes numpy bools in TreeEnsemble's integer attributes (HistGradientBoosting
    with missing values), which onnx rejects; convert them to ints."""
    import onnx.helper as helper
    original = helper.make_attribute

    def make_attribute(key, value, *args, **kwargs):
        if isinstance(value, np.ndarray) and value.dtype == bool:
            value = [int(v) for v in value]
        elif isinstance(value, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in value):
            value = [int(v) for v in value]
        return original(key, value, *args, **kwargs)

    helper.make_attribute = make_attribute


# Events of one drift window (drift.window_events' default): the baseline's rows are grouped
# by the window of the stream they came from, to see how much its bins move window to window.
WINDOW_EVENTS = 50_000


def generate(binary: str, rows: int, seed: int, enrich: dict, cache: Path, every: int):
    """`rows` labelled events from a stream that has already run longer than its longest
    window, each with the window values it sees, the drift window each came from, and the
    number of warm-up events.

    The generator's stream starts with every window empty; production (and the demo after
    `--warm-hours`) runs with full ones. Rows from the cold start would teach the model, and
    the drift baseline, window values smaller than any it sees in steady state, so the first
    `warm_up_ms` of event time (about 9.5M events for the demo's 24 h window) only fill the
    windows: they are streamed through, never kept. The window state after them is cached in
    `cache` (per seed and [enrich] section), so the other models train without redoing it.

    After the warm-up, one event in `every` is kept (all of them join the windows): the rows
    span `every` times more event time. A busy card's 24 h aggregates move with the hour (the
    window covers 24 to 25 hourly buckets) and drift over hours, so rows from half an hour of
    event time would hold one phase of them, and a baseline that a later hour alarms against."""
    import hashlib
    import pickle
    from features import WindowFeatures, warm_up_ms
    warm_ms = warm_up_ms(enrich)
    key = hashlib.sha256(json.dumps([seed, enrich], sort_keys=True).encode()).hexdigest()[:16]
    state = cache / f"warm-{seed}-{key}.pickle"
    wf, warmed = (pickle.loads(state.read_bytes())) if state.exists() else (WindowFeatures(enrich), None)
    # The stream is unbounded; reading stops once the rows are in.
    proc = subprocess.Popen([binary, "generate", "--count", str(10**10), "--seed", str(seed), "--labels"],
                            stdout=subprocess.PIPE, text=True, bufsize=1 << 20)
    kept, windows, start, n = [], [], None, 0
    try:
        for line in proc.stdout:
            if warmed is not None and n < warmed:
                n += 1
                continue
            e = json.loads(line)
            start = e["event_time"] if start is None else start
            if warmed is None and e["event_time"] - start < warm_ms:
                wf.warm(e)
                n += 1
                continue
            if warmed is None:
                warmed = n
                cache.mkdir(parents=True, exist_ok=True)
                state.write_bytes(pickle.dumps((wf, warmed), protocol=pickle.HIGHEST_PROTOCOL))
            after = n - warmed
            n += 1
            if after % every:
                wf.warm(e)
                continue
            kept.append((e, wf.see(e)))
            windows.append(after // WINDOW_EVENTS)
            if len(kept) == rows:
                break
    finally:
        proc.kill()
        proc.wait()
    print(f"warm-up: {warmed} events ({warm_ms / 3.6e6:.1f} h of event time); then {rows} training events, "
          f"one in {every} of {n - warmed} ({(kept[-1][0]['event_time'] - kept[0][0]['event_time']) / 3.6e6:.1f} h)",
          file=sys.stderr)
    return kept, np.array(windows), warmed


def _psi(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """PSI of each row of `actual` against `expected` (shares), empty buckets smoothed as verdict does."""
    a, e = np.maximum(actual, 1e-4), np.maximum(expected, 1e-4)
    return ((a - e) * np.log(a / e)).sum(axis=-1)


# The most a drift window of the training stream may move from the baseline on any bin
# layout train.py writes (verdict warns at 0.1).
STABLE_PSI = 0.03
# How far a busy card's level may sit from where the training stream saw it: its 24 h
# average is an average of its own day, not the population's (another day, another stream).
LEVEL = 0.01


def stable_edges(values: np.ndarray, windows: np.ndarray, bins: int = 10) -> np.ndarray:
    """Quantile bin edges, less those the training stream's own drift windows cross back and
    forth. A busy card holds a large share of the events, and its window aggregates sit in a
    narrow cluster that moves with the hour and over hours; a quantile edge inside such a
    cluster puts the whole cluster on one side in one window and on the other in the next,
    which PSI reads as drift. Adjacent bins are merged, the edge whose removal helps most
    first, until no window of the training stream is further than STABLE_PSI from the pooled
    bins (or one bin is left)."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    ids = np.unique(windows)
    if edges.size < 3 or ids.size < 2:
        return edges

    rows = np.searchsorted(ids, windows)

    def shares(e: np.ndarray, v: np.ndarray) -> np.ndarray:
        bucket = np.clip(np.searchsorted(e[1:-1], v, side="right"), 0, e.size - 2)
        counts = np.zeros((ids.size, e.size - 1))
        np.add.at(counts, (rows, bucket), 1)
        return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)

    def worst(e: np.ndarray) -> float:
        pooled = shares(e, values).mean(axis=0)
        return max(float(_psi(shares(e, values * f), pooled).max()) for f in (1 - LEVEL, 1.0, 1 + LEVEL))

    while edges.size > 2 and worst(edges) > STABLE_PSI:
        trials = [np.delete(edges, i) for i in range(1, edges.size - 1)]
        edges = min(trials, key=worst)
    return edges


def feature_baseline(x: np.ndarray, defaults: list[float | None], windows: np.ndarray, bins: int = 10) -> dict:
    """Bin edges (quantiles, merged where the training windows cross them: `stable_edges`) and
    proportions, plus the share of missing (NaN) or default-filled values."""
    is_default = np.isnan(x) if defaults is None else (np.isnan(x) | (x == defaults))
    values = x[~is_default]
    edges = stable_edges(values, windows[~is_default], bins) if values.size else np.array([0.0, 1.0])
    if edges.size == 1:
        # One non-default value (a flag whose other value is the default): a point-mass bin.
        edges = np.array([edges[0], edges[0]])
        counts = np.array([values.size])
    else:
        counts, _ = np.histogram(values, bins=edges)
    n = max(len(x), 1)
    return {
        "edges": [float(e) for e in edges],
        "proportions": [float(c) / n for c in counts],
        "default_rate": float(is_default.sum()) / n,
        "mean": float(values.mean()) if values.size else 0.0,
        "std": float(values.std()) if values.size else 0.0,
    }


TOP_K = 20


def category_baseline(values: list, is_default: list[bool], k: int = TOP_K) -> dict:
    """The k most frequent categories in training and their shares, then the share of every
    other category ("other"), plus the share of missing or default-filled values. verdict
    computes PSI over these k+2 buckets: a category whose share changes moves the PSI, where a
    null rate alone would not notice."""
    from collections import Counter
    n = max(len(values), 1)
    counts = Counter(v for v, d in zip(values, is_default) if not d)
    top = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:k] if c is not None]
    other = sum(counts.values()) - sum(counts[c] for c in top)
    return {
        "categories": top,
        "proportions": [counts[c] / n for c in top] + [other / n],
        "default_rate": sum(is_default) / n,
    }


def column_baseline(col: dict, values: list, x: np.ndarray, default, windows: np.ndarray) -> dict:
    """A column's drift baseline: category frequencies for lookup and string columns (by the
    category's name: a lookup value's code is mapped back through its table), quantile bins
    for the rest."""
    if col["kind"] == "lookup":
        names = {float(code): name for name, code in col["table"].items()}
        is_default = [bool(np.isnan(v)) or (default is not None and v == default) for v in values]
        return category_baseline([names.get(float(v)) for v in values], is_default)
    if col["kind"] == "string":
        fill = col["missing"].get("default") if isinstance(col.get("missing"), dict) else None
        return category_baseline(values, [v == fill for v in values])
    return feature_baseline(x, default, windows)


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(root / "target/release/verdict"))
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--every", type=int, default=5,
                    help="keep one event in EVERY after the warm-up (the rows span that many times more event time)")
    ap.add_argument("--out", default=str(root / "models/demo"))
    ap.add_argument("--version", default="1")
    ap.add_argument("--name", default="demo-fraud-gbdt")
    ap.add_argument("--nan", action="store_true",
                    help="HistGradientBoosting trained with missing values; nullable inputs pass NaN")
    ap.add_argument("--mlp", action="store_true",
                    help="an MLP (StandardScaler + MLPClassifier) instead of the GBDT")
    ap.add_argument("--fp16-out", default=None,
                    help="also write an FP16 copy (weights and activations in float16, float32 inputs and "
                         "outputs kept) to this directory, with its validation AUC and score difference")
    ap.add_argument("--pipeline", action="store_true",
                    help="a scikit-learn Pipeline (OneHotEncoder on raw string columns, int64 hour/day-of-week, "
                         "HistGradientBoosting with NaN) exported with one typed graph input per column")
    ap.add_argument("--int8-out", default=None,
                    help="also write a dynamically quantized INT8 copy of the model to this directory, "
                         "with its validation AUC and score difference against fp32 in the manifest")
    args = ap.parse_args()
    if args.pipeline:
        return train_pipeline(args, root)
    inputs = nan_inputs() if args.nan else INPUTS

    from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    manifest = {"inputs": inputs}
    with open(root / "config/demo.toml", "rb") as f:
        enrich = tomllib.load(f)["enrich"]
    kept, windows, warmed = generate(args.binary, args.rows, args.seed, enrich, root / ".cache/train", args.every)
    events = [e for e, _ in kept]
    x = np.array([vectorize(e, manifest, seen) for e, seen in kept], dtype=np.float32)
    y = np.array([e["label"] for e in events], dtype=np.int64)
    split = int(len(x) * 0.8)
    xtr, ytr, xva, yva = x[:split], y[:split], x[split:], y[split:]

    classifier = None
    if args.mlp:
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        classifier = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=30, early_stopping=True, random_state=0)
        model = make_pipeline(StandardScaler(), classifier)
        algorithm = "sklearn StandardScaler + MLPClassifier(hidden_layer_sizes=(64, 32), adam, early stopping)"
    elif args.nan:
        patch_skl2onnx_bool_attributes()
        model = HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=15, learning_rate=0.1, random_state=0)
        algorithm = "sklearn HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=15), NaN routed natively"
    else:
        model = GradientBoostingClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, subsample=0.5, random_state=0)
        algorithm = "sklearn GradientBoostingClassifier(n_estimators=100, max_depth=3, subsample=0.5)"
    model.fit(xtr, ytr)

    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
        options={id(classifier if classifier is not None else model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    out = Path(args.out)
    so, probs, max_diff, auc = save_and_check(onx, out, {"input": xva}, model.predict_proba(xva)[:, 1], yva)

    defaults = [c["missing"]["default"] if isinstance(c.get("missing"), dict) else None for c in inputs]
    baseline = {
        "features": {c["name"]: column_baseline(c, list(xtr[:, i]), xtr[:, i], defaults[i], windows[:split])
                     for i, c in enumerate(inputs)},
        "score": {
            "edges": [i / 20 for i in range(21)],
            "proportions": [float(p) for p in np.histogram(probs, bins=20, range=(0, 1))[0] / len(probs)],
        },
    }
    manifest = {
        "name": args.name,
        "version": args.version,
        "model_file": "model.onnx",
        "input_name": "input",
        "output_name": "probabilities",
        "positive_index": 1,
        "execution_providers": ["cpu"],
        "inputs": inputs,
        "baseline": baseline,
        "training": {
            "algorithm": algorithm,
            "rows": len(x), "train_rows": split, "seed": args.seed, "warm_up_events": warmed, "kept_one_in": args.every,
            "fraud_rate": float(y.mean()),
            "validation_auc": auc,
            "onnx_vs_sklearn_max_abs_diff": max_diff,
        },
    }
    manifest.update(integrity(out / "model.onnx", manifest, xva))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if args.int8_out:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        def int8(src: Path, dst: Path) -> None:
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        reduced_copy(out, Path(args.int8_out), "int8", "onnxruntime.quantization.quantize_dynamic, weights QInt8",
                     int8, manifest, xva, yva, probs, auc, so)
    if args.fp16_out:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        def fp16(src: Path, dst: Path) -> None:
            onnx.save(drop_half_round_trips(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)),
                      str(dst))
        reduced_copy(out, Path(args.fp16_out), "fp16",
                     "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)",
                     fp16, manifest, xva, yva, probs, auc, so)
    print(f"wrote {out}/model.onnx and manifest.json: {len(x)} rows, fraud rate {y.mean():.4f}, "
          f"validation AUC {auc:.4f}, onnx-vs-sklearn max |diff| {max_diff:.2e}")


def save_and_check(onx, out: Path, feed: dict, sklearn_probs, y):
    """Writes out/model.onnx and scores the validation feed with onnxruntime (one intra-op
    thread): returns the session options, the scores, their max difference from scikit-learn's
    and the validation AUC."""
    import onnxruntime as ort
    from sklearn.metrics import roc_auc_score
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(onx.SerializeToString())
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(out / "model.onnx"), so, providers=["CPUExecutionProvider"])
    probs = sess.run(["probabilities"], feed)[0][:, 1]
    return so, probs, float(np.abs(probs - sklearn_probs).max()), float(roc_auc_score(y, probs))


def integrity(model: Path, manifest: dict, rows) -> dict:
    """The manifest's `sha256` of the model file and 3 `test_vectors`: real rows with the lowest,
    median and highest score, each scored alone (as verdict checks them at every load)."""
    import hashlib
    import math
    import onnxruntime as ort
    from features import graph_feed
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rows = [[v.item() if hasattr(v, "item") else v for v in r] for r in list(rows)[:2000]]

    def score(rs):
        p = sess.run([manifest["output_name"]], graph_feed(rs, manifest))[0]
        return p[:, manifest.get("positive_index", 1)] if p.ndim == 2 and p.shape[1] > 1 else p.reshape(-1)
    order = np.argsort(score(rows), kind="stable")
    names = [c["name"] for c in manifest["inputs"]]
    vectors = [{"inputs": {n: None if isinstance(v, float) and math.isnan(v) else v for n, v in zip(names, rows[i])},
                "score": float(score([rows[i]])[0])} for i in (order[0], order[len(order) // 2], order[-1])]
    return {"sha256": hashlib.sha256(model.read_bytes()).hexdigest(), "test_vectors": vectors}


def reduced_copy(out: Path, dst: Path, kind: str, method: str, convert, manifest: dict, xva, yva, probs, auc, so):
    """Writes a reduced-precision copy of out/model.onnx to dst with its manifest; the manifest
    records its validation AUC and score difference against fp32."""
    import onnxruntime as ort
    from sklearn.metrics import roc_auc_score
    dst.mkdir(parents=True, exist_ok=True)
    convert(out / "model.onnx", dst / "model.onnx")
    sess = ort.InferenceSession(str(dst / "model.onnx"), so, providers=["CPUExecutionProvider"])
    p = sess.run(["probabilities"], {"input": xva})[0][:, 1]
    m = json.loads(json.dumps(manifest))
    m["version"] = f"{manifest['version']}-{kind}"
    m["training"]["quantization"] = {
        "method": method,
        "validation_auc_fp32": auc,
        f"validation_auc_{kind}": float(roc_auc_score(yva, p)),
        "max_abs_score_diff": float(np.abs(p - probs).max()),
        "mean_abs_score_diff": float(np.abs(p - probs).mean()),
        "model_bytes_fp32": (out / "model.onnx").stat().st_size,
        f"model_bytes_{kind}": (dst / "model.onnx").stat().st_size,
    }
    m.update(integrity(dst / "model.onnx", m, xva))
    (dst / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    print(f"wrote {dst}/model.onnx ({kind.upper()}): {json.dumps(m['training']['quantization'])}")


def train_pipeline(args, root: Path) -> None:
    """--pipeline: typed multi-input model (needs pandas for the ColumnTransformer)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from features import graph_feed

    patch_skl2onnx_bool_attributes()
    inputs = pipeline_inputs()
    manifest = {"inputs": inputs, "graph_inputs": pipeline_graph_inputs(inputs)}
    with open(root / "config/demo.toml", "rb") as f:
        enrich = tomllib.load(f)["enrich"]
    kept, windows, warmed = generate(args.binary, args.rows, args.seed, enrich, root / ".cache/train", args.every)
    events = [e for e, _ in kept]
    rows = [vectorize(e, manifest, seen) for e, seen in kept]
    y = np.array([e["label"] for e in events], dtype=np.int64)
    split = int(len(rows) * 0.8)
    feed = graph_feed(rows, manifest)
    df = pd.DataFrame({name: a[:, 0] for name, a in feed.items()})
    strings = [g["name"] for g in manifest["graph_inputs"] if g["type"] == "string"]
    others = [g["name"] for g in manifest["graph_inputs"] if g["type"] != "string"]
    pre = ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), strings),
                             ("numbers", "passthrough", others)], sparse_threshold=0)
    classifier = HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=15, learning_rate=0.1, random_state=0)
    model = Pipeline([("pre", pre), ("clf", classifier)])
    model.fit(df.iloc[:split], y[:split])
    types = {"float32": FloatTensorType, "int64": Int64TensorType, "string": StringTensorType}
    onx = convert_sklearn(
        model,
        initial_types=[(g["name"], types[g["type"]]([None, 1])) for g in manifest["graph_inputs"]],
        options={id(classifier): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    out = Path(args.out)
    _, probs, max_diff, auc = save_and_check(onx, out, graph_feed(rows[split:], manifest),
                                             model.predict_proba(df.iloc[split:])[:, 1], y[split:])
    x = drift_matrix(rows[:split], manifest)
    defaults = [c["missing"]["default"] if isinstance(c.get("missing"), dict)
                and not isinstance(c["missing"]["default"], str) else None for c in inputs]
    manifest = {
        "name": args.name if args.name != "demo-fraud-gbdt" else "demo-fraud-pipeline",
        "version": args.version,
        "model_file": "model.onnx",
        "output_name": "probabilities",
        "positive_index": 1,
        "execution_providers": ["cpu"],
        "inputs": inputs,
        "graph_inputs": manifest["graph_inputs"],
        "baseline": {
            "features": {c["name"]: column_baseline(c, [r[i] for r in rows[:split]], x[:, i], defaults[i], windows[:split])
                         for i, c in enumerate(inputs)},
            "score": {
                "edges": [i / 20 for i in range(21)],
                "proportions": [float(p) for p in np.histogram(probs, bins=20, range=(0, 1))[0] / len(probs)],
            },
        },
        "training": {
            "algorithm": "sklearn Pipeline(ColumnTransformer(OneHotEncoder(handle_unknown='ignore') on "
                         f"{strings}, passthrough), HistGradientBoostingClassifier(max_iter=100, "
                         "max_leaf_nodes=15)); one typed ONNX input per column",
            "rows": len(rows), "train_rows": split, "seed": args.seed, "warm_up_events": warmed, "kept_one_in": args.every,
            "fraud_rate": float(y.mean()),
            "validation_auc": auc,
            "onnx_vs_sklearn_max_abs_diff": max_diff,
        },
    }
    manifest.update(integrity(out / "model.onnx", manifest, rows[split:]))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out}/model.onnx and manifest.json: {len(rows)} rows, validation AUC {auc:.4f}, "
          f"onnx-vs-sklearn max |diff| {max_diff:.2e}")


if __name__ == "__main__":
    main()
