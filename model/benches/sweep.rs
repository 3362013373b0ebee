//! Sweep throughput (issue 10). Goals: 10⁶ configuration evaluations in ≤ 5 s on the 2-core
//! development machine (≥ 200 000 points/s in criterion's "thrpt" line for the issue's grid), and
//! ≤ 2 µs a point where only batch, sequence and rank change.
//!
//! Three grids, evaluated through `Grid::stream` with a sink that only counts rows (the CLI's CSV
//! formatting is measured by the documented run in docs/sweeps.md):
//! - `issue grid (sampled)`: the issue's 10 models × 5 methods × 4 batch × 50 seq × 100 ranks on
//!   one GPU (802 000 points), sampled to 10 seq × 20 ranks (32 400 points) so that criterion can
//!   take ten samples;
//! - `batch-seq-rank`: one model and method, only batch, seq and rank varying (llama2-7b LoRA on
//!   an H200, 4 × 50 × 20 = 4 000 points);
//! - `13260-point grid`: the earlier "which GPU and method" grid: three models, every built-in
//!   GPU, all five methods, four batch sizes, five sequence lengths, four LoRA ranks.

use costsim_model::sweep::Grid;
use costsim_model::{preset, MethodName, MethodOptions, Precision, Workload};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

const MODELS: [&str; 10] = [
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

fn grid(models: &[&str], hws: Vec<costsim_hardware::Profile>, methods: &[MethodName]) -> Grid {
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

/// Evaluate every point; the sink counts rows.
fn run(g: &Grid) -> usize {
    let mut n = 0;
    g.stream(&|_| {}, |rows| {
        n += black_box(rows).len();
        Ok::<(), costsim_model::Error>(())
    })
    .expect("grid");
    n
}

fn bench(c: &mut Criterion) {
    let h200 = || vec![costsim_hardware::resolve_device("h200").expect("h200")];
    // The issue's grid, sampled: seq 16..800:+80 (10 of the 50 values of 16..800:+16), ranks
    // 1..100:+5 (20 of 100).
    let mut issue = grid(&MODELS, h200(), &MethodName::ALL);
    issue.seqs = (0..10).map(|i| 16 + 80 * i).collect();
    issue.ranks = (0..20).map(|i| Some(1 + 5 * i)).collect();
    let mut bsr = grid(&["llama2-7b"], h200(), &[MethodName::Lora]);
    bsr.seqs = (1..=50).map(|i| 16 * i).collect();
    bsr.ranks = (0..20).map(|i| Some(1 + 5 * i)).collect();
    let hws: Vec<_> = costsim_hardware::builtin_profiles()
        .expect("profiles")
        .into_iter()
        .filter(|p| !p.synchronous)
        .collect();
    let which = grid(&["gpt2", "llama2-7b", "llama2-13b"], hws, &MethodName::ALL);

    let mut g = c.benchmark_group("sweep");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    for (name, grid) in [
        ("issue grid (sampled)", &issue),
        ("batch-seq-rank", &bsr),
        ("13260-point grid", &which),
    ] {
        g.throughput(Throughput::Elements(grid.len()));
        g.bench_function(format!("{name}: {} points", grid.len()), |b| {
            b.iter(|| run(grid))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
