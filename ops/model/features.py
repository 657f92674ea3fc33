"""Build model input rows from events exactly as verdict does (src/decode/vectorize.rs).

The manifest's `inputs` list is the contract: one column per entry, in order,
each with a dotted `source` path into the event, a `kind` (number, lookup, bool,
timestamp, string) and a `missing` policy ("nan", "reject" or {"default": x}).

Each column feeds one graph input (`graph_inputs`, or the single float `input_name`):
float32 columns are float64 values rounded to the nearest float32, as Rust's `as f32`
does; int64 columns are exact integers; string columns are the event's text.
"""
from __future__ import annotations

import json
import math
import struct
import sys
from typing import Any, Iterable

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


def _missing(col: dict):
    policy = col.get("missing", "reject")
    if policy == "nan":
        return float("nan")
    if isinstance(policy, dict) and "default" in policy:
        d = policy["default"]
        return d if isinstance(d, str) else float(d)
    raise VectorizeError("missing_field", f"column '{col['name']}' ({col['source']}) is missing or null")


def feeds(manifest: dict) -> list[dict]:
    """The graph inputs: `graph_inputs`, or one float32 input taking every column."""
    if manifest.get("graph_inputs"):
        return manifest["graph_inputs"]
    return [{"name": manifest.get("input_name", "input"), "type": "float32", "columns": [c["name"] for c in manifest["inputs"]]}]


def lanes(manifest: dict) -> list[str]:
    """Each column's graph-input type (float32, int64, string), in column order."""
    by_col = {c: g["type"] for g in feeds(manifest) for c in g["columns"]}
    return [by_col.get(c["name"], "float32") for c in manifest["inputs"]]


_PARTS = {"hour": lambda d: d.hour, "dow": lambda d: d.weekday(), "day": lambda d: d.day,
          "month": lambda d: d.month, "minute": lambda d: d.minute}


