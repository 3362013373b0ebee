//! The libtorch measurement harness: real training steps of every method, timed.
//!
//! Models are built from the same [`ModelConfig`] as the cost model, with random weights (nothing
//! is downloaded): GPT-2 blocks (LayerNorm, fused QKV, causal SDPA attention, tanh-GELU written
//! out as transformers' eight `gelu_new` ops, tied LM head) and Llama blocks (RMSNorm written out
//! as transformers does, q/k/v/o with grouped-query SDPA, RoPE, SwiGLU), then the LM head and
//! cross-entropy. Weights use nn.Linear's n×k layout (GPT-2's Conv1D is the same GEMM).
//!
//! Methods, as the cost model describes them (docs/model.md):
//! - full: autograd through everything;
//! - LoRA: peft's op sequence — cast to the adapter dtype, dropout, A, B, scale, add, cast back;
//! - PaCA: W is frozen and holds s·P in its selected columns; forward is the one GEMM plus the
//!   gather x[..., idx], which alone is kept. tch has no custom autograd Function, so the backward
//!   is explicit: autograd produces dY of each PaCA output (as `torch.autograd.grad` with the
//!   outputs as inputs) and dX through the frozen W; the harness then forms dP = s·dYᵀ·x_idx. The
//!   optimizer updates P and writes s·P back into W's columns;
//! - layer-selective: blocks below the cut run under `no_grad`, so they record no graph and save
//!   nothing, and backward stops at the cut.
//!
//! Precisions: `fp32`, and `bf16` meaning parameters, activations and AdamW states in bf16 with
//! fp32 LoRA adapters (the cost model's `bf16`). tch exposes no autocast for CPU, so bf16-mixed is
//! not measured. The optimizer is single-tensor AdamW (eight ops per tensor), what a libtorch
//! loop issues.

use crate::record::{LayerBench, Measured, Outcome, Record, ResultsFile, Stats, SCHEMA};
use crate::{Error, Result};
use costsim_model::arch::{Family, Linear, LinearRole, ModelConfig};
use costsim_model::method::{AdapterDtype, MethodKind, MethodSpec};
use costsim_model::Precision;
use std::time::Instant;
use tch::{Device, Kind, Reduction, TchError, Tensor};

fn torch(e: TchError) -> Error {
    Error::Torch(e.to_string())
}

/// True when a libtorch error is an out-of-memory.
pub fn is_oom(e: &Error) -> bool {
    match e {
        Error::Torch(m) => m.contains("out of memory") || m.contains("OutOfMemory"),
        _ => false,
    }
}

/// Counts the ops the harness issues (each a kernel launch on CUDA).
#[derive(Debug, Default)]
pub struct Ops {
    pub n: u64,
}

impl Ops {
    fn t(&mut self, r: std::result::Result<Tensor, TchError>) -> Result<Tensor> {
        self.n += 1;
        r.map_err(torch)
    }

    /// An in-place op: its returned handle is the tensor already held.
    fn i(&mut self, r: std::result::Result<Tensor, TchError>) -> Result<()> {
        self.t(r).map(drop)
    }
}

/// Parse `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s.trim() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| Error::InvalidArgument {
                what: "--device".into(),
                message: format!("'{other}' is not cpu, cuda or cuda:N"),
            }),
    }
}

/// Make sure the device is usable. On CUDA, libtorch_cuda.so is loaded explicitly first: Debian's
/// linker (--as-needed) drops it from the link, and then libtorch silently sees no GPU.
pub fn ensure_device(device: Device) -> Result<()> {
    if let Device::Cuda(i) = device {
        let loaded = load_torch_cuda();
        if !tch::Cuda::is_available() {
            return Err(Error::Device(format!(
                "--device cuda:{i} but libtorch sees no CUDA device (libtorch_cuda.so {}); \
                 refusing to time the CPU instead. Run on a machine with a GPU and point \
                 LD_LIBRARY_PATH at torch's lib folder",
                if loaded {
                    "loaded"
                } else {
                    "could not be loaded"
                }
            )));
        }
        let count = tch::Cuda::device_count();
        if i >= count as usize {
            return Err(Error::Device(format!(
                "cuda:{i} requested, {count} CUDA device(s) visible"
            )));
        }
    }
    Ok(())
}

