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
//! the graph and re-checks every guard; the optimizer phase, whose launch counts are step
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

use crate::cost::{kernel_cost_memo, GemmMemo, KernelCost};
use crate::graph::{GuardKind, Kernel, Phase, ScopeGraph, Segment, StepGraph};
use crate::simulate::{host_cost, CostedGraph, CostedSegment};
use crate::workload::{Runtime, Workload};
use costsim_hardware::Profile;
use std::cmp::Ordering;

/// Largest magnitude a rescaled number may take: 2⁵⁰, so that the recipes' own products (which
/// may pass through a few times the final value, e.g. q, k, v as a third of c_attn's output)
/// stay exact integers below 2⁵³.
const LIMIT: f64 = (1u64 << 50) as f64;

/// A number of a kernel.
#[derive(Debug, Clone, Copy)]
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
#[derive(Debug, Clone, Copy)]
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
#[derive(Debug, Clone, Copy)]
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

/// A guard whose operands change with the rank, and the side it was on at the probes
/// ([`probes_side`]).
#[derive(Debug, Clone, Copy)]
struct Guard {
    scope: u32,
    idx: u32,
    ord: Ordering,
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
    /// ([`same_cost_inputs`]) equal this one's at every rank of the fit: itself, or an earlier
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
    patches: Vec<Patch>,
    /// The patches a sweep's rows need ([`RankFit::apply_for_rows`]): the scopes' numbers and
    /// the representatives' kernel numbers.
    row_patches: Vec<Patch>,
    guards: Vec<Guard>,
    /// The scopes whose transient chain has a link that changes with the rank.
    chains: Vec<Chain>,
    /// Kernels with a patched number, each once, in (scope, segment, index) order.
    changed: Vec<Changed>,
    /// The graph at r₀, rewritten in place by [`RankFit::apply`].
    work: StepGraph,
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
}

/// The fit's parts (see [`RankFit::new`]).
type Fitted = (Vec<Patch>, Vec<Guard>, Vec<Chain>, Vec<Changed>);

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

/// Costs of a fitted graph's kernels on one device, kept across the points of its template:
/// only the kernels whose numbers change with the rank are costed again
/// ([`RankFit::costed`]).
pub struct TemplateCosts {
    /// Per (scope, segment), scope-major: (host issue s, device cost) of each kernel.
    costs: Vec<Vec<(f64, KernelCost)>>,
    /// Scratch for the optimizer phase's per-kernel costs, when it is costed here.
    optimizer: Vec<(f64, KernelCost)>,
    costed: CostedGraph,
}

/// Per-kernel costs of a segment, as `simulate::cost_segment` evaluates them.
fn kernel_costs(
    seg: &Segment,
    phase: Phase,
    w: &Workload,
    hw: &Profile,
    memo: &mut GemmMemo,
    out: &mut Vec<(f64, KernelCost)>,
) {
    let replay = w.runtime == Runtime::CudaGraph;
    out.clear();
    out.extend(seg.kernels.iter().map(|k| {
        (
            host_cost(k, phase, w.runtime, hw),
            kernel_cost_memo(k, hw, replay, memo),
        )
    }));
}

