//! Grid sweeps: every combination of models, devices, methods, batch sizes, sequence lengths,
//! ranks, trained layers and precisions, evaluated in parallel.
//!
//! Work is grouped by what the kernel graph depends on (model, method, workload): each group's
//! graph is built once and costed on every device of the grid, and within a graph identical layers
//! share one segment evaluation and, at the pipeline's fixed point, one simulation
//! (`simulate::Steady`). Along the rank axis a graph is not rebuilt: on grids of at least
//! `MIN_TEMPLATE_RANKS` ranks (and at most `MAX_TEMPLATE_DEVICES` devices), after three ranks
//! of the same (model, method, precision, layers, batch, seq), each worker thread fits a rank
//! template at the fourth (`rescale::RankFit`, exact or refused), rescales it for the later ranks
//! and costs again only the kernels whose numbers changed. On grids of at least
//! `MIN_SEQ_TEMPLATE_SEQS` sequence lengths, the rank templates of four lines of a (model,
//! method, precision, layers, batch) are fitted over the sequence length (`rescale::SeqFit`,
//! exact or refused) and the later lines derive theirs from it, without probes.
//! Groups run in parallel on rayon's pool; the rows come back in grid order
//! (model, method, precision, batch, seq, rank, train-layers, device — device innermost), streamed
//! a chunk of [`CHUNK_POINTS`] at a time ([`Grid::stream`]), so memory does not grow with the
//! grid: groups are generated as they are consumed, axis sizes are counted with checked
//! arithmetic before anything is materialised, and the GEMM memos are bounded.
//!
//! Ranks follow `costsim predict --method all`: a sweep's rank is the LoRA reference rank and the
//! PaCA variants take the paper's matched column counts (2r, 4r upper half, 3r three quarters);
//! full fine-tuning has no rank, so its points do not repeat over the rank axis, and the
//! layer-selective PaCA presets keep their own trained layers, so theirs do not repeat over
//! `--train-layers` (sweep `--method paca --train-layers upper:0.5,upper:0.75` instead).

