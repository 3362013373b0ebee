//! The calibration path end to end on this CPU (feature `tch`): every microbenchmark runs, the
//! fits produce a profile that loads, and the profile's fitted rates are those of the samples.
#![cfg(feature = "tch")]

use costsim_hardware::MemKind;
use costsim_validate::calibrate::{run, Effort};
use costsim_validate::fit::{calibrate, Bench};
use tch::Device;

#[test]
fn microbenchmarks_fit_into_a_loadable_profile() {
    costsim_validate::harness::set_threads(1);
    let run = run(
        Device::Cpu,
        Effort { warmup: 1, reps: 3 },
        "test",
        |_, _, _| {},
    )
    .expect("microbenchmarks");
    for bench in [
        Bench::Gemm,
        Bench::Elementwise,
        Bench::Dropout,
        Bench::Cast,
        Bench::Norm,
        Bench::Softmax,
        Bench::Gather,
        Bench::Scatter,
        Bench::Attention,
        Bench::AttentionBackward,
        Bench::Optimizer,
        Bench::Dispatch,
        Bench::AutogradNode,
        Bench::FirstTouch,
    ] {
        assert!(
            run.samples.iter().any(|s| s.bench == bench),
            "no {bench:?} sample"
        );
    }
    assert!(run.samples.iter().all(|s| s.stats.median_ms >= 0.0));
    let base = costsim_hardware::resolve_device("cpu").expect("cpu profile");
    let cal = calibrate(&run, &base, "test-cpu").expect("fit");
    let p = costsim_hardware::parse_profile(&cal.profile_toml, "test").expect("loads");
    assert!(p.is_calibrated());
    assert_eq!(p.name, "test-cpu");
    // The fp32 peak is the fitted GEMM rate: 1 / (s per tile-FLOP).
    let gemm = cal
        .fits
        .iter()
        .find(|f| f.what == "gemm fp32")
        .expect("gemm fp32 fit");
    let rate = 1.0 / gemm.coef[0];
    assert!(
        (p.peak_fp32_flops / rate - 1.0).abs() < 1e-5,
        "{} {rate}",
        p.peak_fp32_flops
    );
    // A CPU core does between 1 and 1000 GFLOP/s in fp32.
    assert!(rate > 1e9 && rate < 1e12, "{rate}");
    // Every fit is overdetermined except the optimizer's rate at one tensor size, which is
    // one sample's (a rate, exactly determined).
    for f in &cal.fits {
        let per_size = f.what.starts_with("optimizer ") && f.what.contains(" KiB ");
        assert!(
            f.r2.is_finite() && f.n >= if per_size { 1 } else { 2 },
            "{f:?}"
        );
    }
    // The optimizer's lists: six adapter-sized and four of equal tensors per dtype, whose
    // stable samples give the profile its per-op time and its rates by size.
    for (prefix, n) in [("adamw-single adapters", 12), ("adamw-single uniform", 8)] {
        let got = run
            .samples
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .count();
        assert_eq!(got, n, "{prefix}");
    }
    let table = p.optimizer_size_rate.as_ref().expect("optimizer-size-gbps");
    assert!(table.iter().all(|t| !t.is_empty()), "{table:?}");
    assert!(p.optimizer_op_s.is_some());
    // The attention samples record their shapes: each attention fit has a per-tile term, and
    // the profile's per-tile time is that term (written in µs to 4 decimals).
    for (what, dir, half) in [
        ("attention fp32", 0, 0),
        ("attention bf16", 0, 1),
        ("attention backward fp32", 1, 0),
        ("attention backward bf16", 1, 1),
    ] {
        let Some(f) = cal.fits.iter().find(|f| f.what == what) else {
            // A loaded machine can leave fewer stable samples than the fit's three terms need
            // (attention backward is the noisiest kind): then the others are reported as
            // unstable, never dropped silently.
            let bench = [Bench::Attention, Bench::AttentionBackward][dir];
            let dtype = ["fp32", "bf16"][half];
            let names: Vec<String> = run
                .samples
                .iter()
                .filter(|s| s.bench == bench && s.dtype == dtype)
                .map(|s| format!("{} {}", s.name, s.dtype))
                .collect();
            let stable = names
                .iter()
                .filter(|n| !cal.unstable.iter().any(|(u, _)| u == *n))
                .count();
            assert!(
                !names.is_empty() && stable < 3,
                "no {what} fit, yet {stable} of its {} samples are stable",
                names.len()
            );
            continue;
        };
        assert_eq!(f.names, ["s per FLOP", "s per tile", "s per op"], "{what}");
        if f.coef[0] > 0.0 {
            let c = p.attention_tile_s[dir][half];
            assert!(
                (c - f.coef[1]).abs() <= 5.1e-11,
                "{what}: {c} vs {}",
                f.coef[1]
            );
        }
    }
    // PaCA's column write gets its own rate from its own samples: the profile's scatter
    // efficiency is the fit's 1 / (s per byte) over the profile's bandwidth, per dtype.
    for (what, half) in [("scatter fp32", false), ("scatter bf16", true)] {
        let f = cal
            .fits
            .iter()
            .find(|f| f.what == what)
            .unwrap_or_else(|| panic!("no {what} fit"));
        // The profile writes efficiencies to 4 decimals.
        let e = p.kind_bandwidth.get(MemKind::Scatter, half);
        let fitted = 1.0 / f.coef[0] / p.bandwidth_bps;
        assert!(
            (e - fitted).abs() <= 6e-5,
            "{what}: profile efficiency {e}, fit {fitted}"
        );
    }
}
