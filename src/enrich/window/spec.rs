//! An entity's window spec: bucket widths (one series per width), window sizes, lateness,
//! and the aggregates each window offers and keeps.

use super::session::SessionSpec;
use super::{bucket_start, ms};

/// Bucket widths, window sizes and lateness, in milliseconds. Windows of one width share a
/// bucket series; series 0 has the finest width (`bucket_ms`), and every other width is a
/// multiple of it (config validation), so a distinct value's finest bucket names its bucket
/// in every series.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpec {
    /// The finest bucket width (series 0).
    pub bucket_ms: i64,
    /// Window lengths, in the entity's configured order.
    pub sizes_ms: Vec<i64>,
    /// Allowed lateness.
    pub lateness_ms: i64,
    /// Per window: its series.
    pub(super) window_series: Vec<usize>,
    /// Per window: the aggregates it offers (bits over `config::AGGREGATES`, [`COUNT`] …).
    pub(super) outputs: Vec<u8>,
    /// Per window: the aggregates its state keeps up (what it offers; all of them for a
    /// shared entity, whose state `window.lua` keeps whole).
    pub(super) keeps: Vec<u8>,
    /// Per series, finest first.
    pub(super) series: Vec<Series>,
    /// The entity's session window, if it has one.
    pub session: Option<SessionSpec>,
}

/// A window's `count` (bit 0 of its aggregates; the order of `config::AGGREGATES`).
pub const COUNT: u8 = 1;
/// Its `sum`.
pub const SUM: u8 = 1 << 1;
/// Its `avg`.
pub const AVG: u8 = 1 << 2;
/// Its `min`.
pub const MIN: u8 = 1 << 3;
/// Its `max`.
pub const MAX: u8 = 1 << 4;
/// Its `distinct`.
pub const DISTINCT: u8 = 1 << 5;
/// All six.
pub const ALL: u8 = (1 << 6) - 1;

/// One bucket series: its width, how long its buckets are kept, and how many that is.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Series {
    /// Width, at least 1 ms.
    pub(super) width: i64,
    /// Longest window of the series plus lateness plus one width.
    pub(super) retention: i64,
    /// The most buckets the series can hold (`retention / width + 2`).
    pub(super) most: usize,
    /// How long a distinct value is remembered in this series: its longest window that
    /// counts distinct values plus lateness plus one width; None when none does (the
    /// series then marks no values).
    pub(super) distinct_retention: Option<i64>,
    /// Whether a window of the series reads min or max (else no bucket keeps them).
    pub(super) extremes: bool,
}

impl WindowSpec {
    /// One width for every window.
    pub fn new(bucket_ms: i64, sizes_ms: Vec<i64>, lateness_ms: i64) -> Self {
        let widths = vec![bucket_ms; sizes_ms.len()];
        Self::with_widths(sizes_ms, &widths, lateness_ms)
    }

    /// A width per window (`widths_ms[i]` for `sizes_ms[i]`; each a multiple of the finest,
    /// as config validation ensures). No windows: one series of width 1 ms.
    pub fn with_widths(sizes_ms: Vec<i64>, widths_ms: &[i64], lateness_ms: i64) -> Self {
        let mut widths: Vec<i64> = widths_ms.iter().map(|&w| w.max(1)).collect();
        widths.sort_unstable();
        widths.dedup();
        if widths.is_empty() {
            widths.push(1);
        }
        let window_series: Vec<usize> =
            widths_ms.iter().map(|&w| widths.binary_search(&w.max(1)).expect("every width is listed")).collect();
        let series = widths
            .iter()
            .enumerate()
            .map(|(k, &width)| {
                let longest = sizes_ms
                    .iter()
                    .zip(&window_series)
                    .filter(|&(_, &s)| s == k)
                    .map(|(&size, _)| size)
                    .max()
                    .unwrap_or(0);
                let retention = longest.saturating_add(lateness_ms).saturating_add(width);
                let most = usize::try_from(retention / width).unwrap_or(usize::MAX).saturating_add(2);
                Series { width, retention, most, distinct_retention: Some(retention), extremes: true }
            })
            .collect();
        let all = vec![ALL; sizes_ms.len()];
        Self {
            bucket_ms: widths[0],
            sizes_ms,
            lateness_ms,
            window_series,
            outputs: all.clone(),
            keeps: all,
            series,
            session: None,
        }
    }

