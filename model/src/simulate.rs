//! Host/device pipeline simulation of one optimizer step.
//!
//! Two resources. The host issues kernels one after another, each costing the runtime's per-op
//! host time (pytorch-eager: Python per op, nn.Module calls, peft's per-adapted-module Python in
//! forward; the C++ autograd engine per node in backward; libtorch: the C++ per-op cost;
//! cuda-graph: one graph launch per phase). The GPU runs kernels in stream order, each starting at
//! max(end of the previous kernel, its issue time). With one stream the critical path is this
//! chain, so the step takes the end time of the last kernel (or of the host, if it is later).
//! Time the GPU spends idle before a kernel is host wait.

use crate::cost::{kernel_cost, Bound, KernelCost};
use crate::graph::{Kernel, Phase, Scope, Segment, StepGraph};
use crate::workload::{Runtime, Workload};
use costsim_hardware::Profile;

/// A segment's costs, evaluated once and reused for every layer that shares it.
#[derive(Debug, Clone)]
pub struct CostedSegment {
    /// Per kernel: (host issue cost s, device cost).
    pub kernels: Vec<(f64, KernelCost)>,
    /// The same without host-only ops, whose host time is folded into the next kernel's:
    /// (host s before the launch, device s, bound index). The simulation's hot loop.
    fast: Vec<(f64, f64, u8)>,
    /// Host time of host-only ops after the last launch.
    tail_host_s: f64,
}

/// Host cost of issuing one op in a phase.
pub fn host_cost(k: &Kernel, phase: Phase, runtime: Runtime, hw: &Profile) -> f64 {
    let h = &hw.host;
    let extra_launches = f64::from(k.launches.saturating_sub(1));
    match runtime {
        Runtime::CudaGraph => 0.0,
        Runtime::Libtorch => {
            h.cpp_op_s * (1.0 + extra_launches) + f64::from(k.host_tensors) * h.cpp_op_s * 0.1
        }
        Runtime::PytorchEager => {
            let per_op = match phase {
                Phase::Backward if !k.recompute => h.autograd_node_s,
                _ => h.python_op_s,
            };
            per_op
                + extra_launches * h.cpp_op_s
                + f64::from(k.module_calls) * h.module_call_s
                + f64::from(k.peft_calls) * h.peft_module_s
                + f64::from(k.host_tensors) * h.cpp_op_s
        }
    }
}

