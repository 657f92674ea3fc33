//! Rule evaluation: a 50-rule set (comparisons on event fields, window aggregates and
//! features, list membership, string predicates, arithmetic) over 10,000 generated events,
//! one core. Target: at least 1M events/s.
//!
//! `cargo bench --bench rules`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verdict::rules::expr::{FieldValue, Scope};
use verdict::rules::{Action, RuleSet, RulesOutcome};

const ENRICHED: &[&str] = &[
    "window:card.10m.count",
    "window:card.10m.sum",
    "window:card.10m.distinct",
    "window:card.1h.count",
    "window:card.24h.avg",
    "window:card.since_last_s",
    "feature:card.chargebacks_90d",
];

/// Fifty rules of the kinds fraud teams write, with varied thresholds.
fn rules_file() -> String {
    let mut s = String::from(
        "[lists.deny]\nvalues = [\"card-019999\", \"card-004242\", \"card-000077\"]\n\
         [lists.countries]\nvalues = [\"BR\", \"NG\", \"RU\"]\n",
    );
    let kinds = [
        "event.amount > {t}.0",
        "event.amount > {t}.0 && event.cross_border",
        "windows.card['10m'].count >= {k}.0 && event.amount < 5.0",
        "windows.card['10m'].distinct > {k}.0",
        "windows.card['1h'].count > {k}.0 && score > 0.3",
        "windows.card['24h'].avg != null && event.amount > windows.card['24h'].avg * {k}.0",
        "windows.card.since_last_s != null && windows.card.since_last_s < {k}.0 && !event.card_present",
        "event.country in lists.countries && score > 0.{k}",
        "event.card_id in lists.deny",
        "event.merchant_category == 'electronics' && event.amount > {t}.0",
        "event.channel == 'ecom' && event.merchant_id.startsWith('m-00') && score > 0.{k}",
        "features.card.chargebacks_90d != null && features.card.chargebacks_90d > {k}.0",
        "event.amount * {k}.0 > 5000.0 || score > 0.9{k}",
    ];
    for i in 0..50 {
        let cond =
            kinds[i % kinds.len()].replace("{t}", &(200 + 37 * i).to_string()).replace("{k}", &(2 + i % 7).to_string());
        let action = ["review", "decline", "approve"][i % 3];
        let mode = if i % 5 == 4 { "monitor" } else { "enforce" };
        s.push_str(&format!(
            "[[rules]]\nid = \"r{i}\"\ncondition = \"{cond}\"\naction = \"{action}\"\nreason = \"reason_{i}\"\npriority = {}\nmode = \"{mode}\"\n",
            i % 4
        ));
    }
    s
}

fn bench(c: &mut Criterion) {
    let enriched: Vec<String> = ENRICHED.iter().map(|s| s.to_string()).collect();
    let set = RuleSet::parse(rules_file().as_bytes(), std::path::Path::new("."), &enriched, &Default::default())
        .expect("valid rules");
    assert_eq!(set.rules.len(), 50);
    let mut g = verdict::demo::Generator::new(3, 20_000, 1_764_000_000_000);
    let events: Vec<(Vec<FieldValue>, Vec<Option<f64>>, f64)> = (0..10_000)
        .map(|i| {
            let tx: serde_json::Value = serde_json::from_slice(&g.next_event().to_json()).unwrap();
            let fields = set
                .event_paths()
                .iter()
                .map(|p| match &tx[p.as_str()] {
                    serde_json::Value::Number(n) => FieldValue::Num(n.as_f64().unwrap()),
                    serde_json::Value::String(s) => FieldValue::Str(s.clone()),
                    serde_json::Value::Bool(b) => FieldValue::Bool(*b),
                    _ => FieldValue::Null,
                })
                .collect();
            let w = (i % 13) as f64;
            let values = vec![Some(w), Some(w * 40.0), Some(w / 2.0), Some(w * 3.0), Some(55.0), Some(30.0 + w), None];
            (fields, values, (i % 100) as f64 / 100.0)
        })
        .collect();
    let mut out = RulesOutcome::default();
    let mut fired = vec![0u64; set.rules.len()];
    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("50 rules x 10k events", |b| {
        b.iter(|| {
            let mut declined = 0u32;
            for (fields, values, score) in &events {
                let scope = Scope { score: *score, fields, enriched: values, lists: &set.initial_lists };
                set.decide(Action::APPROVE, &scope, &mut out, &mut fired);
                declined += u32::from(out.action == Action::DECLINE);
            }
            black_box(declined)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
