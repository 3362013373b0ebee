//! Microbenchmarks for `costsim calibrate` (feature `tch`): GEMMs (square, tall, and skinny
//! rank-r shapes like LoRA's), elementwise ops and casts at several sizes, reductions, norms,
//! softmax, PaCA's gather and column write, attention, the single-tensor AdamW update, a one-element dispatch loop and an
//! autograd chain. Each is timed after warm-up as the median of `reps` timed units (a unit
//! repeats a short op until it lasts about half a millisecond, so the clock's resolution does not
//! matter); a sample whose spread exceeds [`fit::MAX_SPREAD`] is measured again, up to three
//! attempts, and kept with its spread so the fit can leave it out and say so.
//!
//! Large benchmarks cycle through several copies of their operands (together over 128 MB) so
//! that, as in a training step, each call reads from DRAM rather than from a warm cache.
//!
//! FLOPs and bytes are counted as the cost model counts the same kernel (docs/model.md):
//! bytes = every input read once + the output written once.

use crate::fit::{Bench, CalibrationRun, Sample, MAX_SPREAD, SCHEMA};
use crate::harness::{device_name, ensure_device, now_rfc3339};
use crate::record::Stats;
use crate::{Error, Result};
use costsim_model::graph::strided_columns_bytes;
use std::time::Instant;
use tch::{Device, Kind, TchError, Tensor};

fn torch(e: TchError) -> Error {
    Error::Torch(e.to_string())
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// How long to measure.
#[derive(Debug, Clone, Copy)]
pub struct Effort {
    pub warmup: u32,
    pub reps: u32,
}

struct Bencher {
    device: Device,
    effort: Effort,
    samples: Vec<Sample>,
}

fn size_of(kind: Kind) -> f64 {
    match kind {
        Kind::BFloat16 | Kind::Half => 2.0,
        _ => 4.0,
    }
}

/// Copies of a benchmark's operands to cycle through so that together they exceed the caches
/// (128 MB), as in a training step where each kernel reads data last touched long before;
/// at most 8, so small operands stay in the caches: GPUs, and CPUs before 2026-11-29i
/// (`Bencher::copies_for`).
fn copies(bytes_per_call: f64) -> usize {
    ((128e6 / bytes_per_call.max(1.0)).ceil() as usize).clamp(1, 8)
}

/// Copies that together exceed 128 MB (at most 1024): operands read cold on every call.
fn cold_copies(bytes_per_call: f64) -> usize {
    ((128e6 / bytes_per_call.max(1.0)).ceil() as usize).clamp(1, 1024)
}

fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bf16",
        _ => "fp32",
    }
}

impl Bencher {
    /// Copies of a benchmark's operands to cycle through: on a CPU together over 128 MB (at most
    /// 1024), so that every call reads operands out of the caches, as the ops of a real step do
    /// (`scripts/trace/op_context.py`: a step's small ops run at their cold time alone, about
    /// twice their warm one; docs/validation.md, "Small ops in a step"); on a GPU at most 8, as
    /// before 2026-11-29i.
    fn copies_for(&self, bytes_per_call: f64) -> usize {
        match self.device {
            Device::Cpu => cold_copies(bytes_per_call),
            _ => copies(bytes_per_call),
        }
    }

    /// `c` tensors of normal values.
    fn randn_copies(&self, c: usize, shape: &[i64], kind: Kind) -> Result<Vec<Tensor>> {
        (0..c).map(|_| self.randn(shape, kind)).collect()
    }

    fn randn(&self, shape: &[i64], kind: Kind) -> Result<Tensor> {
        Tensor::f_randn(shape, (Kind::Float, self.device))
            .and_then(|t| t.f_to_kind(kind))
            .map_err(torch)
    }

