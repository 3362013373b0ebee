//! Costing a rank template's points: the kernel costs kept per device across a line's points
//! ([`TemplateCosts`]), where each point finds the costs of the kernels the rank changes
//! ([`Plan`]: each changed kernel costed once by its representative, `Changed::rep`), and the
//! segments refolded from them: whole, or in stretches ([`segment_pieces`]: runs of kernels
//! the rank leaves alone folded once a template, recurring stretches of changed kernels folded
//! once a point as blocks, [`find_blocks`]), a segment that costs what an earlier one does
//! copying its times ([`twin_segments`]). The folds are `simulate`'s ([`CostedSegment`]); the
//! sums equal a fresh costing's up to rounding (`simulate::Piece`), and bit for bit for a
//! probe's one-shot plan ([`cost_kept`]), folded whole.

use super::*;

/// Costs of a fitted graph's kernels on one device, kept across the points of its template:
/// only the kernels whose numbers change with the rank are costed again
/// ([`RankFit::costed`]).
pub struct TemplateCosts {
    /// (host issue s, device cost) of each kernel, segment after segment in (scope, segment)
    /// order, scope-major: segment `at` = scope·3 + segment holds `starts[at]..starts[at + 1]`.
    pub(super) costs: Vec<(f64, KernelCost)>,
    pub(super) starts: Vec<u32>,
    /// Per segment (scope·3 + segment): an earlier segment whose kernels cost exactly what its
    /// own do at every rank ([`twin_segments`]), whose refilled times it copies instead of
    /// folding its own; [`Step::OWN`] for none.
    pub(super) twins: Vec<u32>,
    /// The [`Plan::id`] `twins` and `pieces` were found for.
    pub(super) twins_plan: u64,
    /// How a point refills the segments under the plan `twins_plan` ([`segment_pieces`]).
    pub(super) layout: Pieces,
    /// Scratch: each block folded at the point ([`Stretch::of`]).
    pub(super) block_runs: Vec<Stretch>,
    /// Per step of `layout` (a representative GEMM's): the configurations of the shape it had
    /// at the last point ([`GemmSlot`]), on this device.
    pub(super) gemm_slots: Vec<GemmSlot>,
    /// Scratch for the optimizer phase's per-kernel costs, when it is costed here.
    pub(super) optimizer: Vec<(f64, KernelCost)>,
    pub(super) costed: CostedGraph,
    /// Whether these are another graph's costs, kept for their storage and layout
    /// ([`TemplateCosts::recycle`]): the next costing costs every kernel afresh.
    pub(super) stale: bool,
    /// The classes of equal kernels ([`crate::simulate::cost_classes`], in `costs`' order) of
    /// an earlier line's graph of the same key, found once its costs were recycled: hints for
    /// a later line's first costing, where a kernel whose key ([`ClassKey`]) equals its class's
    /// first kernel's takes that one's cost (empty: none found).
    pub(super) classes: Vec<u32>,
}

impl TemplateCosts {
    /// Keep these costs for another graph on the same device (a sweep's next line of the same
    /// model, method and batch): its first costing reuses their storage, and their layout when
    /// its plan has the same origin (`Plan::origin`: a line derived from the same sequence
    /// template) and the layout's inputs come out the same (`TemplateCosts::keep_layout`).
    pub fn recycle(&mut self) {
        self.stale = true;
    }
}

impl TemplateCosts {
    /// The costs of segment `at` (scope·3 + segment).
    #[cfg(test)]
    pub(super) fn segment(&self, at: usize) -> &[(f64, KernelCost)] {
        segment_costs(&self.costs, &self.starts, at)
    }
}

/// Of a [`TemplateCosts`]' `costs` and `starts`, segment `at`'s (scope·3 + segment).
pub(super) fn segment_costs<'c>(
    costs: &'c [(f64, KernelCost)],
    starts: &[u32],
    at: usize,
) -> &'c [(f64, KernelCost)] {
    &costs[starts[at] as usize..starts[at + 1] as usize]
}