#[allow(unsafe_code)]
fn load_torch_cuda() -> bool {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading libtorch_cuda runs its static initialisers, which register the CUDA
    // backend with libtorch; that is exactly what linking it would have done. The handle is
    // leaked so the library stays loaded for the process.
    match unsafe { Library::open(Some("libtorch_cuda.so"), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(lib) => {
            std::mem::forget(lib);
            true
        }
        Err(_) => false,
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// How one linear layer trains.
pub enum LinMode {
    Frozen,
    Full,
    Lora {
        a: Tensor,
        b: Tensor,
        scale: f64,
        dropout: f64,
        adapter: Kind,
    },
    Paca {
        idx: Tensor,
        p: Tensor,
        scale: f64,
    },
}

/// A linear layer y = x·Wᵀ + b.
pub struct Lin {
    pub role: LinearRole,
    pub w: Tensor,
    pub b: Option<Tensor>,
    pub mode: LinMode,
    pub n: i64,
    pub r: i64,
}

/// A PaCA layer's forward, kept for its explicit backward.
pub struct PacaTap {
    pub y: Tensor,
    pub x_idx: Tensor,
    /// Index into [`Net::paca`]: (block, linear).
    pub at: (usize, usize),
}

pub struct Block {
    pub norm1: (Tensor, Option<Tensor>),
    pub norm2: (Tensor, Option<Tensor>),
    pub lins: Vec<Lin>,
}

impl Block {
    /// Visit the block's parameters in a fixed order (norms, then each linear's weight, bias
    /// and LoRA adapters); the caller keeps those that require grad.
    fn leaves(&self, push: &mut impl FnMut(&Tensor)) {
        for (w, bias) in [&self.norm1, &self.norm2] {
            push(w);
            if let Some(bias) = bias {
                push(bias);
            }
        }
        for l in &self.lins {
            push(&l.w);
            if let Some(bias) = &l.b {
                push(bias);
            }
            if let LinMode::Lora { a, b, .. } = &l.mode {
                push(a);
                push(b);
            }
        }
    }
}

/// A model with a method applied.
pub struct Net {
    pub cfg: ModelConfig,
    pub method: MethodSpec,
    pub kind: Kind,
    pub device: Device,
    pub wte: Tensor,
    pub wpe: Option<Tensor>,
    pub blocks: Vec<Block>,
    pub final_norm: (Tensor, Option<Tensor>),
    /// Untied LM head.
    pub head: Option<Tensor>,
    pub cos: Tensor,
    pub sin: Tensor,
    /// Lowest trained block.
    pub lo: usize,
    pub seq: i64,
}

fn randn(shape: &[i64], kind: Kind, device: Device, std: f64) -> Result<Tensor> {
    let t = Tensor::f_randn(shape, (Kind::Float, device)).map_err(torch)?;
    (t * std).f_to_kind(kind).map_err(torch)
}

fn param(t: Tensor, trains: bool) -> Tensor {
    t.set_requires_grad(trains)
}

impl Net {
    /// Build a model with random weights (seeded) and the method applied.
    pub fn build(
        cfg: &ModelConfig,
        method: &MethodSpec,
        precision: Precision,
        seq: i64,
        device: Device,
        seed: i64,
    ) -> Result<Self> {
        let kind = match precision {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
            other => {
                return Err(Error::InvalidArgument {
                    what: "--precision".into(),
                    message: format!("the harness measures fp32 and bf16, not {}", other.as_str()),
                })
            }
        };
        tch::manual_seed(seed);
        let d = cfg.hidden as i64;
        let (lo, hi) = method.trained_layers(cfg);
        let full = method.kind == MethodKind::Full;
        let emb_trains = method.trains_embedding(cfg);
        let wte = param(
            randn(&[cfg.vocab as i64, d], kind, device, 0.02)?,
            emb_trains,
        );
        let wpe = match cfg.family {
            Family::Gpt2 => Some(param(
                randn(&[cfg.max_positions as i64, d], kind, device, 0.01)?,
                emb_trains,
            )),
            Family::Llama => None,
        };
        let norm = |trains: bool| -> Result<(Tensor, Option<Tensor>)> {
            let w = Tensor::f_ones([d], (kind, device)).map_err(torch)?;
            let b = match cfg.family {
                Family::Gpt2 => Some(param(
                    Tensor::f_zeros([d], (kind, device)).map_err(torch)?,
                    trains,
                )),
                Family::Llama => None,
            };
            Ok((param(w, trains), b))
        };
        let mut blocks = Vec::new();
        for i in 0..cfg.layers {
            let trained = (lo..=hi).contains(&i);
            let mut lins = Vec::new();
            for l in cfg.linears() {
                lins.push(Self::linear(&l, method, trained, kind, device)?);
            }
            blocks.push(Block {
                norm1: norm(trained && full)?,
                norm2: norm(trained && full)?,
                lins,
            });
        }
        let head = (!cfg.tied_embeddings)
            .then(|| {
                randn(&[cfg.vocab as i64, d], kind, device, 0.02)
                    .map(|t| param(t, method.trains_head(cfg)))
            })
            .transpose()?;
        // RoPE tables (S × head_dim), θ = 10000.
        let hd = cfg.head_dim() as i64;
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / hd as f32))
            .collect();
        let inv = Tensor::from_slice(&inv).to_device(device);
        let pos = Tensor::f_arange(seq, (Kind::Float, device)).map_err(torch)?;
        let freqs = pos.unsqueeze(1).f_mul(&inv.unsqueeze(0)).map_err(torch)?;
        let emb = Tensor::f_cat(&[&freqs, &freqs], -1).map_err(torch)?;
        Ok(Self {
            cfg: cfg.clone(),
            method: method.clone(),
            kind,
            device,
            wte,
            wpe,
            blocks,
            final_norm: norm(full)?,
            head,
            cos: emb.cos().f_to_kind(kind).map_err(torch)?,
            sin: emb.sin().f_to_kind(kind).map_err(torch)?,
            lo: lo as usize,
            seq,
        })
    }

    fn linear(
        l: &Linear,
        method: &MethodSpec,
        trained: bool,
        kind: Kind,
        device: Device,
    ) -> Result<Lin> {
        let (n, k) = (l.out_features as i64, l.in_features as i64);
        let targeted = trained && method.targets.contains(l.role);
        let full = trained && method.kind == MethodKind::Full;
        let w = randn(&[n, k], kind, device, 0.02)?;
        let b = l
            .bias
            .then(|| Tensor::f_zeros([n], (kind, device)).map_err(torch))
            .transpose()?;
        let r = method.rank as i64;
        let scale = method.alpha / method.rank.max(1) as f64;
        let mode = match method.kind {
            MethodKind::Full if full => LinMode::Full,
            MethodKind::Lora if targeted => {
                let adapter = match method.adapter_dtype {
                    AdapterDtype::Fp32 => Kind::Float,
                    AdapterDtype::Base => kind,
                };
                // peft: A Kaiming-uniform-like, B zeros.
                let a = randn(&[r, k], adapter, device, 1.0 / (k as f64).sqrt())?
                    .set_requires_grad(true);
                let bm = Tensor::f_zeros([n, r], (adapter, device))
                    .map_err(torch)?
                    .set_requires_grad(true);
                LinMode::Lora {
                    a,
                    b: bm,
                    scale,
                    dropout: method.dropout,
                    adapter,
                }
            }
            MethodKind::Paca if targeted => {
                let idx = Tensor::f_randperm(k, (Kind::Int64, device))
                    .map_err(torch)?
                    .narrow(0, 0, r);
                // P starts as W[:, idx] / s, so that W (holding s·P) is unchanged at the start.
                // Like the reference (and peft's adapters), P is kept in the adapter dtype, fp32
                // by default whatever W's dtype.
                let pk = match method.adapter_dtype {
                    AdapterDtype::Fp32 => Kind::Float,
                    AdapterDtype::Base => kind,
                };
                let p = w
                    .f_index_select(1, &idx)
                    .map_err(torch)?
                    .f_to_kind(pk)
                    .map_err(torch)?
                    .f_div_scalar(scale)
                    .map_err(torch)?;
                LinMode::Paca { idx, p, scale }
            }
            _ => LinMode::Frozen,
        };
        let trains_w = matches!(mode, LinMode::Full);
        Ok(Lin {
            role: l.role,
            w: param(w, trains_w),
            b: b.map(|b| param(b, trains_w)),
            mode,
            n,
            r,
        })
    }

    /// Trainable leaves autograd differentiates (full and LoRA parameters).
    pub fn leaves(&self) -> Vec<Tensor> {
        let mut v = Vec::new();
        let mut push = |t: &Tensor| {
            if t.requires_grad() {
                v.push(t.shallow_clone());
            }
        };
        push(&self.wte);
        if let Some(p) = &self.wpe {
            push(p);
        }
        for b in &self.blocks {
            b.leaves(&mut push);
        }
        push(&self.final_norm.0);
        if let Some(b) = &self.final_norm.1 {
            push(b);
        }
        if let Some(h) = &self.head {
            push(h);
        }
        v
    }

    /// PaCA's P tensors, in (block, linear) order.
    pub fn paca(&self) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for (bi, b) in self.blocks.iter().enumerate() {
            for (li, l) in b.lins.iter().enumerate() {
                if matches!(l.mode, LinMode::Paca { .. }) {
                    v.push((bi, li));
                }
            }
        }
        v
    }

    fn lin(
        &self,
        ops: &mut Ops,
        x: &Tensor,
        bi: usize,
        li: usize,
        taps: &mut Vec<PacaTap>,
        train: bool,
    ) -> Result<Tensor> {
        let l = &self.blocks[bi].lins[li];
        if let (LinMode::Paca { idx, p, scale }, true) = (&l.mode, train) {
            // The reference's `paca_update`: each training forward first writes s·P, cast to
            // W's dtype, into W's selected columns under no_grad (mul, cast, index_copy_).
            tch::no_grad(|| -> Result<()> {
                let sp = ops.t(p.f_mul_scalar(*scale))?;
                let sp = if sp.kind() != l.w.kind() {
                    ops.t(sp.f_to_kind(l.w.kind()))?
                } else {
                    sp
                };
                ops.i(l.w.shallow_clone().f_index_copy_(1, idx, &sp))
            })?;
        }
        let y = ops.t(x.f_linear(&l.w, l.b.as_ref()))?;
        match &l.mode {
            LinMode::Frozen | LinMode::Full => Ok(y),
            LinMode::Lora {
                a,
                b,
                scale,
                dropout,
                adapter,
            } => {
                let xl = if x.kind() != *adapter {
                    ops.t(x.f_to_kind(*adapter))?
                } else {
                    x.shallow_clone()
                };
                let xd = if *dropout > 0.0 {
                    ops.t(xl.f_dropout(*dropout, train))?
                } else {
                    xl
                };
                let h = ops.t(xd.f_linear::<Tensor>(a, None))?;
                let yl = ops.t(h.f_linear::<Tensor>(b, None))?;
                let s = ops.t(yl.f_mul_scalar(*scale))?;
                let sum = ops.t(y.f_add(&s))?;
                if sum.kind() != y.kind() {
                    ops.t(sum.f_to_kind(y.kind()))
                } else {
                    Ok(sum)
                }
            }
            LinMode::Paca { idx, .. } => {
                let x_idx = tch::no_grad(|| ops.t(x.f_index_select(-1, idx)))?;
                if y.requires_grad() {
                    taps.push(PacaTap {
                        y: y.shallow_clone(),
                        x_idx,
                        at: (bi, li),
                    });
                    Ok(y)
                } else {
                    // Below any gradient path: make the output require grad so dY reaches it.
                    let y = y.set_requires_grad(true);
                    taps.push(PacaTap {
                        y: y.shallow_clone(),
                        x_idx,
                        at: (bi, li),
                    });
                    Ok(y)
                }
            }
        }
    }

    /// One linear layer's forward as the model runs it (for tests of the method recipes).
    pub fn linear_forward(
        &self,
        x: &Tensor,
        block: usize,
        linear: usize,
        train: bool,
    ) -> Result<Tensor> {
        self.lin(
            &mut Ops::default(),
            x,
            block,
            linear,
            &mut Vec::new(),
            train,
        )
    }

    fn norm(&self, ops: &mut Ops, x: &Tensor, w: &(Tensor, Option<Tensor>)) -> Result<Tensor> {
        let d = self.cfg.hidden as i64;
        match self.cfg.family {
            Family::Gpt2 => ops.t(x.f_layer_norm([d], Some(&w.0), w.1.as_ref(), 1e-5, true)),
            Family::Llama => {
                // transformers' LlamaRMSNorm, op for op.
                let xf = if x.kind() != Kind::Float {
                    ops.t(x.f_to_kind(Kind::Float))?
                } else {
                    x.shallow_clone()
                };
                let sq = ops.t(xf.f_pow_tensor_scalar(2))?;
                let var = ops.t(sq.f_mean_dim(-1, true, None::<Kind>))?;
                let ve = ops.t(var.f_add_scalar(1e-5))?;
                let rs = ops.t(ve.f_rsqrt())?;
                let hn = ops.t(xf.f_mul(&rs))?;
                let back = if x.kind() != Kind::Float {
                    ops.t(hn.f_to_kind(x.kind()))?
                } else {
                    hn
                };
                ops.t(w.0.f_mul(&back))
            }
        }
    }

    fn rope(&self, ops: &mut Ops, x: &Tensor) -> Result<Tensor> {
        let hd = self.cfg.head_dim() as i64;
        let a = ops.t(x.f_mul(&self.cos))?;
        let x1 = x.narrow(-1, 0, hd / 2);
        let x2 = x.narrow(-1, hd / 2, hd / 2);
        let neg = ops.t(x2.f_neg())?;
        let rot = ops.t(Tensor::f_cat(&[&neg, &x1], -1))?;
        let b = ops.t(rot.f_mul(&self.sin))?;
        ops.t(a.f_add(&b))
    }

    fn block(
        &self,
        ops: &mut Ops,
        x: &Tensor,
        bi: usize,
        taps: &mut Vec<PacaTap>,
        train: bool,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (bsz, s) = (x.size()[0], x.size()[1]);
        let (h, kvh, hd, d) = (
            cfg.heads as i64,
            cfg.kv_heads as i64,
            cfg.head_dim() as i64,
            cfg.hidden as i64,
        );
        let blk = &self.blocks[bi];
        let heads = |t: &Tensor, n: i64| t.view([bsz, s, n, hd]).transpose(1, 2);
        let merge = |ops: &mut Ops, t: &Tensor| -> Result<Tensor> {
            let t = t.transpose(1, 2);
            if t.is_contiguous() {
                Ok(t.reshape([bsz, s, d]))
            } else {
                Ok(ops.t(t.f_contiguous())?.view([bsz, s, d]))
            }
        };
        match cfg.family {
            Family::Gpt2 => {
                let p = if train { cfg.dropout } else { 0.0 };
                let hn = self.norm(ops, x, &blk.norm1)?;
                let qkv = self.lin(ops, &hn, bi, 0, taps, train)?;
                let parts = qkv.split(d, -1);
                let (q, k, v) = (
                    heads(&parts[0], h),
                    heads(&parts[1], h),
                    heads(&parts[2], h),
                );
                let a = ops.t(Tensor::f_scaled_dot_product_attention::<Tensor>(
                    &q, &k, &v, None, p, true, None, false,
                ))?;
                let a = merge(ops, &a)?;
                let o = self.lin(ops, &a, bi, 1, taps, train)?;
                let o = if p > 0.0 {
                    ops.t(o.f_dropout(p, train))?
                } else {
                    o
                };
                let x1 = ops.t(x.f_add(&o))?;
                let h2 = self.norm(ops, &x1, &blk.norm2)?;
                let f = self.lin(ops, &h2, bi, 2, taps, train)?;
                // gelu_new: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), eight ops as transformers.
                let p3 = ops.t(f.f_pow_tensor_scalar(3.0))?;
                let c1 = ops.t(p3.f_mul_scalar(0.044715))?;
                let s1 = ops.t(f.f_add(&c1))?;
                let c2 = ops.t(s1.f_mul_scalar((2.0 / std::f64::consts::PI).sqrt()))?;
                let th = ops.t(c2.f_tanh())?;
                let s2 = ops.t(th.f_add_scalar(1.0))?;
                let half = ops.t(f.f_mul_scalar(0.5))?;
                let g = ops.t(half.f_mul(&s2))?;
                let dn = self.lin(ops, &g, bi, 3, taps, train)?;
                let dn = if p > 0.0 {
                    ops.t(dn.f_dropout(p, train))?
                } else {
                    dn
                };
                ops.t(x1.f_add(&dn))
            }
            Family::Llama => {
                let hn = self.norm(ops, x, &blk.norm1)?;
                let q = self.lin(ops, &hn, bi, 0, taps, train)?;
                let k = self.lin(ops, &hn, bi, 1, taps, train)?;
                let v = self.lin(ops, &hn, bi, 2, taps, train)?;
                let (q, k, v) = (heads(&q, h), heads(&k, kvh), heads(&v, kvh));
                let q = self.rope(ops, &q)?;
                let k = self.rope(ops, &k)?;
                let a = ops.t(Tensor::f_scaled_dot_product_attention::<Tensor>(
                    &q,
                    &k,
                    &v,
                    None,
                    0.0,
                    true,
                    None,
                    kvh != h,
                ))?;
                let a = merge(ops, &a)?;
                let o = self.lin(ops, &a, bi, 3, taps, train)?;
                let x1 = ops.t(x.f_add(&o))?;
                let h2 = self.norm(ops, &x1, &blk.norm2)?;
                let g = self.lin(ops, &h2, bi, 4, taps, train)?;
                let u = self.lin(ops, &h2, bi, 5, taps, train)?;
                let act = ops.t(g.f_silu())?;
                let gu = ops.t(act.f_mul(&u))?;
                let dn = self.lin(ops, &gu, bi, 6, taps, train)?;
                ops.t(x1.f_add(&dn))
            }
        }
    }

    /// Forward: returns the loss and the PaCA taps.
    pub fn forward(
        &self,
        ops: &mut Ops,
        ids: &Tensor,
        targets: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Vec<PacaTap>)> {
        let mut taps = Vec::new();
        let cfg = &self.cfg;
        let embed = |ops: &mut Ops| -> Result<Tensor> {
            let mut x = ops.t(Tensor::f_embedding(&self.wte, ids, -1, false, false))?;
            if let Some(wpe) = &self.wpe {
                let pos = ops.t(Tensor::f_arange(ids.size()[1], (Kind::Int64, self.device)))?;
                let pe = ops.t(Tensor::f_embedding(wpe, &pos, -1, false, false))?;
                x = ops.t(x.f_add(&pe))?;
                if train && cfg.dropout > 0.0 {
                    x = ops.t(x.f_dropout(cfg.dropout, train))?;
                }
            }
            Ok(x)
        };
        let below = |ops: &mut Ops, taps: &mut Vec<PacaTap>| -> Result<Tensor> {
            let mut x = embed(ops)?;
            for bi in 0..self.lo {
                x = self.block(ops, &x, bi, taps, train)?;
            }
            Ok(x)
        };
        // Nothing below the lowest trained layer records a graph.
        let mut x = if self.wte.requires_grad() {
            below(ops, &mut taps)?
        } else {
            tch::no_grad(|| below(ops, &mut taps))?
        };
        for bi in self.lo..self.blocks.len() {
            x = self.block(ops, &x, bi, &mut taps, train)?;
        }
        let hn = self.norm(ops, &x, &self.final_norm)?;
        let w = self.head.as_ref().unwrap_or(&self.wte);
        let logits = ops.t(hn.f_linear::<Tensor>(w, None))?;
        let lf = if logits.kind() != Kind::Float {
            ops.t(logits.f_to_kind(Kind::Float))?
        } else {
            logits
        };
        let ls = ops.t(lf.f_log_softmax(-1, None::<Kind>))?;
        let v = cfg.vocab as i64;
        let loss = ops.t(ls.view([-1, v]).f_nll_loss::<Tensor>(
            &targets.view([-1]),
            None,
            Reduction::Mean,
            -100,
        ))?;
        Ok((loss, taps))
    }

    /// Backward: gradients of the leaves (autograd) and of each PaCA P (explicit dP = s·dYᵀ·x_idx).
    /// Returns (leaf gradients, PaCA gradients in `paca()` order, explicit ops issued).
    pub fn backward(
        &self,
        loss: &Tensor,
        taps: &[PacaTap],
    ) -> Result<(Vec<Tensor>, Vec<Tensor>, u64)> {
        let leaves = self.leaves();
        let mut inputs: Vec<&Tensor> = leaves.iter().collect();
        inputs.extend(taps.iter().map(|t| &t.y));
        if inputs.is_empty() {
            return Err(Error::InvalidArgument {
                what: "method".into(),
                message: "nothing trains".into(),
            });
        }
        let mut grads = Tensor::f_run_backward(&[loss], &inputs, false, false).map_err(torch)?;
        let dys = grads.split_off(leaves.len());
        let mut ops = Ops::default();
        let mut dp = Vec::with_capacity(taps.len());
        for (tap, dy) in taps.iter().zip(&dys) {
            let l = &self.blocks[tap.at.0].lins[tap.at.1];
            let LinMode::Paca { scale, p, .. } = &l.mode else {
                continue;
            };
            let dy2 = dy.view([-1, l.n]);
            let xi = tap.x_idx.view([-1, l.r]);
            let g = ops.t(dy2.tr().f_mm(&xi))?;
            let g = ops.t(g.f_mul_scalar(*scale))?;
            // Cast to P's dtype (fp32 adapters in a bf16 model), as the reference's backward.
            dp.push(if g.kind() != p.kind() {
                ops.t(g.f_to_kind(p.kind()))?
            } else {
                g
            });
        }
        Ok((grads, dp, ops.n))
    }
}

