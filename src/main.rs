//! The `verdict` command line: thin wrappers over the library.

mod check;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use verdict::config::{self, Config};
use verdict::demo::{self, DemoLog, DemoOptions, DemoReport, Generator};
use verdict::pipeline::Pipeline;
use verdict::telemetry::{self, Metrics};

/// mimalloc for Rust's heap: glibc's malloc and free were ~20% of the process's CPU on the
/// spine bench's backlog (BENCHMARKS.md, issue 23). librdkafka and ONNX Runtime keep glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "verdict", version, about = "Streaming event scoring: Kafka in, ONNX Runtime, decisions out")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service against the configured Kafka cluster.
    Run {
        /// TOML config file, layered over the built-in defaults; repeat to layer several (the
        /// last wins; e.g. `-c config/demo.toml -c mine.toml`); env VERDICT__SECTION__KEY wins.
        #[arg(long, short)]
        config: Vec<PathBuf>,
    },
    /// Run the whole pipeline in-process (mock Kafka cluster, synthetic transactions, demo model).
    /// Settings: the defaults, then config/demo.toml (built in), then --config.
    Demo {
        /// Config file(s) over the demo's (Kafka settings are replaced by the in-process cluster).
        #[arg(long, short)]
        config: Vec<PathBuf>,
        /// Where the log goes (the screen shows progress only); default: verdict-demo.log in
        /// the system's temporary directory.
        #[arg(long)]
        log_file: Option<PathBuf>,
        /// Number of events to generate.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Offered load in events/s (0 = as fast as possible).
        #[arg(long, default_value_t = 50_000)]
        rate: u64,
        /// Input partitions.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Fraction of malformed events (they land in the dead-letter topic).
        #[arg(long, default_value_t = 0.001)]
        bad_fraction: f64,
        /// Send events as Confluent-framed Avro instead of JSON.
        #[arg(long)]
        avro: bool,
        /// Keep window state and online features in this Redis (e.g. redis://127.0.0.1:6379/)
        /// instead of in process.
        #[arg(long)]
        redis: Option<String>,
        /// Cards (entities) the events are spread over (heavy-tailed).
        #[arg(long, default_value_t = 50_000)]
        cards: u64,
        /// Before the timed run, decide this many hours of event time as fast as possible, so
        /// the run starts with full windows (a day is ~9.1M events).
        #[arg(long, default_value_t = 0.0)]
        warm_hours: f64,
        /// `fraud` (card transactions, config/demo.toml) or `clickstream` (page views in user
        /// sessions scored by the next-category model, config/clickstream.toml; JSON only).
        #[arg(long, value_enum, default_value_t = ScenarioArg::Fraud)]
        scenario: ScenarioArg,
    },
    /// Check a config as `run` would before consuming (model, schemas, rules, every Kafka
    /// client property); prints every problem and exits 2 if any.
    CheckConfig {
        /// TOML config file(s), layered as for `run`.
        #[arg(long, short)]
        config: Vec<PathBuf>,
        /// Also reach the services that can be checked without side effects (the schema
        /// registry: `GET /subjects`).
        #[arg(long)]
        online: bool,
    },
    /// Print the decision records' Avro schema for a config's actions (`decide.actions`):
    /// what to register when verdict does not register it (no `decode.schema_registry.url`).
    DecisionSchema {
        /// TOML config file(s), layered as for `run`.
        #[arg(long, short)]
        config: Vec<PathBuf>,
    },
    /// Print the model input rows (and optionally scores) verdict builds for events in a
    /// JSON-lines file or an Avro object container file, one JSON object per event: the data
    /// scientist's parity tool. Windows are computed in process (memory semantics, events in
    /// file order).
    Vectorize {
        /// Model directory (manifest.json + .onnx).
        #[arg(long)]
        model: PathBuf,
        /// Events: JSON lines, or an Avro object container file (decoded as verdict decodes
        /// Confluent-framed Avro, with the file's schema).
        #[arg(long)]
        events: PathBuf,
        /// Config file(s) (decode field mapping, enrich entities), e.g. config/demo.toml.
        #[arg(long, short)]
        config: Vec<PathBuf>,
        /// Also score each row with ONNX Runtime.
        #[arg(long)]
        score: bool,
    },
    /// Validate a rules file (every problem listed); with --events, print the decision and
    /// the rules that fired for each event of a JSON-lines sample: the rule author's tool.
    CheckRules {
        /// Rules file (TOML).
        file: PathBuf,
        /// JSON-lines sample events (decoded, windowed in process and scored as in service).
        #[arg(long)]
        events: Option<PathBuf>,
        /// Config file(s) (decode mapping, enrich entities, model, bands), e.g. config/demo.toml.
        #[arg(long, short)]
        config: Vec<PathBuf>,
    },
    /// Replay events through a baseline (--model, --rules, --config) and a candidate
    /// (--candidate-model / --candidate-rules / --candidate-config), or several (--candidate,
    /// repeated), in one pass; writes what would change as OUT.json and a self-contained
    /// OUT.html (see README "Backtest").
    Backtest(Box<BacktestArgs>),
    /// Write synthetic events as JSON lines: transactions, or a clickstream (training data with --labels).
    Generate {
        /// Number of events.
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Include the ground truth: the fraud `label`, or a click's `next_category`.
        #[arg(long)]
        labels: bool,
        /// `fraud` (card transactions) or `clickstream` (page views in user sessions).
        #[arg(long, value_enum, default_value_t = ScenarioArg::Fraud)]
        scenario: ScenarioArg,
    },
}

