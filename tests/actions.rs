//! Named actions (`[[decide.actions]]`): the configuration reports every problem at once by
//! key, rules choose from the vocabulary (and say which names exist when one does not), and
//! the decision schema follows the vocabulary: its `Action` enum symbols are the actions in
//! order, the default vocabulary's schema is `schemas/decision.avsc` as written, and adding
//! an action at the end is a backward-compatible change (records written before read with the
//! new schema; a reader still on the old one cannot read the new action, so consumers upgrade
//! first). The pipeline tests of a named vocabulary are in `tests/clickstream.rs`.

mod common;

use std::path::Path;

use apache_avro::types::Value;
use apache_avro::Schema;
use common::crate_path;
use verdict::core::decision::{Action, ActionSpec, Actions, Decision};
use verdict::decode::registry::{decision_schema, DECISION_SCHEMA};
use verdict::publish::record::{DecisionRecord, DefaultsUsed, Inputs, Top};

fn vocabulary(names: &[&str]) -> Actions {
    let specs: Vec<ActionSpec> = names
        .iter()
        .enumerate()
        .map(|(i, n)| ActionSpec {
            name: n.to_string(),
            band_from: (i == 0).then_some(0.0),
            review: *n == "editorial",
            review_priority: None,
        })
        .collect();
    Actions::new(&specs, names[0]).unwrap()
}

/// Confluent-framed Avro of a decision with `action`, written as verdict writes it.
fn avro_record(action: Action) -> Vec<u8> {
    let d = Decision {
        action,
        action_name: None,
        reason: format!("score_band_{}", action.label()).into(),
        score: 0.5,
        rule_hits: Vec::new(),
        rule_errors: 0,
        rules_version: "".into(),
        review_priority: None,
        fallback: false,
        top: Vec::new(),
    };
    let r = DecisionRecord {
        event_id: "e-1",
        entity_key: "u-1",
        decision: &d,
        model_name: "m",
        model_version: "1",
        event_time: 1,
        decided_at: 2,
        latency_us: 3,
        degraded: false,
        source_topic: "clicks",
        source_partition: 0,
        source_offset: 7,
        defaults_used: DefaultsUsed::default(),
        features: Inputs::default(),
        aggregates: (&[], &[]),
        shadow: None,
        redelivery: false,
        top: Top::default(),
    };
    let mut buf = Vec::new();
    r.write_avro(1, &mut buf);
    buf
}

fn read_action(writer: &Schema, reader: &Schema, framed: &[u8]) -> Result<Value, String> {
    let r = apache_avro::reader::datum::GenericDatumReader::builder(writer)
        .reader_schema(reader)
        .build()
        .map_err(|e| e.to_string())?;
    let mut body = &framed[5..];
    let v = r.read_value(&mut body).map_err(|e| e.to_string())?;
    let Value::Record(fields) = v else { panic!("not a record") };
    Ok(fields.into_iter().find(|(k, _)| k == "action").unwrap().1)
}

#[test]
fn the_default_vocabulary_keeps_the_schema_file_as_written() {
    assert_eq!(decision_schema(&Actions::default()), DECISION_SCHEMA);
    let custom_bands = verdict::rules::config::DecideConfig { review_at: 0.2, decline_at: 0.95, ..Default::default() };
    assert_eq!(decision_schema(&custom_bands.vocabulary().unwrap()), DECISION_SCHEMA, "bands are not in the schema");
}

