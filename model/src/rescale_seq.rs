//! Sequence templates: a rank template ([`RankFit`]) derived for another sequence length from
//! the rank templates of four others, instead of fitted from three graphs built in full.
//!
//! A sweep's rank lines differ from line to line of one (model, method, precision, trained
//! layers, batch) only in the sequence length s. With every comparison of sizes the recipes
//! make (the graph's `guards`) leading them the same way, each number of a graph is a polynomial
//! of s of degree at most two (activations b·s·h, attention scores b·heads·s², FLOPs 2·(b·s)·n·k,
//! LoRA's b·s·r): so is each number of a rank template's graph at r₀, and each slope of its
//! patches. [`SeqFit::new`] takes the rank templates of lines at four sequence lengths, checks
//! that they are identical in everything but those numbers (graph structure, patched places,
//! guards and their sides, transient chains, changed kernels and their representatives), and
//! fits every number and slope that changes as an integer polynomial `c₀ + c₁·s + c₂·s²` through
//! three of them that must reproduce the fourth exactly. [`SeqFit::derive`] then writes each
//! number at a new s into a copy of the first line's graph, recomputes the transient maxima
//! (a maximum of polynomials is not one), re-checks every guard whose operands change with s,
//! and assembles the rank template a line at s would have fitted from its own probes.
//!
//! Exactness: the coefficients are integers (the divided differences must divide exactly) and a
//! number is evaluated in 128-bit integers, then accepted only up to 2⁵⁰ (`LIMIT`), so it equals
//! the recipe's own f64 products of integers, as a rank template's do. Anything else (a number
//! that changes with s and is not such a polynomial, a structural difference, a guard on two
//! sides) refuses the fit, or the sequence length, and the caller fits its rank template from
//! probes as before. A unit test compares derived templates and the graphs they rescale to with
//! fresh builds over every preset and ranked method.

use super::{
    probes_side, same_frame, same_kind, same_scope, same_way, scope_mut, scope_ref, scopes,
    segments, side, KField, Loc, Program, RankFit, SField, LIMIT,
};
use crate::graph::{GuardKind, ScopeGraph};
use std::cmp::Ordering;

/// Largest sequence length a fit evaluates (far past any model's positions).
pub(super) const MAX_SEQ: u64 = 1 << 24;

/// Lines a [`SeqFit`] is fitted from: three determine a polynomial of degree two, the fourth
/// checks it.
pub const SEQ_LINES: usize = 4;

/// Denominators a number may carry: a recipe's `x · n / 3.0` (the three ops of a derivative
/// formula sharing its FLOPs, `graph::tracer`) is the one rounding of an integer polynomial's
/// value divided by 3.
const DENOMINATORS: [i64; 2] = [1, 3];

/// A polynomial of the sequence length with integer coefficients, divided once by a
/// denominator: `(c₀ + c₁·s + c₂·s²) / d`, the division rounded as the recipe's f64 one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quad {
    c: [i64; 3],
    den: i64,
}

impl Quad {
    /// The polynomial through every (s, v), fitted on the first three: `Some(None)` when every v
    /// has the same bits (the number does not change with s), `Some(Some(q))` for integer
    /// coefficients that reproduce them all, bit for bit, `None` otherwise (a number that
    /// changes and is no such polynomial with numerators within `LIMIT`).
    fn fit(s: &[u64; SEQ_LINES], v: [f64; SEQ_LINES]) -> Option<Option<Quad>> {
        if v.iter().all(|x| x.to_bits() == v[0].to_bits()) {
            return Some(None);
        }
        Self::through(s, v).map(Some)
    }

    /// [`Quad::fit`] for a number that must be such a polynomial even when it does not change
    /// (a rank template's base or slope, which a derived line needs at every s).
    ///
    /// The check is the whole argument: polynomials of degree two that agree at three points are
    /// one, so integer coefficients that give back all four values are the recipe's polynomial
    /// (the fourth tests that it has degree two at most). With a denominator, a numerator within
    /// `LIMIT` is the only integer whose quotient rounds to its value (the quotients of
    /// neighbouring integers lie a third apart, far more than a rounding step below 2⁴⁹).
    fn through(s: &[u64; SEQ_LINES], v: [f64; SEQ_LINES]) -> Option<Quad> {
        DENOMINATORS.iter().find_map(|&den| {
            // Candidate numerators (a NaN casts to 0 and an infinity saturates: either fails
            // the check).
            let n = v.map(|v| (v * den as f64).round() as i64);
            let q = Quad {
                c: Self::integer(s, n)?,
                den,
            };
            (0..SEQ_LINES)
                .all(|i| q.at(s[i]).map(f64::to_bits) == Some(v[i].to_bits()))
                .then_some(q)
        })
    }

