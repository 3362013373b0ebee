//! The GEMM tile and wave quantization search: the configurations (output tile, split-K factor)
//! a GEMM may run as, the one a kernel of given bytes is charged least for, and the memo
//! ([`GemmMemo`]) and slots ([`GemmSlot`]) that keep the search from running again for a shape
//! already seen, a sweep's line costing the same GEMMs at every point.
//!
//! t_math for GEMMs follows tile and wave quantization: the output is cut into tiles, one tile
//! per SM per wave, a partly filled last wave costing a full one. Each candidate tile (and split-K
//! factor, for few-tile GEMMs with a long K) is timed and the fastest kept, as cuBLAS heuristics
//! pick one; t_math = waves · 2·tm·tn·(⌈K/split⌉ + K_FILL) / (per-SM achievable rate · tile
//! efficiency), K_FILL the pipeline fill a tile pays once.
//!
//! Sources: the wave-quantisation effect of tiles per SM and the skinny-GEMM regime from the
//! reference note `gpus.md` (docs/sources.md); split-K only while the output leaves SMs idle, as
//! cuBLAS's heuristics do; the candidate tiles' relative efficiencies, the pipeline fill and the
//! split-K rule uncalibrated (docs/model.md, its "GEMM t_math" items); on calibrated CPUs, the
//! per-call row fill and the narrow fills as measured on this project's CPU (docs/validation.md,
//! "A sixth run: GEMMs with few rows" and "A seventh run").

use super::max_of_number;
use crate::graph::Gemm;
use costsim_hardware::{MathMode, Profile};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

/// Candidate output tiles (rows, cols, relative efficiency). Larger tiles reuse operands better;
/// the relative efficiencies are uncalibrated assumptions (docs/model.md).
const TILES: [(u64, u64, f64); 4] = [
    (256, 128, 1.0),
    (128, 128, 0.9),
    (128, 64, 0.8),
    (64, 64, 0.65),
];
const SPLIT_K: [u64; 6] = [1, 2, 4, 8, 16, 32];
/// 2·t_m·t_n of each of [`TILES`]: a tile's FLOPs a k-step.
const TILE_FLOPS: [f64; TILES.len()] = {
    let mut out = [0.0; TILES.len()];
    let mut j = 0;
    while j < TILES.len() {
        out[j] = 2.0 * TILES[j].0 as f64 * TILES[j].1 as f64;
        j += 1;
    }
    out
};
/// Pipeline fill of a tile's main loop, in K elements: each tile pays it once, so splitting a short
/// K gains little. Uncalibrated (docs/model.md). Every candidate is open to every K, which keeps
/// each candidate's charged time, and so their least ([`choose_candidate`]), monotone in m, n
/// and k.
const K_FILL: f64 = 32.0;
/// A GEMM with a dimension at or below this counts as skinny (bandwidth-bound regime).
pub const SKINNY_DIM: u64 = 64;

/// Whether a GEMM is skinny: a dimension at most [`SKINNY_DIM`] (LoRA's rank-r projections and
/// their gradients). Under a CPU profile's row fill only n and k count: few rows of A are the
/// fill's regime, priced by [`gemm_math_time`], not a bandwidth-bound one.
pub fn is_skinny(g: &Gemm, hw: &Profile) -> bool {
    skinny_dims(g.m, g.n, g.k, hw.gemm_fill_rows.is_some())
}

/// [`is_skinny`] by dimensions, `row_fill` saying whether few rows are the fill's regime (what
/// calibration uses to sort its samples before the profile exists).
pub fn skinny_dims(m: u64, n: u64, k: u64, row_fill: bool) -> bool {
    let nk = n.min(k);
    if row_fill {
        nk <= SKINNY_DIM
    } else {
        nk.min(m) <= SKINNY_DIM
    }
}

/// Which [`costsim_hardware::NARROW_CLASSES`] entry a skinny GEMM kernel falls in, with its
/// narrow dimension: the role from the kernel's name (the tracer names nn.Linear's backward
/// products `mm_dX` = dY·W and `mm_dW` = dYᵀ·X, PaCA's partial gradient `mm_dP` = dYᵀ·X[:, idx];
/// any other `mm`/`addmm` is a forward x·Wᵀ), the narrow dimension the smallest of m, n, k
/// (at most [`SKINNY_DIM`]; ties go to n, then k). None for batched products (attention's
/// `bmm`, other layouts), for GEMMs with no dimension ≤ 64, and for narrow rows of a forward or
/// dX product (the row fill's regime).
pub fn narrow_class(name: &str, g: &Gemm) -> Option<(usize, u64)> {
    let role = match name {
        "mm" | "addmm" => 0,
        "mm_dX" => 1,
        "mm_dW" | "mm_dP" => 2,
        _ => return None,
    };
    if g.batch != 1 {
        return None;
    }
    let s = g.m.min(g.n).min(g.k);
    if s > SKINNY_DIM {
        return None;
    }
    let class = if g.n == s {
        [Some(0), Some(2), Some(5)][role]
    } else if g.k == s {
        [Some(1), Some(3), None][role]
    } else {
        [None, None, Some(4)][role]
    };
    class.map(|c| (c, s))
}

/// Math time of a skinny GEMM in a class with a calibrated narrow fill (CPUs):
/// t = 2·m·n·k·(s + s₀)/s / (peak · η) (classed GEMMs have batch 1), s the narrow dimension
/// and s₀ its class's fill (`gemm-narrow-fill`). On this project's CPU (torch 2.11.0, one
/// thread, fp32, cold operands) the same 512 × 8 × 512 product took 99 µs as LoRA's forward
/// x·Aᵀ, 219 µs as B's dX (dY·B, both row-major) and 358 µs as B's dW (dYᵀ·h), where the fp32
/// GEMM rate would give 43 µs (docs/validation.md, "A seventh run"). None when the profile or
/// the class has none.
pub fn narrow_math_time(name: &str, g: &Gemm, mode: MathMode, hw: &Profile) -> Option<f64> {
    let fills = hw.gemm_narrow_fill?;
    let (class, s) = narrow_class(name, g)?;
    let s0 = fills[usize::from(matches!(mode, MathMode::Bf16 | MathMode::Fp16))][class];
    // Classed GEMMs are unbatched (narrow_class): no batch factor.
    let (m, n, k) = (g.m as f64, g.n as f64, g.k as f64);
    let s = s as f64;
    Some(2.0 * m * n * k * (s + s0) / s / (hw.peak_flops(mode) * hw.gemm_efficiency))
}

