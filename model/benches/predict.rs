//! One llama2-70b `--method all` prediction in-process (goal: under 1 ms).

use costsim_hardware::resolve_device;
use costsim_model::{
    predict, preset, Config, Detail, MethodName, MethodOptions, MethodSpec, Workload,
};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let model = preset("llama2-70b").expect("preset");
    let hw = resolve_device("h100").expect("profile");
    let w = Workload::default();
    let cfgs: Vec<Config> = MethodName::ALL
        .into_iter()
        .map(|m| Config {
            model: model.clone(),
            method: MethodSpec::resolve(m, &MethodOptions::default(), &model, true)
                .expect("method"),
            workload: w.clone(),
            hw: hw.clone(),
        })
        .collect();
    c.bench_function("llama2-70b method all", |b| {
        b.iter(|| {
            for cfg in &cfgs {
                black_box(predict(black_box(cfg), Detail::default(), None));
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
