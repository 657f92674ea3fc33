//! verdict on a real Redis Cluster (3 masters + 3 replicas on loopback, started and stopped
//! by each test, `enrich.redis_cluster = true`, two seed nodes): the enrichment and
//! checkpoint checks of tests/enrich.rs and tests/owned.rs hold on it, and a master failing
//! over to its replica mid-stream loses nothing and double-counts nothing. The cluster's
//! keys are copied into one standalone server afterwards, so the same state checks
//! (tests/common/state.rs) read them.

mod common;

use std::time::Duration;

use common::*;
use verdict::pipeline::Pipeline;
use verdict::telemetry::Metrics;

fn on_cluster(cfg: &mut verdict::config::Config, cluster: &RedisCluster) {
    cfg.enrich.backend = verdict::enrich::Backend::Redis;
    cfg.enrich.redis_url = cluster.url();
    cfg.enrich.redis_cluster = true;
    cfg.enrich.timeout_ms = 1000;
}

#[test]
fn shared_windows_and_online_features_are_exact_on_a_redis_cluster_across_a_crash() {
    let cluster = RedisCluster::start();
    let (mock, mut cfg) = mock_setup(4);
    on_cluster(&mut cfg, &cluster);
    for e in &mut cfg.enrich.entities {
        e.ownership = verdict::enrich::Ownership::Shared;
        // A shared entity keeps one bucket width.
        for w in &mut e.windows {
            w.bucket_s = None;
        }
    }
    cfg.publish.format = verdict::config::DecisionFormat::Json;
    let events = produce_transactions(&mock, "events", 10_000, 61, None);
    // Online features for 50 cards, spread over the cluster's slots by their hash tags.
    let mut seeded: Vec<String> = Vec::new();
    for e in &events {
        if seeded.len() < 50 && !seeded.contains(&e.card_id) {
            seeded.push(e.card_id.clone());
        }
    }
    let mut conn = cluster.conn();
    let masters: std::collections::HashSet<u16> = seeded
        .iter()
        .map(|card| cluster.master_of(&verdict::enrich::redis::feature_key("verdict", "card", card)))
        .collect();
    assert_eq!(masters.len(), 3, "the seeded cards' hashes live on every master");
    seed_chargebacks(&mut conn, &seeded, |i| i + 1);
    let m1 = Metrics::new();
    let first = Pipeline::start(&cfg, m1.clone()).unwrap();
    wait_for("part of the stream", Duration::from_secs(60), || handled(&m1) >= 3_000);
    drop(first); // crash: in-flight batches abandoned, their offsets never stored
    let m2 = Metrics::new();
    let second = Pipeline::start(&cfg, m2.clone()).unwrap();
    let decided = || {
        let ids = id_counts(&json_decision_rows(&mock.read_all("decisions", Duration::from_millis(300))));
        events.iter().all(|e| ids.contains_key(&e.event_id))
    };
    wait_for("every event decided", Duration::from_secs(90), decided);
    assert!(second.shutdown(Duration::from_secs(30)).clean);
    assert!(m2.window_updates.with_label_values(&["replayed"]).get() > 0, "the restart replayed some events");

    let decisions: Vec<serde_json::Value> = mock
        .read_all("decisions", Duration::from_secs(1))
        .iter()
        .map(|d| serde_json::from_slice(&d.payload).unwrap())
        .collect();
    for d in &decisions {
        let card = d["entity_key"].as_str().unwrap();
        let expected = seeded.iter().position(|c| c == card).map_or(0.0, |i| (i + 1) as f64);
        assert_eq!(d["features"]["card_chargebacks_90d"], expected, "{d}");
    }
    let standalone = RedisServer::start();
    assert!(cluster.copy_into(&standalone) > 0);
    assert_windows_exact(&standalone, &events);
}

#[test]
fn partition_owned_checkpoints_are_restored_after_a_restart_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let (mock, mut cfg) = mock_setup(4);
    on_cluster(&mut cfg, &cluster);
    let tail = DecisionTail::start(mock.bootstrap(), "decisions");
    let stream = Stream::start(mock.bootstrap(), 0, 12_000, 1_500, 62);
    let m1 = Metrics::new();
    let first = Pipeline::start(&cfg, m1.clone()).unwrap();
    wait_for("checkpoints on the cluster", Duration::from_secs(60), || {
        handled(&m1) >= 3_000 && m1.state.checkpoints.with_label_values(&["written"]).get() >= 2
    });
    drop(first); // crash
    let m2 = Metrics::new();
    let second = Pipeline::start(&cfg, m2.clone()).unwrap();
    let events = stream.finish();
    wait_for("every event decided", Duration::from_secs(90), || tail.all_decided(&events));
    assert!(second.shutdown(Duration::from_secs(30)).clean);
    assert!(m2.state.resume_seconds.get_sample_count() > 0, "the restart resumed from checkpoints");

    let standalone = RedisServer::start();
    cluster.copy_into(&standalone);
    let mut conn = standalone.conn();
    assert_eq!(layout(&mut conn, "card").as_deref(), Some("partition-v2"));
    let (checkpointed, _, cards) = assert_checkpoints_match_inputs(&mut conn, || read_inputs(&mock, "events"), 4);
    assert_eq!(checkpointed, 4, "every partition checkpointed on the cluster");
    assert!(cards > 0);
    assert_windows_exact(&standalone, &events);
    let r = check_redecisions(&events, &tail.settled_rows());
    eprintln!("cluster restart: {} events, {} decided again ({} extra)", events.len(), r.events, r.copies);
}

