//! CPU time and context switches per thread of this process, from `/proc/self/task/*/stat`
//! (user + system clock ticks) and `status` (voluntary + involuntary switches), grouped by
//! thread name with digits folded (`verdict-worker-0` and `-1` are one row): where a phase's
//! CPU went, and how often its threads slept and woke, measured rather than estimated.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// Per thread id: its name, CPU ticks and context switches so far.
pub struct Threads(HashMap<u32, (String, u64, u64)>);

/// The threads that were alive before the pipeline started: the bench's main thread (which
/// produces the backlogs), the mock cluster's and its producer client's librdkafka threads.
/// Their rows are marked `bench:` and left out of the `verdict` total, which is what a
/// verdict process next to a real broker would use.
static BENCH_THREADS: OnceLock<HashSet<u32>> = OnceLock::new();

/// Marks every thread alive now as the bench's own (call before the pipeline starts).
pub fn mark_bench_threads() {
    let _ = BENCH_THREADS.set(Threads::now().0.into_keys().collect());
}

fn is_bench(tid: u32) -> bool {
    BENCH_THREADS.get().is_some_and(|s| s.contains(&tid))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

impl Threads {
    /// Every live thread's CPU ticks now.
    pub fn now() -> Self {
        let mut out = HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return Self(out);
        };
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let switches = std::fs::read_to_string(entry.path().join("status")).map_or(0, |s| switches(&s));
            if let Some((name, ticks)) = parse(&stat) {
                out.insert(tid, (name, ticks, switches));
            }
        }
        Self(out)
    }

    /// CPU and switches per group of threads from `self` to `later` (threads that ended in
    /// between are missing; threads that started count from zero).
    pub fn until(&self, later: &Threads) -> Usage {
        let mut u = Usage::default();
        for (tid, (name, ticks, sw)) in &later.0 {
            let (t0, s0) = self.0.get(tid).map_or((0, 0), |(_, t, s)| (*t, *s));
            let group = if is_bench(*tid) { format!("bench: {}", fold(name)) } else { fold(name) };
            let g = u.0.entry(group).or_default();
            g.0 += 1;
            g.1 += ticks.saturating_sub(t0);
            g.2 += sw.saturating_sub(s0);
        }
        u
    }
}

/// Per group of threads: how many, CPU ticks, context switches.
#[derive(Default)]
pub struct Usage(HashMap<String, (usize, u64, u64)>);

impl Usage {
    /// Adds another interval's usage (thread counts: the larger).
    pub fn add(&mut self, other: &Usage) {
        for (name, (c, t, s)) in &other.0 {
            let g = self.0.entry(name.clone()).or_default();
            g.0 = g.0.max(*c);
            g.1 += t;
            g.2 += s;
        }
    }

    /// Prints the table: µs per event, share of a core over `secs`, switches per 1,000
    /// events; `allocs`: verdict's Rust heap allocations in the interval (librdkafka's C
    /// allocations and the bench's own threads' are not counted).
    pub fn print(&self, events: u64, secs: f64, allocs: Allocs) {
        let hz = ticks_per_s();
        let mut rows: Vec<(&str, usize, u64, u64)> =
            self.0.iter().map(|(n, &(c, t, s))| (n.as_str(), c, t, s)).collect();
        rows.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| b.3.cmp(&a.3)).then_with(|| a.0.cmp(b.0)));
        let n = events.max(1) as f64;
        println!(
            "  CPU by thread while draining (/proc/self/task; {events} events, {secs:.1} s; verdict's Rust heap allocations {:.3} per event, {:.3} of them on the workers):",
            allocs.all as f64 / n,
            allocs.workers as f64 / n
        );
        println!(
            "    {:<28} {:>7} {:>8} {:>10} {:>8} {:>16}",
            "threads", "count", "CPU s", "µs/event", "cores", "switches/1k ev"
        );
        let row = |name: &str, count: usize, ticks: u64, sw: u64| {
            let s = ticks as f64 / hz;
            println!(
                "    {name:<28} {count:>7} {s:>8.2} {:>10.2} {:>8.2} {:>16.1}",
                s * 1e6 / n,
                s / secs.max(1e-9),
                sw as f64 * 1000.0 / n
            );
        };
        for &(name, count, ticks, sw) in rows.iter().filter(|r| r.2 > 0 || r.3 > 0) {
            row(name, count, ticks, sw);
        }
        let sum = |f: fn(&(&str, usize, u64, u64)) -> u64| rows.iter().map(f).sum::<u64>();
        row("all", rows.iter().map(|r| r.1).sum(), sum(|r| r.2), sum(|r| r.3));
        let own: Vec<_> = rows.iter().filter(|r| !r.0.starts_with("bench: ")).collect();
        row(
            "verdict (all but bench:)",
            own.iter().map(|r| r.1).sum(),
            own.iter().map(|r| r.2).sum(),
            own.iter().map(|r| r.3).sum(),
        );
    }
}

/// Name and user + system ticks from a `stat` line (the name is in parentheses and may
/// hold spaces; utime and stime are the 12th and 13th fields after it).
fn parse(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// Voluntary plus involuntary context switches from a `status` file.
fn switches(status: &str) -> u64 {
    status
        .lines()
        .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// A thread name with each run of digits as `#` (threads of one kind share a row).
fn fold(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_digits = false;
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// Rust heap allocations counted: all of verdict's threads', and its workers' alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocs {
    /// Every thread but the bench's own.
    pub all: u64,
    /// The `verdict-worker-N` threads.
    pub workers: u64,
}

impl std::ops::Add for Allocs {
    type Output = Allocs;
    fn add(self, o: Allocs) -> Allocs {
        Allocs { all: self.all + o.all, workers: self.workers + o.workers }
    }
}

impl std::ops::Sub for Allocs {
    type Output = Allocs;
    fn sub(self, o: Allocs) -> Allocs {
        Allocs { all: self.all - o.all, workers: self.workers - o.workers }
    }
}
