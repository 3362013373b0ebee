//! Rank templates: a step graph rescaled to another adapter rank instead of rebuilt.
//!
//! A sweep evaluates the same model, method, precision, trained layers, batch and sequence length
//! at many ranks. Along one such line, every quantity the graph recipes compute is a polynomial of
//! the rank r of degree at most one (adapter shapes r·k and n·r, GEMM FLOPs 2·M·r·k, ...), as long
//! as every comparison of sizes the recipes make (a max, a min, a broadcast test: the graph's
//! `guards`) comes out the same. [`RankFit::new`] takes three graphs built at three ranks,
//! checks that everything but the numbers is identical, and fits each number that changes as
//! `base + slope · (r − r₀)`, accepting only integer values and slopes that reproduce the third
//! graph exactly. [`RankFit::apply`] then writes each number at a new rank into a working copy of
//! the graph and re-checks every guard ([`RankFit::apply_for_rows`], a sweep's rows, writes only
//! what rows read and checks once a line the interval of ranks where every guard holds,
//! `RankFit::rows_range`); the optimizer phase, whose launch counts are step
//! functions of the tensor sizes, is rebuilt by the caller (`graph::rebuild_optimizer`).
//!
//! "The same" depends on how the recipe used the comparison (`graph::GuardKind`): a max or min
//! uses only the value, which both operands give at a tie, so a tie goes with either side; a
//! condition `a < b` counts a tie as "not less"; and the scope's running transient maximum
//! affects nothing but the scope's `transient_bytes`, so its sizes are fitted and that maximum
//! is recomputed at each point (`Chain`) instead of any side being required.
//!
//! Exactness: the recipes compute these numbers as f64 products and sums of integers, exact
//! below 2⁵³; a rescaled number is an integer of at most 2⁵⁰ (`LIMIT`) computed exactly from
//! integer base and slope, so it equals the recipe's own. Anything else (a non-integer number
//! that changes with the rank, a number past `LIMIT`, a structural difference between the probes,
//! a guard that leads its recipe another way, a transient chain that is not one) refuses the fit
//! or the point, and the caller builds the graph in full. A unit test compares rescaled graphs with fresh builds (`StepGraph` equality,
//! every field) over every preset and method.
//!
//! Costing a template's points (kernel costs kept per device, segments refolded in stretches
//! and blocks) is in `rescale_cost.rs`; templates derived across the sequence length in
//! `rescale_seq.rs`.

use crate::cost::{
    kernel_cost_memo, kernel_cost_slot, max_of_number, GemmMemo, GemmSlot, KernelCost,
};
use crate::graph::{GuardKind, Kernel, KernelKind, Phase, ScopeGraph, Segment, StepGraph};
use crate::simulate::{
    cost_classes, fresh_cost, host_cost, ClassKey, CostedGraph, CostedSegment, Piece, Stretch,
};
use crate::workload::{Runtime, Workload};
use costsim_hardware::Profile;
use std::cmp::Ordering;

/// Largest magnitude a rescaled number may take: 2⁵⁰, so that the recipes' own products (which
/// may pass through a few times the final value, e.g. q, k, v as a third of c_attn's output)
/// stay exact integers below 2⁵³.
const LIMIT: f64 = (1u64 << 50) as f64;

/// A number of a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KField {
    Flops,
    Read,
    Written,
    M,
    N,
    K,
    Batch,
}

/// A number of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SField {
    Saved,
    SavedBy(u32),
    Checkpoint,
    Trainable,
    Working,
    Transient,
    GuardA(u32),
    GuardB(u32),
}

/// Where a number lives: scope index (0 embedding, 1… layer graphs, then the head), and within
/// it a kernel of a segment (0 forward, 1 backward, 2 backward with accumulation) or the scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    Kernel {
        scope: u32,
        seg: u8,
        idx: u32,
        field: KField,
    },
    Scope {
        scope: u32,
        field: SField,
    },
}

/// One number that changes with the rank: `base + slope · (r − r₀)`.
#[derive(Debug, Clone, Copy)]
struct Patch {
    loc: Loc,
    base: f64,
    slope: f64,
}

/// Numbers grouped by what they write, for [`RankFit::apply_patches`] (each a base and a slope,
/// `V = (f64, f64)`) and `SeqFit::derive` (each a polynomial of the sequence length): runs of
/// consecutive numbers of one kernel, then of one scope, each target looked up once per run
/// rather than once per number (a sweep writes them at every point).
#[derive(Debug, Clone)]
struct Program<V = (f64, f64)> {
    /// (scope, segment, index) of a kernel and the end of its run in `kernel_ops`.
    kernels: Vec<(u32, u8, u32, u32)>,
    /// (value, field) of each kernel number.
    kernel_ops: Vec<(V, KField)>,
    /// A scope and the end of its run in `scope_ops`.
    scopes: Vec<(u32, u32)>,
    /// (value, field) of each scope number.
    scope_ops: Vec<(V, SField)>,
}

impl<V: Copy> Program<V> {
    fn new(numbers: impl IntoIterator<Item = (Loc, V)>) -> Self {
        let mut p = Program {
            kernels: Vec::new(),
            kernel_ops: Vec::new(),
            scopes: Vec::new(),
            scope_ops: Vec::new(),
        };
        for (loc, v) in numbers {
            match loc {
                Loc::Kernel {
                    scope,
                    seg,
                    idx,
                    field,
                } => {
                    p.kernel_ops.push((v, field));
                    let end = p.kernel_ops.len() as u32;
                    match p.kernels.last_mut() {
                        Some(run) if (run.0, run.1, run.2) == (scope, seg, idx) => run.3 = end,
                        _ => p.kernels.push((scope, seg, idx, end)),
                    }
                }
                Loc::Scope { scope, field } => {
                    p.scope_ops.push((v, field));
                    let end = p.scope_ops.len() as u32;
                    match p.scopes.last_mut() {
                        Some(run) if run.0 == scope => run.1 = end,
                        _ => p.scopes.push((scope, end)),
                    }
                }
            }
        }
        p
    }

