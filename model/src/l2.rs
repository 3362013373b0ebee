//! Re-reads that could be served from the L2 cache, and the most they could save.
//!
//! costsim prices every byte a kernel reads at DRAM bandwidth (docs/model.md, "What the model does
//! not capture"). A tensor read again soon after it was written may still be in L2 (40 MB on an
//! A100, 50 MB on an H100 or H200, 96 MB on an L40S; gpus.md), and a kernel reading it then runs
//! faster than its DRAM price. This module does not change any prediction: it measures, on
//! costsim's own graph, how much that could matter, so that the rule is adopted or not on
//! evidence (docs/model.md).
//!
//! A kernel's **re-read bytes**: for each kernel it depends on in the same segment (its `deps`),
//! the bytes that kernel wrote, if they could still be in L2 when this one starts, under LRU with
//! every byte read or written allocating in L2: the reuse distance
//!
//! ```text
//! R = W_d + Σ_{d < j < k} (read_j + written_j)      (bytes)
//! ```
//!
//! is at most the profile's L2 size. The sum over such deps is capped at the kernel's own bytes
//! read. Forward `deps` are the data flow; backward `deps` are costsim's chain (each backward
//! kernel consumes the gradient its predecessor produced, `graph::tracer`), so a backward kernel
//! that reads something else is credited with its predecessor's output size, an approximation.
//! Across segments (one layer to the next) nothing is credited.
//!
//! The **bound** is what the kernel's device time would lose if those bytes cost nothing (an L2
//! infinitely fast): t(k) − t(k with bytes_read − re-read), each from [`crate::cost`]. It is an
//! upper bound on what pricing them at a finite L2 bandwidth would save, and zero for kernels
//! bound by math or by the launch floor.

use crate::cost::{kernel_cost_memo, GemmMemo};
use crate::graph::Segment;
use costsim_hardware::Profile;

/// Per kernel of `seg`, the bytes it re-reads from outputs written within the last `l2_bytes`
/// of traffic (module doc).
pub fn reread_bytes(seg: &Segment, l2_bytes: f64) -> Vec<f64> {
    let ks = &seg.kernels;
    // Prefix sums of traffic: before[i] = Σ_{j<i} (read_j + written_j).
    let mut before = Vec::with_capacity(ks.len() + 1);
    before.push(0.0);
    for k in ks {
        let last = before.last().copied().unwrap_or(0.0);
        before.push(last + k.bytes_read + k.bytes_written);
    }
    ks.iter()
        .enumerate()
        .map(|(i, k)| {
            if k.launches == 0 {
                return 0.0;
            }
            let credited: f64 = k
                .deps
                .iter()
                .map(|&d| d as usize)
                .filter(|&d| d < i)
                .map(|d| {
                    let w = ks[d].bytes_written;
                    let between = before[i] - before[d + 1];
                    if w + between <= l2_bytes {
                        w
                    } else {
                        0.0
                    }
                })
                .sum();
            credited.min(k.bytes_read)
        })
        .collect()
}

