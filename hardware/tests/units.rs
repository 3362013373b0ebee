//! Every built-in profile resolves to the values its TOML text says, in SI units: the file's
//! numbers are read here with a plain TOML parser, independently of the profile's own types,
//! and converted by the unit each key names (`-gib` × 2³⁰ bytes, `-mib` × 2²⁰ bytes, `-tflops`
//! × 10¹² FLOP/s, `-gbps` × 10⁹ bytes/s, `-us` × 10⁻⁶ s), so a conversion slip in
//! `ProfileFile::resolve` fails here rather than only as a shifted prediction downstream.

use costsim_hardware::{parse_profile, resolve_device, MathMode, Profile, BUILTIN};

/// A number under `[section] key` (integers too), if present.
fn num(v: &toml::Value, section: &str, key: &str) -> Option<f64> {
    let x = v.get(section)?.get(key)?;
    x.as_float().or_else(|| x.as_integer().map(|i| i as f64))
}

fn req(v: &toml::Value, section: &str, key: &str) -> f64 {
    num(v, section, key).unwrap_or_else(|| panic!("[{section}] {key} missing"))
}

/// Equal within 1e-12 relative (the conversions are single products).
fn close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-12 * want.abs().max(1e-30),
        "{what}: resolved {got:e}, the file says {want:e}"
    );
}

const GIB: f64 = 1_073_741_824.0;
const MIB: f64 = 1_048_576.0;
const US: f64 = 1e-6;

