//! Fixed-decimal text of a sweep's CSV numbers: the same characters as `format!("{v:.d$}")`,
//! without std's exact float formatting (Grisu with a Dragon fallback) where the rounding can
//! be decided from one multiplication.
//!
//! Why: a CSV row carries seven floats; on the 10⁶-point grid of docs/sweeps.md std's exact
//! formatting was about 5% of the sweep's CPU time (perf, 2-vCPU Xeon, 2026-11-30).
//!
//! How: for v ≥ 0 and d ≤ 6 decimals, x = fl(v·10ᵈ) is the exact product v·10ᵈ rounded to the
//! nearest f64 (10ᵈ is exact in f64). Below 2⁵² every n and n + ½ is an f64, and rounding to
//! nearest is monotone, so the exact product lies on the same side of each as x does: when x's
//! fraction is not exactly one half, x and the exact product round to the same integer n, and
//! the text is n's digits with the point d places from the right. Anything else (a fraction of
//! exactly one half, a negative value or signed zero, a large or non-finite value, more
//! decimals) is written by std, so the text is always std's; `tests` compare both on random
//! values and on values a few ulps from decimal ties.

use std::fmt::Write as _;

/// 10ᵈ for the decimals the fast path takes, each exact in f64.
const POW10: [u64; 7] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000];

/// Scaled values the fast path takes are below 2⁵², where every integer and half-integer is an
/// f64 (the ulp is at most ½).
const MAX_SCALED: f64 = (1u64 << 52) as f64;

/// `v`·10^`decimals` rounded to the nearest integer, where that is certainly the rounding of
/// the exact product (see the module doc); `None` where std must decide.
fn scaled(v: f64, decimals: usize) -> Option<u64> {
    let p = *POW10.get(decimals)?;
    // `is_sign_positive` refuses −0.0 (std writes "-0.0…") and negative NaN.
    if !v.is_sign_positive() {
        return None;
    }
    let x = v * p as f64;
    if x.is_nan() || x >= MAX_SCALED {
        return None;
    }
    let floor = x.floor();
    // x − ⌊x⌋ is exact below 2⁵² (x's fraction bits). Exactly ½: the exact product may lie on
    // either side of the tie (or on it, where std rounds half to even).
    let frac = x - floor;
    if frac == 0.5 {
        return None;
    }
    let n = floor as u64;
    Some(if frac > 0.5 { n + 1 } else { n })
}

/// Append `v` with `decimals` digits after the point, exactly as
/// `write!(out, "{v:.decimals$}")` does.
pub fn push_fixed(out: &mut String, v: f64, decimals: usize) {
    let Some(n) = scaled(v, decimals) else {
        let _ = write!(out, "{v:.decimals$}");
        return;
    };
    let p = POW10[decimals];
    let mut buf = itoa::Buffer::new();
    out.push_str(buf.format(n / p));
    if decimals > 0 {
        out.push('.');
        let frac = buf.format(n % p);
        for _ in frac.len()..decimals {
            out.push('0');
        }
        out.push_str(frac);
    }
}

/// Append an integer (itoa's digits, the same as `Display`'s).
pub fn push_int(out: &mut String, v: u64) {
    out.push_str(itoa::Buffer::new().format(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fast(v: f64, d: usize) -> String {
        let mut s = String::new();
        push_fixed(&mut s, v, d);
        s
    }

    fn check(v: f64, d: usize) {
        assert_eq!(fast(v, d), format!("{v:.d$}"), "{v:e} with {d} decimals");
    }

    #[test]
    fn by_hand() {
        assert_eq!(fast(40.065434, 6), "40.065434");
        assert_eq!(fast(0.0000004, 6), "0.000000");
        assert_eq!(fast(0.0000006, 6), "0.000001");
        assert_eq!(fast(399.7, 0), "400");
        assert_eq!(fast(2.3199, 2), "2.32");
        assert_eq!(fast(0.05, 2), "0.05");
        assert_eq!(fast(7.0, 6), "7.000000");
        // Which path wrote them is not visible; what matters is that each is std's text.
        for (v, d) in [
            (0.5, 0),
            (1.5, 0),
            (2.5, 0),
            (0.125, 2),
            (0.0000005, 6),
            (1.0000005, 6),
            (-0.0, 6),
            (-1.25, 1),
            (f64::INFINITY, 2),
            (f64::NAN, 2),
            (f64::MAX, 6),
            (f64::MIN_POSITIVE, 6),
            (5e-324, 6),
            (1_099_511.627_775, 6),
            (1e12, 0),
            (2e12, 0),
            (4.5e15, 0),
            (4503599627370495.5, 0),
            (0.1, 7),
        ] {
            check(v, d);
        }
    }

    #[test]
    fn the_fast_path_declines_near_ties_and_outside_its_range() {
        assert_eq!(scaled(2.5, 0), None);
        assert_eq!(scaled(0.0000005, 6), None);
        assert_eq!(scaled(-0.0, 6), None);
        assert_eq!(scaled(f64::NAN, 6), None);
        assert_eq!(scaled(5e15, 0), None);
        assert_eq!(scaled(4e15, 0), Some(4_000_000_000_000_000));
        assert_eq!(scaled(1.0, 7), None);
        assert_eq!(scaled(2.4, 0), Some(2));
        assert_eq!(scaled(2.6, 0), Some(3));
        assert_eq!(scaled(0.0, 6), Some(0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn equals_std_on_any_value(bits in any::<u64>(), d in 0usize..8) {
            check(f64::from_bits(bits), d);
        }

        #[test]
        fn equals_std_on_sweep_like_values(v in 0.0f64..2e6, d in 0usize..7) {
            check(v, d);
        }

        #[test]
        fn equals_std_next_to_decimal_ties(
            n in prop_oneof![0u64..2_000_000_000, 0u64..(1 << 53)],
            d in 0usize..7,
            ulps in -3i64..=3,
        ) {
            // (n + ½)·10⁻ᵈ and its neighbours a few ulps away, where the rounding is decided;
            // the second range reaches past the fast path's 2⁵² (n + ½ then rounds to an f64).
            let tie = (n as f64 + 0.5) / POW10[d] as f64;
            let v = f64::from_bits((tie.to_bits() as i64 + ulps) as u64);
            check(v, d);
        }
    }
}