/// Per kernel of `seg`: (re-read bytes, seconds of device time they would save at most) on
/// `hw` (its `l2_bytes`; `graph_replay` as in [`crate::cost::kernel_cost`]), given `device_s`,
/// each kernel's device time as already costed on `hw`; only kernels with re-reads are costed
/// again, without them.
pub fn bound(
    seg: &Segment,
    device_s: &[f64],
    hw: &Profile,
    graph_replay: bool,
    memo: &mut GemmMemo,
) -> Vec<(f64, f64)> {
    reread_bytes(seg, hw.l2_bytes)
        .into_iter()
        .zip(&seg.kernels)
        .zip(device_s)
        .map(|((b, k), &full)| {
            if b <= 0.0 {
                return (0.0, 0.0);
            }
            let mut free = k.clone();
            free.bytes_read -= b;
            let less = kernel_cost_memo(&free, hw, graph_replay, memo).device_s;
            (b, (full - less).max(0.0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Kernel, KernelKind, Segment};
    use costsim_hardware::{resolve_device, MathMode};

    /// A kernel reading `r` and writing `w` bytes, reading the outputs of `deps`.
    fn k(kind: KernelKind, r: f64, w: f64, deps: &[u32]) -> Kernel {
        let mut k = Kernel::new_for_test(kind, MathMode::Fp32);
        k.bytes_read = r;
        k.bytes_written = w;
        k.deps = deps.iter().copied().collect();
        k
    }

    const MB: f64 = 1e6;

    /// [`bound`] with each kernel's device time costed here.
    fn bound_of(seg: &Segment, hw: &Profile, memo: &mut GemmMemo) -> Vec<(f64, f64)> {
        let full: Vec<f64> = seg
            .kernels
            .iter()
            .map(|k| kernel_cost_memo(k, hw, false, memo).device_s)
            .collect();
        bound(seg, &full, hw, false, memo)
    }

    #[test]
    fn reuse_distance_by_hand() {
        use KernelKind::Elementwise as E;
        let mut host = k(KernelKind::Host, 0.0, 0.0, &[0]);
        host.launches = 0;
        let seg = Segment {
            kernels: vec![
                // 0: writes 10 MB.
                k(E, 10.0 * MB, 10.0 * MB, &[]),
                // 1: reads 0's output right away: R = 10 MB.
                k(E, 10.0 * MB, 4.0 * MB, &[0]),
                // 2: reads 0 (R = 10 + 14 = 24 MB) and 1 (R = 4 MB): 14 MB, capped at its
                // 12 MB read.
                k(E, 12.0 * MB, 30.0 * MB, &[0, 1]),
                // 3: reads 2's 30 MB output (R = 30) and 0's (R = 10 + 14 + 42 = 66 MB).
                k(E, 40.0 * MB, 1.0 * MB, &[2, 0]),
                // 4: host-only, never credited.
                host,
                // 5: a dependency on itself or later is not a re-read.
                k(E, 1.0 * MB, 1.0 * MB, &[5]),
            ],
        };
        let got = reread_bytes(&seg, 50.0 * MB);
        assert_eq!(got, [0.0, 10.0 * MB, 12.0 * MB, 30.0 * MB, 0.0, 0.0]);
        // A 20 MB cache keeps 1's and 2's reads of the last output, not the 24 MB-old one;
        // and 3's 30 MB input no longer fits at all.
        let got = reread_bytes(&seg, 20.0 * MB);
        assert_eq!(got, [0.0, 10.0 * MB, 4.0 * MB, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn the_bound_is_the_dram_time_of_the_reread_bytes_when_memory_bound() {
        let hw = resolve_device("h200").expect("h200");
        let mut memo = GemmMemo::default();
        // 0 writes 16 MB; 1 reads it and 16 MB more and writes 16 MB: memory-bound on an H200
        // (48 MB at 4.8 TB/s · 0.85 ≈ 11.8 µs, over the 1.3 µs floor).
        let mut a = k(KernelKind::Elementwise, 16.0 * MB, 16.0 * MB, &[]);
        a.dtype = crate::workload::DType::F32;
        let mut b = k(KernelKind::Elementwise, 32.0 * MB, 16.0 * MB, &[0]);
        b.dtype = crate::workload::DType::F32;
        let seg = Segment {
            kernels: vec![a, b],
        };
        let got = bound_of(&seg, &hw, &mut memo);
        assert_eq!(got[0], (0.0, 0.0));
        assert_eq!(got[1].0, 16.0 * MB);
        // A third of its 48 MB at the kind's DRAM rate.
        let mem = crate::cost::kernel_cost(&seg.kernels[1], &hw, false).mem_s;
        let want = mem / 3.0;
        assert!(
            (got[1].1 - want).abs() < 1e-12,
            "{} against {want}",
            got[1].1
        );
    }

    #[test]
    fn nothing_is_saved_where_math_or_the_floor_bounds() {
        let hw = resolve_device("h200").expect("h200");
        let mut memo = GemmMemo::default();
        // A 4 kB re-read under the launch floor saves nothing.
        let seg = Segment {
            kernels: vec![
                k(KernelKind::Elementwise, 4e3, 4e3, &[]),
                k(KernelKind::Elementwise, 4e3, 4e3, &[0]),
            ],
        };
        assert_eq!(bound_of(&seg, &hw, &mut memo)[1], (4e3, 0.0));
        // A large compute-bound GEMM reading a fresh 8 MB activation saves nothing either.
        let mut g = k(KernelKind::Gemm, 8.0 * MB + 32.0 * MB, 8.0 * MB, &[0]);
        g.math = MathMode::Bf16;
        g.gemm = Some(crate::graph::Gemm {
            m: 4096,
            n: 4096,
            k: 4096,
            batch: 1,
        });
        g.flops = 2.0 * 4096f64.powi(3);
        let seg = Segment {
            kernels: vec![k(KernelKind::Elementwise, 8.0 * MB, 8.0 * MB, &[]), g],
        };
        let got = bound_of(&seg, &hw, &mut memo);
        assert_eq!(got[1], (8.0 * MB, 0.0));
    }
}
