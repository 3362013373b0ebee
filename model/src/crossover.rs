//! Crossovers: where along one axis (sequence length, batch size or rank) LoRA becomes faster or
//! slower than full fine-tuning and than PaCA, and which part of the cost drives it.
//!
//! The axis is scanned on a grid; wherever the time ratio LoRA / other crosses 1 between two grid
//! values, integer bisection narrows it to two adjacent values. The step-time difference
//! ΔT = T_LoRA − T_other is split into parts by matching the two kernel graphs: kernels present
//! in both (same scope, module, op; LoRA's `base_layer` counts as the plain module) are shared;
//! LoRA's unmatched kernels are its adapter chain (casts, dropout, skinny GEMMs, scale, add and
//! their backward), split by what bounds them (memory = bytes, launch = launch floor, compute);
//! the other method's unmatched kernels are what LoRA avoids (full's weight-gradient GEMMs, PaCA's
//! partial-gradient kernels); host wait, the optimizer phase and the training loop's own work are
//! compared as wholes; the rest is the shared kernels' difference. The driver of a crossover is the part whose change across
//! the bracketing grid interval moves ΔT the way it crosses, the largest such.

use crate::arch::ModelConfig;
use crate::graph::{self, Phase, Scope, StepGraph};
use crate::method::{MethodName, MethodOptions, MethodSpec};
use crate::predict::{predict_with_graph, ConfigRef, Detail};
use crate::simulate::{self, CostedSegment};
use crate::workload::Workload;
use crate::{Error, Result};
use costsim_hardware::Profile;
use rustc_hash::FxHashMap;
use serde::Serialize;

/// The axis a crossover search varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    Seq,
    Batch,
    /// The LoRA reference rank (PaCA takes the paper's matched 2r).
    Rank,
}

impl Axis {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seq => "seq",
            Self::Batch => "batch",
            Self::Rank => "rank",
        }
    }
}

/// What a search needs.
#[derive(Debug, Clone)]
pub struct Search {
    pub model: ModelConfig,
    pub hw: Profile,
    /// Batch, seq and everything else; the varied one is replaced per point.
    pub workload: Workload,
    /// Method options; `rank` is the LoRA reference rank when the rank is not varied.
    pub options: MethodOptions,
    pub axis: Axis,
    /// Grid values along the axis, ascending.
    pub values: Vec<u64>,
}

/// One part of ΔT = T_LoRA − T_other, ms per optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Part {
    pub name: &'static str,
    pub ms: f64,
}

/// The parts at one axis value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breakdown {
    pub value: u64,
    pub lora_ms: f64,
    pub other_ms: f64,
    pub parts: Vec<Part>,
}

/// A crossing of the ratio 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Crossing {
    /// Last value on the old side and first on the new side (adjacent after bisection).
    pub before: u64,
    pub after: u64,
    pub ratio_before: f64,
    pub ratio_after: f64,
    /// True when LoRA becomes the faster one as the axis grows.
    pub lora_becomes_faster: bool,
    /// The bracketing grid values and the parts there.
    pub grid_before: Breakdown,
    pub grid_after: Breakdown,
    /// The part that drives the crossing, and its change across the grid interval (ms).
    pub driver: &'static str,
    pub driver_change_ms: f64,
    /// The methods of this comparison (LoRA, the other) that do not fit in the device's memory
    /// at `before` or `after`: the crossing is then predicted for a configuration that cannot
    /// run. Omitted when both fit on both sides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub does_not_fit: Vec<MethodName>,
}

/// A grid value at which some methods do not fit in the device's memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoFit {
    pub value: u64,
    pub methods: Vec<MethodName>,
}

/// LoRA against one other method along the axis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub other: MethodName,
    /// (value, LoRA ms, other ms, ratio LoRA / other) per grid value; invalid values skipped.
    pub points: Vec<(u64, f64, f64, f64)>,
    pub crossings: Vec<Crossing>,
    /// Grid values where LoRA or the other method is not a valid configuration, with why. Fewer
    /// than two points left (PaCA's 2r columns past a small model's width): no crossing is
    /// searched, and this says why.
    pub skipped: Vec<(u64, String)>,
}

