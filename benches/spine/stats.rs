//! What a phase did to the partition-owned state, from verdict's metrics (`metrics.state.*`,
//! window updates, stage times) and, with the Redis backend, from Redis's own counters
//! (`INFO commandstats`, `INFO cpu`, `INFO memory`): differences of two snapshots.

use std::time::Duration;

use verdict::telemetry::Metrics;

/// Counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    written: u64,
    fenced: u64,
    failed: u64,
    retried: u64,
    fields: u64,
    /// Acker Redis writes (one pipelined call per acknowledged batch): count, seconds.
    writes: (u64, f64),
    /// Per histogram bucket (upper bound s, cumulative count).
    write_buckets: Vec<(f64, u64)>,
    found: u64,
    new: u64,
    applied: u64,
    late: u64,
    evicted: [u64; 2],
    entities: i64,
    redelivered: u64,
    /// Events dead-lettered (e.g. `bad_event_time`: more than a day ahead of the wall clock).
    dead: u64,
    /// Worker seconds by stage.
    stages: Vec<(&'static str, f64)>,
    redis: Option<RedisInfo>,
}

/// Redis's counters: per command (calls, µs), CPU seconds (user + sys), memory.
#[derive(Debug, Clone, Default)]
struct RedisInfo {
    commands: Vec<(String, u64, u64)>,
    cpu_s: f64,
    used_memory: u64,
}

const STAGES: [&str; 7] = ["decode", "enrich", "score", "shadow", "decide", "publish", "drift"];
/// Parts of the enrich stage (`verdict_enrich_part_seconds{part}`), printed after the stages.
const PARTS: [&str; 3] = ["enrich.features", "enrich.owned", "enrich.shared"];

impl Snapshot {
    /// Reads `m` (and Redis's counters when `redis` is given).
    pub fn take(m: &Metrics, redis: Option<&mut redis::Connection>) -> Self {
        let s = &m.state;
        let ck = |r: &str| s.checkpoints.with_label_values(&[r]).get();
        let h = s.checkpoint_seconds.clone();
        let proto = prometheus::core::Collector::collect(&h);
        let write_buckets = proto
            .first()
            .and_then(|f| f.get_metric().first())
            .map(|mm| mm.get_histogram().get_bucket().iter().map(|b| (b.upper_bound(), b.cumulative_count())).collect())
            .unwrap_or_default();
        Self {
            written: ck("written"),
            fenced: ck("fenced"),
            failed: ck("failed"),
            retried: ck("retried"),
            fields: s.checkpoint_fields.get(),
            writes: (h.get_sample_count(), h.get_sample_sum()),
            write_buckets,
            found: s.loads.with_label_values(&["found"]).get(),
            new: s.loads.with_label_values(&["new"]).get(),
            applied: m.window_updates.with_label_values(&["applied"]).get(),
            late: m.window_updates.with_label_values(&["late"]).get(),
            evicted: [
                s.evictions.with_label_values(&["expired"]).get(),
                s.evictions.with_label_values(&["bound"]).get(),
            ],
            entities: s.entities.get(),
            redelivered: s.redelivered.get(),
            dead: m.counted("decode", "dead_letter"),
            stages: STAGES
                .iter()
                .map(|st| (*st, m.stage_seconds.with_label_values(&[st]).get_sample_sum()))
                .chain(PARTS.iter().map(|p| (*p, m.enrich_part_seconds.with_label_values(&[&p[7..]]).get_sample_sum())))
                .collect(),
            redis: redis.and_then(|c| redis_info(c).map_err(|e| eprintln!("  (INFO from Redis failed: {e})")).ok()),
        }
    }
}

fn redis_info(c: &mut redis::Connection) -> redis::RedisResult<RedisInfo> {
    let text: String = redis::cmd("INFO").arg("commandstats").arg("cpu").arg("memory").query(c)?;
    let mut info = RedisInfo::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            let (name, stats) = rest.split_once(':').unwrap_or((rest, ""));
            let get = |k: &str| {
                stats.split(',').find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))?.parse().ok()
            };
            info.commands.push((name.to_string(), get("calls").unwrap_or(0), get("usec").unwrap_or(0)));
        } else if let Some(v) = line.strip_prefix("used_cpu_user:").or_else(|| line.strip_prefix("used_cpu_sys:")) {
            info.cpu_s += v.trim().parse::<f64>().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("used_memory:") {
            info.used_memory = v.trim().parse().unwrap_or(0);
        }
    }
    Ok(info)
}

/// What the checkpoint figures are read against.
pub struct Span {
    /// Wall time of the phase.
    pub elapsed: Duration,
    /// Events decided in the phase.
    pub events: u64,
    /// `enrich.checkpoint_interval_ms`.
    pub interval_ms: u64,
    /// Distinct entities among the events of one checkpoint interval (see
    /// [`super::feed::distinct_per_group`]), when known.
    pub touched: Option<f64>,
    /// Input partitions.
    pub partitions: i32,
}

