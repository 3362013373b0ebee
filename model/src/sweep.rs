//! Grid sweeps: every combination of models, devices, methods, batch sizes, sequence lengths,
//! ranks, trained layers and precisions, evaluated in parallel.
//!
//! Work is grouped by what the kernel graph depends on (model, method, workload): each group's
//! graph is built once and costed on every device of the grid, and within a graph identical layers
//! share one segment evaluation and, at the pipeline's fixed point, one simulation
//! (`simulate::Steady`). Groups run in parallel on rayon's pool; the rows come back in grid order
//! (model, method, precision, batch, seq, rank, train-layers, device — device innermost).
//!
//! Ranks follow `costsim predict --method all`: a sweep's rank is the LoRA reference rank and the
//! PaCA variants take the paper's matched column counts (2r, 4r upper half, 3r three quarters);
//! full fine-tuning has no rank, so its points do not repeat over the rank axis, and the
//! layer-selective PaCA presets keep their own trained layers, so theirs do not repeat over
//! `--train-layers` (sweep `--method paca --train-layers upper:0.5,upper:0.75` instead).

use crate::arch::ModelConfig;
use crate::cost::{Bound, GemmMemo};
use crate::graph;
use crate::method::{LayerSelection, MethodName, MethodOptions, MethodSpec};
use crate::predict::{predict_with_graph, ConfigRef, Detail};
use crate::workload::{Precision, Workload};
use crate::{Error, Result};
use costsim_hardware::Profile;
use rayon::prelude::*;
use serde::Serialize;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Points above this are refused: a grid this large is almost always a typo in a range.
pub const MAX_POINTS: u64 = 50_000_000;

/// Parse an integer axis: comma-separated values and inclusive ranges, `A..B` (step 1),
/// `A..B:+S` (step S) or `A..B:xF` (times F each step), e.g. `128..4096:x2` =
/// 128, 256, …, 4096. Values are deduplicated, in the order given.
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
    let mut out: Vec<u64> = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((a, rest)) = item.split_once("..") else {
            out.push(num(item)?);
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
        let mut v = lo;
        let too_many = || {
            err(format!(
                "range '{item}' has more than {MAX_POINTS} values; use a coarser step"
            ))
        };
        match step {
            None if hi - lo >= MAX_POINTS => return Err(too_many()),
            None => out.extend(lo..=hi),
            Some(s) if s.starts_with('+') => {
                let d = num(&s[1..])?;
                if d == 0 {
                    return Err(err(format!("step '{s}' in '{item}' must be at least +1")));
                }
                if (hi - lo) / d >= MAX_POINTS {
                    return Err(too_many());
                }
                while v <= hi {
                    out.push(v);
                    v = match v.checked_add(d) {
                        Some(n) => n,
                        None => break,
                    };
                }
            }
            Some(s) if s.starts_with('x') || s.starts_with('*') => {
                let f = num(&s[1..])?;
                if f < 2 || lo == 0 {
                    return Err(err(format!(
                        "geometric range '{item}' needs a start ≥ 1 and a factor ≥ 2 (x2)"
                    )));
                }
                while v <= hi {
                    out.push(v);
                    v = match v.checked_mul(f) {
                        Some(n) => n,
                        None => break,
                    };
                }
            }
            Some(s) => {
                return Err(err(format!(
                    "cannot read step '{s}' in '{item}'; use :+S (add S) or :xF (multiply by F)"
                )))
            }
        }
        if out.len() > MAX_POINTS as usize {
            return Err(err(format!("range '{item}' has too many values")));
        }
    }
    if out.is_empty() {
        return Err(err(format!("'{spec}' names no values")));
    }
    let mut seen = std::collections::HashSet::new();
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
    pub model: String,
    pub hw: String,
    pub method: MethodName,
    pub batch: u64,
    pub seq: u64,
    /// The method's resolved rank (0 for full fine-tuning).
    pub rank: u64,
    /// Trained layers as `lo..hi` (inclusive), or the selection asked for when invalid.
    pub train_layers: String,
    pub precision: &'static str,
    #[serde(flatten)]
    pub status: Status,
    pub step_ms: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    pub tokens_per_s: f64,
    pub peak_memory_gib: f64,
    pub trainable_params: u64,
    pub kernels_per_step: u64,
    pub dominant_bound: Option<Bound>,
}

