//! Partition-owned window state (issues 17 and 24) on the mock cluster with a real
//! redis-server: crashes mid-stream, a shared entity alongside a partition-owned one, and a
//! 1 → 3 → 1 rebalance, in process (`Pipeline`s); `verdict run` processes SIGKILLed and
//! SIGSTOPped in `owned/process.rs`. Every test accounts for every event, compares each
//! re-decision with the first decision (score, action and aggregates, bit for bit) and the
//! windows in Redis with the reference.
//!
//! `cargo test --release --test owned -- --nocapture --test-threads 1` prints the counts.

mod common;
#[path = "owned/process.rs"]
mod process;

use std::time::Duration;

use common::*;
use verdict::config::Config;
use verdict::pipeline::Pipeline;
use verdict::telemetry::Metrics;

/// JSON decision records with the window aggregates, so re-decisions can be compared;
/// without the model inputs and compressed, because a mock partition keeps only ~5 MiB (the
/// oldest decisions of a long stream would be gone before they are read).
fn json_with_aggregates(cfg: &mut Config) {
    cfg.publish.format = verdict::config::DecisionFormat::Json;
    cfg.publish.include_aggregates = true;
    cfg.publish.include_features = false;
    cfg.kafka.producer.insert("compression.type".into(), "lz4".into());
}

/// Waits until every event has a decision; on timeout, says which partitions lack decisions
/// (from which offset) and what the pipeline's metrics and Redis say.
fn wait_all_decided(
    mock: &verdict::demo::MockKafka,
    tail: &DecisionTail,
    redis: &RedisServer,
    group: &str,
    events: &[verdict::demo::Transaction],
    metrics: &[&Metrics],
    timeout: Duration,
) {
    let start = std::time::Instant::now();
    while !tail.all_decided(events) {
        if start.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let ids = id_counts(&tail.rows());
        let mut missing: std::collections::BTreeMap<i32, (i64, u64)> = Default::default();
        let mut ranges: std::collections::BTreeMap<i32, Vec<(i64, i64)>> = Default::default();
        for e in read_inputs(mock, "events").iter().filter(|e| !ids.contains_key(&e.event_id)) {
            let m = missing.entry(e.partition).or_insert((i64::MAX, 0));
            m.0 = m.0.min(e.offset);
            m.1 += 1;
            let r = ranges.entry(e.partition).or_default();
            match r.last_mut() {
                Some(last) if last.1 + 1 == e.offset => last.1 = e.offset,
                _ => r.push((e.offset, e.offset)),
            }
        }
        let low = {
            use rdkafka::consumer::{BaseConsumer, Consumer};
            let c: BaseConsumer =
                rdkafka::ClientConfig::new().set("bootstrap.servers", mock.bootstrap()).create().unwrap();
            (0..8).filter_map(|p| c.fetch_watermarks("decisions", p, Duration::from_secs(5)).ok()).collect::<Vec<_>>()
        };
        eprintln!(
            "undecided offset ranges: {:?}; decisions watermarks {low:?}",
            ranges.iter().map(|(p, r)| (p, &r[..r.len().min(8)])).collect::<Vec<_>>()
        );
        let mut conn = redis.conn();
        let n = missing.keys().max().map_or(1, |p| p + 1).max(4);
        let state: Vec<String> = metrics
            .iter()
            .map(|m| {
                format!(
                    "handled {}, partitions {}, checkpoints written {} fenced {} failed {}, failure {:?}",
                    handled(m),
                    m.partitions_assigned.get(),
                    m.state.checkpoints.with_label_values(&["written"]).get(),
                    m.state.checkpoints.with_label_values(&["fenced"]).get(),
                    m.state.checkpoints.with_label_values(&["failed"]).get(),
                    m.guards.failure()
                )
            })
            .collect();
        panic!(
            "not every event decided after {timeout:?}: undecided per partition (first offset, count) {missing:?}; \
             checkpoint offsets {:?}, acked {:?}, committed {:?}; pipelines: {state:?}",
            checkpoint_offsets(&mut conn, "events", n),
            acked_offsets(&mut conn, "events", n),
            mock.committed(group, "events", n)
        );
    }
}