/// The tile and split-K configurations a GEMM may run as: (math time s, extra bytes split-K
/// adds), one per split-K factor that some tile shape makes worth having (the least math time at
/// that factor), only those that no other configuration beats in both, in increasing split.
///
/// A profile with a per-call fill (`gemm-fill-rows`, calibrated CPUs) has one: t = 2·batch·
/// (m + m₀)·n·k / (peak · η), no extra bytes. A CPU BLAS runs the product in register blocks of
/// a few rows (no waves of tiles over SMs) after packing B once per call, which costs about as
/// much as m₀ more rows; on this project's CPU (torch 2.11.0, one thread) an fp32 GEMM of n·k =
/// 1536·384 ran 87 GFLOP/s at m = 16 against 106 at m = 128, bf16 246 against 460
/// (docs/validation.md, "A sixth run: GEMMs with few rows").
pub fn gemm_candidates(g: &Gemm, mode: MathMode, hw: &Profile) -> Candidates {
    with_extra(&gemm_configs(g, mode, hw), g).collect()
}

/// [`gemm_candidates`] before the extra bytes: (math time s, split-K factor) of each
/// configuration. On a GPU profile (tiles in waves over SMs) these depend on m and n only through
/// ⌈m/64⌉ and ⌈n/64⌉ (every tile side is 64, 128 or 256, and ⌈⌈x/64⌉/j⌉ = ⌈x/64j⌉), which is
/// what lets [`GemmMemo`] share them between shapes; the extra bytes ([`with_extra`]) depend on
/// m·n exactly.
fn gemm_configs(g: &Gemm, mode: MathMode, hw: &Profile) -> Configs {
    let mut out = Configs::EMPTY;
    if let Some(fill) = hw.gemm_fill_rows {
        let m0 = fill[usize::from(matches!(mode, MathMode::Bf16 | MathMode::Fp16))];
        let flops = 2.0 * g.batch as f64 * (g.m as f64 + m0) * g.n as f64 * g.k as f64;
        out.push((flops / (hw.peak_flops(mode) * hw.gemm_efficiency), 1));
        return out;
    }
    let per_sm = hw.peak_flops(mode) * hw.gemm_efficiency / f64::from(hw.sms);
    let sms = u64::from(hw.sms);
    // The least math time at each split-K factor (index into SPLIT_K).
    let mut best = [f64::INFINITY; SPLIT_K.len()];
    for (tm, tn, eff) in TILES {
        // Saturating: beyond u64 the tile count only has to stay "more than the SMs".
        let tiles =
            g.m.div_ceil(tm)
                .saturating_mul(g.n.div_ceil(tn))
                .saturating_mul(g.batch);
        let tile_rate = per_sm * eff;
        for (i, split) in SPLIT_K.into_iter().enumerate() {
            // Split-K only when the output alone leaves SMs idle, as cuBLAS's heuristics do.
            if split > 1 && tiles >= sms {
                break;
            }
            let total = tiles.saturating_mul(split);
            let waves = total.div_ceil(sms) as f64;
            let k_steps = g.k.div_ceil(split) as f64 + K_FILL;
            let tile_flops = 2.0 * tm as f64 * tn as f64 * k_steps;
            let t = waves * tile_flops / tile_rate;
            if t < best[i] {
                best[i] = t;
            }
        }
    }
    // Split-K writes fp32 partial tiles and reads them back to reduce: more traffic with each
    // factor, so a factor is worth keeping only if its math time beats every smaller one's.
    let mut floor = f64::INFINITY;
    for (i, split) in SPLIT_K.into_iter().enumerate() {
        if best[i] < floor {
            floor = best[i];
            out.push((best[i], split as u8));
        }
    }
    out
}

/// The part of a GPU's tile search ([`gemm_configs`]) that does not read k: each tile shape's
/// waves at each split-K factor, and at each factor the tiles that can be the fastest.
///
/// A tile (t_m × t_n, efficiency η) at split s runs w = ⌈tiles·s / SMs⌉ waves of
/// 2·t_m·t_n·(⌈k/s⌉ + K_FILL) FLOPs at (peak·η_gemm / SMs)·η each: its time is
/// c·(⌈k/s⌉ + K_FILL) with c = w·2·t_m·t_n / rate, and ⌈k/s⌉ + K_FILL is the same for every
/// tile, so which tile is fastest at a factor does not depend on k, up to rounding. A tile whose
/// c is within 10⁻⁹ of the least stays a candidate, and a point's times are worked out for the
/// candidates exactly as the full search works them out, in its order: the same configurations
/// bit for bit (a proptest compares the two). A sweep's line changes k at every rank for the
/// GEMMs whose k is the rank (LoRA's B forward, the input gradient through A), and m and n not
/// at all: [`GemmSlot`] keeps this and works out only the k part.
#[derive(Debug, Clone, Copy)]
struct TileSearch {
    /// Waves of each tile (index into [`TILES`]) at each split (index into [`SPLIT_K`]).
    waves: [[f64; SPLIT_K.len()]; TILES.len()],
    /// Each tile's FLOP rate a SM, flop/s.
    rate: [f64; TILES.len()],
    /// At each split, the tiles that may be the fastest, as bits (bit j: `TILES[j]`); none
    /// where no tile may split (each fills the SMs without).
    cands: [u8; SPLIT_K.len()],
}

impl TileSearch {
    /// Relative margin within which a tile's k-free time counts as a tie with the least.
    const TIE: f64 = 1e-9;

    /// The search of `g` in `mode` on a GPU `hw` (one without a per-call fill).
    fn new(g: &Gemm, mode: MathMode, hw: &Profile) -> Self {
        debug_assert!(hw.gemm_fill_rows.is_none());
        let per_sm = hw.peak_flops(mode) * hw.gemm_efficiency / f64::from(hw.sms);
        let sms = u64::from(hw.sms);
        let mut out = TileSearch {
            waves: [[f64::INFINITY; SPLIT_K.len()]; TILES.len()],
            rate: [0.0; TILES.len()],
            cands: [0; SPLIT_K.len()],
        };
        // The k-free time of each tile at each split (∞ where it may not split).
        let mut c = [[f64::INFINITY; SPLIT_K.len()]; TILES.len()];
        for (j, (tm, tn, eff)) in TILES.into_iter().enumerate() {
            // Saturating: beyond u64 the tile count only has to stay "more than the SMs".
            let tiles =
                g.m.div_ceil(tm)
                    .saturating_mul(g.n.div_ceil(tn))
                    .saturating_mul(g.batch);
            out.rate[j] = per_sm * eff;
            for (i, split) in SPLIT_K.into_iter().enumerate() {
                // Split-K only when the output alone leaves SMs idle, as cuBLAS's heuristics do.
                if split > 1 && tiles >= sms {
                    break;
                }
                let total = tiles.saturating_mul(split);
                out.waves[j][i] = total.div_ceil(sms) as f64;
                c[j][i] = out.waves[j][i] * TILE_FLOPS[j] / out.rate[j];
            }
        }
        for (i, cands) in out.cands.iter_mut().enumerate() {
            let least = c.iter().map(|row| row[i]).fold(f64::INFINITY, f64::min);
            if least.is_finite() {
                for (j, row) in c.iter().enumerate() {
                    if row[i] <= least * (1.0 + Self::TIE) {
                        *cands |= 1 << j;
                    }
                }
            }
        }
        out
    }