    /// Time `f` (one unit = `ops` ops) and record it.
    #[allow(clippy::too_many_arguments)]
    fn time(
        &mut self,
        bench: Bench,
        name: String,
        kind: Kind,
        flops: f64,
        bytes: f64,
        gemm: Option<[u64; 4]>,
        ops: u32,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let device = self.device;
        for _ in 0..self.effort.warmup.max(1) {
            f()?;
        }
        sync(device);
        // Repeat short units so each timed interval lasts about 0.5 ms.
        let t0 = Instant::now();
        f()?;
        sync(device);
        let once = t0.elapsed().as_secs_f64().max(1e-7);
        let inner = ((5e-4 / once).ceil() as u32).clamp(1, 2000);
        let mut attempts = 0;
        let mut stats;
        loop {
            attempts += 1;
            let mut samples = Vec::with_capacity(self.effort.reps as usize);
            for _ in 0..self.effort.reps.max(3) {
                let t = Instant::now();
                for _ in 0..inner {
                    f()?;
                }
                sync(device);
                samples.push(t.elapsed().as_secs_f64() / f64::from(inner));
            }
            stats = Stats::from_seconds(&samples);
            if stats.spread() <= MAX_SPREAD || attempts >= 3 {
                break;
            }
        }
        self.samples.push(Sample {
            bench,
            name,
            dtype: dtype_name(kind).to_string(),
            flops,
            bytes,
            gemm,
            ops,
            stats,
            attempts,
        });
        Ok(())
    }

    fn gemm(&mut self, m: i64, n: i64, k: i64, kind: Kind) -> Result<()> {
        self.gemm_layout(m, n, k, None, kind)
    }

    /// An m×k by k×n product. `layout` None: both operands contiguous, named `mm MxNxK`;
    /// Some("nt"), Some("tn"), ...: each operand row-major (`n`) or a transposed view of a
    /// row-major tensor (`t`), as nn.Linear's forward (x·Wᵀ, "nt"), dX (dY·W, "nn") and dW
    /// (dYᵀ·X, "tn") pass them, named `mm MxNxK LAYOUT` (`fit::narrow_sample` reads it).
    fn gemm_layout(
        &mut self,
        m: i64,
        n: i64,
        k: i64,
        layout: Option<&'static str>,
        kind: Kind,
    ) -> Result<()> {
        let (ta, tb) = match layout {
            Some(l) => (l.starts_with('t'), l.ends_with('t')),
            None => (false, false),
        };
        let operand = |b: &Self, rows: i64, cols: i64, t: bool| -> Result<Tensor> {
            if t {
                b.randn(&[cols, rows], kind).map(|x| x.tr())
            } else {
                b.randn(&[rows, cols], kind)
            }
        };
        let sz = size_of(kind);
        let (mf, nf, kf) = (m as f64, n as f64, k as f64);
        let bytes = (mf * kf + kf * nf + mf * nf) * sz;
        // On a CPU cold, like every benchmark (`copies_for`): in a real step LoRA's products run
        // at or above their cold time alone, and with 8 copies they stay in the L3 (up to 2×
        // faster in bf16; docs/validation.md, "A seventh run"). Layout samples run on CPUs only.
        let c = self.copies_for(bytes);
        let a: Vec<Tensor> = (0..c)
            .map(|_| operand(self, m, k, ta))
            .collect::<Result<_>>()?;
        let b: Vec<Tensor> = (0..c)
            .map(|_| operand(self, k, n, tb))
            .collect::<Result<_>>()?;
        let mut i = 0;
        self.time(
            Bench::Gemm,
            match layout {
                Some(l) => format!("mm {m}x{n}x{k} {l}"),
                None => format!("mm {m}x{n}x{k}"),
            },
            kind,
            2.0 * mf * nf * kf,
            bytes,
            Some([m as u64, n as u64, k as u64, 1]),
            1,
            || {
                i = (i + 1) % c;
                a[i].f_mm(&b[i]).map(drop).map_err(torch)
            },
        )
    }

    fn elementwise(&mut self, n: i64, kind: Kind) -> Result<()> {
        let sz = size_of(kind);
        let nf = n as f64;
        let c = self.copies_for(3.0 * nf * sz);
        let xs = self.randn_copies(c, &[n], kind)?;
        let ys = self.randn_copies(c, &[n], kind)?;
        let mut i = 0;
        type Binary = fn(&Tensor, &Tensor) -> std::result::Result<Tensor, TchError>;
        let ops: [(&str, Binary); 2] = [("add", Tensor::f_add), ("mul", Tensor::f_mul)];
        for (name, op) in ops {
            self.time(
                Bench::Elementwise,
                format!("{name} {n}"),
                kind,
                nf,
                3.0 * nf * sz,
                None,
                1,
                || {
                    i = (i + 1) % c;
                    op(&xs[i], &ys[i]).map(drop).map_err(torch)
                },
            )?;
        }
        // Dropout: reads x, writes the output and a one-byte mask (native_dropout).
        self.time(
            Bench::Dropout,
            format!("dropout {n}"),
            kind,
            2.0 * nf,
            nf * (2.0 * sz + 1.0),
            None,
            1,
            || {
                i = (i + 1) % c;
                xs[i].f_dropout(0.1, true).map(drop).map_err(torch)
            },
        )?;
        // tanh: reads x, writes its tanh; a transcendental function per element (GPT-2's
        // gelu_new), which a CPU evaluates slower than it streams the bytes.
        self.time(
            Bench::Transcendental,
            format!("tanh {n}"),
            kind,
            nf,
            2.0 * nf * sz,
            None,
            1,
            || {
                i = (i + 1) % c;
                xs[i].f_tanh().map(drop).map_err(torch)
            },
        )
    }