/// Identifies one `Grid::run`: per-thread GEMM memos from another run (other profiles) are
/// dropped, never reused.
static NEXT_RUN: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Per worker thread: the run the memos belong to, and one GEMM memo per device of its grid.
    static MEMOS: RefCell<(u64, Vec<GemmMemo>)> = const { RefCell::new((u64::MAX, Vec::new())) };
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
    /// Number of points (full fine-tuning counted once per rank-free combination).
    pub fn len(&self) -> u64 {
        self.groups_len() * self.hws.len() as u64
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

    fn groups_len(&self) -> u64 {
        let per_shape: u64 = self
            .methods
            .iter()
            .map(|&m| (self.rank_choices(m).len() * self.layer_choices(m).len()) as u64)
            .sum();
        self.models.len() as u64
            * self.precisions.len() as u64
            * self.batches.len() as u64
            * self.seqs.len() as u64
            * per_shape
    }

    fn groups(&self) -> Vec<Group> {
        let mut v = Vec::with_capacity(self.groups_len() as usize);
        for model in 0..self.models.len() {
            for &method in &self.methods {
                for &precision in &self.precisions {
                    for &batch in &self.batches {
                        for &seq in &self.seqs {
                            for &rank in self.rank_choices(method) {
                                for layers in 0..self.layer_choices(method).len() {
                                    v.push(Group {
                                        model,
                                        method,
                                        precision,
                                        batch,
                                        seq,
                                        rank,
                                        layers,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        v
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
        let n = self.groups_len().saturating_mul(self.hws.len() as u64);
        if n > MAX_POINTS {
            return Err(Error::InvalidArgument {
                what: "sweep".into(),
                message: format!(
                    "{n} points is more than {MAX_POINTS}; narrow a range or split the sweep"
                ),
            });
        }
        Ok(())
    }

    /// Evaluate every point. `progress` is called with the number of points just finished (from
    /// any thread).
    pub fn run(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<Vec<Row>> {
        self.check()?;
        let groups = self.groups();
        let run_id = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
        let rows: Vec<Vec<Row>> = groups
            .par_iter()
            .map(|g| {
                let rows = self.eval_group(g, run_id);
                progress(rows.len() as u64);
                rows
            })
            .collect();
        Ok(rows.into_iter().flatten().collect())
    }

    fn eval_group(&self, g: &Group, run_id: u64) -> Vec<Row> {
        let model = &self.models[g.model];
        let layers = self.layer_choices(g.method)[g.layers];
        let layers_text = layers.map_or_else(|| "default".to_string(), |l| l.to_string());
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
            .and_then(|()| MethodSpec::resolve(g.method, &opts, model, true));
        let spec = match resolved {
            Ok(spec) => spec,
            Err(e) => {
                return self
                    .hws
                    .iter()
                    .map(|hw| Row {
                        model: model.name.clone(),
                        hw: hw.name.clone(),
                        method: g.method,
                        batch: g.batch,
                        seq: g.seq,
                        rank: g.rank.unwrap_or(0),
                        train_layers: layers_text.clone(),
                        precision: g.precision.as_str(),
                        status: Status::Invalid(e.to_string()),
                        step_ms: f64::NAN,
                        forward_ms: f64::NAN,
                        backward_ms: f64::NAN,
                        optimizer_ms: f64::NAN,
                        tokens_per_s: f64::NAN,
                        peak_memory_gib: f64::NAN,
                        trainable_params: 0,
                        kernels_per_step: 0,
                        dominant_bound: None,
                    })
                    .collect()
            }
        };
        let graph = graph::build(model, &spec, &w);
        let (lo, hi) = spec.trained_layers(model);
        MEMOS.with_borrow_mut(|(id, memos)| {
            if *id != run_id {
                *id = run_id;
                memos.clear();
            }
            memos.resize_with(self.hws.len(), GemmMemo::default);
        });
        self.hws
            .iter()
            .enumerate()
            .map(|(j, hw)| {
                let p = MEMOS.with_borrow_mut(|(_, memos)| {
                    predict_with_graph(
                        ConfigRef {
                            model,
                            method: &spec,
                            workload: &w,
                            hw,
                        },
                        &graph,
                        Detail::default(),
                        None,
                        &mut memos[j],
                    )
                });
                let accum = u64::from(w.grad_accum);
                Row {
                    model: model.name.clone(),
                    hw: hw.name.clone(),
                    method: g.method,
                    batch: g.batch,
                    seq: g.seq,
                    rank: spec.rank,
                    train_layers: format!("{lo}..{hi}"),
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
mod tests {
    use super::*;
    use crate::arch::preset;
    use crate::predict::{predict, Config};
    use costsim_hardware::resolve_device;

    #[test]
    fn axis_lists_and_ranges() {
        assert_eq!(parse_axis("8", "--batch").unwrap(), [8]);
        assert_eq!(parse_axis("1,2, 4", "--batch").unwrap(), [1, 2, 4]);
        assert_eq!(
            parse_axis("128..4096:x2", "--seq").unwrap(),
            [128, 256, 512, 1024, 2048, 4096]
        );
        assert_eq!(
            parse_axis("128..1000:x2", "--seq").unwrap().last(),
            Some(&512)
        );
        assert_eq!(parse_axis("8..32:+8", "--rank").unwrap(), [8, 16, 24, 32]);
        assert_eq!(parse_axis("1..3,8,2", "--batch").unwrap(), [1, 2, 3, 8]);
        for bad in [
            "", "a", "4..2", "1..8:x1", "0..8:x2", "1..8:+0", "1..8:/2", "1..8:xq",
        ] {
            let e = parse_axis(bad, "--seq").unwrap_err().to_string();
            assert!(e.contains("--seq"), "{bad}: {e}");
        }
    }

    fn grid() -> Grid {
        Grid {
            models: vec![preset("gpt2").unwrap(), preset("llama2-7b").unwrap()],
            hws: vec![
                resolve_device("a100").unwrap(),
                resolve_device("l4").unwrap(),
            ],
            methods: MethodName::ALL.to_vec(),
            batches: vec![1, 8],
            seqs: vec![256, 2048],
            ranks: vec![Some(8), Some(64)],
            train_layers: vec![None],
            precisions: vec![Precision::Bf16Mixed],
            base: Workload::default(),
            options: MethodOptions::default(),
        }
    }

    #[test]
    fn every_point_matches_a_single_prediction() {
        let g = grid();
        let rows = g.run(&|_| {}).unwrap();
        // full: 1 rank; the four others: 2 ranks → 9 method-rank pairs × 2 models × 2 batch ×
        // 2 seq × 2 devices.
        assert_eq!(rows.len() as u64, g.len());
        assert_eq!(rows.len(), 9 * 2 * 2 * 2 * 2);
        let mut checked = 0;
        for r in &rows {
            let model = preset(&r.model).unwrap();
            if r.seq > model.max_positions {
                assert!(matches!(r.status, Status::Invalid(ref m) if m.contains("--seq")));
                assert!(r.step_ms.is_nan());
                continue;
            }
            let lora_rank = match r.method {
                MethodName::Full => None,
                MethodName::Lora => Some(r.rank),
                MethodName::Paca => Some(r.rank / 2),
                MethodName::PacaUpperHalf => Some(r.rank / 4),
                MethodName::PacaThreeQuarters => Some(r.rank / 3),
            };
            let opts = MethodOptions {
                rank: lora_rank,
                ..MethodOptions::default()
            };
            let cfg = Config {
                method: MethodSpec::resolve(r.method, &opts, &model, true).unwrap(),
                model,
                workload: Workload {
                    batch: r.batch,
                    seq: r.seq,
                    ..Workload::default()
                },
                hw: resolve_device(&r.hw).unwrap(),
            };
            let p = predict(&cfg, Detail::default(), None);
            assert_eq!(p.step_ms, r.step_ms, "{r:?}");
            assert_eq!(p.fits, r.status == Status::Ok);
            checked += 1;
        }
        // gpt2 has 1024 positions: its seq-2048 points are invalid.
        assert_eq!(checked, rows.len() - rows.len() / 4);
    }

    #[test]
    fn rows_come_back_in_grid_order_with_progress() {
        let g = grid();
        let done = std::sync::atomic::AtomicU64::new(0);
        let rows = g
            .run(&|n| {
                done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            })
            .unwrap();
        assert_eq!(done.into_inner(), rows.len() as u64);
        assert_eq!(rows[0].hw, "a100-80gb-sxm");
        assert_eq!(rows[1].hw, "l4");
        assert_eq!(
            (rows[0].model.as_str(), rows[0].method),
            ("gpt2", MethodName::Full)
        );
        assert_eq!(rows.last().unwrap().method, MethodName::PacaThreeQuarters);
    }

    #[test]
    fn oversized_and_empty_grids_are_refused() {
        let mut g = grid();
        g.batches = (1..=100_000).collect();
        g.seqs = (1..=1000).collect();
        assert!(g
            .check()
            .unwrap_err()
            .to_string()
            .contains("narrow a range"));
        let mut g = grid();
        g.methods.clear();
        assert!(g.check().unwrap_err().to_string().contains("--method"));
    }
}
