//! An exact running sum of doubles: values are added and taken away again without rounding
//! error, and the total reads as the correctly rounded sum, the same number Python's
//! `math.fsum` returns for the values it holds (CPython's algorithm: Shewchuk's
//! non-overlapping partials, then round-half-even across them).
//!
//! Windows slide by adding the newest bucket's sum and taking away the oldest one's: with
//! plain `f64` arithmetic the result would depend on the order of those steps; here it is
//! a function of the values in the window alone, so replays and the training code agree.
//! Non-finite values (a bucket whose own sum overflowed) are counted aside and decide the
//! total as `fsum`'s rule does (NaN, or ±inf); a finite sum whose partials overflow marks
//! the accumulator overflowed, and the caller falls back to a plain walk (see
//! [`window_sum`]).

/// The partials of an [`ExactSum`].
type Partials = smallvec::SmallVec<[f64; 3]>;

/// An exact sum of finite doubles plus counts of the non-finite ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct ExactSum {
    /// Non-overlapping partials, increasing magnitude; their exact sum is the total. Money
    /// amounts leave one to three: held inline (no allocation per window).
    partials: Partials,
    pos_inf: u32,
    neg_inf: u32,
    nan: u32,
    /// An intermediate result overflowed: the partials are no longer exact.
    overflowed: bool,
}

impl ExactSum {
    /// Adds `x` exactly.
    pub(super) fn add(&mut self, x: f64) {
        self.step(x, 1);
    }

    /// Takes away `x` (added before) exactly.
    pub(super) fn sub(&mut self, x: f64) {
        self.step(x, -1);
    }

    fn step(&mut self, x: f64, sign: i32) {
        if x.is_nan() {
            self.nan = counted(self.nan, sign);
        } else if x == f64::INFINITY {
            self.pos_inf = counted(self.pos_inf, sign);
        } else if x == f64::NEG_INFINITY {
            self.neg_inf = counted(self.neg_inf, sign);
        } else if !self.overflowed {
            self.overflowed = !add_partial(&mut self.partials, if sign > 0 { x } else { -x });
        }
    }

    /// The window sum of the values held: NaN when a NaN or both infinities are held, else
    /// the infinity held, else the correctly rounded sum (`math.fsum`); None when the
    /// partials overflowed (the caller sums another way, see [`window_sum`]).
    pub(super) fn value(&self) -> Option<f64> {
        if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) {
            Some(f64::NAN)
        } else if self.pos_inf > 0 {
            Some(f64::INFINITY)
        } else if self.neg_inf > 0 {
            Some(f64::NEG_INFINITY)
        } else if self.overflowed {
            None
        } else {
            Some(round_partials(&self.partials))
        }
    }
}

fn counted(n: u32, sign: i32) -> u32 {
    if sign > 0 {
        n + 1
    } else {
        n.saturating_sub(1)
    }
}

/// CPython `math_fsum`'s inner loop for one finite `x`; false on intermediate overflow.
fn add_partial(p: &mut Partials, mut x: f64) -> bool {
    let mut i = 0;
    for j in 0..p.len() {
        let mut y = p[j];
        if x.abs() < y.abs() {
            std::mem::swap(&mut x, &mut y);
        }
        let hi = x + y;
        let lo = y - (hi - x);
        if lo != 0.0 {
            p[i] = lo;
            i += 1;
        }
        x = hi;
    }
    p.truncate(i);
    if !x.is_finite() {
        return false;
    }
    if x != 0.0 {
        p.push(x);
    }
    true
}

/// CPython `math_fsum`'s final rounding of the partials (half-even across partials).
fn round_partials(p: &[f64]) -> f64 {
    let mut n = p.len();
    if n == 0 {
        return 0.0;
    }
    n -= 1;
    let mut hi = p[n];
    let mut lo = 0.0;
    while n > 0 {
        let x = hi;
        n -= 1;
        let y = p[n];
        hi = x + y;
        let yr = hi - x;
        lo = y - yr;
        if lo != 0.0 {
            break;
        }
    }
    if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        if y == x - hi {
            hi = x;
        }
    }
    hi
}

/// The window sum of bucket sums (oldest first; `values` yields them, and is called twice
/// at most): as [`ExactSum::value`], or, when the partials overflow, the plain
/// left-to-right sum. `ops/model/features.py` (`window_sum`) is the same function.
pub(super) fn window_sum<I: Iterator<Item = f64>>(values: impl Fn() -> I) -> f64 {
    let mut acc = ExactSum::default();
    values().for_each(|v| acc.add(v));
    acc.value().unwrap_or_else(|| values().fold(0.0, |s, v| s + v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fsum(v: &[f64]) -> f64 {
        window_sum(|| v.iter().copied())
    }

    #[test]
    fn rounds_correctly_where_plain_addition_does_not() {
        assert_eq!(fsum(&[0.1; 10]), 1.0);
        assert_ne!([0.1; 10].iter().sum::<f64>(), 1.0);
        assert_eq!(fsum(&[1e-16, 1.0, 1e16]), 10000000000000002.0);
        assert_eq!(fsum(&[1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50]), 1e-100);
        assert_eq!(fsum(&[]), 0.0);
    }

    #[test]
    fn taking_values_away_leaves_exactly_the_sum_of_the_rest() {
        let values: Vec<f64> = (0..2000).map(|i| ((i * 7919) % 1000) as f64 * 0.37 + 1e-3 * i as f64).collect();
        let mut acc = ExactSum::default();
        for (i, &v) in values.iter().enumerate() {
            acc.add(v);
            if i >= 100 {
                acc.sub(values[i - 100]);
                assert_eq!(acc.value().unwrap().to_bits(), fsum(&values[i - 99..=i]).to_bits(), "at {i}");
            }
        }
    }

    #[test]
    fn non_finite_values_follow_fsum_and_leave_again() {
        let mut acc = ExactSum::default();
        acc.add(1.5);
        acc.add(f64::INFINITY);
        assert_eq!(acc.value().unwrap(), f64::INFINITY);
        acc.add(f64::NEG_INFINITY);
        assert!(acc.value().unwrap().is_nan());
        acc.sub(f64::INFINITY);
        acc.sub(f64::NEG_INFINITY);
        assert_eq!(acc.value().unwrap(), 1.5);
    }

    #[test]
    fn an_intermediate_overflow_falls_back_to_the_plain_sum() {
        assert_eq!(fsum(&[f64::MAX, f64::MAX, -f64::MAX]), f64::INFINITY);
        let mut acc = ExactSum::default();
        acc.add(f64::MAX);
        acc.add(f64::MAX);
        assert_eq!(acc.value(), None);
    }
}
