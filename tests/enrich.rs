//! Enrichment against a real redis-server (started on a free port) and the mock cluster:
//! window aggregates exact under crashes, rebalances and outages; one round trip per batch.

mod common;

use std::time::Duration;

use common::*;
use verdict::pipeline::Pipeline;
use verdict::telemetry::Metrics;

const IDLE: Duration = Duration::from_secs(2);

/// Whether every produced event has a decision on the decisions topic (Avro records).
fn every_event_decided(mock: &verdict::demo::MockKafka, events: &[verdict::demo::Transaction]) -> bool {
    let ids = id_counts(&decode_decisions(&mock.read_all("decisions", Duration::from_millis(300))));
    events.iter().all(|e| ids.contains_key(&e.event_id))
}

/// Every decision on the decisions topic, for tests that publish JSON records.
fn json_decisions(mock: &verdict::demo::MockKafka) -> Vec<serde_json::Value> {
    mock.read_all("decisions", IDLE).iter().map(|d| serde_json::from_slice(&d.payload).unwrap()).collect()
}

/// The same crash with per-entity script calls on a real Redis Cluster is
/// tests/redis_cluster.rs (`enrich.redis_cluster` now needs a cluster, not one server).
#[test]
fn replayed_events_after_a_crash_do_not_double_count_windows() {
    crash_and_restart();
}

/// The shared (per-batch compare-and-set) path: the card entity is set `shared`, so the
/// replay fence, not a checkpoint, keeps the windows exact. The partition-owned path has its
/// own crash tests in tests/owned.rs.
fn crash_and_restart() {
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    share_entities(&mut cfg.enrich);
    let events = produce_transactions(&mock, "events", 20_000, 21, None);
    let m1 = Metrics::new();
    let first = Pipeline::start(&cfg, m1.clone()).unwrap();
    wait_for("part of the stream", Duration::from_secs(60), || handled(&m1) >= 6_000);
    drop(first); // crash: in-flight batches abandoned, their offsets never stored
    let m2 = Metrics::new();
    let second = Pipeline::start(&cfg, m2.clone()).unwrap();
    wait_for("the rest", Duration::from_secs(90), || every_event_decided(&mock, &events));
    assert!(second.shutdown(Duration::from_secs(30)).clean);
    assert!(m2.window_updates.with_label_values(&["replayed"]).get() > 0, "the restart replayed some events");
    assert_windows_exact(&redis, &events);
}

#[test]
fn two_instances_one_dropped_mid_stream_keep_windows_exact() {
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    cfg.model.workers = 1;
    let events = produce_transactions(&mock, "events", 20_000, 22, None);
    let (ma, mb) = (Metrics::new(), Metrics::new());
    let a = Pipeline::start(&cfg, ma.clone()).unwrap();
    let b = Pipeline::start(&cfg, mb.clone()).unwrap();
    wait_for("both working", Duration::from_secs(60), || handled(&ma) + handled(&mb) >= 5_000);
    drop(a);
    wait_for("every event decided", Duration::from_secs(120), || every_event_decided(&mock, &events));
    assert!(b.shutdown(Duration::from_secs(30)).clean);
    assert_windows_exact(&redis, &events);
}

#[test]
fn redis_outage_under_pause_loses_nothing_and_keeps_windows_exact() {
    let mut redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    // A steady stream (10 s), not a backlog: a backlog can be decided and checkpointed
    // before the outage begins, and then nothing calls Redis to notice it.
    let stream = Stream::start(mock.bootstrap(), 0, 20_000, 2_000, 23);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("some decisions", Duration::from_secs(60), || handled(&m) >= 1_000);
    redis.freeze(true);
    wait_for("the outage to be noticed", Duration::from_secs(10), || m.state_store_up.get() == 0);
    assert!(!m.ready(), "readiness drops while Redis is down");
    std::thread::sleep(Duration::from_secs(5));
    let during = handled(&m);
    redis.freeze(false);
    let events = stream.finish();
    wait_for("all decided", Duration::from_secs(60), || handled(&m) >= 20_000);
    assert!(during < 20_000, "the outage held work back");
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let ids = id_counts(&decode_decisions(&mock.read_all("decisions", IDLE)));
    assert!(events.iter().all(|e| ids.contains_key(&e.event_id)));
    assert!(m.enrich_failures.get() > 0);
    assert_windows_exact(&redis, &events);
    redis.stop();
}