fn check(name: &str, text: &str, p: &Profile) {
    let v: toml::Value = toml::from_str(text).expect("TOML");
    let at = |what: &str| format!("{name}: {what}");
    assert_eq!(p.name, v["device"]["name"].as_str().expect("name"));
    let display = v["device"]["display-name"].as_str().expect("display-name");
    assert_eq!(p.to_string(), format!("{} ({display})", p.name));
    close(
        &at("memory"),
        p.memory_bytes,
        req(&v, "device", "memory-gib") * GIB,
    );
    close(&at("L2"), p.l2_bytes, req(&v, "device", "l2-mib") * MIB);
    for (key, got, mode) in [
        ("fp32-tflops", p.peak_fp32_flops, MathMode::Fp32),
        ("tf32-tflops", p.peak_tf32_flops, MathMode::Tf32),
        ("bf16-tflops", p.peak_bf16_flops, MathMode::Bf16),
        ("fp16-tflops", p.peak_fp16_flops, MathMode::Fp16),
    ] {
        close(&at(key), got, req(&v, "peak", key) * 1e12);
        close(&at(key), p.peak_flops(mode), req(&v, "peak", key) * 1e12);
    }
    let bw = req(&v, "peak", "bandwidth-gbps") * 1e9;
    close(&at("bandwidth"), p.bandwidth_bps, bw);
    let eff = req(&v, "efficiency", "bandwidth");
    close(
        &at("achievable bandwidth"),
        p.achievable_bandwidth_bps(),
        bw * eff,
    );
    close(
        &at("gemm efficiency"),
        p.gemm_efficiency,
        req(&v, "efficiency", "gemm"),
    );
    close(
        &at("launch floor"),
        p.launch_floor_s,
        req(&v, "overheads", "launch-floor-us") * US,
    );
    close(
        &at("graph launch floor"),
        p.graph_launch_floor_s,
        req(&v, "overheads", "graph-launch-floor-us") * US,
    );
    match num(&v, "overheads", "kernel-gap-us") {
        Some(g) => close(&at("kernel gap"), p.kernel_gap_s.expect("gap"), g * US),
        None => assert_eq!(p.kernel_gap_s, None, "{name}"),
    }
    if let Some(g) = num(&v, "overheads", "gemm-floor-us") {
        close(&at("gemm floor"), p.gemm_floor_s[0], g * US);
        let bf16 = num(&v, "overheads", "gemm-floor-bf16-us").unwrap_or(g);
        close(&at("gemm floor bf16"), p.gemm_floor_s[1], bf16 * US);
    }
    for (i, key) in ["attention-tile-us", "attention-backward-tile-us"]
        .into_iter()
        .enumerate()
    {
        let f = num(&v, "overheads", key).unwrap_or(0.0);
        let bf16 = num(&v, "overheads", &key.replace("-us", "-bf16-us")).unwrap_or(f);
        close(&at(key), p.attention_tile_s[i][0], f * US);
        close(&at(key), p.attention_tile_s[i][1], bf16 * US);
    }
    if let Some(c) = num(&v, "overheads", "optimizer-op-us") {
        let [f, b] = p.optimizer_op_s.expect("optimizer op");
        close(&at("optimizer op"), f, c * US);
        let bf16 = num(&v, "overheads", "optimizer-op-bf16-us").unwrap_or(c);
        close(&at("optimizer op bf16"), b, bf16 * US);
    }
    if let Some(g) = num(&v, "overheads", "first-touch-gbps") {
        let (rate, min) = p.first_touch.expect("first touch");
        close(&at("first touch"), rate, g * 1e9);
        let mib = num(&v, "overheads", "first-touch-min-mib").unwrap_or(32.0);
        close(&at("first touch threshold"), min, mib * MIB);
    }
    // The host's costs, each in µs in the file.
    let h = &p.host;
    let host = |key: &str| num(&v, "host", key);
    for (key, got) in [
        ("python-op-us", h.python_op_s),
        ("cpp-op-us", h.cpp_op_s),
        ("module-call-us", h.module_call_s),
        ("peft-module-us", h.peft_module_s),
        ("autograd-node-us", h.autograd_node_s),
    ] {
        close(&at(key), got, host(key).expect(key) * US);
    }
    let tensor = host("optimizer-tensor-us")
        .or_else(|| host("cpp-op-us"))
        .expect("cpp-op-us");
    close(&at("optimizer tensor"), h.optimizer_tensor_s, tensor * US);
    for (key, got) in [
        ("loop-micro-batch-us", h.loop_micro_batch_s),
        ("loop-module-us", h.loop_module_s),
        ("loop-step-us", h.loop_step_s),
        ("loop-step-module-us", h.loop_step_module_s),
    ] {
        close(&at(key), got, host(key).unwrap_or(0.0) * US);
    }
    // Rates by tensor size: (MiB, GB/s) pairs.
    if let Some(rows) = v
        .get("overheads")
        .and_then(|o| o.get("optimizer-size-gbps"))
        .and_then(|r| r.as_array())
    {
        let table = &p.optimizer_size_rate.as_ref().expect("size table")[0];
        assert_eq!(table.len(), rows.len(), "{name}");
        for (row, &(bytes, rate)) in rows.iter().zip(table) {
            let pair: Vec<f64> = row
                .as_array()
                .expect("pair")
                .iter()
                .map(|x| {
                    x.as_float()
                        .or_else(|| x.as_integer().map(|i| i as f64))
                        .expect("a number")
                })
                .collect();
            close(&at("size"), bytes, pair[0] * MIB);
            close(&at("size rate"), rate, pair[1] * 1e9);
        }
    }
}

#[test]
fn every_builtin_profile_resolves_to_its_files_values_in_si_units() {
    assert!(BUILTIN.len() >= 14, "{}", BUILTIN.len());
    for (name, text) in BUILTIN {
        let p = parse_profile(text, &format!("builtin:{name}")).expect("loads");
        check(name, text, &p);
        // No built-in profile is a calibration's.
        assert!(!p.is_calibrated(), "{name}");
    }
}

#[test]
fn a_calibrated_profile_says_so_and_resolves_alike() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/results/cpu/eager-2026-11-29q/cpu-calibrated.toml"
    );
    let text = std::fs::read_to_string(path).expect("committed calibrated profile");
    let p = parse_profile(&text, path).expect("loads");
    assert!(p.is_calibrated());
    check("cpu-calibrated", &text, &p);
}

/// A built-in profile's text with `extra` lines added at the end of its `[overheads]` section.
fn with_overheads(name: &str, extra: &str) -> String {
    let text = BUILTIN.iter().find(|(n, _)| *n == name).expect(name).1;
    let at = text.find("\n[host]").expect("[host]");
    format!("{}\n{extra}{}", &text[..at], &text[at..])
}