/// Prints what happened between `a` and `b`.
pub fn print(a: &Snapshot, b: &Snapshot, span: &Span) {
    let secs = span.elapsed.as_secs_f64().max(1e-9);
    let events = span.events.max(1) as f64;
    let stages: Vec<String> = b
        .stages
        .iter()
        .zip(&a.stages)
        .filter(|((_, x), (_, y))| x > y)
        .map(|((name, x), (_, y))| format!("{name} {:.2}", (x - y) * 1e6 / events))
        .collect();
    println!("  worker µs/event by stage: {}", stages.join(", "));
    if b.dead > a.dead {
        println!("  DEAD-LETTERED: {} events (event times more than a day ahead? see BENCH_STEP_MS)", b.dead - a.dead);
    }
    if a.redis.is_none() && b.writes.0 == a.writes.0 {
        println!("  checkpoints: none (memory backend); entities held {} (was {})", b.entities, a.entities);
        return;
    }
    let written = b.written - a.written;
    let fields = b.fields - a.fields;
    let intervals = secs * 1000.0 / span.interval_ms.max(1) as f64;
    println!(
        "  checkpoints: {written} written ({:.1}/s; {:.2} per partition per interval of {} ms), {} fenced, {} failed, {} retried",
        written as f64 / secs,
        written as f64 / intervals / span.partitions.max(1) as f64,
        span.interval_ms,
        b.fenced - a.fenced,
        b.failed - a.failed,
        b.retried - a.retried
    );
    println!(
        "  checkpoint fields: {fields} ({:.1} per checkpoint, {:.0} per interval, {:.0}/s)",
        fields as f64 / written.max(1) as f64,
        fields as f64 / intervals,
        fields as f64 / secs
    );
    let (n, s) = (b.writes.0 - a.writes.0, b.writes.1 - a.writes.1);
    println!(
        "  acker Redis writes (one pipelined call per acknowledged batch, {:.2} checkpoints each on average): {n}, mean {:.3} ms, {}",
        written as f64 / n.max(1) as f64,
        s * 1e3 / n.max(1) as f64,
        bucket_quantiles(&a.write_buckets, &b.write_buckets, n)
    );
    if let Some(t) = span.touched {
        println!(
            "  entities touched per checkpoint interval: {t:.0} distinct cards in {:.0} events (≈{:.0} per partition); fields per touched entity {:.2}",
            events / intervals,
            t / span.partitions.max(1) as f64,
            fields as f64 / intervals / t.max(1.0)
        );
    }
    println!(
        "  state loads: {} found, {} new; window updates: {} applied, {} late; evicted: {} expired, {} bound; entities held {} (was {}); redelivered {}",
        b.found - a.found,
        b.new - a.new,
        b.applied - a.applied,
        b.late - a.late,
        b.evicted[0] - a.evicted[0],
        b.evicted[1] - a.evicted[1],
        b.entities,
        a.entities,
        b.redelivered - a.redelivered
    );
    if let (Some(ra), Some(rb)) = (&a.redis, &b.redis) {
        let cmds: Vec<String> = rb
            .commands
            .iter()
            .filter_map(|(name, calls, usec)| {
                let (c0, u0) = ra.commands.iter().find(|(n, _, _)| n == name).map_or((0, 0), |(_, c, u)| (*c, *u));
                let (c, u) = (calls - c0, usec - u0);
                (c > 0 && name != "info").then(|| format!("{name} {c} × {:.1} µs", u as f64 / c as f64))
            })
            .collect();
        println!(
            "  Redis: {}; redis-server CPU {:.2} s ({:.0}% of a core), used_memory {:.1} MiB",
            cmds.join(", "),
            rb.cpu_s - ra.cpu_s,
            100.0 * (rb.cpu_s - ra.cpu_s) / secs,
            rb.used_memory as f64 / (1 << 20) as f64
        );
    }
}

/// "p50 ≤ x ms, p99 ≤ y ms" from the histogram's buckets (upper bounds).
fn bucket_quantiles(a: &[(f64, u64)], b: &[(f64, u64)], total: u64) -> String {
    let counts: Vec<(f64, u64)> =
        b.iter().map(|(le, n)| (*le, n - a.iter().find(|(l, _)| l == le).map_or(0, |(_, m)| *m))).collect();
    let q = |q: f64| {
        let want = (q * total as f64).ceil() as u64;
        counts.iter().find(|(_, n)| *n >= want).map_or("> 2 s".to_string(), |(le, _)| format!("≤ {} ms", le * 1e3))
    };
    if total == 0 {
        return "no writes".into();
    }
    format!("p50 {}, p99 {}", q(0.5), q(0.99))
}