    /// [`choose_in_split_order`] among `g`'s configurations (at its k), worked out as the
    /// choice goes. Out of line: the sweep's common path, a slot's configurations held, stays
    /// small where it is inlined.
    #[inline(never)]
    fn choose(&self, g: &Gemm, bytes: f64, bw: f64) -> (f64, f64, f64) {
        choose_in_split_order(extra_of(self.iter(g.k), g), bytes, bw)
    }

    /// The configurations at depth `k` ([`gemm_configs`]; the tests compare the two).
    #[cfg(test)]
    fn configs(&self, k: u64) -> Configs {
        let mut out = Configs::EMPTY;
        self.iter(k).for_each(|c| out.push(c));
        out
    }

    /// The configurations at depth `k` as they are worked out, in increasing split: at each
    /// split the least time of its candidate tiles, kept when it beats every smaller split's
    /// (split-K writes fp32 partial tiles and reads them back to reduce: more traffic with each
    /// factor). Lazily, for a choice that stops early ([`choose_in_split_order`]).
    #[inline(always)]
    fn iter(&self, k: u64) -> impl Iterator<Item = (f64, u8)> + '_ {
        let mut floor = f64::INFINITY;
        SPLIT_K
            .into_iter()
            .enumerate()
            .filter_map(move |(i, split)| {
                let mut tiles = self.cands[i];
                if tiles == 0 {
                    return None;
                }
                let k_steps = k.div_ceil(split) as f64 + K_FILL;
                let mut best = f64::INFINITY;
                while tiles != 0 {
                    let j = tiles.trailing_zeros() as usize;
                    tiles &= tiles - 1;
                    // 2·t_m·t_n exact, as the whole search's product of the three is.
                    let tile_flops = TILE_FLOPS[j] * k_steps;
                    let t = self.waves[j][i] * tile_flops / self.rate[j];
                    if t < best {
                        best = t;
                    }
                }
                (best < floor).then(|| {
                    floor = best;
                    (best, split as u8)
                })
            })
    }
}

/// (math time s, extra bytes) of each configuration of `g`: split-K by s adds 2·s·(m·n·batch·4)
/// bytes (fp32 partial tiles written and read back), an unsplit one none.
fn with_extra<'c>(configs: &'c Configs, g: &Gemm) -> impl Iterator<Item = (f64, f64)> + 'c {
    extra_of(configs.iter(), g)
}

/// [`with_extra`] of configurations as they come.
#[inline(always)]
fn extra_of(
    configs: impl Iterator<Item = (f64, u8)>,
    g: &Gemm,
) -> impl Iterator<Item = (f64, f64)> {
    // In f64: m·n·batch can pass 2^64 (2^40 tokens × a 2^24 vocabulary); exact below 2^53.
    let out_bytes = g.m as f64 * g.n as f64 * g.batch as f64 * 4.0;
    configs.map(move |(t, split)| {
        let extra = if split > 1 {
            2.0 * f64::from(split) * out_bytes
        } else {
            0.0
        };
        (t, extra)
    })
}

/// A GEMM's configurations before the extra bytes ([`gemm_configs`]): (math time s, split-K
/// factor), at most one per factor, in increasing factor. Plain arrays (56 bytes, `Copy`): a
/// [`GemmSlot`] takes a copy whenever its kernel's shape changes (a `SmallVec`'s `clone_from`
/// cost about 90 instructions).
#[derive(Debug, Clone, Copy)]
struct Configs {
    t: [f64; SPLIT_K.len()],
    split: [u8; SPLIT_K.len()],
    len: u8,
}

impl Configs {
    const EMPTY: Self = Configs {
        t: [0.0; SPLIT_K.len()],
        split: [0; SPLIT_K.len()],
        len: 0,
    };

    /// Append a configuration; at most one per split-K factor.
    fn push(&mut self, (t, split): (f64, u8)) {
        let i = usize::from(self.len);
        self.t[i] = t;
        self.split[i] = split;
        self.len += 1;
    }

    /// (math time s, split-K factor) of each configuration, in order.
    fn iter(&self) -> impl Iterator<Item = (f64, u8)> + '_ {
        let n = usize::from(self.len);
        self.t[..n]
            .iter()
            .copied()
            .zip(self.split[..n].iter().copied())
    }
}

/// A GEMM's configurations ([`gemm_candidates`]): at most one per split-K factor.
pub type Candidates = SmallVec<[(f64, f64); 6]>;

/// The configuration a kernel of `bytes` (read and written) at bandwidth `bw` (bytes/s) runs
/// as: the one whose time max(math, (bytes + extra) / bw) is least, what the kernel is then
/// charged (its device time adds only constants to that). Choosing by the charged time keeps a
/// GEMM's time monotone in m, n and k: each configuration's time is, and so is their least.
/// (Until 2026-11-30 the choice was by math + extra / bw while the kernel was charged max(math,
/// mem): at near ties a split-K configuration was charged 30% more than the plain one it had
/// beaten, e.g. a 768 × 768 × 5,176 dW on an A100 at 44.74 µs against 34.29 µs at k = 5,184.)
pub fn choose_candidate(cands: &[(f64, f64)], bytes: f64, bw: f64) -> (f64, f64) {
    choose_among(cands.iter().copied(), bytes, bw)
}

/// [`choose_candidate`] over (math time s, extra bytes) as they come.
fn choose_among(cands: impl Iterator<Item = (f64, f64)>, bytes: f64, bw: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, (f64::INFINITY, 0.0));
    for (t, extra) in cands {
        let charged = max_of_number(t, (bytes + extra) / bw);
        if charged < best.0 {
            best = (charged, (t, extra));
        }
    }
    best.1
}

/// [`choose_among`] over configurations in increasing split, as [`gemm_configs`] lists them,
/// whose extra bytes therefore never decrease: once a configuration's memory time reaches its
/// math time it is charged its memory time, and every later one at least that much (its bytes
/// are no fewer, and rounding is monotone), so none after it can be chosen (`choose_among`
/// takes the first least). The same choice in fewer steps: a LoRA adapter's GEMM is
/// memory-bound from its first configuration, and was scanned through six (2026-12-02).
///
/// Returns the chosen configuration's (math time s, extra bytes, memory time s), the last
/// (bytes + extra) / bw as the kernel's cost works it out, so that the kernel does not divide
/// again (a division on the path to its device time, twelve a sweep's point).
fn choose_in_split_order(
    cands: impl Iterator<Item = (f64, f64)>,
    bytes: f64,
    bw: f64,
) -> (f64, f64, f64) {
    let mut best = (f64::INFINITY, (f64::INFINITY, 0.0, f64::INFINITY));
    for (t, extra) in cands {
        let mem = (bytes + extra) / bw;
        let charged = max_of_number(t, mem);
        if charged < best.0 {
            best = (charged, (t, extra, mem));
        }
        if mem >= t {
            break;
        }
    }
    best.1
}

