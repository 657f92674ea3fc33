//! The report's numbers, from what the run kept: one JSON document that the HTML page renders
//! and that scripts can diff. Rates are over decided events; label-based figures over the
//! labelled ones (`null` without labels).
//!
//! `sides` holds the baseline then each candidate; `candidates` holds, per candidate, its
//! comparison with the baseline (flip matrix, rule hits, top flips). The top-level `flips`,
//! `rules`, `top_flips`, `summary.flipped` and `provenance.candidate` are the first
//! candidate's, as in a one-candidate report.

use serde_json::{json, Value};

use super::metrics::{Accumulator, SideStats, BINS};
use super::run::Outcomes;
use super::Options;
use crate::core::decision::Actions;

/// The whole report. `actions` lists the vocabulary in matrix order (every side decides with
/// the same one).
pub fn build(out: &Outcomes, opts: &Options) -> Value {
    let acc = &out.acc;
    let vocabulary = &out.sides[0].actions;
    let names = vocabulary.names();
    let decided: u64 = acc.sides[0].actions.iter().flatten().sum();
    let labelled: u64 = (0..2).map(|c| acc.sides[0].actions[c].iter().sum::<u64>()).sum();
    let span_h = acc.range.map_or(0.0, |[a, b]| (b.1 - a.1).max(0) as f64 / 3.6e6);
    let cap_share = capacity_share(opts, span_h, labelled);
    let sides: Vec<Value> = out
        .sides
        .iter()
        .zip(&acc.sides)
        .map(|(s, st)| side(&s.name, st, (decided, labelled), opts, cap_share, vocabulary))
        .collect();
    let candidates: Vec<Value> = acc
        .comparisons
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let (flipped, flipped_amount) = c.flipped();
            json!({
                "name": out.sides[k + 1].name,
                "side": k + 1,
                "flipped": flipped,
                "flipped_amount": flipped_amount,
                "flips": {"actions": names, "counts": c.flips, "amounts": c.flip_amount},
                "rules": rules(acc, k),
                "top_flips": c.top_flips(),
            })
        })
        .collect();
    let first = candidates.first().cloned().unwrap_or(Value::Null);
    let time = |ms: i64| jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default();
    json!({
        "actions": names,
        "summary": {
            "events": acc.events,
            "decided": decided,
            "dead_lettered": acc.dead.values().sum::<u64>(),
            "dead_letter_reasons": acc.dead,
            "labelled": labelled,
            "flipped": first["flipped"],
            "flipped_amount": first["flipped_amount"],
            "candidates": candidates.len(),
            "seconds": out.seconds,
            "events_per_s": acc.events as f64 / out.seconds.max(1e-9),
        },
        "provenance": {
            "verdict_version": env!("CARGO_PKG_VERSION"),
            "events_file": opts.events.to_string(),
            "warm_up": opts.warm.as_ref().map(ToString::to_string),
            "partitions": out.bounds.as_ref().map(|b| b.iter().map(|&(p, from, to)| serde_json::json!({
                "partition": p, "from_offset": from, "to_offset": to,
            })).collect::<Vec<_>>()),
            "first_record": acc.range.map(|r| r[0].0),
            "last_record": acc.range.map(|r| r[1].0),
            "first_event_time": acc.range.map(|r| time(r[0].1)),
            "last_event_time": acc.range.map(|r| time(r[1].1)),
            "labels": opts.labels.as_ref().map_or_else(|| format!("event field '{}'", opts.label_field), |l| l.to_string()),
            "value_field": opts.value_field,
            "costs": opts.costs,
            "baseline": out.sides[0].provenance,
            "candidate": out.sides.get(1).map(|s| &s.provenance),
            "candidates": out.sides[1..].iter().map(|s| json!({"name": s.name, "provenance": s.provenance})).collect::<Vec<_>>(),
        },
        "flips": first["flips"],
        "sides": sides,
        "rules": first["rules"],
        "top_flips": first["top_flips"],
        "candidates": candidates,
    })
}

/// Review capacity as a share of labelled events (1 = unlimited).
fn capacity_share(opts: &Options, span_h: f64, labelled: u64) -> f64 {
    let mut share: f64 = opts.costs.review_capacity_share.unwrap_or(1.0);
    if let (Some(per_h), true) = (opts.costs.review_capacity_per_hour, labelled > 0) {
        share = share.min(per_h * span_h / labelled as f64);
    }
    share.clamp(0.0, 1.0)
}

fn ratio(a: f64, b: f64) -> Value {
    if b > 0.0 {
        json!(a / b)
    } else {
        Value::Null
    }
}