    /// The same spec with each window offering only `outputs[i]` (bits: [`COUNT`] …); with
    /// `trim`, its state keeps up only those too: distinct values are remembered only as long
    /// as the longest window that counts them needs, and min/max only where read.
    pub fn with_aggregates(mut self, outputs: &[u8], trim: bool) -> Self {
        assert_eq!(outputs.len(), self.sizes_ms.len(), "one set of aggregates per window");
        self.outputs = outputs.to_vec();
        self.keeps = if trim { self.outputs.clone() } else { vec![ALL; outputs.len()] };
        for (k, sk) in self.series.iter_mut().enumerate() {
            let longest = (self.sizes_ms.iter().zip(&self.window_series).zip(&self.keeps))
                .filter(|&((_, &s), &keep)| s == k && keep & DISTINCT != 0)
                .map(|((&size, _), _)| size)
                .max();
            sk.distinct_retention = longest.map(|l| l.saturating_add(self.lateness_ms).saturating_add(sk.width));
            sk.extremes =
                (self.window_series.iter().zip(&self.keeps)).any(|(&s, &keep)| s == k && keep & (MIN | MAX) != 0);
        }
        self
    }

    /// The aggregates window `i` offers.
    pub fn outputs(&self, i: usize) -> u8 {
        self.outputs[i]
    }

    /// Whether window `i` keeps its min and max up.
    pub(super) fn keeps_extremes(&self, i: usize) -> bool {
        self.keeps[i] & (MIN | MAX) != 0
    }

    /// The same spec with a session window.
    pub fn with_session(mut self, session: SessionSpec) -> Self {
        self.session = Some(session);
        self
    }

    /// The spec for a config in seconds, one width for all windows; values beyond the i64
    /// millisecond range saturate (config validation allows any positive `u64`).
    pub fn from_seconds(bucket_s: u64, sizes_s: impl IntoIterator<Item = u64>, lateness_s: u64) -> Self {
        Self::new(ms(bucket_s), sizes_s.into_iter().map(ms).collect(), ms(lateness_s))
    }

    /// The spec of an entity's windows, each with its own width.
    pub fn of_entity(e: &crate::enrich::config::EntityConfig, lateness_s: u64) -> Self {
        let widths: Vec<i64> = e.widths_s().map(ms).collect();
        let outputs: Vec<u8> = e.windows.iter().map(|w| w.aggregate_bits()).collect();
        let spec = Self::with_widths(e.windows.iter().map(|w| ms(w.size_s)).collect(), &widths, ms(lateness_s))
            .with_aggregates(&outputs, e.ownership == crate::enrich::config::Ownership::Partition);
        match &e.session {
            Some(s) => spec.with_session(SessionSpec {
                gap_ms: ms(s.gap_s),
                max_distinct: usize::try_from(s.max_distinct).unwrap_or(usize::MAX),
            }),
            None => spec,
        }
    }

    /// How long state must be kept: the longest series retention, and with a session the
    /// gap plus lateness (a later event opens a new session); also the Redis TTL.
    pub fn retention_ms(&self) -> i64 {
        let session = self.session.map_or(0, |s| s.gap_ms.saturating_add(self.lateness_ms));
        self.series.iter().map(|s| s.retention).max().unwrap_or(0).max(session)
    }

    /// How many values the sliding windows produce per event (each window's aggregates and
    /// `since_last_s`; none without windows): the session's values come after them.
    pub fn window_values(&self) -> usize {
        if self.sizes_ms.is_empty() {
            0
        } else {
            self.outputs.iter().map(|o| o.count_ones() as usize).sum::<usize>() + 1
        }
    }

    /// Whether every window uses one width (the shared path's requirement).
    pub fn single_width(&self) -> bool {
        self.series.len() == 1
    }

    /// The finest bucket width, at least 1 ms (a zero width is refused by config validation).
    pub(super) fn bucket(&self) -> i64 {
        self.series[0].width
    }

    /// Whether a partition-owned entity whose newest event is at `newest_ms` still remembers
    /// a distinct value last seen at `seen_ms`: within the horizon of a width whose windows
    /// count distinct values (longest such window + lateness + one width).
    pub fn remembers(&self, seen_ms: i64, newest_ms: i64) -> bool {
        self.series.iter().any(|sk| {
            sk.distinct_retention.is_some_and(|r| {
                i128::from(bucket_start(seen_ms, sk.width)) + i128::from(sk.width)
                    > i128::from(newest_ms) - i128::from(r)
            })
        })
    }

    /// Whether any window counts distinct values (else none are remembered).
    pub(super) fn counts_distinct(&self) -> bool {
        self.series.iter().any(|s| s.distinct_retention.is_some())
    }
}
