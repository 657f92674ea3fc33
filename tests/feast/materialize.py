"""A Feast repository for tests/feast.rs: writes parquet sources with several value types and
nulls, two feature views of one entity with different TTLs and one view with a composite
entity key, runs `feast apply` and `feast materialize` into the Redis at REDIS (host:port),
then asks Feast's own SDK (FeatureStore.get_online_features) for every entity and writes
what it returns to OUT as JSON: per feature, per entity, null or the value as a number
(f64 bits in hex; bool 1/0, a string as the number it spells, else null).

Usage: materialize.py DIR REDIS OUT N
"""

import json
import struct
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

root, redis, out, n = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
(root / "data").mkdir(parents=True, exist_ok=True)
now = datetime.now(timezone.utc).replace(microsecond=0)

(root / "feature_store.yaml").write_text(
    f"""project: verdict_test
registry: data/registry.db
provider: local
online_store:
  type: redis
  connection_string: "{redis}"
offline_store:
  type: file
entity_key_serialization_version: 3
"""
)

(root / "features.py").write_text(
    """from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float32, Float64, Int32, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
zone = Entity(name="zone", join_keys=["zone_id"], value_type=ValueType.STRING)

driver_hourly = FeatureView(
    name="driver_hourly",
    entities=[driver],
    ttl=timedelta(hours=2),
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="trips", dtype=Int64),
        Field(name="acc", dtype=Int32),
        Field(name="rating", dtype=Float64),
        Field(name="active", dtype=Bool),
        Field(name="score_text", dtype=String),
    ],
    source=FileSource(path="data/hourly.parquet", timestamp_field="event_timestamp"),
)

driver_daily = FeatureView(
    name="driver_daily",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[Field(name="avg_fare", dtype=Float64), Field(name="tier", dtype=String)],
    source=FileSource(path="data/daily.parquet", timestamp_field="event_timestamp"),
)

driver_zone = FeatureView(
    name="driver_zone",
    entities=[driver, zone],
    ttl=timedelta(days=1),
    schema=[Field(name="zone_trips", dtype=Int64), Field(name="surge", dtype=Float64)],
    source=FileSource(path="data/zone.parquet", timestamp_field="event_timestamp"),
)
"""
)


def null_every(k, i, v):
    return None if i % k == 0 else v


ids = list(range(1, n + 1))
# Hourly rows 30 min old; a tenth of the drivers also have an older row (Feast keeps the newest).
rows = [(i, now - timedelta(minutes=30, seconds=i % 60)) for i in ids] + [
    (i, now - timedelta(minutes=90)) for i in ids if i % 10 == 0
]
hourly = pa.table(
    {
        "driver_id": pa.array([r[0] for r in rows], pa.int64()),
        "event_timestamp": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
        "conv_rate": pa.array([null_every(7, i, (i % 100) / 37.0) for i, _ in rows], pa.float32()),
        "trips": pa.array([null_every(11, i, i * 1_000_003 - 40 + (t.minute)) for i, t in rows], pa.int64()),
        "acc": pa.array([null_every(13, i, -i) for i, _ in rows], pa.int32()),
        "rating": pa.array([null_every(5, i, i / 3.0) for i, _ in rows], pa.float64()),
        "active": pa.array([null_every(17, i, i % 3 == 0) for i, _ in rows], pa.bool_()),
        "score_text": pa.array([null_every(19, i, f"{i / 4}") for i, _ in rows], pa.string()),
    }
)
pq.write_table(hourly, root / "data/hourly.parquet")
# Daily rows 5 h old, only for even drivers.
even = [i for i in ids if i % 2 == 0]
daily = pa.table(
    {
        "driver_id": pa.array(even, pa.int64()),
        "event_timestamp": pa.array([now - timedelta(hours=5)] * len(even), pa.timestamp("us", tz="UTC")),
        "avg_fare": pa.array([null_every(9, i, 10 + i / 7.0) for i in even], pa.float64()),
        "tier": pa.array([["gold", "7", None][i % 3] for i in even], pa.string()),
    }
)
pq.write_table(daily, root / "data/daily.parquet")
pairs = [(i, f"z{i % 7}") for i in ids[: n // 2]]
zone = pa.table(
    {
        "driver_id": pa.array([p[0] for p in pairs], pa.int64()),
        "zone_id": pa.array([p[1] for p in pairs], pa.string()),
        "event_timestamp": pa.array([now - timedelta(hours=1)] * len(pairs), pa.timestamp("us", tz="UTC")),
        "zone_trips": pa.array([null_every(8, i, i * 3) for i, _ in pairs], pa.int64()),
        "surge": pa.array([1 + (i % 5) / 4 for i, _ in pairs], pa.float64()),
    }
)
pq.write_table(zone, root / "data/zone.parquet")

subprocess.run(["feast", "apply"], cwd=root, check=True, stdout=subprocess.DEVNULL)
start = (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
end = (now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
subprocess.run(["feast", "materialize", start, end], cwd=root, check=True, stdout=subprocess.DEVNULL)

from feast import FeatureStore  # noqa: E402  (after the repo exists)

store = FeatureStore(repo_path=str(root))


def number(v):
    if v is None:
        return None
    if isinstance(v, bool):
        v = 1.0 if v else 0.0
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            return None
    return struct.pack("<d", float(v)).hex()


def read(features, rows):
    got = store.get_online_features(features=features, entity_rows=rows).to_dict()
    return {f: [number(v) for v in got[f.split(":")[1]]] for f in features}


driver_features = [
    "driver_hourly:conv_rate",
    "driver_hourly:trips",
    "driver_hourly:acc",
    "driver_hourly:rating",
    "driver_hourly:active",
    "driver_hourly:score_text",
    "driver_daily:avg_fare",
    "driver_daily:tier",
]
# Drivers Feast has no row for come after the real ones.
asked = ids + list(range(n + 1, n + 201))
ask_pairs = pairs + [(i, f"z{(i % 7) + 1}") for i in ids[: n // 10]]
result = {
    "now_s": int(now.timestamp()),
    "drivers": asked,
    "driver": read(driver_features, [{"driver_id": i} for i in asked]),
    "pairs": ask_pairs,
    "driver_zone": read(
        ["driver_zone:zone_trips", "driver_zone:surge"], [{"driver_id": d, "zone_id": z} for d, z in ask_pairs]
    ),
}
out.write_text(json.dumps(result))