/// Where a fitted graph's changed kernels ([`Changed`]) find their costs in a
/// [`TemplateCosts`]' list, worked out once per fit rather than at every point ([`cost_kept`]).
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// Distinct for every plan made (clones share it): which plan a [`TemplateCosts`]' twins
    /// were found for.
    pub(super) id: u64,
    /// The `id` the plan was made with, kept when a copy is renumbered for another graph of
    /// the same structure ([`Plan::renumber`]): plans of one origin have the same steps.
    pub(super) origin: u64,
    pub(super) steps: Vec<Step>,
    /// The list's length: the graph's kernels in all.
    pub(super) len: u32,
    /// Whether points fold the refilled segments in stretches ([`segment_pieces`]): a rank
    /// template's plan, which many points reuse; not a probe's ([`cost_kept`]), used once, whose
    /// segments are folded whole, every kernel in order, as a single prediction folds them.
    pub(super) stretches: bool,
}

/// One changed kernel of a [`Plan`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    /// The kernel's place in the list.
    pub(super) at: u32,
    /// Its representative's place, whose fresh cost it copies; [`Step::OWN`] when it is its own.
    pub(super) from: u32,
    /// The kernel: (scope, segment, index), read when it is its own representative.
    pub(super) scope: u32,
    pub(super) seg: u8,
    pub(super) idx: u32,
    /// The segment (scope·3 + segment) of which this is the last changed kernel, which a point
    /// refills once all its steps have run ([`Pieces::refills`]); [`Step::OWN`] when another
    /// changed kernel of the segment follows.
    pub(super) refill: u32,
    /// Of a representative whose numbers a sweep's rows rewrite: its copy's place in the
    /// kernels handed to the costing apart from the graph ([`RankFit::reps`]), where it is
    /// read; [`Step::OWN`] to read it in the graph (a probe's plan, or numbers rows leave).
    pub(super) row: u32,
}

impl Step {
    pub(super) const OWN: u32 = u32::MAX;
}

/// Where each segment of `g` starts in a flat list of its kernels (scope·3 + segment, then the
/// end).
pub(super) fn starts(g: &StepGraph) -> Vec<u32> {
    let mut at = 0u32;
    let mut out = Vec::with_capacity(3 * (g.layer_graphs.len() + 2) + 1);
    for sc in scopes(g) {
        for s in segments(sc) {
            out.push(at);
            at += s.kernels.len() as u32;
        }
    }
    out.push(at);
    out
}

/// The next [`Plan::id`].
pub(super) static NEXT_PLAN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Plan {
    pub(super) fn new(g: &StepGraph, changed: &[Changed]) -> Self {
        let starts = starts(g);
        let flat = |c: &Changed| starts[c.scope as usize * 3 + c.seg as usize] + c.idx;
        let steps = changed
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let last = changed.get(j + 1).map(|n| (n.scope, n.seg)) != Some((c.scope, c.seg));
                Step {
                    at: flat(c),
                    from: match changed.get(c.rep as usize) {
                        Some(r) if (c.rep as usize) < j => flat(r),
                        _ => Step::OWN,
                    },
                    scope: c.scope,
                    seg: c.seg,
                    idx: c.idx,
                    refill: if last {
                        c.scope * 3 + u32::from(c.seg)
                    } else {
                        Step::OWN
                    },
                    row: Step::OWN,
                }
            })
            .collect();
        let id = NEXT_PLAN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Plan {
            id,
            origin: id,
            steps,
            len: *starts.last().unwrap_or(&0),
            stretches: true,
        }
    }
}