/// Single-tensor AdamW (torch.optim.AdamW(foreach=False)), eight ops per tensor. PaCA's s·P
/// reaches W's columns at the next training forward, as in the reference.
pub struct AdamW {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    step: i32,
    states: Vec<(Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
            step: 0,
            states: Vec::new(),
        }
    }

    /// One update of `params` with `grads`; returns the ops issued.
    pub fn step(&mut self, params: &mut [Tensor], grads: &[Tensor]) -> Result<u64> {
        let mut ops = Ops::default();
        self.step += 1;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(self.step);
        let bc2 = 1.0 - b2.powi(self.step);
        let step_size = self.lr / bc1;
        if self.states.is_empty() {
            for p in params.iter() {
                let z = || Tensor::f_zeros_like(p).map_err(torch);
                self.states.push((z()?, z()?));
            }
        }
        tch::no_grad(|| -> Result<()> {
            for ((p, g), (m, v)) in params.iter_mut().zip(grads).zip(self.states.iter_mut()) {
                ops.i(p.f_mul_scalar_(1.0 - self.lr * self.weight_decay))?;
                ops.i(m.f_lerp_(g, 1.0 - b1))?;
                let g2 = ops.t(g.f_mul(g))?;
                ops.i(v.f_lerp_(&g2, 1.0 - b2))?;
                // p −= step·m / (√v/√bc2 + eps), as p += m / denom with
                // denom = √v·(−1/(step·√bc2)) − eps/step.
                let mut denom = ops.t(v.f_sqrt())?;
                ops.i(denom.f_mul_scalar_(-1.0 / (step_size * bc2.sqrt())))?;
                ops.i(denom.f_add_scalar_(-self.eps / step_size))?;
                ops.i(p.f_addcdiv_(m, &denom))?;
            }
            Ok(())
        })?;
        Ok(ops.n)
    }
}