/// The search's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub model: String,
    pub hw: String,
    pub axis: Axis,
    pub comparisons: Vec<Comparison>,
    /// Points of the grid that were not valid configurations for LoRA or full fine-tuning, with
    /// why (PaCA's own: [`Comparison::skipped`]).
    pub skipped: Vec<(u64, String)>,
    /// Grid values where LoRA, full or PaCA do not fit in memory (peak + reserve > capacity).
    /// Their times are still predicted. Omitted when every method fits everywhere.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub does_not_fit: Vec<NoFit>,
}

const PARTS: [&str; 8] = [
    "adapter kernels: bytes (memory-bound)",
    "adapter kernels: launches (launch floor)",
    "adapter kernels: math (compute-bound)",
    "kernels LoRA avoids",
    "host wait",
    "optimizer",
    "training loop",
    "shared kernels",
];

struct Eval {
    spec: MethodSpec,
    w: Workload,
}

impl Search {
    fn point(&self, value: u64, method: MethodName) -> Result<Eval> {
        let mut w = self.workload.clone();
        let mut o = self.options.clone();
        match self.axis {
            Axis::Seq => w.seq = value,
            Axis::Batch => w.batch = value,
            Axis::Rank => o.rank = Some(value),
        }
        w.validate(&self.model)?;
        let spec = MethodSpec::resolve(method, &o, &self.model, true)?;
        Ok(Eval { spec, w })
    }

    fn step_ms(&self, value: u64, method: MethodName) -> Result<f64> {
        let e = self.point(value, method)?;
        let g = graph::build(&self.model, &e.spec, &e.w);
        Ok(self.predict(&e, &g).step_ms)
    }

    fn predict(&self, e: &Eval, g: &StepGraph) -> crate::Prediction {
        predict_with_graph(
            ConfigRef {
                model: &self.model,
                method: &e.spec,
                workload: &e.w,
                hw: &self.hw,
            },
            g,
            Detail::default(),
            None,
            &mut crate::cost::GemmMemo::default(),
        )
    }

    /// Whether `method` fits the device's memory at `value` (the memory model of `costsim fit`).
    pub fn fits(&self, value: u64, method: MethodName) -> Result<bool> {
        let e = self.point(value, method)?;
        let cfg = crate::Config {
            model: self.model.clone(),
            method: e.spec,
            workload: e.w,
            hw: self.hw.clone(),
        };
        Ok(crate::fit::memory_of(&cfg).fits)
    }

    /// The grid values where LoRA, full or PaCA do not fit (invalid values left out).
    pub fn memory(&self) -> Vec<NoFit> {
        self.values
            .iter()
            .filter_map(|&v| {
                let methods: Vec<MethodName> =
                    [MethodName::Lora, MethodName::Full, MethodName::Paca]
                        .into_iter()
                        .filter(|&m| matches!(self.fits(v, m), Ok(false)))
                        .collect();
                (!methods.is_empty()).then_some(NoFit { value: v, methods })
            })
            .collect()
    }

    fn ratio(&self, value: u64, other: MethodName) -> Result<f64> {
        Ok(self.step_ms(value, MethodName::Lora)? / self.step_ms(value, other)?)
    }

    /// ΔT split into parts at one value.
    pub fn breakdown(&self, value: u64, other: MethodName) -> Result<Breakdown> {
        let (a, b) = (
            self.point(value, MethodName::Lora)?,
            self.point(value, other)?,
        );
        let (ga, gb) = (
            graph::build(&self.model, &a.spec, &a.w),
            graph::build(&self.model, &b.spec, &b.w),
        );
        let (pa, pb) = (self.predict(&a, &ga), self.predict(&b, &gb));
        let accum = f64::from(a.w.grad_accum);
        let ka = kernel_times(&ga, &simulate::cost_graph(&ga, &a.w, &self.hw));
        let mut kb = kernel_times(&gb, &simulate::cost_graph(&gb, &b.w, &self.hw));
        // [memory, launch, compute] of LoRA-only kernels; other-only total.
        let mut adapter = [0.0; 3];
        for (key, times) in ka {
            let theirs = kb.entry(key).or_default();
            for (t, bound) in times {
                if theirs.pop().is_none() {
                    let i = match bound {
                        crate::cost::Bound::Memory => 0,
                        crate::cost::Bound::Launch => 1,
                        _ => 2,
                    };
                    adapter[i] += t;
                }
            }
        }
        let avoided: f64 = kb.values().flatten().map(|(t, _)| t).sum();
        let host = |p: &crate::Prediction| -> f64 {
            p.phases[..2].iter().map(|ph| ph.host_ms).sum::<f64>() * accum
        };
        let ms = |s: f64| s * 1e3 * accum;
        let mut parts = vec![
            ms(adapter[0]),
            ms(adapter[1]),
            ms(adapter[2]),
            -ms(avoided),
            host(&pa) - host(&pb),
            pa.optimizer_ms - pb.optimizer_ms,
            pa.loop_ms - pb.loop_ms,
        ];
        let delta = pa.step_ms - pb.step_ms;
        parts.push(delta - parts.iter().sum::<f64>());
        Ok(Breakdown {
            value,
            lora_ms: pa.step_ms,
            other_ms: pb.step_ms,
            parts: PARTS
                .iter()
                .zip(parts)
                .map(|(&name, ms)| Part { name, ms })
                .collect(),
        })
    }

