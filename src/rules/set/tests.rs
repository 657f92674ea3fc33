//! Loading rules files and deciding with them.

use std::path::Path;

use super::*;
use crate::core::field::FieldValue;

const ENRICHED: &[&str] = &["window:card.10m.count", "window:card.since_last_s", "feature:card.chargebacks_90d"];

fn load(text: &str) -> Result<RuleSet, Vec<String>> {
    let enriched: Vec<String> = ENRICHED.iter().map(|s| s.to_string()).collect();
    RuleSet::parse(text.as_bytes(), Path::new("."), &enriched, &crate::core::decision::Actions::default())
}

fn decide(set: &RuleSet, band: Action, amount: f64, card: &str, score: f64) -> RulesOutcome {
    let mut fields = vec![FieldValue::Null; set.names.event_paths.len()];
    for (i, p) in set.names.event_paths.iter().enumerate() {
        fields[i] = match p.as_str() {
            "amount" => FieldValue::Num(amount),
            "card_id" => FieldValue::Str(card.into()),
            _ => FieldValue::Null,
        };
    }
    let enriched = [Some(3.0), None, Some(0.0)];
    let scope = Scope { score, fields: &fields, enriched: &enriched, lists: &set.initial_lists };
    let mut out = RulesOutcome::default();
    set.decide(band, &scope, &mut out, &mut []);
    out
}

const RULES: &str = r#"
[lists.deny]
values = ["c-bad"]
[lists.allow]
values = ["c-vip"]

[[rules]]
id = "deny"
condition = "event.card_id in lists.deny"
action = "decline"
reason = "deny_listed"
priority = 100

[[rules]]
id = "allow"
condition = "event.card_id in lists.allow"
action = "approve"
reason = "allow_listed"
priority = 50

[[rules]]
id = "big"
condition = "event.amount > 1000"
action = "review"
reason = "large_amount"

[[rules]]
id = "huge"
condition = "event.amount > 5000"
action = "step_up"
outcome = "review"
reason = "huge_amount"
priority = 10

[[rules]]
id = "watch"
condition = "windows.card['10m'].count >= 3"
action = "decline"
reason = "velocity_watch"
priority = 1000
mode = "monitor"

[[rules]]
id = "broken"
condition = "features.card.chargebacks_90d / 0.0 > 1"
action = "decline"
reason = "never"
"#;

#[test]
fn bands_decide_when_no_rule_fires() {
    let s = load(RULES).unwrap();
    let o = decide(&s, Action::APPROVE, 10.0, "c-1", 0.1);
    assert_eq!((o.action, o.reason.is_none()), (Action::APPROVE, true));
    assert_eq!(o.hits.iter().map(|h| &*h.id).collect::<Vec<_>>(), ["watch"]);
    assert_eq!(o.errors, 1, "the broken rule is counted, not fired");
}

#[test]
fn monitor_rules_are_recorded_but_never_act() {
    let s = load(RULES).unwrap();
    let o = decide(&s, Action::APPROVE, 10.0, "c-1", 0.1);
    let watch = o.hits.iter().find(|h| &*h.id == "watch").unwrap();
    assert_eq!(watch.mode, RuleMode::Monitor);
    assert_eq!(o.action, Action::APPROVE, "a priority-1000 monitor decline does not act");
}

#[test]
fn higher_priority_wins_then_severity() {
    let s = load(RULES).unwrap();
    // deny (100, decline) beats allow (50, approve) and the band.
    let o = decide(&s, Action::APPROVE, 10.0, "c-bad", 0.1);
    assert_eq!((o.action, o.reason.as_deref()), (Action::DECLINE, Some("deny_listed")));
    // allow (50) overrides a band decline (priority 0).
    let o = decide(&s, Action::DECLINE, 10.0, "c-vip", 0.99);
    assert_eq!((o.action, o.reason.as_deref()), (Action::APPROVE, Some("allow_listed")));
    // big (priority 0, review) escalates an approve band: equal priority, more severe.
    let o = decide(&s, Action::APPROVE, 2000.0, "c-1", 0.1);
    assert_eq!((o.action, o.reason.as_deref()), (Action::REVIEW, Some("large_amount")));
    // ...but does not downgrade a decline band at the same priority.
    let o = decide(&s, Action::DECLINE, 2000.0, "c-1", 0.95);
    assert_eq!((o.action, o.reason), (Action::DECLINE, None));
    // huge (10) beats big (0); its custom action routes as review.
    let o = decide(&s, Action::APPROVE, 6000.0, "c-1", 0.1);
    assert_eq!(
        (o.action, o.action_name.as_deref(), o.reason.as_deref()),
        (Action::REVIEW, Some("step_up"), Some("huge_amount"))
    );
    assert_eq!(o.hits.len(), 3, "big, huge and watch all recorded: {:?}", o.hits);
}

#[test]
fn every_action_kind() {
    let s = load(RULES).unwrap();
    for (band, amount, card, want) in [
        (Action::APPROVE, 10.0, "c-bad", Action::DECLINE),
        (Action::APPROVE, 2000.0, "c-1", Action::REVIEW),
        (Action::REVIEW, 10.0, "c-vip", Action::APPROVE),
    ] {
        assert_eq!(decide(&s, band, amount, card, 0.5).action, want, "{card} {amount}");
    }
}

#[test]
fn every_problem_is_reported_with_its_name() {
    let bad = r#"
[lists.a]
values = ["x"]
file = "x.txt"

[[rules]]
id = "r1"
condition = "features.card.unknown_feature > 1"
action = "decline"
reason = "x"

[[rules]]
id = "r1"
condition = "event.x in lists.nope"
action = "smite"
reason = ""
mode = "shadow"
"#;
    let errs = load(bad).unwrap_err().join("\n");
    for needle in [
        "lists.a: exactly one of file, values, redis_set",
        "rule 'r1': condition: unknown feature 'card.unknown_feature'",
        "rule 'r1': duplicate id",
        "rule 'r1': reason is empty",
        "mode 'shadow'",
        "action 'smite' is not one of decide.actions (approve, review, decline)",
        "unknown list 'nope'",
    ] {
        assert!(errs.contains(needle), "missing '{needle}' in:\n{errs}");
    }
}

#[test]
fn version_is_a_content_hash_and_review_priority_evaluates() {
    let a = load(RULES).unwrap();
    let b = load(RULES).unwrap();
    let c = load(&format!("{RULES}\n# a comment changes the file\n")).unwrap();
    assert_eq!(a.version, b.version);
    assert_ne!(a.version, c.version);
    assert_eq!(a.version.len(), 16);
    let s = load("[review]\npriority = \"score * 100.0 + (event.amount > 1000.0 ? 50.0 : 0.0)\"").unwrap();
    let fields = [FieldValue::Num(2000.0)];
    let scope = Scope { score: 0.7, fields: &fields, enriched: &[], lists: &[] };
    assert_eq!(s.review_priority(&scope), 120);
}
