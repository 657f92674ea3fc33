//! The decision vocabulary: [`Action`], one of the configured [`Actions`] (approve, review,
//! decline by default, or the names in `decide.actions`), with the score bands that choose
//! them and the deadline fallback's action.
//!
//! In `core` because the decide stage decides with it and the publish, drift and backtest
//! stages name its actions; re-exported by [`super::decision`].

use serde::Serialize;

/// What happens to the event: one action of the configured vocabulary (`decide.actions`;
/// approve, review, decline by default). Copy and cheap to compare: its position in the
/// vocabulary (which is also its severity, least severe first, and its Avro enum index),
/// whether it goes to the review topic, and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Action {
    index: u8,
    review: bool,
    name: &'static str,
}

impl Action {
    /// The default vocabulary's least severe action: let it through.
    pub const APPROVE: Action = Action { index: 0, review: false, name: "approve" };
    /// The default vocabulary's review action: send to a human (also on the review topic).
    pub const REVIEW: Action = Action { index: 1, review: true, name: "review" };
    /// The default vocabulary's most severe action: block it.
    pub const DECLINE: Action = Action { index: 2, review: false, name: "decline" };

    /// Its name (records, rules, metrics labels, the Avro enum symbol).
    pub fn label(self) -> &'static str {
        self.name
    }

    /// Position in the vocabulary: severity (higher is more severe) and the index of its
    /// symbol in the decision schema's `Action` enum.
    pub fn index(self) -> usize {
        usize::from(self.index)
    }

    /// Index in the Avro `Action` enum symbols.
    pub fn avro_index(self) -> i64 {
        i64::from(self.index)
    }

    /// Whether its decisions also go to the review topic.
    pub fn is_review(self) -> bool {
        self.review
    }
}

impl PartialOrd for Action {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// By severity (vocabulary position), then name.
impl Ord for Action {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.index, self.name).cmp(&(other.index, other.name))
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

/// One action of a vocabulary as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionSpec {
    /// Its name.
    pub name: String,
    /// Lowest score the threshold bands give it (None: only rules and the fallback do).
    pub band_from: Option<f64>,
    /// Its decisions also go to the review topic.
    pub review: bool,
    /// A fixed review priority for its review cases (None: the rules file's expression).
    pub review_priority: Option<i64>,
}

/// The decision vocabulary: the actions in severity order (least severe first), the score
/// bands that pick them, and the deadline fallback's action.
#[derive(Debug, Clone, PartialEq)]
pub struct Actions {
    list: Vec<Action>,
    /// (lowest score, action), ascending; the first starts at 0.
    bands: Vec<(f32, Action)>,
    fallback: Action,
    priorities: Vec<Option<i64>>,
}

/// Most actions a vocabulary may have.
pub const MAX_ACTIONS: usize = 64;

impl Actions {
    /// The default vocabulary: approve below `review_at`, review below `decline_at`, decline
    /// above; `fallback` must be one of the three.
    pub fn fraud(review_at: f64, decline_at: f64, fallback: &str) -> Result<Self, String> {
        Self::build(
            &[
                ActionSpec { name: "approve".into(), band_from: Some(0.0), review: false, review_priority: None },
                ActionSpec { name: "review".into(), band_from: Some(review_at), review: true, review_priority: None },
                ActionSpec {
                    name: "decline".into(),
                    band_from: Some(decline_at),
                    review: false,
                    review_priority: None,
                },
            ],
            fallback,
            true,
        )
        .map_err(|e| e.join("; "))
    }

    /// A vocabulary from its specs (least severe first) and the fallback action's name;
    /// every problem at once, as `actions[i]...` / `fallback_action` messages.
    pub fn new(specs: &[ActionSpec], fallback: &str) -> Result<Self, Vec<String>> {
        Self::build(specs, fallback, false)
    }