    /// Scan the grid, bisect every crossing, explain it.
    pub fn run(&self) -> Result<Report> {
        if self.values.len() < 2 {
            return Err(Error::InvalidArgument {
                what: "--range".into(),
                message: "a crossover search needs at least two values along the axis".into(),
            });
        }
        let mut skipped = Vec::new();
        let mut comparisons = Vec::new();
        for other in [MethodName::Full, MethodName::Paca] {
            let mut points = Vec::new();
            let mut own_skipped = Vec::new();
            for &v in &self.values {
                match (self.step_ms(v, MethodName::Lora), self.step_ms(v, other)) {
                    (Ok(a), Ok(b)) => points.push((v, a, b, a / b)),
                    (Err(e), _) | (_, Err(e)) => own_skipped.push((v, e.to_string())),
                }
            }
            if other == MethodName::Full {
                skipped.clone_from(&own_skipped);
            }
            if points.len() < 2 && other != MethodName::Full {
                // LoRA against full fine-tuning stands on its own: PaCA's comparison is reported
                // empty, with why, rather than failing the whole search.
                comparisons.push(Comparison {
                    other,
                    points,
                    crossings: Vec::new(),
                    skipped: own_skipped,
                });
                continue;
            }
            if points.len() < 2 {
                // An empty answer is not "faster throughout": say why nothing was evaluated.
                let reason = own_skipped
                    .first()
                    .map(|(v, e)| format!("; at {} {v}: {e}", self.axis.as_str()))
                    .unwrap_or_default();
                return Err(Error::InvalidArgument {
                    what: "--range".into(),
                    message: format!(
                        "only {} of the {} values along {} give a valid configuration for LoRA \
                         and {other} (a crossover needs two){reason}; choose a range the model \
                         and method allow",
                        points.len(),
                        self.values.len(),
                        self.axis.as_str()
                    ),
                });
            }
            let mut crossings = Vec::new();
            for pair in points.windows(2) {
                let ((v0, .., r0), (v1, .., r1)) = (pair[0], pair[1]);
                if (r0 < 1.0) == (r1 < 1.0) {
                    continue;
                }
                let (mut lo, mut hi, mut rlo, mut rhi) = (v0, v1, r0, r1);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    let r = self.ratio(mid, other)?;
                    if (r < 1.0) == (rlo < 1.0) {
                        (lo, rlo) = (mid, r);
                    } else {
                        (hi, rhi) = (mid, r);
                    }
                }
                let (b0, b1) = (self.breakdown(v0, other)?, self.breakdown(v1, other)?);
                let grows = (r1 - 1.0) > (r0 - 1.0);
                let (driver, change) = b0
                    .parts
                    .iter()
                    .zip(&b1.parts)
                    .map(|(p0, p1)| (p0.name, p1.ms - p0.ms))
                    .filter(|(_, c)| (*c > 0.0) == grows)
                    .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                    .unwrap_or(("shared kernels", 0.0));
                let mut does_not_fit = Vec::new();
                for m in [MethodName::Lora, other] {
                    if !(self.fits(lo, m)? && self.fits(hi, m)?) {
                        does_not_fit.push(m);
                    }
                }
                crossings.push(Crossing {
                    does_not_fit,
                    before: lo,
                    after: hi,
                    ratio_before: rlo,
                    ratio_after: rhi,
                    lora_becomes_faster: rhi < 1.0,
                    grid_before: b0,
                    grid_after: b1,
                    driver,
                    driver_change_ms: change,
                });
            }
            comparisons.push(Comparison {
                other,
                points,
                crossings,
                skipped: own_skipped,
            });
        }
        Ok(Report {
            model: self.model.name.clone(),
            hw: self.hw.name.clone(),
            axis: self.axis,
            comparisons,
            skipped,
            does_not_fit: self.memory(),
        })
    }
}

