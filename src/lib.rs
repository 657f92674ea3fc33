//! verdict: a streaming event-scoring service.
//!
//! ```text
//! Kafka ──▶ consume ──▶ decode ──▶ score ──▶ rules ──▶ publish ──▶ decisions / review / dead-letter
//!           (batch,     (JSON/Avro, (ONNX      (bands →   (idempotent producer;
//!            pause on    model row)  Runtime)   action)    offsets stored only
//!            backpressure)                                 after every ack)
//! ```
//!
//! Module map:
//! * [`backoff`]: the one retry backoff (doubling, capped, cancellable).
//! * [`backtest`]: replay events through a baseline and a candidate; what would change.
//! * [`core`]: the types several stages share (fields, rows, manifest, clock, event, decision).
//! * [`config`]: one tree of settings, layered defaults → file → env, all errors at once.
//! * [`envelope`]: the envelope that carries source coordinates through the stages.
//! * [`consume`]: group consumer thread, batching, pause/resume, rebalance handling.
//! * [`decode`]: JSON / Confluent-Avro decoding and the manifest-driven model row.
//! * [`score`]: ONNX Runtime loading, manifest checks, one session per worker.
//! * [`rules`]: threshold bands → [`core::decision::Decision`].
//! * [`publish`]: decision / review / dead-letter records and the ordered acker.
//! * [`stage`]: the one shape of every stage ([`stage::Stage`]) and the batch they pass along.
//! * [`worker`]: a short loop running each batch through the stages (decode → enrich → score → decide → publish → drift).
//! * [`pipeline`]: wires the stages with bounded channels; start, shutdown, abort.
//! * [`telemetry`]: metric names, Prometheus registry, `/metrics` `/healthz` `/readyz`.
//! * [`error`]: error policies (retry / dead-letter / fatal) and dead-letter reasons.
//! * [`demo`]: mock cluster, synthetic transactions, the demo and benchmark driver.
//! * [`vectorize`]: the rows (and scores) the service would feed the model, for parity checks.
//! * [`enrich`]: per-entity sliding windows and online features (memory or Redis).
//! * [`reload`]: model hot reload (a new version's sessions and columns, offered by generation).
//! * [`rollout`]: guarded rollout of a new version (candidate, promotion, watch, rollback).
//! * [`redact`]: secrets (Redis passwords, secret librdkafka properties) masked in logs and errors.
//! * [`lograte`]: repeated errors logged once per window with a count.
//! * [`heap`]: the Rust heap allocator's settings (freed pages given back at once).
//! * [`watchdog`]: the stall watchdog behind `/readyz` (work waiting, nothing acknowledged).

#![warn(missing_docs)]

pub mod backoff;
pub mod backtest;
pub mod config;
pub mod consume;
pub mod core;
pub mod decode;
pub mod demo;
pub mod drift;
pub mod enrich;
pub mod envelope;
pub mod error;
#[doc(hidden)]
pub mod fault;
pub mod heap;
pub mod lograte;
pub mod pipeline;
pub mod publish;
pub mod redact;
pub mod reload;
pub mod rollout;
pub mod rules;
pub mod score;
pub mod stage;
pub mod telemetry;
pub mod vectorize;
pub mod watchdog;
pub mod worker;