#[test]
fn a_named_vocabulary_is_the_enum_and_adding_an_action_at_the_end_is_backward_compatible() {
    let v1 = vocabulary(&["serve", "explore"]);
    let v2 = vocabulary(&["serve", "explore", "editorial"]);
    let (s1, s2) =
        (Schema::parse_str(&decision_schema(&v1)).unwrap(), Schema::parse_str(&decision_schema(&v2)).unwrap());

    // Every action of v2 reads back by name, its index its position.
    for a in v2.all() {
        let got = read_action(&s2, &s2, &avro_record(*a)).unwrap();
        assert_eq!(got, Value::Enum(a.index() as u32, a.label().to_string()));
    }
    // Records written before the new action read with the new schema (a registry in
    // BACKWARD mode accepts the new version).
    let old = avro_record(v1.by_name("explore").unwrap());
    assert_eq!(read_action(&s1, &s2, &old).unwrap(), Value::Enum(1, "explore".into()));
    // A consumer still on the old schema reads the old actions of new records, and cannot
    // read the new one: upgrade consumers before the new action is configured.
    assert_eq!(
        read_action(&s2, &s1, &avro_record(v2.by_name("serve").unwrap())).unwrap(),
        Value::Enum(0, "serve".into())
    );
    let e = read_action(&s2, &s1, &avro_record(v2.by_name("editorial").unwrap())).unwrap_err();
    assert!(e.to_lowercase().contains("symbol") || e.to_lowercase().contains("enum"), "{e}");

    // Reordering resolves by name, not position.
    let reordered = vocabulary(&["explore", "serve", "editorial"]);
    let s3 = Schema::parse_str(&decision_schema(&reordered)).unwrap();
    assert_eq!(
        read_action(&s2, &s3, &avro_record(v2.by_name("serve").unwrap())).unwrap(),
        Value::Enum(1, "serve".into())
    );
}

#[test]
fn every_actions_problem_is_reported_at_once_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        format!(
            r#"[model]
dir = "{}"
[decide]
review_at = 0.4
fallback_action = "hold"
[[decide.actions]]
name = "serve now"
band_from = 0.2
[[decide.actions]]
name = "explore"
band_from = 0.5
review_priority = 5
[[decide.actions]]
name = "explore"
"#,
            crate_path("models/demo").display()
        ),
    )
    .unwrap();
    let errors = verdict::config::load_files(&[file.as_path()]).unwrap_err().0.join("\n");
    for want in [
        "decide.review_at: only for the default approve / review / decline actions",
        "decide.actions[0].name: 'serve now' is not a name",
        "decide.actions[1].review_priority: only for an action with review = true",
        "decide.actions[2].name: 'explore' is listed twice",
        "decide.actions: one action needs band_from = 0",
        "decide.fallback_action: 'hold' is not one of the actions",
    ] {
        assert!(errors.contains(want), "{want} in:\n{errors}");
    }
    // The default vocabulary's fallback is still checked.
    std::fs::write(
        &file,
        format!("[model]\ndir = \"{}\"\n[decide]\nfallback_action = \"hold\"\n", crate_path("models/demo").display()),
    )
    .unwrap();
    let errors = verdict::config::load_files(&[file.as_path()]).unwrap_err().0.join("\n");
    assert!(
        errors.contains("decide.fallback_action: 'hold' is not one of the actions (approve, review, decline)"),
        "{errors}"
    );
}

#[test]
fn rules_choose_from_the_vocabulary_and_severity_is_its_order() {
    let actions = vocabulary(&["serve", "explore", "editorial"]);
    let rules = r#"
[[rules]]
id = "unsure"
condition = "score < 0.3"
action = "explore"
reason = "unsure"

[[rules]]
id = "odd"
condition = "score < 0.2"
action = "editorial"
reason = "odd"

[[rules]]
id = "hold"
condition = "score < 0.1"
action = "hold_slot"
outcome = "explore"
reason = "hold"
priority = 5
"#;
    let set = verdict::rules::RuleSet::parse(rules.as_bytes(), Path::new("."), &[], &actions).unwrap();
    let scope = |score: f64| verdict::rules::expr::Scope { score, fields: &[], enriched: &[], lists: &[] };
    let mut out = verdict::rules::RulesOutcome::default();
    let band = actions.by_name("serve").unwrap();
    set.decide(band, &scope(0.25), &mut out, &mut []);
    assert_eq!((out.action.label(), out.reason.as_deref()), ("explore", Some("unsure")));
    set.decide(band, &scope(0.15), &mut out, &mut []);
    assert_eq!(out.action.label(), "editorial", "equal priority: the later action in the list wins");
    set.decide(band, &scope(0.05), &mut out, &mut []);
    assert_eq!((out.action.label(), out.action_name.as_deref()), ("explore", Some("hold_slot")), "priority first");

    let e = verdict::rules::RuleSet::parse(
        b"[[rules]]\nid = \"x\"\ncondition = \"score > 0.5\"\naction = \"decline\"\nreason = \"r\"\n",
        Path::new("."),
        &[],
        &actions,
    )
    .unwrap_err()
    .join("\n");
    assert!(e.contains("action 'decline' is not one of decide.actions (serve, explore, editorial)"), "{e}");
}