use crate::arch::ModelConfig;
use crate::cost::{Bound, GemmMemo, KernelCost};
use crate::graph::{self, StepGraph};
use crate::method::{LayerSelection, MethodKind, MethodName, MethodOptions, MethodSpec};
use crate::predict::{footprint_counted, summarize_with_memory, ConfigRef, ParamCounts, Summary};
use crate::rescale::{cost_kept, differing, RankFit, SeqFit, TemplateCosts, SEQ_LINES};
use crate::simulate::{CostedGraph, CostedSegment};
use crate::workload::{Precision, Workload};
use crate::{Error, Result};
use costsim_hardware::Profile;
use rayon::prelude::*;
use serde::Serialize;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Points above this are refused. Memory no longer limits a sweep (rows are streamed, see
/// [`Grid::stream`]); the cap guards against a typo in a range: a billion points take over an hour
/// of CPU and write some 150 GB of CSV. Split a larger sweep into several runs.
pub const MAX_POINTS: u64 = 1_000_000_000;

/// Values one axis may take. Axes are materialised (8 bytes a value), so this bounds their memory
/// (8 MB); it is counted before any value is generated.
pub const MAX_AXIS_VALUES: u64 = 1_000_000;

/// Parse an integer axis: comma-separated values and inclusive ranges, `A..B` (step 1),
/// `A..B:+S` (step S) or `A..B:xF` (times F each step), e.g. `128..4096:x2` =
/// 128, 256, …, 4096. Values are deduplicated, in the order given. The number of values is
/// counted with checked arithmetic before any range is materialised: more than
/// [`MAX_AXIS_VALUES`] in all is refused.
pub fn parse_axis(spec: &str, what: &str) -> Result<Vec<u64>> {
    let err = |m: String| Error::InvalidArgument {
        what: what.into(),
        message: m,
    };
    let num = |s: &str| -> Result<u64> {
        s.trim().parse::<u64>().map_err(|_| {
            err(format!(
                "cannot read '{s}' in '{spec}'; use numbers, lists (8,16,32) or ranges \
                 (128..4096:x2, 8..64:+8)"
            ))
        })
    };
    /// One item of the list: a value, or a range with its step.
    enum Item {
        One(u64),
        Add(u64, u64, u64),
        Mul(u64, u64, u64),
    }
    let mut items = Vec::new();
    let mut count: u64 = 0;
    for item in spec.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(err(format!(
                "'{spec}' has an empty item (two commas in a row, or one at an end); remove it"
            )));
        }
        let Some((a, rest)) = item.split_once("..") else {
            items.push(Item::One(num(item)?));
            count = count.saturating_add(1);
            continue;
        };
        let (b, step) = match rest.split_once(':') {
            Some((b, step)) => (b, Some(step.trim())),
            None => (rest, None),
        };
        let (lo, hi) = (num(a)?, num(b)?);
        if lo > hi {
            return Err(err(format!(
                "range '{item}' runs backwards; write the smaller end first ({hi}..{lo})"
            )));
        }
        let (it, n) = match step {
            // (hi − lo) / d + 1 values: hi − lo cannot overflow (lo ≤ hi), the + 1 can.
            None => (Item::Add(lo, hi, 1), (hi - lo).checked_add(1)),
            Some(s) if s.starts_with('+') => {
                let d = num(&s[1..])?;
                if d == 0 {
                    return Err(err(format!("step '{s}' in '{item}' must be at least +1")));
                }
                (Item::Add(lo, hi, d), ((hi - lo) / d).checked_add(1))
            }
            Some(s) if s.starts_with('x') || s.starts_with('*') => {
                let f = num(&s[1..])?;
                if f < 2 || lo == 0 {
                    return Err(err(format!(
                        "geometric range '{item}' needs a start ≥ 1 and a factor ≥ 2 (x2)"
                    )));
                }
                // At most 64 steps (f ≥ 2): counted by walking.
                let (mut v, mut n) = (lo, 0u64);
                while v <= hi {
                    n += 1;
                    v = match v.checked_mul(f) {
                        Some(x) => x,
                        None => break,
                    };
                }
                (Item::Mul(lo, hi, f), Some(n))
            }
            Some(s) => {
                return Err(err(format!(
                    "cannot read step '{s}' in '{item}'; use :+S (add S) or :xF (multiply by F)"
                )))
            }
        };
        count = n.and_then(|n| count.checked_add(n)).unwrap_or(u64::MAX);
        if count > MAX_AXIS_VALUES {
            return Err(err(format!(
                "'{spec}' has more than {MAX_AXIS_VALUES} values (range '{item}'); use a coarser \
                 step (8..4096:+8, 128..4096:x2) or split the sweep"
            )));
        }
        items.push(it);
    }
    if items.is_empty() {
        return Err(err(format!("'{spec}' names no values")));
    }
    // `count` ≤ MAX_AXIS_VALUES: materialising is now bounded.
    let mut out: Vec<u64> = Vec::with_capacity(count as usize);
    for it in items {
        match it {
            Item::One(v) => out.push(v),
            Item::Add(lo, hi, d) => {
                let mut v = lo;
                while v <= hi {
                    out.push(v);
                    v = match v.checked_add(d) {
                        Some(n) => n,
                        None => break,
                    };
                }
            }
            Item::Mul(lo, hi, f) => {
                let mut v = lo;
                while v <= hi {
                    out.push(v);
                    v = match v.checked_mul(f) {
                        Some(n) => n,
                        None => break,
                    };
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::with_capacity(out.len());
    out.retain(|v| seen.insert(*v));
    Ok(out)
}

/// The grid. Every list must be non-empty.
#[derive(Debug, Clone)]
pub struct Grid {
    pub models: Vec<ModelConfig>,
    pub hws: Vec<Profile>,
    pub methods: Vec<MethodName>,
    pub batches: Vec<u64>,
    pub seqs: Vec<u64>,
    /// LoRA reference ranks; `None` is the paper's default (8).
    pub ranks: Vec<Option<u64>>,
    /// `None` keeps each method's own selection (all layers; the PaCA presets their fraction).
    pub train_layers: Vec<Option<LayerSelection>>,
    pub precisions: Vec<Precision>,
    /// Everything else of the workload (grad accumulation, attention, optimizer, runtime...);
    /// its batch, seq and precision are replaced per point.
    pub base: Workload,
    /// Alpha, dropout, targets, adapter dtype; rank and layers are replaced per point.
    pub options: MethodOptions,
}

/// How a point ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status", content = "message")]
pub enum Status {
    /// Predicted, and it fits in device memory.
    Ok,
    /// Predicted, but the peak exceeds device memory.
    OutOfMemory,
    /// Not a valid configuration (e.g. seq beyond the model's positions); nothing predicted.
    Invalid(String),
}

/// One evaluated point of the grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Shared by every row of the model (and of the device): a row is built at every point.
    pub model: Arc<str>,
    pub hw: Arc<str>,
    pub method: MethodName,
    pub batch: u64,
    pub seq: u64,
    /// The method's resolved rank (0 for full fine-tuning).
    pub rank: u64,
    /// Trained layers as `lo..hi` (inclusive), or the selection asked for when invalid.
    pub train_layers: Arc<str>,
    pub precision: &'static str,
    #[serde(flatten)]
    pub status: Status,
    pub step_ms: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    /// The training loop's GPU time per step (`Prediction::loop_ms`).
    pub loop_ms: f64,
    pub tokens_per_s: f64,
    pub peak_memory_gib: f64,
    pub trainable_params: u64,
    pub kernels_per_step: u64,
    pub dominant_bound: Option<Bound>,
}

/// A point's rows, one per device: held inline for one device.
type PointRows = smallvec::SmallVec<[Row; 1]>;

/// One streaming of a grid: its number (what a thread's memos and templates are kept for) and
/// the models' and devices' names, shared by their rows.
struct Run {
    id: u64,
    models: Vec<Arc<str>>,
    hws: Vec<Arc<str>>,
}

/// A line's method resolved once, for its other ranks ([`resolve_line`]).
struct LineSpec {
    /// (run, model, method, layer selection): what the method's resolution depends on besides
    /// the rank.
    key: (u64, usize, MethodName, usize),
    spec: MethodSpec,
    /// [`MethodSpec::max_rank`]; 0 for full fine-tuning (which has no rank).
    max_rank: u64,
    /// [`MethodSpec::trainable_params_per_rank`]; for full fine-tuning, all its parameters.
    trainable: u64,
    total: u64,
}

/// `MethodSpec::resolve(g.method, opts, model, true)` and its [`ParamCounts`], the method
/// resolved and its parameters counted once a line (a thread's last): at another rank of the
/// line only the rank differs, and the rank's only checks are r ≥ 1 and
/// r ≤ [`MethodSpec::max_rank`], where an adapter's parameters are r times those per unit of
/// rank ([`MethodSpec::trainable_params_per_rank`]). A rank that fails a check is resolved in
/// full, for its error. (A sweep point resolved and counted in full cost about 1 k instructions,
/// 4% of a rank line's point, callgrind, 2026-12-02.)
fn resolve_line(
    g: &Group,
    opts: &MethodOptions,
    model: &ModelConfig,
    run: &Run,
) -> Result<(MethodSpec, ParamCounts)> {
    thread_local! {
        static LINE: RefCell<Option<LineSpec>> = const { RefCell::new(None) };
    }
    let key = (run.id, g.model, g.method, g.layers);
    // The rank `resolve` gives under `--method all`: the LoRA rank times the matching factor.
    let rank = opts
        .rank
        .unwrap_or(crate::method::PAPER_LORA_RANK)
        .checked_mul(g.method.matched_factor());
    let hit = LINE.with_borrow(|line| {
        let l = line.as_ref().filter(|l| l.key == key)?;
        if l.spec.kind == MethodKind::Full {
            let counts = ParamCounts {
                trainable: l.trainable,
                total: l.total,
            };
            return Some((l.spec.clone(), counts));
        }
        let r = rank.filter(|r| (1..=l.max_rank).contains(r))?;
        let counts = ParamCounts {
            trainable: r * l.trainable,
            total: l.total,
        };
        Some((
            MethodSpec {
                rank: r,
                ..l.spec.clone()
            },
            counts,
        ))
    });
    if let Some(hit) = hit {
        return Ok(hit);
    }
    let spec = MethodSpec::resolve(g.method, opts, model, true)?;
    let counts = ParamCounts::of(model, &spec);
    let line = LineSpec {
        key,
        max_rank: spec.max_rank(model).unwrap_or(0),
        trainable: spec
            .trainable_params_per_rank(model)
            .unwrap_or(counts.trainable),
        total: counts.total,
        spec: spec.clone(),
    };
    LINE.with_borrow_mut(|l| *l = Some(line));
    Ok((spec, counts))
}

/// `lo..hi`, the form of [`Row::train_layers`], shared by the rows of recent points of a thread
/// (a handful of ranges a grid).
fn layer_range((lo, hi): (u32, u32)) -> Arc<str> {
    type Ranges = Vec<((u32, u32), Arc<str>)>;
    thread_local! {
        static RANGES: RefCell<Ranges> = const { RefCell::new(Vec::new()) };
    }
    RANGES.with_borrow_mut(|ranges| {
        if let Some((_, s)) = ranges.iter().find(|(k, _)| *k == (lo, hi)) {
            return s.clone();
        }
        if ranges.len() >= 64 {
            ranges.clear();
        }
        let s: Arc<str> = format!("{lo}..{hi}").into();
        ranges.push(((lo, hi), s.clone()));
        s
    })
}

/// GEMM shapes a worker thread remembers, all devices together (about 2.3 MiB with each shape's
/// tile and split-K configurations, `GemmMemo::DEFAULT_LIMIT`): bounds the memos of
/// a long sweep, which otherwise grow with every distinct batch·seq and rank.
const MEMO_SHAPES_PER_THREAD: usize = 1 << 13;

/// Identifies one [`Grid::stream`]: per-thread GEMM memos from another run (other profiles) are
/// dropped, never reused.
static NEXT_RUN: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Per worker thread: the run the memos belong to, and one GEMM memo per device of its grid.
    static MEMOS: RefCell<(u64, Vec<GemmMemo>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// What a rank template stands for: a point's graph but for its rank.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TemplateKey {
    run: u64,
    model: usize,
    method: MethodName,
    precision: Precision,
    layers: usize,
    batch: u64,
    seq: u64,
}

/// Graphs of one [`TemplateKey`] built so far (up to three, fitted at the line's fourth point:
/// `rescale`).
struct Template {
    key: TemplateKey,
    probes: Vec<(u64, StepGraph)>,
    fit: Option<RankFit>,
    /// The sequence template `fit` was derived from, if it was: a later line of the same key
    /// derives its own into `fit` (`SeqFit::derive_into`) instead of copying the graph.
    from: Option<Arc<SeqFit>>,
    /// Earlier derived rank templates of the key (a line's before it crossed a guard, the
    /// line before's), each with the sequence template it came from, to derive into: at most
    /// [`SPARES`].
    spares: Vec<(RankFit, Arc<SeqFit>)>,
    /// Per device of the grid: the kernel costs there of the first probe, then of the fitted
    /// graph (which starts as that probe).
    costs: Vec<Option<TemplateCosts>>,
    /// Fits refused in a row: after [`MAX_FIT_FAILURES`] the key is built in full.
    failed: u32,
}

/// Spare rank templates a line keeps ([`Template::spares`]): a line crosses a guard or two.
const SPARES: usize = 3;

/// Rank templates a worker thread keeps (a few MB at most): the grid's innermost axes after
/// rank are trained layers, so one per layer selection is live at a time.
const TEMPLATES_PER_THREAD: usize = 8;

/// Ranks a grid needs for rank templates. Each line builds three probes in full and pays for a
/// fit, for keeping the first probe's kernel costs per device and for refilling the rescaled
/// segments; the rescaled points repay that only when there are enough of them. Measured (CPU
/// time, one thread, the 13 260-point grid's models and methods, 2026-11-30): 4 ranks a line
/// 12–16% slower than building every point on one device and 3–5% slower on 13, 5 ranks even
/// (−2% to +4%), 6 ranks and more faster on every device count tried (`MAX_TEMPLATE_DEVICES`).
const MIN_TEMPLATE_RANKS: usize = 6;

/// Devices above which a grid uses no rank templates: a template keeps its kernel costs per
/// device (about 26 KB each for a LoRA graph of llama2-7b, 8 templates a thread), so this bounds
/// a thread's templates to about 7 MB. Not a speed limit any more: a rescaled point, which costs
/// only its changed kernels on each device, now beats a full build at every device count
/// measured (one thread, `sweep_cpu which` at 6, 8 and 12 ranks a line, 2026-11-30: 13 devices
/// 18–48% faster, 8 devices 22–25%, 4 devices 29%). Until then the cap was 4, set when 13
/// devices had measured 8% slower with templates.
const MAX_TEMPLATE_DEVICES: usize = 32;

/// Devices from which a point built in full is costed by classes of equal kernels
/// (`simulate::cost_classes`, found once a point for all its devices). Finding them costs
/// about two devices' savings. Measured (CPU time, one thread, `sweep_cpu which` with its first
/// n GPUs, alternated with the build before): 1 device 17% slower, 2 devices 3–8% slower,
/// 3 even, 4 devices 4–7% faster, 13 devices 17% faster.
const CLASSED_DEVICES: usize = 4;

/// Fits refused in a row after which a template stops collecting probes. After a refusal the
/// oldest probe is dropped and the next point's graph joins the other two, so a guard that
/// compares equal at one probe's rank refuses up to three windows in a row; a line that never
/// fits (a number not affine in the rank) pays this many fits before every point is built.
/// (Counting every refusal and starting three new probes after one, as before, sent lines
/// crossing two guards to full builds for good: gpt2's PaCA lines, some 19% of the issue
/// grid's points.)
const MAX_FIT_FAILURES: u32 = 4;

thread_local! {
    /// Per worker thread: the rank templates of the groups it evaluated last.
    static TEMPLATES: RefCell<Vec<Template>> = const { RefCell::new(Vec::new()) };
}

/// What a sequence template stands for: a rank template's key but for its sequence length,
/// which is 0 ([`TemplateKey::without_seq`]).
type SeqKey = TemplateKey;

impl TemplateKey {
    /// The key of the sequence template of this rank template's lines.
    fn without_seq(self) -> SeqKey {
        TemplateKey { seq: 0, ..self }
    }
}

/// Rank templates of one [`SeqKey`]'s lines fitted so far from probes at rank r₀ (up to
/// [`SEQ_LINES`], then fitted over the sequence length: `rescale::SeqFit`), and the fit, from
/// which the later lines take their rank templates without building probes. A line's first
/// template has the grid's first rank as r₀; a line that crosses a guard fits again past it,
/// at the rank where it was refused, which is the same at every sequence length when the guard
/// does not depend on it (PaCA's gather at K/16 columns): a template of its own.
struct SeqTemplate {
    key: SeqKey,
    r0: u64,
    lines: Vec<(u64, RankFit)>,
    fit: Option<Arc<SeqFit>>,
    /// The last fit that refused a sequence length here: not taken again from
    /// [`SHARED_SEQ_FITS`].
    refused: Option<Arc<SeqFit>>,
    /// Fits refused, and derivations refused, so far: after [`MAX_SEQ_FAILURES`] the key's
    /// lines fit their rank templates at this r₀ from probes.
    failed: u32,
}

/// Sequence templates a worker thread keeps: one or two r₀ per layer selection are live at a
/// time.
const SEQ_TEMPLATES_PER_THREAD: usize = 12;

/// Sequence lengths a grid needs for sequence templates: four lines fit one, so at least two
/// more must use it.
const MIN_SEQ_TEMPLATE_SEQS: usize = SEQ_LINES + 2;

/// Refusals (of a fit, or of a sequence length by a fitted one) after which a sequence
/// template gives up. After a refused fit the oldest line is dropped and the next one joins;
/// after a refused sequence length the fit is dropped and four new lines are collected (the
/// grid has crossed a guard).
const MAX_SEQ_FAILURES: u32 = 4;

/// Sequence templates kept in [`SHARED_SEQ_FITS`] (each a rank template's graph and its
/// polynomials, some 100–300 KB): the grid's keys come in order, so the latest few are live.
const SHARED_SEQ_FITS_KEPT: usize = 24;

thread_local! {
    /// Per worker thread: the sequence templates of the lines it evaluated last.
    static SEQ_TEMPLATES: RefCell<Vec<SeqTemplate>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Per worker thread: rank templates derived from a sequence template.
    static DERIVED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Sequence templates fitted so far, shared by the worker threads, so that a thread whose share
/// of a key's lines starts late (rayon splits each chunk between threads) derives its lines
/// from another's fit instead of fitting its own first: the latest [`SHARED_SEQ_FITS_KEPT`].
static SHARED_SEQ_FITS: Mutex<Vec<(SeqKey, Arc<SeqFit>)>> = Mutex::new(Vec::new());

/// Keep `fit` as the shared sequence template of `key` at its r₀ (replacing an older one).
fn share_seq_fit(key: SeqKey, fit: Arc<SeqFit>) {
    let mut shared = SHARED_SEQ_FITS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    shared.retain(|(k, f)| *k != key || f.r0() != fit.r0());
    if shared.len() >= SHARED_SEQ_FITS_KEPT {
        shared.remove(0);
    }
    shared.push((key, fit));
}

/// Keep a derived rank template as a spare to derive into, the oldest dropped past [`SPARES`].
fn keep_spare(spares: &mut Vec<(RankFit, Arc<SeqFit>)>, fit: RankFit, from: Arc<SeqFit>) {
    if spares.len() >= SPARES {
        spares.remove(0);
    }
    spares.push((fit, from));
}

/// The sequence template of `key` at `r0`, made empty when new (the oldest dropped past
/// [`SEQ_TEMPLATES_PER_THREAD`]).
fn seq_template(templates: &mut Vec<SeqTemplate>, key: SeqKey, r0: u64) -> &mut SeqTemplate {
    let i = match templates.iter().position(|t| t.key == key && t.r0 == r0) {
        Some(i) => i,
        None => {
            if templates.len() >= SEQ_TEMPLATES_PER_THREAD {
                templates.remove(0);
            }
            templates.push(SeqTemplate {
                key,
                r0,
                lines: Vec::with_capacity(SEQ_LINES),
                fit: None,
                refused: None,
                failed: 0,
            });
            templates.len() - 1
        }
    };
    &mut templates[i]
}

/// A rank template for a line's point at rank `r` from a sequence template of its key (this
/// thread's, or one another thread fitted and shared): the one with the largest r₀ from
/// `min_r0` to `r`, when it takes `seq`. A refusal drops that fit here (the grid has crossed a
/// guard: the thread collects lines again).
fn derive_line(
    key: SeqKey,
    seq: u64,
    r: u64,
    min_r0: u64,
    spares: &mut Vec<(RankFit, Arc<SeqFit>)>,
) -> Option<(RankFit, Arc<SeqFit>)> {
    let shared: Vec<Arc<SeqFit>> = {
        let shared = SHARED_SEQ_FITS
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shared
            .iter()
            .filter(|(k, f)| *k == key && (min_r0..=r).contains(&f.r0()))
            .map(|(_, f)| f.clone())
            .collect()
    };
    SEQ_TEMPLATES.with_borrow_mut(|templates| {
        let usable = |f: &Arc<SeqFit>| {
            (min_r0..=r).contains(&f.r0())
                && !templates.iter().any(|t| {
                    t.key == key
                        && t.r0 == f.r0()
                        && (t.failed >= MAX_SEQ_FAILURES
                            || t.refused.as_ref().is_some_and(|x| Arc::ptr_eq(x, f)))
                })
        };
        let best = templates
            .iter()
            .filter(|t| t.key == key)
            .filter_map(|t| t.fit.clone())
            .chain(shared)
            .filter(usable)
            .max_by_key(|f| f.r0())?;
        let t = seq_template(templates, key, best.r0());
        // Into a spare rank template that came from the same fit: no copy of the graph.
        let fit = match spares.iter().position(|(_, from)| Arc::ptr_eq(from, &best)) {
            Some(i) => {
                let (mut f, _) = spares.swap_remove(i);
                best.derive_into(seq, &mut f).map(|()| f)
            }
            None => best.derive(seq),
        };
        match fit {
            Some(f) => {
                #[cfg(test)]
                DERIVED.with(|d| d.set(d.get() + 1));
                t.fit = Some(best.clone());
                Some((f, best))
            }
            None => {
                t.fit = None;
                t.refused = Some(best);
                t.failed += 1;
                None
            }
        }
    })
}

/// Offer a line's rank template, just fitted from its probes (its graph still at r₀), to its
/// sequence template at that r₀: kept while fewer than [`SEQ_LINES`] lines are, then fitted
/// over them and shared with the other threads.
fn offer_line(key: SeqKey, seq: u64, fit: &RankFit) {
    SEQ_TEMPLATES.with_borrow_mut(|templates| {
        let t = seq_template(templates, key, fit.r0());
        if t.fit.is_some() || t.failed >= MAX_SEQ_FAILURES || t.lines.iter().any(|(s, _)| *s == seq)
        {
            return;
        }
        t.lines.push((seq, fit.clone()));
        if t.lines.len() < SEQ_LINES {
            return;
        }
        let lines: Vec<(u64, &RankFit)> = t.lines.iter().map(|(s, f)| (*s, f)).collect();
        match SeqFit::new(&lines) {
            Some(f) => {
                let f = Arc::new(f);
                share_seq_fit(key, f.clone());
                t.fit = Some(f);
                t.lines.clear();
            }
            None => {
                t.failed += 1;
                t.lines.remove(0);
            }
        }
    })
}

/// What a rescaled point's optimizer phase and trainable tensors depend on in a sweep: the
/// model, the resolved method (rank, targets, trained layers) and the workload's precision,
/// optimizer and clipping; not batch or sequence length (`graph::rebuild_optimizer`; a test
/// there checks this). The grid's base workload is fixed for a run, so within a run these are
/// the key's fields, and the method's resolved spec is compared in full besides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct OptimizerKey {
    run: u64,
    model: usize,
    method: MethodName,
    precision: Precision,
    layers: usize,
    rank: Option<u64>,
}

impl OptimizerKey {
    /// The key but for the rank and the trained layers: the grid's innermost axes, so one
    /// stretch of a sweep's points shares it (see [`keep_optimizer`]).
    fn stretch(&self) -> (u64, usize, MethodName, Precision) {
        (self.run, self.model, self.method, self.precision)
    }
}

/// Bytes of optimizer phases and tensor lists a worker thread keeps (all entries together,
/// counted as [`optimizer_bytes`]): 2 MiB, a hundred ranks of LoRA on an 80-layer model (some
/// 1 100 tensors each), which a sweep revisits for every batch and sequence length.
const OPTIMIZER_BYTES_PER_THREAD: usize = 1 << 21;

/// An optimizer phase built for rescaled points of one [`OptimizerKey`], kept for the later
/// points of that key (every batch and sequence length of the grid).
struct OptimizerPhase {
    /// The resolved method it was built for, compared in full.
    spec: MethodSpec,
    tensors: Vec<u64>,
    seg: graph::Segment,
    /// Its costs per device of the grid, filled as each device costs it. They depend on the
    /// phase, the device and the runtime only (the run's workload fixes the runtime).
    costed: Vec<Option<CostedSegment>>,
}

/// What one [`OptimizerPhase`] holds, roughly: its tensor list, kernels, key and the costs kept
/// per device (counted as if every device had costed it: per kernel its host time and cost, and
/// its launch).
fn optimizer_bytes(p: &OptimizerPhase) -> usize {
    let per_device = std::mem::size_of::<Option<CostedSegment>>()
        + p.seg.kernels.len()
            * (std::mem::size_of::<(f64, KernelCost)>() + std::mem::size_of::<(f64, f64, u8)>());
    std::mem::size_of_val(p.tensors.as_slice())
        + p.seg.kernels.len() * std::mem::size_of::<graph::Kernel>()
        + p.costed.len() * per_device
        + std::mem::size_of::<(OptimizerKey, OptimizerPhase)>()
}

/// Optimizer phases a worker thread has built for rescaled points, their [`optimizer_bytes`]
/// together, and the stretch ([`OptimizerKey::stretch`]) whose phases alone fill the budget, if
/// one does.
type Optimizers = (
    rustc_hash::FxHashMap<OptimizerKey, OptimizerPhase>,
    usize,
    Option<(u64, usize, MethodName, Precision)>,
);

thread_local! {
    /// Per worker thread: the optimizer phases of recently rescaled points, by what they depend
    /// on. Rebuilding one walks every trainable tensor for its multi-tensor launch counts.
    static OPTIMIZERS: RefCell<Optimizers> = RefCell::new(Default::default());
}

/// The optimizer phase of `spec` for a rescaled point, taken out of this thread's memo (then
/// lent to the point's graph and given back with [`keep_optimizer`], so it is never copied), or
/// built (`graph::optimizer_phase`).
fn take_optimizer(
    key: OptimizerKey,
    model: &ModelConfig,
    spec: &MethodSpec,
    w: &Workload,
    devices: usize,
) -> OptimizerPhase {
    OPTIMIZERS.with_borrow_mut(|(memo, bytes, _)| {
        if let Some(p) = memo.remove(&key) {
            *bytes -= optimizer_bytes(&p);
            if p.spec == *spec && p.costed.len() == devices {
                return p;
            }
        }
        let (tensors, seg) = graph::optimizer_phase(model, spec, w);
        OptimizerPhase {
            spec: spec.clone(),
            tensors,
            seg,
            costed: vec![None; devices],
        }
    })
}

/// `f` of the optimizer phase of `spec` for a rescaled point: lent in place when this thread's
/// memo holds it for `spec` and `devices` (one lookup; its bytes are counted as if every device
/// had costed it, so lending does not change them), else taken or built ([`take_optimizer`])
/// and given back ([`keep_optimizer`]). Taking a held phase out and putting it back cost a hash
/// removal and an insertion a point (1.2% of a sweep's instructions, callgrind, 2026-12-02).
/// `f` must not use the memo itself.
fn with_optimizer<R>(
    key: OptimizerKey,
    model: &ModelConfig,
    spec: &MethodSpec,
    w: &Workload,
    devices: usize,
    f: impl FnOnce(&mut OptimizerPhase) -> R,
) -> R {
    let mut f = Some(f);
    let lent = OPTIMIZERS.with_borrow_mut(|(memo, _, _)| {
        let p = memo
            .get_mut(&key)
            .filter(|p| p.spec == *spec && p.costed.len() == devices)?;
        f.take().map(|f| f(p))
    });
    if let Some(r) = lent {
        return r;
    }
    let mut phase = take_optimizer(key, model, spec, w, devices);
    let r = f.take().map(|f| f(&mut phase));
    keep_optimizer(key, phase);
    r.expect("called once")
}

/// Give a phase from [`take_optimizer`] back to this thread's memo, within its byte budget.
///
/// When the memo is full, the phases of other stretches (another model, method or precision:
/// the grid has moved on) make room; when the current stretch's phases fill it alone, they are
/// kept and the new one is not. A sweep visits a line's ranks in the same order at every batch
/// and sequence length, so emptying the memo whenever it was full (as before) made every phase
/// a miss once a line had more ranks than the memo holds (1 000 ranks of llama2-7b LoRA: 14.0
/// µs a point, against 5.8 at 100 ranks; one thread, 2026-11-30), where keeping the first ones
/// still hits them.
fn keep_optimizer(key: OptimizerKey, phase: OptimizerPhase) {
    OPTIMIZERS.with_borrow_mut(|(memo, bytes, saturated)| {
        let n = optimizer_bytes(&phase);
        if n > OPTIMIZER_BYTES_PER_THREAD {
            return;
        }
        if *bytes + n > OPTIMIZER_BYTES_PER_THREAD {
            let stretch = key.stretch();
            if *saturated == Some(stretch) {
                return;
            }
            memo.retain(|k, p| {
                let keep = k.stretch() == stretch;
                if !keep {
                    *bytes -= optimizer_bytes(p);
                }
                keep
            });
            if *bytes + n > OPTIMIZER_BYTES_PER_THREAD {
                *saturated = Some(stretch);
                return;
            }
            *saturated = None;
        }
        if let Some(old) = memo.insert(key, phase) {
            *bytes -= optimizer_bytes(&old);
        }
        *bytes += n;
    });
}

/// Points evaluated together before their rows are handed on: large enough to keep every core
/// busy, small enough (a few MB of rows) to keep memory flat.
pub const CHUNK_POINTS: usize = 1 << 14;

/// A chunk's lists ([`Grid::stream_in`]): its groups, each point's rows, and the rows in order.
#[derive(Default)]
struct ChunkBuffers {
    chunk: Vec<Group>,
    points: Vec<PointRows>,
    rows: Vec<Row>,
}

thread_local! {
    /// The storage of the last sweep's chunk lists on this thread (about 7 MB at
    /// [`CHUNK_POINTS`], emptied), for the next sweep: a sweep of 20 000 points that
    /// allocated them afresh first wrote 7 MB of new pages, about 2 000 page faults, which cost
    /// 10–12% of its time in the kernel (system time, `sweep_cpu bsr`, 2026-12-03).
    static CHUNK_BUFFERS: std::cell::RefCell<ChunkBuffers> =
        std::cell::RefCell::new(ChunkBuffers::default());
}

/// One graph group: what `graph::build` depends on.
struct Group {
    model: usize,
    method: MethodName,
    precision: Precision,
    batch: u64,
    seq: u64,
    rank: Option<u64>,
    layers: usize,
}

impl Grid {
    /// Number of points (full fine-tuning counted once per rank-free combination); `u64::MAX`
    /// when the count overflows (see [`Grid::points`]).
    pub fn len(&self) -> u64 {
        self.points().unwrap_or(u64::MAX)
    }

    /// Number of points, counted with checked arithmetic: `None` when it overflows a `u64`.
    pub fn points(&self) -> Option<u64> {
        self.groups_len()?.checked_mul(self.hws.len() as u64)
    }

    /// Whether the grid has no points.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rank values a method takes: full fine-tuning has none.
    fn rank_choices(&self, method: MethodName) -> &[Option<u64>] {
        if method == MethodName::Full {
            &[None]
        } else {
            &self.ranks
        }
    }

    /// Layer selections a method takes: the layer-selective PaCA presets keep their own.
    fn layer_choices(&self, method: MethodName) -> &[Option<LayerSelection>] {
        match method {
            MethodName::PacaUpperHalf | MethodName::PacaThreeQuarters => &[None],
            _ => &self.train_layers,
        }
    }

    fn groups_len(&self) -> Option<u64> {
        let mut per_shape: u64 = 0;
        for &m in &self.methods {
            let n = (self.rank_choices(m).len() as u64)
                .checked_mul(self.layer_choices(m).len() as u64)?;
            per_shape = per_shape.checked_add(n)?;
        }
        [
            self.models.len(),
            self.precisions.len(),
            self.batches.len(),
            self.seqs.len(),
        ]
        .iter()
        .try_fold(per_shape, |acc, &n| acc.checked_mul(n as u64))
    }

    /// The groups in grid order, generated as they are consumed (a sweep never holds them all).
    fn groups(&self) -> impl Iterator<Item = Group> + '_ {
        (0..self.models.len()).flat_map(move |model| {
            self.methods.iter().flat_map(move |&method| {
                self.precisions.iter().flat_map(move |&precision| {
                    self.batches.iter().flat_map(move |&batch| {
                        self.seqs.iter().flat_map(move |&seq| {
                            self.rank_choices(method).iter().flat_map(move |&rank| {
                                (0..self.layer_choices(method).len()).map(move |layers| Group {
                                    model,
                                    method,
                                    precision,
                                    batch,
                                    seq,
                                    rank,
                                    layers,
                                })
                            })
                        })
                    })
                })
            })
        })
    }

    /// Check the grid's shape before evaluating it.
    pub fn check(&self) -> Result<()> {
        let empty = [
            ("--model", self.models.is_empty()),
            ("--hw", self.hws.is_empty()),
            ("--method", self.methods.is_empty()),
            ("--batch", self.batches.is_empty()),
            ("--seq", self.seqs.is_empty()),
            ("--rank", self.ranks.is_empty()),
            ("--train-layers", self.train_layers.is_empty()),
            ("--precision", self.precisions.is_empty()),
        ];
        if let Some((what, _)) = empty.iter().find(|(_, e)| *e) {
            return Err(Error::InvalidArgument {
                what: (*what).into(),
                message: "the sweep needs at least one value".into(),
            });
        }
        // Settings every point shares: a wrong one would make every point it applies to
        // invalid, so it is refused as `predict` refuses it, not printed as rows of the reason.
        let invalid = |what: &str, message: String| {
            Err(Error::InvalidArgument {
                what: what.into(),
                message,
            })
        };
        if self.base.grad_accum == 0 {
            return invalid(
                "--grad-accum",
                "gradient accumulation must be at least 1".into(),
            );
        }
        if let Some(d) = self.options.dropout.filter(|d| !(0.0..1.0).contains(d)) {
            return invalid(
                "--dropout",
                format!("dropout {} is not in [0, 1)", crate::shown(d)),
            );
        }
        let adapters = self.methods.iter().any(|m| *m != MethodName::Full);
        if let Some(a) = self
            .options
            .alpha
            .filter(|a| adapters && !(a.is_finite() && *a > 0.0))
        {
            return invalid(
                "--alpha",
                format!("alpha must be positive, got {}", crate::shown(a)),
            );
        }
        let fix = "narrow a range (a coarser step, e.g. 128..4096:x2) or split the sweep into \
                   several runs";
        let message = match self.points() {
            Some(n) if n <= MAX_POINTS => return Ok(()),
            Some(n) => format!("{n} points is more than the {MAX_POINTS} allowed; {fix}"),
            None => format!(
                "the axes multiply to more than 2^64 points, far more than the {MAX_POINTS} \
                 allowed; {fix}"
            ),
        };
        Err(Error::InvalidArgument {
            what: "sweep".into(),
            message,
        })
    }

    /// Evaluate every point and collect the rows (grid order). Holds every row: for large grids
    /// use [`Grid::stream`].
    pub fn run(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<Vec<Row>> {
        let mut rows = Vec::with_capacity(self.len().min(CHUNK_POINTS as u64) as usize);
        self.stream(progress, |chunk| {
            rows.extend_from_slice(chunk);
            Ok::<(), Error>(())
        })?;
        Ok(rows)
    }

    /// Evaluate every point, handing the rows to `sink` in grid order, a chunk of about
    /// [`CHUNK_POINTS`] at a time: each chunk is evaluated in parallel, then passed on and
    /// dropped, so memory stays flat whatever the grid's size. `progress` is called with the
    /// number of points just finished (from any thread). The first error of `sink` stops the
    /// sweep and is returned.
    pub fn stream<E: From<Error>>(
        &self,
        progress: &(dyn Fn(u64) + Sync),
        sink: impl FnMut(&[Row]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.stream_in(CHUNK_POINTS, progress, sink)
    }

    /// [`Grid::stream`] in chunks of about `chunk_points` points (whole groups, at least one).
    fn stream_in<E: From<Error>>(
        &self,
        chunk_points: usize,
        progress: &(dyn Fn(u64) + Sync),
        mut sink: impl FnMut(&[Row]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.check()?;
        let run = Run {
            id: NEXT_RUN.fetch_add(1, Ordering::Relaxed),
            models: self
                .models
                .iter()
                .map(|m| Arc::from(m.name.as_str()))
                .collect(),
            hws: self
                .hws
                .iter()
                .map(|h| Arc::from(h.name.as_str()))
                .collect(),
        };
        let per_chunk = (chunk_points / self.hws.len().max(1)).max(1);
        let mut groups = self.groups();
        // The chunk's lists, their storage kept from one sweep to the next on this thread.
        let mut bufs = CHUNK_BUFFERS.with_borrow_mut(std::mem::take);
        bufs.chunk.reserve(per_chunk);
        bufs.points.reserve(per_chunk);
        bufs.rows.reserve(per_chunk * self.hws.len());
        let out = self.stream_chunks(&mut groups, per_chunk, &run, progress, &mut sink, &mut bufs);
        // Only the rows hold anything (the run's names); each chunk empties the lists anyway.
        bufs.rows.clear();
        CHUNK_BUFFERS.with_borrow_mut(|held| *held = bufs);
        out
    }

    /// [`Grid::stream_in`]'s loop over chunks of `per_chunk` groups, in `bufs`.
    fn stream_chunks<E: From<Error>>(
        &self,
        groups: &mut impl Iterator<Item = Group>,
        per_chunk: usize,
        run: &Run,
        progress: &(dyn Fn(u64) + Sync),
        sink: &mut impl FnMut(&[Row]) -> std::result::Result<(), E>,
        bufs: &mut ChunkBuffers,
    ) -> std::result::Result<(), E> {
        let ChunkBuffers {
            chunk,
            points,
            rows,
        } = bufs;
        loop {
            chunk.clear();
            chunk.extend(groups.by_ref().take(per_chunk));
            if chunk.is_empty() {
                return Ok(());
            }
            // Each point's rows in place (an indexed collection), then moved into one list, both
            // lists' storage kept from chunk to chunk: a point's rows are not a heap allocation of
            // their own on one device, nor copied as lists of lists are joined (2% of a sweep's
            // instructions, callgrind, 2026-12-02).
            points.clear();
            points.par_extend(chunk.par_iter().map(|g| {
                let rows = self.eval_group(g, run);
                progress(rows.len() as u64);
                rows
            }));
            rows.clear();
            rows.extend(points.drain(..).flatten());
            sink(rows)?;
        }
    }

    fn eval_group(&self, g: &Group, run: &Run) -> PointRows {
        let model = &self.models[g.model];
        let layers = self.layer_choices(g.method)[g.layers];
        let mut opts = self.options.clone();
        opts.rank = g.rank;
        opts.layers = layers;
        let w = Workload {
            batch: g.batch,
            seq: g.seq,
            precision: g.precision,
            ..self.base.clone()
        };
        let resolved = w
            .validate(model)
            .and_then(|()| resolve_line(g, &opts, model, run));
        let (spec, counts) = match resolved {
            Ok(resolved) => resolved,
            Err(e) => {
                return self
                    .hws
                    .iter()
                    .enumerate()
                    .map(|(j, _)| Row {
                        model: run.models[g.model].clone(),
                        hw: run.hws[j].clone(),
                        method: g.method,
                        batch: g.batch,
                        seq: g.seq,
                        // The rank the method would train, as on a valid row: PaCA's matched
                        // column count, not the LoRA reference rank.
                        rank: match g.method {
                            MethodName::Full => 0,
                            m => g
                                .rank
                                .unwrap_or(crate::method::PAPER_LORA_RANK)
                                .saturating_mul(m.matched_factor()),
                        },
                        train_layers: layers
                            .map_or_else(|| "default".into(), |l| l.to_string().into()),
                        precision: g.precision.as_str(),
                        status: Status::Invalid(e.to_string()),
                        step_ms: f64::NAN,
                        forward_ms: f64::NAN,
                        backward_ms: f64::NAN,
                        optimizer_ms: f64::NAN,
                        loop_ms: f64::NAN,
                        tokens_per_s: f64::NAN,
                        peak_memory_gib: f64::NAN,
                        trainable_params: 0,
                        kernels_per_step: 0,
                        dominant_bound: None,
                    })
                    .collect();
            }
        };
        let Some(r) = g.rank.map(|_| spec.rank) else {
            let graph = graph::build(model, &spec, &w);
            return self.rows_of(g, model, &spec, counts, &w, &graph, run);
        };
        if self.ranks.len() < MIN_TEMPLATE_RANKS || self.hws.len() > MAX_TEMPLATE_DEVICES {
            // Too few rescaled points a line, or costing on many devices outweighs the build a
            // template saves: fitting does not pay (measured, see the constants).
            let graph = graph::build(model, &spec, &w);
            return self.rows_of(g, model, &spec, counts, &w, &graph, run);
        }
        let key = TemplateKey {
            run: run.id,
            model: g.model,
            method: g.method,
            precision: g.precision,
            layers: g.layers,
            batch: g.batch,
            seq: g.seq,
        };
        // Sequence templates where enough lines share one.
        let seq_key = (self.seqs.len() >= MIN_SEQ_TEMPLATE_SEQS).then_some(key.without_seq());
        TEMPLATES.with_borrow_mut(|templates| {
            let i = match templates.iter().position(|t| t.key == key) {
                Some(i) => i,
                None => {
                    if templates.len() >= TEMPLATES_PER_THREAD {
                        templates.remove(0);
                    }
                    // A new line: its rank template derived from the sequence template of its
                    // other lines when there is one (no probes built), into the template of
                    // an earlier line of the same key derived from it (that line is done),
                    // costed into that line's kept costs (`TemplateCosts::recycle`).
                    let (mut spares, mut costs) = match templates
                        .iter()
                        .position(|t| t.key.without_seq() == key.without_seq())
                    {
                        Some(j) => {
                            let t = templates.remove(j);
                            let mut spares = t.spares;
                            if let (Some(f), Some(from)) = (t.fit, t.from) {
                                keep_spare(&mut spares, f, from);
                            }
                            (spares, t.costs)
                        }
                        None => (Vec::new(), Vec::new()),
                    };
                    costs.iter_mut().flatten().for_each(TemplateCosts::recycle);
                    let derived = seq_key.and_then(|k| derive_line(k, g.seq, r, 0, &mut spares));
                    let (fit, from) = derived.map_or((None, None), |(f, s)| (Some(f), Some(s)));
                    templates.push(Template {
                        key,
                        probes: Vec::with_capacity(3),
                        fit,
                        from,
                        spares,
                        costs,
                        failed: 0,
                    });
                    templates.len() - 1
                }
            };
            let t = &mut templates[i];
            // Fitted lazily, at the line's fourth point: the first probe's graph becomes the
            // template (moved) and the kernel costs kept per device, the last probe's (they
            // differ from the first's only in kernels the fit rescales, which the first rescaled
            // point costs again), are reused.
            if t.fit.is_none() && t.probes.len() == 3 {
                t.fit = RankFit::from_probes(&mut t.probes);
                if let Some(fit) = &t.fit {
                    t.failed = 0;
                    if let Some(k) = seq_key {
                        offer_line(k, g.seq, fit);
                    }
                } else {
                    // Refused, mostly because the probes straddle a guard or one of them sits
                    // on it (PaCA's gather at exactly K/16 columns): drop the oldest and try
                    // again with the next point's graph, which soon leaves the guard behind.
                    // The kept kernel costs were the dropped probe's: the next fitted graph
                    // is costed afresh.
                    t.failed += 1;
                    t.probes.remove(0);
                    t.costs.iter_mut().for_each(|c| *c = None);
                }
            }
            loop {
                if let Some(fit) = t.fit.as_mut() {
                    if t.costs.len() != self.hws.len() {
                        t.costs.clear();
                        t.costs.resize_with(self.hws.len(), || None);
                    }
                    if fit.apply_for_rows(r).is_some() {
                        let key = OptimizerKey {
                            run: run.id,
                            model: g.model,
                            method: g.method,
                            precision: g.precision,
                            layers: g.layers,
                            rank: g.rank,
                        };
                        // The phase of this rank is lent to the rescaled graph for its rows.
                        let costs = &mut t.costs;
                        return with_optimizer(key, model, &spec, &w, self.hws.len(), |phase| {
                            fit.swap_optimizer(&mut phase.tensors, &mut phase.seg);
                            let opt_costs = &mut phase.costed;
                            let rows = self.rows(
                                g,
                                model,
                                &spec,
                                counts,
                                &w,
                                run,
                                fit.graph(),
                                |j, hw, memo, sum| {
                                    sum(fit.costed(&mut costs[j], &w, hw, memo, &mut opt_costs[j]))
                                },
                            );
                            fit.swap_optimizer(&mut phase.tensors, &mut phase.seg);
                            rows
                        });
                    }
                    // A guard compares differently here: fit again on this side of it, from a
                    // sequence template that starts past the old fit's r₀ when there is one.
                    let r0 = fit.r0();
                    if let (Some(f), Some(from)) = (t.fit.take(), t.from.take()) {
                        keep_spare(&mut t.spares, f, from);
                    }
                    t.costs
                        .iter_mut()
                        .flatten()
                        .for_each(TemplateCosts::recycle);
                    if let Some((f, from)) =
                        seq_key.and_then(|k| derive_line(k, g.seq, r, r0 + 1, &mut t.spares))
                    {
                        t.fit = Some(f);
                        t.from = Some(from);
                        continue;
                    }
                }
                break;
            }
            let graph = graph::build(model, &spec, &w);
            if t.failed >= MAX_FIT_FAILURES {
                return self.rows_of(g, model, &spec, counts, &w, &graph, run);
            }
            // Which kernels to cost again on the costs kept per device: for the first probe all
            // of them (nothing is kept yet: its costs are kept for the template it will become);
            // for a later one those that differ from the probe before it (the adapters), the
            // same numbers as costing the graph afresh, since a kernel's cost is a function of
            // the kernel alone. `None`: no costs are kept (a refused fit dropped them), or the
            // graphs differ in shape.
            let recost = if t.probes.is_empty() {
                t.costs.clear();
                t.costs.resize_with(self.hws.len(), || None);
                Some(Vec::new())
            } else if t.costs.len() == self.hws.len() && t.costs.iter().all(Option::is_some) {
                t.probes
                    .last()
                    .and_then(|(_, before)| differing(&graph, before))
            } else {
                None
            };
            let rows = match recost {
                Some(changed) => {
                    let costs = &mut t.costs;
                    self.rows(
                        g,
                        model,
                        &spec,
                        counts,
                        &w,
                        run,
                        &graph,
                        |j, hw, memo, sum| {
                            sum(cost_kept(
                                &graph,
                                &changed,
                                &mut costs[j],
                                &w,
                                hw,
                                memo,
                                &mut None,
                            ))
                        },
                    )
                }
                None => self.rows_of(g, model, &spec, counts, &w, &graph, run),
            };
            t.probes.push((r, graph));
            rows
        })
    }

    /// The rows of a point on every device, from its built graph.
    #[allow(clippy::too_many_arguments)]
    fn rows_of(
        &self,
        g: &Group,
        model: &ModelConfig,
        spec: &MethodSpec,
        counts: ParamCounts,
        w: &Workload,
        graph: &StepGraph,
        run: &Run,
    ) -> PointRows {
        // On several devices each class of equal kernels is costed once a device (the classes
        // found once): the same costs, so the same rows.
        let classes =
            (self.hws.len() >= CLASSED_DEVICES).then(|| crate::simulate::cost_classes(graph));
        self.rows(g, model, spec, counts, w, run, graph, |_, hw, memo, sum| {
            // `predict_with_graph`'s numbers, without what rows do not show.
            sum(&match &classes {
                Some(c) => crate::simulate::cost_graph_classed(graph, c, w, hw, memo),
                None => crate::simulate::cost_graph_memo(graph, w, hw, memo, false),
            })
        })
    }

    /// The rows of a point on every device: `cost(j, hw, memo, sum)` costs `graph` on device `j`
    /// with that device's GEMM memo and hands the costed graph to `sum`, which simulates it and
    /// takes the point's memory footprint, walked once for every device (only whether it fits
    /// is the device's), to that device. `counts`: [`ParamCounts::of`] the model and method.
    #[allow(clippy::too_many_arguments)]
    fn rows(
        &self,
        g: &Group,
        model: &ModelConfig,
        spec: &MethodSpec,
        counts: ParamCounts,
        w: &Workload,
        run: &Run,
        graph: &StepGraph,
        mut cost: impl FnMut(
            usize,
            &Profile,
            &mut GemmMemo,
            &dyn Fn(&CostedGraph) -> Summary,
        ) -> Summary,
    ) -> PointRows {
        let mem = footprint_counted(model, spec, w, graph, counts);
        let mut predict = |j: usize, hw: &Profile, memo: &mut GemmMemo| {
            let cfg = ConfigRef {
                model,
                method: spec,
                workload: w,
                hw,
            };
            cost(j, hw, memo, &|cg| {
                summarize_with_memory(cfg, graph, cg, &mem, counts.trainable)
            })
        };
        let train_layers = layer_range(spec.trained_layers(model));
        MEMOS.with_borrow_mut(|(id, memos)| {
            if *id != run.id {
                *id = run.id;
                memos.clear();
            }
            // One memo per device, within a budget per thread whatever the number of devices.
            let limit = (MEMO_SHAPES_PER_THREAD / self.hws.len().max(1)).max(256);
            memos.resize_with(self.hws.len(), || GemmMemo::with_limit(limit));
        });
        self.hws
            .iter()
            .enumerate()
            .map(|(j, hw)| {
                let p = MEMOS.with_borrow_mut(|(_, memos)| predict(j, hw, &mut memos[j]));
                let accum = u64::from(w.grad_accum);
                Row {
                    model: run.models[g.model].clone(),
                    hw: run.hws[j].clone(),
                    method: g.method,
                    batch: g.batch,
                    seq: g.seq,
                    rank: spec.rank,
                    train_layers: train_layers.clone(),
                    precision: g.precision.as_str(),
                    status: if p.fits {
                        Status::Ok
                    } else {
                        Status::OutOfMemory
                    },
                    step_ms: p.step_ms,
                    forward_ms: p.forward_ms,
                    backward_ms: p.backward_ms,
                    optimizer_ms: p.optimizer_ms,
                    loop_ms: p.loop_ms,
                    tokens_per_s: p.tokens_per_s,
                    peak_memory_gib: p.peak_memory_bytes / f64::from(1u32 << 30),
                    trainable_params: p.trainable_params,
                    kernels_per_step: accum * (p.kernels.forward + p.kernels.backward)
                        + p.kernels.optimizer,
                    dominant_bound: Some(p.dominant_bound),
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "sweep_tests.rs"]
mod tests;
