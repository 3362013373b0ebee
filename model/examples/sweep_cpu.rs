//! CPU time per point of the sweep bench's grids (benches/sweep.rs), for comparing builds on a
//! shared machine, where wall time varies with the load: `sweep_cpu GRID N` evaluates GRID
//! (issue, bsr, which, which5, which8) N times and prints CPU µs (user + system, from
//! /proc/self/stat, Linux) and wall µs per point. `HWS=n` keeps the grid's first n devices.
//! Run with `RAYON_NUM_THREADS=1`, alternate the builds and compare the minima of a few runs.
use costsim_model::sweep::Grid;
use costsim_model::{preset, MethodName, MethodOptions, Precision, Workload};
use std::time::Instant;

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

fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").expect("sweep_cpu");
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .expect("sweep_cpu")
        .split_whitespace()
        .collect();
    // utime, stime: fields 14, 15 (1-based) → index 11, 12 after the ')' split
    (f[11].parse::<f64>().expect("sweep_cpu") + f[12].parse::<f64>().expect("sweep_cpu")) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args[1].as_str();
    let n: usize = args[2].parse().expect("sweep_cpu");
    let h200 = || vec![costsim_hardware::resolve_device("h200").expect("h200")];
    let hws: Vec<_> = costsim_hardware::builtin_profiles()
        .expect("profiles")
        .into_iter()
        .filter(|p| !p.synchronous)
        .collect();
    let g = match name {
        "issue" => {
            let mut g = grid(&MODELS, h200(), &MethodName::ALL);
            g.seqs = (0..10).map(|i| 16 + 80 * i).collect();
            g.ranks = (0..20).map(|i| Some(1 + 5 * i)).collect();
            g
        }
        "bsr" => {
            let mut g = grid(&["llama2-7b"], h200(), &[MethodName::Lora]);
            g.seqs = (1..=50).map(|i| 16 * i).collect();
            g.ranks = (0..20).map(|i| Some(1 + 5 * i)).collect();
            g
        }
        "which" => grid(&["gpt2", "llama2-7b", "llama2-13b"], hws, &MethodName::ALL),
        "which8" => {
            let mut g = grid(&["gpt2", "llama2-7b", "llama2-13b"], hws, &MethodName::ALL);
            g.ranks = (1..=8).map(|i| Some(8 * i)).collect();
            g
        }
        "which5" => {
            let mut g = grid(&["gpt2", "llama2-7b", "llama2-13b"], hws, &MethodName::ALL);
            g.ranks = (1..=5).map(|i| Some(8 * i)).collect();
            g
        }
        _ => panic!("grid?"),
    };
    let mut g = g;
    if let Ok(n) = std::env::var("HWS") {
        g.hws.truncate(n.parse().expect("sweep_cpu"));
    }
    let mut rows = 0usize;
    let (c0, t0) = (cpu_s(), Instant::now());
    for _ in 0..n {
        g.stream(&|_| {}, |r| {
            rows += r.len();
            Ok::<(), costsim_model::Error>(())
        })
        .expect("sweep_cpu");
    }
    let (c, t) = (cpu_s() - c0, t0.elapsed().as_secs_f64());
    println!(
        "{name}: {rows} points, {:.2} µs CPU/point, {:.2} µs wall/point",
        c / rows as f64 * 1e6,
        t / rows as f64 * 1e6
    );
}