impl Net {
    /// The tensors the optimizer updates, in the order of [`Net::backward`]'s gradients.
    pub fn optimizer_params(&self) -> Vec<Tensor> {
        let mut v = self.leaves();
        for (bi, li) in self.paca() {
            if let LinMode::Paca { p, .. } = &self.blocks[bi].lins[li].mode {
                v.push(p.shallow_clone());
            }
        }
        v
    }
}

/// One training step's parts, timed.
pub struct StepTimes {
    pub forward_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
    pub forward_ops: u64,
    pub backward_ops: u64,
    pub optimizer_ops: u64,
    pub loss: f64,
}

/// Run one step (forward with PaCA's column write, backward, AdamW), synchronizing around each phase.
pub fn train_step(net: &Net, opt: &mut AdamW, ids: &Tensor, targets: &Tensor) -> Result<StepTimes> {
    let dev = net.device;
    sync(dev);
    let t0 = Instant::now();
    let mut ops = Ops::default();
    let (loss, taps) = net.forward(&mut ops, ids, targets, true)?;
    sync(dev);
    let t1 = Instant::now();
    let (grads, dp, bops) = net.backward(&loss, &taps)?;
    drop(taps);
    sync(dev);
    let t2 = Instant::now();
    let mut params = net.optimizer_params();
    let all: Vec<Tensor> = grads.into_iter().chain(dp).collect();
    let oops = opt.step(&mut params, &all)?;
    sync(dev);
    let t3 = Instant::now();
    Ok(StepTimes {
        forward_s: (t1 - t0).as_secs_f64(),
        backward_s: (t2 - t1).as_secs_f64(),
        optimizer_s: (t3 - t2).as_secs_f64(),
        forward_ops: ops.n,
        backward_ops: bops,
        optimizer_ops: oops,
        loss: loss.f_double_value(&[]).map_err(torch)?,
    })
}

