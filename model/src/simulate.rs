//! Host/device pipeline simulation of one optimizer step.
//!
//! Two resources. The host issues kernels one after another, each costing the runtime's per-op
//! host time (pytorch-eager: Python per op, nn.Module calls, peft's per-adapted-module Python in
//! forward; the C++ autograd engine per node in backward; libtorch: the C++ per-op cost in forward
//! and the optimizer, the same autograd engine per node in backward;
//! cuda-graph: one graph launch per phase). The GPU runs kernels in stream order, each starting at
//! max(end of the previous kernel, its issue time). With one stream the critical path is this
//! chain, so the step takes the end time of the last kernel (or of the host, if it is later).
//! Time the GPU spends idle before a kernel is host wait.

use crate::cost::{kernel_cost_memo, Bound, GemmMemo, KernelCost};
use crate::graph::{Kernel, KernelKind, Phase, Scope, Segment, StepGraph};
use crate::training_loop::TrainingLoop;
use crate::workload::{Runtime, Workload};
use costsim_hardware::Profile;

/// A segment's costs, evaluated once and reused for every layer that shares it.
#[derive(Debug, Clone)]
pub struct CostedSegment {
    /// Per kernel: (host issue cost s, device cost); empty unless asked for (kernel rows,
    /// recorded waits, crossover breakdowns).
    pub kernels: Vec<(f64, KernelCost)>,
    /// The same without host-only ops, whose host time is folded into the next kernel's:
    /// (host s before the launch, device s, bound index): what [`run`] steps through on a CPU
    /// (kept for synchronous profiles only; a GPU's segment runs in closed form).
    fast: Vec<(f64, f64, u8)>,
    /// Host time of host-only ops after the last launch.
    tail_host_s: f64,
    /// `fast` in closed form, for GPUs (the host runs ahead of the device): with a sync, the
    /// launches after it.
    closed: Closed,
    /// The op the host waits at for the device ([`Kernel::syncs`]), if the segment has one and
    /// the profile is not synchronous.
    sync: Option<SyncPoint>,
    /// Totals of the segment's kernels: FLOPs, bytes read + written, launches.
    pub totals: (f64, f64, u64),
}

/// A host op that waits for the device (`.item()`), splitting a segment: on a GPU the launches
/// up to it run in closed form from the segment's start, then the host waits until the device
/// has run them, host = max(host, gpu), and the launches after it run in closed form from
/// there ([`run`]). On a synchronous profile (a CPU) the host waits for every op already, so
/// the wait changes nothing and the segment is folded whole.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncPoint {
    /// Index of the op in the segment's kernels (the first that syncs).
    at: usize,
    /// The launches up to the op.
    before: Closed,
    /// Host time after the last of them, up to and including the op, seconds.
    before_tail_s: f64,
}

/// What [`CostedSegment::times_into`] hands on: the times of a folded segment, without its
/// launch list and totals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Times {
    tail_host_s: f64,
    closed: Closed,
    sync: Option<SyncPoint>,
}

/// A segment's launches on a GPU in closed form. The host issues launch i at h₀ + Hᵢ (Hᵢ: host
/// time up to and including its issue) and the GPU runs launches back to back in order, so the
/// recursion gpuᵢ = max(gpuᵢ₋₁, h₀ + Hᵢ) + dᵢ from gpu₀ = g₀ unrolls (max-plus) to
///
///   gpuₙ − g₀ = D + max(0, h₀ − g₀ + L),   L = maxᵢ (Hᵢ − D₍<ᵢ₎),
///
/// with D = Σ dᵢ the device time and D₍<ᵢ₎ the device time before launch i: L is how far the
/// host's issue runs behind the device's own work at its worst point. The GPU's total wait for
/// the host is max(0, h₀ − g₀ + L). So a segment costs O(1) to simulate whatever its length
/// (the same numbers as stepping through it, up to rounding; `simulate_tests.rs`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Closed {
    /// Σ host time of the launches (host-only ops before each folded in), seconds.
    host_s: f64,
    /// D, seconds.
    device_s: f64,
    /// D by the launches' bound (`bound_index`), seconds.
    by_bound: [f64; 4],
    /// L, seconds (−∞ without launches).
    lead_s: f64,
}

/// Per bound index, the bit masks that keep a time in its own sum and zero it in the others.
const ONE_HOT: [[u64; 4]; 4] = {
    let mut m = [[0; 4]; 4];
    let mut i = 0;
    while i < 4 {
        m[i][i] = u64::MAX;
        i += 1;
    }
    m
};

impl Closed {
    /// No launches yet.
    const EMPTY: Self = Self {
        host_s: 0.0,
        device_s: 0.0,
        by_bound: [0.0; 4],
        lead_s: f64::NEG_INFINITY,
    };

    /// Append a launch issued after `host_s` more host time, running `device_s` (`bound` as
    /// [`bound_index`]).
    #[inline]
    fn push(&mut self, host_s: f64, device_s: f64, bound: u8) {
        self.host_s += host_s;
        let behind = self.host_s - self.device_s;
        if behind > self.lead_s {
            self.lead_s = behind;
        }
        self.device_s += device_s;
        // Constant indices keep the four sums in registers (a variable index made each add wait
        // for the previous store: the hot spot of a sweep's re-costing). The other three sums
        // add +0.0, which leaves them as they are: `device_s` masked to zero bits, so that an
        // infinite time stays in its own sum (a multiplication by 0 would make NaN), and the
        // four adds go as two pairs (about half the instructions of a compare and select each).
        let bits = device_s.to_bits();
        let mask = &ONE_HOT[usize::from(bound) & 3];
        for (sum, m) in self.by_bound.iter_mut().zip(mask) {
            *sum += f64::from_bits(bits & m);
        }
    }

    #[cfg(test)]
    fn of(fast: &[(f64, f64, u8)]) -> Self {
        let mut c = Self::EMPTY;
        for &(h, d, b) in fast {
            c.push(h, d, b);
        }
        c
    }
}

/// Host cost of issuing one op in a phase.
pub fn host_cost(k: &Kernel, phase: Phase, runtime: Runtime, hw: &Profile) -> f64 {
    let h = &hw.host;
    let extra_launches = f64::from(k.launches.saturating_sub(1));
    match runtime {
        Runtime::CudaGraph => 0.0,
        Runtime::Libtorch => {
            // Backward nodes are run by the same C++ autograd engine as under Python.
            let per_op = match phase {
                Phase::Backward if !k.recompute => h.autograd_node_s,
                _ => h.cpp_op_s,
            };
            per_op + h.cpp_op_s * extra_launches + f64::from(k.host_tensors) * h.cpp_op_s * 0.1
        }
        Runtime::PytorchEager => {
            // Host-only records (views, Python bookkeeping) cost nothing of their own: the
            // per-op host costs are measured per kernel-launching op with the views and
            // metadata ops around it folded in (`costsim calibrate --host`, docs/traces.md).
            let per_op = match phase {
                _ if k.kind == KernelKind::Host => 0.0,
                Phase::Backward if !k.recompute => h.autograd_node_s,
                _ => h.python_op_s,
            };
            // The optimizer's per-tensor Python work (grouping, clipping, zero_grad) is one
            // measured cost per tensor, charged on the parameter loop.
            let per_tensor = if k.name == "zero_grad(set_to_none)" {
                0.0
            } else {
                h.optimizer_tensor_s
            };
            per_op
                + extra_launches * h.cpp_op_s
                + f64::from(k.module_calls) * h.module_call_s
                + f64::from(k.peft_calls) * h.peft_module_s
                + f64::from(k.host_tensors) * per_tensor
        }
    }
}

/// Evaluate a segment's kernels once.
pub fn cost_segment(
    seg: &Segment,
    phase: Phase,
    w: &Workload,
    hw: &Profile,
    memo: &mut GemmMemo,
    keep_kernels: bool,
) -> CostedSegment {
    let mut cost = |k: &Kernel, phase| fresh_cost(k, phase, w, hw, memo);
    cost_segment_by(seg, phase, hw, keep_kernels, &mut cost, &mut Vec::new())
}

