use costsim_model::{preset, sweep::Grid, MethodName, MethodOptions, Precision, Workload};
use std::time::Instant;
fn main() {
    let hws: Vec<_> = costsim_hardware::builtin_profiles()
        .unwrap()
        .into_iter()
        .filter(|p| !p.synchronous)
        .collect();
    let g = Grid {
        models: ["gpt2", "llama2-7b", "llama2-13b"]
            .iter()
            .map(|m| preset(m).unwrap())
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
    let _ = g.run(&|_| {}).unwrap();
    for _ in 0..5 {
        let t = Instant::now();
        let mut n = 0;
        for _ in 0..8 {
            n += g.run(&|_| {}).unwrap().len();
        }
        let s = t.elapsed().as_secs_f64();
        println!("{} rows in {:.3} s = {:.0} /s", n, s, n as f64 / s);
    }
}