/// Evaluate a segment's kernels once.
pub fn cost_segment(seg: &Segment, phase: Phase, w: &Workload, hw: &Profile) -> CostedSegment {
    let graph = w.runtime == Runtime::CudaGraph;
    let kernels: Vec<(f64, KernelCost)> = seg
        .kernels
        .iter()
        .map(|k| {
            (
                host_cost(k, phase, w.runtime, hw),
                kernel_cost(k, hw, graph),
            )
        })
        .collect();
    let mut fast = Vec::with_capacity(kernels.len());
    let mut pending = 0.0;
    for (host_s, c) in &kernels {
        pending += host_s;
        if launches_work(c) {
            fast.push((pending, c.device_s, bound_index(c.bound) as u8));
            pending = 0.0;
        }
    }
    CostedSegment {
        kernels,
        fast,
        tail_host_s: pending,
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
    /// Whether the GPU waited on the host before each kernel of the last simulated instance of
    /// each segment: keyed like `scopes`, one flag per kernel.
    pub host_waited: Vec<(Scope, Phase, Vec<bool>)>,
}

struct Clock {
    host: f64,
    gpu: f64,
}

fn run(
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
    for (host_s, c) in &seg.kernels {
        clock.host += host_s;
        span.host_s += host_s;
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
    let three = |s: &crate::graph::ScopeGraph| {
        [
            cost_segment(&s.forward, Phase::Forward, w, hw),
            cost_segment(&s.backward, Phase::Backward, w, hw),
            cost_segment(&s.backward_accum, Phase::Backward, w, hw),
        ]
    };
    CostedGraph {
        embedding: three(&g.embedding),
        layers: g.layer_graphs.iter().map(three).collect(),
        head: three(&g.head),
        optimizer: cost_segment(&g.optimizer, Phase::Optimizer, w, hw),
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
    let n_layers = g.layer_class.len();
    // scope index: 0 embedding, 1..=L layers, L+1 head, L+2 optimizer
    let n_scopes = n_layers + 3;
    let mut fwd = vec![Span::default(); n_scopes];
    let mut bwd = vec![Span::default(); n_scopes];
    let mut opt = Span::default();
    let mut waited_fwd: Vec<Vec<bool>> = vec![Vec::new(); n_scopes];
    let mut waited_bwd: Vec<Vec<bool>> = vec![Vec::new(); n_scopes];
    let mut waited_opt = Vec::new();
    let mut clock = Clock {
        host: 0.0,
        gpu: 0.0,
    };
    let graph_launch = if w.runtime == Runtime::CudaGraph {
        hw.host.python_op_s
    } else {
        0.0
    };
    for mb in 0..w.grad_accum {
        let b = if mb == 0 { 1 } else { 2 };
        clock.host += graph_launch;
        run(
            hw.synchronous,
            &mut clock,
            &cg.embedding[0],
            &mut fwd[0],
            record_waits.then_some(&mut waited_fwd[0]),
        );
        for (i, &c) in g.layer_class.iter().enumerate() {
            run(
                hw.synchronous,
                &mut clock,
                &cg.layers[c][0],
                &mut fwd[i + 1],
                record_waits.then_some(&mut waited_fwd[i + 1]),
            );
        }
        run(
            hw.synchronous,
            &mut clock,
            &cg.head[0],
            &mut fwd[n_layers + 1],
            record_waits.then_some(&mut waited_fwd[n_layers + 1]),
        );
        clock.host += graph_launch;
        run(
            hw.synchronous,
            &mut clock,
            &cg.head[b],
            &mut bwd[n_layers + 1],
            record_waits.then_some(&mut waited_bwd[n_layers + 1]),
        );
        for (i, &c) in g.layer_class.iter().enumerate().rev() {
            run(
                hw.synchronous,
                &mut clock,
                &cg.layers[c][b],
                &mut bwd[i + 1],
                record_waits.then_some(&mut waited_bwd[i + 1]),
            );
        }
        run(
            hw.synchronous,
            &mut clock,
            &cg.embedding[b],
            &mut bwd[0],
            record_waits.then_some(&mut waited_bwd[0]),
        );
    }
    clock.host += graph_launch;
    run(
        hw.synchronous,
        &mut clock,
        &cg.optimizer,
        &mut opt,
        record_waits.then_some(&mut waited_opt),
    );
    // The step ends when both the GPU and the host are done (the host may trail with
    // host-only work such as zero_grad).
    if clock.host > clock.gpu {
        opt.time_s += clock.host - clock.gpu;
        opt.host_wait_s += clock.host - clock.gpu;
        opt.by_bound[3] += clock.host - clock.gpu;
        clock.gpu = clock.host;
    }
    // Exact launch counts (run() counted ops).
    let launches = |seg: &Segment| {
        seg.kernels
            .iter()
            .map(|k| u64::from(k.launches))
            .sum::<u64>()
    };
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
    let sg = |i: usize| -> &crate::graph::ScopeGraph {
        if i == 0 {
            &g.embedding
        } else if i <= n_layers {
            g.layer(i - 1)
        } else {
            &g.head
        }
    };
    for i in 0..=n_layers + 1 {
        let s = sg(i);
        fwd[i].launches = launches(&s.forward) * accum;
        bwd[i].launches = launches(&s.backward) + launches(&s.backward_accum) * (accum - 1);
    }
    opt.launches = launches(&g.optimizer);

    let mut phases = [Span::default(); 3];
    let mut scopes = Vec::with_capacity(2 * n_scopes);
    let mut host_waited = Vec::with_capacity(2 * n_scopes);
    for i in 0..=n_layers + 1 {
        phases[0].add(&fwd[i]);
        phases[1].add(&bwd[i]);
        scopes.push((scope_of(i), Phase::Forward, fwd[i]));
        scopes.push((scope_of(i), Phase::Backward, bwd[i]));
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
    phases[2] = opt;
    scopes.push((Scope::Optimizer, Phase::Optimizer, opt));
    host_waited.push((Scope::Optimizer, Phase::Optimizer, waited_opt));
    Timeline {
        step_s: clock.gpu,
        phases,
        scopes,
        host_waited,
    }
}