/// Math time of a GEMM under tile and wave quantization, plus the extra bytes split-K adds: the
/// configuration ([`gemm_candidates`]) whose math time plus the extra bytes at the profile's
/// streaming bandwidth is least, what calibration fits a GEMM rate against (a kernel's own cost
/// chooses by its bytes: [`choose_candidate`]).
pub fn gemm_math_time(g: &Gemm, mode: MathMode, hw: &Profile) -> (f64, f64) {
    let bw = hw.achievable_bandwidth_bps();
    let mut best = (f64::INFINITY, f64::INFINITY, 0.0);
    for (t, extra) in gemm_candidates(g, mode, hw) {
        let total = t + extra / bw;
        if total < best.0 {
            best = (total, t, extra);
        }
    }
    (best.1, best.2)
}

/// m, n, k, batch and math mode of a GEMM.
type GemmKey = (u64, u64, u64, u64, u8);

/// GEMM math times already computed on one profile, keyed by shape and math mode. A step graph
/// repeats few shapes (the same projections in every layer class, dX and dW transposes) and a
/// sweep repeats them across points (batch·seq products, ranks that leave base GEMMs alone), so
/// the tile search runs once per distinct shape. On a GPU profile the key holds ⌈m/64⌉ and
/// ⌈n/64⌉, not m and n, which is all the search reads of them (`gemm_configs`): LoRA's
/// A and B GEMMs at ranks 1 to 64 share one search where r is m or n (their extra split-K bytes,
/// which depend on m·n exactly, are added at each lookup, as the search adds them).
///
/// The memo is bounded: once it holds `limit` shapes it starts afresh (a sweep's neighbouring
/// points share shapes, so recent ones are what it needs), which keeps a long sweep's memory flat.
#[derive(Debug, Clone)]
pub struct GemmMemo {
    map: FxHashMap<GemmKey, Configs>,
    limit: usize,
}

impl Default for GemmMemo {
    fn default() -> Self {
        Self::with_limit(Self::DEFAULT_LIMIT)
    }
}

impl GemmMemo {
    /// Shapes a default memo holds (about 2.3 MiB: a table of 16,384 slots of 145 bytes, a key
    /// and its configurations; 1 MiB when it held one time per shape, until 2026-11-30).
    pub const DEFAULT_LIMIT: usize = 1 << 13;

    /// A memo that holds at most `limit` shapes (at least one).
    pub fn with_limit(limit: usize) -> Self {
        Self {
            map: FxHashMap::default(),
            limit: limit.max(1),
        }
    }

    /// Shapes remembered now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `choose_candidate(&gemm_candidates(g, mode, hw), bytes, bw)`, the search remembered, with
    /// the chosen configuration's memory time, (bytes + extra) / bw: (math time s, extra bytes,
    /// memory time s). Only valid for one profile: use one memo per profile.
    pub fn choose(
        &mut self,
        g: &Gemm,
        mode: MathMode,
        hw: &Profile,
        bytes: f64,
        bw: f64,
    ) -> (f64, f64, f64) {
        let key = memo_key(g, mode, hw);
        // One hash lookup for a shape already held (the sweep's hot path); a full memo starts
        // afresh before a new shape goes in.
        self.with_configs(key, g, mode, hw, |configs| {
            choose_in_split_order(with_extra(configs, g), bytes, bw)
        })
    }

    /// [`GemmMemo::choose`] for a kernel that `slot` follows from point to point (a sweep's
    /// representative GEMM, [`GemmSlot`]): the configurations are taken from the slot, without
    /// a hash lookup, while the kernel's key stays the one the slot holds, and looked up in the
    /// memo (and kept in the slot) when it changes.
    ///
    /// Inlined where it is called, its lookup (`GemmMemo::fill_slot`) kept out of line: as a
    /// call of its own, saving and restoring registers and passing its arguments cost about 40
    /// instructions a GEMM (callgrind, 2026-12-02).
    #[inline(always)]
    pub fn choose_in(
        &mut self,
        slot: &mut GemmSlot,
        g: &Gemm,
        mode: MathMode,
        hw: &Profile,
        bytes: f64,
        bw: f64,
    ) -> (f64, f64, f64) {
        let key = memo_key(g, mode, hw);
        if slot.key != Some(key) {
            self.fill_slot(slot, key, g, mode, hw);
        }
        match (&slot.search, slot.lazy) {
            (Some(held), true) => held.1.choose(g, bytes, bw),
            _ => choose_in_split_order(with_extra(&slot.configs, g), bytes, bw),
        }
    }

    /// `slot` given the configurations of `key` (of `g`), looked up in the memo or searched.
    #[cold]
    #[inline(never)]
    fn fill_slot(
        &mut self,
        slot: &mut GemmSlot,
        key: GemmKey,
        g: &Gemm,
        mode: MathMode,
        hw: &Profile,
    ) {
        // On a GPU, a key that differs from the slot's in k alone (a GEMM whose k is the rank)
        // is chosen among the configurations worked out as the choice goes from the k-free
        // part of the search, kept in the slot: no lookup, and often one configuration worked
        // out (an adapter GEMM is memory-bound from the first).
        let class = (key.0, key.1, 0, key.3, key.4);
        let same_class = slot.key.is_some_and(|k| (k.0, k.1, 0, k.3, k.4) == class);
        slot.lazy = same_class && hw.gemm_fill_rows.is_none();
        if slot.lazy {
            match &mut slot.search {
                Some(held) if held.0 == class => {}
                Some(held) => **held = (class, TileSearch::new(g, mode, hw)),
                held => *held = Some(Box::new((class, TileSearch::new(g, mode, hw)))),
            }
        } else {
            self.with_configs(key, g, mode, hw, |c| slot.configs = *c);
        }
        slot.key = Some(key);
    }

    /// `f` of the configurations of the shape `key` (of `g`), searched when not held.
    #[inline(always)]
    fn with_configs<R>(
        &mut self,
        key: GemmKey,
        g: &Gemm,
        mode: MathMode,
        hw: &Profile,
        f: impl FnOnce(&Configs) -> R,
    ) -> R {
        // `get` first: the entry API cost about twice as much for a held shape.
        if let Some(configs) = self.map.get(&key) {
            return f(configs);
        }
        if self.map.len() >= self.limit {
            self.map.clear();
        }
        f(self.map.entry(key).or_insert(gemm_configs(g, mode, hw)))
    }
}