/// Waits until this run handled `events` and wrote `checkpoints`; says where it stands if not.
fn wait_progress(m: &Metrics, events: u64, checkpoints: u64, timeout: Duration) {
    let start = std::time::Instant::now();
    while handled(m) < events || written(m) < checkpoints {
        assert!(
            start.elapsed() < timeout,
            "after {timeout:?}: handled {} (want {events}), checkpoints written {} (want {checkpoints}), fenced {}, \
             failed {}, window updates applied {} late {}, partitions {}, failure {:?}",
            handled(m),
            written(m),
            m.state.checkpoints.with_label_values(&["fenced"]).get(),
            m.state.checkpoints.with_label_values(&["failed"]).get(),
            m.window_updates.with_label_values(&["applied"]).get(),
            m.window_updates.with_label_values(&["late"]).get(),
            m.partitions_assigned.get(),
            m.guards.failure()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn written(m: &Metrics) -> u64 {
    m.state.checkpoints.with_label_values(&["written"]).get()
}

fn resume(m: &Metrics) -> (f64, u64) {
    (m.state.resume_seconds.get_sample_sum(), m.state.resume_seconds.get_sample_count())
}

#[test]
fn five_crashes_mid_stream_redecide_identically_and_checkpoints_hold_the_input_below_them() {
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    json_with_aggregates(&mut cfg);
    let tail = DecisionTail::start(mock.bootstrap(), "decisions");
    const EVENTS: u64 = 60_000;
    let stream = Stream::start(mock.bootstrap(), 0, EVENTS, 1_000, 41);
    let (mut redelivered, mut resumes, mut checked) = (0, Vec::new(), Vec::new());
    // Per crash and partition: [checkpoint, acked) — events decided and acknowledged but not
    // checkpointed, which the next run decides again and must flag `redelivery`.
    let mut must_flag: Vec<(i32, i64, i64)> = Vec::new();
    for k in 0..5 {
        let t = std::time::Instant::now();
        let m = Metrics::new();
        let p = Pipeline::start(&cfg, m.clone()).unwrap();
        wait_progress(&m, 2_000, 2, Duration::from_secs(60));
        assert!(stream.produced() < EVENTS, "the stream ended before crash {k}");
        let ran = t.elapsed();
        drop(p); // crash: in-flight batches abandoned, nothing checkpointed on the way out
        eprintln!(
            "run {k}: {ran:?} to 2,000 events and 2 checkpoints, crashed {:?} in; {} produced",
            t.elapsed(),
            stream.produced()
        );
        redelivered += m.state.redelivered.get();
        resumes.push(resume(&m));
        let mut conn = redis.conn();
        let (offsets, acked) = (checkpoint_offsets(&mut conn, "events", 4), acked_offsets(&mut conn, "events", 4));
        for (p, (o, a)) in offsets.iter().zip(&acked).enumerate() {
            if let (o, Some(a)) = (o.unwrap_or(0), a) {
                must_flag.push((p as i32, o, *a));
            }
        }
        let c = assert_checkpoints_match_inputs(&mut conn, || read_inputs(&mock, "events"), 4);
        assert!(c.0 > 0, "a crash found no checkpoint: {c:?}");
        checked.push(c);
        eprintln!("run {k}: checkpoints checked {:?} after start", t.elapsed());
    }
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    let events = stream.finish();
    wait_all_decided(&mock, &tail, &redis, &cfg.kafka.group_id, &events, &[&m], Duration::from_secs(120));
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    redelivered += m.state.redelivered.get();
    resumes.push(resume(&m));

    let rows = tail.settled_rows();
    let r = check_redecisions(&events, &rows);
    // Every event acknowledged but not checkpointed at a crash has a flagged decision: the
    // next run decides it again knowing it was published (or crashes first, and a later
    // run, whose acked offset is no lower, does).
    let flagged: std::collections::HashSet<(i32, i64)> =
        rows.iter().filter(|d| d.redelivery).map(|d| (d.source_partition, d.source_offset)).collect();
    let mut unflagged = Vec::new();
    let mut expected = std::collections::HashSet::new();
    for &(p, from, to) in &must_flag {
        for o in from..to {
            expected.insert((p, o));
            if !flagged.contains(&(p, o)) {
                unflagged.push((p, o));
            }
        }
    }
    eprintln!("acknowledged but not checkpointed at a crash (partition, checkpoint, acked): {must_flag:?}");
    assert!(
        unflagged.is_empty(),
        "{} of {} events acknowledged before a crash were decided again without redelivery, e.g. {:?}",
        unflagged.len(),
        expected.len(),
        &unflagged[..unflagged.len().min(5)]
    );
    eprintln!(
        "crash ×5 (in process): {} events; {} decided again ({} extra decisions), all equal to the first in score, \
         action and aggregates; {} flagged redelivery on the topic, {redelivered} counted redelivered; checkpoints \
         after each crash (partitions checkpointed, not yet, cards compared): {checked:?}; resume seconds (sum, count) per run: \
         {resumes:?}",
        events.len(),
        r.events,
        r.copies,
        r.flagged
    );
    assert!(r.copies > 0, "the crashes left events to decide again");
    // Events whose decisions were acknowledged before the crash are flagged when decided
    // again; the rest (in flight at the crash) are not. Some of each over five crashes.
    assert!(r.flagged > 0, "no re-decision flagged redelivery");
    assert!(redelivered >= r.flagged as u64, "every flagged record was counted ({redelivered} < {})", r.flagged);
    assert_eq!(layout(&mut redis.conn(), "card").as_deref(), Some("partition-v2"));
    assert_windows_exact(&redis, &events);
}

#[test]
fn a_shared_entity_alongside_a_partition_owned_one_stays_exact_after_a_crash() {
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    json_with_aggregates(&mut cfg);
    let tail = DecisionTail::start(mock.bootstrap(), "decisions");
    cfg.enrich.entities.push(verdict::enrich::EntityConfig {
        name: "merchant".into(),
        key: "merchant_id".into(),
        ownership: verdict::enrich::Ownership::Shared,
        windows: vec![verdict::enrich::config::WindowConfig::new("10m", 600)],
        value_field: Some("amount".into()),
        distinct_field: Some("card_id".into()),
        features: Vec::new(),
        ..Default::default()
    });
    // 16,000 events span ~150 s of event time: inside the merchant's 10 minutes. Produced
    // as a stream (a drained backlog is never checkpointed: see the idle test below).
    let stream = Stream::start(mock.bootstrap(), 0, 16_000, 1_000, 42);
    let m1 = Metrics::new();
    let first = Pipeline::start(&cfg, m1.clone()).unwrap();
    wait_progress(&m1, 6_000, 1, Duration::from_secs(60));
    assert!(stream.produced() < 16_000, "the stream ended before the crash");
    drop(first);
    let m2 = Metrics::new();
    let second = Pipeline::start(&cfg, m2.clone()).unwrap();
    let events = stream.finish();
    wait_all_decided(&mock, &tail, &redis, &cfg.kafka.group_id, &events, &[&m1, &m2], Duration::from_secs(90));
    assert!(second.shutdown(Duration::from_secs(30)).clean);

    let rows = tail.settled_rows();
    // The card's aggregates and the score are compared; the merchant's shared windows see
    // a replayed event as applied already, so theirs may differ (counted, not asserted).
    let card_only: Vec<DecisionRow> = rows
        .iter()
        .cloned()
        .map(|mut r| {
            r.aggregates.retain(|(name, _)| !name.contains("merchant."));
            r
        })
        .collect();
    let r = check_redecisions(&events, &card_only);
    let mut first_seen: std::collections::HashMap<&str, &DecisionRow> = Default::default();
    let mut merchant_differs = 0;
    for row in &rows {
        match first_seen.get(row.event_id.as_str()) {
            Some(f) if f.aggregates != row.aggregates => merchant_differs += 1,
            Some(_) => {}
            None => {
                first_seen.insert(&row.event_id, row);
            }
        }
    }
    let late =
        m1.window_updates.with_label_values(&["late"]).get() + m2.window_updates.with_label_values(&["late"]).get();
    eprintln!(
        "card (partition) + merchant (shared), one crash: {} re-decisions, {merchant_differs} with other merchant \
         aggregates; {late} late window updates",
        r.copies
    );
    let mut conn = redis.conn();
    assert_eq!(layout(&mut conn, "card").as_deref(), Some("partition-v2"));
    assert_eq!(layout(&mut conn, "merchant").as_deref(), Some("shared"));
    assert_windows_exact(&redis, &events);
    let merchants =
        reference_by(events.iter().map(|e| (e.merchant_id.as_str(), e.amount, e.card_id.as_str(), e.event_time)));
    assert_entity_exact(&mut conn, "merchant", &merchants);
}

#[test]
fn rebalance_one_to_three_to_one_redecides_nothing_and_windows_stay_exact() {
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(8);
    with_redis(&mut cfg, &redis);
    json_with_aggregates(&mut cfg);
    let tail = DecisionTail::start(mock.bootstrap(), "decisions");
    cfg.model.workers = 1;
    let stream = Stream::start(mock.bootstrap(), 0, 45_000, 1_500, 43);
    let ma = Metrics::new();
    let a = Pipeline::start(&cfg, ma.clone()).unwrap();
    wait_for("a deciding", Duration::from_secs(60), || handled(&ma) >= 2_000);

    let (mb, mc) = (Metrics::new(), Metrics::new());
    let b = Pipeline::start(&cfg, mb.clone()).unwrap();
    let c = Pipeline::start(&cfg, mc.clone()).unwrap();
    wait_for("b and c deciding", Duration::from_secs(60), || handled(&mb) > 0 && handled(&mc) > 0);
    wait_for("8 partitions over 3 instances", Duration::from_secs(60), || {
        let owned = [&ma, &mb, &mc].map(|m| m.partitions_assigned.get());
        owned.iter().sum::<i64>() == 8 && owned.iter().all(|&n| n > 0)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(stream.produced() < 45_000, "the stream ended before the scale-in");
    let (rb, rc) = (resume(&mb), resume(&mc));
    assert!(b.shutdown(Duration::from_secs(30)).clean);
    wait_for("a and c owning all 8", Duration::from_secs(60), || {
        ma.partitions_assigned.get() + mc.partitions_assigned.get() == 8
    });
    assert!(c.shutdown(Duration::from_secs(30)).clean);
    wait_for("a owning all 8", Duration::from_secs(60), || ma.partitions_assigned.get() == 8);
    let events = stream.finish();
    wait_all_decided(&mock, &tail, &redis, &cfg.kafka.group_id, &events, &[&ma, &mb, &mc], Duration::from_secs(120));
    assert!(a.shutdown(Duration::from_secs(30)).clean);

    let r = check_redecisions(&events, &tail.settled_rows());
    let ra = resume(&ma);
    let mean = |(s, n): (f64, u64)| if n == 0 { 0.0 } else { s / n as f64 };
    eprintln!(
        "scale 1→3→1 (in process): {} events, b decided {}, c {}; {} re-decisions ({} flagged); \
         verdict_partition_resume_seconds sum/count (mean): a {ra:?} ({:.3} s), b {rb:?} ({:.3} s), c {rc:?} ({:.3} s)",
        events.len(),
        handled(&mb),
        handled(&mc),
        r.copies,
        r.flagged,
        mean(ra),
        mean(rb),
        mean(rc)
    );
    assert!(handled(&mb) > 0 && handled(&mc) > 0);
    assert!(rb.1 > 0 && rc.1 > 0, "the joining instances measured their partitions' resume");
    // A graceful hand-over checkpoints what it decided before the partition moves.
    assert_eq!(r.copies, 0, "graceful rebalances must not decide any event twice");
    assert_windows_exact(&redis, &events);
}

#[test]
fn a_drained_backlog_is_checkpointed_and_committed_while_the_partitions_are_idle() {
    // The last events before a quiet spell must not wait for the next event to be
    // checkpointed: until then their offsets are not committed, and a crash decides them again.
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    let events = produce_transactions(&mock, "events", 5_000, 44, None);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("every event handled", Duration::from_secs(60), || handled(&m) >= 5_000);
    let drained = std::time::Instant::now();
    let ends: Vec<Option<i64>> = {
        let mut high = vec![None; 4];
        for e in read_inputs(&mock, "events") {
            high[e.partition as usize] = Some(e.offset + 1);
        }
        high
    };
    let interval = Duration::from_millis(cfg.enrich.checkpoint_interval_ms);
    let deadline = interval * 5;
    while checkpoint_offsets(&mut redis.conn(), "events", 4) != ends {
        assert!(
            drained.elapsed() < deadline,
            "{deadline:?} after the backlog was decided: checkpoint offsets {:?}, partition ends {ends:?}, \
             committed {:?}, checkpoints written {}",
            checkpoint_offsets(&mut redis.conn(), "events", 4),
            mock.committed(&cfg.kafka.group_id, "events", 4),
            written(&m)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for("the checkpointed offsets committed", Duration::from_secs(5), || {
        mock.committed(&cfg.kafka.group_id, "events", 4).iter().sum::<i64>() == events.len() as i64
    });
    eprintln!("idle: every partition checkpointed at its end {:?} after the backlog was decided", drained.elapsed());
    // The interval commits (asynchronous: counted when librdkafka reports them) are counted.
    wait_for("interval commits counted", Duration::from_secs(5), || m.commits.with_label_values(&["ok"]).get() > 0);
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    assert_windows_exact(&redis, &events);
}

#[test]
fn a_claim_redis_lost_stops_the_pipeline_with_the_partition_named_and_a_restart_decides_the_rest() {
    // Redis losing a partition's claim (a failover to a replica that had not received it, a
    // FLUSHALL, eviction) is not another instance's claim: no rebalance would ever move the
    // partition, so pausing it would stall it for good. The pipeline stops, saying why.
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    let tail = DecisionTail::start(mock.bootstrap(), "decisions");
    let stream = Stream::start(mock.bootstrap(), 0, 8_000, 1_000, 45);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_progress(&m, 1_000, 2, Duration::from_secs(60));
    let _: () = redis::cmd("DEL").arg(partition_meta_key("events", 0)).query(&mut redis.conn()).unwrap();
    wait_for("the pipeline to fail", Duration::from_secs(20), || m.guards.failure().is_some());
    let failure = m.guards.failure().unwrap();
    assert!(failure.contains("partition events/0") && failure.contains("gone from Redis"), "{failure}");
    assert!(m.state.checkpoints.with_label_values(&["failed"]).get() > 0);
    drop(p);
    let m2 = Metrics::new();
    let again = Pipeline::start(&cfg, m2.clone()).unwrap();
    let events = stream.finish();
    wait_all_decided(&mock, &tail, &redis, &cfg.kafka.group_id, &events, &[&m2], Duration::from_secs(90));
    assert!(again.shutdown(Duration::from_secs(30)).clean);
    eprintln!("lost claim: {failure}");
}

#[test]
fn start_up_refuses_another_layouts_entity_and_takes_over_an_earlier_builds_partition_layout() {
    let redis = RedisServer::start();
    let (_mock, mut cfg) = mock_setup(2);
    with_redis(&mut cfg, &redis);
    let mut conn = redis.conn();
    let record = |conn: &mut redis::Connection, v: &str| {
        let _: () = redis::cmd("HSET").arg("verdict:layout").arg("card").arg(v).query(conn).unwrap();
    };
    // Recorded as shared: two layouts must never write one entity.
    record(&mut conn, "shared");
    let err = Pipeline::start(&cfg, Metrics::new()).err().expect("refused").to_string();
    assert!(
        err.contains("entity 'card'") && err.contains("'shared' layout") && err.contains("partition-owned"),
        "{err}"
    );
    assert_eq!(layout(&mut conn, "card").as_deref(), Some("shared"), "a refusal changes nothing");
    // Recorded by a build before distinct values were held as keys: taken over, and recorded
    // under the new name, which such a build refuses at start-up.
    record(&mut conn, "partition");
    let p = Pipeline::start(&cfg, Metrics::new()).expect("an earlier build's partition layout is read");
    assert_eq!(layout(&mut conn, "card").as_deref(), Some("partition-v2"));
    assert!(p.shutdown(Duration::from_secs(30)).clean);
}

#[test]
fn checkpoints_are_sealed_by_size_before_a_long_interval_passes_and_a_crash_replays_only_since_the_last() {
    // With an hour between interval checkpoints, a partition's checkpoint is still sealed
    // once `checkpoint_max_entities` of its cards have changed: one write stays small (Redis
    // runs nothing else meanwhile; a write past `timeout_ms` was retried for ever), offsets
    // are committed as the stream goes, and a crash replays only what followed the last one.
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    json_with_aggregates(&mut cfg);
    cfg.enrich.checkpoint_interval_ms = 3_600_000;
    cfg.enrich.checkpoint_max_entities = 25;
    let tail = DecisionTail::start(mock.bootstrap(), "decisions");
    let mut gen = verdict::demo::Generator::new(45, 20_000, 1_764_000_000_000);
    let first = produce_from(&mock, "events", &mut gen, 6_000, None);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("the first 6,000 events handled", Duration::from_secs(60), || handled(&m) >= 6_000);
    let fields = m.state.checkpoint_fields.get();
    let n = written(&m);
    let mut ends = [0i64; 4];
    for e in read_inputs(&mock, "events") {
        ends[e.partition as usize] = ends[e.partition as usize].max(e.offset + 1);
    }
    let offsets = checkpoint_offsets(&mut redis.conn(), "events", 4);
    eprintln!(
        "size-sealed: {n} checkpoints, {fields} fields ({:.1} per checkpoint) for 6,000 events; checkpoint offsets \
         {offsets:?} of partition ends {ends:?}; committed {:?}",
        fields as f64 / n.max(1) as f64,
        mock.committed(&cfg.kafka.group_id, "events", 4)
    );
    // 6,000 events are at least 12 batches (512 events at most), each over far more than 25
    // of 20,000 cards: each seals a checkpoint of the partitions it holds.
    assert!(n >= 10, "only {n} checkpoints written with an hour-long interval");
    for (p, (o, end)) in offsets.iter().zip(ends).enumerate() {
        let o = o.unwrap_or_else(|| panic!("partition {p} has no checkpoint with an hour-long interval"));
        assert!(o > end / 2, "partition {p}: checkpoint at offset {o} of {end}: not sealed as the stream went");
    }
    drop(p); // crash
    let second = produce_from(&mock, "events", &mut gen, 2_000, None);
    let events: Vec<_> = first.into_iter().chain(second).collect();
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_all_decided(&mock, &tail, &redis, &cfg.kafka.group_id, &events, &[&m], Duration::from_secs(120));
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let r = check_redecisions(&events, &tail.settled_rows());
    eprintln!(
        "after the crash: {} events decided again ({} extra decisions), all equal to the first",
        r.events, r.copies
    );
    // Replayed: only what followed each partition's last checkpoint (a few batches), not
    // the hour-long interval's worth (everything).
    assert!(r.events < 2_000, "{} of the first 6,000 events decided again after the crash", r.events);
    assert_windows_exact(&redis, &events);
}

#[test]
fn past_max_entities_checkpointed_cards_are_let_go_and_read_back_from_redis_exactly() {
    // A bound far below the cards in the stream: entities whose state is durable are let go
    // (counted); what stays held is the bound plus what is not durable yet (at most
    // `checkpoint_max_entities` and a batch per partition); a card seen again is read back
    // from Redis, so its windows stay exact.
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    cfg.enrich.max_entities = 400;
    cfg.enrich.checkpoint_max_entities = 25;
    cfg.batch.max_events = 64;
    let slack = 400 + 4 * (25 + 64);
    let mut gen = verdict::demo::Generator::new(47, 20_000, 1_764_000_000_000);
    let first = produce_from(&mock, "events", &mut gen, 12_000, None);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("the first 12,000 events handled", Duration::from_secs(60), || handled(&m) >= 12_000);
    std::thread::sleep(Duration::from_millis(2_500)); // idle: the last checkpoints and trims
    let (held, evicted) = (m.state.entities.get(), m.state.evictions.with_label_values(&["bound"]).get());
    let reread = m.state.loads.with_label_values(&["found"]).get();
    let cards = first.iter().map(|e| e.card_id.as_str()).collect::<std::collections::HashSet<_>>().len();
    eprintln!("bound 400: {cards} cards, {evicted} let go past the bound, {reread} of them read back, {held} held");
    assert!(held <= slack as i64, "{held} entities held with a bound of 400 (at most {slack} expected)");
    // Every card came in once new (and again each time it was read back) and is either
    // held or was let go.
    assert_eq!(evicted as i64 + held, (cards as u64 + reread) as i64, "cards held and let go do not add up");
    let second = produce_from(&mock, "events", &mut gen, 6_000, None);
    wait_for("the next 6,000 events handled", Duration::from_secs(60), || handled(&m) >= 18_000);
    let found = m.state.loads.with_label_values(&["found"]).get() - reread;
    eprintln!("then 6,000 more: {found} cards read back from Redis");
    assert!(found > 0, "no card let go was read back from Redis when seen again");
    assert!(p.shutdown(Duration::from_secs(30)).clean);
    let events: Vec<_> = first.into_iter().chain(second).collect();
    assert_windows_exact(&redis, &events);
}

#[test]
fn memory_backend_lets_the_least_recently_seen_cards_go_at_the_bound_and_the_busiest_keeps_its_windows() {
    // The in-process backend with a bound far below the cards in the stream: each partition
    // lets go of its least recently seen cards after every batch, down to its share, counted;
    // the busiest card, seen in nearly every batch, is never let go, so its last decision's
    // 24 h count is every earlier event of it (an evicted card's windows would restart).
    let (mock, mut cfg) = mock_setup(4);
    json_with_aggregates(&mut cfg);
    cfg.enrich.max_entities = 400;
    cfg.batch.max_events = 64;
    let tail = DecisionTail::start(mock.bootstrap(), "decisions");
    let mut gen = verdict::demo::Generator::new(47, 20_000, 1_764_000_000_000);
    let events = produce_from(&mock, "events", &mut gen, 12_000, None);
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    wait_for("every decision", Duration::from_secs(90), || tail.all_decided(&events));
    let (held, evicted) = (m.state.entities.get(), m.state.evictions.with_label_values(&["bound"]).get());
    let mut per_card: std::collections::HashMap<&str, u64> = Default::default();
    for e in &events {
        *per_card.entry(e.card_id.as_str()).or_default() += 1;
    }
    eprintln!("memory backend, bound 400: {} cards, {evicted} let go, {held} held", per_card.len());
    assert!(held <= 400, "{held} cards held with a bound of 400");
    assert!(evicted as usize + 400 >= per_card.len(), "{evicted} let go of {} cards", per_card.len());
    let (busiest, n) = per_card.iter().max_by_key(|(_, n)| **n).map(|(c, n)| (*c, *n)).unwrap();
    let rows = tail.settled_rows();
    let last = rows.iter().filter(|r| r.entity_key == busiest).max_by_key(|r| r.source_offset).unwrap();
    let count = last.aggregates.iter().find(|(k, _)| k == "window:card.24h.count").map(|(_, v)| f64::from_bits(*v));
    assert_eq!(count, Some((n - 1) as f64), "{busiest} ({n} events): its last decision's 24 h count");
    assert!(p.shutdown(Duration::from_secs(30)).clean);
}

/// A card's session as the events define it (`window/session.rs`): (events, duration ms,
/// distinct merchants) of the session its last event is in, in production order (one
/// partition per card, the generator's times never go back).
fn reference_sessions(
    events: &[verdict::demo::Transaction],
    gap_ms: i64,
) -> std::collections::HashMap<String, (u64, i64, usize)> {
    let mut s: std::collections::HashMap<&str, (i64, i64, u64, std::collections::HashSet<&str>)> = Default::default();
    for e in events {
        let t = e.event_time;
        match s.get_mut(e.card_id.as_str()) {
            Some(x) if t <= x.1 + gap_ms => {
                x.0 = x.0.min(t);
                x.1 = x.1.max(t);
                x.2 += 1;
                x.3.insert(&e.merchant_id);
            }
            _ => {
                s.insert(&e.card_id, (t, t, 1, [e.merchant_id.as_str()].into_iter().collect()));
            }
        }
    }
    s.into_iter().map(|(id, (start, last, n, d))| (id.to_string(), (n, last - start, d.len()))).collect()
}

#[test]
fn a_session_window_redecides_identically_after_three_crashes_and_its_checkpoints_are_exact() {
    let redis = RedisServer::start();
    let (mock, mut cfg) = mock_setup(4);
    with_redis(&mut cfg, &redis);
    json_with_aggregates(&mut cfg);
    // 20 s of event time without a card's event ends its session: the stream (~10 ms of
    // event time per event over 50,000 cards) has busy cards that keep one and many that
    // open new ones.
    let gap_ms = 20_000;
    cfg.enrich.entities[0].session = Some(verdict::enrich::config::SessionConfig { gap_s: 20, max_distinct: 1_000 });
    let tail = DecisionTail::start(mock.bootstrap(), "decisions");
    const EVENTS: u64 = 24_000;
    let stream = Stream::start(mock.bootstrap(), 0, EVENTS, 1_000, 43);
    for k in 0..3 {
        let m = Metrics::new();
        let p = Pipeline::start(&cfg, m.clone()).unwrap();
        wait_progress(&m, 2_000, 2, Duration::from_secs(60));
        assert!(stream.produced() < EVENTS, "the stream ended before crash {k}");
        drop(p); // crash
    }
    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    let events = stream.finish();
    wait_all_decided(&mock, &tail, &redis, &cfg.kafka.group_id, &events, &[&m], Duration::from_secs(120));
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    let rows = tail.settled_rows();
    let session_values = |r: &DecisionRow| r.aggregates.iter().filter(|(n, _)| n.starts_with("session:card.")).count();
    assert!(rows.iter().all(|r| session_values(r) == 4), "every decision carries the card's four session values");
    let r = check_redecisions(&events, &rows);
    assert!(r.copies > 0, "the crashes left events to decide again");
    let continued = rows
        .iter()
        .filter(|r| r.aggregates.iter().any(|(n, v)| n == "session:card.events" && f64::from_bits(*v) > 0.0))
        .count();
    assert!(continued > 1_000 && continued < rows.len() - 1_000, "{continued} of {} continued a session", rows.len());

    // The checkpointed sessions equal the reference for every card.
    let spec = verdict::enrich::WindowSpec::of_entity(&cfg.enrich.entities[0], cfg.enrich.allowed_lateness_s);
    let session = spec.session.unwrap();
    let mut conn = redis.conn();
    let reference = reference_sessions(&events, gap_ms);
    for (card, (n, duration, distinct)) in &reference {
        let state = verdict::enrich::owned::stored_state(&mut conn, "verdict", "events", 4, ("card", &spec), card)
            .unwrap_or_else(|| panic!("card {card}: no checkpointed state"));
        let last = state.newest_ms().unwrap();
        let seen = state.session_seen(&session, last);
        assert_eq!(
            (seen.events, seen.duration_ms, seen.distinct),
            (*n, *duration, *distinct as u64),
            "card {card}: checkpointed session (events, duration ms, distinct merchants)"
        );
    }
    assert_windows_exact(&redis, &events);
    eprintln!(
        "session window, crash ×3: {} events, {} decided again (all equal, session values included), {continued} \
         decisions continued a session, {} cards' sessions compared",
        events.len(),
        r.events,
        reference.len()
    );
}
