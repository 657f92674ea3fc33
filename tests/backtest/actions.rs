//! A backtest with named actions (`config/clickstream.toml`: serve / explore / editorial):
//! the report's action counts and flip matrix equal a direct computation from the decisions
//! `verdict check-rules` makes on each side, the fraud-only figures are null, and a candidate
//! that names other actions is refused with both vocabularies in the message.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::verdict;

const ACTIONS: [&str; 3] = ["serve", "explore", "editorial"];

/// Each event's action as `check-rules` decides it with the clickstream config (and `layer`).
fn actions(events: &Path, layer: Option<&Path>) -> Vec<usize> {
    let mut args = vec!["check-rules", "config/clickstream-rules.toml", "-c", "config/clickstream.toml"];
    if let Some(l) = layer {
        args.extend(["-c", l.to_str().unwrap()]);
    }
    args.extend(["--events", events.to_str().unwrap()]);
    String::from_utf8(verdict(&args).stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            ACTIONS.iter().position(|a| v["action"] == *a).unwrap_or_else(|| panic!("{v}"))
        })
        .collect()
}

/// The clickstream actions with `serve` from `serve_from`.
fn layer(dir: &Path, serve_from: f64) -> std::path::PathBuf {
    let path = dir.join(format!("serve-{serve_from}.toml"));
    std::fs::write(
        &path,
        format!(
            "[decide]\nfallback_action = \"explore\"\n[[decide.actions]]\nname = \"serve\"\nband_from = {serve_from}\n\
             [[decide.actions]]\nname = \"explore\"\nband_from = 0.0\n[[decide.actions]]\nname = \"editorial\"\n\
             review = true\nreview_priority = 10\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_named_vocabulary_backtests_with_its_own_actions_and_flip_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("clicks.jsonl");
    std::fs::write(
        &events,
        verdict(&["generate", "--scenario", "clickstream", "--count", "12000", "--seed", "11"]).stdout,
    )
    .unwrap();
    // Serving from 0.66 instead of 0.655: page views whose best score is in [0.655, 0.66) explore.
    let cand = layer(dir.path(), 0.66);
    let out = dir.path().join("report");
    verdict(&[
        "backtest",
        "--model",
        "models/clickstream",
        "-c",
        "config/clickstream.toml",
        "--events",
        events.to_str().unwrap(),
        "--candidate-config",
        cand.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let r: Value = serde_json::from_slice(&std::fs::read(out.with_extension("json")).unwrap()).unwrap();
    assert_eq!(r["actions"], serde_json::json!(ACTIONS));
    assert_eq!(r["flips"]["actions"], serde_json::json!(ACTIONS));

    let (base, moved) = (actions(&events, None), actions(&events, Some(&cand)));
    assert_eq!((base.len(), moved.len()), (12_000, 12_000));
    let mut flips = [[0u64; 3]; 3];
    for (&a, &b) in base.iter().zip(&moved) {
        flips[a][b] += 1;
    }
    assert_eq!(r["flips"]["counts"], serde_json::json!(flips), "the flip matrix, baseline rows");
    assert!(flips[0][1] > 100, "serve → explore: {flips:?}");
    assert!(flips[2][2] > 0, "the editorial rule fires on both sides: {flips:?}");
    for (side, decided) in [(0, &base), (1, &moved)] {
        let s = &r["sides"][side];
        let mut counts = BTreeMap::new();
        for a in ACTIONS {
            counts.insert(a.to_string(), decided.iter().filter(|&&d| ACTIONS[d] == a).count() as u64);
        }
        let reported: BTreeMap<String, u64> =
            s["actions"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
        assert_eq!(reported, counts, "side {side}");
        assert_eq!(s["review_rate"].as_f64().unwrap(), counts["editorial"] as f64 / 12_000.0, "editorial reviews");
        for fraud_only in ["decline_rate", "cost", "best_thresholds"] {
            assert_eq!(s[fraud_only], Value::Null, "{fraud_only}: the approve / review / decline cost model");
        }
    }
    let flipped = (0..3).flat_map(|a| (0..3).map(move |b| (a, b))).filter(|(a, b)| a != b).map(|(a, b)| flips[a][b]);
    assert_eq!(r["summary"]["flipped"].as_u64().unwrap(), flipped.sum::<u64>());
    let html = std::fs::read_to_string(out.with_extension("html")).unwrap();
    assert!(html.contains("<th>editorial</th>") && html.contains("recall (not serve)"), "the page names the actions");

    // A candidate whose actions are in another order cannot be compared action by action.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        "[decide]\nfallback_action = \"explore\"\n[[decide.actions]]\nname = \"explore\"\nband_from = 0.0\n\
         [[decide.actions]]\nname = \"serve\"\nband_from = 0.5\n[[decide.actions]]\nname = \"editorial\"\n\
         review = true\n",
    )
    .unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["backtest", "--model", "models/clickstream", "-c", "config/clickstream.toml"])
        .args(["--events", events.to_str().unwrap(), "--candidate-config", other.to_str().unwrap()])
        .args(["--out", dir.path().join("refused").to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&refused.stderr).to_string() + &String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{text}");
    assert!(text.contains("(explore, serve, editorial)") && text.contains("(serve, explore, editorial)"), "{text}");
}