/// A [`GemmMemo`]'s key of `g` in `mode` on `hw`. A profile with a per-call fill (calibrated
/// CPUs) reads m and n exactly; a GPU's search reads ⌈m/64⌉ and ⌈n/64⌉. (A memo serves one
/// profile, so its keys are all of one kind.)
#[inline]
fn memo_key(g: &Gemm, mode: MathMode, hw: &Profile) -> GemmKey {
    let (m, n) = if hw.gemm_fill_rows.is_some() {
        (g.m, g.n)
    } else {
        (g.m.div_ceil(64), g.n.div_ceil(64))
    };
    (m, n, g.k, g.batch, mode as u8)
}

/// The configurations of the last shape one kernel had, kept for [`GemmMemo::choose_in`]: a
/// sweep's line costs the same representative GEMMs at every rank, and most keep their key from
/// one rank to the next (LoRA's A GEMMs at ranks 1 to 64, where r is n and ⌈r/64⌉ stays 1;
/// those where r is k change at every rank). Valid for one profile, as its memo.
#[derive(Debug, Clone)]
pub struct GemmSlot {
    key: Option<GemmKey>,
    configs: Configs,
    /// The k-free part of the search ([`TileSearch`]) of a shape class (the key with k = 0),
    /// on a GPU, once the kernel's k has changed within that class; boxed, as most slots never
    /// need one (240 bytes).
    search: Option<Box<(GemmKey, TileSearch)>>,
    /// Whether the held key's configurations are worked out from `search` at each choice
    /// (`configs` not filled).
    lazy: bool,
}