    /// Coefficients through the first three (s, y) from Newton's divided differences, each
    /// division truncated: exact when the three lie on a polynomial with integer coefficients
    /// (the differences are integers then), and otherwise refused by [`Quad::through`]'s check.
    /// Checked arithmetic throughout.
    fn integer(s: &[u64; SEQ_LINES], y: [i64; SEQ_LINES]) -> Option<[i64; 3]> {
        let x = s.map(|s| s as i64);
        let div = |a: i64, b: i64| a.checked_div(b);
        let f01 = div(y[1].checked_sub(y[0])?, x[1] - x[0])?;
        let f12 = div(y[2].checked_sub(y[1])?, x[2] - x[1])?;
        let c2 = div(f12.checked_sub(f01)?, x[2] - x[0])?;
        let c1 = f01.checked_sub(c2.checked_mul(x[0] + x[1])?)?;
        let c0 = y[0]
            .checked_sub(c1.checked_mul(x[0])?)?
            .checked_sub(c2.checked_mul(x[0])?.checked_mul(x[0])?)?;
        Some([c0, c1, c2])
    }

    /// The value at `s` (at most [`MAX_SEQ`]), when its numerator is at most `LIMIT` in
    /// magnitude: then it is exact as an f64, and the division rounds once.
    #[inline]
    fn at(&self, s: u64) -> Option<f64> {
        debug_assert!(s <= MAX_SEQ);
        let s = s as i64;
        let [c0, c1, c2] = self.c;
        let v = c2
            .checked_mul(s)?
            .checked_add(c1)?
            .checked_mul(s)?
            .checked_add(c0)?;
        if v.unsigned_abs() > LIMIT as u64 {
            return None;
        }
        Some(if self.den == 1 {
            v as f64
        } else {
            v as f64 / self.den as f64
        })
    }
}

/// Every number of a scope a fit may rewrite, in a fixed order, with its place; a transient
/// link's running maximum (its first operand) and the scope's transient are left out (they are
/// recomputed from the links' sizes, [`recompute_chain`]).
fn scope_numbers(si: u32, s: &ScopeGraph, out: &mut Vec<(Loc, f64)>) {
    for (seg, sg) in segments(s).into_iter().enumerate() {
        for (idx, k) in sg.kernels.iter().enumerate() {
            let at = |field| Loc::Kernel {
                scope: si,
                seg: seg as u8,
                idx: idx as u32,
                field,
            };
            out.push((at(KField::Flops), k.flops));
            out.push((at(KField::Read), k.bytes_read));
            out.push((at(KField::Written), k.bytes_written));
            if let Some(g) = k.gemm {
                out.push((at(KField::M), g.m as f64));
                out.push((at(KField::N), g.n as f64));
                out.push((at(KField::K), g.k as f64));
                out.push((at(KField::Batch), g.batch as f64));
            }
        }
    }
    let at = |field| Loc::Scope { scope: si, field };
    out.push((at(SField::Saved), s.saved_bytes));
    for (i, &(_, v)) in s.saved_by_module.iter().enumerate() {
        out.push((at(SField::SavedBy(i as u32)), v));
    }
    out.push((at(SField::Checkpoint), s.checkpoint_bytes));
    out.push((at(SField::Trainable), s.trainable as f64));
    out.push((at(SField::Working), s.backward_working_bytes));
    for (i, &(a, b, kind)) in s.guards.iter().enumerate() {
        if kind != GuardKind::Transient {
            out.push((at(SField::GuardA(i as u32)), a));
        }
        out.push((at(SField::GuardB(i as u32)), b));
    }
}

/// A scope's transient chain as the tracer makes it (`chain_holds`): each link's running
/// maximum from the sizes, and the scope's transient the last.
fn recompute_chain(s: &mut ScopeGraph) {
    let mut run = 0.0f64;
    for (a, b, kind) in &mut s.guards {
        if *kind == GuardKind::Transient {
            *a = run;
            run = run.max(*b);
        }
    }
    s.transient_bytes = run;
}