/// [`cost_segment`] with each kernel's (host issue s, device cost) from `cost` (called once per
/// kernel, in order), evaluated into `scratch` first and then folded ([`CostedSegment::refill`]): a loop
/// that calls out keeps the fold's sums on the stack (every xmm register is caller-saved), and
/// a cost handed on through memory straight after it was written was reloaded in halves the
/// stores before could not forward (a stall per kernel: about 15% of a sweep's time where every
/// point is costed in full, `perf`, 2026-11-30).
fn cost_segment_by(
    seg: &Segment,
    phase: Phase,
    hw: &Profile,
    keep_kernels: bool,
    cost: &mut impl FnMut(&Kernel, Phase) -> (f64, KernelCost),
    scratch: &mut Vec<(f64, KernelCost)>,
) -> CostedSegment {
    scratch.clear();
    scratch.extend(seg.kernels.iter().map(|k| cost(k, phase)));
    let mut out = CostedSegment::empty();
    out.refill(seg, scratch, hw.synchronous);
    if keep_kernels {
        out.kernels.clone_from(scratch);
    }
    out
}

/// The sums [`cost_segment`] and [`CostedSegment::refill`] both make over a segment's kernels in
/// order: totals, the launches' closed form, and (CPUs only, where [`run`] steps through them)
/// the launch list with host-only ops' time folded into the next launch.
struct Fold<const KEEP_FAST: bool> {
    fast: Vec<(f64, f64, u8)>,
    pending: f64,
    totals: (f64, f64, u64),
    closed: Closed,
}

impl<const KEEP_FAST: bool> Fold<KEEP_FAST> {
    /// Start from `fast` (emptied storage to reuse); `KEEP_FAST`: the profile is synchronous.
    /// A constant, not a field: without the launch list's push (a possible call) in the loop, a
    /// GPU's sums stay in registers (every xmm register is caller-saved, so a loop that may call
    /// keeps them on the stack; with two threads that loop ran 2x slower, 2026-11-30).
    fn new(fast: Vec<(f64, f64, u8)>) -> Self {
        Self {
            fast,
            pending: 0.0,
            totals: (0.0, 0.0, 0),
            closed: Closed::EMPTY,
        }
    }

    #[inline]
    fn add(&mut self, k: &crate::graph::Kernel, host_s: f64, c: &KernelCost) {
        self.totals.0 += k.flops;
        self.totals.1 += k.bytes_read + k.bytes_written;
        self.totals.2 += u64::from(k.launches);
        self.add_time(host_s, c);
    }

    /// A stretch folded from an empty state appended: its first launch's host time includes
    /// what is pending here, and its launches lie H − D + L′ behind at worst
    /// ([`CostedSegment::refill_pieces`]). The launch list is not kept (GPUs only).
    #[inline]
    fn join(&mut self, stretch: Stretch) {
        let Stretch {
            closed: u,
            tail_host_s,
            launches,
        } = stretch;
        if launches {
            let c = &mut self.closed;
            let host_s = c.host_s + self.pending;
            let behind = host_s - c.device_s + u.lead_s;
            if behind > c.lead_s {
                c.lead_s = behind;
            }
            c.host_s = host_s + u.host_s;
            c.device_s += u.device_s;
            for (sum, d) in c.by_bound.iter_mut().zip(u.by_bound) {
                *sum += d;
            }
            self.pending = tail_host_s;
        } else {
            self.pending += tail_host_s;
        }
    }

    /// The launch list and closed form only, not the totals.
    #[inline]
    fn add_time(&mut self, host_s: f64, c: &KernelCost) {
        self.pending += host_s;
        if launches_work(c) {
            let b = bound_index(c.bound) as u8;
            if KEEP_FAST {
                self.fast.push((self.pending, c.device_s, b));
            }
            self.closed.push(self.pending, c.device_s, b);
            self.pending = 0.0;
        }
    }

    fn finish(self, out: &mut CostedSegment) {
        out.totals = self.totals;
        self.finish_times(out);
    }

    /// At the op the host waits at (index `at`, just folded): the launches so far and the host
    /// time after them as a [`SyncPoint`], and a fold that goes on from there with the totals
    /// kept and the closed form started afresh.
    fn split(self, at: usize) -> (SyncPoint, Self) {
        let sync = SyncPoint {
            at,
            before: self.closed,
            before_tail_s: self.pending,
        };
        let after = Self {
            fast: self.fast,
            pending: 0.0,
            totals: self.totals,
            closed: Closed::EMPTY,
        };
        (sync, after)
    }

    /// [`Fold::finish`] without the totals, which `out` keeps.
    fn finish_times(self, out: &mut CostedSegment) {
        out.fast = self.fast;
        out.tail_host_s = self.pending;
        out.closed = self.closed;
    }
}

/// Fold `(kernel, host issue s, device cost)` in order into `out`, reusing `fast`'s storage;
/// `synchronous`: the profile's (whether the launch list is kept); `sync_at`: the index of the
/// op the host waits at ([`SyncPoint`]), if any.
fn fold_into<'k>(
    mut each: impl Iterator<Item = (&'k Kernel, f64, KernelCost)>,
    fast: Vec<(f64, f64, u8)>,
    synchronous: bool,
    sync_at: Option<usize>,
    out: &mut CostedSegment,
) {
    fn run_fold<'k, const KEEP_FAST: bool>(
        mut fold: Fold<KEEP_FAST>,
        each: impl Iterator<Item = (&'k Kernel, f64, KernelCost)>,
        out: &mut CostedSegment,
    ) {
        for (k, host_s, c) in each {
            fold.add(k, host_s, &c);
        }
        fold.finish(out);
    }
    match sync_at {
        Some(at) if !synchronous => {
            let mut fold = Fold::<false>::new(fast);
            for (k, host_s, c) in each.by_ref().take(at + 1) {
                fold.add(k, host_s, &c);
            }
            let (sync, after) = fold.split(at);
            run_fold(after, each, out);
            out.sync = Some(sync);
        }
        _ => {
            if synchronous {
                run_fold(Fold::<true>::new(fast), each, out);
            } else {
                run_fold(Fold::<false>::new(fast), each, out);
            }
            // A synchronous profile's host waits for every op anyway: nothing to split.
            out.sync = None;
        }
    }
}