impl Default for GemmSlot {
    fn default() -> Self {
        Self {
            key: None,
            configs: Configs::EMPTY,
            search: None,
            lazy: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use costsim_hardware::resolve_device;

    #[test]
    fn large_square_gemm_runs_at_the_achievable_rate() {
        // 8192³ on an A100: 2048 tiles of 256×128 in 19 waves over 108 SMs (99.8% full).
        let hw = resolve_device("a100").unwrap();
        let g = Gemm {
            m: 8192,
            n: 8192,
            k: 8192,
            batch: 1,
        };
        let (t, extra) = gemm_math_time(&g, MathMode::Bf16, &hw);
        let ideal = 2.0 * 8192f64.powi(3) / (312e12 * hw.gemm_efficiency);
        let waves = 19.0;
        let expect =
            waves * 2.0 * 256.0 * 128.0 * (8192.0 + K_FILL) / (312e12 * hw.gemm_efficiency / 108.0);
        assert!((t - expect).abs() / expect < 1e-12, "{t} vs {expect}");
        assert!(t / ideal < 1.007 && t >= ideal);
        assert_eq!(extra, 0.0);
    }

    #[test]
    fn a_gemm_past_two_to_the_64_elements_does_not_wrap() {
        // The LM head at the workload cap: 2^40 tokens × a 2^24 vocabulary is 2^64 outputs,
        // which wrapped to 0 in u64 (and panicked in debug builds).
        let hw = resolve_device("h100").unwrap();
        let g = Gemm {
            m: 1 << 40,
            n: 1 << 24,
            k: 4096,
            batch: 1,
        };
        let (t, _) = gemm_math_time(&g, MathMode::Bf16, &hw);
        // At least the ideal time 2·m·n·k / peak (rounded tiles only add).
        let ideal = 2.0 * 2f64.powi(64) * 4096.0 / (hw.peak_bf16_flops * hw.gemm_efficiency);
        assert!(
            t.is_finite() && t >= ideal * (1.0 - 1e-12),
            "{t} vs {ideal}"
        );
    }

    #[test]
    fn partial_last_wave_costs_a_full_wave() {
        // gpus.md: 133 tiles on 132 SMs ≈ 50% efficiency. On an H100 (132 SMs) a GEMM of
        // 133 tiles of 256×128 takes two waves where 132 take one.
        let hw = resolve_device("h100").unwrap();
        let one = Gemm {
            m: 256 * 132,
            n: 128,
            k: 4096,
            batch: 1,
        };
        let two = Gemm {
            m: 256 * 133,
            n: 128,
            k: 4096,
            batch: 1,
        };
        let (t1, _) = gemm_math_time(&one, MathMode::Bf16, &hw);
        let (t2, _) = gemm_math_time(&two, MathMode::Bf16, &hw);
        assert!(t2 / t1 > 1.5, "{t1} {t2}");
    }

    #[test]
    fn a_cpu_row_fill_prices_few_row_gemms_by_hand() {
        // Peaks 200 (fp32) and 800 GFLOP/s (bf16) at efficiency 0.5, so rates of 100 and 400,
        // and fills of 4 and 16 rows: an m = 16 GEMM of n·k = 1536·384 costs
        // 2·(16 + 4)·1536·384 = 23 592 960 FLOP-equivalents in fp32, 235.9296 µs, and
        // 2·(16 + 16)·1536·384 = 37 748 736 in bf16, 94.37184 µs; twice that with batch 2. No
        // tile quantization (the GPU model gives this m = 16 a quarter tile).
        let mut hw = resolve_device("cpu-generic").unwrap();
        hw.peak_fp32_flops = 200e9;
        hw.peak_bf16_flops = 800e9;
        hw.gemm_efficiency = 0.5;
        hw.gemm_fill_rows = Some([4.0, 16.0]);
        let g = Gemm {
            m: 16,
            n: 1536,
            k: 384,
            batch: 1,
        };
        let (t, extra) = gemm_math_time(&g, MathMode::Fp32, &hw);
        assert!((t - 235.9296e-6).abs() < 1e-12, "{t}");
        assert_eq!(extra, 0.0);
        let (t, _) = gemm_math_time(&g, MathMode::Bf16, &hw);
        assert!((t - 94.37184e-6).abs() < 1e-12, "{t}");
        let (t, _) = gemm_math_time(&Gemm { batch: 2, ..g }, MathMode::Fp32, &hw);
        assert!((t - 2.0 * 235.9296e-6).abs() < 1e-12, "{t}");
        // Few rows are the fill's regime, not skinny; a rank-8 n or k is skinny either way.
        assert!(!is_skinny(&Gemm { m: 8, ..g }, &hw));
        assert!(is_skinny(&Gemm { n: 8, ..g }, &hw));
        assert!(is_skinny(&Gemm { k: 8, ..g }, &hw));
        hw.gemm_fill_rows = None;
        assert!(
            is_skinny(&g, &hw),
            "m = 16 ≤ 64 is skinny to the tile model"
        );
        assert!(!is_skinny(&Gemm { m: 128, ..g }, &hw));
        // The tile model prices the same m = 16 GEMM at well under a third of the rate.
        let (t, _) = gemm_math_time(&g, MathMode::Fp32, &hw);
        assert!(t > 3.0 * 2.0 * 16.0 * 1536.0 * 384.0 / 100e9, "{t}");
    }

    #[test]
    fn narrow_classes_follow_the_role_and_the_narrow_dimension() {
        let g = |m, n, k, batch| Gemm { m, n, k, batch };
        // LoRA at rank 8 on a 512 → 1408 linear, 512 tokens: A's forward x·Aᵀ (512 × 8 × 512),
        // B's forward h·Bᵀ (512 × 1408 × 8), B's dX dY·B (512 × 8 × 1408), A's dX dh·A
        // (512 × 512 × 8), A's dW dhᵀ·x (8 × 512 × 512), B's dW dYᵀ·h (1408 × 8 × 512).
        assert_eq!(narrow_class("mm", &g(512, 8, 512, 1)), Some((0, 8)));
        assert_eq!(narrow_class("addmm", &g(512, 1408, 8, 1)), Some((1, 8)));
        assert_eq!(narrow_class("mm_dX", &g(512, 8, 1408, 1)), Some((2, 8)));
        assert_eq!(narrow_class("mm_dX", &g(512, 512, 8, 1)), Some((3, 8)));
        assert_eq!(narrow_class("mm_dW", &g(8, 512, 512, 1)), Some((4, 8)));
        assert_eq!(narrow_class("mm_dW", &g(1408, 8, 512, 1)), Some((5, 8)));
        assert_eq!(narrow_class("mm_dP", &g(1408, 16, 512, 1)), Some((5, 16)));
        // The largest narrow dimension, 64, counts; 65 does not.
        assert_eq!(narrow_class("mm", &g(512, 64, 512, 1)), Some((0, 64)));
        assert_eq!(narrow_class("mm", &g(512, 65, 512, 1)), None);
        // Few rows of a forward or dX product are the row fill's; few tokens in a dW (k) have no
        // class; batched products (attention) have none.
        assert_eq!(narrow_class("mm", &g(8, 512, 512, 1)), None);
        assert_eq!(narrow_class("mm_dX", &g(8, 512, 512, 1)), None);
        assert_eq!(narrow_class("mm_dW", &g(512, 512, 8, 1)), None);
        assert_eq!(narrow_class("mm", &g(512, 8, 512, 2)), None);
        assert_eq!(narrow_class("bmm", &g(512, 8, 512, 1)), None);
        // Ties go to n, then k.
        assert_eq!(narrow_class("mm", &g(8, 8, 8, 1)), Some((0, 8)));
        assert_eq!(narrow_class("mm_dX", &g(8, 16, 8, 1)), Some((3, 8)));
    }

    #[test]
    fn few_tile_long_k_gemm_splits_k_worked_by_hand() {
        // 128×128 output, K = 65536, bf16, on an A100 80GB SXM (108 SMs). Per-SM rate
        // r = 312e12 · η_gemm / 108. Candidates at their best split (all leave SMs idle, so
        // split-K up to 32 is allowed; partials cost 2·s·m·n·4 bytes at the achievable
        // bandwidth):
        //   256×128 (ε 1.0):  1 tile,  s 32 → 1 wave,  2·256·128·(2048+32)/r
        //   128×128 (ε 0.9):  1 tile,  s 32 → 1 wave,  2·128·128·2080/(0.9 r)
        //   128×64  (ε 0.8):  2 tiles, s 32 → 64 < 108: 1 wave, 2·128·64·2080/(0.8 r)
        //   64×64   (ε 0.65): 4 tiles, s 32 → 128: 2 waves; s 16 → 1 wave, 2·64·64·4128/(0.65 r)
        // With r ≈ 2.40e12 (η 0.83): 56.9, 31.6, 17.8 and 21.7 µs: 128×64 at s 32 wins, with
        // 2·32·128·128·4 = 4,194,304 bytes of partials.
        let hw = resolve_device("a100").unwrap();
        let r = hw.peak_bf16_flops * hw.gemm_efficiency / f64::from(hw.sms);
        let g = Gemm {
            m: 128,
            n: 128,
            k: 65536,
            batch: 1,
        };
        let (math, extra) = gemm_math_time(&g, MathMode::Bf16, &hw);
        let want = 2.0 * 128.0 * 64.0 * 2080.0 / (0.8 * r);
        assert!((math - want).abs() < 1e-15, "{math} vs {want}");
        assert_eq!(extra, 4_194_304.0);
        assert!((want - 17.8e-6).abs() < 0.1e-6, "{want}");
    }

    #[test]
    fn gemm_memo_stays_within_its_limit_and_agrees_with_the_search() {
        let hw = resolve_device("a100").unwrap();
        let bw = hw.bandwidth_bps;
        let mut memo = GemmMemo::with_limit(4);
        for m in 1..=10u64 {
            let g = Gemm {
                m: 64 * m,
                n: 4096,
                k: 4096,
                batch: 1,
            };
            // Asked twice: the second answer comes from the memo (or a fresh search after a
            // reset); both equal the search itself.
            for _ in 0..2 {
                for bytes in [0.0, 1e6, 1e9] {
                    let (t, extra, mem) = memo.choose(&g, MathMode::Bf16, &hw, bytes, bw);
                    assert_eq!(
                        (t, extra),
                        choose_candidate(&gemm_candidates(&g, MathMode::Bf16, &hw), bytes, bw)
                    );
                    assert_eq!(mem.to_bits(), ((bytes + extra) / bw).to_bits());
                }
                // It keeps each new shape until it holds 4, then starts afresh.
                assert_eq!(memo.len() as u64, (m - 1) % 4 + 1);
            }
        }
        assert!(!memo.is_empty());
    }

    /// On a GPU the memo keys m and n by ⌈·/64⌉: shapes that share them share one search, and
    /// each still gets exactly the search's own answer, extra split-K bytes included (which
    /// depend on m·n). A calibrated CPU's per-call fill reads m and n exactly: no sharing.
    #[test]
    fn gemm_memo_shares_a_search_between_shapes_of_the_same_tiles() {
        for (device, shared) in [("h200", true), ("cpu-generic", true), ("calibrated", false)] {
            let hw = if device == "calibrated" {
                // A CPU calibrated with a per-call fill (`costsim calibrate`).
                let mut hw = resolve_device("cpu-generic").unwrap();
                hw.gemm_fill_rows = Some([4.0, 16.0]);
                hw
            } else {
                resolve_device(device).unwrap()
            };
            let bw = hw.bandwidth_bps;
            let mut memo = GemmMemo::default();
            let mut shapes = 0;
            for (m, n, k) in [(1, 4096, 4096), (4096, 1, 512), (512, 4096, 16)] {
                for r in 1..=130u64 {
                    // A LoRA-like GEMM with the rank as m, as n, or neither.
                    let g = Gemm {
                        m: if m == 1 { r } else { m },
                        n: if n == 1 { r } else { n },
                        k,
                        batch: 1 + r % 2,
                    };
                    shapes += 1;
                    for bytes in [0.0, 3e5, 7e7] {
                        let want =
                            choose_candidate(&gemm_candidates(&g, MathMode::Bf16, &hw), bytes, bw);
                        let (t, extra, _) = memo.choose(&g, MathMode::Bf16, &hw, bytes, bw);
                        assert_eq!((t, extra), want, "{device} {g:?} {bytes}");
                    }
                }
            }
            // ⌈r/64⌉ ∈ {1, 2, 3} × 2 batches for each of the two rank-dependent families, and
            // one m per batch in the third.
            let want = if shared { 2 * (3 * 2) + 2 } else { 2 * 130 + 2 };
            assert_eq!(memo.len(), want, "{device}: {shapes} shapes");
        }
    }

    /// Split-K is a candidate only while the output's tiles leave SMs idle: 27,904 × 128 on an
    /// A100 is 109 tiles of 256×128 on 108 SMs (two waves, one nearly empty), where splitting k
    /// would cut the math time (4 parts: 3 waves of a quarter of k) but cuBLAS does not split an
    /// output that fills the GPU; the only candidate is unsplit. A batched product's split-K
    /// partials count every matrix: 128 × 128 × 65,536 in 32 parts writes 2 · 32 · 128² · 4 B =
    /// 4,194,304 B of partials, twice that at batch 2.
    #[test]
    fn split_k_only_under_one_wave_and_partials_count_the_batch() {
        let hw = resolve_device("a100").unwrap();
        let g = Gemm {
            m: 256 * 109,
            n: 128,
            k: 8192,
            batch: 1,
        };
        let c = gemm_candidates(&g, MathMode::Bf16, &hw);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].1, 0.0);
        let g = Gemm {
            m: 128,
            n: 128,
            k: 65_536,
            batch: 1,
        };
        assert_eq!(gemm_math_time(&g, MathMode::Bf16, &hw).1, 4_194_304.0);
        let g2 = Gemm { batch: 2, ..g };
        assert_eq!(gemm_math_time(&g2, MathMode::Bf16, &hw).1, 8_388_608.0);
    }