    /// Every number with its place: kernels' then scopes', each in the order given to
    /// [`Program::new`].
    fn numbers(&self) -> impl Iterator<Item = (Loc, V)> + '_ {
        let mut start = 0;
        let kernels = self
            .kernels
            .iter()
            .flat_map(move |&(scope, seg, idx, end)| {
                let run = &self.kernel_ops[start..end as usize];
                start = end as usize;
                run.iter().map(move |&(v, field)| {
                    let loc = Loc::Kernel {
                        scope,
                        seg,
                        idx,
                        field,
                    };
                    (loc, v)
                })
            });
        let mut start = 0;
        let scopes = self.scopes.iter().flat_map(move |&(scope, end)| {
            let run = &self.scope_ops[start..end as usize];
            start = end as usize;
            run.iter()
                .map(move |&(v, field)| (Loc::Scope { scope, field }, v))
        });
        kernels.chain(scopes)
    }

    /// Write each number, `value(v)`, into `g`; `None` when `value` refuses one (past the exact
    /// range) or a size or count would be negative.
    fn write(&self, g: &mut StepGraph, mut value: impl FnMut(V) -> Option<f64>) -> Option<()> {
        let mut start = 0;
        for &(scope, seg, idx, end) in &self.kernels {
            let k = &mut segment_mut(scope_mut(g, scope as usize), seg).kernels[idx as usize];
            write_kernel(k, &self.kernel_ops[start..end as usize], &mut value)?;
            start = end as usize;
        }
        self.write_scopes(g, value)
    }

    /// The scopes' numbers of [`Program::write`].
    fn write_scopes(
        &self,
        g: &mut StepGraph,
        mut value: impl FnMut(V) -> Option<f64>,
    ) -> Option<()> {
        let dim = |v: f64| -> Option<u64> { (v >= 0.0).then_some(v as u64) };
        let mut start = 0;
        for &(scope, end) in &self.scopes {
            let s = scope_mut(g, scope as usize);
            for &(x, field) in &self.scope_ops[start..end as usize] {
                let v = value(x)?;
                match field {
                    SField::Saved => s.saved_bytes = v,
                    SField::SavedBy(i) => s.saved_by_module[i as usize].1 = v,
                    SField::Checkpoint => s.checkpoint_bytes = v,
                    SField::Trainable => s.trainable = dim(v)?,
                    SField::Working => s.backward_working_bytes = v,
                    SField::Transient => s.transient_bytes = v,
                    SField::GuardA(i) => s.guards[i as usize].0 = v,
                    SField::GuardB(i) => s.guards[i as usize].1 = v,
                }
            }
            start = end as usize;
        }
        Some(())
    }
}

/// Write one kernel's numbers (`ops`, each `value(v)`) into `k`; `None` as [`Program::write`].
#[inline(always)]
fn write_kernel<V: Copy>(
    k: &mut Kernel,
    ops: &[(V, KField)],
    value: &mut impl FnMut(V) -> Option<f64>,
) -> Option<()> {
    let dim = |v: f64| -> Option<u64> { (v >= 0.0).then_some(v as u64) };
    for &(x, field) in ops {
        let v = value(x)?;
        match field {
            KField::Flops => k.flops = v,
            KField::Read => k.bytes_read = v,
            KField::Written => k.bytes_written = v,
            KField::M => k.gemm.as_mut()?.m = dim(v)?,
            KField::N => k.gemm.as_mut()?.n = dim(v)?,
            KField::K => k.gemm.as_mut()?.k = dim(v)?,
            KField::Batch => k.gemm.as_mut()?.batch = dim(v)?,
        }
    }
    Some(())
}

/// A guard whose operands change with the rank, and the side it was on at the probes
/// ([`probes_side`]).
#[derive(Debug, Clone, Copy)]
struct Guard {
    scope: u32,
    idx: u32,
    ord: Ordering,
    /// Where in the program's `scope_ops` each operand's base and slope are (a, b), or
    /// [`Step::OWN`] for an operand that does not change with the rank ([`RankFit::assemble`]).
    ops: [u32; 2],
}

/// A kernel with a patched number, and the one whose cost it shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    /// Scope index (0 embedding, 1… layer graphs, then the head).
    pub scope: u32,
    /// Segment (0 forward, 1 backward, 2 backward with accumulation).
    pub seg: u8,
    /// Kernel index in the segment.
    pub idx: u32,
    /// Index, in the same list, of the first changed kernel whose cost inputs
    /// (`same_cost_inputs`) equal this one's at every rank of the fit: itself, or an earlier
    /// one whose cost is copied instead of evaluated again.
    pub rep: u32,
}

impl Changed {
    /// A changed kernel costed on its own (its own representative), at position `at` of its list.
    pub fn own(scope: u32, seg: u8, idx: u32, at: usize) -> Self {
        Self {
            scope,
            seg,
            idx,
            rep: at as u32,
        }
    }
}

/// A step graph fitted over the rank (see the module doc).
#[derive(Debug, Clone)]
pub struct RankFit {
    r0: u64,
    /// The fit's patches, grouped for applying ([`RankFit::apply`]).
    program: Program,
    /// The patches a sweep's rows need ([`RankFit::apply_for_rows`]), grouped: the scopes'
    /// numbers and the representatives' kernel numbers ([`row_patches`]).
    row_program: Program,
    guards: Vec<Guard>,
    /// The ranks at which `row_program`'s numbers are in range and every guard leads its
    /// recipe as at the probes ([`RankFit::rows_range`]), inclusive; `None` for none.
    rows_valid: Option<(u64, u64)>,
    /// The scopes whose transient chain has a link that changes with the rank.
    chains: Vec<Chain>,
    /// Kernels with a patched number, each once, in (scope, segment, index) order.
    changed: Vec<Changed>,
    /// Where `changed` find their costs ([`RankFit::costed`]).
    plan: Plan,
    /// The graph at r₀, rewritten in place by [`RankFit::apply`].
    work: StepGraph,
    /// Copies of the kernels `row_program` rewrites (the representatives of `changed` whose
    /// row numbers change), in its order: [`RankFit::apply_for_rows`] writes them here, not
    /// into `work`, and the costing reads them ([`Step::row`]); [`RankFit::apply`] and a
    /// derivation copy them from `work` again ([`RankFit::refresh_reps`]).
    reps: Vec<Kernel>,
    /// `row_program`'s kernel numbers grouped by field, written into `reps` at a sweep's point
    /// ([`RowWrites`]); rebuilt wherever `row_program` changes.
    row_writes: RowWrites,
}

