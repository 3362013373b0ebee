//! Sweep throughput. Goal (issue 5): one million configuration evaluations in 10 s on the
//! 2-core development machine, i.e. at least 100 000 points/s in criterion's "thrpt" line.
//!
//! The grid is a realistic "which GPU and method" question: three models, every built-in GPU,
//! all five methods, four batch sizes, five sequence lengths, four LoRA ranks (13 260 points).

use costsim_model::sweep::Grid;
use costsim_model::{preset, MethodName, MethodOptions, Precision, Workload};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let hws: Vec<_> = costsim_hardware::builtin_profiles()
        .expect("profiles")
        .into_iter()
        .filter(|p| !p.synchronous)
        .collect();
    let grid = Grid {
        models: ["gpt2", "llama2-7b", "llama2-13b"]
            .iter()
            .map(|m| preset(m).expect("preset"))
            .collect(),
        hws,
        methods: MethodName::ALL.to_vec(),
        batches: vec![1, 2, 4, 8],
        seqs: vec![128, 256, 512, 1024, 2048],
        ranks: vec![Some(8), Some(16), Some(32), Some(64)],
        train_layers: vec![None],
        precisions: vec![Precision::Bf16Mixed],
        base: Workload::default(),
        options: MethodOptions::default(),
    };
    let mut g = c.benchmark_group("sweep");
    g.throughput(Throughput::Elements(grid.len()));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("13260-point grid", |b| {
        b.iter(|| black_box(grid.run(&|_| {}).expect("grid")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