    /// The split-K configurations of a 768 × 768 × 5,184 bf16 GEMM on an A100 (108 SMs, 312
    /// TFLOP/s · 0.83 = 2.398 TFLOP/s per SM, 2,039 GB/s · 0.88 = 1.794 TB/s), worked by hand:
    /// unsplit, 72 tiles of 128×64 (efficiency 0.8) in one wave of 5,184 + 32 k-steps: 44.55 µs
    /// of math, no partials; k in 4 parts, 288 such tiles in 3 waves of 1,296 + 32 k-steps:
    /// 34.03 µs and 2 · 4 · 768² · 4 B = 18.9 MB of fp32 partials; in 8 parts, 36 tiles of
    /// 128×128 (0.9) × 8 in 3 waves of 648 + 32 k-steps: 30.97 µs and 37.7 MB. With the kernel's
    /// own 17.1 MB (`--kernels`), charged max(math, (17.1 MB + partials) / 1.794 TB/s): 44.55,
    /// 34.03 and max(30.97, 30.57) = 30.97 µs; 16 parts would be charged 51.6 µs of traffic.
    /// So the kernel runs in 8 parts, at 30.97 µs. By math + partials alone (the rule before
    /// 2026-11-30) 4 parts and none tie near 44.55 µs, and one k-step less tipped the choice to
    /// the unsplit configuration, charged 10.5 µs more for one token less.
    #[test]
    fn a_gemm_runs_as_the_configuration_it_is_charged_least_for() {
        let hw = resolve_device("a100").unwrap();
        let bw = hw.bandwidth_bps * hw.bandwidth_efficiency;
        let per_sm = hw.peak_bf16_flops * hw.gemm_efficiency / 108.0;
        let at = |k: u64| {
            let g = Gemm {
                m: 768,
                n: 768,
                k,
                batch: 1,
            };
            gemm_candidates(&g, MathMode::Bf16, &hw)
        };
        let c = at(5_184);
        let plain = 2.0 * 128.0 * 64.0 * (5_184.0 + 32.0) / (per_sm * 0.8);
        let split4 = 3.0 * 2.0 * 128.0 * 64.0 * (1_296.0 + 32.0) / (per_sm * 0.8);
        let split8 = 3.0 * 2.0 * 128.0 * 128.0 * (648.0 + 32.0) / (per_sm * 0.9);
        assert!((plain - 44.55e-6).abs() < 0.01e-6, "{plain}");
        assert!((split4 - 34.03e-6).abs() < 0.01e-6, "{split4}");
        assert!((split8 - 30.97e-6).abs() < 0.01e-6, "{split8}");
        for (t, extra) in [(plain, 0.0), (split4, 18_874_368.0), (split8, 37_748_736.0)] {
            assert!(
                c.iter()
                    .any(|&(ct, ce)| (ct - t).abs() < 1e-15 && ce == extra),
                "{t} {extra}: {c:?}"
            );
        }
        let bytes = 17_105_000.0;
        let (t, extra) = choose_candidate(&c, bytes, bw);
        assert!(
            (t - split8).abs() < 1e-15 && extra == 37_748_736.0,
            "{t} {extra}"
        );
        assert!(((bytes + extra) / bw - 30.57e-6).abs() < 0.01e-6);
        // A kernel with few bytes of its own and partials that would dominate runs unsplit
        // when the partials' time exceeds the math saved.
        assert_eq!(
            choose_candidate(&[(1e-6, 0.0), (0.5e-6, 1e9)], 0.0, 1e12),
            (1e-6, 0.0)
        );
        // Charged time, monotone in k over the tie that broke the old rule.
        let charged = |k: u64| {
            let c = at(k);
            let (t, e) = choose_candidate(&c, bytes * k as f64 / 5_184.0, bw);
            t.max((bytes * k as f64 / 5_184.0 + e) / bw)
        };
        let mut last = 0.0;
        for k in 5_150..5_220 {
            let t = charged(k);
            assert!(t >= last, "k = {k}: {t} < {last}");
            last = t;
        }
    }

