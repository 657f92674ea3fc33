//! The report as one self-contained HTML page (inline CSS and SVG, no scripts, no fonts),
//! rendered from the JSON report so that both always show the same numbers. The per-side
//! tables and charts have a column or a line per side (the baseline and every candidate);
//! then a section per candidate holds its comparison with the baseline (flip matrix, rules,
//! top flips), linked from the top of the page.

use std::fmt::Write;

use serde_json::Value;

use super::svg::{esc, histogram, line_chart, Series};

/// Colours by side: baseline blue, the first candidate orange, then the others.
const COLORS: [&str; 8] = ["#1f77b4", "#e66101", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"];

/// A side's colour (cycling past the palette).
fn color(i: usize) -> &'static str {
    COLORS[i % COLORS.len()]
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}h3{font-size:15px;margin-top:18px}\
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f3f3f3}td.l,th.l{text-align:left}.flip{background:#fde7d9}.same{background:#eef5ea}\
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #ddd}\
.title{font-size:13px;font-weight:bold}.tick{font-size:9px;fill:#555}.axis{font-size:10px}.legend{font-size:10px}\
pre{white-space:pre-wrap;word-break:break-all;font-size:11px;margin:0;max-width:520px}.note{color:#666;font-size:12px}";

/// A number for a table cell.
fn num(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.to_string(),
            (_, Some(i), _) => i.to_string(),
            (_, _, Some(f)) if f.abs() >= 100.0 => format!("{f:.0}"),
            (_, _, Some(f)) => format!("{f:.4}"),
            _ => n.to_string(),
        },
        Value::String(s) => esc(s),
        other => esc(&other.to_string()),
    }
}

fn pct(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |f| format!("{:.2}%", f * 100.0))
}

/// The page.
pub fn render(r: &Value) -> String {
    let mut h = String::new();
    let sum = &r["summary"];
    let prov = &r["provenance"];
    let sides: Vec<&Value> = r["sides"].as_array().map_or_else(Vec::new, |a| a.iter().collect());
    let cands: Vec<&Value> = r["candidates"].as_array().map_or_else(Vec::new, |a| a.iter().collect());
    let model =
        |p: &Value| format!("{} {}", p["model_name"].as_str().unwrap_or(""), p["model_version"].as_str().unwrap_or(""));
    let cand_models: Vec<String> =
        prov["candidates"].as_array().map_or_else(Vec::new, |a| a.iter().map(|c| model(&c["provenance"])).collect());
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>verdict backtest</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        h,
        "<h1>verdict backtest: {} → {}</h1><p>{} events ({} decided, {} dead-lettered, {} labelled) from <code>{}</code>. \
         {:.0} events/s.</p>",
        esc(&model(&prov["baseline"])),
        esc(&cand_models.join(", ")),
        num(&sum["events"]),
        num(&sum["decided"]),
        num(&sum["dead_lettered"]),
        num(&sum["labelled"]),
        esc(prov["events_file"].as_str().unwrap_or("")),
        sum["events_per_s"].as_f64().unwrap_or(0.0)
    );
    h.push_str("<ul>");
    for (k, c) in cands.iter().enumerate() {
        let _ = write!(
            h,
            "<li><a href=\"#candidate-{}\">{}</a> ({}): <b>{} decisions flip</b> (value {})</li>",
            k + 1,
            esc(c["name"].as_str().unwrap_or("")),
            esc(cand_models.get(k).map_or("", String::as_str)),
            num(&c["flipped"]),
            num(&c["flipped_amount"])
        );
    }
    h.push_str("</ul>");
    let actions: Vec<&str> =
        r["actions"].as_array().map_or(Vec::new(), |a| a.iter().filter_map(Value::as_str).collect());
    side_table(&mut h, &sides, &actions);
    charts(&mut h, &sides);
    cost_table(&mut h, &sides, prov);
    for (k, c) in cands.iter().enumerate() {
        let name = esc(c["name"].as_str().unwrap_or(""));
        let _ = write!(h, "<h2 id=\"candidate-{}\">Candidate {name} against the baseline</h2>", k + 1);
        flip_matrix(&mut h, &c["flips"]);
        rules_table(&mut h, &c["rules"]);
        flips_table(&mut h, &c["top_flips"]);
    }
    let _ = write!(
        h,
        "<h2>Provenance</h2><pre>{}</pre></body></html>",
        esc(&serde_json::to_string_pretty(prov).unwrap_or_default())
    );
    h
}