/// Key of a kernel for matching two methods' graphs: phase, scope, module, piece (LoRA's
/// `base_layer` is the plain module), op name.
type Key = (Phase, Scope, &'static str, &'static str, &'static str);

/// Device time (s) and bound of every forward and backward kernel (first micro-batch), by key.
fn kernel_times(
    g: &StepGraph,
    cg: &simulate::CostedGraph,
) -> FxHashMap<Key, Vec<(f64, crate::cost::Bound)>> {
    let mut map: FxHashMap<Key, Vec<(f64, crate::cost::Bound)>> = FxHashMap::default();
    let mut add = |scope: Scope, phase: Phase, seg: &graph::Segment, c: &CostedSegment| {
        for (k, (_, cost)) in seg.kernels.iter().zip(&c.kernels) {
            if k.launches == 0 {
                continue;
            }
            let piece = if k.piece == "base_layer" { "" } else { k.piece };
            map.entry((phase, scope, k.module, piece, k.name))
                .or_default()
                .push((cost.device_s, cost.bound));
        }
    };
    add(
        Scope::Embedding,
        Phase::Forward,
        &g.embedding.forward,
        &cg.embedding[0],
    );
    add(
        Scope::Embedding,
        Phase::Backward,
        &g.embedding.backward,
        &cg.embedding[1],
    );
    for (i, &c) in g.layer_class.iter().enumerate() {
        let s = Scope::Layer(i as u32);
        add(
            s,
            Phase::Forward,
            &g.layer_graphs[c].forward,
            &cg.layers[c][0],
        );
        add(
            s,
            Phase::Backward,
            &g.layer_graphs[c].backward,
            &cg.layers[c][1],
        );
    }
    add(Scope::Head, Phase::Forward, &g.head.forward, &cg.head[0]);
    add(Scope::Head, Phase::Backward, &g.head.backward, &cg.head[1]);
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::preset;
    use costsim_hardware::resolve_device;

    fn search(model: &str, hw: &str, axis: Axis, values: Vec<u64>) -> Search {
        Search {
            model: preset(model).unwrap(),
            hw: resolve_device(hw).unwrap(),
            // The foreach AdamW the crossings below were worked out with.
            workload: Workload {
                optimizer: crate::workload::Optimizer::AdamwForeach,
                ..Workload::default()
            },
            options: MethodOptions::default(),
            axis,
            values,
        }
    }

    /// (key, device µs, bound as reported).
    type Row = (String, f64, crate::cost::Bound);

    /// Kernel rows of one method's prediction at `seq` (the public `predict` path, not the
    /// breakdown's own graph walk): (phase, module path with LoRA's `.base_layer` dropped, op name,
    /// device µs) per launching forward/backward kernel.
    fn rows(s: &Search, seq: u64, method: MethodName) -> (crate::Prediction, Vec<Row>) {
        let spec = MethodSpec::resolve(method, &s.options, &s.model, true).unwrap();
        let cfg = crate::Config {
            model: s.model.clone(),
            method: spec,
            workload: Workload {
                seq,
                ..s.workload.clone()
            },
            hw: s.hw.clone(),
        };
        let detail = Detail {
            per_layer: false,
            kernels: true,
        };
        let p = crate::predict(&cfg, detail, None);
        let rows = p
            .kernel_rows
            .as_ref()
            .unwrap()
            .iter()
            .filter(|k| k.phase != Phase::Optimizer && k.launches > 0)
            .map(|k| {
                let module = k.module.strip_suffix(".base_layer").unwrap_or(&k.module);
                (
                    format!("{} {} {}", k.phase.as_str(), module, k.name),
                    k.device_us,
                    k.bound,
                )
            })
            .collect();
        (p, rows)
    }

    /// Multiset difference by key: the rows of `a` left after matching, per key, as many rows as
    /// `b` has with that key; returns (Σ µs of `a`'s leftovers, their keys). Which occurrences of
    /// a repeated key count as matched is a convention: `match_from_end` matches the last ones in
    /// issue order (the breakdown does so for the other method: of full's two `to_copy_backward`
    /// in the head, LoRA's one is matched to the later).
    fn unmatched(a: &[Row], b: &[Row], match_from_end: bool) -> (f64, Vec<String>, [f64; 4]) {
        let mut count: FxHashMap<&str, usize> = FxHashMap::default();
        for (k, ..) in b {
            *count.entry(k.as_str()).or_default() += 1;
        }
        let (mut us, mut keys, mut by_bound) = (0.0, Vec::new(), [0.0; 4]);
        let order: Box<dyn Iterator<Item = &Row>> = if match_from_end {
            Box::new(a.iter().rev())
        } else {
            Box::new(a.iter())
        };
        for (k, t, bound) in order {
            match count.get_mut(k.as_str()) {
                Some(n) if *n > 0 => *n -= 1,
                _ => {
                    us += t;
                    keys.push(k.clone());
                    by_bound[*bound as usize] += t;
                }
            }
        }
        (us, keys, by_bound)
    }

    #[test]
    fn parts_agree_with_two_independent_predictions() {
        // Every part is recomputed from two `predict` calls and their kernel rows, matched here
        // by (phase, module path, op) — a second implementation of the breakdown's matching,
        // on the report's rows rather than the graph's segments. The default workload has
        // grad_accum 1, so first-micro-batch rows are the whole step's kernels.
        // Two regimes: llama2-7b at seq 512 keeps the A100 busy (no host wait), gpt2-medium at
        // seq 64 is host-bound (the GPU waits on Python), so the host-wait part is exercised.
        let (mut host_bound_seen, mut bounds_checked) = (false, false);
        for (model, seq, other) in [
            ("llama2-7b", 512, MethodName::Full),
            ("llama2-7b", 512, MethodName::Paca),
            ("gpt2-medium", 64, MethodName::Full),
            ("gpt2-medium", 64, MethodName::Paca),
        ] {
            let s = search(model, "a100", Axis::Seq, vec![seq]);
            assert_eq!(s.workload.grad_accum, 1);
            let llama = model == "llama2-7b";
            let b = s.breakdown(seq, other).unwrap();
            let (pl, rl) = rows(&s, seq, MethodName::Lora);
            let (po, ro) = rows(&s, seq, other);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
            let part = |name: &str| b.parts.iter().find(|p| p.name == name).unwrap().ms;
            assert_eq!(b.parts.len(), 8);
            // The two step times, and the parts' sum is their difference.
            // (Kernel rows turn the simulation's layer replay off: equal to rounding.)
            assert!(close(b.lora_ms, pl.step_ms) && close(b.other_ms, po.step_ms));
            let sum: f64 = b.parts.iter().map(|p| p.ms).sum();
            assert!(close(sum, pl.step_ms - po.step_ms), "{other}: {sum}");
            // Optimizer: the difference of the two predictions' optimizer phases.
            assert!(close(part("optimizer"), pl.optimizer_ms - po.optimizer_ms));
            // Training loop: the difference of the two predictions' loop times.
            assert!(close(part("training loop"), pl.loop_ms - po.loop_ms));
            // Host wait: the GPU's wait on the host in forward and backward, per prediction.
            let wait = |p: &crate::Prediction| p.phases[0].host_ms + p.phases[1].host_ms;
            assert!(close(part("host wait"), wait(&pl) - wait(&po)));
            host_bound_seen |= wait(&pl) > 0.0 && wait(&pl) != wait(&po);
            // Adapter kernels: LoRA's rows without a counterpart in the other method.
            let (adapter_us, adapter_keys, adapter_by_bound) = unmatched(&rl, &ro, false);
            let adapter: f64 = b.parts[..3].iter().map(|p| p.ms).sum();
            assert!(
                close(adapter, adapter_us / 1e3),
                "{other}: {adapter} vs {adapter_us} us"
            );
            // Split by bound where no adapter row waited on the host (a waited row reports the
            // bound `host` instead of its own).
            let [compute, memory, launch, host] = adapter_by_bound;
            if host == 0.0 {
                for (i, want_us) in [memory, launch, compute].into_iter().enumerate() {
                    assert!(
                        close(b.parts[i].ms, want_us / 1e3),
                        "{model} {other} {}: {} vs {}",
                        b.parts[i].name,
                        b.parts[i].ms,
                        want_us / 1e3
                    );
                }
                bounds_checked = true;
            }
            // Against full fine-tuning they all sit in LoRA's adapted projections: the adapter
            // chain (lora_A/B, dropout, scale, add, casts) and its backward, never base_layer.
            if llama && other == MethodName::Full {
                assert!(!adapter_keys.is_empty());
                for k in &adapter_keys {
                    assert!(k.contains("_proj"), "{k}");
                }
                assert!(adapter_keys.iter().any(|k| k.contains("_proj.lora_A mm")));
                assert!(adapter_keys
                    .iter()
                    .any(|k| k.contains("_proj.lora_dropout native_dropout")));
            }
            // Kernels LoRA avoids: the other's rows without a counterpart in LoRA, negated.
            let (avoided_us, avoided_keys, _) = unmatched(&ro, &rl, true);
            assert!(close(part("kernels LoRA avoids"), -avoided_us / 1e3));
            if llama && other == MethodName::Full {
                // Among them every dense weight gradient of the 7 projections × 32 layers.
                let dw = avoided_keys
                    .iter()
                    .filter(|k| k.contains("_proj mm_dW"))
                    .count();
                assert_eq!(dw, 7 * 32);
            }
            // Shared kernels: the matched rows' device time, LoRA's minus the other's.
            let total = |r: &[Row]| r.iter().map(|(_, t, _)| t).sum::<f64>();
            let shared_us = (total(&rl) - adapter_us) - (total(&ro) - avoided_us);
            assert!(
                close(part("shared kernels"), shared_us / 1e3),
                "{other}: {} vs {}",
                part("shared kernels"),
                shared_us / 1e3
            );
            // LoRA adds adapter kernels and avoids some of the other's.
            assert!(adapter > 0.0, "{b:?}");
            assert!(part("kernels LoRA avoids") < 0.0, "{b:?}");
        }
        assert!(host_bound_seen, "no case exercised the host-wait part");
        assert!(bounds_checked, "no case checked the adapter parts by bound");
    }

    #[test]
    fn crossings_are_bracketed_by_adjacent_values_on_either_side_of_one() {
        // gpt2-large on an A100, batch 8, in a bare loop: host-bound at short sequences, where
        // LoRA's extra ops and module calls make it slower; faster once full's weight gradients
        // cost more (256..512); slower again as the adapters' activation bytes grow
        // (512..1024). (gpt2-medium, used before the real stack's module calls were counted,
        // stays host-bound enough for LoRA to be slower throughout.)
        let mut s = search(
            "gpt2-large",
            "a100",
            Axis::Seq,
            vec![64, 128, 256, 512, 1024],
        );
        s.workload.training_loop = crate::TrainingLoop::Bare;
        let r = s.run().unwrap();
        let mut found = 0;
        for c in &r.comparisons {
            for x in &c.crossings {
                assert_eq!(x.after, x.before + 1);
                assert_ne!(x.ratio_before < 1.0, x.ratio_after < 1.0);
                // Bisection result agrees with direct evaluation.
                let rb = s.ratio(x.before, c.other).unwrap();
                let ra = s.ratio(x.after, c.other).unwrap();
                assert_eq!((rb, ra), (x.ratio_before, x.ratio_after));
                found += 1;
            }
            // Each grid interval without a sign change has none reported.
            let changes = c
                .points
                .windows(2)
                .filter(|p| (p[0].3 < 1.0) != (p[1].3 < 1.0))
                .count();
            assert_eq!(changes, c.crossings.len());
        }
        assert!(found >= 1, "the test must exercise at least one crossing");
    }

    #[test]
    fn invalid_points_are_skipped_with_the_reason() {
        let s = search("gpt2", "a100", Axis::Seq, vec![512, 1024, 2048]);
        let r = s.run().unwrap();
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].0, 2048);
        assert!(r.skipped[0].1.contains("positions"));
        assert_eq!(r.comparisons[0].points.len(), 2);
    }

    /// Values PaCA alone cannot take (its 2r columns past gpt2's width 768 from r = 385) are
    /// skipped in its comparison with why, not dropped silently nor listed as LoRA's; a range
    /// where PaCA has no two valid values still reports LoRA against full fine-tuning.
    #[test]
    fn paca_s_own_invalid_values_are_skipped_in_its_comparison() {
        let s = search("gpt2", "a100", Axis::Rank, vec![128, 256, 512]);
        let r = s.run().unwrap();
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        let (full, paca) = (&r.comparisons[0], &r.comparisons[1]);
        assert_eq!(
            (full.other, paca.other),
            (MethodName::Full, MethodName::Paca)
        );
        assert_eq!(full.points.len(), 3);
        assert!(full.skipped.is_empty());
        assert_eq!(paca.points.len(), 2);
        assert_eq!(paca.skipped.len(), 1);
        assert_eq!(paca.skipped[0].0, 512);
        assert!(
            paca.skipped[0].1.contains("1024 columns"),
            "{}",
            paca.skipped[0].1
        );

        let s = search("gpt2", "a100", Axis::Rank, vec![400, 500, 600]);
        let r = s.run().unwrap();
        assert_eq!(r.comparisons[0].points.len(), 3);
        let paca = &r.comparisons[1];
        assert!(paca.points.is_empty() && paca.crossings.is_empty());
        assert_eq!(
            paca.skipped.iter().map(|p| p.0).collect::<Vec<_>>(),
            [400, 500, 600]
        );
    }

    #[test]
    fn a_range_without_two_valid_points_is_an_error_not_a_verdict() {
        // gpt2 has 1024 positions: only 1024 is valid here.
        let s = search("gpt2", "a100", Axis::Seq, vec![1024, 2048, 4096]);
        let err = s.run().unwrap_err().to_string();
        assert!(err.contains("only 1 of the 3 values along seq"), "{err}");
        assert!(
            err.contains("at seq 2048") && err.contains("positions"),
            "{err}"
        );
    }
    #[test]
    fn memory_verdicts_by_hand() {
        // llama2-7b (6.74 G parameters) on an 80 GiB A100, one sequence per micro-batch.
        // Full fine-tuning under bf16 autocast keeps fp32 weights, gradients and AdamW's two
        // states: 16 bytes × 6.74e9 ≈ 108 GB > 80 GiB − 1 GiB ≈ 84.8 GB, at any length.
        // LoRA and PaCA keep the fp32 weights (4 × 6.74e9 ≈ 27 GB) plus adapters and the
        // activations of 64 or 128 tokens (tens of MB): they fit.
        let mut s = search("llama2-7b", "a100", Axis::Seq, vec![64, 128]);
        s.workload.batch = 1;
        assert!(!s.fits(64, MethodName::Full).unwrap());
        assert!(s.fits(64, MethodName::Lora).unwrap());
        assert!(s.fits(128, MethodName::Paca).unwrap());
        let want = [64, 128].map(|value| NoFit {
            value,
            methods: vec![MethodName::Full],
        });
        assert_eq!(s.memory(), want);
    }

    #[test]
    fn two_values_are_enough_and_one_is_not() {
        let s = search("gpt2", "a100", Axis::Seq, vec![512]);
        let err = s.run().unwrap_err().to_string();
        assert!(err.contains("at least two values"), "{err}");
        let s = search("gpt2", "a100", Axis::Seq, vec![256, 512]);
        let r = s.run().unwrap();
        assert_eq!(r.comparisons.len(), 2);
        assert_eq!(r.comparisons[0].points.len(), 2);
    }

    #[test]
    fn parts_count_every_micro_batch() {
        // grad_accum 2: the adapter, avoided and host-wait parts are per optimizer step, twice
        // the first micro-batch's (kernel rows list the first micro-batch; gpt2-medium at seq
        // 64 is host-bound, so the GPU waits in both).
        let mut s = search("gpt2-medium", "a100", Axis::Seq, vec![64]);
        s.workload.grad_accum = 2;
        let b = s.breakdown(64, MethodName::Full).unwrap();
        let (pl, rl) = rows(&s, 64, MethodName::Lora);
        let (po, ro) = rows(&s, 64, MethodName::Full);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        let part = |name: &str| b.parts.iter().find(|p| p.name == name).unwrap().ms;
        let wait = |p: &crate::Prediction| p.phases[0].host_ms + p.phases[1].host_ms;
        assert!(wait(&pl) > 0.0 && wait(&pl) != wait(&po));
        // phases report per micro-batch: × 2.
        assert!(close(part("host wait"), 2.0 * (wait(&pl) - wait(&po))));
        let (adapter_us, ..) = unmatched(&rl, &ro, false);
        let adapter: f64 = b.parts[..3].iter().map(|p| p.ms).sum();
        assert!(
            close(adapter, 2.0 * adapter_us / 1e3),
            "{adapter} vs 2 × {adapter_us} us"
        );
        assert!(adapter > 0.0);
        let sum: f64 = b.parts.iter().map(|p| p.ms).sum();
        assert!(close(sum, pl.step_ms - po.step_ms));
    }
    #[test]
    fn the_driver_is_the_largest_change_in_the_crossings_direction() {
        // As in the bracketing test: gpt2-large, A100, bare loop; LoRA becomes faster between
        // 256 and 512 and slower again between 512 and 1024, so both directions occur.
        let mut s = search("gpt2-large", "a100", Axis::Seq, vec![256, 512, 1024]);
        s.workload.training_loop = crate::TrainingLoop::Bare;
        let r = s.run().unwrap();
        let (mut faster, mut slower) = (0, 0);
        for c in &r.comparisons {
            for x in &c.crossings {
                // The bracketing grid values' ratios lie either side of 1; the ratio LoRA / other
                // grows across the interval exactly when LoRA becomes the slower one, and then
                // ΔT = T_LoRA − T_other grows: the driver is a part that grew, the largest.
                let grows = !x.lora_becomes_faster;
                if grows {
                    slower += 1;
                } else {
                    faster += 1;
                }
                let mut best: Option<(&str, f64)> = None;
                for (p0, p1) in x.grid_before.parts.iter().zip(&x.grid_after.parts) {
                    let change = p1.ms - p0.ms;
                    if (change > 0.0) != grows {
                        continue;
                    }
                    if best.is_none_or(|(_, b)| change.abs() > b.abs()) {
                        best = Some((p0.name, change));
                    }
                }
                let (name, change) = best.expect("some part moves the crossing's way");
                assert_eq!((x.driver, x.driver_change_ms), (name, change), "{x:?}");
                // ΔT itself moved that way too: the parts add up to it.
                let dt = |b: &Breakdown| b.lora_ms - b.other_ms;
                assert_eq!(dt(&x.grid_after) > dt(&x.grid_before), grows);
            }
        }
        assert!(faster >= 1 && slower >= 1, "{faster} {slower}");
        for c in &r.comparisons {
            for x in &c.crossings {
                // LoRA becomes faster exactly when it was the slower one before the crossing.
                assert_eq!(x.lora_becomes_faster, x.ratio_before >= 1.0, "{x:?}");
                // GPT-2 large fits an 80 GiB A100: full fine-tuning's weights, gradients and
                // states are 16 bytes × 774 M ≈ 12.4 GB, activations of 8 × 1024 tokens a few GB.
                assert!(x.does_not_fit.is_empty());
            }
        }
        // A device whose memory falls between full fine-tuning's needs at a crossing's two
        // sides (it needs more at the longer sequence): only full is named, because it does not
        // fit on one side.
        let x = &r
            .comparisons
            .iter()
            .find(|c| c.other == MethodName::Full)
            .unwrap()
            .crossings[0];
        let need = |v: u64| {
            let spec = MethodSpec::resolve(MethodName::Full, &s.options, &s.model, true).unwrap();
            let m = crate::fit::memory_of(&crate::Config {
                model: s.model.clone(),
                method: spec,
                workload: Workload {
                    seq: v,
                    ..s.workload.clone()
                },
                hw: s.hw.clone(),
            });
            m.peak_bytes + m.reserved_bytes + (s.hw.memory_bytes - m.capacity_bytes)
        };
        let (lo, hi) = (need(x.before), need(x.after));
        assert!(lo < hi, "{lo} {hi}");
        let mut between = s.clone();
        between.hw.memory_bytes = (lo + hi) / 2.0;
        let r2 = between.run().unwrap();
        let x2 = &r2
            .comparisons
            .iter()
            .find(|c| c.other == MethodName::Full)
            .unwrap()
            .crossings[0];
        assert_eq!((x2.before, x2.after), (x.before, x.after));
        assert!(between.fits(x.before, MethodName::Full).unwrap());
        assert!(!between.fits(x.after, MethodName::Full).unwrap());
        assert_eq!(x2.does_not_fit, [MethodName::Full]);
        // A device of 1 byte: nothing fits anywhere; every crossing names both methods.
        s.hw.memory_bytes = 1.0;
        let r = s.run().unwrap();
        let all = [MethodName::Lora, MethodName::Full, MethodName::Paca];
        assert_eq!(r.does_not_fit.len(), 3);
        assert!(r.does_not_fit.iter().all(|n| n.methods == all));
        let mut seen = 0;
        for c in &r.comparisons {
            for x in &c.crossings {
                assert_eq!(x.does_not_fit, [MethodName::Lora, c.other]);
                seen += 1;
            }
        }
        assert!(seen >= 2);
    }
}