#[test]
fn connections_redis_closes_are_made_again_without_a_failure_or_a_lost_event() {
    // Redis closes connections that sat idle when it restarts, fails over or meets a proxy's
    // idle timeout. Such a call is made once more on a new connection: neither an outage (no
    // failure counted, readiness kept) nor, two in a row, a reason to stop calling Redis.
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    let stream = Stream::start(mock.bootstrap(), 0, 12_000, 2_000, 27);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("some decisions", Duration::from_secs(60), || handled(&m) >= 1_000);
    let mut admin = redis.conn();
    let mut killed = 0;
    for _ in 0..4 {
        // Every connection but this one: the workers' feature readers, the consume thread's
        // and the acker's state connections.
        let n: u64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").query(&mut admin).unwrap();
        killed += n;
        std::thread::sleep(Duration::from_millis(1_200));
    }
    let events = stream.finish();
    wait_for("all decided", Duration::from_secs(60), || handled(&m) >= 12_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    assert!(killed >= 8, "the test closed the pipeline's connections ({killed})");
    assert_eq!(m.enrich_failures.get(), 0, "a closed connection is not a failed batch");
    assert_eq!(m.degraded_events.get(), 0);
    let ids = id_counts(&decode_decisions(&mock.read_all("decisions", IDLE)));
    assert!(events.iter().all(|e| ids.contains_key(&e.event_id)));
    assert_windows_exact(&redis, &events);
}

#[test]
fn a_pipeline_to_a_redis_that_stopped_answering_gives_up_after_one_timeout() {
    // redis-rs reads each reply of a pipeline up to the read timeout, whatever happened to
    // the one before: a batch's 200 entity loads to a stopped Redis took 200 timeouts (60 s
    // at 300 ms) while the batch held its partition's turn, and the pipeline stalled.
    let redis = RedisServer::start();
    let security = verdict::core::redis::RedisConfig::default();
    let client = verdict::core::redis::Client::new("enrich.redis_url", &redis.url(), &security, false).unwrap();
    let mut conn = client.connect(Duration::from_millis(300)).unwrap();
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("HGETALL").arg(format!("verdict:none-{i}"));
    }
    type Hashes = Vec<Vec<(Vec<u8>, Vec<u8>)>>;
    assert_eq!(conn.query_pipe::<Hashes>(&pipe).unwrap().len(), 200);
    redis.freeze(true);
    let start = std::time::Instant::now();
    let result = conn.query_pipe::<Hashes>(&pipe);
    let took = start.elapsed();
    redis.freeze(false);
    assert!(result.as_ref().is_err_and(|e| e.is_timeout()), "{result:?}");
    assert!(took < Duration::from_secs(2), "{took:?} for one pipeline, read timeout 300 ms");
}

#[test]
fn redis_outage_under_degraded_marks_decisions_degraded() {
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    cfg.enrich.on_failure = verdict::enrich::FailurePolicy::Degraded;
    cfg.publish.format = verdict::config::DecisionFormat::Json;
    produce_transactions(&mock, "events", 5_000, 24, None);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    redis.freeze(true);
    wait_for("all decided despite the outage", Duration::from_secs(60), || handled(&m) >= 5_000);
    redis.freeze(false);
    // While Redis does not answer, one call a second tries it (the breaker): the batches do
    // not each wait out `enrich.timeout_ms` for their features and their partitions' windows.
    let enrich = m.stage_seconds.with_label_values(&["enrich"]);
    let mean = enrich.get_sample_sum() / enrich.get_sample_count() as f64;
    let timeout = cfg.enrich.timeout_ms as f64 / 1000.0;
    assert!(mean < timeout, "{mean:.3} s in the enrich stage per batch, timeout {timeout} s");
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let decisions = json_decisions(&mock);
    assert_eq!(decisions.len(), 5_000);
    let degraded = decisions.iter().filter(|d| d["degraded"] == true).count();
    assert!(degraded > 0, "decisions during the outage carry degraded=true");
    assert_eq!(m.degraded_events.get() as usize, degraded);
    // The online features could not be read: they took their defaults. (The card's windows are
    // partition-owned and in process: they have values wherever the partition's state was
    // claimed and the card's state read before the outage.)
    for d in decisions.iter().filter(|d| d["degraded"] == true) {
        assert!(d["defaults_used"].as_array().unwrap().iter().any(|c| c == "card_chargebacks_90d"), "{d}");
    }
}