impl CostedSegment {
    /// Heap bytes this segment holds (its lists' capacities), for memory bounds' tests.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.kernels.capacity() * std::mem::size_of::<(f64, KernelCost)>()
            + self.fast.capacity() * std::mem::size_of::<(f64, f64, u8)>()
    }

    /// An empty segment, to [`refill`](CostedSegment::refill).
    pub fn empty() -> Self {
        Self {
            kernels: Vec::new(),
            fast: Vec::new(),
            tail_host_s: 0.0,
            closed: Closed::EMPTY,
            sync: None,
            totals: (0.0, 0.0, 0),
        }
    }

    /// What [`cost_segment`] without `keep_kernels` gives for `seg`, from its per-kernel (host
    /// issue s, device cost) already evaluated (a sweep keeps them across points whose kernels
    /// did not change), reusing this segment's storage. The same sums in the same order;
    /// `synchronous`: the profile's, which decides whether the launch list is kept.
    pub fn refill(&mut self, seg: &Segment, costs: &[(f64, KernelCost)], synchronous: bool) {
        self.kernels.clear();
        let mut fast = std::mem::take(&mut self.fast);
        fast.clear();
        if synchronous {
            fast.reserve(seg.kernels.len());
        }
        let each = seg.kernels.iter().zip(costs).map(|(k, &(h, c))| (k, h, c));
        let sync_at = seg.kernels.iter().position(|k| k.syncs);
        fold_into(each, fast, synchronous, sync_at, self);
    }

    /// This segment's launch list, taken out (its storage, to be refilled).
    pub(crate) fn take_fast(&mut self) -> Vec<(f64, f64, u8)> {
        std::mem::take(&mut self.fast)
    }

    /// The times [`CostedSegment::refill_times`] folds: the launch list copied into `fast`, and
    /// the host time after the last launch and the closed form returned, to hand to a segment
    /// whose kernels cost what this one's do ([`Self::set_times`]).
    pub(crate) fn times_into(&self, fast: &mut Vec<(f64, f64, u8)>) -> Times {
        fast.clone_from(&self.fast);
        Times {
            tail_host_s: self.tail_host_s,
            closed: self.closed,
            sync: self.sync,
        }
    }

    /// Take the times of a segment whose kernels cost what this one's do, in the same order:
    /// what [`CostedSegment::refill_times`] would fold from them. The totals stay.
    pub(crate) fn set_times(&mut self, fast: Vec<(f64, f64, u8)>, times: Times) {
        self.kernels.clear();
        self.fast = fast;
        self.tail_host_s = times.tail_host_s;
        self.closed = times.closed;
        self.sync = times.sync;
    }

    /// [`CostedSegment::refill`] of the times only: the launch list and closed form from
    /// `costs`, in the same order; the totals (FLOPs, bytes, launches) stay as they were. For a
    /// sweep's rescaled points, whose rows read only the launch count of the totals, which the
    /// rank does not change (`rescale::cost_kept`).
    pub fn refill_times(&mut self, costs: &[(f64, KernelCost)], synchronous: bool) {
        self.kernels.clear();
        let mut fast = std::mem::take(&mut self.fast);
        fast.clear();
        fn run<const KEEP_FAST: bool>(
            mut fold: Fold<KEEP_FAST>,
            costs: &[(f64, KernelCost)],
            out: &mut CostedSegment,
        ) {
            for (host_s, c) in costs {
                fold.add_time(*host_s, c);
            }
            fold.finish_times(out);
        }
        // The op the host waits at is where the last fold found it (the same segment).
        if let Some(SyncPoint { at, .. }) = self.sync {
            self.refill_times_synced(costs, fast, at);
            return;
        }
        if synchronous {
            fast.reserve(costs.len());
            run(Fold::<true>::new(fast), costs, self);
        } else {
            run(Fold::<false>::new(fast), costs, self);
        }
    }
}

/// A stretch of a segment's kernels for [`CostedSegment::refill_pieces`]. A tag byte of its
/// own (`repr(u8)`): without it the variant was told from the niche of [`Stretch`]'s `bool`,
/// and matching a piece in the refold's loop cost 0.4% more of a sweep's instructions
/// (callgrind, 2026-12-02).
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
pub(crate) enum Piece {
    /// Consecutive kernels whose costs stay the same from point to point, folded once
    /// ([`Piece::run`]).
    Run(Stretch),
    /// A kernel whose cost changes: its host issue time (which does not), and the place in the
    /// costs handed to `refill_pieces` of its device cost (its own, or that of a kernel whose
    /// cost it shares).
    Kernel { host_s: f64, cost_at: u32 },
    /// Consecutive kernels whose costs change, a stretch that recurs (LoRA's four adapter
    /// kernels of each of q, k, v and o): folded once a point into the `block`th of the
    /// stretches handed to `refill_pieces` and joined like a [`Piece::Run`] wherever it recurs.
    Block { block: u32 },
}

/// Consecutive kernels folded from an empty state: their launches in closed form (relative to
/// the stretch's start) and the host time after the last of them (or all their host time,
/// without one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stretch {
    closed: Closed,
    tail_host_s: f64,
    launches: bool,
}

impl Stretch {
    /// The stretch of kernels with (host issue s, device cost) `costs`, as they come.
    #[inline]
    pub(crate) fn of<'c>(costs: impl Iterator<Item = (f64, &'c KernelCost)>) -> Self {
        let mut fold = Fold::<false>::new(Vec::new());
        for (host_s, c) in costs {
            fold.add_time(host_s, c);
        }
        Stretch {
            closed: fold.closed,
            tail_host_s: fold.pending,
            launches: fold.closed.lead_s > f64::NEG_INFINITY,
        }
    }

    /// No kernels.
    pub(crate) const EMPTY: Self = Stretch {
        closed: Closed::EMPTY,
        tail_host_s: 0.0,
        launches: false,
    };
}

impl Piece {
    /// The stretch of kernels with per-kernel (host issue s, device cost) `costs`, folded.
    pub(crate) fn run(costs: &[(f64, KernelCost)]) -> Piece {
        Piece::Run(Stretch::of(costs.iter().map(|(h, c)| (*h, c))))
    }
}

impl CostedSegment {
    /// [`CostedSegment::refill_times`] on a GPU from the segment's kernels in stretches
    /// (`pieces`, in order; a changed kernel's cost read from `costs`): a stretch of kernels
    /// whose costs do not change is folded once ([`Piece::run`]) and joined in O(1), as closed
    /// forms compose (docs/model.md): entered with the host at H (its launches' host time and
    /// the pending host time after them) and the device's sum at D, a stretch (H′, D′, L′)
    /// whose first launch's host time includes what was pending adds its H′ and D′, and its
    /// launches lie H − D + L′ behind at worst. The same sums as folding every kernel, in
    /// another order: equal up to rounding (a proptest). Not for a segment with an op the host
    /// waits at, nor on a synchronous profile, whose launch list is kept.
    ///
    /// A [`Piece::Block`] is the stretch `blocks[block]` (folded at this point from changed
    /// kernels' costs, [`Stretch::of`]), joined as a run is.
    pub(crate) fn refill_pieces(
        &mut self,
        pieces: &[Piece],
        costs: &[(f64, KernelCost)],
        blocks: &[Stretch],
    ) {
        debug_assert!(self.sync.is_none());
        self.kernels.clear();
        let mut fast = std::mem::take(&mut self.fast);
        fast.clear();
        let mut fold = Fold::<false>::new(fast);
        for piece in pieces {
            match *piece {
                Piece::Kernel { host_s, cost_at } => {
                    fold.add_time(host_s, &costs[cost_at as usize].1);
                }
                Piece::Run(u) => fold.join(u),
                Piece::Block { block } => fold.join(blocks[block as usize]),
            }
        }
        fold.finish_times(self);
    }

    /// Whether the segment has an op the host waits at.
    pub(crate) fn has_sync(&self) -> bool {
        self.sync.is_some()
    }
}

impl CostedSegment {
    /// [`CostedSegment::refill_times`] of a segment with an op the host waits at (index `at`),
    /// on a GPU: the launches before it and after it folded apart. Out of line, so that the
    /// common fold's loop stays as small as it was (inlined into it, this made a sweep's
    /// refolds 20% more instructions, callgrind, 2026-12-01).
    #[inline(never)]
    fn refill_times_synced(
        &mut self,
        costs: &[(f64, KernelCost)],
        fast: Vec<(f64, f64, u8)>,
        at: usize,
    ) {
        let mut fold = Fold::<false>::new(fast);
        for (host_s, c) in &costs[..=at] {
            fold.add_time(*host_s, c);
        }
        let (sync, mut after) = fold.split(at);
        for (host_s, c) in &costs[at + 1..] {
            after.add_time(*host_s, c);
        }
        after.finish_times(self);
        self.sync = Some(sync);
    }
}

/// Whether a costed op occupies the GPU (host-only ops do not).
fn launches_work(c: &KernelCost) -> bool {
    !(c.device_s == 0.0 && c.floor_s == 0.0)
}