/// The synthetic events of `demo` and `generate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ScenarioArg {
    /// Card transactions.
    Fraud,
    /// Page views and clicks in user sessions.
    Clickstream,
}

#[derive(clap::Args)]
struct BacktestArgs {
    /// Baseline model directory (manifest.json + .onnx).
    #[arg(long)]
    model: PathBuf,
    /// Events: JSON lines, or an Avro object container file.
    #[arg(long, required_unless_present = "topic", conflicts_with = "topic")]
    events: Option<PathBuf>,
    /// Events from a Kafka topic instead ([kafka] brokers and security of --config), every
    /// partition from --from to --to, merged in timestamp order.
    #[arg(long)]
    topic: Option<String>,
    /// Start of the topic range: earliest, an offset (every partition), an RFC 3339 time or @<ms>.
    #[arg(long, default_value = "earliest", requires = "topic", value_parser = verdict::backtest::kafka::Position::parse)]
    from: verdict::backtest::kafka::Position,
    /// End of the topic range (exclusive): end (as the backtest starts), an offset, a time or @<ms>.
    #[arg(long, default_value = "end", requires = "topic", value_parser = verdict::backtest::kafka::Position::parse)]
    to: verdict::backtest::kafka::Position,
    /// Baseline config file(s) (decode mapping, enrich entities, decide bands), e.g. config/demo.toml.
    #[arg(long, short)]
    config: Vec<PathBuf>,
    /// Baseline rules file (default: rules.file of the config; none: bands alone).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Candidate model directory (default: the baseline's).
    #[arg(long)]
    candidate_model: Option<PathBuf>,
    /// Candidate rules file (default: the baseline's, or rules.file of --candidate-config).
    #[arg(long)]
    candidate_rules: Option<PathBuf>,
    /// Config file layered over the baseline's for the candidate (its [decide] thresholds).
    #[arg(long)]
    candidate_config: Option<PathBuf>,
    /// A (further) candidate, repeatable: name=NAME,model=DIR,rules=FILE,config=FILE (any of
    /// them; config repeatable; what is not given is the baseline's). All are scored in the
    /// same pass; with the --candidate-* flags, those make the first candidate ("candidate").
    #[arg(long = "candidate", value_name = "SPEC", value_parser = verdict::backtest::CandidateSpec::parse)]
    candidates: Vec<verdict::backtest::CandidateSpec>,
    /// Events replayed first through the windows only (not scored, not reported), so the
    /// windows of --events start full: JSON lines or an Avro container of the same format.
    #[arg(long, conflicts_with = "warm_from")]
    warm_events: Option<PathBuf>,
    /// With --topic: replay the topic from this position up to --from through the windows
    /// first (not scored, not reported).
    #[arg(long, requires = "topic", value_parser = verdict::backtest::kafka::Position::parse)]
    warm_from: Option<verdict::backtest::kafka::Position>,
    /// Labels: JSON lines of {"event_id", "label"} (default: the events' --label-field).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Labels from a Kafka topic of the same JSON messages (read whole, up to its end at start).
    #[arg(long, conflicts_with = "labels")]
    labels_topic: Option<String>,
    /// Event field holding the label when there is no labels file.
    #[arg(long, default_value = "label")]
    label_field: String,
    /// Event field summed in the flip matrix and costs (default: the first entity's value_field).
    #[arg(long)]
    value_field: Option<String>,
    /// Flipped events listed (largest score change first).
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Report path without extension: writes OUT.json and OUT.html.
    #[arg(long, default_value = "backtest")]
    out: PathBuf,
    /// Cost of a missed fraud, as a factor of its value.
    #[arg(long, default_value_t = 1.0)]
    cost_missed_fraud_factor: f64,
    /// Cost of declining a legitimate event.
    #[arg(long, default_value_t = 5.0)]
    cost_false_decline: f64,
    /// Cost of one review case.
    #[arg(long, default_value_t = 2.0)]
    cost_review: f64,
    /// Review capacity as a share of events (0..1) for the cost-minimizing thresholds.
    #[arg(long)]
    review_capacity_share: Option<f64>,
    /// Review capacity in cases per hour of event time.
    #[arg(long)]
    review_capacity_per_hour: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    no_huge_pages();
    verdict::heap::tune();
    match dispatch(Cli::parse()) {
        // The reader of stdout went away (`verdict generate | head`): what was asked for is
        // written as far as anyone reads it; not an error.
        Err(e) if broken_pipe(&e) => std::process::exit(0),
        r => r,
    }
}

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` is set:
/// mimalloc asks for them on its arenas, and a 2 MiB page is resident as soon as one of its
/// bytes is touched. With 50,000 cards and full windows, `verdict run` held 225–228 MiB with
/// them and 184 MiB without, at the same CPU per event (BENCHMARKS.md, issue 24).
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// Whether `e` is, at its root, a write to a closed pipe.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => run(config),
        Command::Demo {
            config,
            log_file,
            events,
            rate,
            partitions,
            bad_fraction,
            avro,
            redis,
            cards,
            warm_hours,
            scenario,
        } => {
            let scenario = match scenario {
                ScenarioArg::Fraud => demo::Scenario::Fraud,
                ScenarioArg::Clickstream => demo::Scenario::Clickstream,
            };
            if avro && scenario == demo::Scenario::Clickstream {
                anyhow::bail!("--avro: the clickstream scenario sends JSON only");
            }
            let mut cfg = exit_on_problems(match scenario {
                demo::Scenario::Fraud => config::load_demo(&paths(&config)),
                demo::Scenario::Clickstream => config::load_clickstream_demo(&paths(&config)),
            });
            if let Some(url) = redis {
                cfg.enrich.backend = verdict::enrich::Backend::Redis;
                cfg.enrich.redis_url = url;
            }
            let log_path = log_file.unwrap_or_else(|| std::env::temp_dir().join("verdict-demo.log"));
            let log = DemoLog::init(&log_path, &cfg.telemetry.log_format, &log_filter(&cfg.telemetry.log_level))
                .with_context(|| format!("creating the log file {}", log_path.display()))?;
            let warm_events = (warm_hours.max(0.0) * 3_600_000.0 / scenario.mean_step_ms()) as u64;
            let opts = DemoOptions {
                events,
                rate,
                partitions,
                bad_fraction,
                avro,
                cards: cards.max(1),
                warm_events,
                scenario,
                ..DemoOptions::default()
            };
            eprintln!(
                "verdict demo: {events} events at {} over {partitions} partitions, in-process Kafka mock cluster (log: {})",
                if rate == 0 { "full speed".to_string() } else { format!("{rate} ev/s") },
                log.path().display()
            );
            let r = demo::run(cfg, &opts)?;
            print_demo_summary(&r);
            match log.warnings() {
                0 => println!("log                 no warnings, see {}", log.path().display()),
                n => println!("log                 {n} warnings logged, see {}", log.path().display()),
            }
            Ok(())
        }
        Command::CheckConfig { config, online } => {
            let loaded = config::load_layers(&[config::DEFAULTS_TOML], &paths(&config), std::env::vars().collect());
            let mut problems = loaded.problems;
            let Some(cfg) = loaded.config else { exit_with(&problems) };
            // Warnings (an execution provider unavailable) are worth seeing; progress is not.
            telemetry::init_logging(&cfg.telemetry.log_format, "warn");
            problems.extend(check::check(&cfg, &problems));
            if online && problems.is_empty() {
                problems.extend(check::online(&cfg));
            }
            if !problems.is_empty() {
                exit_with(&problems);
            }
            println!(
                "config OK: consuming {:?} from {} as group '{}', model {}",
                cfg.kafka.input_topics,
                cfg.kafka.brokers,
                cfg.kafka.group_id,
                cfg.model.dir.display()
            );
            Ok(())
        }
        Command::DecisionSchema { config } => {
            let loaded = config::load_layers(&[config::DEFAULTS_TOML], &paths(&config), std::env::vars().collect());
            let Some(cfg) = loaded.config else { exit_with(&loaded.problems) };
            match cfg.decide.vocabulary() {
                Ok(actions) => println!("{}", verdict::decode::registry::decision_schema(&actions)),
                Err(problems) => exit_with(&problems),
            }
            Ok(())
        }
        Command::Vectorize { model, events, config, score } => {
            // --model is the top layer (model.dir is required, so it must be in place to validate).
            let mut env: std::collections::HashMap<String, String> = std::env::vars().collect();
            env.insert("VERDICT__MODEL__DIR".into(), model.display().to_string());
            let mut cfg =
                exit_on_problems(config::checked(config::load_layers(&[config::DEFAULTS_TOML], &paths(&config), env)));
            cfg.model.workers = 1;
            Ok(verdict::vectorize::run(&cfg, &events, score, &mut std::io::stdout().lock())?)
        }
        Command::CheckRules { file, events, config } => {
            let cfg = load_or_exit(&config);
            let ok = verdict::vectorize::check_rules(&cfg, &file, events.as_deref(), &mut std::io::stdout().lock())?;
            if !ok {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Backtest(args) => backtest(*args),
        Command::Generate { count, seed, labels, scenario } => {
            let out = std::io::stdout();
            let mut out = std::io::BufWriter::new(out.lock());
            match scenario {
                ScenarioArg::Fraud => {
                    let mut g = Generator::new(seed, 50_000, 1_764_000_000_000);
                    if labels {
                        g = g.with_labels();
                    }
                    for _ in 0..count {
                        out.write_all(&g.next_event().to_json())?;
                        out.write_all(b"\n")?;
                    }
                }
                ScenarioArg::Clickstream => {
                    let mut g = demo::clickstream::ClickGenerator::new(seed, 20_000, 1_764_000_000_000);
                    if labels {
                        g = g.with_labels();
                    }
                    for _ in 0..count {
                        out.write_all(&g.next_event().to_json())?;
                        out.write_all(b"\n")?;
                    }
                }
            }
            out.flush()?;
            Ok(())
        }
    }
}

/// `verdict backtest`: loads both sides' configs, runs, writes the JSON and HTML reports.
fn backtest(a: BacktestArgs) -> anyhow::Result<()> {
    let load = |model: &std::path::Path, files: &[PathBuf]| {
        let mut env: std::collections::HashMap<String, String> = std::env::vars().collect();
        env.insert("VERDICT__MODEL__DIR".into(), model.display().to_string());
        let mut cfg =
            exit_on_problems(config::checked(config::load_layers(&[config::DEFAULTS_TOML], &paths(files), env)));
        cfg.model.workers = 1;
        cfg
    };
    let base = load(&a.model, &a.config);
    let file = |f: &str| (!f.is_empty()).then(|| PathBuf::from(f));
    let rules = a.rules.clone().or_else(|| file(&base.rules.file));
    // The --candidate-* flags make one candidate (as without --candidate, where an absent
    // flag means the baseline's), then each --candidate in order.
    let flags = a.candidate_model.is_some() || a.candidate_rules.is_some() || a.candidate_config.is_some();
    let mut specs = Vec::new();
    if flags || a.candidates.is_empty() {
        specs.push(verdict::backtest::CandidateSpec {
            name: Some("candidate".into()),
            model: a.candidate_model.clone(),
            rules: a.candidate_rules.clone(),
            configs: a.candidate_config.iter().cloned().collect(),
        });
    }
    specs.extend(a.candidates.iter().cloned());
    let mut cands: Vec<verdict::backtest::Candidate> = Vec::new();
    for (k, spec) in specs.into_iter().enumerate() {
        let name = spec.name.unwrap_or_else(|| format!("candidate-{}", k + 1));
        if name == "baseline" || cands.iter().any(|c| c.name == name) {
            anyhow::bail!("--candidate name={name}: each candidate needs its own name, not \"baseline\"");
        }
        let files: Vec<PathBuf> = a.config.iter().chain(&spec.configs).cloned().collect();
        let config = load(spec.model.as_deref().unwrap_or(&a.model), &files);
        let rules = spec.rules.or_else(|| match config.rules.file != base.rules.file {
            true => file(&config.rules.file),
            false => rules.clone(),
        });
        cands.push(verdict::backtest::Candidate { name, config, rules });
    }
    let value_field = a.value_field.clone().unwrap_or_else(|| {
        base.enrich.entities.iter().find_map(|e| e.value_field.clone()).unwrap_or_else(|| "amount".into())
    });
    use verdict::backtest::{Events, Labels};
    let (events, warm) = match (a.events, a.topic) {
        (Some(path), _) => (Events::File(path), a.warm_events.map(Events::File)),
        (None, Some(name)) => {
            let warm = match (a.warm_events, a.warm_from) {
                (Some(path), _) => Some(Events::File(path)),
                (None, Some(_)) if a.from == verdict::backtest::kafka::Position::Edge => {
                    anyhow::bail!("--warm-from replays the topic up to --from: give --from an offset or a time")
                }
                (None, Some(from)) => Some(Events::Topic { name: name.clone(), from, to: a.from }),
                (None, None) => None,
            };
            (Events::Topic { name, from: a.from, to: a.to }, warm)
        }
        (None, None) => unreachable!("clap requires --events or --topic"),
    };
    let labels = a.labels.map(Labels::File).or(a.labels_topic.map(Labels::Topic));
    let opts = verdict::backtest::Options {
        events,
        warm,
        labels,
        label_field: a.label_field,
        value_field,
        rules,
        top_n: a.top,
        costs: verdict::backtest::Costs {
            missed_fraud_factor: a.cost_missed_fraud_factor,
            false_decline: a.cost_false_decline,
            review: a.cost_review,
            review_capacity_share: a.review_capacity_share,
            review_capacity_per_hour: a.review_capacity_per_hour,
        },
    };
    let report = verdict::backtest::backtest(&opts, &base, &cands)?;
    let (json_path, html_path) = (a.out.with_extension("json"), a.out.with_extension("html"));
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(&html_path, verdict::backtest::report_html::render(&report))
        .with_context(|| format!("writing {}", html_path.display()))?;
    let s = &report["summary"];
    let flipped: Vec<String> = report["candidates"].as_array().map_or_else(Vec::new, |c| {
        c.iter().map(|c| format!("{} {}", c["name"].as_str().unwrap_or(""), c["flipped"])).collect()
    });
    println!(
        "backtest: {} events ({} decided, {} dead-lettered) in {:.2} s ({:.0} events/s); flipped: {}",
        s["events"],
        s["decided"],
        s["dead_lettered"],
        s["seconds"].as_f64().unwrap_or(0.0),
        s["events_per_s"].as_f64().unwrap_or(0.0),
        flipped.join(", ")
    );
    println!("report: {} and {}", json_path.display(), html_path.display());
    Ok(())
}

/// Loads config or prints every problem and exits 2.
fn load_or_exit(files: &[PathBuf]) -> Config {
    exit_on_problems(config::load_files(&paths(files)))
}

fn paths(files: &[PathBuf]) -> Vec<&std::path::Path> {
    files.iter().map(PathBuf::as_path).collect()
}

fn exit_on_problems(loaded: Result<Config, config::ConfigErrors>) -> Config {
    loaded.unwrap_or_else(|e| exit_with(&e.0))
}

/// Prints every problem and exits 2.
fn exit_with(problems: &[String]) -> ! {
    eprintln!("{} problem(s) in configuration:", problems.len());
    for p in problems {
        eprintln!("  - {p}");
    }
    std::process::exit(2);
}

/// The log filter for `telemetry.log_level`: ONNX Runtime's own log (target `ort`: about
/// 90 INFO lines per start, one per graph transformer and allocator) stays at warn unless
/// the filter names `ort` itself.
///
/// This also hides ort's INFO line "ort 2.0.0-rc.15 was designed for ONNX Runtime 1.31.x
/// and may have compatibility issues with ... version 1.32.0": ort rc.15 has no `api-32`
/// feature (api-31 is its newest); it asks the library for C API version 31, which 1.32
/// serves unchanged (ONNX Runtime's C API only appends, and refuses an unknown version
/// loudly instead), and every session is validated against its manifest at load, so the
/// line is expected and harmless with scripts/fetch-ort.sh's 1.32.0.
fn log_filter(level: &str) -> String {
    let names_ort = level.split(',').any(|d| {
        let target = d.split('=').next().unwrap_or_default().trim();
        target == "ort" || target.starts_with("ort::")
    });
    if names_ort {
        level.to_string()
    } else {
        format!("{level},ort=warn")
    }
}

fn run(path: Vec<PathBuf>) -> anyhow::Result<()> {
    let cfg = load_or_exit(&path);
    telemetry::init_logging(&cfg.telemetry.log_format, &log_filter(&cfg.telemetry.log_level));
    // Test-only fault injection (tests/guards.rs); nothing is armed without VERDICT_FAULTS.
    match verdict::fault::arm_from_env() {
        Ok(0) => {}
        Ok(n) => tracing::warn!(faults = n, "VERDICT_FAULTS set: test faults armed"),
        Err(e) => anyhow::bail!(e),
    }
    let metrics = Metrics::new();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let pipeline = Pipeline::start(&cfg, metrics.clone()).map_err(|e| {
        anyhow::anyhow!("starting pipeline: {}", verdict::redact::Secrets::of(&cfg).scrub(&e.to_string()))
    })?;
    tracing::info!(brokers = %cfg.kafka.brokers, topics = ?cfg.kafka.input_topics, group = %cfg.kafka.group_id, "verdict running");

    let shutdown = tokio_util::sync::CancellationToken::new();
    if !cfg.telemetry.listen.is_empty() {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(&cfg.telemetry.listen))
            .with_context(|| format!("binding {}", cfg.telemetry.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics /healthz /readyz");
        let (m, s) = (metrics.clone(), shutdown.clone());
        rt.spawn(async move {
            if let Err(e) = telemetry::serve(listener, m, async move { s.cancelled().await }).await {
                tracing::error!(error = %e, "telemetry server failed");
            }
        });
    }
    let rules = pipeline.rules().clone();
    let models = pipeline.models().clone();
    rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: checking the rules file and the model directory");
            rules.reload_now();
            models.reload_now();
        }
    });
    // Runs until a signal, or until the pipeline cannot go on (a thread ended, a refused
    // output under on_refused = "stop", a fatal producer error): then it drains what it can
    // and exits non-zero, so an orchestrator restarts it.
    let failed = rt.block_on(async {
        tokio::select! {
            _ = wait_for_signal() => None,
            why = wait_for_failure(&metrics) => Some(why),
        }
    });
    match &failed {
        None => tracing::info!("signal received; draining (send again to exit at once)"),
        Some(why) => tracing::error!(reason = %why, "pipeline failed; stopping"),
    }
    rt.spawn(async {
        wait_for_signal().await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
    let report = pipeline.shutdown(Duration::from_secs(cfg.shutdown.timeout_s));
    shutdown.cancel();
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Some(why) = failed {
        anyhow::bail!("pipeline failed: {why}");
    }
    if report.clean {
        Ok(())
    } else {
        anyhow::bail!(
            "shutdown did not finish within {} s; unacknowledged events will be re-processed",
            cfg.shutdown.timeout_s
        )
    }
}

/// Resolves with the reason once the pipeline has failed.
async fn wait_for_failure(metrics: &Metrics) -> String {
    loop {
        if let Some(why) = metrics.guards.failure() {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn print_demo_summary(r: &DemoReport) {
    println!("\n== summary ==");
    println!("events produced     {}", r.produced);
    if r.warm > 0 {
        println!("warm-up             {} events decided before the timed run (not in throughput)", r.warm);
    }
    let counts: Vec<String> = r.actions.iter().map(|(a, n)| format!("{a} {n}")).collect();
    println!("decisions           {}  ({})", r.decided, counts.join(", "));
    println!("dead-lettered       {}", r.dead_lettered);
    let missing = r.produced.saturating_sub(r.decided + r.dead_lettered);
    if missing > 0 {
        println!(
            "not decided         {missing}  (the in-process mock cluster keeps ~5 MiB per partition: a backlog past \
             it at --rate loses the oldest events; a lower --rate or more --partitions keep them)"
        );
    }
    println!("elapsed             {:.2} s", r.elapsed.as_secs_f64());
    println!("throughput          {:.0} events/s", r.events_per_sec());
    println!("latency p50         {:.3} ms", r.latency_us[0] as f64 / 1e3);
    println!("latency p99         {:.3} ms", r.latency_us[1] as f64 / 1e3);
    println!("latency p99.9       {:.3} ms", r.latency_us[2] as f64 / 1e3);
    if let Some(s) = r.steady {
        println!(
            "after {} s warm-up   p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  ({} events)",
            demo::WARM_UP.as_secs(),
            s.latency_us[0] as f64 / 1e3,
            s.latency_us[1] as f64 / 1e3,
            s.latency_us[2] as f64 / 1e3,
            s.events
        );
    }
    println!("execution provider  {}", r.execution_provider);
    println!("cost                {}  (whole process: mock broker and producer included)", r.cost);
    let [expired, bound] = r.state;
    println!(
        "window state        entities let go: {expired} with all windows expired, {bound} past enrich.max_entities"
    );
}
