//! Metric names: one constant per Prometheus metric, with what it counts and its labels.
//! Every metric verdict exports is named here and nowhere else.

/// `verdict_events_total{stage,outcome}`: events leaving each stage, by outcome.
pub const EVENTS_TOTAL: &str = "verdict_events_total";
/// `verdict_dead_letters_total{reason}`: events routed to the dead-letter topic.
pub const DEAD_LETTERS_TOTAL: &str = "verdict_dead_letters_total";
/// `verdict_stage_seconds{stage}`: wall time per batch in each stage.
pub const STAGE_SECONDS: &str = "verdict_stage_seconds";
/// `verdict_enrich_part_seconds{part}`: wall time per batch in each part of the enrich
/// stage: `features` (online features), `owned` (partition-owned windows, turn waits
/// included), `shared` (shared windows, turnstile wait included).
pub const ENRICH_PART_SECONDS: &str = "verdict_enrich_part_seconds";
/// `verdict_batch_events`: events per dispatched batch.
pub const BATCH_EVENTS: &str = "verdict_batch_events";
/// `verdict_queue_depth{queue}`: batches waiting in each bounded queue.
pub const QUEUE_DEPTH: &str = "verdict_queue_depth";
/// `verdict_consumer_lag{topic,partition}`: messages behind the high watermark.
pub const CONSUMER_LAG: &str = "verdict_consumer_lag";
/// `verdict_consumer_offset_resets_total{topic,partition}`: times a partition's position
/// was outside its log and `auto.offset.reset` moved it to the earliest offset (the events
/// between were deleted by retention before verdict read them, or the topic was recreated).
pub const OFFSET_RESETS: &str = "verdict_consumer_offset_resets_total";
/// `verdict_partitions_assigned`: partitions this instance owns.
pub const PARTITIONS_ASSIGNED: &str = "verdict_partitions_assigned";
/// `verdict_model_info{model,version,execution_provider}`: 1 for the serving model.
pub const MODEL_INFO: &str = "verdict_model_info";
/// `verdict_execution_provider_fallbacks_total{requested,used}`.
pub const EP_FALLBACKS: &str = "verdict_execution_provider_fallbacks_total";
/// `verdict_pipeline_latency_seconds`: poll → every output acknowledged, per event.
pub const PIPELINE_LATENCY: &str = "verdict_pipeline_latency_seconds";
/// `verdict_event_latency_seconds`: Kafka message timestamp → decision acknowledged (ms resolution).
pub const EVENT_LATENCY: &str = "verdict_event_latency_seconds";
/// `verdict_commits_total{result}`: offset commits.
pub const COMMITS_TOTAL: &str = "verdict_commits_total";
/// `verdict_delivery_retries_total`: produce deliveries that failed and were re-sent.
pub const DELIVERY_RETRIES: &str = "verdict_delivery_retries_total";
/// `verdict_consumer_paused`: 1 while partitions are paused for backpressure.
pub const CONSUMER_PAUSED: &str = "verdict_consumer_paused";
/// `verdict_enrich_round_trips_total`: round trips to the state store (one per batch).
pub const ENRICH_ROUND_TRIPS: &str = "verdict_enrich_round_trips_total";
/// `verdict_enrich_commands_total`: script calls sent (one per entity per batch).
pub const ENRICH_COMMANDS: &str = "verdict_enrich_commands_total";
/// `verdict_window_updates_total{result}`: applied, replayed (fenced) or late.
pub const WINDOW_UPDATES: &str = "verdict_window_updates_total";
/// `verdict_enrich_failures_total`: batches whose state-store call failed.
pub const ENRICH_FAILURES: &str = "verdict_enrich_failures_total";
/// `verdict_degraded_events_total`: events decided with default features (store down).
pub const DEGRADED_EVENTS: &str = "verdict_degraded_events_total";
/// `verdict_state_store_up`: 1 when the last state-store call succeeded.
pub const STATE_STORE_UP: &str = "verdict_state_store_up";
/// `verdict_feature_cache_total{result}`: online-feature cache hits and misses.
pub const FEATURE_CACHE: &str = "verdict_feature_cache_total";
/// `verdict_window_state_cache_total{result}`: entity window groups stored in Redis by a
/// compare-and-set of verdict's copy of the state (`written`), whose copy had changed in
/// Redis meanwhile (`conflict`: applied by the script instead), or applied by the script
/// because there was no copy or it did not know a distinct value (`miss`).
pub const WINDOW_STATE_CACHE: &str = "verdict_window_state_cache_total";
/// `verdict_rule_hits_total{rule,mode}`: rules that fired, enforce or monitor.
pub const RULE_HITS: &str = "verdict_rule_hits_total";
/// `verdict_rule_errors_total`: rule conditions that could not be evaluated (absent value, type).
pub const RULE_ERRORS: &str = "verdict_rule_errors_total";
/// `verdict_rules_reloads_total{result}`: rules files applied or rejected.
pub const RULES_RELOADS: &str = "verdict_rules_reloads_total";
/// `verdict_rules_info{version,rules}`: 1 for the rules version in force.
pub const RULES_INFO: &str = "verdict_rules_info";
/// `verdict_rules_list_refreshes_total{result}`: named-list refreshes.
pub const RULES_LIST_REFRESHES: &str = "verdict_rules_list_refreshes_total";
/// `verdict_rules_list_entries{list}`: entries in each named list.
pub const RULES_LIST_SIZE: &str = "verdict_rules_list_entries";
/// `verdict_feature_psi{model,feature}`: PSI of the last drift window ("score" for the score).
pub const FEATURE_PSI: &str = "verdict_feature_psi";
/// `verdict_feature_ks{model,feature}`: KS statistic of the last drift window.
pub const FEATURE_KS: &str = "verdict_feature_ks";
/// `verdict_feature_mean{model,feature}`: mean of non-default values in the last window.
pub const FEATURE_MEAN: &str = "verdict_feature_mean";
/// `verdict_feature_default_rate{model,feature}`: share null or default-filled in the last window.
pub const FEATURE_DEFAULT_RATE: &str = "verdict_feature_default_rate";
/// `verdict_feature_out_of_range_rate{model,feature}`: share outside the training range.
pub const FEATURE_OUT_OF_RANGE_RATE: &str = "verdict_feature_out_of_range_rate";
/// `verdict_feature_drift_state{model,feature}`: 0 ok, 1 warn, 2 alert (PSI thresholds).
pub const FEATURE_DRIFT_STATE: &str = "verdict_feature_drift_state";
/// `verdict_action_rate{model,action}`: share of decisions per action in the last window.
pub const ACTION_RATE: &str = "verdict_action_rate";
/// `verdict_dead_letter_rate{model,reason}`: share of events dead-lettered in the last window.
pub const DEAD_LETTER_RATE: &str = "verdict_dead_letter_rate";
/// `verdict_labels_total{result}`: scored events kept / not_kept; labels joined, unknown, invalid.
pub const LABELS_TOTAL: &str = "verdict_labels_total";
/// `verdict_label_precision{model,threshold}`: precision of joined labels, last drift window.
pub const LABEL_PRECISION: &str = "verdict_label_precision";
/// `verdict_label_recall{model,threshold}`: recall of joined labels, last drift window.
pub const LABEL_RECALL: &str = "verdict_label_recall";
/// `verdict_label_brier{model}`: Brier score of joined labels, last drift window.
pub const LABEL_BRIER: &str = "verdict_label_brier";
/// `verdict_model_reloads_total{result}`: new model versions applied or rejected.
pub const MODEL_RELOADS: &str = "verdict_model_reloads_total";
/// `verdict_model_transitions_total{to}`: guarded-rollout transitions (candidate, promoted,
/// refused, rolled_back, kept).
pub const MODEL_TRANSITIONS: &str = "verdict_model_transitions_total";
/// `verdict_shadow_decisions_total{agree}`: shadow verdicts, agreeing with the decision or not.
pub const SHADOW_DECISIONS: &str = "verdict_shadow_decisions_total";
/// `verdict_fallback_decisions_total`: events decided without the model (deadline passed).
pub const FALLBACK_DECISIONS: &str = "verdict_fallback_decisions_total";
/// `verdict_deadline_reserve_seconds`: time the deadline check keeps back beyond its predicted
/// scoring time (a decaying maximum of how far check → acknowledgement exceeded it).
pub const DEADLINE_RESERVE: &str = "verdict_deadline_reserve_seconds";
/// `verdict_batch_limit`: the current batch-size cap (`batch.score_budget_us`).
pub const BATCH_LIMIT: &str = "verdict_batch_limit";
/// `verdict_drift_windows_total`: drift windows closed and published.
pub const DRIFT_WINDOWS: &str = "verdict_drift_windows_total";
/// `verdict_feature_defaults_total`: model inputs filled with their default.
pub const FEATURE_DEFAULTS: &str = "verdict_feature_defaults_total";