#[test]
fn seeded_entities_get_their_features_and_unknown_ones_get_defaults_listed() {
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(1);
    with_redis(&mut cfg, &redis);
    cfg.publish.format = verdict::config::DecisionFormat::Json;
    cfg.publish.include_aggregates = true;
    let events = produce_transactions(&mock, "events", 2_000, 25, Some(0));
    let mut seeded: Vec<String> = Vec::new();
    for e in &events {
        if seeded.len() < 50 && !seeded.contains(&e.card_id) {
            seeded.push(e.card_id.clone());
        }
    }
    let mut conn = redis.conn();
    let now = verdict::publish::acker::wall_clock_ms();
    for (i, card) in seeded.iter().enumerate() {
        let key = verdict::enrich::redis::feature_key("verdict", "card", card);
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg("chargebacks_90d")
            .arg(i + 1)
            .arg("_ts")
            .arg(now)
            .query(&mut conn)
            .unwrap();
    }
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("all decided", Duration::from_secs(60), || handled(&m) >= 2_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let decisions = json_decisions(&mock);
    for d in &decisions {
        let card = d["entity_key"].as_str().unwrap();
        let defaults: Vec<&str> = d["defaults_used"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        match seeded.iter().position(|c| c == card) {
            Some(i) => {
                assert_eq!(d["features"]["card_chargebacks_90d"], (i + 1) as f64, "{d}");
                assert!(!defaults.contains(&"card_chargebacks_90d"), "{d}");
                // The record says how old the features were when read (cache TTL included).
                let age = d["aggregates"]["feature:card.age_s"].as_f64().unwrap();
                let decided = d["decided_at"].as_i64().unwrap();
                assert!(age >= 0.0 && age <= (decided - now) as f64 / 1000.0 + 0.001, "age {age}: {d}");
            }
            None => {
                assert_eq!(d["features"]["card_chargebacks_90d"], 0.0);
                assert!(defaults.contains(&"card_chargebacks_90d"), "{d}");
                assert!(d["aggregates"].get("feature:card.age_s").is_none(), "no features, no age: {d}");
            }
        }
    }
}

#[test]
fn feature_reads_and_window_updates_cost_one_round_trip_per_batch() {
    // The shared path's contract (one script call per batch carries features and window
    // updates); partition-owned windows write checkpoints instead.
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    share_entities(&mut cfg.enrich);
    produce_transactions(&mock, "events", 10_000, 26, None);
    let before = redis_calls(&redis, "evalsha");
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("all decided", Duration::from_secs(60), || handled(&m) >= 10_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let batches = m.stage_seconds.with_label_values(&["enrich"]).get_sample_count();
    let round_trips = m.enrich_round_trips.get();
    assert_eq!(round_trips, batches, "one round trip per enriched batch");
    let calls = redis_calls(&redis, "evalsha") - before;
    assert_eq!(calls, m.enrich_commands.get(), "Redis saw exactly the script calls verdict sent");
    assert_eq!(calls, round_trips, "one script call per batch (standalone Redis), none per event");
    let (hits, misses) =
        (m.feature_cache.with_label_values(&["hit"]).get(), m.feature_cache.with_label_values(&["miss"]).get());
    assert!(hits > 0 && misses > 0, "the feature cache serves repeat cards: {hits} hits, {misses} misses");
    eprintln!("10000 events: {batches} batches, {round_trips} round trips, {calls} EVALSHA calls, cache {hits} hits / {misses} misses");
}

#[test]
fn features_fed_to_the_model_equal_the_training_code() {
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(1);
    with_redis(&mut cfg, &redis);
    cfg.publish.format = verdict::config::DecisionFormat::Json;
    let events = produce_transactions(&mock, "events", 3_000, 27, Some(0));
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("all decided", Duration::from_secs(60), || handled(&m) >= 3_000);
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, events.iter().map(|e| String::from_utf8(e.to_json()).unwrap() + "\n").collect::<String>())
        .unwrap();
    let out = std::process::Command::new("python3")
        .arg(crate_path("ops/model/features.py"))
        .arg(crate_path("models/demo/manifest.json"))
        .arg(crate_path("config/demo.toml"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let python: Vec<Vec<Option<f64>>> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(crate_path("models/demo/manifest.json")).unwrap()).unwrap();
    let names: Vec<&str> = manifest["inputs"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    let by_id: std::collections::HashMap<String, serde_json::Value> =
        json_decisions(&mock).into_iter().map(|d| (d["event_id"].as_str().unwrap().to_string(), d)).collect();
    let mut compared = 0;
    for (e, row) in events.iter().zip(&python) {
        let d = &by_id[&e.event_id];
        for (name, want) in names.iter().zip(row) {
            let got = d["features"][name].as_f64();
            match (got, want) {
                // Both are f32 values (JSON prints the f32's shortest form).
                (Some(g), Some(w)) => {
                    assert!(((g as f32) - (*w as f32)).abs() <= 1e-6, "{} {name}: service {g}, python {w}", e.event_id)
                }
                (g, w) => assert_eq!(g.is_none(), w.is_none(), "{} {name}: {g:?} vs {w:?}", e.event_id),
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 3_000 * names.len());
}

#[test]
fn redis_windows_equal_the_in_process_ones_event_by_event_across_expiry_lateness_and_replays() {
    // 30 simulated hours of one busy and a few quiet cards: buckets expire past the 24 h
    // window (inside batches and between them), merchants recur after their bucket expired,
    // some events are later than the allowed lateness, and a batch is replayed. Every value
    // every event sees must be the same, bit for bit, from Redis (script + state followed
    // here) and from the in-process backend.
    use rand::{Rng, SeedableRng};
    use verdict::enrich::{EntityInput, Request};
    let redis = RedisServer::start();
    // Two Redis-backed enrichers share the state, as two instances would: each keeps a copy
    // of the states it wrote and sends its batches as compare-and-sets of that copy, which the
    // other's writes make stale (the script then applies the events itself).
    let (mut memory, [a, b]) = memory_and_redis_enrichers(&redis);
    let mut stores = [a, b];
    let (mut written, mut conflicts, mut misses) = (0, 0, 0);

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut t = 1_764_000_000_000i64;
    let mut batches: Vec<Vec<(i64, i64, Vec<EntityInput>)>> = Vec::new();
    let mut offset = 0i64;
    while t < 1_764_000_000_000 + 30 * 3_600_000 {
        let mut batch = Vec::new();
        for _ in 0..rng.random_range(1..60) {
            t += rng.random_range(0..30_000) * if rng.random_bool(0.02) { 60 } else { 1 };
            let late = rng.random_bool(0.03);
            let time = if late { t - rng.random_range(30_000..200_000) } else { t };
            let card =
                if rng.random_bool(0.7) { "busy".to_string() } else { format!("quiet-{}", rng.random_range(0..4)) };
            // The merchant population drifts (10 new ids an hour), so values leave the 24 h
            // window for good and their fields must go with their buckets.
            let hour = (t - 1_764_000_000_000) / 3_600_000;
            let merchant = format!("m-{}", hour * 10 + rng.random_range(0..40));
            let value = rng.random_bool(0.9).then(|| f64::from(rng.random_range(1..100_000)) / 100.0);
            batch.push((
                offset,
                time,
                vec![EntityInput { id: Some(card.into()), value, distinct: Some(merchant.into()) }],
            ));
            offset += 1;
        }
        batches.push(batch);
    }
    // Replay one batch from the middle, as after a crash before its offsets were committed.
    batches.insert(batches.len() / 2 + 1, batches[batches.len() / 2].clone());

    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut events = 0;
    for (k, batch) in batches.iter().enumerate() {
        // Runs of batches on the first, every tenth on the second, for the first fifth of
        // the batches; then the first alone, so only its compare-and-sets prune the fields
        // of merchants gone from the window.
        let store = &mut stores[usize::from(k % 10 == 9 && k < batches.len() / 5)];
        let reqs: Vec<Request<'_>> = batch
            .iter()
            .map(|(o, time, e)| Request { fence_key: "events/0", offset: *o, time_ms: *time, entities: e })
            .collect();
        let sm = memory.enrich(&reqs, &mut a).unwrap();
        let sr = store.enrich(&reqs, &mut b).unwrap();
        assert_eq!((sm.applied, sm.late, sm.replayed), (sr.applied, sr.late, sr.replayed));
        (written, conflicts, misses) =
            (written + sr.state_written, conflicts + sr.state_conflicts, misses + sr.state_misses);
        let bits = |v: &[Option<f64>]| v.iter().map(|x| x.map(f64::to_bits)).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "batch at offset {}", batch[0].0);
        events += reqs.len();
    }
    assert!(events > 2_000, "{events} events");
    // Both paths ran: groups were stored from a copy, some copies were stale, and groups
    // with no copy (or one that did not know a merchant) were applied by the script.
    assert!(written > 50 && conflicts > 0 && misses > 0, "{written} written, {conflicts} conflicts, {misses} misses");
    // Memory stays bounded: buckets older than the longest window + lateness are dropped,
    // and so are distinct values whose latest bucket went with them.
    let (buckets, span_ms, fields): (i64, i64, i64) = redis::Script::new(
        "local st = cmsgpack.unpack(redis.call('HGET', KEYS[1], 's'))
         return {#st.b, st.n - st.b[1][1], redis.call('HLEN', KEYS[1])}",
    )
    .key(verdict::enrich::redis::window_key("verdict", "card", "busy"))
    .invoke(&mut redis.conn())
    .unwrap();
    assert!(buckets > 100, "{buckets} buckets kept");
    assert!(span_ms <= (86_400 + 60 + 60) * 1000, "oldest bucket {span_ms} ms before the newest event");
    // Merchants of the last 25 hours: ids from 10 x (30 - 25) up to 10 x 30 + 39.
    assert!(fields <= 2 + 25 * 10 + 40, "{fields} fields: the state, its version and the live merchants");
    // The key outlives its last update by at least the TTL (longest window + lateness +
    // bucket) and at most 1.1 x that: its expiry is pushed back once a tenth has passed.
    let ttl_ms = (86_400 + 60 + 60) * 1000i64;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(verdict::enrich::redis::window_key("verdict", "card", "busy"))
        .query(&mut redis.conn())
        .unwrap();
    assert!(pttl > ttl_ms && pttl <= ttl_ms * 11 / 10, "PTTL {pttl} ms");
}

#[test]
fn a_copy_that_knows_a_distinct_value_wrongly_is_not_stored() {
    // Two instances write one card. A learns merchant m's bucket, B moves m to a later
    // bucket, A's next write conflicts and A keeps what it knew of m. A's copy is now wrong
    // about m, with the right version: the script must refuse it, and every value must match
    // the in-process backend fed the same events.
    use verdict::enrich::{EntityInput, Request};
    let redis = RedisServer::start();
    let (mut memory, [mut a, mut b]) = memory_and_redis_enrichers(&redis);
    let t0 = 1_764_000_000_000i64;
    let card = |merchant: &str| {
        vec![EntityInput { id: Some("c1".into()), value: Some(10.0), distinct: Some(merchant.into()) }]
    };
    // (writer, offset, minutes after t0, merchant)
    let steps = [(0, 0, 0, "m"), (1, 1, 2, "m"), (0, 2, 3, "x"), (0, 3, 4, "m"), (0, 4, 5, "m")];
    let (mut conflicts, mut written) = (0, 0);
    for (writer, offset, minutes, merchant) in steps {
        let input = card(merchant);
        let reqs = [Request { fence_key: "events/0", offset, time_ms: t0 + minutes * 60_000, entities: &input }];
        let (mut want, mut got) = (Vec::new(), Vec::new());
        memory.enrich(&reqs, &mut want).unwrap();
        let store = if writer == 0 { &mut a } else { &mut b };
        let s = store.enrich(&reqs, &mut got).unwrap();
        (conflicts, written) = (conflicts + s.state_conflicts, written + s.state_written);
        assert_eq!(want, got, "offset {offset}");
    }
    assert!(conflicts >= 2 && written >= 1, "{conflicts} conflicts, {written} written");
}

/// An in-process enricher and two enrichers on `redis` (two instances), default entities.
fn memory_and_redis_enrichers(redis: &RedisServer) -> (verdict::enrich::Enricher, [verdict::enrich::Enricher; 2]) {
    use verdict::enrich::{Backend, Enricher};
    let mut cfg = verdict::config::demo();
    share_entities(&mut cfg.enrich);
    cfg.enrich.backend = Backend::Memory;
    let memory = Enricher::new(&cfg.enrich).unwrap();
    cfg.enrich.backend = Backend::Redis;
    cfg.enrich.redis_url = redis.url();
    (memory, [Enricher::new(&cfg.enrich).unwrap(), Enricher::new(&cfg.enrich).unwrap()])
}

/// Sets every entity `shared`: the tests of the per-batch compare-and-set path (Redis key
/// `verdict:win:<entity>:{<id>}`) keep testing it now that entities are partition-owned by default.
/// A shared entity keeps one bucket width, so its windows drop their own (the demo's 5-minute
/// and 1-hour ones) for the entity's `bucket_s`.
fn share_entities(cfg: &mut verdict::enrich::EnrichConfig) {
    for e in &mut cfg.entities {
        e.ownership = verdict::enrich::Ownership::Shared;
        for w in &mut e.windows {
            w.bucket_s = None;
        }
    }
}

/// Log lines written on the calling thread while `f` runs.
fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let w = buf.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || w.clone()).with_ansi(false).finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (out, text)
}

/// One event of card `id`; returns the enriched values by name.
fn enrich_card(enricher: &mut verdict::enrich::Enricher, id: &str, offset: i64) -> Vec<(String, Option<f64>)> {
    let now = verdict::publish::acker::wall_clock_ms();
    let entities =
        [verdict::enrich::EntityInput { id: Some(id.into()), value: Some(10.0), distinct: Some("m1".into()) }];
    let req = verdict::enrich::Request { fence_key: "events/0", offset, time_ms: now, entities: &entities };
    let mut out = Vec::new();
    enricher.enrich(&[req], &mut out).unwrap();
    enricher.names().iter().cloned().zip(out).collect()
}

fn value(values: &[(String, Option<f64>)], name: &str) -> Option<f64> {
    values.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
}

#[test]
fn the_readme_feature_hash_is_read_and_a_hash_without_braces_is_counted_and_named() {
    // An Enricher alone (no pipeline, no partition claimed): the shared path, whose
    // features the window script reads with the entity's window update.
    the_readme_hash(true);
}

#[test]
fn features_of_partition_owned_entities_are_read_without_the_script_with_the_same_values() {
    // The enricher of the features of entities whose windows are partition-owned (what the
    // pipeline's workers run): plain HMGETs, no script call, the same values and warnings.
    let redis = the_readme_hash(false);
    assert_eq!(redis_calls(&redis, "evalsha"), 0, "no script call");
    assert_eq!(redis_calls(&redis, "hmget"), 5, "one HMGET per read");
}

/// The README's feature hash read as written; a hash under another key, and a string at the
/// key, read as no hash (counted, the first one named in a warning); a stale hash gives no
/// features but its age. `shared`: through the window script, else plain reads.
fn the_readme_hash(shared: bool) -> RedisServer {
    let redis = RedisServer::start();
    let mut cfg = verdict::enrich::EnrichConfig {
        backend: verdict::enrich::Backend::Redis,
        redis_url: redis.url(),
        ..Default::default()
    };
    if shared {
        share_entities(&mut cfg);
    }
    let m = Metrics::new();
    let part = if shared { verdict::enrich::Part::All } else { verdict::enrich::Part::Features };
    let mut enricher = verdict::enrich::Enricher::new(&cfg).unwrap().for_part(part).with_metrics(&m);
    let missing = || m.guards.feature_hash_missing.with_label_values(&["card"]).get();

    // The README's example line, run as written.
    let readme = std::fs::read_to_string(crate_path("README.md")).unwrap();
    let line = readme.lines().find(|l| l.starts_with("redis-cli -u \"$REDIS_URL\" HSET")).expect("the README example");
    let status = std::process::Command::new("sh")
        .args(["-c", line])
        .env("REDIS_URL", redis.url())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{line}");
    let values = enrich_card(&mut enricher, "c047094", 0);
    assert_eq!(value(&values, "feature:card.chargebacks_90d"), Some(2.0));
    assert_eq!(value(&values, "feature:card.avg_amount_30d"), Some(57.5));
    assert!(value(&values, "feature:card.age_s").is_some_and(|age| (0.0..5.0).contains(&age)));
    assert_eq!(missing(), 0, "the hash was there");

    // The same hash written without the braces: verdict reads another key.
    let now = verdict::publish::acker::wall_clock_ms();
    let _: () = redis::cmd("HSET")
        .arg("verdict:f:card:c999")
        .arg("chargebacks_90d")
        .arg(5)
        .arg("_ts")
        .arg(now)
        .query(&mut redis.conn())
        .unwrap();
    let (values, logs) = logs_of(|| enrich_card(&mut enricher, "c999", 1));
    assert_eq!(value(&values, "feature:card.chargebacks_90d"), None, "defaults");
    assert_eq!(missing(), 1);
    assert!(
        logs.contains("no online-feature hash at verdict:f:card:{c999}"),
        "the warning names the key read:\n{logs}"
    );

    // Another card without features: counted, not told again.
    let (_, logs) = logs_of(|| enrich_card(&mut enricher, "c1000", 2));
    assert_eq!(missing(), 2);
    assert!(!logs.contains("no online-feature hash"), "one warning per entity type per window:\n{logs}");
    assert_eq!(m.guards.log_suppressed.with_label_values(&["enrich"]).get(), 1);

    // A string written by hand where the hash should be: read as no hash, the batch goes on
    // (before, the script failed with WRONGTYPE and the batch was retried for ever).
    let _: () = redis::cmd("SET").arg("verdict:f:card:{c2000}").arg("oops").query(&mut redis.conn()).unwrap();
    let values = enrich_card(&mut enricher, "c2000", 3);
    assert_eq!(value(&values, "feature:card.chargebacks_90d"), None, "defaults");
    assert_eq!(missing(), 3);

    // Written longer ago than `max_feature_age_s`: stale, so defaults; the age says how old.
    let max_age_s = cfg.entities[0].max_feature_age_s as i64;
    let then = verdict::publish::acker::wall_clock_ms() - (max_age_s + 30) * 1000;
    let _: () = redis::cmd("HSET")
        .arg("verdict:f:card:{c3000}")
        .arg("chargebacks_90d")
        .arg(7)
        .arg("_ts")
        .arg(then)
        .query(&mut redis.conn())
        .unwrap();
    let values = enrich_card(&mut enricher, "c3000", 4);
    assert_eq!(value(&values, "feature:card.chargebacks_90d"), None, "stale: defaults");
    let age = value(&values, "feature:card.age_s").expect("a dated hash has an age");
    assert!((max_age_s as f64 + 30.0..max_age_s as f64 + 35.0).contains(&age), "age {age}");
    assert_eq!(missing(), 3, "a stale hash is there");
    redis
}

#[test]
fn a_key_of_the_wrong_type_dead_letters_its_batches_instead_of_pausing_for_ever() {
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    // The shared layout's key (`window_key`) is the one made wrong below.
    share_entities(&mut cfg.enrich);
    assert_eq!(cfg.enrich.on_failure, verdict::enrich::FailurePolicy::Pause);
    let events = produce_transactions(&mock, "events", 3_000, 31, None);
    // One card's window key holds a string: every script call that touches it fails with
    // WRONGTYPE, which no retry can fix.
    let bad = events[0].card_id.clone();
    let entity = &cfg.enrich.entities[0].name;
    let key = verdict::enrich::redis::window_key(&cfg.enrich.key_prefix, entity, &bad);
    redis::cmd("SET").arg(&key).arg("not a hash").exec(&mut redis.conn()).unwrap();

    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("every event handled", Duration::from_secs(60), || handled(&m) >= events.len() as u64);
    assert_eq!(p.failure(), None, "a data error in Redis does not fail the pipeline");
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    let dlq = mock.read_all("dead-letter", IDLE);
    assert!(!dlq.is_empty());
    for d in &dlq {
        assert_eq!(d.header(verdict::publish::DLQ_REASON), Some("internal_error"));
        let detail = d.header(verdict::publish::DLQ_DETAIL).unwrap_or_default();
        assert!(detail.contains("WRONGTYPE"), "the detail names the Redis error: {detail}");
    }
    let dead: Vec<String> = dlq
        .iter()
        .map(|d| serde_json::from_slice::<serde_json::Value>(&d.payload).unwrap()["event_id"].as_str().unwrap().into())
        .collect();
    let decided = id_counts(&decode_decisions(&mock.read_all("decisions", IDLE)));
    for e in &events {
        let n = decided.get(&e.event_id).copied().unwrap_or(0) + u32::from(dead.contains(&e.event_id));
        assert_eq!(n, 1, "{}: exactly one decision or one dead letter", e.event_id);
        if e.card_id == bad {
            assert!(dead.contains(&e.event_id), "the bad card's events cannot be decided");
        }
    }
    assert!(dead.len() < events.len() / 2, "only the batches touching the bad key: {} dead", dead.len());
    assert_eq!(m.dead_letters.with_label_values(&["internal_error"]).get(), dlq.len() as u64);
    assert_eq!(mock.committed(&cfg.kafka.group_id, "events", 4).iter().sum::<i64>(), events.len() as i64);
}

#[test]
fn online_features_come_from_their_own_redis_and_the_windows_go_to_the_other() {
    // `enrich.features_redis_url`: a feature store's Redis, read only, apart from the state
    // store. The same card has a decoy hash in the state store: a value from it would show.
    for ownership in [verdict::enrich::Ownership::Partition, verdict::enrich::Ownership::Shared] {
        let (state, store) = (RedisServer::start(), RedisServer::start());
        let (mock, mut cfg) = mock_setup(2);
        with_redis(&mut cfg, &state);
        cfg.enrich.features_redis_url = store.url();
        if ownership == verdict::enrich::Ownership::Shared {
            share_entities(&mut cfg.enrich);
        }
        let events = produce_transactions(&mock, "events", 1_500, 25, Some(0));
        let seeded = cards_to_seed(&events);
        seed_chargebacks(&mut state.conn(), &seeded, |i| 1_000 + i);
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut state.conn()).unwrap();
        // The feature store was only read; the window state went to the state store alone.
        decide_from_feature_store(&mut cfg, &mock, &store, &seeded, ownership);
        assert!(redis_calls(&state, "evalsha") > 0, "{ownership:?}: windows written to the state store");
    }
}

#[test]
fn windows_in_process_read_online_features_from_a_feature_store_redis() {
    // `backend = "memory"` with `enrich.features_redis_url`: windows in process (not durable),
    // online features read from the feature store's Redis, which sees only `HMGET`s.
    for ownership in [verdict::enrich::Ownership::Partition, verdict::enrich::Ownership::Shared] {
        let store = RedisServer::start();
        let (mock, mut cfg) = mock_setup(2);
        cfg.enrich.backend = verdict::enrich::Backend::Memory;
        cfg.enrich.features_redis_url = store.url();
        if ownership == verdict::enrich::Ownership::Shared {
            share_entities(&mut cfg.enrich);
        }
        let events = produce_transactions(&mock, "events", 1_500, 26, Some(0));
        let seeded = cards_to_seed(&events);
        let decisions = decide_from_feature_store(&mut cfg, &mock, &store, &seeded, ownership);
        assert_eq!(redis_calls(&store, "hgetall"), 0, "{ownership:?}: no window state read from the feature store");
        // The windows are kept in process: a card's later events see its earlier ones.
        let mut per_card = std::collections::HashMap::<&str, u64>::new();
        for d in &decisions {
            *per_card.entry(d["entity_key"].as_str().unwrap()).or_default() += 1;
        }
        let busiest = per_card.values().max().copied().unwrap_or(0);
        let max_count = decisions.iter().filter_map(|d| d["features"]["card_24h_count"].as_f64()).fold(0.0, f64::max);
        assert!(
            busiest >= 2 && max_count >= 1.0,
            "{ownership:?}: busiest card {busiest} events, max count {max_count}"
        );
    }
}

/// The first 40 cards of `events` in sorted order: those a test's feature store has values for.
fn cards_to_seed(events: &[verdict::demo::Transaction]) -> Vec<String> {
    let mut seeded: Vec<String> = events.iter().map(|e| e.card_id.clone()).collect();
    seeded.sort();
    seeded.dedup();
    seeded.truncate(40);
    seeded
}

/// Seeds `store` with `seeded`'s values (index + 1), decides the 1,500 events produced and
/// checks what a feature store serves: every decision has its card's value from the store (0
/// for a card not seeded), at least 40 of them seeded; the store saw `HMGET`s and no write or
/// script, and holds nothing but the 40 hashes. Returns the decisions.
fn decide_from_feature_store(
    cfg: &mut verdict::config::Config,
    mock: &verdict::demo::MockKafka,
    store: &RedisServer,
    seeded: &[String],
    ownership: verdict::enrich::Ownership,
) -> Vec<serde_json::Value> {
    cfg.publish.format = verdict::config::DecisionFormat::Json;
    seed_chargebacks(&mut store.conn(), seeded, |i| i + 1);
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut store.conn()).unwrap();
    let m = Metrics::new();
    let p = Pipeline::start(cfg, m.clone()).unwrap();
    wait_for("all decided", Duration::from_secs(60), || handled(&m) >= 1_500);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let decisions = json_decisions(mock);
    assert_eq!(decisions.len(), 1_500, "{ownership:?}");
    let mut from_store = 0;
    for d in &decisions {
        let card = d["entity_key"].as_str().unwrap();
        let expected = seeded.iter().position(|c| c == card).map_or(0.0, |i| (i + 1) as f64);
        assert_eq!(d["features"]["card_chargebacks_90d"], expected, "{ownership:?}: {d}");
        from_store += usize::from(expected > 0.0);
    }
    assert!(from_store >= 40, "{ownership:?}: {from_store} decisions with a seeded card");
    assert!(redis_calls(store, "hmget") > 0, "{ownership:?}");
    for cmd in ["evalsha", "eval", "hset", "hdel", "script|load"] {
        assert_eq!(redis_calls(store, cmd), 0, "{ownership:?}: {cmd} on the feature store");
    }
    let keys: u64 = redis::cmd("DBSIZE").query(&mut store.conn()).unwrap();
    assert_eq!(keys, 40, "{ownership:?}: nothing but the feature hashes in the feature store");
    decisions
}