    fn cast(&mut self, n: i64) -> Result<()> {
        let nf = n as f64;
        let c = self.copies_for(6.0 * nf);
        let x = self.randn_copies(c, &[n], Kind::Float)?;
        let xb = self.randn_copies(c, &[n], Kind::BFloat16)?;
        let mut i = 0;
        self.time(
            Bench::Cast,
            format!("to_copy fp32->bf16 {n}"),
            Kind::Float,
            0.0,
            6.0 * nf,
            None,
            1,
            || {
                i = (i + 1) % c;
                x[i].f_to_kind(Kind::BFloat16).map(drop).map_err(torch)
            },
        )?;
        self.time(
            Bench::Cast,
            format!("to_copy bf16->fp32 {n}"),
            Kind::BFloat16,
            0.0,
            6.0 * nf,
            None,
            1,
            || {
                i = (i + 1) % c;
                xb[i].f_to_kind(Kind::Float).map(drop).map_err(torch)
            },
        )
    }

    fn rows(&mut self, rows: i64, d: i64, kind: Kind) -> Result<()> {
        let sz = size_of(kind);
        let n = (rows * d) as f64;
        let c = self.copies_for(2.0 * n * sz);
        let x = self.randn_copies(c, &[rows, d], kind)?;
        let w = self.randn(&[d], kind)?;
        let b = self.randn(&[d], kind)?;
        let mut i = 0;
        self.time(
            Bench::Reduction,
            format!("sum {rows}x{d}"),
            kind,
            n,
            n * sz + rows as f64 * sz,
            None,
            1,
            || {
                i = (i + 1) % c;
                x[i].f_sum_dim_intlist(&[-1i64][..], true, None::<Kind>)
                    .map(drop)
                    .map_err(torch)
            },
        )?;
        // LayerNorm: reads x and the affine parameters, writes y and the fp32 mean and rstd.
        self.time(
            Bench::Norm,
            format!("layer_norm {rows}x{d}"),
            kind,
            8.0 * n,
            2.0 * n * sz + 2.0 * d as f64 * sz + 2.0 * rows as f64 * 4.0,
            None,
            1,
            || {
                i = (i + 1) % c;
                x[i].f_layer_norm([d], Some(&w), Some(&b), 1e-5, true)
                    .map(drop)
                    .map_err(torch)
            },
        )?;
        self.time(
            Bench::Softmax,
            format!("softmax {rows}x{d}"),
            kind,
            5.0 * n,
            2.0 * n * sz,
            None,
            1,
            || {
                i = (i + 1) % c;
                x[i].f_softmax(-1, None::<Kind>).map(drop).map_err(torch)
            },
        )?;
        // The loss's log_softmax (the cost model's softmax kind too).
        self.time(
            Bench::Softmax,
            format!("log_softmax {rows}x{d}"),
            kind,
            5.0 * n,
            2.0 * n * sz,
            None,
            1,
            || {
                i = (i + 1) % c;
                x[i].f_log_softmax(-1, None::<Kind>)
                    .map(drop)
                    .map_err(torch)
            },
        )?;
        // PaCA's gather of r input channels: x[..., idx], its bytes counted as the cost model
        // counts them (a sector per selected element read).
        let r = (d / 16).max(1);
        let idx = Tensor::f_randint(d, [r], (Kind::Int64, self.device)).map_err(torch)?;
        self.time(
            Bench::Gather,
            format!("index_select {rows}x{d} -> {r}"),
            kind,
            0.0,
            strided_columns_bytes(rows as f64, d as f64, r as f64, sz)
                + (rows * r) as f64 * sz
                + r as f64 * 8.0,
            None,
            1,
            || {
                i = (i + 1) % c;
                x[i].f_index_select(-1, &idx).map(drop).map_err(torch)
            },
        )
    }