/// The largest transient size of a rank chain's links that do not change with the rank (and 0),
/// as `RankFit::fit` finds it.
fn fixed_max(s: &ScopeGraph, varying: &[u32]) -> f64 {
    let mut max = 0.0f64;
    for (i, &(_, b, kind)) in s.guards.iter().enumerate() {
        if kind == GuardKind::Transient && !varying.contains(&(i as u32)) {
            max = max.max(b);
        }
    }
    max
}

/// A guard whose operands change with s, and the side it was on at the fitted lines.
#[derive(Debug, Clone, Copy)]
struct SeqGuard {
    scope: u32,
    idx: u32,
    ord: Ordering,
}

/// Rank templates fitted over the sequence length (see the module doc).
#[derive(Debug, Clone)]
pub struct SeqFit {
    /// The first line's rank template, as fitted (its graph at r₀): what a derived one copies
    /// and rewrites.
    line: RankFit,
    /// The graph's numbers that change with s.
    numbers: Program<Quad>,
    /// Scopes with a transient link whose size changes with s.
    chains: Vec<u32>,
    guards: Vec<SeqGuard>,
    /// Each patch's base and slope (`line.program`'s numbers in order).
    patches: Vec<(Quad, Quad)>,
    /// For each number of `line.row_program`, its place in `line.program`.
    rows: Vec<u32>,
}

impl SeqFit {
    /// Fit from the rank templates of lines at [`SEQ_LINES`] distinct sequence lengths, each as
    /// fitted (its graph at r₀, not yet rescaled); `None` when they differ in anything but
    /// integer polynomial numbers of degree ≤ 2 in s, or a guard compares differently between
    /// them.
    pub fn new(lines: &[(u64, &RankFit)]) -> Option<SeqFit> {
        let lines: &[(u64, &RankFit); SEQ_LINES] = lines.try_into().ok()?;
        let s = lines.map(|(s, _)| s);
        if (0..SEQ_LINES).any(|i| (i + 1..SEQ_LINES).any(|j| s[i] == s[j]))
            || s.iter().any(|&s| s > MAX_SEQ)
        {
            return None;
        }
        let fits = lines.map(|(_, f)| f);
        let f0 = fits[0];
        // The rank templates: the same places patched, the same guards on the same sides, the
        // same chains and changed kernels with the same representatives.
        let patch_lists = fits.map(|f| f.patch_list());
        for (f, p) in fits.iter().zip(&patch_lists).skip(1) {
            if f.r0 != f0.r0
                || p.len() != patch_lists[0].len()
                || p.iter().zip(&patch_lists[0]).any(|(a, b)| a.loc != b.loc)
                || f.changed != f0.changed
                || f.guards.len() != f0.guards.len()
                || f.guards
                    .iter()
                    .zip(&f0.guards)
                    .any(|(a, b)| (a.scope, a.idx, a.ord) != (b.scope, b.idx, b.ord))
                || f.chains.len() != f0.chains.len()
                || f.chains
                    .iter()
                    .zip(&f0.chains)
                    .any(|(a, b)| a.scope != b.scope || a.varying != b.varying)
            {
                return None;
            }
        }
        let gs = fits.map(|f| &f.work);
        if gs.iter().any(|g| !same_frame(g, gs[0])) {
            return None;
        }
        let mut numbers = Vec::new();
        let mut chains = Vec::new();
        let mut guards = Vec::new();
        let mut per_line: [Vec<(Loc, f64)>; SEQ_LINES] = Default::default();
        let per_scope: Vec<[&ScopeGraph; SEQ_LINES]> = {
            let mut its = gs.map(scopes);
            let mut out = Vec::new();
            while let [Some(a), Some(b), Some(c), Some(d)] = its.each_mut().map(|it| it.next()) {
                out.push([a, b, c, d]);
            }
            out
        };
        for (si, sc) in per_scope.iter().enumerate() {
            if sc.iter().any(|x| !same_scope(x, sc[0])) {
                return None;
            }
            for seg in 0..3 {
                let ks = sc.map(|x| &segments(x)[seg].kernels);
                for idx in 0..ks[0].len() {
                    if ks.iter().any(|k| !same_kind(&k[idx], &ks[0][idx])) {
                        return None;
                    }
                }
            }
            for (i, &(_, _, kind)) in sc[0].guards.iter().enumerate() {
                if sc.iter().any(|x| x.guards[i].2 != kind) {
                    return None;
                }
            }
            for (line, x) in per_line.iter_mut().zip(sc) {
                line.clear();
                scope_numbers(si as u32, x, line);
            }
            let mut chain_varies = false;
            let mut varying_guards: Vec<u32> = Vec::new();
            for j in 0..per_line[0].len() {
                let loc = per_line[0][j].0;
                let Some(q) = Quad::fit(&s, per_line.each_ref().map(|l| l[j].1))? else {
                    continue;
                };
                numbers.push((loc, q));
                if let Loc::Scope {
                    field: SField::GuardA(i) | SField::GuardB(i),
                    ..
                } = loc
                {
                    if sc[0].guards[i as usize].2 == GuardKind::Transient {
                        chain_varies = true;
                    } else if varying_guards.last() != Some(&i) {
                        varying_guards.push(i);
                    }
                }
            }
            if chain_varies {
                chains.push(si as u32);
            } else {
                // Running maxima and the transient follow from sizes that do not change.
                let maxima = |x: &ScopeGraph| {
                    x.guards
                        .iter()
                        .filter(|g| g.2 == GuardKind::Transient)
                        .map(|g| g.0.to_bits())
                        .chain([x.transient_bytes.to_bits()])
                        .collect::<Vec<u64>>()
                };
                let first = maxima(sc[0]);
                if sc.iter().any(|x| maxima(x) != first) {
                    return None;
                }
            }
            for i in varying_guards {
                let ord = probes_side(sc, i as usize)?;
                guards.push(SeqGuard {
                    scope: si as u32,
                    idx: i,
                    ord,
                });
            }
        }
        let mut patches = Vec::with_capacity(patch_lists[0].len());
        for j in 0..patch_lists[0].len() {
            let base = Quad::through(&s, patch_lists.each_ref().map(|l| l[j].base))?;
            let slope = Quad::through(&s, patch_lists.each_ref().map(|l| l[j].slope))?;
            patches.push((base, slope));
        }
        // The row program's numbers are some of the program's, in the same order.
        let places: Vec<Loc> = patch_lists[0].iter().map(|p| p.loc).collect();
        let mut rows = Vec::new();
        let mut at = 0;
        for (loc, _) in f0.row_program.numbers() {
            while places.get(at).is_some_and(|&p| p != loc) {
                at += 1;
            }
            rows.push(u32::try_from(at).ok().filter(|_| at < places.len())?);
        }
        Some(SeqFit {
            line: f0.clone(),
            numbers: Program::new(numbers),
            chains,
            guards,
            patches,
            rows,
        })
    }

