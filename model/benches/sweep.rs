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

mod common;

use costsim_model::sweep::Grid;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

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
    let (issue, bsr, which) = (
        common::issue(),
        common::batch_seq_rank(),
        common::which_gpu(),
    );

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