#[test]
fn optional_overheads_resolve_in_si_units_with_their_sources() {
    // The GEMM floor and the attention tiles, which no built-in profile sets: with only the
    // fp32 values the bf16 ones follow them; with both, each its own.
    for extra in [
        "gemm-floor-us = 3.5\ngemm-floor-source = \"t\"\nattention-tile-us = 0.25\n\
         attention-backward-tile-us = 0.75\nattention-tile-source = \"t\"\n",
        "gemm-floor-us = 3.5\ngemm-floor-bf16-us = 5.0\ngemm-floor-source = \"t\"\n\
         attention-tile-us = 0.25\nattention-tile-bf16-us = 0.5\n\
         attention-backward-tile-us = 0.75\nattention-backward-tile-bf16-us = 1.5\n\
         attention-tile-source = \"t\"\n",
    ] {
        let text = with_overheads("h200", extra);
        let p = parse_profile(&text, "test").expect("loads");
        check("h200 with extras", &text, &p);
        for key in ["overheads.gemm-floor", "overheads.attention-tile"] {
            assert!(p.sources.iter().any(|(k, _)| k == key), "{key}");
        }
    }
    // The bf16 floor alone still lists its source.
    let text = with_overheads(
        "h200",
        "gemm-floor-bf16-us = 5.0\ngemm-floor-source = \"t\"\n",
    );
    let p = parse_profile(&text, "test").expect("loads");
    close("bf16 floor alone", p.gemm_floor_s[1], 5.0 * US);
    assert!(p.sources.iter().any(|(k, _)| k == "overheads.gemm-floor"));
}

#[test]
fn bounds_of_names_gaps_and_dates_hold_at_their_edges() {
    let h200 = BUILTIN.iter().find(|(n, _)| *n == "h200").expect("h200").1;
    let named = |n: usize| {
        h200.replacen(
            "name = \"h200\"",
            &format!("name = \"{}\"", "x".repeat(n)),
            1,
        )
    };
    assert!(parse_profile(&named(200), "t").is_ok());
    let err = parse_profile(&named(201), "t").unwrap_err().to_string();
    assert!(err.contains("at most 200 characters"), "{err}");
    // The kernel gap: 0 to 100 µs.
    let gap = |g: &str| h200.replacen("kernel-gap-us = 0.26", &format!("kernel-gap-us = {g}"), 1);
    assert!(parse_profile(&gap("100.0"), "t").is_ok());
    for bad in ["100.5", "-0.1", "nan"] {
        let err = parse_profile(&gap(bad), "t").unwrap_err().to_string();
        assert!(err.contains("kernel-gap-us"), "{bad}: {err}");
    }
    // A price's date: YYYY-MM-DD, ten characters.
    let a100 = BUILTIN
        .iter()
        .find(|(n, _)| *n == "a100-80gb-sxm")
        .expect("a100")
        .1;
    let dated = |d: &str| {
        a100.replacen(
            "usd-per-hour-date = \"2026-11-09\"",
            &format!("usd-per-hour-date = \"{d}\""),
            1,
        )
    };
    assert!(parse_profile(&dated("2026-11-09"), "t").is_ok());
    for bad in ["2026/11/09", "2026-11-9", "2026-11-090", "20261-1-09"] {
        assert!(parse_profile(&dated(bad), "t").is_err(), "{bad}");
    }
}

#[test]
fn a_hw_argument_that_looks_like_a_path_is_read_as_a_file() {
    // Names resolve as built-ins; anything ending in .toml or holding a path separator is a
    // file, even when no such file exists (the error names the path, not a GPU).
    assert_eq!(resolve_device("H200").expect("alias").name, "h200");
    for arg in ["missing-gpu.toml", "no/such/dir", "no\\such"] {
        let err = resolve_device(arg).unwrap_err().to_string();
        assert!(err.contains(arg), "{arg}: {err}");
        assert!(
            !err.contains("unknown"),
            "{arg} was taken for a name: {err}"
        );
    }
}