    /// The rank r₀ of the rank templates it derives (their graphs' rank).
    pub fn r0(&self) -> u64 {
        self.line.r0
    }

    /// The rank template a line at sequence length `s` fits from its own probes, with its graph
    /// at r₀; `None` when a number leaves the exact range or a guard compares differently at
    /// `s` (fit that line from probes then).
    pub fn derive(&self, s: u64) -> Option<RankFit> {
        let mut f = self.line.clone();
        self.derive_into(s, &mut f)?;
        Some(f)
    }

    /// [`SeqFit::derive`] into `f`, a rank template this fit derived before (at any sequence
    /// length, rescaled to any rank since): every number that changes with s or with the rank
    /// is written again, so no copy of the graph is made. `None` as for `derive`, leaving `f`
    /// half rewritten (drop it).
    pub fn derive_into(&self, s: u64, f: &mut RankFit) -> Option<()> {
        if s > MAX_SEQ {
            return None;
        }
        // The rank template's bases and slopes at s.
        let p = &mut f.program;
        let n = p.kernel_ops.len();
        let (kernel_patches, scope_patches) = self.patches.split_at(n);
        for (op, (base, slope)) in p.kernel_ops.iter_mut().zip(kernel_patches) {
            op.0 = (base.at(s)?, slope.at(s)?);
        }
        for (op, (base, slope)) in p.scope_ops.iter_mut().zip(scope_patches) {
            op.0 = (base.at(s)?, slope.at(s)?);
        }
        let r = &mut f.row_program;
        let (kernel_rows, scope_rows) = self.rows.split_at(r.kernel_ops.len());
        for (op, &j) in r.kernel_ops.iter_mut().zip(kernel_rows) {
            op.0 = p.kernel_ops[j as usize].0;
        }
        for (op, &j) in r.scope_ops.iter_mut().zip(scope_rows) {
            op.0 = p.scope_ops[j as usize - n].0;
        }
        f.row_writes.refill(&f.row_program);
        // The graph at (s, r₀): the numbers that change with s, then those that change with the
        // rank at their bases (the same value where both change), the transient chains of both
        // recomputed from their sizes.
        self.numbers.write(&mut f.work, |q| q.at(s))?;
        f.program.write(&mut f.work, |(base, _)| Some(base))?;
        for si in self.chains.iter().chain(f.chains.iter().map(|c| &c.scope)) {
            recompute_chain(scope_mut(&mut f.work, *si as usize));
        }
        for g in &self.guards {
            let (a, b, kind) = scope_ref(&f.work, g.scope as usize).guards[g.idx as usize];
            if !side(kind, a, b).is_some_and(|now| same_way(kind, g.ord, now)) {
                return None;
            }
        }
        for c in &mut f.chains {
            c.fixed_max = fixed_max(scope_ref(&f.work, c.scope as usize), &c.varying);
        }
        // The guards' operands and the row numbers' ranges are those at s now; the rows'
        // kernels are copied from the graph at (s, r₀).
        f.rows_valid = f.rows_range();
        f.refresh_reps();
        f.plan.renumber();
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quadratics_by_hand() {
        let s = [16, 32, 48, 80];
        let int = |c: [i64; 3]| Quad { c, den: 1 };
        // 3·s² + 5·s + 7
        let v = s.map(|s| (3 * s * s + 5 * s + 7) as f64);
        let q = Quad::fit(&s, v).unwrap().unwrap();
        assert_eq!(q, int([7, 5, 3]));
        assert_eq!(q.at(1000), Some(3_005_007.0));
        // Constant: nothing to fit.
        assert_eq!(Quad::fit(&s, [2.5; 4]), Some(None));
        // A constant slope is still a polynomial.
        assert_eq!(Quad::through(&s, [4.0; 4]), Some(int([4, 0, 0])));
        // s·(s + 1)/2 has no integer coefficients, nor does twice it over 3: refused.
        assert_eq!(Quad::fit(&s, s.map(|s| (s * (s + 1) / 2) as f64)), None);
        // A cube is caught by the fourth line.
        assert_eq!(Quad::fit(&s, s.map(|s| (s * s * s) as f64)), None);
        // A number that changes by halves.
        assert_eq!(Quad::fit(&s, [1.5, 2.5, 3.5, 5.5]), None);
        // Thirds, rounded once as the recipe's `2·n / 3`: 2·2048·s over 3.
        let third = |s: u64| 2.0 * (2048 * s) as f64 / 3.0;
        let q = Quad::fit(&s, s.map(third)).unwrap().unwrap();
        assert_eq!(
            q,
            Quad {
                c: [0, 4096, 0],
                den: 3
            }
        );
        assert_eq!(q.at(17).map(f64::to_bits), Some(third(17).to_bits()));
        // Not a number, or not finite.
        assert_eq!(Quad::fit(&s, [f64::NAN, 1.0, 2.0, 3.0]), None);
        assert_eq!(Quad::fit(&s, [1.0, f64::INFINITY, 2.0, 3.0]), None);
        // A numerator past the exact range, and one just at it.
        assert_eq!(Quad::fit(&s, s.map(|s| LIMIT + s as f64)), None);
        assert_eq!(
            Quad::fit(&s, s.map(|s| LIMIT - 80.0 + s as f64)).map(|q| q.is_some()),
            Some(true)
        );
        assert_eq!(int([1 << 50, 0, 0]).at(7), Some(LIMIT));
        assert_eq!(int([-(1 << 50), 0, 0]).at(7), Some(-LIMIT));
        assert_eq!(int([(1 << 50) + 1, 0, 0]).at(7), None);
        assert_eq!(int([0, 0, 1 << 40]).at(1 << 10), None);
        assert_eq!(int([0, 0, 1 << 40]).at(MAX_SEQ), None);
        assert_eq!(int([0, i64::MAX / 2, 0]).at(4), None);
    }
}
