//! Device time of one kernel on a hardware profile.
//!
//! On a GPU, a kernel queued behind others costs t = max(max(t_math, t_mem) + launches · t_gap,
//! launches · t_floor): the floor is a minimum period, the gap what a queued kernel adds (an
//! H200 measured 1.3 µs and 0.26 µs, scripts/trace/launch_floor.py). On a CPU (no gap in the
//! profile) the floor adds: t = max(t_math, t_mem) + launches · t_floor, where
//! - t_mem = bytes / (bandwidth · efficiency), with the skinny-GEMM efficiency for GEMMs that have
//!   a dimension ≤ 64 (gpus.md: 0.4–0.9 of DRAM bandwidth) and, in calibrated profiles, one
//!   efficiency per memory-bound kernel kind (elementwise, cast, reduction, norm, ...);
//! - t_math for GEMMs follows tile and wave quantization, the fastest tile and split-K
//!   configuration kept, as cuBLAS heuristics pick one: the submodule `gemm` (cost/gemm.rs), with
//!   the memo and slots that keep its search from running again;
//! - t_math for attention is FLOPs / (tensor-core peak · attention efficiency; calibrated profiles
//!   give forward and backward, fp32 and 16-bit their own), for everything else
//!   FLOPs / (fp32 peak · gemm efficiency), which is almost never the bound;
//! - on CPUs calibrated with LoRA's products in nn.Linear's layouts, a skinny GEMM of a classed
//!   role (forward, dX or dW, by its narrow dimension; [`narrow_class`]) takes
//!   t_math = 2·m·n·k·(s + s₀)/s / rate, s the narrow dimension and s₀ its class's
//!   calibrated fill (`gemm-narrow-fill`), since a CPU BLAS runs these at rates set by the
//!   operands' layout more than by their bytes;
//! - on CPUs with a calibrated first-touch rate, a fresh output of at least the allocator's mmap
//!   threshold adds t_touch = bytes_written / first-touch rate (page faults as it is first
//!   written, serial with the op on a CPU): t = max(t_math, t_mem) + t_floor + t_touch;
//! - t_floor is the profile's back-to-back launch floor (or its CUDA-graph replay floor), plus,
//!   for GEMMs in calibrated CPU profiles, the per-call GEMM setup time;
//! - CPUs calibrated with adapter-sized AdamW updates (`optimizer-op-us`): an optimizer op takes
//!   that fixed time in place of the launch floor (docs/model.md, "The optimizer's per-op
//!   cost"); with `optimizer-size-gbps` its bytes go at the rate measured for tensors of its
//!   size ([`size_rate`]).

use crate::graph::{Gemm, Kernel, KernelKind, PACA_IDX, PACA_P};
use crate::workload::DType;
use costsim_hardware::{MathMode, MemKind, Profile};
use serde::Serialize;

mod gemm;

pub use gemm::{
    choose_candidate, gemm_candidates, gemm_math_time, is_skinny, narrow_class, narrow_math_time,
    skinny_dims, Candidates, GemmMemo, GemmSlot, SKINNY_DIM,
};

/// Elementwise kernels that evaluate a transcendental function per element, priced with the
/// profile's `transcendental` efficiency (the `elementwise` one where none is calibrated).
const TRANSCENDENTAL: [&str; 3] = ["tanh", "sin", "cos"];

/// What limits a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
// Eight bytes, so that a `KernelCost` has no padding: copying one copied its seven padding bytes
// too, in loads that straddled the stores before them and could not be forwarded (a stall per
// re-costed kernel in sweeps, `perf`, 2026-11-30).
#[repr(u64)]
pub enum Bound {
    Compute,
    Memory,
    /// The launch floor exceeds both math and memory time.
    Launch,
    /// The GPU waited for the host to issue the kernel.
    Host,
}

impl Bound {
    pub const ALL: [Bound; 4] = [Bound::Compute, Bound::Memory, Bound::Launch, Bound::Host];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compute => "compute",
            Self::Memory => "memory",
            Self::Launch => "launch",
            Self::Host => "host",
        }
    }
}

/// Device-side cost of one kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelCost {
    pub math_s: f64,
    pub mem_s: f64,
    pub floor_s: f64,
    /// max(math, mem) + floor.
    pub device_s: f64,
    /// Device-side bound (compute, memory or launch).
    pub bound: Bound,
}

/// Tiles of causal fused attention over `slices` (batch × head) slices of `seq` queries and
/// keys, as PyTorch's CPU flash attention splits them (aten/src/ATen/native/cpu/
/// FlashAttentionKernel.cpp, forward and backward alike): query blocks of 32 rows below
/// S = 192, 64 below 768, 256 from there, key blocks of 512, and a causal query block only
/// visits the key blocks up to its last row. Each tile runs its own small GEMM calls (two
/// forward, five backward), whose fixed cost per call is what a profile's `attention-tile-us`
/// prices. S = 64: 2 tiles a slice; 128: 4; 256: 4; 512: 8; 1024: 6 (4 + 2).
pub fn attention_tiles(seq: u64, slices: u64) -> f64 {
    let q_split = match seq {
        0..=191 => 32,
        192..=767 => 64,
        _ => 256,
    };
    let mut tiles = 0u64;
    let mut m = 0;
    while m < seq {
        let keys = (m + q_split).min(seq);
        tiles += keys.div_ceil(512);
        m += q_split;
    }
    (tiles * slices) as f64
}