/// Random token ids and next-token targets (B × S).
pub fn batch(cfg: &ModelConfig, b: i64, s: i64, device: Device) -> Result<(Tensor, Tensor)> {
    let ids =
        Tensor::f_randint(cfg.vocab as i64, [b, s + 1], (Kind::Int64, device)).map_err(torch)?;
    Ok((ids.narrow(1, 0, s), ids.narrow(1, 1, s).contiguous()))
}

/// What one measurement run does.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub model: ModelConfig,
    pub method: MethodSpec,
    pub batch: u64,
    pub seq: u64,
    pub precision: Precision,
    pub warmup: u32,
    pub reps: u32,
}

/// Measure one configuration: warm-up, then `reps` timed steps. Out-of-memory becomes an outcome.
pub fn measure(spec: &RunSpec, device: Device) -> Outcome {
    match measure_inner(spec, device) {
        Ok(m) => Outcome::Measured(Box::new(m)),
        Err(e) if is_oom(&e) => Outcome::OutOfMemory {
            message: e.to_string(),
        },
        Err(e) => Outcome::Failed {
            message: e.to_string(),
        },
    }
}

fn measure_inner(spec: &RunSpec, device: Device) -> Result<Measured> {
    let (b, s) = (spec.batch as i64, spec.seq as i64);
    let net = Net::build(&spec.model, &spec.method, spec.precision, s, device, 0)?;
    let mut opt = AdamW::new(1e-4);
    let (ids, targets) = batch(&spec.model, b, s, device)?;
    for _ in 0..spec.warmup {
        train_step(&net, &mut opt, &ids, &targets)?;
    }
    let (mut f, mut bw, mut o, mut st) = (vec![], vec![], vec![], vec![]);
    let mut last = None;
    for _ in 0..spec.reps.max(1) {
        let t = train_step(&net, &mut opt, &ids, &targets)?;
        f.push(t.forward_s);
        bw.push(t.backward_s);
        o.push(t.optimizer_s);
        st.push(t.forward_s + t.backward_s + t.optimizer_s);
        last = Some(t);
    }
    let Some(last) = last else {
        unreachable!("at least one rep runs")
    };
    let layer = Some(block_bench(&net, b, s, spec.warmup, spec.reps.max(1))?);
    Ok(Measured {
        forward: Stats::from_seconds(&f),
        backward: Stats::from_seconds(&bw),
        optimizer: Stats::from_seconds(&o),
        step: Stats::from_seconds(&st),
        forward_ops: last.forward_ops,
        backward_explicit_ops: last.backward_ops,
        optimizer_ops: last.optimizer_ops,
        final_loss: last.loss,
        layer,
    })
}