/// Accumulated timing of one (scope, phase) or a whole phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Span {
    /// Wall time attributed: GPU end after − GPU end before, seconds.
    pub time_s: f64,
    /// Sum of device time.
    pub busy_s: f64,
    /// GPU idle time waiting for the host.
    pub host_wait_s: f64,
    /// Host issue time.
    pub host_s: f64,
    pub launches: u64,
    /// Device time by bound (compute, memory, launch) plus host wait.
    pub by_bound: [f64; 4],
}

impl Span {
    /// `n` copies of this span (launch counts saturate; the step's counts are recomputed from
    /// segment totals anyway).
    fn times(&self, n: u64) -> Span {
        let f = n as f64;
        Span {
            time_s: self.time_s * f,
            busy_s: self.busy_s * f,
            host_wait_s: self.host_wait_s * f,
            host_s: self.host_s * f,
            launches: self.launches.saturating_mul(n),
            by_bound: self.by_bound.map(|v| v * f),
        }
    }

    fn add(&mut self, o: &Span) {
        self.time_s += o.time_s;
        self.busy_s += o.busy_s;
        self.host_wait_s += o.host_wait_s;
        self.host_s += o.host_s;
        self.launches += o.launches;
        for i in 0..4 {
            self.by_bound[i] += o.by_bound[i];
        }
    }
}

fn bound_index(b: Bound) -> usize {
    match b {
        Bound::Compute => 0,
        Bound::Memory => 1,
        Bound::Launch => 2,
        Bound::Host => 3,
    }
}

/// Result of the simulation.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Whole step, seconds.
    pub step_s: f64,
    /// Per phase, summed over micro-batches.
    pub phases: [Span; 3],
    /// Per scope and phase, summed over micro-batches: (scope, phase, span).
    pub scopes: Vec<(Scope, Phase, Span)>,
    /// The training loop's own host work ([`crate::training_loop`]), summed over the step:
    /// `host_s` is the work, `time_s` the GPU time it adds (the GPU idle while it runs).
    pub training_loop: Span,
    /// Whether the GPU waited on the host before each kernel of the last simulated instance of
    /// each segment: keyed like `scopes`, one flag per kernel (empty unless recorded).
    pub host_waited: Vec<(Scope, Phase, Vec<bool>)>,
}

#[derive(Debug)]
struct Clock {
    host: f64,
    gpu: f64,
}

impl Clock {
    /// Host clock relative to the GPU clock: everything a segment's simulation depends on.
    fn offset(&self) -> f64 {
        self.host - self.gpu
    }
}

/// Offsets closer than this (seconds) count as equal for [`Steady`]: a picosecond, far below
/// any reported digit.
const STEADY_EPS_S: f64 = 1e-12;

/// Where a micro-batch started: the host − GPU offset, the forward and backward spans per scope
/// so far, and both clocks.
struct MicroBatchStart {
    offset: f64,
    fwd: Vec<Span>,
    bwd: Vec<Span>,
    lp: Span,
    host: f64,
    gpu: f64,
}

/// Micro-batches always simulated one by one: every gradient-accumulation count up to this is
/// simulated exactly as written. Beyond it, once a micro-batch repeats the previous one (the
/// `Steady` rule applied to whole micro-batches, which then holds for every later one), the
/// rest are that micro-batch times their count, so `--grad-accum 4294967295` costs what 64 do.
pub const EXACT_MICRO_BATCHES: u32 = 64;

/// A pipeline that has not settled after this many micro-batches (a drift slower than
/// `STEADY_EPS_S` per micro-batch would need) takes its last micro-batch as the repeat.
pub const MAX_SIMULATED_MICRO_BATCHES: u32 = 4096;

/// Reuse of per-layer results across a run of identical layers, on a CPU (synchronous
/// profiles), where [`run`] steps through every op; on a GPU a segment costs O(1) in closed form
/// ([`Closed`]) and nothing is replayed.
///
/// Simulating a segment is translation-invariant: its spans and the advances of both clocks
/// depend only on the entry offset d = host − device. A layer of the same class as the last
/// simulated one (entered at offset e) therefore repeats it when d = e (within
/// [`STEADY_EPS_S`]), which on a CPU holds from the second layer on: the host resumes only when
/// each op is done, so every layer is entered at the offset its predecessor's trailing host work
/// leaves. Its span and clock advances are then copied instead of simulated, which makes an
/// 80-layer model cost about as much to simulate as two layers. The check runs before every
/// layer, so a run that leaves the fixed point is simulated again.
#[derive(Default)]
struct Steady {
    /// (class, entry offset, span added, host advance) of the last simulated layer.
    last: Option<(usize, f64, Span, f64)>,
}

impl Steady {
    /// Replay the last simulated layer if layer `class` would repeat it; false means simulate.
    fn replay(&mut self, class: usize, clock: &mut Clock, span: &mut Span) -> bool {
        let Some((c, e, s, dh)) = self.last else {
            return false;
        };
        let repeats = c == class && (clock.offset() - e).abs() <= STEADY_EPS_S;
        if repeats {
            span.add(&s);
            clock.host += dh;
            clock.gpu += s.time_s;
        }
        repeats
    }

    /// Record a simulated layer: its class, entry offset, host clock before it, the clocks after
    /// it and the span it added.
    fn observe(&mut self, class: usize, entry: f64, host0: f64, clock: &Clock, span: Span) {
        self.last = Some((class, entry, span, clock.host - host0));
    }
}

/// The device synchronised at the end of a phase ([`TrainingLoop::Timed`]): the phase lasts
/// until both the host and the GPU are done with it, so host time past the GPU's end is the GPU
/// idle, charged to `span` (the phase's last scope) as the step's end charges the optimizer's;
/// the next phase starts from both clocks at that moment.
fn phase_sync(clock: &mut Clock, span: &mut Span) {
    gpu_waits_for_host(clock, span);
    clock.host = clock.gpu;
}

/// Host time past the GPU's end is the GPU idle, charged to `span`; the GPU clock moves to the
/// host's. (A phase's end under [`TrainingLoop::Timed`], and every step's end: the host may
/// trail with host-only work such as zero_grad.)
fn gpu_waits_for_host(clock: &mut Clock, span: &mut Span) {
    if clock.host > clock.gpu {
        let idle = clock.host - clock.gpu;
        span.time_s += idle;
        span.host_wait_s += idle;
        span.by_bound[3] += idle;
        clock.gpu = clock.host;
    }
}

/// Host time of a CUDA graph's replay call, paid before each phase's launches (0 otherwise).
fn graph_launch_s(w: &Workload, hw: &Profile) -> f64 {
    if w.runtime == Runtime::CudaGraph {
        hw.host.python_op_s
    } else {
        0.0
    }
}

/// After a micro-batch's backward: a Trainer checks its loss for NaN/Inf in Python
/// (transformers 5.17 `Trainer._inner_training_loop`: `torch.isnan(tr_loss_step)` as a
/// condition), which waits for the device: the host issues nothing more until the backward has
/// run. A bare loop has no such check: its host runs on into the next micro-batch (or the
/// optimizer) while the GPU works.
fn loss_check(w: &Workload, clock: &mut Clock) {
    if w.runtime == Runtime::PytorchEager && w.training_loop == TrainingLoop::Trainer {
        clock.host = clock.host.max(clock.gpu);
    }
}

/// Launches of a layer, embedding or head (its segments `s`) in a step of `accum`
/// micro-batches: (forward, backward), the first micro-batch's backward without accumulation.
fn step_launches(s: &[CostedSegment; 3], accum: u64) -> (u64, u64) {
    (
        s[0].totals.2 * accum,
        s[1].totals.2 + s[2].totals.2 * accum.saturating_sub(1),
    )
}

/// What `after` added to `before`.
fn span_delta(after: &Span, before: &Span) -> Span {
    let mut by_bound = [0.0; 4];
    for (i, v) in by_bound.iter_mut().enumerate() {
        *v = after.by_bound[i] - before.by_bound[i];
    }
    Span {
        time_s: after.time_s - before.time_s,
        busy_s: after.busy_s - before.busy_s,
        host_wait_s: after.host_wait_s - before.host_wait_s,
        host_s: after.host_s - before.host_s,
        launches: after.launches - before.launches,
        by_bound,
    }
}