fn seg_phase(seg: u8) -> Phase {
    if seg == 0 {
        Phase::Forward
    } else {
        Phase::Backward
    }
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

/// The side guard `i` of a scope is on at all three probes, a max's or min's ties taken as
/// the other probes' side (all three tied: `Equal`); `None` when the probes disagree, the
/// guard's kind differs between them, or an operand is NaN. A probe on a tie of a max or min
/// therefore fits with its neighbours on either side: a rank line's points need not step
/// around the rank where such a guard's operands meet (PaCA's gather at exactly K/16 columns).
fn probes_side(s: &[&ScopeGraph; 3], i: usize) -> Option<Ordering> {
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

/// The costed segments of `g` on `hw` with `w`'s runtime, keeping every kernel's cost in `slot`:
/// when `slot` is empty every kernel is costed (and kept); otherwise only the kernels listed in
/// `changed` are costed again, the others' costs being those kept from an earlier graph of the
/// same structure. A changed kernel whose representative (`Changed::rep`) is another copies
/// that one's fresh cost (when `slot` is empty too: after [`RankFit::apply_for_rows`] only the
/// representative holds the rank's numbers); its host issue cost is the kept one (`host_cost`
/// reads no number the fit rescales, and `same_kind` held). The optimizer phase's costs are
/// taken from `optimizer` when it holds them (costed earlier for the same phase, device and
/// runtime), else costed and left there. The times equal `simulate::cost_graph_memo`'s without
/// `keep_kernels` (the same sums in the same order), since every kernel's cost is a function of
/// the kernel alone; a re-costed segment keeps its totals (FLOPs, bytes, launches) from the first
/// costing ([`CostedSegment::refill_times`]): the rank changes no launch count, and a sweep's
/// rows read no FLOPs or bytes.
pub fn cost_kept<'a>(
    g: &StepGraph,
    changed: &[Changed],
    slot: &'a mut Option<TemplateCosts>,
    w: &Workload,
    hw: &Profile,
    memo: &mut GemmMemo,
    optimizer: &mut Option<CostedSegment>,
) -> &'a CostedGraph {
    let n = g.layer_graphs.len();
    let tc = match slot {
        Some(tc) => {
            let replay = w.runtime == Runtime::CudaGraph;
            for (j, c) in changed.iter().enumerate() {
                let (scope, seg, idx) = (c.scope, c.seg, c.idx);
                let at = scope as usize * 3 + seg as usize;
                let cost = match changed.get(c.rep as usize) {
                    Some(r) if (c.rep as usize) < j => {
                        tc.costs[r.scope as usize * 3 + r.seg as usize][r.idx as usize].1
                    }
                    // A representative: costed from its own numbers (the segment is looked up
                    // only here).
                    _ => {
                        let s = segments(scope_ref(g, scope as usize))[seg as usize];
                        kernel_cost_memo(&s.kernels[idx as usize], hw, replay, memo)
                    }
                };
                tc.costs[at][idx as usize].1 = cost;
                let last = Some((scope, seg));
                // Refilled once, after its last changed kernel; segments without one keep
                // their sums (their kernels are those of the first graph).
                if changed.get(j + 1).map(|c| (c.scope, c.seg)) != last {
                    let out = &mut tc.costed;
                    let cs = match scope as usize {
                        0 => &mut out.embedding,
                        i if i <= n => &mut out.layers[i - 1],
                        _ => &mut out.head,
                    };
                    // The rank changes no launch count: the totals stay the first costing's.
                    cs[seg as usize].refill_times(&tc.costs[at], hw.synchronous);
                }
            }
            tc
        }
        None => {
            let mut costs = Vec::new();
            for sc in scopes(g) {
                for (seg, s) in segments(sc).into_iter().enumerate() {
                    let mut c = Vec::new();
                    kernel_costs(s, seg_phase(seg as u8), w, hw, memo, &mut c);
                    costs.push(c);
                }
            }
            // A changed kernel takes its representative's cost (a representative its own), as
            // on every later point: after `RankFit::apply_for_rows` only the representative holds
            // the rank's numbers.
            for c in changed {
                if let Some(r) = changed.get(c.rep as usize) {
                    let cost = costs[r.scope as usize * 3 + r.seg as usize][r.idx as usize].1;
                    costs[c.scope as usize * 3 + c.seg as usize][c.idx as usize].1 = cost;
                }
            }
            let three = || {
                [
                    CostedSegment::empty(),
                    CostedSegment::empty(),
                    CostedSegment::empty(),
                ]
            };
            let tc = slot.insert(TemplateCosts {
                costs,
                optimizer: Vec::new(),
                costed: CostedGraph {
                    embedding: three(),
                    layers: g.layer_graphs.iter().map(|_| three()).collect(),
                    head: three(),
                    optimizer: CostedSegment::empty(),
                },
            });
            for (i, sc) in scopes(g).enumerate() {
                let out = match i {
                    0 => &mut tc.costed.embedding,
                    i if i <= n => &mut tc.costed.layers[i - 1],
                    _ => &mut tc.costed.head,
                };
                for (seg, s) in segments(sc).into_iter().enumerate() {
                    out[seg].refill(s, &tc.costs[i * 3 + seg], hw.synchronous);
                }
            }
            tc
        }
    };
    match optimizer {
        Some(c) => tc.costed.optimizer.clone_from(c),
        None => {
            kernel_costs(
                &g.optimizer,
                Phase::Optimizer,
                w,
                hw,
                memo,
                &mut tc.optimizer,
            );
            tc.costed
                .optimizer
                .refill(&g.optimizer, &tc.optimizer, hw.synchronous);
            *optimizer = Some(tc.costed.optimizer.clone());
        }
    }
    &tc.costed
}

