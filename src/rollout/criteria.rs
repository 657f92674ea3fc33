//! The judgements, as pure functions of what was observed: is a candidate promoted, refused
//! or still on trial; is a promoted version kept, or rolled back to the previous one.

use serde::Serialize;

use super::config::RolloutConfig;
use crate::drift::labels::LabelStats;

/// What a candidate (or, in the watch, the pair of versions) has shown so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// Events scored by both versions.
    pub events: u64,
    /// Seconds since the phase began.
    pub seconds: f64,
    /// Share of `events` on which both versions' band actions agree.
    pub agreement: Option<f64>,
    /// Trial batches whose scoring failed.
    pub errors: u64,
    /// PSI of the judged version's scores against its manifest's baseline (None: no baseline).
    pub score_psi: Option<f64>,
    /// p99 scoring time per row of the serving version, µs.
    pub serving_p99_us: Option<f64>,
    /// p99 scoring time per row of the trial version, µs.
    pub trial_p99_us: Option<f64>,
}

/// A candidate's fate so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Not enough evidence yet.
    Wait,
    /// Every criterion holds.
    Promote,
    /// A criterion failed: why.
    Refuse(String),
}

/// A candidate is judged once it has scored `min_events`; it is refused at the first
/// criterion that fails then, and promoted once every one holds and `min_seconds` passed.
pub fn judge_candidate(cfg: &RolloutConfig, e: &Evidence) -> Judgement {
    if e.errors > 0 {
        return Judgement::Refuse(format!("{} scoring errors", e.errors));
    }
    if e.events < cfg.min_events {
        return Judgement::Wait;
    }
    if let Some(a) = e.agreement.filter(|&a| a < cfg.min_agreement) {
        return Judgement::Refuse(format!("agreement {a:.4} < min_agreement {}", cfg.min_agreement));
    }
    if let Some(psi) = e.score_psi.filter(|&p| p.is_nan() || p > cfg.max_score_psi) {
        return Judgement::Refuse(format!("score PSI {psi:.4} > max_score_psi {}", cfg.max_score_psi));
    }
    if let (Some(s), Some(t)) = (e.serving_p99_us, e.trial_p99_us) {
        if t > cfg.max_latency_ratio * s {
            return Judgement::Refuse(format!(
                "p99 {t:.1} µs/row > max_latency_ratio {} × serving {s:.1} µs/row",
                cfg.max_latency_ratio
            ));
        }
    }
    if e.seconds < cfg.min_seconds as f64 {
        return Judgement::Wait;
    }
    Judgement::Promote
}

/// A promoted version's fate in its watch.
#[derive(Debug, Clone, PartialEq)]
pub enum Watch {
    /// The watch goes on.
    Wait,
    /// The watch ended with no regression: the previous version is let go.
    Keep,
    /// Roll back to the previous version: why.
    RollBack(String),
}

/// Judges the watch: `new` and `previous` are the label statistics of the two versions'
/// scores on the same labelled events; `drift_alarm` is the new version's score PSI when it
/// is above the drift alert level.
pub fn judge_watch(
    cfg: &RolloutConfig,
    e: &Evidence,
    new: &LabelStats,
    previous: &LabelStats,
    drift_alarm: Option<f64>,
) -> Watch {
    if let Some(psi) = drift_alarm {
        return Watch::RollBack(format!("score drift alarm: PSI {psi:.4} against the baseline"));
    }
    if new.joined as u64 >= cfg.min_labels {
        if let Some(why) = regression(cfg.max_regression, new, previous) {
            return Watch::RollBack(why);
        }
    }
    if e.seconds >= cfg.watch_seconds as f64 && e.events >= cfg.watch_events {
        Watch::Keep
    } else {
        Watch::Wait
    }
}