/// Simulate one segment from the clocks' current state: on a GPU in closed form, on a CPU (or
/// when `waited` records which launches waited for the host) launch by launch.
/// (Inlined where it is called: a GPU's segment is a few additions, less than a call.)
#[inline(always)]
fn run(
    sync: bool,
    clock: &mut Clock,
    seg: &CostedSegment,
    span: &mut Span,
    waited: Option<&mut Vec<bool>>,
) {
    if waited.is_none() && !sync {
        // A GPU: the closed form of the loop in `run_stepped` (`Closed`); `Steady` is not used.
        if let Some(p) = &seg.sync {
            // The launches before the op the host waits at, the wait, the launches after it.
            run_closed(clock, &p.before, p.before_tail_s, span);
            clock.host = clock.host.max(clock.gpu);
        }
        run_closed(clock, &seg.closed, seg.tail_host_s, span);
        return;
    }
    run_stepped(sync, clock, seg, span, waited);
}

/// Launches in closed form `c` followed by `tail_host_s` of host time, from the clocks' state.
#[inline(always)]
fn run_closed(clock: &mut Clock, c: &Closed, tail_host_s: f64, span: &mut Span) {
    let wait = (clock.host - clock.gpu + c.lead_s).max(0.0);
    let host_s = c.host_s + tail_host_s;
    clock.host += host_s;
    clock.gpu += wait + c.device_s;
    span.host_s += host_s;
    span.host_wait_s += wait;
    span.by_bound[3] += wait;
    for (b, d) in span.by_bound.iter_mut().zip(c.by_bound) {
        *b += d;
    }
    span.busy_s += c.device_s;
    span.time_s += wait + c.device_s;
}

/// [`run`] launch by launch: on a CPU, or recording which launches waited for the host.
#[inline(never)]
fn run_stepped(
    sync: bool,
    clock: &mut Clock,
    seg: &CostedSegment,
    span: &mut Span,
    waited: Option<&mut Vec<bool>>,
) {
    let start_gpu = clock.gpu;
    if waited.is_none() {
        for &(host_s, device_s, bound) in &seg.fast {
            clock.host += host_s;
            span.host_s += host_s;
            let start = clock.gpu.max(clock.host);
            let wait = start - clock.gpu;
            span.host_wait_s += wait;
            span.by_bound[3] += wait;
            span.by_bound[bound as usize] += device_s;
            span.busy_s += device_s;
            clock.gpu = start + device_s;
            if sync {
                clock.host = clock.gpu;
            }
        }
        clock.host += seg.tail_host_s;
        span.host_s += seg.tail_host_s;
        span.time_s += clock.gpu - start_gpu;
        return;
    }
    let record = waited.is_some();
    let mut flags = Vec::with_capacity(if record { seg.kernels.len() } else { 0 });
    // (None on a synchronous profile, whose host waits for every op anyway.)
    let sync_at = seg.sync.map(|p| p.at);
    for (i, (host_s, c)) in seg.kernels.iter().enumerate() {
        clock.host += host_s;
        span.host_s += host_s;
        if sync_at == Some(i) {
            // The host waits here until the device has run everything issued before.
            clock.host = clock.host.max(clock.gpu);
        }
        if !launches_work(c) {
            if record {
                flags.push(false);
            }
            continue;
        }
        let start = clock.gpu.max(clock.host);
        let wait = start - clock.gpu;
        if record {
            flags.push(wait > 0.0);
        }
        span.host_wait_s += wait;
        span.by_bound[3] += wait;
        span.by_bound[bound_index(c.bound)] += c.device_s;
        span.busy_s += c.device_s;
        clock.gpu = start + c.device_s;
        if sync {
            // A CPU runs the op on the issuing thread: the host continues after it.
            clock.host = clock.gpu;
        }
    }
    span.time_s += clock.gpu - start_gpu;
    if let Some(w) = waited {
        *w = flags;
    }
}

/// Costed segments of a step graph.
pub struct CostedGraph {
    pub embedding: [CostedSegment; 3],
    /// Per layer class: forward, backward, backward with accumulation.
    pub layers: Vec<[CostedSegment; 3]>,
    pub head: [CostedSegment; 3],
    pub optimizer: CostedSegment,
}

/// Evaluate every distinct segment of the graph once.
pub fn cost_graph(g: &StepGraph, w: &Workload, hw: &Profile) -> CostedGraph {
    cost_graph_memo(g, w, hw, &mut GemmMemo::default(), true)
}

/// [`cost_graph`] with a memo of GEMM math times for `hw` (kept across graphs by sweeps).
pub fn cost_graph_memo(
    g: &StepGraph,
    w: &Workload,
    hw: &Profile,
    memo: &mut GemmMemo,
    keep_kernels: bool,
) -> CostedGraph {
    cost_graph_by(g, hw, keep_kernels, |k, phase| {
        fresh_cost(k, phase, w, hw, memo)
    })
}

/// Every segment of a step graph with its phase, in the order [`cost_graph_memo`] costs them:
/// each scope's forward, backward and backward with accumulation (embedding, the layer classes,
/// the head), then the optimizer. [`cost_classes`] numbers kernels in this order.
pub fn graph_segments(g: &StepGraph) -> impl Iterator<Item = (&Segment, Phase)> {
    std::iter::once(&g.embedding)
        .chain(&g.layer_graphs)
        .chain(std::iter::once(&g.head))
        .flat_map(|s| {
            [
                (&s.forward, Phase::Forward),
                (&s.backward, Phase::Backward),
                (&s.backward_accum, Phase::Backward),
            ]
        })
        .chain(std::iter::once((&g.optimizer, Phase::Optimizer)))
}

/// Everything a kernel's (host issue s, device cost) in a phase reads, as words: what
/// [`crate::cost::kernel_cost_memo`] reads (name, piece, kind, dtype, math, launches, FLOPs,
/// bytes, GEMM shape; the fields `rescale::same_cost_inputs` compares) and what [`host_cost`]
/// reads besides (phase, recompute, module and adapter calls, host tensors). A field either
/// function comes to read must be added here. Kernels with equal keys get equal costs on every
/// profile. Names count by address and length (they are string literals): equal text at
/// another address only makes another key, so such a kernel is costed twice, never given
/// another's cost; likewise −0.0 and +0.0, compared as bits.
#[derive(PartialEq, Eq)]
pub(crate) struct ClassKey([u64; 12]);

impl ClassKey {
    fn of(k: &Kernel, phase: Phase) -> Self {
        let small = |v: u64, at: u32| v << at;
        let packed = small(k.kind as u64, 0)
            | small(k.dtype as u64, 8)
            | small(k.math as u64, 16)
            | small(phase as u64, 24)
            | small(u64::from(k.recompute), 32)
            | small(u64::from(k.gemm.is_some()), 33)
            | small(u64::from(k.module_calls), 40)
            | small(u64::from(k.peft_calls), 48);
        let g = k.gemm.unwrap_or(crate::graph::Gemm {
            m: 0,
            n: 0,
            k: 0,
            batch: 0,
        });
        Self([
            k.name.as_ptr() as u64,
            k.piece.as_ptr() as u64,
            (k.name.len() as u64) << 32 | k.piece.len() as u64,
            packed,
            u64::from(k.launches) << 32 | u64::from(k.host_tensors),
            k.flops.to_bits(),
            k.bytes_read.to_bits(),
            k.bytes_written.to_bits(),
            g.m,
            g.n,
            g.k,
            g.batch,
        ])
    }

