//! Reading a Feast Redis online store as Feast itself writes and serves it: the real Feast SDK
//! (pinned in scripts/test.sh) applies and materializes a repository (tests/feast/materialize.py:
//! two views of one entity with different TTLs, several value types and nulls, one view keyed
//! by two join keys) into a redis-server started here, and reports what
//! `FeatureStore.get_online_features` returns; verdict's enricher, configured from TOML as the
//! README's "Using Feast" shows, must read the same values from the same Redis.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use verdict::enrich::{EnrichConfig, Enricher, EntityInput, Request};

/// The drivers that have rows; the script asks for 200 more that have none.
const DRIVERS: usize = 3000;

/// verdict's config for the test repository (the README's example, on the test's Redis).
fn config(redis: &RedisServer, daily_max_age_s: Option<u64>) -> EnrichConfig {
    config_at(&redis.url(), false, daily_max_age_s)
}

/// The same on the Redis (or Redis Cluster, seed nodes) at `url`.
fn config_at(url: &str, cluster: bool, daily_max_age_s: Option<u64>) -> EnrichConfig {
    let views = match daily_max_age_s {
        Some(s) => format!("views = [{{ name = \"driver_daily\", max_age_s = {s} }}]"),
        None => String::new(),
    };
    let text = format!(
        r#"
[model]
dir = "{model}"

[enrich]
backend = "redis"
redis_url = "{url}"
redis_cluster = {cluster}
cache_capacity = 0

[[enrich.entities]]
name = "driver"
key = "driver_id"
windows = []
features = ["driver_hourly:conv_rate", "driver_hourly:trips", "driver_hourly:acc", "driver_hourly:rating",
            "driver_hourly:active", "driver_hourly:score_text", "driver_daily:avg_fare", "driver_daily:tier"]
max_feature_age_s = 86400
[enrich.entities.feast]
project = "verdict_test"
join_keys = [{{ name = "driver_id", type = "int64" }}]
{views}

[[enrich.entities]]
name = "driver_zone"
key = "zone.id"
windows = []
features = ["driver_zone:zone_trips", "driver_zone:surge"]
[enrich.entities.feast]
project = "verdict_test"
join_keys = [{{ name = "zone_id" }}, {{ name = "driver_id", type = "int64" }}]
"#,
        model = crate_path("models/demo").display(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("verdict.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = verdict::config::load_files(&[path.as_path()]).unwrap_or_else(|e| panic!("config: {e}"));
    cfg.enrich
}

/// What Feast served: per feature, per entity (in the script's order), the number or None.
struct Served {
    now_s: i64,
    drivers: Vec<i64>,
    driver: HashMap<String, Vec<Option<f64>>>,
    pairs: Vec<(i64, String)>,
    driver_zone: HashMap<String, Vec<Option<f64>>>,
}

fn served(path: &Path) -> Served {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let bits = |x: &serde_json::Value| {
        x.as_str().map(|h| f64::from_bits(u64::from_le_bytes(hex8(h)))) // f64 bits, as Python packed them
    };
    let table = |k: &str| {
        v[k].as_object().unwrap().iter().map(|(f, xs)| (f.clone(), xs.as_array().unwrap().iter().map(bits).collect()))
    };
    Served {
        now_s: v["now_s"].as_i64().unwrap(),
        drivers: v["drivers"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect(),
        driver: table("driver").collect(),
        pairs: v["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_i64().unwrap(), p[1].as_str().unwrap().to_string()))
            .collect(),
        driver_zone: table("driver_zone").collect(),
    }
}

fn hex8(h: &str) -> [u8; 8] {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
    }
    b
}

/// verdict's values for `ids` of entity `which` (0: driver, 1: driver_zone), in batches of
/// 500 as the service reads them: per event, every value of the enricher (names()).
fn read(cfg: &EnrichConfig, which: usize, ids: &[String]) -> (Vec<String>, Vec<Vec<Option<f64>>>) {
    let (names, rows, _) = read_counted(cfg, which, ids);
    (names, rows)
}

/// [`read`], and how many reads found no Feast row (`verdict_feature_hash_missing_total`).
fn read_counted(cfg: &EnrichConfig, which: usize, ids: &[String]) -> (Vec<String>, Vec<Vec<Option<f64>>>, u64) {
    let metrics = verdict::telemetry::Metrics::new();
    let mut enricher = Enricher::new(cfg).unwrap().with_metrics(&metrics);
    let names = enricher.names().to_vec();
    let mut rows = Vec::new();
    for chunk in ids.chunks(500) {
        let inputs: Vec<Vec<EntityInput>> = chunk
            .iter()
            .map(|id| {
                let mut e = vec![EntityInput::default(), EntityInput::default()];
                e[which].id = Some(id.as_str().into());
                e
            })
            .collect();
        let reqs: Vec<Request<'_>> = inputs
            .iter()
            .enumerate()
            .map(|(i, e)| Request { fence_key: "t/0", offset: i as i64, time_ms: 0, entities: e })
            .collect();
        let mut out = Vec::new();
        let stats = enricher.enrich(&reqs, &mut out).unwrap();
        assert_eq!(stats.round_trips, 1, "one pipelined round trip per batch");
        rows.extend(out.chunks(names.len()).map(<[_]>::to_vec));
    }
    let name = &cfg.entities[which].name;
    (names, rows, metrics.guards.feature_hash_missing.with_label_values(&[name.as_str()]).get())
}

/// Asserts verdict's column `feature:{entity}.{f}` equals what Feast served, entity by entity.
fn assert_same(
    entity: &str,
    features: &HashMap<String, Vec<Option<f64>>>,
    names: &[String],
    rows: &[Vec<Option<f64>>],
    ids: &[String],
) {
    for (f, want) in features {
        let col = names.iter().position(|n| *n == format!("feature:{entity}.{f}")).unwrap();
        assert_eq!(want.len(), rows.len());
        for ((w, row), id) in want.iter().zip(rows).zip(ids) {
            assert_eq!(row[col], *w, "{entity} {id:?} {f}: verdict read {:?}, Feast served {w:?}", row[col]);
        }
        assert!(want.iter().any(Option::is_some), "{f}: Feast served values");
    }
}

#[test]
fn verdict_reads_what_feast_materialized_as_feast_serves_it() {
    let redis = RedisServer::start();
    let repo = tempfile::tempdir().unwrap();
    let out = repo.path().join("served.json");
    let status = std::process::Command::new("python3")
        .arg(crate_path("tests/feast/materialize.py"))
        .args([repo.path().join("repo").as_os_str(), format!("127.0.0.1:{}", redis.port).as_ref(), out.as_os_str()])
        .arg(DRIVERS.to_string())
        .env("FEAST_USAGE", "False")
        .status()
        .expect("python3");
    assert!(status.success(), "feast apply / materialize / get_online_features failed");
    let s = served(&out);
    let age_now = verdict::core::clock::wall_clock_ms() / 1000 - s.now_s;

    every_value_of_a_single_key_entity_equals_feasts(&redis, &s);
    entities_without_a_row_get_defaults(&redis, &s);
    a_view_past_its_age_limit_is_stale(&redis, &s, age_now);
    composite_keys_read_the_rows_of_both_join_keys(&redis, &s);
    the_same_values_from_a_redis_cluster(&redis, &s);
}

fn driver_ids(s: &Served) -> Vec<String> {
    s.drivers.iter().map(i64::to_string).collect()
}

fn every_value_of_a_single_key_entity_equals_feasts(redis: &RedisServer, s: &Served) {
    let ids = driver_ids(s);
    let (names, rows) = read(&config(redis, None), 0, &ids);
    assert_same("driver", &s.driver, &names, &rows, &ids);
    // Nulls came through as nulls, and every type had values.
    for f in ["driver_hourly:conv_rate", "driver_hourly:active", "driver_daily:tier"] {
        assert!(s.driver[f][..DRIVERS].iter().any(Option::is_none), "{f} has nulls");
    }
    let age = names.iter().position(|n| n == "feature:driver.age_s").unwrap();
    let a = rows[1][age].expect("driver 2 has both views");
    assert!((5.0 * 3600.0..6.0 * 3600.0).contains(&a), "age of the oldest view (daily, 5 h): {a}");
}

fn entities_without_a_row_get_defaults(redis: &RedisServer, s: &Served) {
    let ids = driver_ids(s);
    let (names, rows, missing) = read_counted(&config(redis, None), 0, &ids);
    assert_eq!(missing, (ids.len() - DRIVERS) as u64, "reads that found no Feast row are counted");
    for row in &rows[DRIVERS..] {
        let features = names.iter().zip(row).filter(|(n, _)| n.starts_with("feature:driver."));
        assert!(features.clone().count() == 9 && features.clone().all(|(_, v)| v.is_none()), "{row:?}");
    }
    // Odd drivers have no daily row: only the daily view's features are missing.
    let fare = names.iter().position(|n| n == "feature:driver.driver_daily:avg_fare").unwrap();
    let rating = names.iter().position(|n| n == "feature:driver.driver_hourly:rating").unwrap();
    assert_eq!(rows[0][fare], None);
    assert!(rows[0][rating].is_some(), "driver 1's hourly row");
}

fn a_view_past_its_age_limit_is_stale(redis: &RedisServer, s: &Served, age_now: i64) {
    let ids = driver_ids(s);
    // The daily rows are 5 h old: a 4 h limit makes them stale; the hourly view keeps its
    // entity default (1 day) and its values.
    let (names, rows) = read(&config(redis, Some(4 * 3600 - age_now.max(0) as u64)), 0, &ids);
    for (name, col) in names.iter().zip(0..) {
        let Some(f) = name.strip_prefix("feature:driver.") else { continue };
        if f.starts_with("driver_daily:") {
            assert!(rows.iter().all(|r| r[col].is_none()), "{f} is stale");
        } else if let Some(want) = s.driver.get(f) {
            assert!(rows.iter().zip(want).all(|(r, w)| r[col] == *w), "{f} is fresh");
        }
    }
    let (_, fresh) = read(&config(redis, Some(6 * 3600)), 0, &ids);
    let fare = names.iter().position(|n| n == "feature:driver.driver_daily:avg_fare").unwrap();
    assert!(fresh.iter().any(|r| r[fare].is_some()), "a 6 h limit keeps the 5 h old view");
}

fn composite_keys_read_the_rows_of_both_join_keys(redis: &RedisServer, s: &Served) {
    let ids: Vec<String> =
        s.pairs.iter().map(|(d, z)| format!("{z}{}{d}", verdict::core::event::KEY_SEPARATOR)).collect();
    let (names, rows) = read(&config(redis, None), 1, &ids);
    assert_same("driver_zone", &s.driver_zone, &names, &rows, &ids);
    let surge = names.iter().position(|n| n == "feature:driver_zone.driver_zone:surge").unwrap();
    let (with, without) = rows.split_at(DRIVERS / 2);
    assert!(with.iter().all(|r| r[surge].is_some()), "every materialized pair is found");
    assert!(without.iter().all(|r| r[surge].is_none()), "pairs Feast has no row for get defaults");
}

/// Feast's keys copied as they are onto a Redis Cluster (each to its slot's master; they
/// carry no hash tag): verdict's per-entity HMGETs, routed by slot, read the same values.
fn the_same_values_from_a_redis_cluster(redis: &RedisServer, s: &Served) {
    let cluster = RedisCluster::start();
    let copied = cluster.copy_from(redis);
    assert!(copied >= DRIVERS + DRIVERS / 2, "{copied} keys copied");
    let cfg = config_at(&cluster.url(), true, None);
    let ids = driver_ids(s);
    let (names, rows) = read(&cfg, 0, &ids);
    assert_same("driver", &s.driver, &names, &rows, &ids);
    let ids: Vec<String> =
        s.pairs.iter().map(|(d, z)| format!("{z}{}{d}", verdict::core::event::KEY_SEPARATOR)).collect();
    let (names, rows) = read(&cfg, 1, &ids);
    assert_same("driver_zone", &s.driver_zone, &names, &rows, &ids);
}
