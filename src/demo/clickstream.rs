//! Synthetic clickstream for the personalization scenario: users browse in sessions (a few
//! hundred active at a time, each for a dozen page views, then gone for a while), mostly
//! within their favourite content categories and with momentum inside a session.
//!
//! `verdict generate --scenario clickstream --labels` writes training data whose label,
//! `next_category`, is the category of the user's next page view (drawn ahead, so it is
//! known when the event is written); `ops/model/train_clickstream.py` trains the demo's
//! next-category model on it, and `verdict demo --scenario clickstream` scores the same
//! distribution.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Zipf};
use serde::Serialize;

/// Content categories (the model's classes, in this order).
pub const CATEGORIES: [&str; 8] = ["sports", "news", "music", "travel", "games", "food", "tech", "fashion"];
/// Device types.
pub const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
/// Users browsing at any moment.
const ACTIVE: usize = 400;
/// The mean event-time step between events (0..200 ms): 10 page views a second over 400
/// browsing users, one every 40 s per user.
pub const MEAN_STEP_MS: f64 = 99.5;

/// One page view or click (field names as `config/clickstream.toml` maps them).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Click {
    /// Unique id.
    pub event_id: String,
    /// User (the entity key, and the record key).
    pub user_id: String,
    /// Event time, ms since epoch.
    pub event_time: i64,
    /// `view` or `click`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Content category of the page.
    pub category: &'static str,
    /// Page id.
    pub page: String,
    /// Device type.
    pub device: &'static str,
    /// Time on the previous page (ms).
    pub dwell_ms: i64,
    /// The category of the user's next page view (training data only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_category: Option<&'static str>,
}

impl Click {
    /// The event as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a click serializes")
    }
}

/// A user: two favourite categories, a device, and the category of their next page view.
#[derive(Debug, Clone)]
struct User {
    favourites: [usize; 2],
    device: usize,
    next: usize,
}

/// Deterministic clickstream generator (same seed → same events).
pub struct ClickGenerator {
    rng: SmallRng,
    users: Vec<Option<User>>,
    pick: Zipf<f64>,
    dwell: LogNormal<f64>,
    /// Active sessions: (user, page views left).
    active: Vec<(usize, u32)>,
    next_id: u64,
    time_ms: i64,
    labels: bool,
}

impl ClickGenerator {
    /// A generator over `n_users` users (heavy-tailed: a few come back often), starting at
    /// `start_ms`.
    pub fn new(seed: u64, n_users: u64, start_ms: i64) -> Self {
        let n = n_users.max(ACTIVE as u64 * 2);
        Self {
            rng: SmallRng::seed_from_u64(seed),
            users: vec![None; n as usize],
            pick: Zipf::new(n as f64, 0.8).expect("valid zipf"),
            dwell: LogNormal::new(9.0, 0.9).expect("valid lognormal"),
            active: Vec::with_capacity(ACTIVE),
            next_id: 0,
            time_ms: start_ms,
            labels: false,
        }
    }

    /// Also write `next_category` (training data).
    pub fn with_labels(mut self) -> Self {
        self.labels = true;
        self
    }

    /// A category for `u`'s page after one of `current`: mostly the same (momentum), else
    /// a favourite, else any.
    fn draw_next(rng: &mut SmallRng, u: &User, current: usize) -> usize {
        let r: f64 = rng.random();
        if r < 0.55 {
            current
        } else if r < 0.85 {
            u.favourites[rng.random_range(0..2)]
        } else {
            rng.random_range(0..CATEGORIES.len())
        }
    }

    /// Starts a session for a user who is not browsing now.
    fn start_session(&mut self) {
        loop {
            let id = self.pick.sample(&mut self.rng) as usize - 1;
            if self.active.iter().any(|&(a, _)| a == id) {
                continue;
            }
            let rng = &mut self.rng;
            if self.users[id].is_none() {
                let a = rng.random_range(0..CATEGORIES.len());
                let b = (a + rng.random_range(1..CATEGORIES.len())) % CATEGORIES.len();
                // A first visit starts on a favourite.
                self.users[id] = Some(User { favourites: [a, b], device: rng.random_range(0..DEVICES.len()), next: a });
            }
            let views = 1 + (rng.random::<f64>().ln() / (1.0f64 - 1.0 / 12.0).ln()) as u32;
            self.active.push((id, views.max(1)));
            return;
        }
    }

    /// The next event.
    pub fn next_event(&mut self) -> Click {
        while self.active.len() < ACTIVE {
            self.start_session();
        }
        self.time_ms += self.rng.random_range(0..200);
        let slot = self.rng.random_range(0..self.active.len());
        let (id, left) = self.active[slot];
        let rng = &mut self.rng;
        let u = self.users[id].as_mut().expect("an active user exists");
        let category = u.next;
        // The user's next page: in this visit, or (the visit ends here) the first of the
        // next one, which starts on a favourite.
        u.next = match left <= 1 {
            true => u.favourites[rng.random_range(0..2)],
            false => Self::draw_next(rng, u, category),
        };
        let kind = if rng.random_bool(0.3) { "click" } else { "view" };
        let dwell_ms = (self.dwell.sample(rng) as i64).min(600_000);
        let page = format!("p-{}-{:03}", CATEGORIES[category], rng.random_range(0..200));
        let next_category = self.labels.then_some(CATEGORIES[u.next]);
        let device = DEVICES[u.device];
        if left <= 1 {
            self.active.swap_remove(slot);
        } else {
            self.active[slot].1 = left - 1;
        }
        let event_id = format!("ck-{:010}", self.next_id);
        self.next_id += 1;
        Click {
            event_id,
            user_id: format!("user-{id:06}"),
            event_time: self.time_ms,
            kind,
            category: CATEGORIES[category],
            page,
            device,
            dwell_ms,
            next_category,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn users_browse_in_sessions_with_momentum_and_the_label_is_their_next_category() {
        let mut g = ClickGenerator::new(3, 20_000, 1_764_000_000_000).with_labels();
        let events: Vec<Click> = (0..200_000).map(|_| g.next_event()).collect();
        assert_eq!(ClickGenerator::new(3, 20_000, 1_764_000_000_000).with_labels().next_event(), events[0]);
        let mut by_user: HashMap<&str, Vec<&Click>> = HashMap::new();
        for e in &events {
            by_user.entry(&e.user_id).or_default().push(e);
        }
        let (mut same, mut pairs, mut labelled, mut gaps, mut sessions) = (0, 0, 0, 0, 0);
        for clicks in by_user.values() {
            for w in clicks.windows(2) {
                pairs += 1;
                same += usize::from(w[0].category == w[1].category);
                labelled += usize::from(w[0].next_category == Some(w[1].category));
                let gap = w[1].event_time - w[0].event_time;
                gaps += usize::from(gap > 1_800_000);
            }
            sessions += 1;
        }
        assert_eq!(labelled, pairs, "next_category is the user's next page's category");
        let momentum = same as f64 / pairs as f64;
        assert!((0.55..0.8).contains(&momentum), "momentum {momentum}");
        assert!(gaps > 1_000, "users come back after more than 30 minutes: {gaps} of {pairs} steps");
        assert!(sessions > 5_000, "{sessions} users");
    }
}