    /// Whether `a` in phase `pa` and `b` in `pb` have equal keys, without building them: the
    /// same fields compared the same way (names and pieces by address and length, numbers as
    /// bits, no GEMM as its own value), for one kernel compared with another once. A test
    /// checks it against the keys' equality field by field.
    #[inline]
    pub(crate) fn same(a: &Kernel, pa: Phase, b: &Kernel, pb: Phase) -> bool {
        std::ptr::eq(a.name, b.name)
            && std::ptr::eq(a.piece, b.piece)
            && a.kind == b.kind
            && a.dtype == b.dtype
            && a.math == b.math
            && pa == pb
            && a.recompute == b.recompute
            && a.module_calls == b.module_calls
            && a.peft_calls == b.peft_calls
            && a.launches == b.launches
            && a.host_tensors == b.host_tensors
            && a.flops.to_bits() == b.flops.to_bits()
            && a.bytes_read.to_bits() == b.bytes_read.to_bits()
            && a.bytes_written.to_bits() == b.bytes_written.to_bits()
            && a.gemm == b.gemm
    }
}

impl std::hash::Hash for ClassKey {
    /// The words that tell most kernels apart (equality compares all): hashing all twelve cost
    /// more than the costings the classes save.
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        for i in [0, 3, 5, 6, 7] {
            h.write_u64(self.0[i]);
        }
    }
}

/// A step graph's kernels numbered by what their costs read (`ClassKey`), in
/// [`graph_segments`]' order: equal kernels share a number, and a number is new exactly where
/// its first kernel comes, so a walk in the same order evaluates a class where its number is
/// first met and copies it for the rest ([`cost_graph_classed`]). A LoRA graph of llama2-7b has
/// 544 kernels in 118 classes of device cost (the q, k, v and o projections alike, each
/// backward with accumulation like the backward).
pub fn cost_classes(g: &StepGraph) -> Vec<u32> {
    let n: usize = graph_segments(g).map(|(s, _)| s.kernels.len()).sum();
    let mut seen: rustc_hash::FxHashMap<ClassKey, u32> =
        rustc_hash::FxHashMap::with_capacity_and_hasher(n / 2, Default::default());
    let mut out = Vec::with_capacity(n);
    for (s, phase) in graph_segments(g) {
        for k in &s.kernels {
            let next = seen.len() as u32;
            out.push(*seen.entry(ClassKey::of(k, phase)).or_insert(next));
        }
    }
    out
}

/// A kernel's (host issue s, device cost) in `phase`.
#[inline]
pub(crate) fn fresh_cost(
    k: &Kernel,
    phase: Phase,
    w: &Workload,
    hw: &Profile,
    memo: &mut GemmMemo,
) -> (f64, KernelCost) {
    let graph = w.runtime == Runtime::CudaGraph;
    (
        host_cost(k, phase, w.runtime, hw),
        kernel_cost_memo(k, hw, graph, memo),
    )
}

/// [`cost_graph_memo`] without kept kernels, each class of `classes` ([`cost_classes`] of `g`)
/// evaluated once: a class's first kernel is costed, the others copy its (host issue s, device
/// cost), which [`host_cost`] and [`crate::cost::kernel_cost_memo`] would give them anyway (they
/// read only what the class compares). The same numbers in the same order, so the same sums;
/// for a graph costed on several devices, its classes found once.
pub fn cost_graph_classed(
    g: &StepGraph,
    classes: &[u32],
    w: &Workload,
    hw: &Profile,
    memo: &mut GemmMemo,
) -> CostedGraph {
    let mut table: Vec<(f64, KernelCost)> = Vec::with_capacity(classes.len());
    let mut at = 0;
    cost_graph_by(g, hw, false, |k, phase| {
        let c = classes[at] as usize;
        at += 1;
        match table.get(c) {
            Some(&cost) => cost,
            None => {
                debug_assert_eq!(c, table.len(), "classes numbered in order of first use");
                let cost = fresh_cost(k, phase, w, hw, memo);
                table.push(cost);
                cost
            }
        }
    })
}

/// [`cost_graph_memo`] with each kernel's (host issue s, device cost) from `cost`, called once
/// per kernel in [`graph_segments`]' order (`classed_costing_equals_costing_every_kernel`
/// fails if the two orders part).
fn cost_graph_by(
    g: &StepGraph,
    hw: &Profile,
    keep_kernels: bool,
    mut cost: impl FnMut(&Kernel, Phase) -> (f64, KernelCost),
) -> CostedGraph {
    let mut scratch = Vec::new();
    let mut seg =
        |s: &Segment, phase| cost_segment_by(s, phase, hw, keep_kernels, &mut cost, &mut scratch);
    let mut three = |s: &crate::graph::ScopeGraph| {
        [
            seg(&s.forward, Phase::Forward),
            seg(&s.backward, Phase::Backward),
            seg(&s.backward_accum, Phase::Backward),
        ]
    };
    let embedding = three(&g.embedding);
    let layers = g.layer_graphs.iter().map(&mut three).collect();
    let head = three(&g.head);
    let optimizer = seg(&g.optimizer, Phase::Optimizer);
    CostedGraph {
        embedding,
        layers,
        head,
        optimizer,
    }
}

/// Simulate one optimizer step: `grad_accum` × (forward, backward), then the optimizer.
/// `record_waits` keeps, per kernel, whether the GPU waited on the host (for kernel rows).
pub fn simulate(
    g: &StepGraph,
    cg: &CostedGraph,
    w: &Workload,
    hw: &Profile,
    record_waits: bool,
) -> Timeline {
    simulate_with(g, cg, w, hw, record_waits, true)
}

thread_local! {
    /// [`simulate_with`]'s per-scope spans, kept for the thread's next simulation.
    static SPANS: std::cell::Cell<Vec<Span>> = const { std::cell::Cell::new(Vec::new()) };
}

/// [`simulate`], with `Timeline::scopes` left empty unless `keep_scopes` (or `record_waits`):
/// the same step and phase spans, without a span per scope that only per-layer reports read.
///
/// On a GPU without recorded waits, and up to [`EXACT_MICRO_BATCHES`] micro-batches, the step
/// and its phase spans come from [`simulate_phases`] (runs of identical layers composed in
/// closed form), with or without `keep_scopes`, so a prediction's totals do not depend on
/// whether its per-layer rows were asked for; the scopes, when kept, are simulated layer by
/// layer as before and agree with the phases up to rounding.
pub(crate) fn simulate_with(
    g: &StepGraph,
    cg: &CostedGraph,
    w: &Workload,
    hw: &Profile,
    record_waits: bool,
    keep_scopes: bool,
) -> Timeline {
    if !record_waits && !hw.synchronous && w.grad_accum <= EXACT_MICRO_BATCHES {
        let fast = simulate_phases(g, cg, w, hw);
        if !keep_scopes {
            return fast;
        }
        let scoped = simulate_scoped(g, cg, w, hw, false, true);
        return Timeline {
            scopes: scoped.scopes,
            ..fast
        };
    }
    simulate_scoped(g, cg, w, hw, record_waits, keep_scopes)
}

/// `k` copies of a segment's launches in closed form ([`Closed`]), one after another from the
/// clocks' state, charged to the phase span `span`. For one copy this is [`run_closed`]; for
/// k, the copies compose (max-plus) into one closed form with host time k·H, device time k·D
/// and lead L_k = maxⱼ₌₀…ₖ₋₁ (j·(H − D) + L) = L + max(0, (k − 1)·(H − D)), where H counts
/// the host time after the last launch (`tail_host_s`), which delays the next copy's issue.
/// The GPU waits for the host max(0, h₀ − g₀ + L_k) in all, wherever in the copies that
/// falls: a phase span does not say which layer waited.
#[inline(always)]
fn run_closed_k(clock: &mut Clock, c: &Closed, tail_host_s: f64, k: u32, span: &mut Span) {
    if k == 1 {
        run_closed(clock, c, tail_host_s, span);
        return;
    }
    let f = f64::from(k);
    let h = c.host_s + tail_host_s;
    let lead = c.lead_s + ((f - 1.0) * (h - c.device_s)).max(0.0);
    let wait = (clock.host - clock.gpu + lead).max(0.0);
    let host_s = h * f;
    let device_s = c.device_s * f;
    clock.host += host_s;
    clock.gpu += wait + device_s;
    span.host_s += host_s;
    span.host_wait_s += wait;
    span.by_bound[3] += wait;
    for (b, d) in span.by_bound.iter_mut().zip(c.by_bound) {
        *b += d * f;
    }
    span.busy_s += device_s;
    span.time_s += wait + device_s;
}