/// A row program's kernel numbers grouped by field ([`KField`], in its order), each (the
/// kernel's place in [`RankFit::reps`], base, slope): a point writes each group in a loop of
/// its own, without matching on the field a number (llama2-7b LoRA's 40 kernel numbers a point:
/// the fit's application 1.64 k → 1.41 k instructions a point, callgrind, 2026-12-03). Each
/// field of a kernel is written once, so the order is free.
#[derive(Debug, Clone, Default)]
struct RowWrites {
    ops: Vec<(u32, f64, f64)>,
    /// The end of each field's group in `ops`.
    ends: [u32; 7],
}

impl RowWrites {
    /// Group `p`'s kernel numbers, into this one's storage.
    fn refill(&mut self, p: &Program) {
        self.ops.clear();
        let field_of = |f: KField| match f {
            KField::Flops => 0,
            KField::Read => 1,
            KField::Written => 2,
            KField::M => 3,
            KField::N => 4,
            KField::K => 5,
            KField::Batch => 6,
        };
        for want in 0..self.ends.len() {
            let mut start = 0;
            for (i, &(_, _, _, end)) in p.kernels.iter().enumerate() {
                for &((base, slope), f) in &p.kernel_ops[start..end as usize] {
                    if field_of(f) == want {
                        self.ops.push((i as u32, base, slope));
                    }
                }
                start = end as usize;
            }
            self.ends[want] = self.ops.len() as u32;
        }
    }

    /// Write every number at r − r₀ = `dr` into `kernels` (the copies); `None` where a size or
    /// count would be negative or a GEMM's dimension has no GEMM, as [`write_kernel`].
    ///
    /// For a rank within [`RankFit::rows_valid`], where every number is at most `LIMIT` in size:
    /// a dimension converts through i64 (one instruction; `as u64` saturates in several), the
    /// same integer below 2⁶³.
    #[inline]
    fn write(&self, kernels: &mut [Kernel], dr: f64) -> Option<()> {
        let dim = |v: f64| -> Option<u64> {
            debug_assert!(v.abs() <= LIMIT);
            (v >= 0.0).then_some(v as i64 as u64)
        };
        let mut start = 0;
        for (field, &end) in self.ends.iter().enumerate() {
            let ops = &self.ops[start..end as usize];
            start = end as usize;
            macro_rules! each {
                ($k:ident, $v:ident => $write:expr) => {
                    for &(i, base, slope) in ops {
                        let $k = &mut kernels[i as usize];
                        let $v = base + slope * dr;
                        $write;
                    }
                };
            }
            match field {
                0 => each!(k, v => k.flops = v),
                1 => each!(k, v => k.bytes_read = v),
                2 => each!(k, v => k.bytes_written = v),
                3 => each!(k, v => k.gemm.as_mut()?.m = dim(v)?),
                4 => each!(k, v => k.gemm.as_mut()?.n = dim(v)?),
                5 => each!(k, v => k.gemm.as_mut()?.k = dim(v)?),
                _ => each!(k, v => k.gemm.as_mut()?.batch = dim(v)?),
            }
        }
        Some(())
    }
}

/// A scope's transient chain ([`GuardKind::Transient`]) with sizes that change with the rank:
/// its maximum, `transient_bytes`, is recomputed at each point instead of fitted (it is a
/// maximum of affine sizes, so where the largest changes it is not affine), and a point where
/// the largest changes is not refused.
#[derive(Debug, Clone)]
struct Chain {
    scope: u32,
    /// The largest of the chain's sizes that do not change with the rank (and of its start, 0).
    fixed_max: f64,
    /// Guard indices of the links whose size changes with the rank.
    varying: Vec<u32>,
    /// Where in the program's `scope_ops` each varying link's size (base and slope) is, in the
    /// order of `varying` ([`RankFit::assemble`]): a row's point takes the maximum from them
    /// without writing the sizes.
    sizes: Vec<u32>,
}

/// The fit's parts (see [`RankFit::new`]).
type Fitted = (Vec<Patch>, Vec<Guard>, Vec<Chain>, Vec<Changed>);

/// An interval of integers, `lo ..= hi` (empty when `lo > hi`), narrowed by conditions on an
/// integer affine function `v₀ + s·x` of its members (v₀ and s of at most 2⁶² in size: the
/// quotients are taken in 64 bits, a fraction of the cost of 128-bit ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    lo: i128,
    hi: i128,
}

impl Interval {
    /// Keep the x with v₀ + s·x ≤ 0.
    fn at_most(&mut self, v0: i64, s: i64) {
        debug_assert!(v0.unsigned_abs() <= 1 << 62 && s.unsigned_abs() <= 1 << 62);
        match s.cmp(&0) {
            Ordering::Equal if v0 > 0 => self.hi = self.lo - 1,
            Ordering::Equal => {}
            // x ≤ ⌊−v₀ / s⌋
            Ordering::Greater => self.hi = self.hi.min(i128::from((-v0).div_euclid(s))),
            // x ≥ ⌈v₀ / −s⌉
            Ordering::Less => self.lo = self.lo.max(-i128::from((-v0).div_euclid(-s))),
        }
    }

    /// Keep the x with v₀ + s·x ≥ 0.
    fn at_least(&mut self, v0: i64, s: i64) {
        self.at_most(-v0, -s);
    }
}

/// `v` as an integer, when it is one (of at most 2⁵³ in size, where every f64 integer is exact).
fn exact_int(v: f64) -> Option<i64> {
    (v.fract() == 0.0 && v.abs() <= (1u64 << 53) as f64).then_some(v as i64)
}

/// Whether a scope's transient chain is what [`GuardKind::Transient`] says: it starts from 0,
/// each link's running maximum is the maximum of the previous link's and its size, and the
/// scope's `transient_bytes` is the last maximum (0 without links).
fn chain_holds(s: &ScopeGraph) -> bool {
    let mut run = 0.0f64;
    for &(a, b, kind) in &s.guards {
        if kind == GuardKind::Transient {
            if a.to_bits() != run.to_bits() {
                return false;
            }
            run = run.max(b);
        }
    }
    run.to_bits() == s.transient_bytes.to_bits()
}