    /// With `ties`, equal `band_from`s are allowed (the more severe action takes the band:
    /// `review_at = decline_at` reviews nothing).
    fn build(specs: &[ActionSpec], fallback: &str, ties: bool) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        if specs.is_empty() || specs.len() > MAX_ACTIONS {
            errors.push(format!("actions: give 1 to {MAX_ACTIONS} actions, got {}", specs.len()));
        }
        let mut list = Vec::new();
        for (i, a) in specs.iter().enumerate() {
            if !is_symbol(&a.name) {
                errors.push(format!(
                    "actions[{i}].name: '{}' is not a name like manual_review (a letter or _, then letters, digits, _)",
                    a.name
                ));
            } else if specs[..i].iter().any(|b| b.name == a.name) {
                errors.push(format!("actions[{i}].name: '{}' is listed twice", a.name));
            }
            if let Some(f) = a.band_from {
                if !(0.0..=1.0).contains(&f) {
                    errors.push(format!("actions[{i}].band_from: must be within [0, 1], got {f}"));
                }
            }
            if a.review_priority.is_some() && !a.review {
                errors.push(format!("actions[{i}].review_priority: only for an action with review = true"));
            }
            list.push(Action { index: i.min(255) as u8, review: a.review, name: intern(&a.name) });
        }
        let mut bands: Vec<(f32, Action)> =
            specs.iter().zip(&list).filter_map(|(s, &a)| s.band_from.map(|f| (f as f32, a))).collect();
        bands.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.index.cmp(&b.1.index)));
        if !specs.is_empty() && bands.first().is_none_or(|b| b.0 != 0.0) {
            errors.push(
                "actions: one action needs band_from = 0 (the band every score below the others falls in)".into(),
            );
        }
        for w in bands.windows(2).filter(|_| !ties) {
            if w[0].0 == w[1].0 && w[0].0 != 0.0 {
                errors.push(format!(
                    "actions: '{}' and '{}' have the same band_from {}",
                    w[0].1.name, w[1].1.name, w[0].0
                ));
            } else if w[0].0 == w[1].0 {
                errors.push(format!("actions: '{}' and '{}' both have band_from = 0", w[0].1.name, w[1].1.name));
            }
        }
        let chosen = list.iter().copied().find(|a| a.name == fallback);
        if chosen.is_none() && !list.is_empty() {
            let names: Vec<&str> = list.iter().map(|a| a.name).collect();
            errors.push(format!("fallback_action: '{fallback}' is not one of the actions ({})", names.join(", ")));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let priorities = specs.iter().map(|s| s.review_priority).collect();
        Ok(Self { list, bands, fallback: chosen.expect("checked"), priorities })
    }

    /// The actions, least severe first.
    pub fn all(&self) -> &[Action] {
        &self.list
    }

    /// How many actions there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Never true for a built vocabulary (it has at least one action).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The action called `name`.
    pub fn by_name(&self, name: &str) -> Option<Action> {
        self.list.iter().copied().find(|a| a.name == name)
    }

    /// Names, least severe first.
    pub fn names(&self) -> Vec<&'static str> {
        self.list.iter().map(|a| a.name).collect()
    }

    /// The band action of a score: the action with the highest `band_from` at or below it
    /// (NaN: the lowest band).
    #[inline]
    pub fn band(&self, score: f32) -> Action {
        let mut a = self.bands[0].1;
        for &(from, b) in &self.bands[1..] {
            if score >= from {
                a = b;
            } else {
                break;
            }
        }
        a
    }

    /// The band boundaries above the lowest band, ascending (the scores where the band
    /// action changes).
    pub fn thresholds(&self) -> Vec<f64> {
        self.bands[1..].iter().map(|b| f64::from(b.0)).collect()
    }

    /// The deadline fallback's action.
    pub fn fallback(&self) -> Action {
        self.fallback
    }

    /// A fixed review priority configured for `a` (None: the rules file's expression).
    pub fn review_priority(&self, a: Action) -> Option<i64> {
        self.priorities.get(a.index()).copied().flatten()
    }

    /// Whether this is the default approve / review / decline vocabulary (whatever its bands).
    pub fn is_fraud(&self) -> bool {
        self.list == [Action::APPROVE, Action::REVIEW, Action::DECLINE] && self.priorities.iter().all(Option::is_none)
    }
}

impl Default for Actions {
    /// Approve below 0.5, review below 0.9, decline above; the fallback reviews.
    fn default() -> Self {
        Self::fraud(0.5, 0.9, "review").expect("the default vocabulary is valid")
    }
}

/// Whether `s` is usable as an Avro enum symbol and a metrics label value.
fn is_symbol(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

/// One `&'static str` per distinct action name for the life of the process (so `Action`
/// stays `Copy`): names come from configuration, so there are few of them.
fn intern(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    for known in [Action::APPROVE, Action::REVIEW, Action::DECLINE] {
        if known.name == name {
            return known.name;
        }
    }
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, band_from: Option<f64>, review: bool) -> ActionSpec {
        ActionSpec { name: name.into(), band_from, review, review_priority: None }
    }

    #[test]
    fn a_configured_vocabulary_bands_scores_in_order_and_keeps_its_severity() {
        let a = Actions::new(
            &[spec("serve", Some(0.0), false), spec("editorial", None, true), spec("suppress", Some(0.7), false)],
            "editorial",
        )
        .unwrap();
        assert_eq!(a.names(), ["serve", "editorial", "suppress"]);
        assert_eq!(a.band(0.0).label(), "serve");
        assert_eq!(a.band(0.6999).label(), "serve");
        assert_eq!(a.band(0.7).label(), "suppress");
        assert_eq!(a.band(f32::NAN).label(), "serve");
        assert_eq!(a.fallback().label(), "editorial");
        assert!(a.fallback().is_review());
        assert!(a.by_name("suppress").unwrap() > a.by_name("editorial").unwrap(), "later is more severe");
        assert_eq!(a.thresholds(), vec![0.699999988079071]);
        assert!(!a.is_fraud());
        assert!(Actions::default().is_fraud());
        assert_eq!(Actions::default().by_name("review"), Some(Action::REVIEW));
    }

    #[test]
    fn every_vocabulary_problem_is_reported_at_once() {
        let e = Actions::new(
            &[
                spec("9lives", Some(0.2), false),
                spec("ok", Some(1.5), false),
                spec("ok", Some(0.3), false),
                ActionSpec { review_priority: Some(3), ..spec("quiet", None, false) },
            ],
            "nope",
        )
        .unwrap_err()
        .join("\n");
        for want in [
            "actions[0].name: '9lives'",
            "actions[1].band_from: must be within [0, 1]",
            "actions[2].name: 'ok' is listed twice",
            "actions[3].review_priority: only for an action with review = true",
            "one action needs band_from = 0",
            "fallback_action: 'nope' is not one of the actions",
        ] {
            assert!(e.contains(want), "{want} in:\n{e}");
        }
    }
}
