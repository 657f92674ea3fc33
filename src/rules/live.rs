//! The rules in force, swapped atomically: a watcher thread re-reads the rules file every
//! `rules.reload_interval_ms` (or at once on SIGHUP), validates it fully and swaps it in only
//! if it is valid; named lists are refreshed every `rules.list_refresh_s`. Workers take one
//! [`LiveRules`] snapshot per batch, so a batch is never decided by two versions.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use super::config::RulesConfig;
use super::set::{read_list, ListSpec, RuleSet};
use super::Actions;
use crate::core::redis::RedisConfig;
use crate::telemetry::Metrics;

/// The rules file is invalid.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct InvalidRules(pub Vec<String>);

/// A named list could not be read (its previous entries stay in force).
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The list file could not be read.
    #[error("{}: {source}", path.display())]
    File {
        /// The list file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Redis failed; `url` is the redacted URL, `reason` names no password.
    #[error("{url}: {reason}")]
    Redis {
        /// The Redis URL, password redacted.
        url: String,
        /// What failed, password redacted.
        reason: String,
    },
    /// The Redis client could not be made (a `[redis]` file unreadable, a bad URL).
    #[error(transparent)]
    Client(#[from] crate::core::redis::ClientError),
    /// Reading the set failed.
    #[error("SMEMBERS {key}: {url}: {reason}")]
    Members {
        /// The Redis set.
        key: String,
        /// The Redis URL, password redacted.
        url: String,
        /// What failed, password redacted.
        reason: String,
    },
}

/// One rules version plus the current entries of its named lists.
#[derive(Debug)]
pub struct LiveRules {
    /// The rule set.
    pub set: Arc<RuleSet>,
    /// Entries per named list, in `set.names.lists` order.
    pub lists: Vec<Arc<HashSet<String>>>,
}

/// Shared handle to the rules in force.
pub struct RulesHandle {
    current: RwLock<Arc<LiveRules>>,
    path: Option<PathBuf>,
    enriched: Vec<String>,
    actions: Arc<Actions>,
    redis_url: String,
    security: RedisConfig,
    cluster: bool,
    metrics: Arc<Metrics>,
    /// Content of the last rejected file, so a bad file is reported once, not every interval.
    rejected: parking_lot::Mutex<Option<Vec<u8>>>,
    kick: (Sender<()>, Receiver<()>),
}

impl crate::envelope::RulesSource for RulesHandle {
    fn current_stamp(&self) -> crate::envelope::Stamp {
        self.current()
    }
}

impl RulesHandle {
    /// Loads the configured rules file (or bands only when none); an invalid file fails
    /// start-up with every problem. `enriched` are the enrichment names rules may use,
    /// `actions` the vocabulary they choose from; `redis_set` lists are read from
    /// `cfg.redis_url`, else `default_redis`, with `security`.
    pub fn load(
        cfg: &RulesConfig,
        (enriched, actions): (&[String], Arc<Actions>),
        default_redis: &str,
        security: &RedisConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, InvalidRules> {
        Self::load_on(cfg, (enriched, actions), (default_redis, false), security, metrics)
    }

    /// [`load`](Self::load), with `default_redis` a URL and whether it (and `cfg.redis_url`)
    /// names seed nodes of a Redis Cluster (`enrich.redis_cluster`).
    pub fn load_on(
        cfg: &RulesConfig,
        (enriched, actions): (&[String], Arc<Actions>),
        (default_redis, cluster): (&str, bool),
        security: &RedisConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, InvalidRules> {
        let path = (!cfg.file.is_empty()).then(|| PathBuf::from(&cfg.file));
        let set = match &path {
            Some(p) => RuleSet::load(p, enriched, &actions).map_err(InvalidRules)?,
            None => RuleSet::empty(),
        };
        let redis_url = if cfg.redis_url.is_empty() { default_redis.to_string() } else { cfg.redis_url.clone() };
        let lists = set.initial_lists.clone();
        let handle = Self {
            current: RwLock::new(Arc::new(LiveRules { set: Arc::new(set), lists })),
            path,
            enriched: enriched.to_vec(),
            actions,
            redis_url,
            security: security.clone(),
            cluster,
            metrics,
            rejected: parking_lot::Mutex::new(None),
            kick: bounded(1),
        };
        handle.refresh_lists();
        handle.publish_info();
        Ok(Arc::new(handle))
    }

    /// The rules in force now (one snapshot per batch).
    pub fn current(&self) -> Arc<LiveRules> {
        self.current.read().clone()
    }

    /// Asks the watcher to check the file now (SIGHUP, admin).
    pub fn reload_now(&self) {
        let _ = self.kick.0.try_send(());
    }

    /// Checks the file; swaps in a changed, valid version. Returns the version in force.
    pub fn check(&self) -> Arc<str> {
        let Some(path) = &self.path else { return self.current().set.version.clone() };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) => {
                self.reject(Vec::new(), vec![format!("{}: {e}", path.display())]);
                return self.current().set.version.clone();
            }
        };
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        // Parsing is cheap (a file of rules); its hash covers list files too.
        match RuleSet::parse(&text, dir, &self.enriched, &self.actions) {
            Ok(set) => {
                let now = self.current();
                if set.version != now.set.version {
                    tracing::info!(from = %now.set.version, to = %set.version, rules = set.rules.len(), "rules reloaded");
                    self.metrics.rules_reloads.with_label_values(&["applied"]).inc();
                    let lists = set.initial_lists.clone();
                    *self.current.write() = Arc::new(LiveRules { set: Arc::new(set), lists });
                    self.refresh_lists();
                    self.publish_info();
                    *self.rejected.lock() = None;
                }
            }
            Err(errors) => self.reject(text, errors),
        }
        self.current().set.version.clone()
    }

    fn reject(&self, text: Vec<u8>, errors: Vec<String>) {
        let mut last = self.rejected.lock();
        if last.as_deref() == Some(&text[..]) {
            return;
        }
        *last = Some(text);
        self.metrics.rules_reloads.with_label_values(&["rejected"]).inc();
        let serving = self.current().set.version.clone();
        for e in &errors {
            tracing::error!(error = %e, %serving, "rules file rejected; the previous rules keep serving");
        }
    }

    /// Re-reads every file and Redis list; a list that fails keeps its previous entries.
    pub fn refresh_lists(&self) {
        let live = self.current();
        if live.set.list_specs.is_empty() {
            return;
        }
        let mut lists = live.lists.clone();
        for (i, (name, spec)) in live.set.list_specs.iter().enumerate() {
            match fetch_list_on(spec, &self.redis_url, &self.security, self.cluster) {
                Ok(Some(set)) => {
                    self.metrics.rules_list_refreshes.with_label_values(&["ok"]).inc();
                    lists[i] = Arc::new(set);
                }
                Ok(None) => {}
                Err(e) => {
                    self.metrics.rules_list_refreshes.with_label_values(&["error"]).inc();
                    tracing::warn!(list = %name, error = %e, "list refresh failed; keeping its previous entries");
                }
            }
            self.metrics.rules_list_size.with_label_values(&[name]).set(lists[i].len() as i64);
        }
        let mut cur = self.current.write();
        // Only if no reload happened meanwhile (the new version refreshes its own lists).
        if Arc::ptr_eq(&cur.set, &live.set) {
            *cur = Arc::new(LiveRules { set: live.set.clone(), lists });
        }
    }

    fn publish_info(&self) {
        let live = self.current();
        self.metrics.rules_info.reset();
        self.metrics.rules_info.with_label_values(&[&*live.set.version, &live.set.rules.len().to_string()]).set(1);
    }

    /// The watcher (file checks and list refreshes), to run on its own thread until `cancel`
    /// is cancelled.
    pub fn watcher(self: &Arc<Self>, cfg: &RulesConfig, cancel: CancellationToken) -> impl FnOnce() + Send + 'static {
        let me = self.clone();
        let interval = Duration::from_millis(cfg.reload_interval_ms.max(10));
        let refresh = Duration::from_secs(cfg.list_refresh_s.max(1));
        move || {
            let mut last_refresh = Instant::now();
            while crate::backoff::wait_for_kick(&me.kick.1, interval, &cancel) {
                me.check();
                if last_refresh.elapsed() >= refresh {
                    last_refresh = Instant::now();
                    me.refresh_lists();
                }
            }
        }
    }
}