    /// PaCA's write of s·P (n×r) into r random columns of W (n×k): `W.index_copy_(1, idx, sP)`.
    /// In a step W was last touched a whole step earlier, so each call writes into lines out of
    /// cache: it cycles through copies of W (together over 128 MB) and 8 random column sets.
    /// Bytes as the cost model counts them: s·P read, a sector per written element of W.
    fn scatter(&mut self, n: i64, k: i64, r: i64, kind: Kind) -> Result<()> {
        let sz = size_of(kind);
        let c = copies((n * k) as f64 * sz);
        let mut ws: Vec<Tensor> = (0..c)
            .map(|_| self.randn(&[n, k], kind))
            .collect::<Result<_>>()?;
        let sets: Vec<Tensor> = (0..8)
            .map(|_| {
                Tensor::f_randperm(k, (Kind::Int64, self.device))
                    .map(|p| p.narrow(0, 0, r))
                    .map_err(torch)
            })
            .collect::<Result<_>>()?;
        let sp = self.randn(&[n, r], kind)?;
        let mut i = 0;
        self.time(
            Bench::Scatter,
            format!("index_copy_ {n}x{k} <- {r} columns"),
            kind,
            0.0,
            (n * r) as f64 * sz
                + strided_columns_bytes(n as f64, k as f64, r as f64, sz)
                + r as f64 * 8.0,
            None,
            1,
            || {
                i += 1;
                let w = &mut ws[i % c];
                w.f_index_copy_(1, &sets[(i / c) % 8], &sp)
                    .map(drop)
                    .map_err(torch)
            },
        )
    }

