//! The sweep grids of `benches/sweep.rs`, shared with `examples/sweep_cpu.rs` so that CPU time
//! per point and criterion's throughput are measured on the same points.

use costsim_model::sweep::Grid;
use costsim_model::{preset, MethodName, MethodOptions, Precision, Workload};

/// The issue grid's ten models.
pub const MODELS: [&str; 10] = [
    "gpt2",
    "gpt2-medium",
    "gpt2-large",
    "gpt2-xl",
    "tinyllama-1.1b",
    "llama2-7b",
    "llama2-13b",
    "llama2-70b",
    "llama3-8b",
    "mistral-7b",
];

/// Four batch sizes, five sequence lengths and four LoRA ranks of `models` × `methods` on `hws`.
pub fn grid(models: &[&str], hws: Vec<costsim_hardware::Profile>, methods: &[MethodName]) -> Grid {
    Grid {
        models: models.iter().map(|m| preset(m).expect("preset")).collect(),
        hws,
        methods: methods.to_vec(),
        batches: vec![1, 2, 4, 8],
        seqs: vec![128, 256, 512, 1024, 2048],
        ranks: vec![Some(8), Some(16), Some(32), Some(64)],
        train_layers: vec![None],
        precisions: vec![Precision::Bf16Mixed],
        base: Workload::default(),
        options: MethodOptions::default(),
    }
}

fn h200() -> Vec<costsim_hardware::Profile> {
    vec![costsim_hardware::resolve_device("h200").expect("h200")]
}

/// The issue's grid on one H200, sampled: seq 16..800:+80 (10 of the 50 values of
/// 16..800:+16), ranks 1..100:+5 (20 of 100): 32 400 points.
pub fn issue() -> Grid {
    let mut g = grid(&MODELS, h200(), &MethodName::ALL);
    g.seqs = (0..10).map(|i| 16 + 80 * i).collect();
    g.ranks = (0..20).map(|i| Some(1 + 5 * i)).collect();
    g
}

/// Only batch, seq and rank varying: llama2-7b LoRA on an H200, 4 × 50 × 20 = 4 000 points.
pub fn batch_seq_rank() -> Grid {
    let mut g = grid(&["llama2-7b"], h200(), &[MethodName::Lora]);
    g.seqs = (1..=50).map(|i| 16 * i).collect();
    g.ranks = (0..20).map(|i| Some(1 + 5 * i)).collect();
    g
}

/// "Which GPU and method": three models on every built-in GPU, all methods (13 260 points).
pub fn which_gpu() -> Grid {
    let hws: Vec<_> = costsim_hardware::builtin_profiles()
        .expect("profiles")
        .into_iter()
        .filter(|p| !p.synchronous)
        .collect();
    grid(&["gpt2", "llama2-7b", "llama2-13b"], hws, &MethodName::ALL)
}