/// The rate of `table` ((tensor bytes, bytes/s), sizes increasing) at a tensor of `bytes`:
/// interpolated linearly in log size between the two sizes around it, the nearest one's
/// outside them.
pub fn size_rate(table: &[(f64, f64)], bytes: f64) -> f64 {
    match table.iter().position(|&(size, _)| size >= bytes) {
        None => table.last().map_or(f64::NAN, |&(_, r)| r),
        Some(0) => table[0].1,
        Some(i) => {
            let ((s0, r0), (s1, r1)) = (table[i - 1], table[i]);
            let f = (bytes / s0).ln() / (s1 / s0).ln();
            r0 + f * (r1 - r0)
        }
    }
}

/// `a.max(b)` for an `a` that is not NaN (a time worked out from finite, validated numbers),
/// without `f64::max`'s handling of a NaN `a`: b when b > a, else a (a NaN b gives a, as
/// `f64::max` does). Bit for bit what `f64::max` gives on x86-64, where LLVM lowers it to
/// `maxsd` (the second operand when the two are equal) plus that handling, five more
/// instructions a call: 1.1% of a sweep's (callgrind, 2026-12-02). (Elsewhere, where a maximum
/// of +0 and −0 may be +0, only the sign of a zero time could differ.)
#[inline(always)]
pub(crate) fn max_of_number(a: f64, b: f64) -> f64 {
    debug_assert!(!a.is_nan());
    if b > a {
        b
    } else {
        a
    }
}

/// Device cost of a kernel. `graph_replay` selects the CUDA-graph launch floor.
pub fn kernel_cost(k: &Kernel, hw: &Profile, graph_replay: bool) -> KernelCost {
    kernel_cost_memo(k, hw, graph_replay, &mut GemmMemo::default())
}

/// [`kernel_cost`] with a memo of GEMM math times for `hw`.
///
/// Reads only these fields of the kernel: name, piece, kind, dtype, math, launches, flops,
/// bytes read and written, and the GEMM shape. A sweep's rank templates share one cost between
/// kernels equal in them (`rescale::same_cost_inputs` lists the same fields; a field read here
/// must be added there; and `simulate::ClassKey`).
///
/// Always inlined: returned through memory, a cost copied on straight away was reloaded in
/// halves that the stores before could not forward (a stall a kernel; `inline` alone left the
/// kernel classes' call out of line: 3–4% of the 13-GPU grid, 2026-11-30).
#[inline(always)]
pub fn kernel_cost_memo(
    k: &Kernel,
    hw: &Profile,
    graph_replay: bool,
    memo: &mut GemmMemo,
) -> KernelCost {
    kernel_cost_by(k, hw, graph_replay, |g, mode, bytes, bw| {
        memo.choose(g, mode, hw, bytes, bw)
    })
}

/// [`kernel_cost_memo`] with a kernel's GEMM configurations kept in `slot` as well
/// ([`GemmMemo::choose_in`]): for a kernel costed again at every point of a sweep's line.
#[inline(always)]
pub fn kernel_cost_slot(
    k: &Kernel,
    hw: &Profile,
    graph_replay: bool,
    memo: &mut GemmMemo,
    slot: &mut GemmSlot,
) -> KernelCost {
    kernel_cost_by(k, hw, graph_replay, |g, mode, bytes, bw| {
        memo.choose_in(slot, g, mode, hw, bytes, bw)
    })
}

