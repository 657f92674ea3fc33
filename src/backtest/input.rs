//! The backtest's inputs: the events read in batches as the service would consume them
//! (JSON lines streamed; an Avro container re-encoded as Confluent frames of its schema; a
//! Kafka topic range, see [`super::kafka`]), the optional labels file, and the progress line
//! on a terminal.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::kafka::TopicRange;
use super::{BacktestError, Events};
use crate::core::kafka::KafkaConfig;

/// Where the events come from.
enum Source {
    /// JSON lines, streamed.
    Lines(BufReader<std::fs::File>),
    /// Avro container records, already framed (the container is read whole).
    Records(std::vec::IntoIter<(usize, Vec<u8>)>),
    /// A Kafka topic range, merged across partitions in timestamp order.
    Topic(Box<TopicRange>),
}

/// The events file, read in batches.
pub struct Input {
    source: Source,
    /// Bytes in the file.
    pub total_bytes: u64,
    read_bytes: u64,
    line: u64,
    /// An Avro container's writer schema.
    pub schema: Option<apache_avro::Schema>,
    buf: Vec<u8>,
}

impl Input {
    /// Opens the events: a file, or a topic range read with `kafka`'s brokers and security.
    pub fn open(events: &Events, kafka: &KafkaConfig) -> Result<Self, BacktestError> {
        match events {
            Events::File(path) => Self::open_file(path),
            Events::Topic { name, from, to } => {
                let range = TopicRange::open(kafka, name, *from, *to)?;
                let total_bytes = range.total;
                let source = Source::Topic(Box::new(range));
                Ok(Self { source, total_bytes, read_bytes: 0, line: 0, schema: None, buf: Vec::new() })
            }
        }
    }

    /// The topic range's partitions (partition, first offset, end offset), if reading one.
    pub fn bounds(&self) -> Option<&[(i32, i64, i64)]> {
        match &self.source {
            Source::Topic(t) => Some(&t.bounds),
            _ => None,
        }
    }

    /// Opens `path`: an Avro object container file (by its magic) or JSON lines.
    fn open_file(path: &Path) -> Result<Self, BacktestError> {
        let bad = |e: std::io::Error| BacktestError::Input(format!("{}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(bad)?;
        let total_bytes = file.metadata().map_err(bad)?.len();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let avro = reader.fill_buf().map_err(bad)?.starts_with(b"Obj\x01");
        let (source, schema) = if avro {
            let (records, schema) =
                crate::vectorize::payloads(path).map_err(|e| BacktestError::Input(e.to_string()))?;
            (Source::Records(records.into_iter()), schema)
        } else {
            (Source::Lines(reader), None)
        };
        Ok(Self { source, total_bytes, read_bytes: 0, line: 0, schema, buf: Vec::new() })
    }

    /// Appends up to `n` (record number from 1, payload) pairs to `out`; false at the end.
    pub fn next_batch(&mut self, n: usize, out: &mut Vec<(u64, Vec<u8>)>) -> Result<bool, BacktestError> {
        match &mut self.source {
            Source::Records(it) => {
                out.extend(it.by_ref().take(n).map(|(i, p)| (i as u64 + 1, p)));
                self.read_bytes = self.total_bytes * u64::from(it.len() == 0);
            }
            Source::Topic(t) => return t.next_batch(n, out),
            Source::Lines(r) => {
                while out.len() < n {
                    self.buf.clear();
                    let got = r.read_until(b'\n', &mut self.buf).map_err(|e| BacktestError::Input(e.to_string()))?;
                    if got == 0 {
                        break;
                    }
                    self.read_bytes += got as u64;
                    self.line += 1;
                    let text = self.buf.trim_ascii();
                    if !text.is_empty() {
                        out.push((self.line, text.to_vec()));
                    }
                }
            }
        }
        Ok(!out.is_empty())
    }

    /// Share of the file (or topic range) read so far.
    pub fn fraction(&self) -> f64 {
        if let Source::Topic(t) = &self.source {
            return t.fraction();
        }
        if self.total_bytes == 0 {
            1.0
        } else {
            self.read_bytes as f64 / self.total_bytes as f64
        }
    }
}

/// Reads a labels file: JSON lines `{"event_id": "...", "label": 0|1}` (label also as a
/// boolean). Later lines win.
pub fn labels(path: &Path) -> Result<HashMap<String, u8>, BacktestError> {
    let file = std::fs::File::open(path).map_err(|e| BacktestError::Input(format!("{}: {e}", path.display())))?;
    let mut out = HashMap::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| BacktestError::Input(format!("{}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| BacktestError::Input(format!("{}: line {}: {why}", path.display(), n + 1));
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| bad(&e.to_string()))?;
        let id = v["event_id"].as_str().ok_or_else(|| bad("no string event_id"))?;
        let label = label_of(&v["label"]).ok_or_else(|| bad("label is not 0, 1, true or false"))?;
        out.insert(id.to_string(), label);
    }
    Ok(out)
}

/// A label from JSON: 0 / 1 (or any number, ≥ 0.5 is fraud) or a boolean.
fn label_of(v: &serde_json::Value) -> Option<u8> {
    match v {
        serde_json::Value::Bool(b) => Some(u8::from(*b)),
        serde_json::Value::Number(n) => n.as_f64().map(|x| u8::from(x >= 0.5)),
        _ => None,
    }
}

/// A progress line (events, rate, share read, ETA) on stderr, only when it is a terminal.
pub struct Progress {
    on: bool,
    start: Instant,
    last: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Shown only if stderr is a terminal.
    pub fn new() -> Self {
        let now = Instant::now();
        Self { on: std::io::stderr().is_terminal(), start: now, last: now }
    }

    /// Redraws at most five times a second.
    pub fn tick(&mut self, events: u64, fraction: f64) {
        if !self.on || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64();
        let eta = if fraction > 0.0 { secs * (1.0 - fraction) / fraction } else { 0.0 };
        let width = 30;
        let done = ((fraction * width as f64) as usize).min(width);
        eprint!(
            "\r[{}{}] {:>3.0}%  {events} events  {:.0} ev/s  ETA {:.0} s   ",
            "#".repeat(done),
            " ".repeat(width - done),
            fraction * 100.0,
            events as f64 / secs.max(1e-9),
            eta
        );
        let _ = std::io::stderr().flush();
    }

    /// Ends the line.
    pub fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
}