/// The scopes of a graph in index order.
fn scopes(g: &StepGraph) -> impl Iterator<Item = &ScopeGraph> {
    std::iter::once(&g.embedding)
        .chain(g.layer_graphs.iter())
        .chain(std::iter::once(&g.head))
}

fn scope_ref(g: &StepGraph, i: usize) -> &ScopeGraph {
    let n = g.layer_graphs.len();
    match i {
        0 => &g.embedding,
        i if i <= n => &g.layer_graphs[i - 1],
        _ => &g.head,
    }
}

fn scope_mut(g: &mut StepGraph, i: usize) -> &mut ScopeGraph {
    let n = g.layer_graphs.len();
    match i {
        0 => &mut g.embedding,
        i if i <= n => &mut g.layer_graphs[i - 1],
        _ => &mut g.head,
    }
}

/// The kernel at (scope, segment, index).
fn kernel_at(g: &StepGraph, (scope, seg, idx): (u32, u8, u32)) -> &Kernel {
    &segments(scope_ref(g, scope as usize))[seg as usize].kernels[idx as usize]
}

fn segments(s: &ScopeGraph) -> [&Segment; 3] {
    [&s.forward, &s.backward, &s.backward_accum]
}

fn segment_mut(s: &mut ScopeGraph, seg: u8) -> &mut Segment {
    match seg {
        0 => &mut s.forward,
        1 => &mut s.backward,
        _ => &mut s.backward_accum,
    }
}