/// [`kernel_cost_memo`] with a GEMM's configuration chosen by `choose(shape, mode, bytes,
/// bandwidth)` (math time s, extra bytes, memory time s), as [`GemmMemo::choose`] does.
#[inline(always)]
fn kernel_cost_by(
    k: &Kernel,
    hw: &Profile,
    graph_replay: bool,
    choose: impl FnOnce(&Gemm, MathMode, f64, f64) -> (f64, f64, f64),
) -> KernelCost {
    if k.launches == 0 {
        return KernelCost {
            math_s: 0.0,
            mem_s: 0.0,
            floor_s: 0.0,
            device_s: 0.0,
            bound: Bound::Launch,
        };
    }
    let bytes = k.bytes_read + k.bytes_written;
    let skinny = matches!((k.kind, k.gemm), (KernelKind::Gemm, Some(g)) if is_skinny(&g, hw));
    let half = matches!(k.dtype, DType::Bf16 | DType::F16);
    let mem_kind = match k.kind {
        // Dropout draws a random number per element: on CPUs that, not DRAM, bounds it.
        KernelKind::Elementwise if k.name == "native_dropout" => Some(MemKind::Dropout),
        // tanh (GPT-2's gelu_new) and rope's sin and cos evaluate a transcendental function per
        // element: on CPUs that bounds them (docs/host.md, the op ledger).
        KernelKind::Elementwise if TRANSCENDENTAL.contains(&k.name) => {
            Some(MemKind::Transcendental)
        }
        KernelKind::Elementwise => Some(MemKind::Elementwise),
        KernelKind::Cast => Some(MemKind::Cast),
        KernelKind::Reduction => Some(MemKind::Reduction),
        KernelKind::Norm => Some(MemKind::Norm),
        KernelKind::Softmax => Some(MemKind::Softmax),
        // The gather and scatter efficiencies are those of a strided column access (PaCA's
        // x[..., idx] and its write of s·P into W, priced per touched sector); the embedding's
        // row gather and scatter-add and the loss's fill stream whole rows, like elementwise ops.
        KernelKind::Gather if k.piece == PACA_IDX => Some(MemKind::Gather),
        KernelKind::Scatter if k.piece == PACA_P => Some(MemKind::Scatter),
        KernelKind::Gather | KernelKind::Scatter => Some(MemKind::Elementwise),
        KernelKind::Optimizer => Some(MemKind::Optimizer),
        KernelKind::Gemm | KernelKind::Attention | KernelKind::Host => None,
    };
    let eff = match mem_kind {
        _ if skinny => hw.small_gemm_bandwidth_efficiency,
        Some(m) => hw.kind_bandwidth.get(m, half),
        None => hw.bandwidth_efficiency,
    };
    let bw = match (&hw.optimizer_size_rate, k.kind) {
        // Calibrated CPUs: the optimizer's rate by the size of the tensor the op updates (every
        // single-tensor AdamW op writes exactly that tensor).
        (Some(table), KernelKind::Optimizer) => size_rate(
            &table[usize::from(half)],
            k.bytes_written / f64::from(k.launches),
        ),
        _ => hw.bandwidth_bps * eff,
    };
    // Memory time (bytes + extra) / bw, extra the bytes split-K adds (none but a GEMM's).
    let no_extra = || (bytes + 0.0) / bw;
    let (math_s, mem_s) = match (k.kind, k.gemm) {
        (KernelKind::Gemm, Some(g)) => match narrow_math_time(k.name, &g, k.math, hw) {
            Some(t) => (t, no_extra()),
            // The configuration this kernel runs as, by the time it is charged below.
            None => {
                let (t, _, mem) = choose(&g, k.math, bytes, bw);
                (t, mem)
            }
        },
        (KernelKind::Attention, g) => {
            // FLOPs at the attention rate, plus the profile's fixed time per tile (0 unless
            // calibrated): t = F / (peak · eff) + tiles · c_tile.
            let dir = usize::from(k.name.ends_with("_backward"));
            let prec = usize::from(matches!(k.math, MathMode::Bf16 | MathMode::Fp16));
            let c_tile = hw.attention_tile_s[dir][prec];
            // Count tiles only where they cost something (no built-in profile sets c_tile).
            let tiles_s = match g {
                Some(g) if c_tile > 0.0 => attention_tiles(g.m, g.batch) * c_tile,
                _ => 0.0,
            };
            (
                k.flops / (hw.peak_flops(k.math) * hw.attention_by[dir][prec]) + tiles_s,
                no_extra(),
            )
        }
        _ => (
            k.flops / (hw.peak_fp32_flops * hw.gemm_efficiency),
            no_extra(),
        ),
    };
    let floor = match (k.kind, hw.optimizer_op_s) {
        // Calibrated CPUs: an optimizer op's own fixed time, fitted on adapter-sized AdamW
        // updates, in place of the floor of the memory-bound kinds.
        (KernelKind::Optimizer, Some(op)) => op[usize::from(half)],
        _ if graph_replay => hw.graph_launch_floor_s,
        _ => hw.launch_floor_s,
    };
    let gemm_floor = if k.kind == KernelKind::Gemm {
        hw.gemm_floor_s[usize::from(half)]
    } else {
        0.0
    };
    let floor_s = (floor + gemm_floor) * f64::from(k.launches);
    // CPUs: a fresh output above the allocator's mmap threshold is page-faulted in as it is
    // written, serially with the op (in-place ops, named with a trailing `_`, allocate nothing).
    let touch_s = match hw.first_touch {
        Some((bps, min)) if k.bytes_written >= min && !k.name.ends_with('_') => {
            k.bytes_written / bps
        }
        _ => 0.0,
    };

    let work_s = max_of_number(math_s, mem_s);
    let (device_s, launch_bound) = match hw.kernel_gap_s {
        // GPUs: a queued kernel starts a small gap after the previous one ends, and no kernel
        // takes less than the floor (measured on an H200: max(work + 0.26 µs, 1.3 µs), not
        // work + floor; docs/model.md).
        Some(gap) => {
            let n = f64::from(k.launches);
            let min_period = floor * n;
            let queued = work_s + (gap + gemm_floor) * n;
            (
                max_of_number(queued, min_period) + touch_s,
                min_period > queued,
            )
        }
        _ => (work_s + floor_s + touch_s, floor_s > work_s),
    };
    let bound = if launch_bound {
        Bound::Launch
    } else if math_s >= mem_s {
        Bound::Compute
    } else {
        Bound::Memory
    };
    KernelCost {
        math_s,
        mem_s,
        floor_s,
        device_s,
        bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use costsim_hardware::resolve_device;

    #[test]
    fn rank_r_gemm_is_memory_or_launch_bound() {
        let hw = resolve_device("a100").unwrap();
        // LoRA A: (M=4096, r=8, k=4096) in bf16.
        let mut k = Kernel::new_for_test(KernelKind::Gemm, MathMode::Bf16);
        k.gemm = Some(Gemm {
            m: 4096,
            n: 8,
            k: 4096,
            batch: 1,
        });
        k.flops = 2.0 * 4096.0 * 8.0 * 4096.0;
        k.bytes_read = (4096.0 * 4096.0 + 8.0 * 4096.0) * 2.0;
        k.bytes_written = 4096.0 * 8.0 * 2.0;
        let c = kernel_cost(&k, &hw, false);
        assert_ne!(c.bound, Bound::Compute, "{c:?}");
        // At least the operands over the skinny-GEMM bandwidth (split-K may add partials).
        let mem = (k.bytes_read + k.bytes_written) / (2039e9 * 0.6);
        assert!(c.mem_s >= mem * (1.0 - 1e-12), "{} < {mem}", c.mem_s);
        assert!(c.mem_s > c.math_s);
    }

    /// The calibrated CPU profile committed with the held-out study: per-kind bandwidths, GEMM
    /// setup floors, first-touch cost, attention by direction and dtype, additive floor.
    fn cpu_profile() -> Profile {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/results/cpu/cpu-calibrated.toml");
        costsim_hardware::load_profile(&path).unwrap()
    }

    fn elementwise(name: &'static str, read: f64, written: f64) -> Kernel {
        let mut k = Kernel::new_for_test(KernelKind::Elementwise, MathMode::Fp32);
        k.name = name;
        k.dtype = DType::F32;
        k.bytes_read = read;
        k.bytes_written = written;
        k
    }

    #[test]
    fn a_cpu_narrow_fill_prices_each_class_by_hand() {
        // Rates 100 (fp32) and 400 GFLOP/s (bf16), row fill 4 and 16; narrow fills per class
        // (fp32) 12, 2, 34, 3, 12, 50 and (bf16) 60, 10, 60, 10, 45, 85.
        let mut hw = resolve_device("cpu-generic").unwrap();
        hw.peak_fp32_flops = 200e9;
        hw.peak_bf16_flops = 800e9;
        hw.gemm_efficiency = 0.5;
        hw.gemm_fill_rows = Some([4.0, 16.0]);
        hw.gemm_narrow_fill = Some([
            [12.0, 2.0, 34.0, 3.0, 12.0, 50.0],
            [60.0, 10.0, 60.0, 10.0, 45.0, 85.0],
        ]);
        let g = |m, n, k| Gemm { m, n, k, batch: 1 };
        let t = |name, g: Gemm, mode| narrow_math_time(name, &g, mode, &hw).unwrap();
        // A's forward, 512 × 8 × 512, fp32: 2·512·8·512·(8 + 12)/8 = 10 485 760 → 104.8576 µs.
        let f = t("mm", g(512, 8, 512), MathMode::Fp32);
        assert!((f - 104.8576e-6).abs() < 1e-12, "{f}");
        // B's dX, 512 × 8 × 1408, fp32: 2·512·8·1408·(8 + 34)/8 = 60 555 264 → 605.55264 µs.
        let f = t("mm_dX", g(512, 8, 1408), MathMode::Fp32);
        assert!((f - 605.55264e-6).abs() < 1e-12, "{f}");
        // A's dW, 8 × 512 × 512, bf16: 2·8·512·512·(8 + 45)/8 = 27 787 264 → 69.46816 µs.
        let f = t("mm_dW", g(8, 512, 512), MathMode::Bf16);
        assert!((f - 69.46816e-6).abs() < 1e-12, "{f}");
        // B's forward, 512 × 1408 × 8 (k narrow), fp32: 2·512·1408·8·(8 + 2)/8 = 14 417 920
        // → 144.1792 µs.
        let f = t("addmm", g(512, 1408, 8), MathMode::Fp32);
        assert!((f - 144.1792e-6).abs() < 1e-12, "{f}");
        // A's dX (dx-k) and B's dW (dw-n) in fp32: 2·512·512·8·(8 + 3)/8 → 57.671680 µs;
        // 2·1408·8·512·(8 + 50)/8 = 83 623 936 → 836.23936 µs.
        let f = t("mm_dX", g(512, 512, 8), MathMode::Fp32);
        assert!((f - 57.67168e-6).abs() < 1e-12, "{f}");
        let f = t("mm_dW", g(1408, 8, 512), MathMode::Fp32);
        assert!((f - 836.23936e-6).abs() < 1e-12, "{f}");
        // The whole kernel: math against the skinny bandwidth, plus the floors.
        let mut k = Kernel::new_for_test(KernelKind::Gemm, MathMode::Fp32);
        k.name = "mm";
        k.dtype = DType::F32;
        k.gemm = Some(g(512, 8, 512));
        k.flops = 2.0 * 512.0 * 8.0 * 512.0;
        k.bytes_read = (512.0 * 512.0 + 8.0 * 512.0) * 4.0;
        k.bytes_written = 512.0 * 8.0 * 4.0;
        let c = kernel_cost(&k, &hw, false);
        let mem = (k.bytes_read + k.bytes_written)
            / (hw.bandwidth_bps * hw.small_gemm_bandwidth_efficiency);
        assert!((c.math_s - 104.8576e-6).abs() < 1e-12, "{}", c.math_s);
        assert!((c.mem_s - mem).abs() < 1e-15);
        let floor = hw.launch_floor_s + hw.gemm_floor_s[0];
        assert!((c.device_s - (c.math_s.max(c.mem_s) + floor)).abs() < 1e-15);
        // Without the class fills the same kernel takes the row fill: 2·(512 + 4)·8·512.
        hw.gemm_narrow_fill = None;
        assert_eq!(
            narrow_math_time("mm", &g(512, 8, 512), MathMode::Fp32, &hw),
            None
        );
        let c = kernel_cost(&k, &hw, false);
        assert!((c.math_s - 2.0 * 516.0 * 8.0 * 512.0 / 100e9).abs() < 1e-15);
    }

    #[test]
    fn cpu_costs_add_floor_and_first_touch_and_use_each_kind_s_bandwidth() {
        let hw = cpu_profile();
        assert!(hw.kernel_gap_s.is_none());
        let (bps, min) = hw.first_touch.unwrap();
        let mib = 1024.0 * 1024.0;
        // A fresh 64 MiB output (over the 32 MiB threshold): memory time at the elementwise fp32
        // bandwidth, plus the floor, plus 64 MiB over the first-touch rate.
        let k = elementwise("add", 128.0 * mib, 64.0 * mib);
        let c = kernel_cost(&k, &hw, false);
        let bw = hw.bandwidth_bps * hw.kind_bandwidth.get(MemKind::Elementwise, false);
        let mem = 192.0 * mib / bw;
        assert!((c.mem_s - mem).abs() < 1e-15);
        assert!((c.device_s - (mem + hw.launch_floor_s + 64.0 * mib / bps)).abs() < 1e-12);
        assert!(64.0 * mib >= min);
        // In place (trailing `_`): nothing is allocated, no first touch.
        let c = kernel_cost(&elementwise("add_", 128.0 * mib, 64.0 * mib), &hw, false);
        assert!((c.device_s - (mem + hw.launch_floor_s)).abs() < 1e-12);
        // Below the threshold: no first touch either.
        let small = elementwise("add", 32.0, 16.0 * mib);
        let c = kernel_cost(&small, &hw, false);
        let mem = (32.0 + 16.0 * mib) / bw;
        assert!((c.device_s - (mem + hw.launch_floor_s)).abs() < 1e-12);
        // Dropout is bounded by its own (random-number) rate, in the input's dtype.
        let mut d = elementwise("native_dropout", 64.0, 64.0);
        d.dtype = DType::Bf16;
        let c = kernel_cost(&d, &hw, false);
        let bw = hw.bandwidth_bps * hw.kind_bandwidth.get(MemKind::Dropout, true);
        assert!((c.mem_s - 128.0 / bw).abs() < 1e-18);
        assert_ne!(
            hw.kind_bandwidth.get(MemKind::Dropout, true),
            hw.kind_bandwidth.get(MemKind::Elementwise, true)
        );
        // tanh, sin and cos (fp32, 64 B read and 64 written) at the transcendental efficiency,
        // set by hand to 0.05 against elementwise's 0.8; tanh's backward (1 − y²)·g is plain
        // arithmetic and stays elementwise.
        let mut hw = hw;
        let (t, e) = (
            MemKind::Transcendental as usize,
            MemKind::Elementwise as usize,
        );
        hw.kind_bandwidth.fp32[e] = 0.8;
        hw.kind_bandwidth.fp32[t] = 0.05;
        for (name, eff) in [
            ("tanh", 0.05),
            ("sin", 0.05),
            ("cos", 0.05),
            ("tanh_backward", 0.8),
        ] {
            let c = kernel_cost(&elementwise(name, 64.0, 64.0), &hw, false);
            let want = 128.0 / (hw.bandwidth_bps * eff);
            assert!(
                (c.mem_s - want).abs() < 1e-18,
                "{name}: {} vs {want}",
                c.mem_s
            );
        }
    }

    #[test]
    fn attention_tiles_follow_pytorch_s_cpu_blocking() {
        // Query blocks of 32 rows below S = 192: S = 32 one, 64 two, 128 four, 191 six.
        assert_eq!(attention_tiles(32, 1), 1.0);
        assert_eq!(attention_tiles(64, 1), 2.0);
        assert_eq!(attention_tiles(128, 3), 12.0);
        assert_eq!(attention_tiles(191, 1), 6.0);
        // 64 rows from 192: S = 192 three blocks, 256 four, 512 eight; 767: 12 blocks, the
        // last four (rows 512..767) reaching past key 512: 8 + 4 · 2 = 16.
        assert_eq!(attention_tiles(192, 1), 3.0);
        assert_eq!(attention_tiles(256, 2), 8.0);
        assert_eq!(attention_tiles(512, 1), 8.0);
        assert_eq!(attention_tiles(767, 1), 16.0);
        // 256 rows from 768: S = 1024 four blocks, keys up to 256, 512, 768, 1024: 1 + 1 + 2 + 2.
        assert_eq!(attention_tiles(1024, 1), 6.0);
        assert_eq!(attention_tiles(0, 5), 0.0);
    }

    #[test]
    fn attention_pays_its_flops_and_a_fixed_time_per_tile() {
        // A bf16 SDPA backward over 4 × 8 = 32 slices of 128 × 128 × 64 (2.5 · 2 · 32 · 128² ·
        // 64 = 167.8 M FLOP) on the CPU profile, with 45 µs a tile: 4 query blocks of 32 rows
        // a slice, one key block each, 128 tiles: F / (peak · eff) + 128 · 45 µs.
        let mut hw = cpu_profile();
        hw.attention_tile_s[1][1] = 45e-6;
        let mut k = Kernel::new_for_test(KernelKind::Attention, MathMode::Bf16);
        k.name = "scaled_dot_product_attention_backward";
        k.flops = 2.5 * 2.0 * 32.0 * 128.0 * 128.0 * 64.0;
        k.gemm = Some(Gemm {
            m: 128,
            n: 128,
            k: 64,
            batch: 32,
        });
        let flops_s = k.flops / (hw.peak_bf16_flops * hw.attention_by[1][1]);
        let c = kernel_cost(&k, &hw, false);
        assert!(
            (c.math_s - (flops_s + 128.0 * 45e-6)).abs() < 1e-12,
            "{}",
            c.math_s
        );
        // The forward's and fp32's tile costs are their own (0 here).
        k.name = "scaled_dot_product_attention";
        let c = kernel_cost(&k, &hw, false);
        let fwd_s = k.flops / (hw.peak_bf16_flops * hw.attention_by[0][1]);
        assert!((c.math_s - fwd_s).abs() < 1e-12);
        // Without a shape there are no tiles to charge.
        k.name = "scaled_dot_product_attention_backward";
        k.gemm = None;
        assert!((kernel_cost(&k, &hw, false).math_s - flops_s).abs() < 1e-12);
    }

    #[test]
    fn strided_paca_kernels_use_gather_and_scatter_rates_row_kernels_the_elementwise_one() {
        let hw = cpu_profile();
        let bw = |m: MemKind| hw.bandwidth_bps * hw.kind_bandwidth.get(m, true);
        // 1 MiB read and 1 MiB written by bf16 kernels of each kind and piece.
        let mib = 1024.0 * 1024.0;
        let cases = [
            (KernelKind::Gather, "paca_idx", MemKind::Gather),
            (KernelKind::Scatter, "paca_P", MemKind::Scatter),
            // The embedding's row gather and scatter-add, the loss's fill: no piece.
            (KernelKind::Gather, "", MemKind::Elementwise),
            (KernelKind::Scatter, "", MemKind::Elementwise),
        ];
        for (kind, piece, mem) in cases {
            let mut k = Kernel::new_for_test(kind, MathMode::Fp32);
            k.piece = piece;
            k.bytes_read = mib;
            k.bytes_written = mib;
            let c = kernel_cost(&k, &hw, false);
            assert!(
                (c.mem_s - 2.0 * mib / bw(mem)).abs() < 1e-15,
                "{kind:?} {piece:?}: {} s",
                c.mem_s
            );
        }
        // The three rates differ in this profile, so the cases above tell them apart.
        assert!(bw(MemKind::Gather) != bw(MemKind::Elementwise));
        assert!(bw(MemKind::Scatter) != bw(MemKind::Elementwise));
    }

    #[test]
    fn cpu_gemm_pays_its_setup_floor_per_dtype_and_attention_its_own_efficiency() {
        let hw = cpu_profile();
        let mut k = Kernel::new_for_test(KernelKind::Gemm, MathMode::Bf16);
        k.dtype = DType::Bf16;
        k.gemm = Some(Gemm {
            m: 8,
            n: 8,
            k: 8,
            batch: 1,
        });
        k.flops = 2.0 * 512.0;
        k.bytes_read = 256.0;
        k.bytes_written = 128.0;
        let c = kernel_cost(&k, &hw, false);
        // floor_s carries the launch floor plus the bf16 GEMM setup (20.836 µs), once per launch.
        assert!((c.floor_s - (hw.launch_floor_s + hw.gemm_floor_s[1])).abs() < 1e-15);
        assert!((hw.gemm_floor_s[1] - 20.836e-6).abs() < 1e-12);
        assert!((c.device_s - (c.math_s.max(c.mem_s) + c.floor_s)).abs() < 1e-15);
        // Attention: forward and backward, fp32 and bf16, each its own efficiency.
        for (name, dir) in [
            ("scaled_dot_product_attention", 0),
            ("scaled_dot_product_attention_backward", 1),
        ] {
            for (math, prec) in [(MathMode::Fp32, 0), (MathMode::Bf16, 1)] {
                let mut a = Kernel::new_for_test(KernelKind::Attention, math);
                a.name = name;
                a.flops = 1e9;
                let c = kernel_cost(&a, &hw, false);
                let want = 1e9 / (hw.peak_flops(math) * hw.attention_by[dir][prec]);
                assert!((c.math_s - want).abs() < 1e-15, "{name} {math:?}");
            }
        }
    }

    #[test]
    fn a_multi_launch_op_pays_floor_and_gap_per_launch() {
        // Three launches (a foreach op's chunks, an SDPA backward): a tiny one costs three
        // minimum periods, a large one its work plus three gaps.
        let hw = resolve_device("a100").unwrap();
        let mut k = Kernel::new_for_test(KernelKind::Elementwise, MathMode::Fp32);
        k.launches = 3;
        k.bytes_read = 8.0;
        let c = kernel_cost(&k, &hw, false);
        assert_eq!(c.bound, Bound::Launch);
        assert!((c.device_s - 3.0 * 1.3e-6).abs() < 1e-15, "{c:?}");
        k.bytes_read = 1e9;
        let c = kernel_cost(&k, &hw, false);
        assert_eq!(c.bound, Bound::Memory);
        assert!(
            (c.device_s - (c.mem_s + 3.0 * 0.26e-6)).abs() < 1e-15,
            "{c:?}"
        );
    }

    #[test]
    fn bound_names_are_the_documented_ones() {
        let names: Vec<&str> = Bound::ALL.iter().map(|b| b.as_str()).collect();
        assert_eq!(names, ["compute", "memory", "launch", "host"]);
    }

    #[test]
    fn tiny_elementwise_is_launch_bound() {
        // 8 bytes: the work is nothing, the kernel costs the floor (1.3 µs minimum period).
        let hw = resolve_device("a100").unwrap();
        let mut k = Kernel::new_for_test(KernelKind::Elementwise, MathMode::Fp32);
        k.bytes_read = 4.0;
        k.bytes_written = 4.0;
        let c = kernel_cost(&k, &hw, false);
        assert_eq!(c.bound, Bound::Launch);
        assert!((c.device_s - 1.3e-6).abs() < 1e-12, "{c:?}");
    }

    #[test]
    fn a_long_queued_kernel_pays_the_gap_not_the_floor() {
        // 400 MB streamed on an A100 80GB (2039 GB/s × its elementwise efficiency): the floor
        // is a minimum period, so the kernel costs its memory time plus the 0.26 µs gap — what
        // the H200 measurement shows (92.38 µs duration, 92.67 µs period for 400 MB).
        let hw = resolve_device("a100").unwrap();
        let mut k = Kernel::new_for_test(KernelKind::Elementwise, MathMode::Fp32);
        k.bytes_read = 268_435_456.0;
        k.bytes_written = 134_217_728.0;
        let c = kernel_cost(&k, &hw, false);
        assert_eq!(c.bound, Bound::Memory);
        assert!((c.device_s - (c.mem_s + 0.26e-6)).abs() < 1e-15, "{c:?}");
        // On a CPU profile (no gap) the floor adds.
        let cpu = resolve_device("cpu-generic").unwrap();
        let c = kernel_cost(&k, &cpu, false);
        assert!((c.device_s - (c.mem_s.max(c.math_s) + cpu.launch_floor_s)).abs() < 1e-15);
    }

    #[test]
    fn cpu_optimizer_ops_take_the_calibrated_op_time_in_place_of_the_floor() {
        // Launch floor 5 µs; optimizer op time 0.6 µs (fp32) and 0.7 µs (bf16). An addcdiv_
        // over 3 launches of a 1 000-element tensor: 3 × 16 000 B (fp32) at the optimizer
        // kind's bandwidth, plus 3 × 0.6 µs; in bf16 half the bytes plus 3 × 0.7 µs.
        let mut hw = resolve_device("cpu-generic").unwrap();
        hw.launch_floor_s = 5e-6;
        let opt = |dtype: DType| {
            let mut k = Kernel::new_for_test(KernelKind::Optimizer, MathMode::Fp32);
            k.name = "addcdiv_";
            k.dtype = dtype;
            let size = if dtype == DType::Bf16 { 2.0 } else { 4.0 };
            k.bytes_read = 3.0 * 3000.0 * size;
            k.bytes_written = 3000.0 * size;
            k.launches = 3;
            k
        };
        let bw = |half: bool| hw.bandwidth_bps * hw.kind_bandwidth.get(MemKind::Optimizer, half);
        let (f32_mem, bf16_mem) = (48_000.0 / bw(false), 24_000.0 / bw(true));
        // Without the calibration: the launch floor.
        let c = kernel_cost(&opt(DType::F32), &hw, false);
        assert!((c.device_s - (f32_mem + 15e-6)).abs() < 1e-15, "{c:?}");
        hw.optimizer_op_s = Some([0.6e-6, 0.7e-6]);
        let c = kernel_cost(&opt(DType::F32), &hw, false);
        assert!((c.mem_s - f32_mem).abs() < 1e-18, "{c:?}");
        assert!((c.floor_s - 1.8e-6).abs() < 1e-18, "{c:?}");
        assert!((c.device_s - (f32_mem + 1.8e-6)).abs() < 1e-15, "{c:?}");
        let c = kernel_cost(&opt(DType::Bf16), &hw, false);
        assert!((c.device_s - (bf16_mem + 2.1e-6)).abs() < 1e-15, "{c:?}");
        // Other kinds keep the launch floor.
        let e = elementwise("add_", 8.0, 4.0);
        let mut plain = hw.clone();
        plain.optimizer_op_s = None;
        assert_eq!(kernel_cost(&e, &hw, false), kernel_cost(&e, &plain, false));
    }

    #[test]
    fn size_rates_interpolate_in_log_size_and_hold_at_the_ends() {
        // 1 MiB at 30 GB/s, 16 MiB at 20 GB/s: 4 MiB lies halfway in log size (25 GB/s).
        let t = [(1048576.0, 30e9), (16.0 * 1048576.0, 20e9)];
        assert_eq!(size_rate(&t, 1048576.0), 30e9);
        assert!((size_rate(&t, 4.0 * 1048576.0) - 25e9).abs() < 1e-3);
        assert_eq!(size_rate(&t, 16.0 * 1048576.0), 20e9);
        assert_eq!(size_rate(&t, 1024.0), 30e9);
        assert_eq!(size_rate(&t, 1e12), 20e9);
        // An optimizer op of 3 launches on a 4 MiB fp32 tensor: its bytes at 25 GB/s.
        let mut hw = resolve_device("cpu-generic").unwrap();
        hw.optimizer_size_rate = Some([t.to_vec(), t.to_vec()]);
        let mut k = Kernel::new_for_test(KernelKind::Optimizer, MathMode::Fp32);
        k.name = "mul_";
        k.dtype = DType::F32;
        k.launches = 3;
        k.bytes_read = 3.0 * 4.0 * 1048576.0;
        k.bytes_written = 3.0 * 4.0 * 1048576.0;
        let c = kernel_cost(&k, &hw, false);
        assert!((c.mem_s - 24.0 * 1048576.0 / 25e9).abs() < 1e-12, "{c:?}");
        // Other kinds keep their bandwidth.
        let e = elementwise("add_", 8.0 * 1048576.0, 4.0 * 1048576.0);
        let mut plain = hw.clone();
        plain.optimizer_size_rate = None;
        assert_eq!(kernel_cost(&e, &hw, false), kernel_cost(&e, &plain, false));
    }

    #[test]
    fn graph_replay_pays_the_graph_floor_and_optimizer_ops_their_own_either_way() {
        // Launch floor 5 µs, CUDA-graph replay floor 1 µs, optimizer op time 0.6 µs, on an
        // additive-floor profile: a tiny elementwise kernel pays the floor of its launch mode,
        // an optimizer op its own time in both.
        let mut hw = resolve_device("cpu-generic").unwrap();
        hw.launch_floor_s = 5e-6;
        hw.graph_launch_floor_s = 1e-6;
        hw.optimizer_op_s = Some([0.6e-6, 0.6e-6]);
        let e = elementwise("add_", 8.0, 4.0);
        let eager = kernel_cost(&e, &hw, false);
        let graph = kernel_cost(&e, &hw, true);
        assert!(
            (eager.device_s - eager.mem_s - 5e-6).abs() < 1e-18,
            "{eager:?}"
        );
        assert!(
            (graph.device_s - graph.mem_s - 1e-6).abs() < 1e-18,
            "{graph:?}"
        );
        let mut k = Kernel::new_for_test(KernelKind::Optimizer, MathMode::Fp32);
        k.dtype = DType::F32;
        k.bytes_read = 8.0;
        k.bytes_written = 4.0;
        for replay in [false, true] {
            let c = kernel_cost(&k, &hw, replay);
            assert!((c.floor_s - 0.6e-6).abs() < 1e-18, "{replay}: {c:?}");
        }
    }

    /// What cargo-mutants found unchecked in `kernel_cost_memo` (2026-11-30): the math time of
    /// a kernel that is neither a GEMM nor attention, split-K's partials in a GEMM's memory
    /// time, a GEMM floor and a first touch on a GPU's queued path, and the launch bound at its
    /// tie on both paths, each by hand.
    #[test]
    fn kernel_costs_by_hand_where_no_built_in_profile_goes() {
        let h200 = resolve_device("h200").unwrap();
        // A compute-heavy elementwise op (1 TFLOP over 8 bytes): its math time is the FLOPs at
        // the fp32 peak times the GEMM efficiency, and it is compute-bound.
        let mut k = elementwise("pow", 4.0, 4.0);
        k.flops = 1e12;
        let c = kernel_cost(&k, &h200, false);
        let math = 1e12 / (h200.peak_fp32_flops * h200.gemm_efficiency);
        assert!((c.math_s - math).abs() < 1e-15, "{c:?}");
        assert_eq!(c.bound, Bound::Compute);
        // One output tile, a long K: the configuration it runs as writes split-K partials,
        // and its memory time counts them, (bytes + partials) / bandwidth.
        let g = Gemm {
            m: 128,
            n: 128,
            k: 1 << 20,
            batch: 1,
        };
        let mut k = Kernel::new_for_test(KernelKind::Gemm, MathMode::Bf16);
        k.name = "mm";
        k.gemm = Some(g);
        k.flops = 2.0 * 128.0 * 128.0 * (1u64 << 20) as f64;
        k.bytes_read = 2.0 * 2.0 * 128.0 * (1u64 << 20) as f64;
        k.bytes_written = 2.0 * 128.0 * 128.0;
        let bytes = k.bytes_read + k.bytes_written;
        let bw = h200.bandwidth_bps * h200.bandwidth_efficiency;
        assert!(!is_skinny(&g, &h200));
        let (t, extra) = choose_candidate(&gemm_candidates(&g, MathMode::Bf16, &h200), bytes, bw);
        assert!(extra > 0.0, "split-K chosen: {t} {extra}");
        let c = kernel_cost(&k, &h200, false);
        assert_eq!(c.math_s, t);
        assert!((c.mem_s - (bytes + extra) / bw).abs() < 1e-18, "{c:?}");
        // A GPU profile with a GEMM floor and a first touch (none built in has either): the
        // queued GEMM pays work + (gap + GEMM floor) per launch, then the touch.
        let mut hw = h200.clone();
        hw.gemm_floor_s = [3e-6, 5e-6];
        hw.first_touch = Some((1e9, 0.0));
        let gap = hw.kernel_gap_s.unwrap();
        let c = kernel_cost(&k, &hw, false);
        let work = c.math_s.max(c.mem_s);
        let want = (work + gap + 5e-6).max(hw.launch_floor_s) + k.bytes_written / 1e9;
        assert!(
            (c.device_s - want).abs() < 1e-15,
            "{} vs {want}",
            c.device_s
        );
        // The launch bound at its tie: a queued period equal to the minimum period is not
        // launch-bound (gap = work, floor = 2 · work), nor on a CPU a floor equal to the work.
        let mut k = elementwise("add", 1024.0, 1024.0);
        let mem = kernel_cost(&k, &h200, false).mem_s;
        let mut hw = h200.clone();
        (hw.kernel_gap_s, hw.launch_floor_s) = (Some(mem), 2.0 * mem);
        let c = kernel_cost(&k, &hw, false);
        assert_eq!((c.device_s, c.bound), (2.0 * mem, Bound::Memory));
        hw.launch_floor_s = 2.0 * mem * (1.0 + 1e-9);
        assert_eq!(kernel_cost(&k, &hw, false).bound, Bound::Launch);
        let mut cpu = cpu_profile();
        k.name = "add_";
        let mem = kernel_cost(&k, &cpu, false).mem_s;
        cpu.launch_floor_s = mem;
        let c = kernel_cost(&k, &cpu, false);
        assert_eq!((c.device_s, c.bound), (2.0 * mem, Bound::Memory));
        cpu.launch_floor_s = mem * (1.0 + 1e-9);
        assert_eq!(kernel_cost(&k, &cpu, false).bound, Bound::Launch);
        cpu.launch_floor_s = mem * (1.0 - 1e-9);
        assert_eq!(kernel_cost(&k, &cpu, false).bound, Bound::Memory);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// `max_of_number` is `f64::max` for any a but NaN and any b (NaN, infinities, subnormals
        /// included): bit for bit, but for the sign of a zero when both are zeros.
        #[test]
        fn max_of_number_is_f64_max_for_a_number(
            a in proptest::num::f64::ANY,
            b in proptest::prop_oneof![
                proptest::num::f64::ANY,
                proptest::strategy::Just(f64::NAN),
                proptest::strategy::Just(0.0),
                proptest::strategy::Just(-0.0),
            ],
        ) {
            proptest::prop_assume!(!a.is_nan());
            let (got, want) = (max_of_number(a, b), a.max(b));
            if a == 0.0 && b == 0.0 {
                proptest::prop_assert_eq!(got, want);
            } else {
                proptest::prop_assert_eq!(got.to_bits(), want.to_bits(), "{} {}", a, b);
            }
        }
    }
}