    /// Tiles tie exactly at some shapes: on an A100 (108 SMs) a 3,648 × 3,776 output takes 5
    /// waves of 256×128 tiles (450 tiles, η 1), 9 of 128×128 (870, η 0.9) and 16 of 128×64
    /// (1,711, η 0.8): 5 · 2 · 256 · 128 = 9 · 2 · 128² / 0.9 = 16 · 2 · 128 · 64 / 0.8 =
    /// 327,680 FLOPs-at-full-rate a k-step for each (64×64: 32 waves, 403,298). Rounding then
    /// decides among the three, differently at different k. Every tied tile stays a candidate,
    /// and every k gives the whole search's configurations.
    #[test]
    fn tiles_that_tie_exactly_all_stay_candidates() {
        let hw = resolve_device("a100").unwrap();
        assert_eq!(hw.sms, 108);
        let g = Gemm {
            m: 3648,
            n: 3776,
            k: 1,
            batch: 1,
        };
        let search = TileSearch::new(&g, MathMode::Bf16, &hw);
        assert_eq!(search.cands[0], 0b0111, "{search:?}");
        let mut firsts = std::collections::BTreeSet::new();
        for k in 1..20_000 {
            let want = gemm_configs(&Gemm { k, ..g }, MathMode::Bf16, &hw);
            let got = search.configs(k);
            assert_eq!(
                got.t[..usize::from(got.len)],
                want.t[..usize::from(want.len)],
                "k {k}"
            );
            assert_eq!(got.split, want.split);
            // Which tied tile is fastest after rounding, k by k.
            let ts: Vec<f64> = (0..3)
                .map(|j| {
                    let (tm, tn, _) = TILES[j];
                    search.waves[j][0] * (2.0 * tm as f64 * tn as f64 * (k as f64 + K_FILL))
                        / search.rate[j]
                })
                .collect();
            let least = ts.iter().copied().fold(f64::INFINITY, f64::min);
            firsts.insert(ts.iter().position(|&t| t == least).unwrap());
        }
        // Rounding picks more than one of them across k: a search that kept only the first
        // (or any one) would differ from the whole one somewhere.
        assert!(firsts.len() > 1, "{firsts:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// The memo's choice, which stops at the first configuration that is memory-bound
        /// (`choose_in_split_order`), is the full scan's over every candidate, on every built-in
        /// profile and a calibrated CPU, for any shape, bytes and bandwidth.
        #[test]
        fn the_memos_early_stop_chooses_what_the_full_scan_does(
            // Few output tiles and a long K, where split-K configurations are kept, or any.
            (m, n) in proptest::prop_oneof![
                (1u64..1 << 11, 1u64..1 << 11),
                (1u64..1 << 20, 1u64..1 << 20),
            ],
            k in 1u64..1 << 20,
            batch in 1u64..4,
            bytes in proptest::prop_oneof![0.0..1e6, 0.0..1e11],
            bw_scale in 1e-3f64..1e3,
            half in proptest::bool::ANY,
        ) {
            let g = Gemm { m, n, k, batch };
            let mode = if half { MathMode::Bf16 } else { MathMode::Fp32 };
            let mut hws = costsim_hardware::builtin_profiles().unwrap();
            let mut calibrated = resolve_device("cpu-generic").unwrap();
            calibrated.gemm_fill_rows = Some([4.0, 16.0]);
            hws.push(calibrated);
            for hw in &hws {
                let bw = hw.bandwidth_bps * bw_scale;
                let want = choose_candidate(&gemm_candidates(&g, mode, hw), bytes, bw);
                let (t, extra, mem) = GemmMemo::default().choose(&g, mode, hw, bytes, bw);
                proptest::prop_assert_eq!((t, extra), want, "{} {:?} {}", hw.name, g, bytes);
                // The memory time is the kernel's own, (bytes + extra) / bw, bit for bit.
                proptest::prop_assert_eq!(mem.to_bits(), ((bytes + extra) / bw).to_bits());
            }
        }

        /// The tile search split in two (`TileSearch`: what does not read k, once a shape;
        /// then k, in full or as a choice goes) gives the configurations the whole search
        /// (`gemm_configs`) gives, bit for bit, on every built-in GPU, for any shape and mode.
        #[test]
        fn the_tile_search_in_two_parts_is_the_whole_one(
            (m, n) in proptest::prop_oneof![
                (1u64..1 << 11, 1u64..1 << 11),
                (1u64..1 << 16, 1u64..1 << 16),
                (1u64..1 << 24, 1u64..1 << 24),
            ],
            ks in proptest::collection::vec(1u64..1 << 22, 1..8),
            batch in 1u64..40,
            half in proptest::bool::ANY,
        ) {
            let mode = if half { MathMode::Bf16 } else { MathMode::Fp32 };
            for hw in costsim_hardware::builtin_profiles().unwrap() {
                if hw.gemm_fill_rows.is_some() {
                    continue;
                }
                let search = TileSearch::new(&Gemm { m, n, k: 1, batch }, mode, &hw);
                for &k in &ks {
                    let g = Gemm { m, n, k, batch };
                    let want = gemm_configs(&g, mode, &hw);
                    let bits = |c: &Configs| {
                        c.iter().map(|(t, s)| (t.to_bits(), s)).collect::<Vec<_>>()
                    };
                    proptest::prop_assert_eq!(
                        bits(&search.configs(k)), bits(&want), "{} {:?}", hw.name, g
                    );
                    // The lazy choice (a slot's k changed) is the memo's over the whole list.
                    for bytes in [0.0, 1e5, 1e9] {
                        let bw = hw.bandwidth_bps;
                        let got = search.choose(&g, bytes, bw);
                        let want = choose_in_split_order(with_extra(&want, &g), bytes, bw);
                        proptest::prop_assert_eq!(
                            (got.0.to_bits(), got.1.to_bits(), got.2.to_bits()),
                            (want.0.to_bits(), want.1.to_bits(), want.2.to_bits())
                        );
                    }
                }
            }
        }

        /// A kernel followed by a [`GemmSlot`] through shapes that change, return and keep their
        /// key (n = r within a ⌈r/64⌉ bucket, k = r not) is charged what a fresh search gives
        /// at each of them, on a GPU and on a calibrated CPU (whose key reads m and n exactly),
        /// the memo shared with other kernels and bounded to a few shapes.
        #[test]
        fn a_slot_follows_its_kernels_shapes(
            shapes in proptest::collection::vec(
                (1u64..200, 1u64..4, proptest::bool::ANY, proptest::bool::ANY),
                1..40,
            ),
            tokens in 1u64..1 << 14,
            limit in 1usize..6,
        ) {
            let mut calibrated = resolve_device("cpu-generic").unwrap();
            calibrated.gemm_fill_rows = Some([4.0, 16.0]);
            for hw in [resolve_device("h200").unwrap(), calibrated] {
                let mut memo = GemmMemo::with_limit(limit);
                let mut slot = GemmSlot::default();
                for &(r, batch, r_is_k, half) in &shapes {
                    let g = if r_is_k {
                        Gemm { m: tokens, n: 4096, k: r, batch }
                    } else {
                        Gemm { m: tokens, n: r, k: 4096, batch }
                    };
                    let mode = if half { MathMode::Bf16 } else { MathMode::Fp32 };
                    let bytes = 2.0 * (tokens * (r + 4096)) as f64;
                    let bw = hw.bandwidth_bps;
                    let want = choose_candidate(&gemm_candidates(&g, mode, &hw), bytes, bw);
                    let (t, extra, _) = memo.choose_in(&mut slot, &g, mode, &hw, bytes, bw);
                    proptest::prop_assert_eq!((t, extra), want, "{} {:?} {:?}", hw.name, g, mode);
                    // Another kernel's shape through the same memo between two of this one's.
                    let other = Gemm { m: tokens, n: 11008, k: 4096 + r, batch: 1 };
                    memo.choose(&other, mode, &hw, bytes, bw);
                }
            }
        }
    }
}