/// Time the top block alone: forward, then backward for a random upstream gradient (through
/// `sum(y·g)`, whose backward adds one M×d multiply), PaCA's explicit dP included.
pub fn block_bench(net: &Net, b: i64, s: i64, warmup: u32, reps: u32) -> Result<LayerBench> {
    let top = net.blocks.len() - 1;
    let d = net.cfg.hidden as i64;
    let input_rg = top > net.lo || net.wte.requires_grad();
    let x = randn(&[b, s, d], net.kind, net.device, 1.0)?.set_requires_grad(input_rg);
    let g = randn(&[b, s, d], net.kind, net.device, 1.0)?;
    let leaves: Vec<Tensor> = {
        let mut v = Vec::new();
        net.blocks[top].leaves(&mut |t: &Tensor| {
            if t.requires_grad() {
                v.push(t.shallow_clone());
            }
        });
        if input_rg {
            v.push(x.shallow_clone());
        }
        v
    };
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    for rep in 0..warmup + reps {
        sync(net.device);
        let t0 = Instant::now();
        let mut taps = Vec::new();
        let y = net.block(&mut Ops::default(), &x, top, &mut taps, true)?;
        sync(net.device);
        let t1 = Instant::now();
        let seed = y
            .f_mul(&g)
            .map_err(torch)?
            .f_sum(Kind::Float)
            .map_err(torch)?;
        let mut inputs: Vec<&Tensor> = leaves.iter().collect();
        inputs.extend(taps.iter().map(|t| &t.y));
        let grads = Tensor::f_run_backward(&[&seed], &inputs, false, false).map_err(torch)?;
        for (tap, dy) in taps.iter().zip(&grads[leaves.len()..]) {
            let l = &net.blocks[tap.at.0].lins[tap.at.1];
            if let LinMode::Paca { scale, .. } = &l.mode {
                let dp = dy
                    .view([-1, l.n])
                    .tr()
                    .f_mm(&tap.x_idx.view([-1, l.r]))
                    .map_err(torch)?;
                drop(dp.f_mul_scalar(*scale).map_err(torch)?);
            }
        }
        sync(net.device);
        let t2 = Instant::now();
        if rep >= warmup {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
        }
    }
    Ok(LayerBench {
        block: top,
        forward: Stats::from_seconds(&fwd),
        backward: Stats::from_seconds(&bwd),
    })
}