impl Plan {
    /// A new [`Plan::id`] for a copy that becomes another graph's plan (`SeqFit::derive`): the
    /// same steps, so the same [`Plan::origin`].
    pub(super) fn renumber(&mut self) {
        self.id = NEXT_PLAN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Segment `at` (scope·3 + segment) of a costed graph of `n` layer classes.
pub(super) fn costed_segment(out: &mut CostedGraph, n: usize, at: usize) -> &mut CostedSegment {
    let cs = match at / 3 {
        0 => &mut out.embedding,
        i if i <= n => &mut out.layers[i - 1],
        _ => &mut out.head,
    };
    &mut cs[at % 3]
}

/// Segment `at` (scope·3 + segment) of a costed graph of `n` layer classes, to read.
pub(super) fn costed_segment_ref(out: &CostedGraph, n: usize, at: usize) -> &CostedSegment {
    let cs = match at / 3 {
        0 => &out.embedding,
        i if i <= n => &out.layers[i - 1],
        _ => &out.head,
    };
    &cs[at % 3]
}

/// For each segment of a template (scope·3 + segment, `starts` as [`starts`]), the first earlier
/// segment refilled at every point whose kernels cost, at every rank, bit for bit what its own
/// do, or [`Step::OWN`]: the same number of kernels, and at each place either two kernels the
/// rank leaves alone with equal stored costs (host time and device cost, compared as bits), or
/// two changed kernels with the same representative (whose fresh cost both take, [`Plan`]) and
/// equal host times. Folding equal costs in the same order gives equal sums, so such a segment
/// copies its twin's refilled times. In a LoRA or PaCA graph the lowest trained layer's class
/// and the others differ in backward only: their forward segments are twins (llama2-7b LoRA:
/// 113 of the 475 kernels folded at each point).
pub(super) fn twin_segments(plan: &Plan, costs: &[(f64, KernelCost)], starts: &[u32]) -> Vec<u32> {
    let segs = starts.len().saturating_sub(1);
    // Per kernel of the list: its representative's place when it is changed, else OWN.
    let mut rep = vec![Step::OWN; costs.len()];
    for st in &plan.steps {
        rep[st.at as usize] = if st.from == Step::OWN { st.at } else { st.from };
    }
    let refilled: Vec<usize> = plan
        .steps
        .iter()
        .filter(|st| st.refill != Step::OWN)
        .map(|st| st.refill as usize)
        .collect();
    let same_bits = |a: &(f64, KernelCost), b: &(f64, KernelCost)| {
        let bits = |(h, c): &(f64, KernelCost)| {
            (
                h.to_bits(),
                c.math_s.to_bits(),
                c.mem_s.to_bits(),
                c.floor_s.to_bits(),
                c.device_s.to_bits(),
                c.bound,
            )
        };
        bits(a) == bits(b)
    };
    let mut twins = vec![Step::OWN; segs];
    for (j, &b) in refilled.iter().enumerate() {
        let (b0, b1) = (starts[b] as usize, starts[b + 1] as usize);
        twins[b] = refilled[..j]
            .iter()
            .copied()
            .find(|&a| {
                let (a0, a1) = (starts[a] as usize, starts[a + 1] as usize);
                a1 - a0 == b1 - b0
                    && (a0..a1).zip(b0..b1).all(|(x, y)| match (rep[x], rep[y]) {
                        (Step::OWN, Step::OWN) => same_bits(&costs[x], &costs[y]),
                        (rx, ry) => {
                            rx != Step::OWN
                                && rx == ry
                                && costs[x].0.to_bits() == costs[y].0.to_bits()
                        }
                    })
            })
            .map_or(Step::OWN, |a| a as u32);
    }
    twins
}

/// For each segment of a template (scope·3 + segment, `starts` as [`starts`]) refilled at every
/// point on a GPU, its kernels as stretches ([`Piece`]): each changed kernel of `plan` on its
/// own, and each run of kernels between them folded once from `costs` (theirs do not change
/// from point to point, [`cost_kept`]), so that a point folds a few joins and its changed
/// kernels rather than every kernel (llama2-7b LoRA on an H200: 355 kernels → about 150 pieces).
/// Segment `at`'s pieces are `pieces[piece_starts[at]..piece_starts[at + 1]]`, none where the
/// segment is folded whole: not refilled, with an op the host waits at
/// ([`CostedSegment::refill_pieces`] does not split at it), or a `synchronous` profile, whose
/// launch list is kept.
///
/// A changed kernel's piece reads its representative's cost where the point wrote it, so the
/// plan's steps a point runs leave out the copies into segments folded in pieces (llama2-7b
/// LoRA: 121 of 137 steps), keeping each representative and each copy into a segment folded
/// whole. A changed kernel that is not its own representative then keeps a stale cost in
/// [`TemplateCosts`]' list, which nothing reads.
///
/// Stretches of two or more changed kernels in a row that recur, the same representatives with
/// the same host times, in the segments refilled in pieces (not twins, [`twin_segments`]),
/// become blocks ([`Piece::Block`]): each folded once a point and joined wherever it recurs
/// (llama2-7b LoRA: the four adapter kernels of q, k and v, and of the up and gate
/// projections; the forward segment's 28 changed kernels become 3 blocks joined 7 times).
pub(super) fn segment_pieces(
    plan: &Plan,
    costs: &[(f64, KernelCost)],
    starts: &[u32],
    costed: &CostedGraph,
    n: usize,
    synchronous: bool,
    twins: &[u32],
) -> Pieces {
    let segs = starts.len().saturating_sub(1);
    // Per kernel of the list: its representative's place when it is changed, else OWN.
    let mut rep = vec![Step::OWN; costs.len()];
    let mut refilled = vec![false; segs];
    for st in &plan.steps {
        rep[st.at as usize] = if st.from == Step::OWN { st.at } else { st.from };
        if st.refill != Step::OWN {
            refilled[st.refill as usize] = true;
        }
    }
    let changed = |i: usize| rep[i] != Step::OWN;
    let in_pieces = folded_in_pieces(plan, &refilled, costed, n, synchronous);
    let (stretches, blocks, block_starts) =
        find_blocks(starts, &in_pieces, &rep, |i| costs[i].0, twins);
    let mut next = stretches.iter().peekable();
    let mut pieces = Vec::new();
    let mut runs = Vec::new();
    let mut piece_starts = Vec::with_capacity(segs + 1);
    for at in 0..segs {
        piece_starts.push(pieces.len() as u32);
        if !in_pieces[at] {
            continue;
        }
        let (mut i, end) = (starts[at] as usize, starts[at + 1] as usize);
        while i < end {
            if let Some(&&(lo, hi, block)) = next.peek().filter(|s| s.0 as usize == i) {
                next.next();
                pieces.push(Piece::Block { block });
                debug_assert!(lo as usize == i && hi as usize <= end);
                i = hi as usize;
            } else if changed(i) {
                pieces.push(Piece::Kernel {
                    host_s: costs[i].0,
                    cost_at: rep[i],
                });
                i += 1;
            } else {
                let j = (i..end).find(|&j| changed(j)).unwrap_or(end);
                runs.push((pieces.len() as u32, i as u32, j as u32));
                pieces.push(Piece::run(&costs[i..j]));
                i = j;
            }
        }
    }
    piece_starts.push(pieces.len() as u32);
    let steps = plan
        .steps
        .iter()
        .filter(|st| {
            let at = (st.scope * 3 + u32::from(st.seg)) as usize;
            st.from == Step::OWN || piece_starts[at] == piece_starts[at + 1]
        })
        .copied()
        .collect();
    let refills = plan
        .steps
        .iter()
        .filter(|st| st.refill != Step::OWN)
        .map(|st| st.refill)
        .collect();
    Pieces {
        origin: plan.origin,
        hosts: changed_hosts(plan, costs),
        in_pieces,
        runs,
        pieces,
        piece_starts,
        steps,
        refills,
        blocks,
        block_starts,
    }
}

/// Per segment of a template (scope·3 + segment): whether it is folded in stretches
/// ([`segment_pieces`]): refilled at every point (`refilled`), on a GPU, under a plan that many
/// points reuse, and without an op the host waits at.
fn folded_in_pieces(
    plan: &Plan,
    refilled: &[bool],
    costed: &CostedGraph,
    n: usize,
    synchronous: bool,
) -> Vec<bool> {
    (0..refilled.len())
        .map(|at| {
            !synchronous
                && plan.stretches
                && refilled[at]
                && !costed_segment_ref(costed, n, at).has_sync()
        })
        .collect()
}

/// The host issue times (as bits) of `plan`'s changed kernels, step by step: what a layout
/// reads of them besides their places ([`Piece::Kernel`], [`find_blocks`]).
fn changed_hosts(plan: &Plan, costs: &[(f64, KernelCost)]) -> Vec<u64> {
    plan.steps
        .iter()
        .map(|st| costs[st.at as usize].0.to_bits())
        .collect()
}

/// Of a template's segments (segment `at`'s kernels at places `starts[at]..starts[at + 1]`)
/// folded in stretches (`in_pieces`), the stretches of two or more changed kernels in a row
/// (`rep[i]`: kernel `i`'s representative's place, [`Step::OWN`] for a kernel the rank leaves
/// alone) that recur, the same representatives with the same host times (`host(i)`, compared as
/// bits), in segments that are not twins ([`twin_segments`]; a twin's own stretches become
/// blocks all the same, so that folding it gives its source's bits): each stretch that becomes
/// a block as (first place, end place, block), in order, and the blocks' kernels and starts
/// (block `b`'s are `blocks[block_starts[b]..block_starts[b + 1]]`).
pub(super) fn find_blocks(
    starts: &[u32],
    in_pieces: &[bool],
    rep: &[u32],
    host: impl Fn(usize) -> f64,
    twins: &[u32],
) -> (Vec<(u32, u32, u32)>, Blocks, Vec<u32>) {
    let segs = starts.len().saturating_sub(1);
    // Each maximal stretch: (segment, first place, end place), its key in `flat`.
    let mut stretches = Vec::new();
    let mut flat: Vec<(u64, u32)> = Vec::new();
    let mut key_ends = Vec::new();
    for at in (0..segs).filter(|&at| in_pieces[at]) {
        let (mut i, end) = (starts[at] as usize, starts[at + 1] as usize);
        while i < end {
            if rep[i] == Step::OWN {
                i += 1;
                continue;
            }
            let j = (i..end).find(|&j| rep[j] == Step::OWN).unwrap_or(end);
            // A stretch that repeats one shorter stretch back to back (PaCA's four kernels of
            // each of gate, up and down in a row) is that stretch's copies.
            let same =
                |a: usize, b: usize| rep[a] == rep[b] && host(a).to_bits() == host(b).to_bits();
            let len = j - i;
            let period = (2..=len / 2)
                .find(|&p| len % p == 0 && (i..j - p).all(|k| same(k, k + p)))
                .unwrap_or(len);
            if period >= 2 {
                for lo in (i..j).step_by(period) {
                    stretches.push((at, lo as u32, (lo + period) as u32));
                    flat.extend((lo..lo + period).map(|k| (host(k).to_bits(), rep[k])));
                    key_ends.push(flat.len());
                }
            }
            i = j;
        }
    }
    let key = |s: usize| &flat[if s == 0 { 0 } else { key_ends[s - 1] }..key_ends[s]];
    // Per distinct key: (times folded, block number or u32::MAX).
    let mut seen: rustc_hash::FxHashMap<&[(u64, u32)], (u32, u32)> = Default::default();
    for (s, &(at, _, _)) in stretches.iter().enumerate() {
        let folded = twins.get(at) == Some(&Step::OWN);
        seen.entry(key(s)).or_insert((0, u32::MAX)).0 += u32::from(folded);
    }
    // The recurring ones, numbered in order of first appearance.
    let mut out = Vec::new();
    let mut blocks = Vec::new();
    let mut block_starts = vec![0u32];
    for (s, &(_, lo, hi)) in stretches.iter().enumerate() {
        let k = key(s);
        let e = seen.get_mut(k).expect("counted");
        if e.0 < 2 {
            continue;
        }
        if e.1 == u32::MAX {
            e.1 = (block_starts.len() - 1) as u32;
            blocks.extend(k.iter().map(|&(h, at)| (f64::from_bits(h), at)));
            block_starts.push(blocks.len() as u32);
        }
        out.push((lo, hi, e.1));
    }
    (out, blocks, block_starts)
}

/// Blocks' kernels, each as (host issue s, place of its cost), one block after another.
pub(super) type Blocks = Vec<(f64, u32)>;

/// [`segment_pieces`]' lists: how a point refills a template's segments under one plan.
#[derive(Default)]
pub(super) struct Pieces {
    /// The [`Plan::origin`] of the plan these were found for.
    pub(super) origin: u64,
    /// What they were found from besides the plan, the places and the twins: the host issue
    /// times of the plan's changed kernels ([`changed_hosts`]) and which segments are folded
    /// in stretches ([`folded_in_pieces`]).
    pub(super) hosts: Vec<u64>,
    pub(super) in_pieces: Vec<bool>,
    /// Each [`Piece::Run`] as (its index in `pieces`, first place, end place): refolded when
    /// another graph of the same structure keeps the layout ([`TemplateCosts::keep_layout`]).
    pub(super) runs: Vec<(u32, u32, u32)>,
    /// The segments refilled at every point, on a GPU and without an op the host waits at, as
    /// stretches of kernels: segment `at`'s are `pieces[piece_starts[at]..piece_starts[at +
    /// 1]]`, none for a segment folded whole.
    pub(super) pieces: Vec<Piece>,
    pub(super) piece_starts: Vec<u32>,
    /// The plan's steps a point runs.
    pub(super) steps: Vec<Step>,
    /// The segments (scope·3 + segment) a point refills, in order: those with a changed
    /// kernel.
    pub(super) refills: Vec<u32>,
    /// Stretches of changed kernels that recur ([`Piece::Block`]), each as (host issue s, place
    /// of its cost) of its kernels: block `b`'s are `blocks[block_starts[b]..block_starts[b + 1]]`.
    pub(super) blocks: Blocks,
    pub(super) block_starts: Vec<u32>,
}

impl TemplateCosts {
    /// Take `plan` as the one points are costed under, keeping the layout found for another
    /// graph of the same structure when it is what [`TemplateCosts::adopt`] would find: `plan`
    /// of the same origin (the same steps, so the same representatives and refilled segments),
    /// the same twins ([`twin_segments`], from this graph's costs), the same segments folded in
    /// stretches, and the same host times of the changed kernels; the layout is then a function
    /// of these ([`segment_pieces`], [`find_blocks`]) but for its runs' folds, which are
    /// refolded from this graph's costs. Otherwise adopted afresh.
    fn keep_layout(&mut self, plan: &Plan, n: usize, synchronous: bool) {
        let l = &self.layout;
        let same = l.origin == plan.origin
            && self.starts.last() == Some(&plan.len)
            && l.hosts.len() == plan.steps.len()
            && plan
                .steps
                .iter()
                .zip(&l.hosts)
                .all(|(st, &h)| self.costs[st.at as usize].0.to_bits() == h)
            && {
                let mut refilled = vec![false; self.starts.len().saturating_sub(1)];
                for &at in &l.refills {
                    refilled[at as usize] = true;
                }
                folded_in_pieces(plan, &refilled, &self.costed, n, synchronous) == l.in_pieces
            }
            && twin_segments(plan, &self.costs, &self.starts) == self.twins;
        if !same {
            self.adopt(plan, n, synchronous);
            return;
        }
        let l = &mut self.layout;
        for &(p, lo, hi) in &l.runs {
            l.pieces[p as usize] = Piece::run(&self.costs[lo as usize..hi as usize]);
        }
        // The slots' configurations are the device's; the last graph's shapes are not this
        // one's, so they start empty (one lookup each at the first point), their searches
        // dropped too (kept costs move between devices in the tests).
        self.gemm_slots
            .iter_mut()
            .for_each(|s| *s = GemmSlot::default());
        self.twins_plan = plan.id;
    }

    /// Take `plan` as the one points are costed under: its twins ([`twin_segments`]) and its
    /// layout ([`segment_pieces`]), found from the costs and folds held now (once a plan).
    fn adopt(&mut self, plan: &Plan, n: usize, synchronous: bool) {
        self.twins = twin_segments(plan, &self.costs, &self.starts);
        self.layout = segment_pieces(
            plan,
            &self.costs,
            &self.starts,
            &self.costed,
            n,
            synchronous,
            &self.twins,
        );
        let blocks = self.layout.block_starts.len().saturating_sub(1);
        self.block_runs.clear();
        self.block_runs.resize(blocks, Stretch::EMPTY);
        self.gemm_slots.clear();
        self.gemm_slots
            .resize_with(self.layout.steps.len(), GemmSlot::default);
        self.twins_plan = plan.id;
    }
}

/// Every kernel's (host issue s, device cost) of `g`, in `costs`' order, appended to `out` as
/// [`kernel_costs`] gives them, with `classes` (an earlier graph's of the same structure) as
/// hints: a class's first kernel is costed, and a later one equal to that one in its
/// [`ClassKey`] ([`ClassKey::same`]) copies its cost (both functions read only what the key
/// holds); one that differs (the hint does not hold in this graph) is costed. So the same
/// numbers, whatever the hints.
fn cost_hinted(
    g: &StepGraph,
    classes: &[u32],
    w: &Workload,
    hw: &Profile,
    memo: &mut GemmMemo,
    out: &mut Vec<(f64, KernelCost)>,
) {
    // Each class's first kernel, its phase and its place in `out`.
    let mut firsts: Vec<(&Kernel, Phase, u32)> = Vec::with_capacity(classes.len() / 2);
    for sc in scopes(g) {
        for (seg, s) in segments(sc).into_iter().enumerate() {
            let phase = seg_phase(seg as u8);
            for k in &s.kernels {
                let at = out.len();
                let class = classes[at] as usize;
                let cost = match firsts.get(class) {
                    Some(&(first, p, from)) if ClassKey::same(first, p, k, phase) => {
                        out[from as usize]
                    }
                    held => {
                        let cost = fresh_cost(k, phase, w, hw, memo);
                        if held.is_none() && class == firsts.len() {
                            firsts.push((k, phase, at as u32));
                        }
                        cost
                    }
                };
                out.push(cost);
            }
        }
    }
}

/// Per-kernel costs of a segment, as `simulate::cost_segment` evaluates them, appended to `out`.
pub(super) fn kernel_costs(
    seg: &Segment,
    phase: Phase,
    w: &Workload,
    hw: &Profile,
    memo: &mut GemmMemo,
    out: &mut Vec<(f64, KernelCost)>,
) {
    let replay = w.runtime == Runtime::CudaGraph;
    out.extend(seg.kernels.iter().map(|k| {
        (
            host_cost(k, phase, w.runtime, hw),
            kernel_cost_memo(k, hw, replay, memo),
        )
    }));
}

pub(super) fn seg_phase(seg: u8) -> Phase {
    if seg == 0 {
        Phase::Forward
    } else {
        Phase::Backward
    }
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
    let plan = Plan {
        stretches: false,
        ..Plan::new(g, changed)
    };
    cost_planned(g, &[], &plan, slot, w, hw, memo, optimizer)
}

/// [`cost_kept`] with the changed kernels' places already worked out ([`Plan::new`] of the same
/// graph structure), a representative with a [`Step::row`] read in `reps` rather than in `g`.
#[allow(clippy::too_many_arguments)]
pub(super) fn cost_planned<'a>(
    g: &StepGraph,
    reps: &[Kernel],
    plan: &Plan,
    slot: &'a mut Option<TemplateCosts>,
    w: &Workload,
    hw: &Profile,
    memo: &mut GemmMemo,
    optimizer: &mut Option<CostedSegment>,
) -> &'a CostedGraph {
    let n = g.layer_graphs.len();
    let first = slot.as_ref().is_none_or(|tc| tc.stale);
    let tc = if first {
        cost_first(g, reps, plan, slot, w, hw, memo)
    } else {
        let tc = slot.as_mut().expect("kept costs");
        debug_assert_eq!(tc.costs.len(), plan.len as usize, "a plan of another graph");
        // Found once per plan: the kernels it leaves alone keep their costs from point to
        // point, and its changed kernels' representatives are fixed.
        if tc.twins_plan != plan.id {
            tc.adopt(plan, n, hw.synchronous);
        }
        let replay = w.runtime == Runtime::CudaGraph;
        for (st, gemm) in tc.layout.steps.iter().zip(&mut tc.gemm_slots) {
            let cost = if st.from == Step::OWN {
                // A representative: costed from its own numbers, in its copy when rows rewrite
                // it (the segment is looked up only otherwise).
                let k = match reps.get(st.row as usize) {
                    Some(k) => k,
                    None => {
                        &segments(scope_ref(g, st.scope as usize))[st.seg as usize].kernels
                            [st.idx as usize]
                    }
                };
                kernel_cost_slot(k, hw, replay, memo, gemm)
            } else {
                tc.costs[st.from as usize].1
            };
            tc.costs[st.at as usize].1 = cost;
        }
        // The blocks, once each, from the costs just written.
        for (b, run) in tc.block_runs.iter_mut().enumerate() {
            let l = &tc.layout;
            let ks = &l.blocks[l.block_starts[b] as usize..l.block_starts[b + 1] as usize];
            *run = Stretch::of(ks.iter().map(|&(h, at)| (h, &tc.costs[at as usize].1)));
        }
        // Each segment with a changed kernel refilled, in order; the others keep their sums
        // (their kernels are those of the first graph).
        for &at in &tc.layout.refills {
            let at = at as usize;
            let out = &mut tc.costed;
            // The rank changes no launch count: the totals stay the first costing's.
            match tc.twins[at] {
                Step::OWN => {
                    let seg = costed_segment(out, n, at);
                    let l = &tc.layout;
                    let pieces =
                        &l.pieces[l.piece_starts[at] as usize..l.piece_starts[at + 1] as usize];
                    if pieces.is_empty() {
                        seg.refill_times(segment_costs(&tc.costs, &tc.starts, at), hw.synchronous);
                    } else {
                        seg.refill_pieces(pieces, &tc.costs, &tc.block_runs);
                    }
                }
                // Refilled earlier at this point: the same sums of the same costs.
                twin => {
                    let mut fast = costed_segment(out, n, at).take_fast();
                    let times = costed_segment(out, n, twin as usize).times_into(&mut fast);
                    costed_segment(out, n, at).set_times(fast, times);
                }
            }
        }
        tc
    };
    match optimizer {
        Some(c) => tc.costed.optimizer.clone_from(c),
        None => {
            tc.optimizer.clear();
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

/// [`cost_planned`]'s first costing of a template on a device: every kernel costed, every
/// segment folded, and the plan's twins and pieces found; kept in `slot`, into the storage of
/// the costs it holds when they were recycled ([`TemplateCosts::recycle`]), whose layout is kept
/// where it is what would be found ([`TemplateCosts::keep_layout`]). Out of line, so that a
/// profile shows what a line's first point costs.
#[inline(never)]
pub(super) fn cost_first<'a>(
    g: &StepGraph,
    reps: &[Kernel],
    plan: &Plan,
    slot: &'a mut Option<TemplateCosts>,
    w: &Workload,
    hw: &Profile,
    memo: &mut GemmMemo,
) -> &'a mut TemplateCosts {
    let n = g.layer_graphs.len();
    // Recycled costs of a graph with as many layer classes: their storage reused.
    let mut costs = Vec::new();
    let mut classes = Vec::new();
    let old = slot
        .take()
        .filter(|o| o.costed.layers.len() == n)
        .map(|mut o| {
            costs = std::mem::take(&mut o.costs);
            costs.clear();
            classes = std::mem::take(&mut o.classes);
            o
        });
    costs.reserve(plan.len as usize);
    if classes.len() == plan.len as usize {
        cost_hinted(g, &classes, w, hw, memo, &mut costs);
    } else {
        for sc in scopes(g) {
            for (seg, s) in segments(sc).into_iter().enumerate() {
                kernel_costs(s, seg_phase(seg as u8), w, hw, memo, &mut costs);
            }
        }
        // Recycled: a key with more than one line, whose later lines take these classes as
        // hints (found once a key: hashing every kernel costs about what costing it does).
        // `cost_classes` numbers the kernels in `costs`' order, then the optimizer's, whose
        // phase no earlier kernel has: dropping those leaves the classes of `costs`.
        classes = if old.is_some() {
            let mut c = cost_classes(g);
            c.truncate(plan.len as usize);
            c
        } else {
            Vec::new()
        };
    }
    // A representative rows rewrite is costed from its copy, which holds the point's numbers
    // (`RankFit::apply_for_rows` leaves the graph's as they were).
    let replay = w.runtime == Runtime::CudaGraph;
    for st in &plan.steps {
        if let (Step::OWN, Some(k)) = (st.from, reps.get(st.row as usize)) {
            costs[st.at as usize].1 = kernel_cost_memo(k, hw, replay, memo);
        }
    }
    // A changed kernel takes its representative's cost (a representative its own), as
    // on every later point: after `RankFit::apply_for_rows` only the representative holds
    // the rank's numbers.
    for st in &plan.steps {
        if st.from != Step::OWN {
            costs[st.at as usize].1 = costs[st.from as usize].1;
        }
    }
    let three = || {
        [
            CostedSegment::empty(),
            CostedSegment::empty(),
            CostedSegment::empty(),
        ]
    };
    let starts = starts(g);
    let recycled = old.is_some();
    let tc = match old {
        Some(mut o) => {
            o.costs = costs;
            o.starts = starts;
            o.stale = false;
            o.classes = classes;
            slot.insert(o)
        }
        None => slot.insert(TemplateCosts {
            costs,
            starts,
            // Found by `adopt` below, once every segment is folded.
            twins: Vec::new(),
            twins_plan: plan.id,
            layout: Pieces::default(),
            block_runs: Vec::new(),
            gemm_slots: Vec::new(),
            optimizer: Vec::new(),
            costed: CostedGraph {
                embedding: three(),
                layers: g.layer_graphs.iter().map(|_| three()).collect(),
                head: three(),
                optimizer: CostedSegment::empty(),
            },
            stale: false,
            classes,
        }),
    };
    for (i, sc) in scopes(g).enumerate() {
        for (seg, s) in segments(sc).into_iter().enumerate() {
            let at = i * 3 + seg;
            costed_segment(&mut tc.costed, n, at).refill(
                s,
                segment_costs(&tc.costs, &tc.starts, at),
                hw.synchronous,
            );
        }
    }
    if recycled {
        tc.keep_layout(plan, n, hw.synchronous);
    } else {
        tc.adopt(plan, n, hw.synchronous);
    }
    tc
}
