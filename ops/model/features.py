"""Build model input rows from events exactly as verdict does (src/decode/vectorize.rs).

The manifest's `inputs` list is the contract: one column per entry, in order, each
with a dotted `source` path into the event, a `kind` (number, lookup, bool) and a
`missing` policy ("nan", "reject" or {"default": x}). Rows are float32; a float64
value is rounded to the nearest float32, as Rust's `as f32` does.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

_MISSING = object()


class VectorizeError(ValueError):
    """An event that verdict would dead-letter; `reason` is verdict's reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def lookup(event: dict, path: str) -> Any:
    cur: Any = event
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _missing(col: dict) -> float:
    policy = col.get("missing", "reject")
    if policy == "nan":
        return float("nan")
    if isinstance(policy, dict) and "default" in policy:
        return float(policy["default"])
    raise VectorizeError("missing_field", f"column '{col['name']}' ({col['source']}) is missing or null")


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    return type(v).__name__


def column_value(event: dict, col: dict) -> float:
    v = lookup(event, col["source"])
    if v is _MISSING or v is None:
        return _missing(col)
    kind = col["kind"]
    if kind == "number" and isinstance(v, (int, float)) and not isinstance(v, bool):
        if isinstance(v, float) and not math.isfinite(v):
            raise VectorizeError("non_finite", f"column '{col['name']}' ({col['source']}) is {v}")
        return float(v)
    if kind == "bool" and isinstance(v, bool):
        return 1.0 if v else 0.0
    if kind == "lookup" and isinstance(v, str):
        return float(col["table"].get(v, col.get("unknown", -1.0)))
    want = {"number": "number", "bool": "boolean", "lookup": "string"}[kind]
    raise VectorizeError("wrong_type", f"column '{col['name']}' ({col['source']}) expected {want}, got {_type_name(v)}")


def vectorize(event: dict, manifest: dict) -> np.ndarray:
    """One float32 row for `event`, or VectorizeError."""
    return np.array([column_value(event, c) for c in manifest["inputs"]], dtype=np.float64).astype(np.float32)


def vectorize_many(events: Iterable[dict], manifest: dict) -> np.ndarray:
    rows = [vectorize(e, manifest) for e in events]
    width = len(manifest["inputs"])
    return np.stack(rows) if rows else np.zeros((0, width), dtype=np.float32)