/// `verdict_produce_errors_total{error,action}`: produce errors by librdkafka error code and
/// what verdict did (`retried`, `dead_lettered`, `skipped`, `stopped`).
pub const PRODUCE_ERRORS: &str = "verdict_produce_errors_total";
/// `verdict_dead_letters_truncated_total`: dead-letter copies cut to fit the producer's limit.
pub const DEAD_LETTERS_TRUNCATED: &str = "verdict_dead_letters_truncated_total";
/// `verdict_panics_total{thread}`: panics caught while processing a batch (the batch's events
/// are dead-lettered as `internal_error`, the thread goes on).
pub const PANICS: &str = "verdict_panics_total";
/// `verdict_pipeline_failed`: 1 once a pipeline thread ended unexpectedly (`/healthz` fails
/// and the process exits).
pub const PIPELINE_FAILED: &str = "verdict_pipeline_failed";
/// `verdict_stalled`: 1 while batches are in flight but none was acknowledged for
/// `telemetry.stall_timeout_s` (`/readyz` fails).
pub const STALLED: &str = "verdict_stalled";
/// `verdict_last_progress_timestamp_seconds`: wall-clock time a batch was last acknowledged.
pub const LAST_PROGRESS: &str = "verdict_last_progress_timestamp_seconds";
/// `verdict_log_suppressed_total{source}`: repeated log lines dropped by the rate limit.
pub const LOG_SUPPRESSED: &str = "verdict_log_suppressed_total";
/// `verdict_feature_hash_missing_total{entity}`: online-feature reads that found no hash.
pub const FEATURE_HASH_MISSING: &str = "verdict_feature_hash_missing_total";
/// `verdict_checkpoints_total{result}`: partition state checkpoints written, fenced (another
/// instance owns the partition now) or failed.
pub const CHECKPOINTS: &str = "verdict_checkpoints_total";
/// `verdict_checkpoint_fields_total`: hash fields written or deleted by checkpoints.
pub const CHECKPOINT_FIELDS: &str = "verdict_checkpoint_fields_total";
/// `verdict_checkpoint_seconds`: time of one checkpoint write.
pub const CHECKPOINT_SECONDS: &str = "verdict_checkpoint_seconds";
/// `verdict_state_loads_total{result}`: entity states read from Redis on first touch.
pub const STATE_LOADS: &str = "verdict_state_loads_total";
/// `verdict_window_evictions_total{reason}`: partition-owned entities dropped from memory.
pub const WINDOW_EVICTIONS: &str = "verdict_window_evictions_total";
/// `verdict_state_entities`: partition-owned entities held in memory.
pub const STATE_ENTITIES: &str = "verdict_state_entities";
/// `verdict_redelivered_events_total`: events decided again after a crash or rebalance.
pub const REDELIVERED: &str = "verdict_redelivered_events_total";
/// `verdict_partition_resume_seconds`: partition assignment → first decided batch.
pub const RESUME_SECONDS: &str = "verdict_partition_resume_seconds";
/// `verdict_cpu_seconds_per_1k_decisions`: the process's CPU-seconds (every thread, user and
/// system) per 1,000 decisions over the last `cost.window_s`; NaN when nothing was decided.
pub const CPU_SECONDS_PER_1K_DECISIONS: &str = "verdict_cpu_seconds_per_1k_decisions";
/// `verdict_usd_per_million_decisions`: those CPU-seconds at the price of a core-second
/// (`cost.instance_usd_per_hour / 3600 / cost.instance_cores`), per million decisions;
/// exported only with both set.
pub const USD_PER_MILLION_DECISIONS: &str = "verdict_usd_per_million_decisions";
