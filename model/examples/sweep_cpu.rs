//! CPU time per point of the sweep bench's grids (benches/sweep.rs), for comparing builds on a
//! shared machine, where wall time varies with the load: `sweep_cpu GRID N` evaluates GRID
//! (issue, bsr, which, which5, which8) N times and prints CPU µs (user + system, from
//! /proc/self/stat, Linux) and wall µs per point. `HWS=n` keeps the grid's first n devices;
//! `RANKS=n` replaces the grid's ranks by 1..=n.
//! Run with `RAYON_NUM_THREADS=1`, alternate the builds and compare the minima of a few runs.
#[path = "../benches/common/mod.rs"]
mod common;

use std::time::Instant;

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
    // The 13 260-point grid with 8 or 5 ranks instead of 4 (where rank templates pay).
    let which_with = |ranks: u64| {
        let mut g = common::which_gpu();
        g.ranks = (1..=ranks).map(|i| Some(8 * i)).collect();
        g
    };
    let g = match name {
        "issue" => common::issue(),
        "bsr" => common::batch_seq_rank(),
        "which" => common::which_gpu(),
        "which8" => which_with(8),
        "which5" => which_with(5),
        _ => panic!("grid? issue, bsr, which, which5 or which8"),
    };
    let mut g = g;
    if let Ok(n) = std::env::var("HWS") {
        g.hws.truncate(n.parse().expect("sweep_cpu"));
    }
    if let Ok(n) = std::env::var("RANKS") {
        let n: u64 = n.parse().expect("sweep_cpu");
        g.ranks = (1..=n).map(Some).collect();
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