/// Whether two names are equal: the same literal (pointer and length) in the common case, else
/// compared byte by byte.
fn same_str(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// Everything of a kernel but its numbers.
fn same_kind(a: &Kernel, b: &Kernel) -> bool {
    same_str(a.name, b.name)
        && same_str(a.module, b.module)
        && same_str(a.piece, b.piece)
        && a.kind == b.kind
        && a.dtype == b.dtype
        && a.math == b.math
        && a.launches == b.launches
        && a.gemm.is_some() == b.gemm.is_some()
        && a.deps == b.deps
        && a.module_calls == b.module_calls
        && a.peft_calls == b.peft_calls
        && a.host_tensors == b.host_tensors
        && a.recompute == b.recompute
}

/// The kernels of `g` that differ from those of `base` at the same place, in (scope, segment,
/// index) order, each its own representative: what [`cost_kept`] must cost again to turn costs
/// kept for `base` into `g`'s (a sweep's second and third probes of a line, built at other
/// ranks, differ from the one before only in their adapters). `None` when the graphs' segments
/// differ in number or length, or a differing kernel launches a different number of times (the
/// kept segments' launch totals would be wrong).
pub fn differing(g: &StepGraph, base: &StepGraph) -> Option<Vec<Changed>> {
    if g.layer_graphs.len() != base.layer_graphs.len() {
        return None;
    }
    let mut out = Vec::new();
    for (si, (a, b)) in scopes(g).zip(scopes(base)).enumerate() {
        for (seg, (x, y)) in segments(a).into_iter().zip(segments(b)).enumerate() {
            if x.kernels.len() != y.kernels.len() {
                return None;
            }
            for (idx, (k, l)) in x.kernels.iter().zip(&y.kernels).enumerate() {
                // Every field `==` compares, the names by pointer first (`same_str`): a derived
                // `==` calls memcmp on every name, a sixth of a sweep's time on a Xeon (though
                // callgrind counts its instructions as few).
                if !(same_cost_inputs(k, l) && same_kind(k, l)) {
                    if k.launches != l.launches {
                        return None;
                    }
                    let at = out.len();
                    out.push(Changed::own(si as u32, seg as u8, idx as u32, at));
                }
            }
        }
    }
    Some(out)
}

/// Whether two kernels have equal costs on every device: equal in every field
/// `cost::kernel_cost_memo` reads (its doc names them). Two changed kernels equal in these at
/// three ranks are equal at every rank of the fit (their numbers are affine in the rank), so
/// one's cost stands for the other's: LoRA's adapters of equal shapes in one layer, the same
/// kernel in two layer classes (llama2-7b LoRA at batch 4 × 512: 137 changed kernels, 16
/// distinct costs; gpt2 LoRA: 79 and 21).
fn same_cost_inputs(a: &Kernel, b: &Kernel) -> bool {
    same_str(a.name, b.name)
        && same_str(a.piece, b.piece)
        && a.kind == b.kind
        && a.dtype == b.dtype
        && a.math == b.math
        && a.launches == b.launches
        && a.flops == b.flops
        && a.bytes_read == b.bytes_read
        && a.bytes_written == b.bytes_written
        && a.gemm == b.gemm
}

/// Everything of a step graph that the fit does not rescale or rebuild: the same at every rank.
/// Its scopes are compared and fitted separately, and its optimizer phase and trainable tensors
/// are rebuilt per point (`graph::rebuild_optimizer`). The destructuring names every field, so
/// that a field added to `StepGraph` does not compile here until it is decided for.
fn same_frame(a: &StepGraph, b: &StepGraph) -> bool {
    let StepGraph {
        family,
        embedding: _,
        layer_graphs,
        layer_class,
        head: _,
        optimizer: _,
        trainable_tensors: _,
        nn_modules,
    } = a;
    *family == b.family
        && layer_graphs.len() == b.layer_graphs.len()
        && *layer_class == b.layer_class
        && *nn_modules == b.nn_modules
}

/// Everything of a scope but its numbers (its kernels compared separately).
fn same_scope(a: &ScopeGraph, b: &ScopeGraph) -> bool {
    a.output_rg == b.output_rg
        && a.guards.len() == b.guards.len()
        && a.saved_by_module.len() == b.saved_by_module.len()
        && a.saved_by_module
            .iter()
            .zip(&b.saved_by_module)
            .all(|(x, y)| x.0 == y.0)
        && segments(a)
            .iter()
            .zip(segments(b))
            .all(|(x, y)| x.kernels.len() == y.kernels.len())
}

/// The side of a guard a, b ([`GuardKind`]) at one point: a < b, a = b or a > b, where a tie of
/// `a < b` counts as a > b (both are "not less"); `None` for a NaN.
fn side(kind: GuardKind, a: f64, b: f64) -> Option<Ordering> {
    let ord = a.partial_cmp(&b)?;
    Some(match (kind, ord) {
        (GuardKind::Less, Ordering::Equal) => Ordering::Greater,
        _ => ord,
    })
}

/// Whether a guard on side `now` leads its recipe as it did at the probes (side `fitted`,
/// [`probes_side`]): the same side, or a tie of a max or min, where both operands are the value
/// (a fitted tie, all three probes tied, admits only a tie).
fn same_way(kind: GuardKind, fitted: Ordering, now: Ordering) -> bool {
    now == fitted || (kind == GuardKind::Extremum && now == Ordering::Equal)
}

/// The side guard `i` of a scope is on in every graph of `s` (a rank fit's three probes, a
/// sequence fit's four lines), a max's or min's ties taken as the others' side (all tied:
/// `Equal`); `None` when they disagree, the guard's kind differs between them, or an operand is
/// NaN. A probe on a tie of a max or min therefore fits with its neighbours on either side: a
/// rank line's points need not step around the rank where such a guard's operands meet (PaCA's
/// gather at exactly K/16 columns).
fn probes_side(s: &[&ScopeGraph], i: usize) -> Option<Ordering> {
    let kind = s[0].guards[i].2;
    let mut common = Ordering::Equal;
    for sc in s {
        let (a, b, k) = sc.guards[i];
        if k != kind {
            return None;
        }
        if kind == GuardKind::Transient {
            // Either side leads the same way (the chain is recomputed): only a NaN refuses.
            a.partial_cmp(&b)?;
            continue;
        }
        match side(kind, a, b)? {
            Ordering::Equal => {}
            now if common == Ordering::Equal => common = now,
            now if now != common => return None,
            _ => {}
        }
    }
    Some(common)
}

/// The fit of one number over three ranks: `Some(None)` when it does not change (the same
/// bits), `Some(Some((base, slope)))` when it is an integer affine in the rank that reproduces all
/// three exactly, `None` otherwise.
fn affine(r: [f64; 3], v: [f64; 3]) -> Option<Option<(f64, f64)>> {
    if v[0].to_bits() == v[1].to_bits() && v[0].to_bits() == v[2].to_bits() {
        return Some(None);
    }
    if v.iter().any(|x| x.fract() != 0.0 || x.abs() > LIMIT) {
        return None;
    }
    // Integers below 2⁵³: the difference is exact, and so is the quotient when it is an integer.
    let slope = (v[1] - v[0]) / (r[1] - r[0]);
    if slope.fract() != 0.0
        || v[0] + slope * (r[1] - r[0]) != v[1]
        || v[0] + slope * (r[2] - r[0]) != v[2]
    {
        return None;
    }
    Some(Some((v[0], slope)))
}

/// Of `patches`, those a sweep's rows write: every scope number (memory, trainable parameters)
/// but the saved bytes by module (`ScopeGraph::saved_by_module`, a breakdown of `saved_bytes`
/// that no row reads) and the guards' numbers (the operands of those checked for the whole
/// line at once, [`RankFit::rows_range`], and the sizes of transient links, whose maximum a
/// point takes from the program, `Chain::sizes`), and the kernel numbers of each changed kernel
/// that is its own representative ([`Changed::rep`]). Another changed kernel's cost is its
/// representative's ([`cost_kept`]), so its FLOPs, bytes and GEMM shape are read only by the
/// prediction's FLOP and byte totals, which no row carries; its representative's equal numbers
/// meet the same range checks in [`RankFit::apply`]. Of a representative GEMM (in `g`, the
/// fit's graph), the FLOPs are left out too: its cost reads its shape and bytes.
fn row_patches(patches: &[Patch], changed: &[Changed], g: &StepGraph) -> Vec<Patch> {
    // Kernel patches and `changed` are both in (scope, segment, index) order.
    let mut at = 0;
    patches
        .iter()
        .filter(|p| match p.loc {
            // A guard's operands are checked once for the whole line (`rows_range`); a transient
            // chain's maximum is taken from its sizes' bases and slopes (`Chain::sizes`).
            Loc::Scope { field, .. } => !matches!(
                field,
                SField::SavedBy(_) | SField::GuardA(_) | SField::GuardB(_)
            ),
            Loc::Kernel {
                scope,
                seg,
                idx,
                field,
            } => {
                while changed
                    .get(at)
                    .is_some_and(|c| (c.scope, c.seg, c.idx) != (scope, seg, idx))
                {
                    at += 1;
                }
                // A GEMM's cost reads its shape, not its FLOPs (`cost::kernel_cost_memo`).
                let gemm = |k: &Kernel| k.kind == KernelKind::Gemm && k.gemm.is_some();
                changed.get(at).is_some_and(|c| c.rep as usize == at)
                    && !(field == KField::Flops && gemm(kernel_at(g, (scope, seg, idx))))
            }
        })
        .copied()
        .collect()
}

impl RankFit {
    /// Fit from graphs built at three distinct ranks (the same model, method, workload and
    /// trained layers otherwise); `None` when they differ in anything but affine integer numbers
    /// or a guard compares differently between them.
    ///
    /// The first probe's graph becomes the working copy (moved, not cloned): a sweep that kept
    /// that probe's kernel costs ([`cost_kept`]) goes on using them.
    pub fn new(probes: [(u64, StepGraph); 3]) -> Option<RankFit> {
        let [(r0, g0), (r1, g1), (r2, g2)] = probes;
        let fitted = Self::fit([(r0, &g0), (r1, &g1), (r2, &g2)])?;
        Some(Self::assemble(r0, fitted, g0))
    }

    /// [`RankFit::new`] from the three graphs in `probes`, which are left in place when the fit
    /// is refused (a sweep then drops the oldest and tries again with the next point's graph) and
    /// emptied when it succeeds (the first becomes the working copy, moved).
    pub fn from_probes(probes: &mut Vec<(u64, StepGraph)>) -> Option<RankFit> {
        let [(r0, g0), (r1, g1), (r2, g2)] = probes.as_slice() else {
            return None;
        };
        let fitted = Self::fit([(*r0, g0), (*r1, g1), (*r2, g2)])?;
        probes.truncate(1);
        let (r0, work) = probes.pop()?;
        Some(Self::assemble(r0, fitted, work))
    }

    /// A fit's parts with the graph at r₀ they rewrite.
    fn assemble(
        r0: u64,
        (patches, mut guards, mut chains, changed): Fitted,
        work: StepGraph,
    ) -> RankFit {
        let program = Program::new(patches.iter().map(|p| (p.loc, (p.base, p.slope))));
        // Each guard's operands in the program's scope numbers (kernels' first, then scopes').
        let mut start = 0;
        for &(scope, end) in &program.scopes {
            for (j, &(_, field)) in program.scope_ops[start..end as usize].iter().enumerate() {
                let (i, side) = match field {
                    SField::GuardA(i) => (i, 0),
                    SField::GuardB(i) => (i, 1),
                    _ => continue,
                };
                if let Some(g) = guards.iter_mut().find(|g| (g.scope, g.idx) == (scope, i)) {
                    g.ops[side] = (start + j) as u32;
                } else if let Some(c) = chains.iter_mut().find(|c| c.scope == scope) {
                    // A transient link's size (only sizes of links are fitted: `fit`).
                    debug_assert!(side == 1 && c.varying.contains(&i));
                    c.sizes.push((start + j) as u32);
                }
            }
            start = end as usize;
        }
        let row_program = Program::new(
            row_patches(&patches, &changed, &work)
                .iter()
                .map(|p| (p.loc, (p.base, p.slope))),
        );
        let mut plan = Plan::new(&work, &changed);
        // A representative whose row numbers change is read from `reps` (kernels and steps are
        // both in (scope, segment, index) order).
        let mut rows = row_program.kernels.iter().enumerate().peekable();
        for st in plan.steps.iter_mut().filter(|st| st.from == Step::OWN) {
            while rows
                .peek()
                .is_some_and(|(_, k)| (k.0, k.1, k.2) < (st.scope, st.seg, st.idx))
            {
                rows.next();
            }
            if let Some(&(i, k)) = rows.peek() {
                if (k.0, k.1, k.2) == (st.scope, st.seg, st.idx) {
                    st.row = i as u32;
                }
            }
        }
        let reps = row_program
            .kernels
            .iter()
            .map(|&(scope, seg, idx, _)| kernel_at(&work, (scope, seg, idx)).clone())
            .collect();
        let mut fit = RankFit {
            r0,
            row_program,
            program,
            guards,
            rows_valid: None,
            chains,
            plan,
            changed,
            work,
            reps,
            row_writes: RowWrites::default(),
        };
        fit.row_writes.refill(&fit.row_program);
        fit.rows_valid = fit.rows_range();
        fit
    }

    /// [`RankFit::reps`] copied from the working graph again (after it was rewritten in full).
    fn refresh_reps(&mut self) {
        for (k, &(scope, seg, idx, _)) in self.reps.iter_mut().zip(&self.row_program.kernels) {
            k.clone_from(kernel_at(&self.work, (scope, seg, idx)));
        }
    }

    /// The ranks at which a sweep's row numbers are all in range (at most `LIMIT` in size, a
    /// size or count not negative) and every guard leads its recipe as at the probes, inclusive,
    /// or `None` for none: what [`RankFit::apply_for_rows`] would otherwise check number by
    /// number at every point. Each number is an integer affine function of the rank, so each
    /// condition holds on an interval of ranks (a guard compares two such functions: their
    /// difference changes sign once at most), found in exact integer arithmetic; their
    /// intersection is the answer. A number that is not an integer (a guard's operand that does
    /// not change with the rank may be one) gives `None`, and the line's points are built in
    /// full.
    fn rows_range(&self) -> Option<(u64, u64)> {
        let r0 = i128::from(self.r0);
        // x = r − r₀ over ranks 0 ..= u64::MAX.
        let mut x = Interval {
            lo: -r0,
            hi: i128::from(u64::MAX) - r0,
        };
        let limit = LIMIT as i64;
        for (loc, (base, slope)) in self.row_program.numbers() {
            let (b, s) = (exact_int(base)?, exact_int(slope)?);
            x.at_most(b - limit, s);
            x.at_least(b + limit, s);
            let dim = matches!(
                loc,
                Loc::Kernel {
                    field: KField::M | KField::N | KField::K | KField::Batch,
                    ..
                } | Loc::Scope {
                    field: SField::Trainable,
                    ..
                }
            );
            if dim {
                x.at_least(b, s);
            }
        }
        // The transient links' sizes stay within LIMIT, as `Program::write` requires.
        for &j in self.chains.iter().flat_map(|c| &c.sizes) {
            let (base, slope) = self.program.scope_ops[j as usize].0;
            let (b, s) = (exact_int(base)?, exact_int(slope)?);
            x.at_most(b - limit, s);
            x.at_least(b + limit, s);
        }
        for g in &self.guards {
            let (a, b, kind) = scope_ref(&self.work, g.scope as usize).guards[g.idx as usize];
            let operand = |op: u32, fixed: f64| -> Option<(i64, i64)> {
                if op == Step::OWN {
                    Some((exact_int(fixed)?, 0))
                } else {
                    let (base, slope) = self.program.scope_ops[op as usize].0;
                    let (b, s) = (exact_int(base)?, exact_int(slope)?);
                    Some((b, s))
                }
            };
            let (a0, sa) = operand(g.ops[0], a)?;
            let (b0, sb) = operand(g.ops[1], b)?;
            // The program's guard numbers stay within LIMIT, as `Program::write` requires.
            for (v, s) in [(a0, sa), (b0, sb)] {
                x.at_most(v - limit, s);
                x.at_least(v + limit, s);
            }
            // d = a − b: `side` is its sign (a tie of a `Less` condition counts as Greater).
            let (d0, ds) = (a0 - b0, sa - sb);
            match (kind, g.ord) {
                (GuardKind::Extremum, Ordering::Less) => x.at_most(d0, ds),
                (GuardKind::Extremum, Ordering::Greater) | (GuardKind::Less, Ordering::Greater) => {
                    x.at_least(d0, ds)
                }
                (GuardKind::Extremum, Ordering::Equal) => {
                    x.at_most(d0, ds);
                    x.at_least(d0, ds);
                }
                (GuardKind::Less, Ordering::Less) => x.at_most(d0 + 1, ds),
                // A transient link is not a guard, and a `Less` condition is never fitted
                // on a tie (`side`): no rank of such a guard is trusted.
                _ => return None,
            }
        }
        (x.lo <= x.hi).then(|| {
            let r = |v: i128| u64::try_from(v + r0).expect("within 0 ..= u64::MAX");
            (r(x.lo), r(x.hi))
        })
    }

    /// The patches, guards, transient chains and changed kernels of a fit (see
    /// [`RankFit::new`]).
    fn fit(probes: [(u64, &StepGraph); 3]) -> Option<Fitted> {
        let [(r0, g0), (r1, g1), (r2, g2)] = probes;
        if r0 == r1 || r0 == r2 || r1 == r2 {
            return None;
        }
        let r = [r0 as f64, r1 as f64, r2 as f64];
        let gs = [g0, g1, g2];
        if gs.iter().any(|g| !same_frame(g, g0)) {
            return None;
        }
        let mut patches = Vec::new();
        let mut guards = Vec::new();
        let mut chains = Vec::new();
        let mut fit = |v: [f64; 3], loc: Loc| -> Option<bool> {
            match affine(r, v)? {
                None => Some(false),
                Some((base, slope)) => {
                    patches.push(Patch { loc, base, slope });
                    Some(true)
                }
            }
        };
        let per_scope: Vec<[&ScopeGraph; 3]> = scopes(g0)
            .zip(scopes(g1))
            .zip(scopes(g2))
            .map(|((a, b), c)| [a, b, c])
            .collect();
        // Guards first: probes on both sides of a comparison (e.g. PaCA's gather at K/16
        // columns between geometric ranks) are the common refusal, and cheap to find.
        for s in &per_scope {
            if !same_scope(s[0], s[1]) || !same_scope(s[0], s[2]) {
                return None;
            }
            if !s.iter().all(|sc| chain_holds(sc)) {
                return None;
            }
            for i in 0..s[0].guards.len() {
                probes_side(s, i)?;
            }
        }
        // Every scope passed `same_scope` and agreed on every guard above.
        for (si, s) in per_scope.iter().enumerate() {
            let scope = si as u32;
            for seg in 0..3u8 {
                let ks: [&[Kernel]; 3] = s.map(|sc| segments(sc)[seg as usize].kernels.as_slice());
                #[allow(clippy::needless_range_loop)] // three graphs' kernels in step, by index
                for idx in 0..ks[0].len() {
                    let k = [&ks[0][idx], &ks[1][idx], &ks[2][idx]];
                    if !same_kind(k[0], k[1]) || !same_kind(k[0], k[2]) {
                        return None;
                    }
                    let at = |field| Loc::Kernel {
                        scope,
                        seg,
                        idx: idx as u32,
                        field,
                    };
                    fit(k.map(|k| k.flops), at(KField::Flops))?;
                    fit(k.map(|k| k.bytes_read), at(KField::Read))?;
                    fit(k.map(|k| k.bytes_written), at(KField::Written))?;
                    if let [Some(a), Some(b), Some(c)] = k.map(|k| k.gemm) {
                        let g = [a, b, c];
                        fit(g.map(|g| g.m as f64), at(KField::M))?;
                        fit(g.map(|g| g.n as f64), at(KField::N))?;
                        fit(g.map(|g| g.k as f64), at(KField::K))?;
                        fit(g.map(|g| g.batch as f64), at(KField::Batch))?;
                    }
                }
            }
            let at = |field| Loc::Scope { scope, field };
            fit(s.map(|s| s.saved_bytes), at(SField::Saved))?;
            for i in 0..s[0].saved_by_module.len() {
                fit(
                    s.map(|s| s.saved_by_module[i].1),
                    at(SField::SavedBy(i as u32)),
                )?;
            }
            fit(s.map(|s| s.checkpoint_bytes), at(SField::Checkpoint))?;
            fit(s.map(|s| s.trainable as f64), at(SField::Trainable))?;
            fit(s.map(|s| s.backward_working_bytes), at(SField::Working))?;
            // The transient chain's sizes are fitted; its running maxima and the scope's
            // transient are recomputed from them where a size changes (`Chain`).
            let mut chain = Chain {
                scope,
                fixed_max: 0.0,
                varying: Vec::new(),
                sizes: Vec::new(),
            };
            for i in 0..s[0].guards.len() {
                let ord = probes_side(s, i)?;
                let (_, gb, kind) = s[0].guards[i];
                if kind == GuardKind::Transient {
                    if fit(s.map(|s| s.guards[i].1), at(SField::GuardB(i as u32)))? {
                        chain.varying.push(i as u32);
                    } else {
                        chain.fixed_max = chain.fixed_max.max(gb);
                    }
                    continue;
                }
                let a = fit(s.map(|s| s.guards[i].0), at(SField::GuardA(i as u32)))?;
                let b = fit(s.map(|s| s.guards[i].1), at(SField::GuardB(i as u32)))?;
                if a || b {
                    guards.push(Guard {
                        scope,
                        idx: i as u32,
                        ord,
                        ops: [Step::OWN; 2],
                    });
                }
            }
            if chain.varying.is_empty() {
                fit(s.map(|s| s.transient_bytes), at(SField::Transient))?;
            } else {
                chains.push(chain);
            }
        }
        let mut at: Vec<(u32, u8, u32)> = patches
            .iter()
            .filter_map(|p| match p.loc {
                Loc::Kernel {
                    scope, seg, idx, ..
                } => Some((scope, seg, idx)),
                Loc::Scope { .. } => None,
            })
            .collect();
        at.dedup();
        // Each changed kernel's representative: the first earlier one with equal cost inputs in
        // all three probes (hence at every rank of the fit), else itself.
        let ks: Vec<[&Kernel; 3]> = at.iter().map(|&a| gs.map(|g| kernel_at(g, a))).collect();
        let mut reps: Vec<usize> = Vec::new();
        let changed = at
            .iter()
            .enumerate()
            .map(|(j, &(scope, seg, idx))| {
                let same = |&r: &usize| (0..3).all(|p| same_cost_inputs(ks[r][p], ks[j][p]));
                let rep = reps.iter().copied().find(same).unwrap_or_else(|| {
                    reps.push(j);
                    j
                });
                Changed {
                    scope,
                    seg,
                    idx,
                    rep: rep as u32,
                }
            })
            .collect();
        Some((patches, guards, chains, changed))
    }

    /// The costed segments of the graph [`RankFit::apply_for_rows`] (or [`RankFit::apply`])
    /// returned last (its optimizer phase rebuilt), on `hw` with `w`'s runtime: `slot` keeps this
    /// template's kernel costs on that device between points (`None` the first time, or those
    /// [`cost_kept`] evaluated for the first probe), and only the kernels with a rescaled number
    /// (one of each set with equal costs) and the optimizer phase (unless `optimizer` holds its
    /// costs: [`cost_kept`]) are costed again. Its times equal `simulate::cost_graph_memo`'s
    /// without `keep_kernels` up to rounding (the refilled segments are folded in stretches and
    /// blocks, the same sums in another order: `simulate::Piece`); its totals are the first
    /// costing's ([`cost_kept`]).
    pub fn costed<'a>(
        &self,
        slot: &'a mut Option<TemplateCosts>,
        w: &Workload,
        hw: &Profile,
        memo: &mut GemmMemo,
        optimizer: &mut Option<CostedSegment>,
    ) -> &'a CostedGraph {
        cost_planned(
            &self.work, &self.reps, &self.plan, slot, w, hw, memo, optimizer,
        )
    }

    /// Swap the working graph's trainable tensors and optimizer phase with `tensors` and `seg`
    /// (a sweep lends it a phase built for the point's rank, then takes it back).
    pub fn swap_optimizer(&mut self, tensors: &mut Vec<u64>, seg: &mut Segment) {
        std::mem::swap(&mut self.work.trainable_tensors, tensors);
        std::mem::swap(&mut self.work.optimizer, seg);
    }

    /// The rank r₀ the fit's graph was built at (its bases' rank).
    pub fn r0(&self) -> u64 {
        self.r0
    }

    /// The fit's patches, kernels' then scopes' (each in the fit's order): what
    /// [`Program::new`] grouped.
    fn patch_list(&self) -> Vec<Patch> {
        self.program
            .numbers()
            .map(|(loc, (base, slope))| Patch { loc, base, slope })
            .collect()
    }

    /// The graph [`RankFit::apply`] returned last.
    pub fn graph(&self) -> &StepGraph {
        &self.work
    }

    /// The kernels with a patched number (for the docs and tests).
    pub fn changed(&self) -> &[Changed] {
        &self.changed
    }

    /// Numbers rescaled per point (for the docs and tests).
    pub fn patches(&self) -> usize {
        self.program.kernel_ops.len() + self.program.scope_ops.len()
    }

    /// The graph at rank `r`, rewritten in place, or `None` when a number leaves the exact range
    /// or a guard compares differently at `r` (build it in full then). Its trainable tensors and
    /// optimizer phase are those of r₀: rebuild them (`graph::rebuild_optimizer`).
    pub fn apply(&mut self, r: u64) -> Option<&mut StepGraph> {
        self.apply_patches(r, false)
    }

    /// [`RankFit::apply`] for a sweep's rows: only the numbers they read are rewritten
    /// (`row_patches`). The other changed kernels keep r₀'s FLOPs, bytes and shapes, so the
    /// graph's FLOP and byte totals are not the rank's: use [`RankFit::apply`] for those.
    pub fn apply_for_rows(&mut self, r: u64) -> Option<&mut StepGraph> {
        self.apply_patches(r, true)
    }

    fn apply_patches(&mut self, r: u64, rows_only: bool) -> Option<&mut StepGraph> {
        if rows_only
            && !self
                .rows_valid
                .is_some_and(|(lo, hi)| (lo..=hi).contains(&r))
        {
            return None;
        }
        let dr = r as f64 - self.r0 as f64;
        let g = &mut self.work;
        let value = |base: f64, slope: f64| -> Option<f64> {
            let v = base + slope * dr;
            (v.abs() <= LIMIT).then_some(v)
        };
        let prog = if rows_only {
            &self.row_program
        } else {
            &self.program
        };
        if rows_only {
            // Within `rows_valid` every row number is within LIMIT (`rows_range`); the
            // representatives' numbers go into their copies.
            self.row_writes.write(&mut self.reps, dr)?;
            prog.write_scopes(g, |(base, slope)| Some(base + slope * dr))?;
        } else {
            prog.write(g, |(base, slope)| value(base, slope))?;
        }
        // A row's point lies in `rows_valid`, where every guard holds: its operands are not
        // even written (`row_patches`).
        let guards = if rows_only { &[][..] } else { &self.guards[..] };
        for c in guards {
            let (a, b, kind) = scope_mut(g, c.scope as usize).guards[c.idx as usize];
            if !side(kind, a, b).is_some_and(|now| same_way(kind, c.ord, now)) {
                return None;
            }
        }
        for c in &self.chains {
            let s = scope_mut(g, c.scope as usize);
            if rows_only {
                // The maximum only, from the sizes' bases and slopes (the value `apply` writes):
                // the links are read by nothing but a comparison with a fresh build.
                let mut max = c.fixed_max;
                for &j in &c.sizes {
                    let (base, slope) = self.program.scope_ops[j as usize].0;
                    max = max_of_number(max, base + slope * dr);
                }
                s.transient_bytes = max;
            } else {
                // Every link as the tracer makes it (`chain_holds`).
                let mut run = 0.0f64;
                for (a, b, kind) in &mut s.guards {
                    if *kind == GuardKind::Transient {
                        *a = run;
                        run = run.max(*b);
                    }
                }
                s.transient_bytes = run;
            }
        }
        if !rows_only {
            self.refresh_reps();
        }
        Some(&mut self.work)
    }
}

#[path = "rescale_cost.rs"]
mod costing;
use costing::*;
pub use costing::{cost_kept, TemplateCosts};

#[path = "rescale_seq.rs"]
mod seq;
pub use seq::{SeqFit, SEQ_LINES};

#[cfg(test)]
#[path = "rescale_tests.rs"]
mod tests;