/// `k` copies of segment `seg` on a GPU, charged to the phase span `span`: [`run_closed_k`],
/// or copy by copy where the segment has an op the host waits at (the wait makes each copy
/// start from host = max(host, gpu), which does not compose into one closed form).
fn run_gpu_k(clock: &mut Clock, seg: &CostedSegment, k: u32, span: &mut Span) {
    match &seg.sync {
        None => run_closed_k(clock, &seg.closed, seg.tail_host_s, k, span),
        Some(p) => {
            for _ in 0..k {
                run_closed(clock, &p.before, p.before_tail_s, span);
                clock.host = clock.host.max(clock.gpu);
                run_closed(clock, &seg.closed, seg.tail_host_s, span);
            }
        }
    }
}

thread_local! {
    /// [`simulate_phases`]' runs of identical layers, kept for the thread's next simulation.
    static RUNS: std::cell::Cell<Vec<(usize, u32)>> = const { std::cell::Cell::new(Vec::new()) };
}

/// [`simulate_with`] on a GPU, without recorded waits or per-scope spans, for at most
/// [`EXACT_MICRO_BATCHES`] micro-batches: the same loop as [`simulate_scoped`], each phase's
/// launches charged to the phase's span directly, and each run of consecutive layers of one
/// class ([`StepGraph::layer_class`]) simulated at once ([`run_gpu_k`]): O(distinct runs) a
/// micro-batch instead of O(layers). The same numbers as [`simulate_scoped`] up to rounding
/// (sums in another order, k·x for x added k times; `simulate_tests.rs`).
fn simulate_phases(g: &StepGraph, cg: &CostedGraph, w: &Workload, hw: &Profile) -> Timeline {
    debug_assert!(!hw.synchronous && w.grad_accum <= EXACT_MICRO_BATCHES);
    let mut runs = RUNS.take();
    runs.clear();
    for &c in &g.layer_class {
        match runs.last_mut() {
            Some((last, k)) if *last == c => *k += 1,
            _ => runs.push((c, 1)),
        }
    }
    let mut phases = [Span::default(); 3];
    let [fwd, bwd, opt] = &mut phases;
    let mut clock = Clock {
        host: 0.0,
        gpu: 0.0,
    };
    let graph_launch = graph_launch_s(w, hw);
    let (loop_mb_s, loop_step_s) =
        crate::training_loop::loop_host_s(w.training_loop, &hw.host, g.nn_modules);
    let mut lp = Span::default();
    let timed = w.training_loop == TrainingLoop::Timed;
    for mb in 0..w.grad_accum {
        if mb > 0 {
            loop_work(&mut clock, &mut lp, loop_mb_s);
        }
        let b = if mb == 0 { 1 } else { 2 };
        clock.host += graph_launch;
        run_gpu_k(&mut clock, &cg.embedding[0], 1, fwd);
        for &(c, k) in &runs {
            run_gpu_k(&mut clock, &cg.layers[c][0], k, fwd);
        }
        run_gpu_k(&mut clock, &cg.head[0], 1, fwd);
        if timed {
            phase_sync(&mut clock, fwd);
        }
        clock.host += graph_launch;
        run_gpu_k(&mut clock, &cg.head[b], 1, bwd);
        for &(c, k) in runs.iter().rev() {
            run_gpu_k(&mut clock, &cg.layers[c][b], k, bwd);
        }
        run_gpu_k(&mut clock, &cg.embedding[b], 1, bwd);
        if timed {
            phase_sync(&mut clock, bwd);
        }
        loss_check(w, &mut clock);
    }
    clock.host += graph_launch;
    run_gpu_k(&mut clock, &cg.optimizer, 1, opt);
    gpu_waits_for_host(&mut clock, opt);
    loop_work(&mut clock, &mut lp, loop_mb_s + loop_step_s);
    // Exact launch counts, from each distinct segment's totals.
    let accum = u64::from(w.grad_accum);
    let mut add = |s: &[CostedSegment; 3], k: u32| {
        let (f, b) = step_launches(s, accum);
        fwd.launches += u64::from(k) * f;
        bwd.launches += u64::from(k) * b;
    };
    add(&cg.embedding, 1);
    for &(c, k) in &runs {
        add(&cg.layers[c], k);
    }
    add(&cg.head, 1);
    opt.launches = cg.optimizer.totals.2;
    RUNS.set(runs);
    Timeline {
        step_s: clock.gpu,
        phases,
        scopes: Vec::new(),
        training_loop: lp,
        host_waited: Vec::new(),
    }
}