/// One side's figures. Precision and recall count an event as caught when its action is not
/// the vocabulary's first (least severe) one; the cost model and the threshold search are
/// the approve / review / decline ones (null with named actions).
fn side(
    name: &str,
    s: &SideStats,
    (decided, labelled): (u64, u64),
    opts: &Options,
    cap_share: f64,
    actions: &Actions,
) -> Value {
    let n = actions.len();
    let totals: Vec<u64> = (0..n).map(|a| s.actions.iter().map(|c| c[a]).sum()).collect();
    let amounts: Vec<f64> = (0..n).map(|a| s.action_amount.iter().map(|c| c[a]).sum()).collect();
    let by_name = |v: Vec<Value>| -> serde_json::Map<String, Value> {
        actions.names().into_iter().map(str::to_string).zip(v).collect()
    };
    let d = decided as f64;
    // (events, value) of label class `c` flagged: any action but the least severe.
    let flagged = |c: usize| -> (f64, f64) {
        ((1..n).map(|a| s.actions[c][a] as f64).sum(), (1..n).map(|a| s.action_amount[c][a]).sum())
    };
    let fraud = s.actions[1].iter().sum::<u64>() as f64;
    let (caught, caught_amount) = flagged(1);
    let flagged_labelled = flagged(0).0 + caught;
    let fraud_amount: f64 = s.action_amount[1].iter().sum();
    let reviewed: u64 = actions.all().iter().filter(|a| a.is_review()).map(|a| totals[a.index()]).sum();
    let labels = labelled > 0;
    let trio = actions.is_fraud();
    let (ap, rv, dc) = (0, 1, 2);
    let cost = if labels && trio {
        let c = &opts.costs;
        let missed = s.action_amount[1][ap] * c.missed_fraud_factor;
        let false_declines = s.actions[0][dc] as f64 * c.false_decline;
        let reviews = (s.actions[0][rv] + s.actions[1][rv]) as f64 * c.review;
        let per_1000 = |x: f64| ratio(x * 1000.0, labelled as f64);
        json!({
            "missed_fraud": missed,
            "false_declines": false_declines,
            "reviews": reviews,
            "total": missed + false_declines + reviews,
            "per_1000_events": per_1000(missed + false_declines + reviews),
        })
    } else {
        Value::Null
    };
    json!({
        "name": name,
        "actions": by_name(totals.iter().map(|t| json!(t)).collect()),
        "action_amounts": by_name(amounts.iter().map(|a| json!(a)).collect()),
        "review_rate": ratio(reviewed as f64, d),
        "decline_rate": if trio { ratio(totals[dc] as f64, d) } else { Value::Null },
        "precision": if labels { ratio(caught, flagged_labelled) } else { Value::Null },
        "recall": if labels { ratio(caught, fraud) } else { Value::Null },
        "fraud_amount_caught": if labels { json!(caught_amount) } else { Value::Null },
        "fraud_amount_total": if labels { json!(fraud_amount) } else { Value::Null },
        "brier": if labels { ratio(s.brier_sum, labelled as f64) } else { Value::Null },
        "cost": cost,
        "best_thresholds": if labels && trio { best_thresholds(s, labelled, opts, cap_share) } else { Value::Null },
        "histogram": {"bins": BINS, "legit": s.hist[0].to_vec(), "fraud": s.hist[1].to_vec(), "unlabelled": s.hist[2].to_vec()},
        "curve": if labels { curve(s) } else { json!([]) },
        "reliability": s.reliability.iter().map(|&(n, sum, pos)| json!({
            "events": n, "mean_score": ratio(sum, n as f64), "fraud_rate": ratio(pos as f64, n as f64),
        })).collect::<Vec<_>>(),
        "rule_hits": s.rule_hits.iter().map(|(k, v)| (k.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
    })
}

/// Prefix sums over the score bins of labelled events: (legit count, fraud count, fraud
/// value), entry `i` summing bins below `i`.
fn prefix(s: &SideStats) -> Vec<(u64, u64, f64)> {
    let mut out = vec![(0, 0, 0.0)];
    for b in 0..BINS {
        let &(l, f, a) = out.last().expect("starts with zero");
        out.push((l + s.hist[0][b], f + s.hist[1][b], a + s.amount_hist[1][b]));
    }
    out
}

/// Precision, recall and flagged share when everything scoring at least each bin edge is
/// flagged (the PR and "recall vs review rate" curves).
fn curve(s: &SideStats) -> Value {
    let p = prefix(s);
    let (lt, ft, _) = p[BINS];
    let n = (lt + ft) as f64;
    (0..=BINS)
        .map(|i| {
            let flagged = (lt - p[i].0 + ft - p[i].1) as f64;
            let tp = (ft - p[i].1) as f64;
            json!({
                "threshold": i as f64 / BINS as f64,
                "precision": ratio(tp, flagged),
                "recall": ratio(tp, ft as f64),
                "flagged_rate": ratio(flagged, n),
            })
        })
        .collect()
}

/// The (review, decline) thresholds on the score bin edges with the least expected cost, with
/// at most `cap_share` of the labelled events in review. Bands only: rules are not replayed
/// at other thresholds.
fn best_thresholds(s: &SideStats, labelled: u64, opts: &Options, cap_share: f64) -> Value {
    let p = prefix(s);
    let c = &opts.costs;
    let n = labelled as f64;
    let all = |i: usize| (p[i].0 + p[i].1) as f64;
    let mut best: Option<(f64, usize, usize, f64)> = None;
    for i in 0..=BINS {
        for j in i..=BINS {
            let review = all(j) - all(i);
            if review > cap_share * n + 1e-9 {
                continue;
            }
            let cost =
                p[i].2 * c.missed_fraud_factor + (p[BINS].0 - p[j].0) as f64 * c.false_decline + review * c.review;
            if best.is_none_or(|b| cost < b.0) {
                best = Some((cost, i, j, review));
            }
        }
    }
    match best {
        Some((cost, i, j, review)) => json!({
            "review_at": i as f64 / BINS as f64,
            "decline_at": j as f64 / BINS as f64,
            "cost_per_1000_events": cost * 1000.0 / n,
            "review_share": review / n,
            "capacity_share": cap_share,
        }),
        None => Value::Null,
    }
}

/// Per rule id: hits on the baseline and on candidate `k`, the change, and hits on the
/// events candidate `k` flipped; most on flipped first.
fn rules(acc: &Accumulator, k: usize) -> Value {
    let (base, cand, flipped) = (&acc.sides[0], &acc.sides[k + 1], &acc.comparisons[k].flipped_rules);
    let mut ids: Vec<&std::sync::Arc<str>> = base.rule_hits.keys().chain(cand.rule_hits.keys()).collect();
    ids.extend(flipped.keys());
    ids.sort();
    ids.dedup();
    let hits = |s: &SideStats, id: &str| s.rule_hits.get(id).copied().unwrap_or(0);
    let mut rows: Vec<(u64, Value)> = ids
        .into_iter()
        .map(|id| {
            let (b, c) = (hits(base, id), hits(cand, id));
            let on_flipped = flipped.get(&**id).copied().unwrap_or(0);
            (on_flipped, json!({"id": &**id, "baseline": b, "candidate": c, "change": c as i64 - b as i64, "on_flipped": on_flipped}))
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    Value::Array(rows.into_iter().map(|r| r.1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::Costs;

    fn opts() -> Options {
        Options {
            events: crate::backtest::Events::File("events.jsonl".into()),
            warm: None,
            labels: None,
            label_field: "label".into(),
            value_field: "amount".into(),
            rules: None,
            top_n: 10,
            costs: Costs {
                missed_fraud_factor: 1.0,
                false_decline: 5.0,
                review: 2.0,
                review_capacity_share: None,
                review_capacity_per_hour: None,
            },
        }
    }

    /// 100 legitimate events at 0.10, 10 frauds of value 100 at 0.80, 50 legitimate at 0.85.
    fn stats() -> SideStats {
        let mut s = SideStats::default();
        s.hist[0][10] = 100;
        s.hist[1][80] = 10;
        s.amount_hist[1][80] = 1000.0;
        s.hist[0][85] = 50;
        s
    }

    #[test]
    fn cheapest_thresholds_review_what_declining_would_cost_more() {
        let best = best_thresholds(&stats(), 160, &opts(), 1.0);
        // Review the frauds and the 50 at 0.85 (60 × 2), decline nothing: 120 per 160 events.
        assert_eq!(best["review_at"], 0.11);
        assert_eq!(best["decline_at"], 0.86);
        assert_eq!(best["cost_per_1000_events"], 120.0 * 1000.0 / 160.0);
        assert_eq!(best["review_share"], 60.0 / 160.0);
    }

    #[test]
    fn review_capacity_moves_the_cheapest_thresholds_to_declining() {
        let best = best_thresholds(&stats(), 160, &opts(), 0.1);
        // 16 cases of capacity: reviewing 60 is out; declining from 0.11 costs 50 × 5.
        assert_eq!(best["review_at"], 0.11);
        assert_eq!(best["decline_at"], 0.11);
        assert_eq!(best["cost_per_1000_events"], 250.0 * 1000.0 / 160.0);
        assert_eq!(best["review_share"], 0.0);
    }

    #[test]
    fn curve_flags_everything_at_zero_and_nothing_past_the_top_score() {
        let c = curve(&stats());
        assert_eq!(c[0]["recall"], 1.0);
        assert_eq!(c[0]["flagged_rate"], 1.0);
        assert_eq!(c[81]["recall"], 0.0);
        assert_eq!(c[81]["flagged_rate"], 50.0 / 160.0);
        assert_eq!(c[BINS]["precision"], Value::Null);
    }
}
