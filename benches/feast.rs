//! Online-feature read cost per batch: verdict's own layout (`verdict:f:card:{id}`, read by
//! the window script) against Feast's Redis layout (binary entity key, murmur3 fields,
//! protobuf values, one `HMGET` per entity), for the same entities and feature values on one
//! redis-server started here. Each batch is `BENCH_BATCH` events of distinct entities (cache
//! off, so every batch reads Redis), `BENCH_FEATURES` features in two views; the two layouts
//! alternate batch by batch so both see the same machine load.
//!
//! `cargo bench --bench feast` (BENCH_BATCH, default 500; BENCH_FEATURES, default 8;
//! BENCH_BATCHES, default 400; BENCH_ENTITIES, default 50000)

use std::time::{Duration, Instant};

use verdict::enrich::config::EntityConfig;
use verdict::enrich::feast::{key, FeastSource, JoinKeyConfig, KeyType};
use verdict::enrich::{Backend, EnrichConfig, Enricher, EntityInput, Request};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A `feast.types.Value` holding a double; a `google.protobuf.Timestamp` of `s` seconds.
fn double(x: f64) -> Vec<u8> {
    [vec![0x29], x.to_le_bytes().to_vec()].concat()
}

fn timestamp(mut s: u64) -> Vec<u8> {
    let mut b = vec![0x08];
    while s >= 0x80 {
        b.push((s as u8) | 0x80);
        s >>= 7;
    }
    b.push(s as u8);
    b
}

fn entity(features: &[String], feast: bool) -> EntityConfig {
    EntityConfig {
        name: "card".into(),
        key: "card_id".into(),
        windows: Vec::new(),
        value_field: None,
        distinct_field: None,
        features: features.to_vec(),
        feast: feast.then(|| FeastSource {
            project: "bench".into(),
            join_keys: vec![JoinKeyConfig { name: "card_id".into(), field: String::new(), kind: KeyType::Int64 }],
            entity_key_serialization_version: 3,
            views: Vec::new(),
        }),
        ..EntityConfig::default()
    }
}

fn main() {
    let (batch, nf, batches, entities) =
        (env("BENCH_BATCH", 500), env("BENCH_FEATURES", 8), env("BENCH_BATCHES", 400), env("BENCH_ENTITIES", 50_000));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let url = format!("redis://127.0.0.1:{port}/");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = (0..100)
        .find_map(|_| client.get_connection().ok().or_else(|| (std::thread::sleep(Duration::from_millis(50)), None).1))
        .expect("redis-server up");

    let views = ["stats", "profile"];
    let feast_names: Vec<String> = (0..nf).map(|i| format!("{}:f{i}", views[i % 2])).collect();
    let native_names: Vec<String> = (0..nf).map(|i| format!("f{i}")).collect();
    let now_s = verdict::core::clock::wall_clock_ms() as u64 / 1000;
    let join = [key::JoinKey { name: "card_id".into(), kind: KeyType::Int64, part: 0 }];
    for chunk in (0..entities).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let id = (1_000_000 + i).to_string();
            let mut native = redis::cmd("HSET");
            native.arg(format!("verdict:f:card:{{{id}}}")).arg("_ts").arg(now_s * 1000);
            let mut feast = redis::cmd("HSET");
            feast.arg(key::redis_key("bench", 3, &join, &[&id]).unwrap());
            for v in views {
                feast.arg(format!("_ts:{v}")).arg(timestamp(now_s));
            }
            for f in 0..nf {
                let x = i as f64 + f as f64 / 10.0;
                native.arg(&native_names[f]).arg(x);
                feast.arg(key::feature_field(&feast_names[f])).arg(double(x));
            }
            pipe.add_command(native).ignore().add_command(feast).ignore();
        }
        pipe.query::<()>(&mut conn).unwrap();
    }

    let cfg = |feast: bool| EnrichConfig {
        backend: Backend::Redis,
        redis_url: url.clone(),
        cache_capacity: 0,
        entities: vec![entity(if feast { &feast_names } else { &native_names }, feast)],
        ..EnrichConfig::default()
    };
    let mut readers = [Enricher::new(&cfg(false)).unwrap(), Enricher::new(&cfg(true)).unwrap()];
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut out = Vec::new();
    for b in 0..batches + 20 {
        let inputs: Vec<[EntityInput; 1]> = (0..batch)
            .map(|k| {
                let id = 1_000_000 + (b * batch + k) * 7919 % entities;
                [EntityInput { id: Some(id.to_string().into()), ..EntityInput::default() }]
            })
            .collect();
        let reqs: Vec<Request<'_>> = inputs
            .iter()
            .enumerate()
            .map(|(i, e)| Request { fence_key: "t/0", offset: i as i64, time_ms: 0, entities: e })
            .collect();
        for (which, r) in readers.iter_mut().enumerate() {
            let t = Instant::now();
            r.enrich(&reqs, &mut out).unwrap();
            if b >= 20 {
                times[which].push(t.elapsed());
            }
            assert!(out.iter().filter(|v| v.is_some()).count() >= batch * nf, "every feature read");
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("batch {batch} entities x {nf} features, {batches} batches per layout, load average {}", load.trim());
    let mut medians = [0.0; 2];
    for (which, name) in ["native (script)", "feast (HMGET)"].iter().enumerate() {
        let t = &mut times[which];
        t.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let p = |q: f64| ms(t[((t.len() - 1) as f64 * q) as usize]);
        medians[which] = p(0.5);
        println!(
            "{name:16} per batch: p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  ({:.2} us per entity at p50)",
            p(0.5),
            p(0.9),
            p(0.99),
            p(0.5) * 1000.0 / batch as f64
        );
    }
    println!("feast / native at p50: {:.2}", medians[1] / medians[0]);
}
