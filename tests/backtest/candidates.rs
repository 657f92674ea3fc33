//! Several candidates in one pass: each reports what a run with it alone reports, an
//! identical one flips nothing, and the page has a section per candidate.

use std::process::Command;

use serde_json::Value;

use super::{backtest, labelled_events, renders_in_chromium, thresholds};

#[test]
fn several_candidates_in_one_pass_report_what_one_candidate_runs_report() {
    // Four candidates in one pass: other thresholds (the --candidate-* flags), the NaN-routing
    // model (other columns), that model with the other thresholds (the same columns, decoded
    // once for both) and one identical to the baseline. Each reports exactly what a run with
    // it alone reports.
    let dir = tempfile::tempdir().unwrap();
    let events = labelled_events(dir.path());
    let lower = thresholds(dir.path(), 0.3, 0.8);
    let lower = lower.to_str().unwrap();
    let rules = ["--rules", "ops/rules/fraud.toml"];
    let nan_lower = format!("name=nan-lower,model=models/demo-nan,config={lower}");
    let many = [
        &rules[..],
        &["--candidate-config", lower, "--top", "7"],
        &["--candidate", "name=nan,model=models/demo-nan", "--candidate", &nan_lower, "--candidate", "name=same"],
    ]
    .concat();
    let (r, html) = backtest(dir.path(), "many", &events, &many);
    let alone = [
        ("candidate", vec!["--candidate-config", lower]),
        ("nan", vec!["--candidate-model", "models/demo-nan"]),
        ("nan-lower", vec!["--candidate-model", "models/demo-nan", "--candidate-config", lower]),
    ];
    let cands = r["candidates"].as_array().unwrap();
    let names: Vec<&str> = cands.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["candidate", "nan", "nan-lower", "same"]);
    assert_eq!(r["sides"].as_array().unwrap().len(), 5, "the baseline and four candidates");
    for (k, (name, args)) in alone.iter().enumerate() {
        let (one, _) = backtest(dir.path(), name, &events, &[&rules[..], args, &["--top", "7"]].concat());
        let (c, o) = (&cands[k], &one["candidates"][0]);
        assert!(o["flipped"].as_u64().unwrap() > 0, "{name} flips something");
        for key in ["flipped", "flipped_amount", "flips", "rules", "top_flips"] {
            assert_eq!(c[key], o[key], "{name}: {key}");
        }
        assert_eq!(c["side"], k + 1);
        let (mut side, mut side_alone) = (r["sides"][k + 1].clone(), one["sides"][1].clone());
        assert_eq!(side["name"], *name);
        side["name"] = Value::Null;
        side_alone["name"] = Value::Null;
        assert_eq!(side, side_alone, "{name}: every figure of its side");
        assert_eq!(r["sides"][0], one["sides"][0], "{name}'s run: the baseline");
        assert_eq!(r["provenance"]["candidates"][k]["provenance"], one["provenance"]["candidate"], "{name}");
        for key in ["events", "decided", "dead_lettered", "labelled"] {
            assert_eq!(r["summary"][key], one["summary"][key], "summary.{key}");
        }
    }
    // The top-level one-candidate fields are the first candidate's.
    for key in ["flips", "rules", "top_flips"] {
        assert_eq!(r[key], cands[0][key], "{key}");
    }
    assert_eq!(r["summary"]["flipped"], cands[0]["flipped"]);
    // The identical candidate flips nothing and reports the baseline's figures.
    let same = &cands[3];
    assert_eq!(same["flipped"], 0);
    assert!(same["top_flips"].as_array().unwrap().is_empty());
    let mut base = r["sides"][0].clone();
    base["name"] = "same".into();
    assert_eq!(r["sides"][4], base);
    // The page: a section per candidate, linked from the top.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("<script"), "no scripts");
    for (k, name) in names.iter().enumerate() {
        let id = format!("candidate-{}", k + 1);
        assert!(page.contains(&format!("href=\"#{id}\"")), "a link to {id}");
        assert!(page.contains(&format!("<h2 id=\"{id}\">Candidate {name} against the baseline</h2>")), "{id}");
    }
    assert_eq!(page.matches("<svg").count(), 6, "one set of charts, a line per side");
    renders_in_chromium(&html, dir.path());
}

#[test]
fn a_candidate_spec_with_a_taken_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let events = labelled_events(dir.path());
    for (spec, name) in [("name=baseline", "baseline"), ("name=candidate", "candidate")] {
        let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["backtest", "--model", "models/demo", "-c", "config/demo.toml", "--events"])
            .args([events.to_str().unwrap(), "--candidate-model", "models/demo-nan", "--candidate", spec])
            .args(["--out", dir.path().join("refused").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("name={name}")), "{err}");
        assert!(!dir.path().join("refused.json").exists(), "no report written");
    }
}