/// Of `patches`, those a sweep's rows read: every scope number (memory, trainable parameters,
/// guards) and the kernel numbers of each changed kernel that is its own representative
/// ([`Changed::rep`]). Another changed kernel's cost is copied from its representative's
/// ([`cost_kept`]), so its FLOPs, bytes and GEMM shape are read only by the prediction's FLOP and
/// byte totals, which no row carries; its representative's equal numbers meet the same range
/// checks in [`RankFit::apply`].
fn row_patches(patches: &[Patch], changed: &[Changed]) -> Vec<Patch> {
    // Kernel patches and `changed` are both in (scope, segment, index) order.
    let mut at = 0;
    patches
        .iter()
        .filter(|p| match p.loc {
            Loc::Scope { .. } => true,
            Loc::Kernel {
                scope, seg, idx, ..
            } => {
                while changed
                    .get(at)
                    .is_some_and(|c| (c.scope, c.seg, c.idx) != (scope, seg, idx))
                {
                    at += 1;
                }
                changed.get(at).is_some_and(|c| c.rep as usize == at)
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
        let (patches, guards, chains, changed) = Self::fit([(r0, &g0), (r1, &g1), (r2, &g2)])?;
        Some(RankFit {
            r0,
            row_patches: row_patches(&patches, &changed),
            patches,
            guards,
            chains,
            changed,
            work: g0,
        })
    }

    /// [`RankFit::new`] from the three graphs in `probes`, which are left in place when the fit
    /// is refused (a sweep then drops the oldest and tries again with the next point's graph) and
    /// emptied when it succeeds (the first becomes the working copy, moved).
    pub fn from_probes(probes: &mut Vec<(u64, StepGraph)>) -> Option<RankFit> {
        let [(r0, g0), (r1, g1), (r2, g2)] = probes.as_slice() else {
            return None;
        };
        let (patches, guards, chains, changed) = Self::fit([(*r0, g0), (*r1, g1), (*r2, g2)])?;
        probes.truncate(1);
        let (r0, work) = probes.pop()?;
        Some(RankFit {
            r0,
            row_patches: row_patches(&patches, &changed),
            patches,
            guards,
            chains,
            changed,
            work,
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
    /// without `keep_kernels`; its totals are the first costing's ([`cost_kept`]).
    pub fn costed<'a>(
        &self,
        slot: &'a mut Option<TemplateCosts>,
        w: &Workload,
        hw: &Profile,
        memo: &mut GemmMemo,
        optimizer: &mut Option<CostedSegment>,
    ) -> &'a CostedGraph {
        cost_kept(&self.work, &self.changed, slot, w, hw, memo, optimizer)
    }

    /// Swap the working graph's trainable tensors and optimizer phase with `tensors` and `seg`
    /// (a sweep lends it a phase built for the point's rank, then takes it back).
    pub fn swap_optimizer(&mut self, tensors: &mut Vec<u64>, seg: &mut Segment) {
        std::mem::swap(&mut self.work.trainable_tensors, tensors);
        std::mem::swap(&mut self.work.optimizer, seg);
    }

    /// The graph [`RankFit::apply`] returned last.
    pub fn graph(&self) -> &StepGraph {
        &self.work
    }

    /// Numbers rescaled per point (for the docs and tests).
    pub fn patches(&self) -> usize {
        self.patches.len()
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
        let dr = r as f64 - self.r0 as f64;
        let g = &mut self.work;
        let value = |p: &Patch| -> Option<f64> {
            let v = p.base + p.slope * dr;
            (v.abs() <= LIMIT).then_some(v)
        };
        let dim = |v: f64| -> Option<u64> { (v >= 0.0).then_some(v as u64) };
        let ps = if rows_only {
            &self.row_patches
        } else {
            &self.patches
        };
        let mut i = 0;
        while i < ps.len() {
            match ps[i].loc {
                Loc::Kernel {
                    scope, seg, idx, ..
                } => {
                    // A kernel's patches are consecutive: it is looked up once for all of them.
                    let k =
                        &mut segment_mut(scope_mut(g, scope as usize), seg).kernels[idx as usize];
                    while let Some(p) = ps.get(i) {
                        let field = match p.loc {
                            Loc::Kernel {
                                scope: s,
                                seg: t,
                                idx: x,
                                field,
                            } if (s, t, x) == (scope, seg, idx) => field,
                            _ => break,
                        };
                        let v = value(p)?;
                        match field {
                            KField::Flops => k.flops = v,
                            KField::Read => k.bytes_read = v,
                            KField::Written => k.bytes_written = v,
                            KField::M => k.gemm.as_mut()?.m = dim(v)?,
                            KField::N => k.gemm.as_mut()?.n = dim(v)?,
                            KField::K => k.gemm.as_mut()?.k = dim(v)?,
                            KField::Batch => k.gemm.as_mut()?.batch = dim(v)?,
                        }
                        i += 1;
                    }
                }
                Loc::Scope { scope, field } => {
                    let v = value(&ps[i])?;
                    let s = scope_mut(g, scope as usize);
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
                    i += 1;
                }
            }
        }
        for c in &self.guards {
            let (a, b, kind) = scope_mut(g, c.scope as usize).guards[c.idx as usize];
            if !side(kind, a, b).is_some_and(|now| same_way(kind, c.ord, now)) {
                return None;
            }
        }
        for c in &self.chains {
            let s = scope_mut(g, c.scope as usize);
            if rows_only {
                // The maximum only: the links' running maxima are read by nothing but a
                // comparison with a fresh build (`RankFit::apply`).
                let mut max = c.fixed_max;
                for &i in &c.varying {
                    max = max.max(s.guards[i as usize].1);
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
        Some(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{preset, PRESETS};
    use crate::graph::{build, rebuild_optimizer};
    use crate::method::{MethodName, MethodOptions, MethodSpec};
    use crate::workload::{AttentionImpl, Precision, Workload};

    fn spec(model: &crate::arch::ModelConfig, method: MethodName, r: u64) -> MethodSpec {
        let opts = MethodOptions {
            rank: Some(r),
            ..MethodOptions::default()
        };
        MethodSpec::resolve(method, &opts, model, true).unwrap()
    }

    /// Rescaled graphs equal fresh builds, every field, over every preset, every method with a
    /// rank, several precisions and workloads, at ranks below, between and above the probes.
    #[test]
    fn rescaled_graphs_equal_fresh_builds() {
        let workloads = [
            Workload::default(),
            Workload {
                precision: Precision::Fp32,
                batch: 2,
                seq: 96,
                grad_accum: 2,
                ..Workload::default()
            },
            Workload {
                precision: Precision::Fp16Mixed,
                attention: AttentionImpl::Eager,
                grad_checkpointing: true,
                batch: 1,
                seq: 48,
                ..Workload::default()
            },
        ];
        let (mut fitted, mut applied, mut refused) = (0, 0, 0);
        for p in PRESETS {
            let model = preset(p.name).unwrap();
            for method in MethodName::ALL {
                if method == MethodName::Full {
                    continue;
                }
                for w in &workloads {
                    let probes = [5u64, 9, 7];
                    let gs = probes.map(|r| {
                        let sp = spec(&model, method, r);
                        (sp.rank, build(&model, &sp, w))
                    });
                    let Some(mut fit) = RankFit::new(gs) else {
                        continue;
                    };
                    fitted += 1;
                    for r in [1u64, 2, 6, 8, 16, 33, 64, 100, 190] {
                        let opts = MethodOptions {
                            rank: Some(r),
                            ..MethodOptions::default()
                        };
                        // Past a layer's width the rank is refused before any graph.
                        let Ok(sp) = MethodSpec::resolve(method, &opts, &model, true) else {
                            continue;
                        };
                        let want = build(&model, &sp, w);
                        match fit.apply(sp.rank) {
                            Some(g) => {
                                applied += 1;
                                rebuild_optimizer(&model, &sp, w, g);
                                assert!(
                                    *g == want,
                                    "{} {method} r {r} {w:?}: rescaled graph differs",
                                    p.name
                                );
                            }
                            // Refused (a guard flips, e.g. PaCA's gather at K/16 columns):
                            // the caller builds in full.
                            None => {
                                assert_ne!(method, MethodName::Lora, "{} r {r}", p.name);
                                refused += 1;
                            }
                        }
                    }
                }
            }
        }
        // Every combination fits (none needs the full path for its probes). Every LoRA point
        // rescales; PaCA's are refused past a guard: its gather reads min(K, 16·r) columns'
        // sectors (8·r in fp32), and the largest transient becomes P's n·r copy at large r.
        assert_eq!(fitted, PRESETS.len() * 4 * workloads.len());
        assert!(
            applied > 2 * refused,
            "{applied} rescaled, {refused} refused"
        );
    }

    #[test]
    fn a_guard_that_flips_refuses_the_point() {
        // gpt2 PaCA in bf16: the gather reads min(K, 16·r) columns' sectors; K = 768, so
        // r ≥ 48 leaves the probes' side of the guard.
        let model = preset("gpt2").unwrap();
        let w = Workload::default();
        let gs = [4u64, 8, 12].map(|r| {
            let sp = spec(&model, MethodName::Paca, r);
            (sp.rank, build(&model, &sp, &w))
        });
        // Probes on both sides of it do not fit, whichever probe crosses (PaCA ranks given
        // directly, not as LoRA's reference rank).
        let probe = |r: u64| {
            let opts = MethodOptions {
                rank: Some(r),
                ..MethodOptions::default()
            };
            let sp = MethodSpec::resolve(MethodName::Paca, &opts, &model, false).unwrap();
            assert_eq!(sp.rank, r);
            (r, build(&model, &sp, &w))
        };
        assert!(RankFit::new([40, 44, 49].map(probe)).is_none());
        assert!(RankFit::new([40, 49, 44].map(probe)).is_none());
        assert!(RankFit::new([40, 44, 46].map(probe)).is_some());
        // At r = 48 the min's operands tie: 768 either way, so the tie fits with probes on
        // either side of it, and a fit from either side rescales to it exactly.
        let sp = |r: u64| {
            let opts = MethodOptions {
                rank: Some(r),
                ..MethodOptions::default()
            };
            MethodSpec::resolve(MethodName::Paca, &opts, &model, false).unwrap()
        };
        let fresh = |r: u64| build(&model, &sp(r), &w);
        for probes in [[40, 44, 48], [48, 52, 56], [44, 48, 52]] {
            let fit = RankFit::new(probes.map(probe));
            assert_eq!(fit.is_some(), probes != [44, 48, 52], "{probes:?}");
        }
        for (probes, far) in [([40, 44, 46], 49), ([52, 56, 60], 47)] {
            let mut fit = RankFit::new(probes.map(probe)).unwrap();
            let g = fit.apply(48).expect("the tie rescales");
            rebuild_optimizer(&model, &sp(48), &w, g);
            assert!(*g == fresh(48), "{probes:?} at 48");
            assert!(fit.apply(far).is_none(), "{probes:?} at {far}");
        }
        let mut fit = RankFit::new(gs).unwrap();
        assert!(fit.patches() > 0);
        assert!(fit.apply(40).is_some());
        assert!(fit.apply(47).is_some());
        assert!(fit.apply(48).is_some());
        assert!(fit.apply(49).is_none());
        assert!(fit.apply(200).is_none());
        // Back on the probes' side it applies again.
        assert!(fit.apply(10).is_some());
    }

    #[test]
    fn a_transient_chain_is_recomputed_where_its_largest_size_changes() {
        // gpt2 PaCA at 1 × 16 in fp32: from r = 17 on another tensor is the largest transient
        // (LoRA's transients do not change with the rank), so `transient_bytes` stops being
        // affine. The chain is recomputed there: rows-only and full rescaling match fresh
        // builds on both sides.
        let model = preset("gpt2").unwrap();
        let w = Workload {
            precision: Precision::Fp32,
            batch: 1,
            seq: 16,
            ..Workload::default()
        };
        let (mut crossed, mut chained) = (0, 0);
        for method in [MethodName::Lora, MethodName::Paca] {
            let sp = |r: u64| {
                let opts = MethodOptions {
                    rank: Some(r),
                    ..MethodOptions::default()
                };
                MethodSpec::resolve(method, &opts, &model, false).unwrap()
            };
            let fresh = |r: u64| build(&model, &sp(r), &w);
            let mut fit = RankFit::new([2u64, 3, 4].map(|r| (r, fresh(r)))).unwrap();
            chained += fit.chains.len();
            let line = |g: &StepGraph| scopes(g).map(|s| s.transient_bytes).collect::<Vec<_>>();
            let (t2, t3) = (line(&fresh(2)), line(&fresh(3)));
            for r in [8u64, 16, 17, 24, 40, 47, 60, 90] {
                let want = fresh(r);
                let Some(g) = fit.apply(r) else {
                    continue;
                };
                rebuild_optimizer(&model, &sp(r), &w, g);
                assert!(*g == want, "{method} at {r}");
                let lean = fit.apply_for_rows(r).expect("as apply");
                assert_eq!(line(lean), line(&want), "{method} rows at {r}");
                // Off the line through ranks 2 and 3: the largest transient changed.
                let on_line = line(&want)
                    .iter()
                    .zip(t2.iter().zip(&t3))
                    .all(|(t, (a, b))| *t == a + (b - a) * (r as f64 - 2.0));
                crossed += usize::from(!on_line);
            }
        }
        assert!(
            chained > 0 && crossed > 0,
            "{chained} chains, {crossed} crossed"
        );
    }

    #[test]
    fn a_broken_transient_chain_is_refused() {
        let (probes, _) = gpt2_lora_probes();
        assert!(probes.iter().all(|(_, g)| scopes(g).all(chain_holds)));
        let mut broken = probes.clone();
        let s = &mut broken[1].1.layer_graphs[0];
        let i = s
            .guards
            .iter()
            .position(|g| g.2 == GuardKind::Transient)
            .unwrap();
        s.guards[i].0 += 1.0;
        assert!(!chain_holds(s));
        assert!(RankFit::new(broken).is_none());
        let mut broken = probes.clone();
        broken[2].1.layer_graphs[0].transient_bytes += 1.0;
        assert!(RankFit::new(broken).is_none());
        assert!(RankFit::new(probes).is_some());
    }

    #[test]
    fn guard_sides_by_kind() {
        use Ordering::{Equal, Greater, Less};
        // A tie of `a < b` is "not less"; a max's or min's is its own side.
        assert_eq!(side(GuardKind::Less, 2.0, 2.0), Some(Greater));
        assert_eq!(side(GuardKind::Less, 1.0, 2.0), Some(Less));
        assert_eq!(side(GuardKind::Extremum, 2.0, 2.0), Some(Equal));
        assert_eq!(side(GuardKind::Extremum, 3.0, 2.0), Some(Greater));
        assert_eq!(side(GuardKind::Extremum, f64::NAN, 2.0), None);
        // A max's tie goes with either side; a fitted tie admits only a tie.
        assert!(same_way(GuardKind::Extremum, Less, Equal));
        assert!(same_way(GuardKind::Extremum, Greater, Equal));
        assert!(!same_way(GuardKind::Extremum, Less, Greater));
        assert!(!same_way(GuardKind::Extremum, Equal, Less));
        assert!(!same_way(GuardKind::Less, Greater, Less));
        assert!(same_way(GuardKind::Less, Greater, Greater));
        // Three probes: ties set aside; two sides, a NaN or a kind that differs refuse.
        let scope = |a: f64, b: f64, kind| ScopeGraph {
            guards: vec![(a, b, kind)],
            ..ScopeGraph::default()
        };
        let e = GuardKind::Extremum;
        let side3 = |v: [(f64, f64); 3], kinds: [GuardKind; 3]| {
            let s = [0, 1, 2].map(|i| scope(v[i].0, v[i].1, kinds[i]));
            probes_side(&[&s[0], &s[1], &s[2]], 0)
        };
        assert_eq!(
            side3([(2.0, 2.0), (3.0, 2.0), (4.0, 2.0)], [e; 3]),
            Some(Greater)
        );
        assert_eq!(
            side3([(1.0, 2.0), (2.0, 2.0), (0.0, 2.0)], [e; 3]),
            Some(Less)
        );
        assert_eq!(side3([(2.0, 2.0); 3], [e; 3]), Some(Equal));
        assert_eq!(side3([(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)], [e; 3]), None);
        assert_eq!(
            side3([(1.0, 2.0), (f64::NAN, 2.0), (1.0, 2.0)], [e; 3]),
            None
        );
        let l = GuardKind::Less;
        assert_eq!(
            side3([(2.0, 2.0), (3.0, 2.0), (4.0, 2.0)], [l; 3]),
            Some(Greater)
        );
        assert_eq!(side3([(1.0, 2.0), (2.0, 2.0), (0.0, 2.0)], [l; 3]), None);
        assert_eq!(side3([(3.0, 2.0); 3], [e, l, e]), None);
    }

    #[test]
    fn probes_that_differ_in_structure_do_not_fit() {
        let model = preset("gpt2").unwrap();
        let w = Workload::default();
        let a = build(&model, &spec(&model, MethodName::Lora, 4), &w);
        let b = build(&model, &spec(&model, MethodName::Lora, 8), &w);
        let other = Workload {
            precision: Precision::Fp32,
            ..Workload::default()
        };
        let c = build(&model, &spec(&model, MethodName::Lora, 12), &other);
        assert!(RankFit::new([(4, a.clone()), (8, b.clone()), (12, c)]).is_none());
        // A count of nn.Modules that differs (the training loop's host work walks them) is
        // not a number the fit rescales: refused.
        let mut d = b.clone();
        d.nn_modules += 1;
        assert!(RankFit::new([(4, a.clone()), (8, b.clone()), (12, d)]).is_none());
        assert!(RankFit::new([
            (4, a.clone()),
            (8, b.clone()),
            (12, build(&model, &spec(&model, MethodName::Lora, 12), &w))
        ])
        .is_some());
        // The same rank twice cannot fix a slope.
        assert!(RankFit::new([(4, a.clone()), (4, a), (8, b)]).is_none());
    }

    /// Three LoRA probes of gpt2 (ranks 4, 8, 12) and the graph at rank 16.
    fn gpt2_lora_probes() -> ([(u64, StepGraph); 3], StepGraph) {
        let model = preset("gpt2").unwrap();
        let w = Workload::default();
        let g = |r| build(&model, &spec(&model, MethodName::Lora, r), &w);
        ([(4, g(4)), (8, g(8)), (12, g(12))], g(16))
    }

    /// Changed kernels share a cost only with an earlier one equal in every cost input at all
    /// three probes: each representative comes first, is its own, and has the same costs on
    /// every built-in device at the probes' ranks; and LoRA's equal adapters do share.
    #[test]
    fn changed_kernels_share_costs_only_with_equal_ones() {
        let (probes, _) = gpt2_lora_probes();
        let graphs = probes.clone().map(|(_, g)| g);
        let fit = RankFit::new(probes).unwrap();
        let c = &fit.changed;
        let reps = c.iter().enumerate().filter(|(j, c)| c.rep as usize == *j);
        let distinct = reps.count();
        assert!(distinct < c.len(), "{distinct} of {}", c.len());
        let hws = costsim_hardware::builtin_profiles().unwrap();
        for (j, x) in c.iter().enumerate() {
            let r = &c[x.rep as usize];
            assert!(x.rep as usize <= j);
            assert_eq!(c[r.rep as usize], *r, "a representative is its own");
            for g in &graphs {
                let (a, b) = (
                    kernel_at(g, (x.scope, x.seg, x.idx)),
                    kernel_at(g, (r.scope, r.seg, r.idx)),
                );
                assert!(same_cost_inputs(a, b));
                for hw in &hws {
                    let cost = |k| crate::cost::kernel_cost(k, hw, false).device_s;
                    assert_eq!(cost(a), cost(b), "{} on {}", a.name, hw.name);
                }
            }
            // An earlier changed kernel with equal cost inputs at every probe is taken.
            let first = (0..j).find(|&i| {
                let y = &c[i];
                graphs.iter().all(|g| {
                    same_cost_inputs(
                        kernel_at(g, (x.scope, x.seg, x.idx)),
                        kernel_at(g, (y.scope, y.seg, y.idx)),
                    )
                })
            });
            assert_eq!(c[first.unwrap_or(j)].rep, x.rep);
        }
    }

    /// A changed kernel with an earlier representative takes that one's fresh cost instead of
    /// its own; one that is its own representative is costed. (The pair here is deliberately
    /// unequal, so the two ways give different costs.)
    #[test]
    fn a_changed_kernel_copies_its_representatives_cost() {
        let (probes, _) = gpt2_lora_probes();
        let g = probes[0].1.clone();
        let ks = &g.layer_graphs[0].forward.kernels;
        let gemms: Vec<u32> = (0..ks.len() as u32)
            .filter(|&i| ks[i as usize].gemm.is_some())
            .collect();
        let (a, b) = (gemms[0], *gemms.last().unwrap());
        let hw = costsim_hardware::resolve_device("h200").unwrap();
        let w = Workload::default();
        let cost = |i: u32| crate::cost::kernel_cost(&ks[i as usize], &hw, false).device_s;
        assert_ne!(cost(a), cost(b));
        for (rep_b, want) in [(0, cost(a)), (1, cost(b))] {
            let mut memo = GemmMemo::default();
            let mut slot = None;
            cost_kept(&g, &[], &mut slot, &w, &hw, &mut memo, &mut None);
            let changed = [
                Changed::own(1, 0, a, 0),
                Changed {
                    scope: 1,
                    seg: 0,
                    idx: b,
                    rep: rep_b,
                },
            ];
            cost_kept(&g, &changed, &mut slot, &w, &hw, &mut memo, &mut None);
            let tc = slot.as_ref().unwrap();
            assert_eq!(tc.costs[3][b as usize].1.device_s, want, "rep {rep_b}");
            assert_eq!(tc.costs[3][a as usize].1.device_s, cost(a));
        }
    }

    /// `same_cost_inputs` compares every field `kernel_cost_memo` reads, and no other.
    #[test]
    fn cost_inputs_are_the_fields_the_cost_reads() {
        let (probes, _) = gpt2_lora_probes();
        let base = probes[0].1.layer_graphs[0]
            .backward
            .kernels
            .iter()
            .find(|k| k.piece == "lora_B" && k.gemm.is_some())
            .unwrap()
            .clone();
        type Edit = fn(&mut Kernel);
        let cost_fields: [(&str, Edit); 10] = [
            ("name", |k| k.name = "other"),
            ("piece", |k| k.piece = "other"),
            ("kind", |k| k.kind = crate::graph::KernelKind::Reduction),
            ("dtype", |k| k.dtype = crate::workload::DType::I64),
            ("math", |k| k.math = costsim_hardware::MathMode::Tf32),
            ("launches", |k| k.launches += 1),
            ("flops", |k| k.flops += 1.0),
            ("bytes_read", |k| k.bytes_read += 1.0),
            ("bytes_written", |k| k.bytes_written += 1.0),
            ("gemm", |k| k.gemm.as_mut().unwrap().k += 1),
        ];
        for (what, edit) in cost_fields {
            let mut k = base.clone();
            edit(&mut k);
            assert!(!same_cost_inputs(&base, &k), "{what}");
        }
        let other_fields: [Edit; 6] = [
            |k| k.module = "other",
            |k| k.deps.push(0),
            |k| k.module_calls += 1,
            |k| k.peft_calls += 1,
            |k| k.host_tensors += 1,
            |k| k.recompute ^= true,
        ];
        let hws = costsim_hardware::builtin_profiles().unwrap();
        for edit in other_fields {
            let mut k = base.clone();
            edit(&mut k);
            assert!(same_cost_inputs(&base, &k));
            for hw in &hws {
                let cost = |k| crate::cost::kernel_cost(k, hw, false);
                assert_eq!(cost(&base).device_s, cost(&k).device_s);
                assert_eq!(cost(&base).bound, cost(&k).bound);
            }
        }
    }

    /// Every field the fit does not rescale is compared: a third probe that differs from the
    /// others in that one field alone is refused. A kernel deep in a layer's backward (one of
    /// LoRA's, whose numbers do change with the rank) carries the change.
    #[test]
    fn a_probe_differing_in_any_one_structural_field_is_refused() {
        let (probes, _) = gpt2_lora_probes();
        assert!(RankFit::new(probes.clone()).is_some());
        fn layer(g: &mut StepGraph) -> &mut ScopeGraph {
            &mut g.layer_graphs[0]
        }
        fn kernel(g: &mut StepGraph) -> &mut Kernel {
            let ks = &mut g.layer_graphs[0].backward.kernels;
            let i = ks
                .iter()
                .position(|k| k.piece == "lora_B")
                .expect("a lora_B kernel");
            &mut ks[i]
        }
        type Edit = Box<dyn Fn(&mut StepGraph)>;
        let edits: Vec<(&str, Edit)> = vec![
            ("name", Box::new(|g| kernel(g).name = "other")),
            ("module", Box::new(|g| kernel(g).module = "other")),
            ("piece", Box::new(|g| kernel(g).piece = "other")),
            (
                "kind",
                Box::new(|g| kernel(g).kind = crate::graph::KernelKind::Reduction),
            ),
            (
                "dtype",
                Box::new(|g| kernel(g).dtype = crate::workload::DType::I64),
            ),
            (
                "math",
                Box::new(|g| kernel(g).math = costsim_hardware::MathMode::Tf32),
            ),
            ("launches", Box::new(|g| kernel(g).launches += 1)),
            ("gemm", Box::new(|g| kernel(g).gemm = None)),
            ("deps", Box::new(|g| kernel(g).deps.push(0))),
            ("module_calls", Box::new(|g| kernel(g).module_calls += 1)),
            ("peft_calls", Box::new(|g| kernel(g).peft_calls += 1)),
            ("host_tensors", Box::new(|g| kernel(g).host_tensors += 1)),
            ("recompute", Box::new(|g| kernel(g).recompute ^= true)),
            ("output_rg", Box::new(|g| layer(g).output_rg ^= true)),
            (
                "guards",
                Box::new(|g| layer(g).guards.push((1.0, 2.0, GuardKind::Less))),
            ),
            (
                "saved_by_module names",
                Box::new(|g| layer(g).saved_by_module[0].0 = "other"),
            ),
            (
                "saved_by_module count",
                Box::new(|g| layer(g).saved_by_module.push(("other", 1.0))),
            ),
            (
                "kernel count",
                Box::new(|g| {
                    let k = kernel(g).clone();
                    layer(g).forward.kernels.push(k)
                }),
            ),
            (
                "family",
                Box::new(|g| g.family = crate::arch::Family::Llama),
            ),
            (
                "layer count",
                Box::new(|g| g.layer_graphs.push(g.layer_graphs[0].clone())),
            ),
            ("layer classes", Box::new(|g| g.layer_class[0] += 1)),
        ];
        for (what, edit) in edits {
            for at in [1, 2] {
                let mut p = probes.clone();
                edit(&mut p[at].1);
                assert!(
                    RankFit::new(p).is_none(),
                    "{what} differs in probe {at}, yet fitted"
                );
            }
        }
    }

    /// `from_probes` fits the sweep's sliding probes: on success it takes them (the first
    /// becomes the working copy), on refusal it leaves them for the next try; and the patched
    /// numbers are exactly those that differ between two probes (here every kernel number and
    /// scope number of gpt2 LoRA that moves with the rank).
    #[test]
    fn from_probes_takes_the_probes_only_when_it_fits() {
        let (probes, at16) = gpt2_lora_probes();
        let mut refused = probes.to_vec();
        refused[2].1.family = crate::arch::Family::Llama;
        assert!(RankFit::from_probes(&mut refused).is_none());
        assert_eq!(refused.len(), 3);
        assert!(RankFit::from_probes(&mut refused[..2].to_vec()).is_none());
        let mut fits = probes.to_vec();
        let mut fit = RankFit::from_probes(&mut fits).expect("fits");
        assert!(fits.is_empty());
        // Count the numbers that differ between the probes at ranks 4 and 8.
        let (a, b) = (&probes[0].1, &probes[1].1);
        let mut moving = 0;
        for (x, y) in scopes(a).zip(scopes(b)) {
            for (sx, sy) in segments(x).into_iter().zip(segments(y)) {
                for (kx, ky) in sx.kernels.iter().zip(&sy.kernels) {
                    let nums = |k: &Kernel| {
                        let g = k.gemm.map_or([0; 4], |g| [g.m, g.n, g.k, g.batch]);
                        [
                            k.flops,
                            k.bytes_read,
                            k.bytes_written,
                            g[0] as f64,
                            g[1] as f64,
                            g[2] as f64,
                            g[3] as f64,
                        ]
                    };
                    moving += nums(kx)
                        .iter()
                        .zip(nums(ky))
                        .filter(|(p, q)| **p != *q)
                        .count();
                }
            }
            let scope_nums = |s: &ScopeGraph| {
                let mut v = vec![
                    s.saved_bytes,
                    s.checkpoint_bytes,
                    s.trainable as f64,
                    s.backward_working_bytes,
                    s.transient_bytes,
                ];
                v.extend(s.saved_by_module.iter().map(|m| m.1));
                v.extend(s.guards.iter().flat_map(|g| [g.0, g.1]));
                v
            };
            moving += scope_nums(x)
                .iter()
                .zip(scope_nums(y))
                .filter(|(p, q)| **p != *q)
                .count();
        }
        assert!(moving > 0);
        assert_eq!(fit.patches(), moving);
        let mut g = fit
            .apply(16)
            .expect("rank 16 is on the probes' side")
            .clone();
        let gpt2 = preset("gpt2").unwrap();
        rebuild_optimizer(
            &gpt2,
            &spec(&gpt2, MethodName::Lora, 16),
            &Workload::default(),
            &mut g,
        );
        assert_eq!(g, at16);
    }

    /// A sweep's rows rewrite the scope numbers and the representatives' kernel numbers only:
    /// at rank 16 those equal a fresh build's, while another changed kernel keeps its rank-4
    /// numbers; costed from that graph, every changed kernel takes its representative's cost,
    /// the same costs as the fully rewritten graph's.
    #[test]
    fn rows_rewrite_only_the_representatives() {
        let (probes, at16) = gpt2_lora_probes();
        let at4 = probes[0].1.clone();
        let mut fit = RankFit::new(probes).unwrap();
        let scope_patches = fit
            .patches
            .iter()
            .filter(|p| matches!(p.loc, Loc::Scope { .. }))
            .count();
        assert!(scope_patches > 0);
        assert!(fit.row_patches.len() < fit.patches.len());
        let changed = fit.changed.clone();
        // Graph replay with a graph floor apart from the launch floor (equal on every built-in
        // profile), so that a kernel costed with the wrong one shows.
        let mut hw = costsim_hardware::resolve_device("h200").unwrap();
        hw.graph_launch_floor_s = 0.5e-6;
        let w = Workload {
            runtime: Runtime::CudaGraph,
            ..Workload::default()
        };
        let cost = |fit: &RankFit, slot: &mut Option<TemplateCosts>, memo: &mut GemmMemo| {
            cost_kept(fit.graph(), &changed, slot, &w, &hw, memo, &mut None);
        };
        let costs_of = |fit: &RankFit| {
            let mut slot = None;
            cost(fit, &mut slot, &mut GemmMemo::default());
            slot.expect("costed").costs
        };
        fit.apply_for_rows(16).expect("rank 16");
        let lean = costs_of(&fit);
        let mut reps = 0;
        for (j, c) in changed.iter().enumerate() {
            let at = (c.scope, c.seg, c.idx);
            let k = kernel_at(fit.graph(), at);
            if c.rep as usize == j {
                reps += 1;
                assert_eq!(k, kernel_at(&at16, at), "representative {at:?}");
            } else {
                assert_eq!(k, kernel_at(&at4, at), "{at:?} keeps rank 4's numbers");
            }
        }
        assert!(reps < changed.len());
        let g = fit.graph();
        for (x, y) in scopes(g).zip(scopes(&at16)) {
            assert_eq!(
                (x.saved_bytes, x.trainable, &x.saved_by_module, &x.guards),
                (y.saved_bytes, y.trainable, &y.saved_by_module, &y.guards)
            );
        }
        fit.apply(16).expect("rank 16");
        assert_eq!(lean, costs_of(&fit));
        // Kept from rank 12 and re-costed at 16 (a later point of the line): the same costs.
        fit.apply_for_rows(12).expect("rank 12");
        let (mut slot, mut memo) = (None, GemmMemo::default());
        cost(&fit, &mut slot, &mut memo);
        fit.apply_for_rows(16).expect("rank 16");
        cost(&fit, &mut slot, &mut memo);
        assert_eq!(lean, slot.expect("costed").costs);
    }

    #[test]
    fn affine_fits_by_hand() {
        let r = [4.0, 8.0, 12.0];
        // Unchanged (the same bits, even a fraction): nothing to rescale.
        assert_eq!(affine(r, [0.5, 0.5, 0.5]), Some(None));
        // 100 + 3·(r − 4).
        assert_eq!(affine(r, [100.0, 112.0, 124.0]), Some(Some((100.0, 3.0))));
        assert_eq!(affine(r, [100.0, 88.0, 76.0]), Some(Some((100.0, -3.0))));
        // Not on one line, a fraction that changes, a half-integer slope, beyond the exact range.
        assert_eq!(affine(r, [100.0, 112.0, 125.0]), None);
        // Two of three equal is not "unchanged".
        assert_eq!(affine(r, [100.0, 100.0, 124.0]), None);
        assert_eq!(affine(r, [100.0, 124.0, 100.0]), None);
        assert_eq!(affine(r, [100.5, 112.5, 124.5]), None);
        assert_eq!(affine(r, [100.0, 102.0, 104.0]), None);
        let big = LIMIT * 2.0;
        assert_eq!(affine(r, [big, big + 4.0, big + 8.0]), None);
        assert_eq!(
            affine(r, [LIMIT - 8.0, LIMIT - 4.0, LIMIT]),
            Some(Some((LIMIT - 8.0, 1.0)))
        );
    }

    /// Three ranks must be distinct, whichever two repeat.
    #[test]
    fn repeated_ranks_are_refused() {
        let (probes, _) = gpt2_lora_probes();
        let [a, b, c] = probes;
        // Each rank with its own graph: a repeated rank brings the same graph again, which
        // would fit any line through the other two.
        let g = |r: u64| if r == 4 { a.1.clone() } else { b.1.clone() };
        for rs in [[4, 4, 8], [4, 8, 4], [4, 8, 8]] {
            let p = rs.map(|r| (r, g(r)));
            assert!(RankFit::new(p).is_none(), "{rs:?}");
        }
        assert!(RankFit::new([a, b, c]).is_some());
    }

    #[test]
    fn names_compare_by_content() {
        let owned = String::from("lora_A");
        assert!(same_str("lora_A", &owned));
        assert!(same_str("lora_A", "lora_A"));
        assert!(!same_str("lora_A", "lora_B"));
        assert!(!same_str("lora_A", "lora_A "));
    }

    /// Scope indices: 0 the embedding, 1..=n the layer classes, n + 1 the head, and
    /// `cost_kept` recosting kernels named in any of them (even unchanged) gives the same costs
    /// as costing the graph afresh.
    #[test]
    fn scopes_by_index_and_recosting_named_kernels() {
        let (probes, _) = gpt2_lora_probes();
        let mut g = probes[0].1.clone();
        let n = g.layer_graphs.len();
        assert!(std::ptr::eq(scope_ref(&g, 0), &g.embedding));
        assert!(std::ptr::eq(scope_ref(&g, 1), &g.layer_graphs[0]));
        assert!(std::ptr::eq(scope_ref(&g, n), &g.layer_graphs[n - 1]));
        assert!(std::ptr::eq(scope_ref(&g, n + 1), &g.head));
        let head: *const ScopeGraph = &g.head;
        assert!(std::ptr::eq(scope_mut(&mut g, n + 1), head));
        let emb: *const ScopeGraph = &g.embedding;
        assert!(std::ptr::eq(scope_mut(&mut g, 0), emb));
        let hw = costsim_hardware::resolve_device("h200").unwrap();
        let w = Workload::default();
        let mut memo = GemmMemo::default();
        let mut slot = None;
        cost_kept(&g, &[], &mut slot, &w, &hw, &mut memo, &mut None);
        let changed = [
            Changed::own(0, 0, 0, 0),
            Changed::own(1, 1, 0, 1),
            Changed::own((n + 1) as u32, 0, 0, 2),
        ];
        let kept = cost_kept(&g, &changed, &mut slot, &w, &hw, &mut memo, &mut None);
        let fresh = crate::simulate::cost_graph_memo(&g, &w, &hw, &mut memo, false);
        let sums = |c: &CostedGraph| {
            c.layers
                .iter()
                .chain([&c.embedding, &c.head])
                .flat_map(|s| s.iter().map(|s| s.totals))
                .collect::<Vec<_>>()
        };
        assert_eq!(sums(kept), sums(&fresh));
    }
}