def _time_part(ms: int, col: dict) -> int:
    import datetime
    import zoneinfo
    zone = zoneinfo.ZoneInfo(col.get("timezone", "UTC"))
    d = datetime.datetime.fromtimestamp(ms // 1000, zone)
    return _PARTS[col["part"]](d)


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


def column_value(event: dict, col: dict):
    """The column's value before its lane: a number (int or float) or, for string columns, a str."""
    v = lookup(event, col["source"])
    if v is _MISSING or v is None:
        return _missing(col)
    kind = col["kind"]
    if kind == "number" and isinstance(v, (int, float)) and not isinstance(v, bool):
        if isinstance(v, float) and not math.isfinite(v):
            raise VectorizeError("non_finite", f"column '{col['name']}' ({col['source']}) is {v}")
        return v
    if kind == "bool" and isinstance(v, bool):
        return 1 if v else 0
    if kind == "lookup" and isinstance(v, str):
        return float(col["table"].get(v, col.get("unknown", -1.0)))
    if kind == "string" and isinstance(v, str):
        return v
    if kind == "timestamp" and isinstance(v, int) and not isinstance(v, bool):
        return _time_part(v, col)
    want = {"number": "number", "bool": "boolean", "lookup": "string", "string": "string",
            "timestamp": "epoch milliseconds"}[kind]
    raise VectorizeError("wrong_type", f"column '{col['name']}' ({col['source']}) expected {want}, got {_type_name(v)}")


def _to_lane(v, lane: str, col: dict):
    if lane == "string":
        return v
    if lane == "int64":
        if isinstance(v, float) and (v != int(v) or abs(v) > 2.0 ** 53):
            raise VectorizeError("wrong_type", f"column '{col['name']}' ({col['source']}) expected an integer, got {v}")
        return int(v)
    return f32(float(v))


ENRICHED_PREFIXES = ("window:", "session:", "feature:")


def enriched_value(col: dict, enriched: dict) -> float:
    v = enriched.get(col["source"])
    if v is None or not math.isfinite(v):
        policy = col.get("missing", "reject")
        if isinstance(policy, dict) and "default" in policy:
            return float(policy["default"])
        return float("nan")
    return float(v)


def vectorize(event: dict, manifest: dict, enriched: dict | None = None) -> list:
    """One row for `event`, or VectorizeError: per column a float32 value (as a Python float),
    an int (int64 columns) or a str (string columns). `enriched` maps window:/feature:
    sources to values (from `WindowFeatures`)."""
    vals = []
    for c, lane in zip(manifest["inputs"], lanes(manifest)):
        if c["source"].startswith(ENRICHED_PREFIXES):
            vals.append(f32(enriched_value(c, enriched or {})))
        else:
            vals.append(_to_lane(column_value(event, c), lane, c))
    return vals


def f32(v: float) -> float:
    """Round to the nearest float32, as Rust's `as f32` does."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def rows(events: Iterable[dict], manifest: dict, enrich: dict | None = None,
         wf: "WindowFeatures | None" = None) -> list[list[float]]:
    """Rows for events in stream order; `enrich` is verdict's [enrich] config section. `wf`
    continues from window state already built (a warmed-up stream) instead of empty windows."""
    wf = wf if wf is not None else (WindowFeatures(enrich) if enrich else None)
    return [vectorize(e, manifest, wf.see(e) if wf else None) for e in events]


def vectorize_many(events: Iterable[dict], manifest: dict, enrich: dict | None = None,
                   wf: "WindowFeatures | None" = None):
    """A float32 matrix of the rows (single float input models)."""
    import numpy as np
    width = len(manifest["inputs"])
    r = rows(events, manifest, enrich, wf)
    return np.array(r, dtype=np.float32) if r else np.zeros((0, width), dtype=np.float32)


def graph_feed(rows_: list[list], manifest: dict) -> dict:
    """The onnxruntime feed for these rows: one [rows, columns] array per graph input."""
    import numpy as np
    index = {c["name"]: i for i, c in enumerate(manifest["inputs"])}
    dtypes = {"float32": np.float32, "int64": np.int64, "string": object}
    out = {}
    for g in feeds(manifest):
        cols = [index[c] for c in g["columns"]]
        out[g["name"]] = np.array([[r[i] for i in cols] for r in rows_], dtype=dtypes[g["type"]]).reshape(
            len(rows_), len(cols))
    return out


AGGS = ("count", "sum", "avg", "min", "max", "distinct")


class EntityState:
    """Mirrors src/enrich/window.rs: buckets of (count, sum, min, max, distinct set)."""

    def __init__(self):
        self.buckets: dict[int, list] = {}  # start -> [count, sum, min, max, last_of]
        self.last_bucket: dict[str, int] = {}  # distinct value -> most recent bucket start
        self.newest: int | None = None

    def aggregates(self, t: int, size: int, bucket: int):
        """A window's sum is the correctly rounded sum of its bucket sums (math.fsum), each
        bucket summing its events in order: verdict keeps it running, exactly. Window values
        are finite and within +-1e288 (verdict dead-letters others), so fsum cannot overflow."""
        c, sums, mn, mx, d = 0, [], None, None, 0
        for start in sorted(self.buckets):
            if start > t or start + bucket <= t - size:
                continue
            b = self.buckets[start]
            c += b[0]
            sums.append(b[1])
            if b[2] is not None:
                mn = b[2] if mn is None else min(mn, b[2])
                mx = b[3] if mx is None else max(mx, b[3])
            d += b[4]
        return c, math.fsum(sums), mn, mx, d

    def apply(self, t: int, value, distinct, bucket: int, retention: int, lateness: int,
              remembered: int | None = None) -> bool:
        """`remembered`: how long a distinct value is remembered (the series' longest window
        that counts distinct values, plus lateness and one bucket); None: the series marks
        no values (no window of this width counts them)."""
        if self.newest is not None and t < self.newest - lateness:
            return False
        start = (t // bucket) * bucket
        b = self.buckets.setdefault(start, [0, 0.0, None, None, 0])
        b[0] += 1
        if value is not None:
            b[1] += value
            b[2] = value if b[2] is None else min(b[2], value)
            b[3] = value if b[3] is None else max(b[3], value)
        if distinct is not None and remembered is not None:
            last = self.last_bucket.get(distinct)
            if last is None or last < start:
                if last is not None and last in self.buckets:
                    self.buckets[last][4] -= 1
                self.last_bucket[distinct] = start
                b[4] += 1
        self.newest = t if self.newest is None else max(self.newest, t)
        horizon = self.newest - retention
        dead = [k for k in self.buckets if k + bucket <= horizon]
        for k in dead:
            del self.buckets[k]
        if remembered is not None:
            # A value past the horizon is forgotten (its bucket keeps its mark): seen again,
            # it joins as a new value.
            self.last_bucket = {v: s for v, s in self.last_bucket.items() if s + bucket > self.newest - remembered}
        return True


def _num(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def warm_up_ms(enrich: dict) -> int:
    """Event time after which every window is full: the longest window plus its bucket width
    (a window covers whole buckets, so it reaches back up to one bucket further). Before that
    the stream is younger than its windows and their values are smaller than in steady state."""
    longest = 0
    for e in enrich.get("entities", []):
        default_s = int(e.get("bucket_s", 60))
        for w in e.get("windows", []):
            longest = max(longest, int(w["size_s"]) + int(w.get("bucket_s", default_s)))
    return longest * 1000


class SessionState:
    """Mirrors src/enrich/window/session.rs: the entity's current session, which an event more
    than `gap` after the session's latest event ends (a new one starts)."""

    def __init__(self):
        self.start: int | None = None
        self.last: int | None = None
        self.events = 0
        self.values: set[str] = set()

    def _continues(self, t: int, gap: int) -> bool:
        return self.last is not None and t <= self.last + gap

    def seen(self, t: int, gap: int):
        """(events, duration ms, ms since start, distinct) before an event at t; zeros when it opens a session."""
        if not self._continues(t, gap):
            return 0, 0, 0, 0
        return self.events, self.last - self.start, max(t - self.start, 0), len(self.values)

    def apply(self, t: int, distinct, gap: int, cap: int) -> None:
        if self._continues(t, gap):
            self.start, self.last, self.events = min(self.start, t), max(self.last, t), self.events + 1
        else:
            self.start, self.last, self.events, self.values = t, t, 1, set()
        if distinct and len(self.values) < cap:
            self.values.add(distinct)


class WindowFeatures:
    """Window values each event sees (before itself), exactly as verdict computes them.
    Online features (`feature:`) are not known offline: they come out missing."""

    def __init__(self, enrich: dict):
        self.enrich = enrich
        self.lateness = int(enrich.get("allowed_lateness_s", 60)) * 1000
        self.states: dict[tuple[str, str], dict[int, EntityState]] = {}
        self.sessions: dict[tuple[str, str], SessionState] = {}
        self.newest: dict[tuple[str, str], int] = {}

    def __setstate__(self, state: dict) -> None:
        """A pickle of an older version (no sessions) loads with empty session state."""
        self.__dict__.update({"sessions": {}, "newest": {}})
        self.__dict__.update(state)

    def warm(self, event: dict) -> None:
        """Adds the event to the windows without computing what it sees (a warm-up)."""
        self.see(event, values=False)

    def see(self, event: dict, values: bool = True) -> dict:
        out = {}
        t = event.get("event_time")
        for e in self.enrich.get("entities", []):
            windows = e.get("windows", [])
            session = e.get("session")
            if not windows and not session:
                continue
            ident = lookup(event, e["key"])
            if ident is _MISSING or ident is None:
                continue
            key = (e["name"], str(ident))
            value = _num(lookup(event, e["value_field"])) if e.get("value_field") else None
            dv = lookup(event, e["distinct_field"]) if e.get("distinct_field") else None
            dv = str(dv) if isinstance(dv, (str, int)) and not isinstance(dv, bool) else None
            newest = self.newest.get(key)
            late = newest is not None and t < newest - self.lateness
            if windows:
                # Each window has its bucket width (default: the entity's); windows of one width
                # share a bucket series, kept as long as its longest window needs.
                default_s = int(e.get("bucket_s", 60))
                widths = [int(w.get("bucket_s", default_s)) * 1000 for w in windows]
                sizes = [int(w["size_s"]) * 1000 for w in windows]
                retention = {b: max(s for s, wb in zip(sizes, widths) if wb == b) + self.lateness + b for b in widths}
                # A partition-owned entity remembers distinct values only as long as its
                # longest window that counts them (`aggregates`) needs; a shared one (its
                # state kept whole by window.lua) as long as its buckets.
                owned = e.get("ownership", "partition") == "partition"
                counts = [not owned or "distinct" in w.get("aggregates", AGGS) for w in windows]
                remembered = {
                    b: max((s for s, wb, c in zip(sizes, widths, counts) if wb == b and c), default=None)
                    for b in widths
                }
                remembered = {b: None if r is None else r + self.lateness + b for b, r in remembered.items()}
                series = self.states.setdefault(key, {b: EntityState() for b in retention})
                if values:
                    self._values(out, e, windows, series, sizes, widths, t)
                for bucket, one in series.items():
                    one.apply(t, value, dv, bucket, retention[bucket], self.lateness, remembered[bucket])
            if session:
                gap = int(session["gap_s"]) * 1000
                ss = self.sessions.setdefault(key, SessionState())
                if values:
                    n, duration, since_start, distinct = ss.seen(t, gap)
                    prefix = f"session:{e['name']}."
                    out[prefix + "events"] = float(n)
                    out[prefix + "duration_s"] = duration / 1000.0
                    out[prefix + "since_start_s"] = since_start / 1000.0
                    out[prefix + "distinct"] = float(distinct)
                if not late:
                    # An empty value is no value (as in verdict).
                    ss.apply(t, dv or None, gap, int(session.get("max_distinct", 1000)))
            if not late:
                self.newest[key] = t if newest is None else max(newest, t)
        return out

    @staticmethod
    def _values(out: dict, e: dict, windows: list, series: dict, sizes: list, widths: list, t: int) -> None:
        """What the event sees: every window's aggregates and the time since the entity's last event."""
        st = series[widths[0]]
        for w, size, bucket in zip(windows, sizes, widths):
            c, s, mn, mx, d = series[bucket].aggregates(t, size, bucket)
            prefix = f"window:{e['name']}.{w['name']}."
            offered = {
                "count": float(c),
                "sum": s,
                "avg": s / c if c > 0 and mn is not None else None,
                "min": mn,
                "max": mx,
                "distinct": float(d),
            }
            for a in w.get("aggregates", AGGS):
                out[prefix + a] = offered[a]
        out[f"window:{e['name']}.since_last_s"] = (
            None if st.newest is None else max(t - st.newest, 0) / 1000.0)


def main(argv: list[str]) -> None:
    """python3 features.py MANIFEST.json CONFIG.toml EVENTS.jsonl [--score [--per-row]]: one JSON row per
    event (null for NaN; ints for int64 columns, strings for string columns), computed as
    verdict computes them; with --score, {"row", "score"} (and "classes", every class score, for a
    multi-output model)
    where the score comes from onnxruntime (one intra-op thread, like verdict)."""
    import os
    import tomllib
    manifest = json.load(open(argv[1]))
    with open(argv[2], "rb") as f:
        enrich = tomllib.load(f).get("enrich")
    events = [json.loads(line) for line in open(argv[3]) if line.strip()]
    out = rows(events, manifest, enrich)
    scores = classes = None
    if "--score" in argv:
        import numpy as np
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        model = os.path.join(os.path.dirname(argv[1]), manifest["model_file"])
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        if "--per-row" in argv:
            # One row per call: what verdict does for models whose scores depend on the batch
            # (dynamic quantization computes its scales over the whole input).
            probs = np.concatenate([sess.run([manifest["output_name"]], graph_feed(out[i:i + 1], manifest))[0]
                                    for i in range(len(out))])
        else:
            probs = sess.run([manifest["output_name"]], graph_feed(out, manifest))[0]
        if manifest.get("classes"):
            # A multi-output model: every class score; the decision's score is the best.
            classes = probs
            scores = probs.max(axis=1)
        else:
            classes = None
            scores = probs[:, manifest.get("positive_index", 1)] if probs.ndim == 2 and probs.shape[1] > 1 else probs.reshape(-1)
    for i, row in enumerate(out):
        r = [None if isinstance(v, float) and math.isnan(v) else v for v in row]
        if scores is None:
            print(json.dumps(r))
        elif classes is None:
            print(json.dumps({"row": r, "score": float(scores[i])}))
        else:
            print(json.dumps({"row": r, "score": float(scores[i]), "classes": [float(c) for c in classes[i]]}))


if __name__ == "__main__":
    main(sys.argv)