/// Current entries of a list: None for inline lists (they never change). A Redis set is read
/// from `redis_url` with `security`'s TLS and credentials.
pub fn fetch_list(
    spec: &ListSpec,
    redis_url: &str,
    security: &RedisConfig,
) -> Result<Option<HashSet<String>>, ListError> {
    fetch_list_on(spec, redis_url, security, false)
}

/// [`fetch_list`] from one node, or with `cluster` from the Redis Cluster whose seed nodes
/// `redis_url` lists.
pub fn fetch_list_on(
    spec: &ListSpec,
    redis_url: &str,
    security: &RedisConfig,
    cluster: bool,
) -> Result<Option<HashSet<String>>, ListError> {
    if let Some(f) = &spec.file {
        let t = std::fs::read_to_string(f).map_err(|source| ListError::File { path: f.clone(), source })?;
        return Ok(Some(read_list(&t).collect()));
    }
    if let Some(key) = &spec.redis_set {
        // The URL may carry a password: messages name only its redacted form.
        let url = crate::redact::redis_url(redis_url).into_owned();
        let reason = |e: redis::RedisError| crate::redact::redis_error(&e);
        let failed = |e| ListError::Redis { url: url.clone(), reason: reason(e) };
        let client = crate::core::redis::Client::new("rules.redis_url", redis_url, security, cluster)?;
        let mut conn = client.connect(Duration::from_secs(2)).map_err(failed)?;
        let members: HashSet<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query(&mut conn)
            .map_err(|e| ListError::Members { key: key.clone(), url: url.clone(), reason: reason(e) })?;
        return Ok(Some(members));
    }
    Ok(None)
}
