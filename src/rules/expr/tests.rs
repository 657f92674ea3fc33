//! Compile and evaluate conditions end to end.

use super::*;

fn names() -> Names {
    Names {
        event_paths: vec![],
        enriched: vec![
            "window:card.10m.count".into(),
            "feature:card.chargebacks_90d".into(),
            "session:user.events".into(),
        ],
        lists: vec!["deny".into()],
    }
}

fn eval(src: &str, fields: &[(&str, FieldValue)], score: f64) -> Result<FieldValue, EvalError> {
    let mut n = names();
    let node = compile(src, &mut n).unwrap_or_else(|e| panic!("{src}: {e}"));
    let mut values = vec![FieldValue::Null; n.event_paths.len()];
    for (p, v) in fields {
        if let Some(i) = n.event_paths.iter().position(|x| x == p) {
            values[i] = v.clone();
        }
    }
    let deny: Arc<HashSet<String>> = Arc::new(["c-1".to_string(), "42".to_string()].into_iter().collect());
    let lists = [deny];
    let enriched = [Some(7.0), None, Some(3.0)];
    let scope = Scope { score, fields: &values, enriched: &enriched, lists: &lists };
    node.eval(&scope).map(|v| match v {
        Val::Null => FieldValue::Null,
        Val::Num(x) => FieldValue::Num(x),
        Val::Str(x) => FieldValue::Str(x.to_string()),
        Val::Bool(x) => FieldValue::Bool(x),
    })
}

fn t(src: &str) -> bool {
    let f = [
        ("amount", FieldValue::Num(1500.0)),
        ("country", FieldValue::Str("NG".into())),
        ("card_id", FieldValue::Str("c-1".into())),
        ("card.bin", FieldValue::Num(42.0)),
        ("email", FieldValue::Str("x@mailinator.com".into())),
        ("is_3ds", FieldValue::Bool(false)),
    ];
    match eval(src, &f, 0.7) {
        Ok(FieldValue::Bool(b)) => b,
        other => panic!("{src}: {other:?}"),
    }
}

#[test]
fn every_operator() {
    assert!(t("event.amount > 1000"));
    assert!(t("event.amount >= 1500.0"));
    assert!(t("event.amount < 2000 && event.amount <= 1500"));
    assert!(t("event.amount == 1500 && event.amount != 1"));
    assert!(t("event.amount + 500 == 2000 && event.amount - 500 == 1000"));
    assert!(t("event.amount * 2 == 3000 && event.amount / 3 == 500 && event.amount % 7 == 2"));
    assert!(t("-event.amount < 0"));
    assert!(t("!(event.amount < 10)"));
    assert!(t("event.amount < 10 || score > 0.5"));
    assert!(t("(score > 0.5 ? 1 : 2) == 1"));
    assert!(t("event.country in ['NG', 'RU']"));
    assert!(!t("event.country in ['US']"));
    assert!(t("event.card_id in lists.deny"));
    assert!(t("event.card.bin in lists.deny"), "integer-valued numbers look up as integers");
    assert!(t("event.email.endsWith('@mailinator.com') && event.email.startsWith('x') && event.email.contains('@')"));
    assert!(t("size(event.country) == 2 && event.country.size() == 2"));
    assert!(t("has(event.amount) && !has(event.nope)"));
    assert!(t("event.nope == null && event.amount != null"));
    assert!(t("event.is_3ds == false"));
    assert!(t("event.country > 'A'"));
    assert!(t("windows.card['10m'].count == 7.0"));
    assert!(t("features.card.chargebacks_90d == null"));
    assert!(t("sessions.user.events == 3.0"));
}

#[test]
fn absent_values_are_errors_in_arithmetic_and_ordering_but_false_and_short_circuits() {
    assert_eq!(eval("event.nope > 1", &[], 0.0), Err(EvalError));
    assert_eq!(eval("features.card.chargebacks_90d + 1 > 0", &[], 0.0), Err(EvalError));
    assert_eq!(eval("event.nope > 1 && false", &[], 0.0), Ok(FieldValue::Bool(false)));
    assert_eq!(eval("event.nope > 1 || true", &[], 0.0), Ok(FieldValue::Bool(true)));
    assert_eq!(eval("'a' < 1", &[], 0.0), Err(EvalError));
    assert_eq!(eval("1 / 0 > 0", &[], 0.0), Err(EvalError), "non-finite arithmetic is an error");
}

#[test]
fn unknown_names_are_rejected_with_the_name() {
    let mut n = names();
    for (src, needle) in [
        ("features.card.nope > 1", "unknown feature 'card.nope'"),
        ("windows.card['5m'].count > 1", "unknown window aggregate 'card.5m.count'"),
        ("sessions.user.pages > 1", "unknown session value 'user.pages'"),
        ("event.x in lists.allow", "unknown list 'allow'"),
        ("amount > 1", "unknown name 'amount'"),
        ("lists.deny", "only be used on the right of `in`"),
        ("event.x.exists(y, y > 1)", "not supported"),
        ("event.x matches 'a'", "syntax"),
        ("timestamp(event.x) > 1", "unsupported function or operator 'timestamp'"),
    ] {
        let e = compile(src, &mut n).unwrap_err().to_string();
        assert!(e.contains(needle), "{src}: {e}");
    }
}

#[test]
fn constants_fold_at_load() {
    let mut n = names();
    let node = compile("event.amount > 1000 * 5", &mut n).unwrap();
    assert!(matches!(node, Node::CmpK(CmpOp(Cmp::Gt), Src::Field(0), k) if k == 5000.0), "{node:?}");
    let node = compile("5000 <= score", &mut n).unwrap();
    assert!(matches!(node, Node::CmpK(CmpOp(Cmp::Ge), Src::Score, k) if k == 5000.0), "{node:?}");
}