/// [`simulate_with`] scope by scope: every layer simulated (or, on a CPU, replayed: `Steady`),
/// with a span per scope.
fn simulate_scoped(
    g: &StepGraph,
    cg: &CostedGraph,
    w: &Workload,
    hw: &Profile,
    record_waits: bool,
    keep_scopes: bool,
) -> Timeline {
    let keep_scopes = keep_scopes || record_waits;
    // Layers are replayed (`Steady`) where `run` steps through them: on a CPU. On a GPU a
    // segment costs O(1) in closed form, as little as a replay.
    let replay = !record_waits && hw.synchronous;
    let n_layers = g.layer_class.len();
    // scope index: 0 embedding, 1..=L layers, L+1 head, L+2 optimizer
    let n_scopes = n_layers + 3;
    // Forward and backward spans per scope, in storage this thread reuses (a sweep simulates
    // every point: two allocations of up to 7 KB each were a tenth of its memory traffic).
    let mut spans = SPANS.take();
    spans.clear();
    spans.resize(2 * n_scopes, Span::default());
    let (fwd, bwd) = spans.split_at_mut(n_scopes);
    let mut opt = Span::default();
    let n_waits = if record_waits { n_scopes } else { 0 };
    let mut waited_fwd: Vec<Vec<bool>> = vec![Vec::new(); n_waits];
    let mut waited_bwd: Vec<Vec<bool>> = vec![Vec::new(); n_waits];
    let mut waited_opt = Vec::new();
    let mut clock = Clock {
        host: 0.0,
        gpu: 0.0,
    };
    let graph_launch = graph_launch_s(w, hw);
    // The loop's own work: each micro-batch's fetch and bookkeeping, and the per-step work.
    // The period of a steady run is simulated from the moment the host starts issuing a
    // forward: the first micro-batch's loop work belongs to the previous step's end, where it
    // overlaps the optimizer's kernels on the GPU; later micro-batches' follow the loss check's
    // synchronisation, with the GPU idle.
    let (loop_mb_s, loop_step_s) =
        crate::training_loop::loop_host_s(w.training_loop, &hw.host, g.nn_modules);
    let mut lp = Span::default();
    // Timed phase by phase (the measurements' protocol): the device synchronised after the
    // forward and the backward (and, as every step ends, after the optimizer).
    let timed = w.training_loop == TrainingLoop::Timed;
    // The state before the last simulated micro-batch: kept only past EXACT_MICRO_BATCHES - 1,
    // where replay may start.
    let mut last_mb: Option<MicroBatchStart> = None;
    let mut mb: u32 = 0;
    while mb < w.grad_accum {
        if mb >= EXACT_MICRO_BATCHES {
            if let Some(MicroBatchStart {
                offset: e,
                fwd: f0,
                bwd: b0,
                lp: l0,
                host: h0,
                gpu: g0,
            }) = &last_mb
            {
                let d = clock.offset();
                let waited = bwd
                    .iter()
                    .zip(b0)
                    .chain(fwd.iter().zip(f0))
                    .any(|(a, b)| a.host_wait_s != b.host_wait_s);
                let repeats = (d - e).abs() <= STEADY_EPS_S
                    || (!waited && d <= e + STEADY_EPS_S)
                    || mb >= MAX_SIMULATED_MICRO_BATCHES;
                if repeats {
                    let n = u64::from(w.grad_accum - mb);
                    for (now, before) in fwd.iter_mut().zip(f0) {
                        let delta = span_delta(now, before).times(n);
                        now.add(&delta);
                    }
                    for (now, before) in bwd.iter_mut().zip(b0) {
                        let delta = span_delta(now, before).times(n);
                        now.add(&delta);
                    }
                    let delta = span_delta(&lp, l0).times(n);
                    lp.add(&delta);
                    let f = n as f64;
                    clock.host += (clock.host - h0) * f;
                    clock.gpu += (clock.gpu - g0) * f;
                    break;
                }
            }
        }
        if w.grad_accum > EXACT_MICRO_BATCHES && mb + 1 >= EXACT_MICRO_BATCHES {
            last_mb = Some(MicroBatchStart {
                offset: clock.offset(),
                fwd: fwd.to_vec(),
                bwd: bwd.to_vec(),
                lp,
                host: clock.host,
                gpu: clock.gpu,
            });
        }
        if mb > 0 {
            loop_work(&mut clock, &mut lp, loop_mb_s);
        }
        let b = if mb == 0 { 1 } else { 2 };
        mb += 1;
        clock.host += graph_launch;
        run(
            hw.synchronous,
            &mut clock,
            &cg.embedding[0],
            &mut fwd[0],
            waited_fwd.get_mut(0),
        );
        let mut steady = Steady::default();
        for (i, &c) in g.layer_class.iter().enumerate() {
            if !replay {
                // Nothing is replayed (a GPU, or waits recorded): no fixed point to observe.
                run(
                    hw.synchronous,
                    &mut clock,
                    &cg.layers[c][0],
                    &mut fwd[i + 1],
                    waited_fwd.get_mut(i + 1),
                );
                continue;
            }
            if steady.replay(c, &mut clock, &mut fwd[i + 1]) {
                continue;
            }
            let entry = clock.offset();
            let before = fwd[i + 1];
            let host0 = clock.host;
            run(
                hw.synchronous,
                &mut clock,
                &cg.layers[c][0],
                &mut fwd[i + 1],
                waited_fwd.get_mut(i + 1),
            );
            let added = span_delta(&fwd[i + 1], &before);
            steady.observe(c, entry, host0, &clock, added);
        }
        run(
            hw.synchronous,
            &mut clock,
            &cg.head[0],
            &mut fwd[n_layers + 1],
            waited_fwd.get_mut(n_layers + 1),
        );
        if timed {
            phase_sync(&mut clock, &mut fwd[n_layers + 1]);
        }
        clock.host += graph_launch;
        run(
            hw.synchronous,
            &mut clock,
            &cg.head[b],
            &mut bwd[n_layers + 1],
            waited_bwd.get_mut(n_layers + 1),
        );
        let mut steady = Steady::default();
        for (i, &c) in g.layer_class.iter().enumerate().rev() {
            if !replay {
                // Nothing is replayed (a GPU, or waits recorded): no fixed point to observe.
                run(
                    hw.synchronous,
                    &mut clock,
                    &cg.layers[c][b],
                    &mut bwd[i + 1],
                    waited_bwd.get_mut(i + 1),
                );
                continue;
            }
            if steady.replay(c, &mut clock, &mut bwd[i + 1]) {
                continue;
            }
            let entry = clock.offset();
            let before = bwd[i + 1];
            let host0 = clock.host;
            run(
                hw.synchronous,
                &mut clock,
                &cg.layers[c][b],
                &mut bwd[i + 1],
                waited_bwd.get_mut(i + 1),
            );
            let added = span_delta(&bwd[i + 1], &before);
            steady.observe(c, entry, host0, &clock, added);
        }
        run(
            hw.synchronous,
            &mut clock,
            &cg.embedding[b],
            &mut bwd[0],
            waited_bwd.get_mut(0),
        );
        if timed {
            phase_sync(&mut clock, &mut bwd[0]);
        }
        loss_check(w, &mut clock);
    }
    clock.host += graph_launch;
    run(
        hw.synchronous,
        &mut clock,
        &cg.optimizer,
        &mut opt,
        record_waits.then_some(&mut waited_opt),
    );
    // The step ends when both the GPU and the host are done.
    gpu_waits_for_host(&mut clock, &mut opt);
    // The next step's first fetch and this step's per-step work.
    loop_work(&mut clock, &mut lp, loop_mb_s + loop_step_s);
    // Exact launch counts (run() counted ops), from each distinct segment's totals.
    let accum = u64::from(w.grad_accum);
    let scope_of = |i: usize| -> Scope {
        if i == 0 {
            Scope::Embedding
        } else if i <= n_layers {
            Scope::Layer((i - 1) as u32)
        } else {
            Scope::Head
        }
    };
    for i in 0..=n_layers + 1 {
        let (f, b) = if i == 0 {
            step_launches(&cg.embedding, accum)
        } else if i <= n_layers {
            step_launches(&cg.layers[g.layer_class[i - 1]], accum)
        } else {
            step_launches(&cg.head, accum)
        };
        fwd[i].launches = f;
        bwd[i].launches = b;
    }
    opt.launches = cg.optimizer.totals.2;

    let mut phases = [Span::default(); 3];
    let mut scopes = Vec::with_capacity(if keep_scopes { 2 * n_scopes } else { 0 });
    let mut host_waited = Vec::with_capacity(if record_waits { 2 * n_scopes } else { 0 });
    for i in 0..=n_layers + 1 {
        phases[0].add(&fwd[i]);
        phases[1].add(&bwd[i]);
        if keep_scopes {
            scopes.push((scope_of(i), Phase::Forward, fwd[i]));
            scopes.push((scope_of(i), Phase::Backward, bwd[i]));
        }
        if record_waits {
            host_waited.push((
                scope_of(i),
                Phase::Forward,
                std::mem::take(&mut waited_fwd[i]),
            ));
            host_waited.push((
                scope_of(i),
                Phase::Backward,
                std::mem::take(&mut waited_bwd[i]),
            ));
        }
    }
    phases[2] = opt;
    if keep_scopes {
        scopes.push((Scope::Optimizer, Phase::Optimizer, opt));
    }
    if record_waits {
        host_waited.push((Scope::Optimizer, Phase::Optimizer, waited_opt));
    }
    SPANS.set(spans);
    Timeline {
        step_s: clock.gpu,
        phases,
        scopes,
        training_loop: lp,
        host_waited,
    }
}

/// The training loop's host work `s` (seconds): the host is busy; the GPU, once it has run
/// what it was given, idles until the host is done. The loop's share of that idle time is what
/// lies after both the host's earlier work and the GPU's queue, max(0, host + s − max(host,
/// gpu)); the GPU clock moves past it, so an earlier gap (a host still issuing when the GPU ran
/// dry) stays with the kernel it delays, as without the loop, and everything after is the
/// loop-less simulation shifted by the loop's share.
fn loop_work(clock: &mut Clock, lp: &mut Span, s: f64) {
    if s <= 0.0 {
        return;
    }
    let idle = (clock.host + s - clock.host.max(clock.gpu)).max(0.0);
    clock.host += s;
    lp.host_s += s;
    lp.time_s += idle;
    lp.host_wait_s += idle;
    lp.by_bound[3] += idle;
    clock.gpu += idle;
}

#[cfg(test)]
#[path = "simulate_tests.rs"]
mod tests;