    fn attention(&mut self, b: i64, h: i64, s: i64, hd: i64, kind: Kind) -> Result<()> {
        let q = self.randn(&[b, h, s, hd], kind)?;
        let k = self.randn(&[b, h, s, hd], kind)?;
        let v = self.randn(&[b, h, s, hd], kind)?;
        let sz = size_of(kind);
        let e = (b * h * s * hd) as f64;
        let (bf, hf, sf, hdf) = (b as f64, h as f64, s as f64, hd as f64);
        // As the cost model counts causal SDPA: 2·b·h·s²·d forward, 2.5× that backward.
        let flops = 2.0 * bf * hf * sf * sf * hdf;
        let lse = bf * hf * sf * 4.0;
        let slice_shape = [s as u64, s as u64, hd as u64, (b * h) as u64];
        self.time(
            Bench::Attention,
            format!("sdpa causal b{b} h{h} s{s} d{hd}"),
            kind,
            flops,
            4.0 * e * sz + lse,
            // One slice's score GEMM over b·h slices, as the cost model's SDPA kernels carry it.
            Some(slice_shape),
            1,
            || {
                Tensor::f_scaled_dot_product_attention::<Tensor>(
                    &q, &k, &v, None, 0.0, true, None, false,
                )
                .map(drop)
                .map_err(torch)
            },
        )?;
        // Backward alone: forward graphs are built outside the timed region.
        let (q, k, v) = (
            q.set_requires_grad(true),
            k.set_requires_grad(true),
            v.set_requires_grad(true),
        );
        let g = self.randn(&[b, h, s, hd], kind)?;
        let reps = (self.effort.warmup.max(1) + self.effort.reps.max(3)) as usize;
        let mut times = Vec::new();
        for i in 0..reps {
            let o = Tensor::f_scaled_dot_product_attention::<Tensor>(
                &q, &k, &v, None, 0.0, true, None, false,
            )
            .map_err(torch)?;
            let y = o
                .f_mul(&g)
                .and_then(|t| t.f_sum(None::<Kind>))
                .map_err(torch)?;
            sync(self.device);
            let t = Instant::now();
            Tensor::f_run_backward(&[&y], &[&q, &k, &v], false, false).map_err(torch)?;
            sync(self.device);
            if i >= self.effort.warmup.max(1) as usize {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        self.samples.push(Sample {
            bench: Bench::AttentionBackward,
            name: format!("sdpa backward causal b{b} h{h} s{s} d{hd}"),
            dtype: dtype_name(kind).to_string(),
            flops: 2.5 * flops,
            bytes: 6.0 * e * sz + 2.0 * lse,
            gemm: Some(slice_shape),
            // The backward of the mul and sum that seed it ride along: small ops besides SDPA's.
            ops: 3,
            stats: Stats::from_seconds(&times),
            attempts: 1,
        });
        Ok(())
    }

    /// Time single-tensor AdamW over a parameter list of tensors of `sizes` elements, as
    /// [`AdamW`](crate::harness::AdamW) runs it: 8 ops per tensor, 12 reads and 8 writes per
    /// element (the cost model's `adamw-single`), the temporaries allocated as in a step. With
    /// `copies` > 1 that many copies of the list are cycled, one a unit, so each update reads
    /// its tensors cold.
    fn adamw_lists(
        &mut self,
        name: String,
        sizes: &[i64],
        copies: usize,
        kind: Kind,
    ) -> Result<()> {
        let mut lists = Vec::with_capacity(copies);
        for _ in 0..copies {
            let mut sets = Vec::with_capacity(sizes.len());
            for &n in sizes {
                let p = self.randn(&[n], kind)?;
                let g = self.randn(&[n], kind)?;
                let m = self.randn(&[n], kind)?;
                let v = self.randn(&[n], kind)?.f_abs().map_err(torch)?;
                sets.push((p, g, m, v));
            }
            lists.push(sets);
        }
        let nf = sizes.iter().sum::<i64>() as f64;
        let mut next = 0;
        self.time(
            Bench::Optimizer,
            name,
            kind,
            16.0 * nf,
            20.0 * nf * size_of(kind),
            None,
            8 * sizes.len() as u32,
            || {
                let sets = &mut lists[next];
                next = (next + 1) % copies;
                for (p, g, m, v) in sets.iter_mut() {
                    p.f_mul_scalar_(0.999).map(drop).map_err(torch)?;
                    m.f_lerp_(g, 0.1).map(drop).map_err(torch)?;
                    let g2 = g.f_mul(g).map_err(torch)?;
                    v.f_lerp_(&g2, 0.001).map(drop).map_err(torch)?;
                    let mut dn = v.f_sqrt().map_err(torch)?;
                    dn.f_mul_scalar_(-1.0).map(drop).map_err(torch)?;
                    dn.f_add_scalar_(-1e-8).map(drop).map_err(torch)?;
                    p.f_addcdiv_(m, &dn).map(drop).map_err(torch)?;
                }
                Ok(())
            },
        )
    }

    /// AdamW over a transformer-like parameter list of width `d`, `layers` blocks and a
    /// vocabulary of `vocab` (embedding, per block four d×d and two d×4d matrices and two norm
    /// vectors, final norm), timed over the whole list, as a training step runs it, so the
    /// many tensor sizes and the temporaries' allocations are included.
    fn optimizer(&mut self, d: i64, layers: i64, vocab: i64, kind: Kind) -> Result<()> {
        let mut sizes = vec![vocab * d];
        for _ in 0..layers {
            sizes.extend([d * d, d * d, d * d, d * d, 4 * d * d, 4 * d * d, d, d]);
        }
        sizes.push(d);
        let name = format!(
            "adamw-single d{d} x{layers} vocab {vocab} ({} tensors)",
            sizes.len()
        );
        self.adamw_lists(name, &sizes, 1, kind)
    }

    /// AdamW over an adapter-like parameter list: `count` pairs of an r×`d_in` and a `d_out`×r
    /// tensor (LoRA's A and B; PaCA's trained columns are one `d_out`×r tensor, `d_in` 0 leaves
    /// A out). Such lists are what the PEFT methods' optimizer runs: hundreds of tensors of a
    /// few to a few hundred KB, where the per-op cost, not the bytes, sets the time, and which
    /// the dense lists above cannot separate from the bandwidth (their intercept is
    /// ill-determined: 0.0 ± several µs in the 29m calibration). Copies of the whole list are
    /// cycled, together over 128 MB on a CPU, so every update reads its tensors cold, as after
    /// a step's forward and backward.
    fn optimizer_adapters(
        &mut self,
        r: i64,
        d_in: i64,
        d_out: i64,
        count: i64,
        kind: Kind,
    ) -> Result<()> {
        let mut sizes = Vec::new();
        for _ in 0..count {
            if d_in > 0 {
                sizes.push(r * d_in);
            }
            sizes.push(d_out * r);
        }
        let bytes = 4.0 * sizes.iter().sum::<i64>() as f64 * size_of(kind);
        let copies = self.copies_for(bytes);
        let name = format!(
            "adamw-single adapters r{r} {d_in}+{d_out} x{count} ({} tensors)",
            sizes.len()
        );
        self.adamw_lists(name, &sizes, copies, kind)
    }

    /// AdamW over `count` equal tensors of `tensor_bytes` each, enough of them that a unit
    /// streams over 256 MiB (read cold): the optimizer's rate at one tensor size
    /// (`optimizer-size-gbps`). Full fine-tuning updates tensors from a few KB (norms) to
    /// hundreds of MB (embeddings), and on this project's CPU the dense lists above ran their
    /// bytes at 37 GB/s with tensors of 64 KB–2 MB and at 17 GB/s with 1–98 MB.
    fn optimizer_uniform(&mut self, tensor_bytes: i64, kind: Kind) -> Result<()> {
        let n = tensor_bytes / size_of(kind) as i64;
        let count = ((256i64 << 20) / (4 * tensor_bytes)).max(1);
        let name = format!("adamw-single uniform {} KiB x{count}", tensor_bytes >> 10);
        self.adamw_lists(name, &vec![n; count as usize], 1, kind)
    }

    /// First touch of fresh memory: fill a freshly allocated tensor vs an existing one, per
    /// repetition; the difference is the page-fault cost of the new mapping.
    fn first_touch(&mut self, mib: i64) -> Result<()> {
        let n = mib * 1024 * 1024 / 4;
        let existing = self.randn(&[n], Kind::Float)?;
        let fill = |fresh: bool| -> Result<f64> {
            let t = Instant::now();
            if fresh {
                let mut x = Tensor::f_empty([n], (Kind::Float, self.device)).map_err(torch)?;
                let _ = x.f_fill_(1.0).map_err(torch)?;
            } else {
                let mut x = existing.shallow_clone();
                let _ = x.f_fill_(1.0).map_err(torch)?;
            }
            sync(self.device);
            Ok(t.elapsed().as_secs_f64())
        };
        let reps = self.effort.reps.max(3) as usize;
        for _ in 0..self.effort.warmup.max(1) {
            fill(true)?;
            fill(false)?;
        }
        let mut diffs = Vec::with_capacity(reps);
        for _ in 0..reps {
            let f = fill(true)?;
            let e = fill(false)?;
            diffs.push((f - e).max(0.0));
        }
        self.samples.push(Sample {
            bench: Bench::FirstTouch,
            name: format!("fresh {mib} MiB minus existing"),
            dtype: "fp32".into(),
            flops: 0.0,
            bytes: (n * 4) as f64,
            gemm: None,
            ops: 0,
            stats: Stats::from_seconds(&diffs),
            attempts: 1,
        });
        Ok(())
    }

    fn dispatch(&mut self) -> Result<()> {
        let x = self.randn(&[1], Kind::Float)?;
        let y = self.randn(&[1], Kind::Float)?;
        for i in 0..3 {
            self.time(
                Bench::Dispatch,
                format!("add 1-element #{i}"),
                Kind::Float,
                1.0,
                12.0,
                None,
                1,
                || x.f_add(&y).map(drop).map_err(torch),
            )?;
        }
        Ok(())
    }

    /// Backward through a chain of `len` one-element multiplies: per node, the autograd
    /// engine's cost plus a tiny kernel.
    fn autograd(&mut self, len: u32) -> Result<()> {
        let x = self.randn(&[1], Kind::Float)?.set_requires_grad(true);
        let device = self.device;
        for i in 0..2 {
            let build = || -> Result<Tensor> {
                let mut y = x.shallow_clone();
                for _ in 0..len {
                    y = y.f_mul_scalar(1.0001).map_err(torch)?;
                }
                y.f_sum(None::<Kind>).map_err(torch)
            };
            // Time only the backward: build the graph outside the timed region.
            let mut graphs: Vec<Tensor> = Vec::new();
            let reps = self.effort.reps.max(3) + self.effort.warmup.max(1);
            for _ in 0..reps {
                graphs.push(build()?);
            }
            let mut times = Vec::new();
            for (k, y) in graphs.iter().enumerate() {
                sync(device);
                let t = Instant::now();
                Tensor::f_run_backward(&[y], &[&x], false, false).map_err(torch)?;
                sync(device);
                if k as u32 >= self.effort.warmup.max(1) {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            self.samples.push(Sample {
                bench: Bench::AutogradNode,
                name: format!("backward of a {len}-node chain #{i}"),
                dtype: "fp32".into(),
                flops: f64::from(len),
                bytes: 12.0 * f64::from(len),
                gemm: None,
                ops: len + 1,
                stats: Stats::from_seconds(&times),
                attempts: 1,
            });
        }
        Ok(())
    }
}

/// Run every microbenchmark. `progress` gets (done, total, current name).
pub fn run(
    device: Device,
    effort: Effort,
    command: &str,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<CalibrationRun> {
    ensure_device(device)?;
    let mut b = Bencher {
        device,
        effort,
        samples: Vec::new(),
    };
    let big = matches!(device, Device::Cuda(_));
    // Sizes: CPU runs must finish in minutes; a GPU takes 16× larger problems.
    let scale: i64 = if big { 4 } else { 1 };
    type Step<'a> = (&'a str, Box<dyn Fn(&mut Bencher) -> Result<()> + 'a>);
    let mut steps: Vec<Step> = Vec::new();
    steps.push(("dispatch loop", Box::new(|b| b.dispatch())));
    steps.push(("autograd chain", Box::new(|b| b.autograd(200))));
    if !big {
        for mib in [48, 64, 128] {
            steps.push(("first touch", Box::new(move |b| b.first_touch(mib))));
        }
    }
    for kind in [Kind::Float, Kind::BFloat16] {
        // Square, tall (tokens × width → width, 4·width) and vocabulary-like GEMMs.
        for n in [128, 256, 512, 1024] {
            steps.push((
                "gemm square",
                Box::new(move |b| b.gemm(n * scale, n * scale, n * scale, kind)),
            ));
        }
        for (m, n, k) in [
            (256, 768, 768),
            (1024, 768, 768),
            (512, 3072, 768),
            (512, 768, 3072),
            (2048, 512, 512),
            (256, 1408, 512),
            (128, 8000, 512),
            // Vocabulary projections (output larger than any cache).
            (256, 50257, 256),
            (256, 32000, 512),
        ] {
            steps.push((
                "gemm tall",
                Box::new(move |b| b.gemm(m * scale, n, k, kind)),
            ));
        }
        // A training step's own shapes at 128 tokens, which the square and tall sets miss: a
        // block's MLP pair (d 256 → 1024 → 256) and the LM head's three GEMMs (forward, dX with
        // the vocabulary as K, dW with the tokens as K). On this project's CPU the small-M
        // shapes ran 5–20% below the larger ones' rate (docs/validation.md, "GEMM shapes").
        for (m, n, k) in [
            (128, 1024, 256),
            (128, 256, 1024),
            (128, 50257, 256),
            (128, 256, 50257),
        ] {
            steps.push((
                "gemm step",
                Box::new(move |b| b.gemm(m * scale, n, k, kind)),
            ));
        }
        steps.push((
            "gemm step",
            Box::new(move |b| b.gemm(50257, 256, 128 * scale, kind)),
        ));
        // CPUs: GEMMs of few rows (tokens), where the per-call fill is not amortised: the
        // GEMM fits then also fit it (`cost::gemm_math_time`, `gemm-fill-rows`). On this
        // project's CPU an m = 16 GEMM ran at 80% (fp32) and 50% (bf16) of the m = 128 rate.
        if !big {
            for m in [1, 4, 16, 32] {
                for (n, k) in [(1536, 384), (384, 1536)] {
                    steps.push(("gemm rows", Box::new(move |b| b.gemm(m, n, k, kind))));
                }
            }
        }
        // CPUs: LoRA's six rank-r products with the layouts nn.Linear passes them (forward
        // x·Wᵀ "nt", dX = dY·W "nn", dW = dYᵀ·X "tn"): A's and B's forward, dX and dW for a
        // k → n linear over M tokens. On this project's CPU the same 512 × 8 × 512 product took
        // 99 µs as A's forward, 219 µs as B's dX and 358 µs as B's dW (fp32, one thread, cold):
        // the fits of `gemm-narrow-fill` (docs/validation.md, "A seventh run").
        if !big {
            for (m, r, k, n) in [
                (256, 8, 768, 768),
                (512, 8, 512, 1408),
                (1024, 16, 768, 768),
                (1024, 64, 512, 512),
                (2048, 8, 1024, 2816),
            ] {
                for (gm, gn, gk, layout) in [
                    (m, r, k, "nt"),
                    (m, n, r, "nt"),
                    (m, r, n, "nn"),
                    (m, k, r, "nn"),
                    (r, k, m, "tn"),
                    (n, r, m, "tn"),
                ] {
                    steps.push((
                        "gemm narrow",
                        Box::new(move |b| b.gemm_layout(gm, gn, gk, Some(layout), kind)),
                    ));
                }
            }
        }
        // Skinny rank-r GEMMs as LoRA's A (M×r×k), B (M×n×r) and their gradients (r×k×M).
        for (m, r, k) in [
            (256, 8, 768),
            (1024, 16, 768),
            (1024, 64, 512),
            (4096, 8, 512),
        ] {
            steps.push((
                "gemm skinny",
                Box::new(move |b| b.gemm(m * scale, r, k, kind)),
            ));
            steps.push((
                "gemm skinny",
                Box::new(move |b| b.gemm(m * scale, k, r, kind)),
            ));
            steps.push((
                "gemm skinny",
                Box::new(move |b| b.gemm(r, k, m * scale, kind)),
            ));
        }
        for n in [16_384, 131_072, 1_048_576, 4_194_304] {
            steps.push((
                "elementwise",
                Box::new(move |b| b.elementwise(n * scale, kind)),
            ));
        }
        for (d, layers, vocab) in [
            (128, 2, 4000),
            (256, 4, 8000),
            (512, 4, 16000),
            (768, 6, 32000),
        ] {
            steps.push((
                "optimizer",
                Box::new(move |b| b.optimizer(d, layers * scale, vocab, kind)),
            ));
        }
        // CPUs: adapter-like lists (LoRA's A and B pairs; PaCA-like column blocks with no A),
        // generic widths rather than the held-out models' own, so that the optimizer's per-op
        // cost is fitted where it sets the time (`optimizer-op-us`).
        if !big {
            for (r, d_in, d_out, count) in [
                (4, 64, 192, 64),
                (8, 256, 768, 16),
                (16, 512, 1536, 24),
                (8, 1024, 1024, 48),
                (32, 0, 640, 24),
                (64, 0, 1536, 16),
            ] {
                steps.push((
                    "optimizer adapters",
                    Box::new(move |b| b.optimizer_adapters(r, d_in, d_out, count, kind)),
                ));
            }
            // And lists of equal tensors, one size each: the optimizer's rate by tensor size.
            for kib in [256, 2048, 16384, 98304] {
                steps.push((
                    "optimizer sizes",
                    Box::new(move |b| b.optimizer_uniform(kib << 10, kind)),
                ));
            }
        }
        for (rows, d) in [
            (128, 768),
            (512, 768),
            (2048, 768),
            (512, 8000),
            (128, 50257),
        ] {
            steps.push(("rows", Box::new(move |b| b.rows(rows * scale, d, kind))));
        }
        // PaCA's column write: GPT-2's c_attn, c_fc and MLP projection, a 4096-wide square;
        // ranks as the paper's (8-64).
        for (n, k, r) in [
            (2304, 768, 16),
            (3072, 768, 16),
            (768, 3072, 16),
            (4096, 4096, 16),
            (4096, 4096, 64),
        ] {
            steps.push((
                "scatter",
                Box::new(move |b| b.scatter(n * scale, k, r, kind)),
            ));
        }
        // Sizes, and at S = 128 and 256 more (batch × head) slices: CPU SDPA's bf16 backward
        // costs a fixed time per slice beyond its FLOPs, which these separate.
        for (bb, h, s, hd) in [
            (1, 12, 128, 64),
            (2, 8, 256, 64),
            (1, 12, 512, 64),
            (4, 8, 128, 64),
            (4, 12, 256, 64),
        ] {
            steps.push((
                "attention",
                Box::new(move |b| b.attention(bb * scale, h, s, hd, kind)),
            ));
        }
    }
    for n in [16_384, 262_144, 2_097_152] {
        steps.push(("cast", Box::new(move |b| b.cast(n * scale))));
    }
    let total = steps.len();
    for (i, (name, step)) in steps.iter().enumerate() {
        progress(i, total, name);
        step(&mut b)?;
    }
    Ok(CalibrationRun {
        schema: SCHEMA,
        device: device_name(device),
        device_kind: match device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".into(),
        },
        torch_version: crate::harness::torch_version(),
        git_commit: crate::harness::git_commit(),
        timestamp: now_rfc3339(),
        command: command.to_string(),
        samples: b.samples,
    })
}