fn flip_matrix(h: &mut String, f: &Value) {
    h.push_str("<h3>Decision flips (baseline rows × candidate columns): events / value</h3><table><tr><th class=\"l\">baseline \\ candidate</th>");
    let actions: Vec<&str> =
        f["actions"].as_array().map_or(Vec::new(), |a| a.iter().filter_map(Value::as_str).collect());
    for a in &actions {
        let _ = write!(h, "<th>{}</th>", esc(a));
    }
    h.push_str("</tr>");
    for (i, a) in actions.iter().enumerate() {
        let _ = write!(h, "<tr><th class=\"l\">{}</th>", esc(a));
        for j in 0..actions.len() {
            let class = if i == j { "same" } else { "flip" };
            let _ = write!(h, "<td class=\"{class}\">{} / {}</td>", num(&f["counts"][i][j]), num(&f["amounts"][i][j]));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

/// A table's header row: the first column's title, then one column per side.
fn side_header(h: &mut String, first: &str, sides: &[&Value]) {
    let _ = write!(h, "<table><tr><th class=\"l\">{first}</th>");
    for s in sides {
        let _ = write!(h, "<th>{}</th>", esc(s["name"].as_str().unwrap_or("")));
    }
    h.push_str("</tr>");
}

/// Each side's figures; `actions` are the vocabulary's names, least severe first.
fn side_table(h: &mut String, sides: &[&Value], actions: &[&str]) {
    h.push_str("<h2>At each side's thresholds</h2>");
    side_header(h, "figure", sides);
    let counts: Vec<(String, String)> = actions.iter().map(|a| (esc(a), format!("/actions/{a}"))).collect();
    let trio = actions == ["approve", "review", "decline"];
    let caught =
        if trio { "review + decline".to_string() } else { format!("not {}", actions.first().map_or("", |a| a)) };
    let (precision, recall) = (format!("precision ({caught})"), format!("recall ({caught})"));
    let mut rows: Vec<(&str, &str, bool)> = counts.iter().map(|(l, p)| (l.as_str(), p.as_str(), false)).collect();
    rows.extend([
        ("review rate", "/review_rate", true),
        ("decline rate", "/decline_rate", true),
        (precision.as_str(), "/precision", true),
        (recall.as_str(), "/recall", true),
        ("fraud value caught", "/fraud_amount_caught", false),
        ("fraud value in total", "/fraud_amount_total", false),
        ("Brier score", "/brier", false),
        ("expected cost per 1,000 events", "/cost/per_1000_events", false),
    ]);
    for (label, ptr, is_pct) in rows {
        let _ = write!(h, "<tr><td class=\"l\">{label}</td>");
        for s in sides {
            let v = s.pointer(ptr).unwrap_or(&Value::Null);
            let _ = write!(h, "<td>{}</td>", if is_pct { pct(v) } else { num(v) });
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

/// Histogram series: per side, its name, colour and bins.
fn series<'a>(names: &[&'a str], bins: &'a [Vec<u64>]) -> Vec<(&'a str, &'static str, &'a [u64])> {
    bins.iter().enumerate().map(|(i, b)| (names[i], color(i), b.as_slice())).collect()
}

fn charts(h: &mut String, sides: &[&Value]) {
    h.push_str("<h2>Charts</h2><div class=\"charts\">");
    let bins = |s: &Value, class: &str| -> Vec<u64> {
        s["histogram"][class].as_array().map_or_else(Vec::new, |a| a.iter().map(|v| v.as_u64().unwrap_or(0)).collect())
    };
    let all: Vec<Vec<u64>> = sides
        .iter()
        .map(|s| {
            let (l, f, u) = (bins(s, "legit"), bins(s, "fraud"), bins(s, "unlabelled"));
            (0..l.len()).map(|i| l[i] + f[i] + u[i]).collect()
        })
        .collect();
    let names: Vec<&str> = sides.iter().map(|s| s["name"].as_str().unwrap_or("")).collect();
    h.push_str(&histogram("Score distribution, all events", &series(&names, &all), true));
    let labelled = sides[0]["brier"].is_number();
    if labelled {
        for (class, title) in [("legit", "Scores of legitimate events"), ("fraud", "Scores of fraud events")] {
            let by_side: Vec<Vec<u64>> = sides.iter().map(|s| bins(s, class)).collect();
            h.push_str(&histogram(title, &series(&names, &by_side), true));
        }
        let curve = |s: &Value, x: &str, y: &str| -> Vec<(f64, f64)> {
            s["curve"].as_array().map_or_else(Vec::new, |a| {
                a.iter().map(|p| (p[x].as_f64().unwrap_or(f64::NAN), p[y].as_f64().unwrap_or(f64::NAN))).collect()
            })
        };
        let lines = |x: &str, y: &str| -> Vec<Series<'_>> {
            (0..sides.len())
                .map(|i| Series { name: names[i], color: color(i), points: curve(sides[i], x, y), dashed: i > 0 })
                .collect()
        };
        h.push_str(&line_chart(
            "Precision vs recall",
            ("recall", "precision"),
            &lines("recall", "precision"),
            (0.0, 1.0),
            (0.0, 1.0),
            false,
        ));
        let rr = lines("flagged_rate", "recall");
        h.push_str(&line_chart(
            "Recall vs review rate (score ≥ threshold)",
            ("share of events flagged", "recall"),
            &rr,
            (0.0, 1.0),
            (0.0, 1.0),
            false,
        ));
        let rel: Vec<Series<'_>> = (0..sides.len())
            .map(|i| Series {
                name: names[i],
                color: color(i),
                points: sides[i]["reliability"].as_array().map_or_else(Vec::new, |a| {
                    a.iter().filter_map(|p| Some((p["mean_score"].as_f64()?, p["fraud_rate"].as_f64()?))).collect()
                }),
                dashed: i > 0,
            })
            .collect();
        h.push_str(&line_chart("Reliability", ("mean score", "fraud rate"), &rel, (0.0, 1.0), (0.0, 1.0), true));
    } else {
        h.push_str("<p class=\"note\">No labels: precision, recall, curves, calibration and costs need labels.</p>");
    }
    h.push_str("</div>");
}

fn cost_table(h: &mut String, sides: &[&Value], prov: &Value) {
    if !sides[0]["cost"].is_object() {
        return;
    }
    let c = &prov["costs"];
    let _ = write!(
        h,
        "<h2>Costs</h2><p class=\"note\">Unit costs: missed fraud = value × {}, false decline = {}, review = {} per case. \
         The best threshold pair is searched over score bands alone (rules not replayed), review share within capacity.</p>",
        num(&c["missed_fraud_factor"]),
        num(&c["false_decline"]),
        num(&c["review"])
    );
    side_header(h, "figure", sides);
    let rows = [
        ("missed fraud", "/cost/missed_fraud"),
        ("false declines", "/cost/false_declines"),
        ("reviews", "/cost/reviews"),
        ("total", "/cost/total"),
        ("per 1,000 events", "/cost/per_1000_events"),
        ("best review_at", "/best_thresholds/review_at"),
        ("best decline_at", "/best_thresholds/decline_at"),
        ("best cost per 1,000 events", "/best_thresholds/cost_per_1000_events"),
        ("review share at best", "/best_thresholds/review_share"),
        ("review capacity (share)", "/best_thresholds/capacity_share"),
    ];
    for (label, ptr) in rows {
        let _ = write!(h, "<tr><td class=\"l\">{label}</td>");
        for s in sides {
            let _ = write!(h, "<td>{}</td>", num(s.pointer(ptr).unwrap_or(&Value::Null)));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

fn rules_table(h: &mut String, rules: &Value) {
    h.push_str("<h3>Rules</h3>");
    let Some(rows) = rules.as_array().filter(|r| !r.is_empty()) else {
        h.push_str("<p class=\"note\">No rule fired on either side.</p>");
        return;
    };
    h.push_str("<table><tr><th class=\"l\">rule</th><th>baseline hits</th><th>candidate hits</th><th>change</th><th>hits on flipped events</th></tr>");
    for r in rows {
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            num(&r["id"]),
            num(&r["baseline"]),
            num(&r["candidate"]),
            num(&r["change"]),
            num(&r["on_flipped"])
        );
    }
    h.push_str("</table>");
}

fn flips_table(h: &mut String, flips: &Value) {
    let rows = flips.as_array().map_or(&[][..], |a| a.as_slice());
    let _ = write!(h, "<h3>The {} flipped events with the largest score change</h3>", rows.len());
    if rows.is_empty() {
        return;
    }
    h.push_str("<table><tr><th>record</th><th class=\"l\">event</th><th>label</th><th>Δ score</th><th class=\"l\">baseline</th><th class=\"l\">candidate</th><th class=\"l\">input</th></tr>");
    let side = |s: &Value| {
        let rules: Vec<&str> =
            s["rules"].as_array().map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_str).collect());
        format!(
            "{} ({}) <br>{}{}",
            num(&s["action"]),
            num(&s["score"]),
            num(&s["reason"]),
            if rules.is_empty() { String::new() } else { format!("<br>rules: {}", esc(&rules.join(", "))) }
        )
    };
    for f in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\"><pre>{}</pre></td></tr>",
            num(&f["line"]),
            num(&f["event_id"]),
            num(&f["label"]),
            num(&f["score_change"]),
            side(&f["sides"][0]),
            side(&f["sides"][1]),
            esc(f["input"].as_str().unwrap_or(""))
        );
    }
    h.push_str("</table>");
}