#[test]
fn a_master_failing_over_mid_stream_loses_nothing_and_double_counts_nothing() {
    let cluster = RedisCluster::start();
    let (mock, mut cfg) = mock_setup(4);
    on_cluster(&mut cfg, &cluster);
    // The card entity partition-owned (checkpoints), the others shared (per-batch script).
    for e in cfg.enrich.entities.iter_mut().filter(|e| e.name != "card") {
        e.ownership = verdict::enrich::Ownership::Shared;
    }
    let tail = DecisionTail::start(mock.bootstrap(), "decisions");
    let stream = Stream::start(mock.bootstrap(), 0, 15_000, 1_500, 63);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    let written = || m.state.checkpoints.with_label_values(&["written"]).get();
    wait_for("checkpoints before the failover", Duration::from_secs(60), || handled(&m) >= 2_000 && written() >= 2);
    // The master holding partition 0's checkpoint keys hands over to its replica.
    let key = partition_meta_key("events", 0);
    let (old, new) = cluster.failover(&key);
    let (handled_at, written_at) = (handled(&m), written());
    eprintln!("failover of {key}: master :{old} -> :{new} at {handled_at} events, {written_at} checkpoints");
    let events = stream.finish();
    if let Err(e) = wait_or_fail_later("every event decided", Duration::from_secs(90), || tail.all_decided(&events)) {
        let claims: String = (0..4).map(|p| cluster.describe(&partition_meta_key("events", p))).collect();
        panic!(
            "{e}: handled {} (of {}), checkpoints written {} failed {} fenced {}, failure {:?}; the claims:{claims}",
            handled(&m),
            events.len(),
            written(),
            m.state.checkpoints.with_label_values(&["failed"]).get(),
            m.state.checkpoints.with_label_values(&["fenced"]).get(),
            m.guards.failure()
        );
    }
    assert!(written() > written_at, "checkpoints went on after the failover");
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    assert_eq!(cluster.master_of(&key), new);

    let standalone = RedisServer::start();
    cluster.copy_into(&standalone);
    let mut conn = standalone.conn();
    let (checkpointed, _, _) = assert_checkpoints_match_inputs(&mut conn, || read_inputs(&mock, "events"), 4);
    assert_eq!(checkpointed, 4);
    assert_windows_exact(&standalone, &events);
    for e in cfg.enrich.entities.iter().filter(|e| e.name != "card" && !e.windows.is_empty()) {
        eprintln!("shared entity {} checked through its decisions only", e.name);
    }
    let r = check_redecisions(&events, &tail.settled_rows());
    eprintln!("failover: {} events, {} decided again ({} extra)", events.len(), r.events, r.copies);
}

#[test]
fn a_pipeline_to_a_cluster_whose_master_stopped_answering_gives_up_within_a_chunk() {
    let cluster = RedisCluster::start();
    let timeout = Duration::from_millis(300);
    let client = verdict::core::redis::Client::new("enrich.redis_url", &cluster.url(), &Default::default(), true)
        .expect("cluster client");
    let mut c = client.connect(timeout).expect("connected");
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("HGETALL").arg(format!("card-{i}"));
    }
    type Hashes = Vec<std::collections::HashMap<String, String>>;
    assert_eq!(c.query_pipe::<Hashes>(&pipe).expect("a healthy cluster answers").len(), 200);

    let port = cluster.master_of("card-0");
    let on_it = (0..200).filter(|i| cluster.master_of(&format!("card-{i}")) == port).count();
    cluster.freeze(port, true);
    let start = std::time::Instant::now();
    let result = c.query_pipe::<Hashes>(&pipe);
    let took = start.elapsed();
    cluster.freeze(port, false);
    assert!(result.is_err(), "a stopped master cannot answer");
    // redis-rs alone waited one timeout per command routed to the stopped master (20.8 s for
    // 65 of 200); in chunks of 16, at most 16 timeouts (1.3 s measured).
    println!("{on_it} of 200 keys on the stopped master: gave up after {took:?}");
    assert!(on_it > 16, "{on_it} keys on one of three masters");
    assert!(took < timeout * 16 + Duration::from_secs(1), "{took:?} for {on_it} keys on the stopped master");
}