/// The first metric on which `new` is worse than `previous` by more than `margin`.
pub fn regression(margin: f64, new: &LabelStats, previous: &LabelStats) -> Option<String> {
    for (n, p) in new.thresholds.iter().zip(&previous.thresholds) {
        for (what, a, b) in [("precision", n.precision, p.precision), ("recall", n.recall, p.recall)] {
            // A version that flags nothing has no precision: count it as 0 when the other has one.
            let (a, b) = match (a, b) {
                (None, Some(b)) => (0.0, b),
                (Some(a), Some(b)) => (a, b),
                _ => continue,
            };
            if a < b - margin {
                return Some(format!(
                    "{what} at {} fell to {a:.4} from the previous version's {b:.4} (max_regression {margin})",
                    n.threshold
                ));
            }
        }
    }
    if let (Some(a), Some(b)) = (new.brier, previous.brier) {
        if a > b + margin {
            return Some(format!(
                "Brier score rose to {a:.4} from the previous version's {b:.4} (max_regression {margin})"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RolloutConfig {
        RolloutConfig { min_events: 100, min_seconds: 10, ..RolloutConfig::default() }
    }

    fn good() -> Evidence {
        Evidence {
            events: 100,
            seconds: 10.0,
            agreement: Some(0.99),
            errors: 0,
            score_psi: Some(0.01),
            serving_p99_us: Some(10.0),
            trial_p99_us: Some(12.0),
        }
    }

    #[test]
    fn a_candidate_is_promoted_only_when_every_criterion_holds_after_min_events_and_min_seconds() {
        assert_eq!(judge_candidate(&cfg(), &good()), Judgement::Promote);
        assert_eq!(judge_candidate(&cfg(), &Evidence { events: 99, ..good() }), Judgement::Wait);
        assert_eq!(judge_candidate(&cfg(), &Evidence { seconds: 9.0, ..good() }), Judgement::Wait);
        // No baseline: PSI is not a criterion.
        assert_eq!(judge_candidate(&cfg(), &Evidence { score_psi: None, ..good() }), Judgement::Promote);
    }

    #[test]
    fn a_candidate_is_refused_at_the_first_failing_criterion_once_it_has_min_events() {
        let refused = |e: Evidence| match judge_candidate(&cfg(), &e) {
            Judgement::Refuse(why) => why,
            other => panic!("{other:?}"),
        };
        assert!(refused(Evidence { agreement: Some(0.5), ..good() }).starts_with("agreement 0.5000 < min_agreement"));
        assert!(refused(Evidence { score_psi: Some(1.2), ..good() }).starts_with("score PSI 1.2000"));
        assert!(refused(Evidence { trial_p99_us: Some(31.0), ..good() }).contains("max_latency_ratio 3"));
        // Too few events to judge agreement, but a scoring error refuses at once.
        assert_eq!(judge_candidate(&cfg(), &Evidence { events: 5, agreement: Some(0.0), ..good() }), Judgement::Wait);
        assert_eq!(refused(Evidence { events: 5, errors: 2, ..good() }), "2 scoring errors");
        // Failing before min_seconds still refuses: waiting cannot mend it.
        assert!(refused(Evidence { seconds: 1.0, agreement: Some(0.1), ..good() }).starts_with("agreement"));
    }

    fn labels(pairs: &[(f64, bool)]) -> LabelStats {
        let mut s = LabelStats::new(&[0.5, 0.8]);
        for &(score, y) in pairs {
            s.add(score, y);
        }
        s
    }

    #[test]
    fn the_watch_rolls_back_on_a_label_regression_or_a_drift_alarm_and_keeps_otherwise() {
        let c = RolloutConfig { min_labels: 4, watch_seconds: 10, watch_events: 10, ..RolloutConfig::default() };
        let events = Evidence { events: 10, seconds: 10.0, ..Evidence::default() };
        let truth = [(true), (true), (false), (false)];
        let right: Vec<(f64, bool)> = truth.iter().map(|&y| (if y { 0.9 } else { 0.1 }, y)).collect();
        let inverted: Vec<(f64, bool)> = truth.iter().map(|&y| (if y { 0.1 } else { 0.9 }, y)).collect();
        let (good, bad) = (labels(&right), labels(&inverted));
        assert_eq!(judge_watch(&c, &events, &good, &good, None), Watch::Keep);
        let early = Evidence { seconds: 5.0, ..events.clone() };
        assert_eq!(judge_watch(&c, &early, &good, &good, None), Watch::Wait);
        match judge_watch(&c, &early, &bad, &good, None) {
            Watch::RollBack(why) => assert!(why.starts_with("precision at 0.5 fell to 0.0000 from"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Better is not a regression.
        assert_eq!(judge_watch(&c, &events, &good, &bad, None), Watch::Keep);
        // Too few labels: not compared.
        let few = labels(&inverted[..3]);
        assert_eq!(judge_watch(&c, &early, &few, &labels(&right[..3]), None), Watch::Wait);
        match judge_watch(&c, &early, &good, &good, Some(0.4)) {
            Watch::RollBack(why) => assert!(why.contains("PSI 0.4000"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn brier_regression_beyond_the_margin_rolls_back() {
        // Same actions at both thresholds, but worse calibration.
        let prev = labels(&[(0.95, true), (0.05, false)]);
        let new = labels(&[(0.81, true), (0.45, false)]);
        let why = regression(0.05, &new, &prev).expect("a regression");
        assert!(why.starts_with("Brier score rose to"), "{why}");
        assert_eq!(regression(0.2, &new, &prev), None);
    }
}