/// Name of the device for the record.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(i) => std::fs::read_dir("/proc/driver/nvidia/gpus")
            .ok()
            .and_then(|mut d| d.nth(i))
            .and_then(|e| e.ok())
            .and_then(|e| std::fs::read_to_string(e.path().join("information")).ok())
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
            })
            .unwrap_or_else(|| format!("cuda:{i}")),
        other => format!("{other:?}"),
    }
}

/// Run every spec and collect a results file.
pub fn run_suite(
    specs: &[RunSpec],
    device: Device,
    profile: &str,
    command: &str,
    mut progress: impl FnMut(usize, usize, &RunSpec),
) -> Result<ResultsFile> {
    ensure_device(device)?;
    let mut records = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        progress(i, specs.len(), spec);
        let outcome = measure(spec, device);
        records.push(Record {
            model: spec.model.clone(),
            method: spec.method.name,
            rank: spec.method.rank,
            layers: spec.method.layers,
            batch: spec.batch,
            seq: spec.seq,
            precision: spec.precision,
            warmup: spec.warmup,
            reps: spec.reps,
            outcome,
        });
    }
    Ok(ResultsFile {
        schema: SCHEMA,
        device: device_name(device),
        device_kind: match device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".into(),
        },
        profile: profile.to_string(),
        torch_version: torch_version(),
        git_commit: git_commit(),
        timestamp: now_rfc3339(),
        command: command.to_string(),
        records,
    })
}

pub(crate) fn torch_version() -> String {
    std::process::Command::new("python3")
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown (tch 0.24 pairs with 2.11.0)".into())
}

pub(crate) fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Current UTC time as RFC 3339 (civil date from the Unix day count).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Limit libtorch's CPU thread pool (calibrate and validate with the same number).
pub fn set_threads(n: i32) {
    tch::set_num_threads(n);
}

/// Parse `--device`, make sure it is usable (a CUDA request without a GPU fails rather than
/// timing the CPU), and apply `--threads`.
pub fn open_device(arg: &str, threads: Option<i32>) -> Result<Device> {
    let device = parse_device(arg)?;
    if let Some(n) = threads {
        if n < 1 {
            return Err(Error::InvalidArgument {
                what: "--threads".into(),
                message: format!("{n} threads; use 1 or more"),
            });
        }
    }
    ensure_device(device)?;
    if let Some(n) = threads {
        set_threads(n);
    }
    Ok(device)
}
