//! The bottom of the crate: the types more than one stage names, so that no stage has to
//! import another.
//!
//! * [`field`]: field paths, the borrowed [`field::Field`] view and the owned
//!   [`field::FieldValue`] (decode reads them; enrich and the rules consume them).
//! * [`rows`]: the model input rows of a batch (decode fills, enrich completes, score feeds,
//!   drift reads).
//! * [`manifest`]: the model manifest, the contract between the rows decode builds and the
//!   session score runs.
//! * [`test_vector`]: the model file's hash and known answers a manifest may carry.
//! * [`clock`]: the wall clock.
//! * [`event`]: the decoded event, its decode error, and the entity inputs and paths that
//!   pass between decode and enrich.
//! * [`actions`]: the configured actions (approve / review / decline by default), their score
//!   bands and the fallback action.
//! * [`decision`]: the outcome of one event (its action, rule hits, decision, a multi-output
//!   model's classes) the decide stage makes and publish and drift record.
//! * [`kafka`]: the Kafka connection, topics and client overrides (consume and publish).
//! * [`redis`]: the `[redis]` security settings and the one function that makes a Redis
//!   client from a URL and them (enrich, rules and drift connect through it).
//! * [`kafka_security`]: `[kafka.security]` (TLS, SASL) and its mapping onto librdkafka
//!   properties, for every Kafka client.
//! * [`output`]: the record encoding and the sink a stage writes records through (publish
//!   implements it; drift uses it).
//! * [`delivery`]: a batch's count of output records awaiting their delivery reports (the
//!   publish stage counts them up, the producer's reports down; the acker waits on it).
//!
//! Nothing here imports a stage, `config` or a top module (`tests/layers.rs` checks it):
//! types flow down.

pub mod actions;
pub mod clock;
pub mod decision;
pub mod delivery;
pub mod event;
pub mod field;
pub mod kafka;
pub mod kafka_security;
pub mod manifest;
pub mod output;
pub mod pool;
pub mod redis;
pub mod rows;
pub mod test_vector;
