//! The allowed range of every numeric profile value: physical limits with a wide margin around
//! every real device, checked once when a profile is resolved (`ProfileFile::resolve`), so that
//! a typo or a hostile value is refused with the key, the range and the reason.

/// The allowed range of one numeric profile value and why: physical limits with a wide margin
/// around every real device (a CPU core to a future accelerator), so that a typo or a hostile
/// value (5e-324, 1e308, NaN) is refused before it reaches the model as 0 tokens/s or an
/// infinite time.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub min: f64,
    pub max: f64,
    pub unit: &'static str,
    pub why: &'static str,
}

impl Range {
    /// Ok when `v` is finite and within [min, max]; else the message naming key, range and why.
    pub fn check(&self, key: &str, v: f64) -> std::result::Result<(), String> {
        if v.is_finite() && v >= self.min && v <= self.max {
            return Ok(());
        }
        let noun = if self.unit == "fraction" {
            "a fraction".to_string()
        } else {
            format!("in {}", self.unit)
        };
        Err(format!(
            "{key} must be {noun} between {} and {} ({}), got {v:?}; set it within that range",
            self.min, self.max, self.why
        ))
    }
}

/// Compute units (SMs, CPU cores).
pub const SMS: Range = Range {
    min: 1.0,
    max: 100_000.0,
    unit: "units",
    why: "one to 100,000 SMs or cores",
};
/// Boost clock.
pub const CLOCK_MHZ: Range = Range {
    min: 1.0,
    max: 100_000.0,
    unit: "MHz",
    why: "1 MHz to 100 GHz",
};
/// Device memory.
pub const MEMORY_GIB: Range = Range {
    min: 1.0 / 1024.0,
    max: 1_048_576.0,
    unit: "GiB",
    why: "1 MiB to 1 PiB",
};
/// L2 cache.
pub const L2_MIB: Range = Range {
    min: 1.0 / 1024.0,
    max: 1_048_576.0,
    unit: "MiB",
    why: "1 KiB to 1 TiB",
};
/// Dense math peaks. The floor is a calibrated CPU's, whose peaks are its fitted GEMM rates: a
/// core without native bf16 or fp16 arithmetic runs those GEMMs converted element by element,
/// 1.36 GFLOP/s bf16 on one core of an AMD EPYC (Zen 3, 2.45 GHz) on 2026-11-30, and fp16 half
/// that by the base profile's ratio (`costsim calibrate`); until then the floor was 1 GFLOP/s,
/// which refused that profile. 10 MFLOP/s leaves a hundredfold margin and still keeps every
/// time finite and every rate away from zero.
pub const PEAK_TFLOPS: Range = Range {
    min: 0.00001,
    max: 100_000.0,
    unit: "TFLOP/s",
    why: "10 MFLOP/s (a half-precision GEMM emulated on one core) to 100 PFLOP/s",
};
/// DRAM bandwidth.
pub const BANDWIDTH_GBPS: Range = Range {
    min: 1.0,
    max: 100_000.0,
    unit: "GB/s",
    why: "1 GB/s to 100 TB/s",
};
/// Launch floors.
pub const FLOOR_US: Range = Range {
    min: 0.001,
    max: 10_000.0,
    unit: "µs",
    why: "1 ns to 10 ms per op",
};
/// Achieved fractions of a peak.
pub const EFFICIENCY: Range = Range {
    min: 0.001,
    max: 1.0,
    unit: "fraction",
    why: "0.1% to 100% of the peak; below 0.1% the peak itself is wrong",
};
/// Host costs and fixed per-call costs.
pub const HOST_US: Range = Range {
    min: 0.0,
    max: 1_000_000.0,
    unit: "µs",
    why: "0 to 1 s per op",
};
/// Price of one device-hour: up to $10,000 (a whole rack costs less per hour).
pub const USD_PER_HOUR: Range = Range {
    min: 0.0,
    max: 10_000.0,
    unit: "US dollars per hour",
    why: "free to $10,000 per device-hour",
};
/// First-touch (page-fault) rate.
pub const TOUCH_GBPS: Range = Range {
    min: 0.01,
    max: 100_000.0,
    unit: "GB/s",
    why: "10 MB/s to 100 TB/s",
};
/// A tensor's size in the optimizer's rate table.
pub const TENSOR_MIB: Range = Range {
    min: 1.0 / 1048576.0,
    max: 1_048_576.0,
    unit: "MiB",
    why: "1 byte to 1 TiB",
};
/// Smallest output that pays first touch.
pub const TOUCH_MIN_MIB: Range = Range {
    min: 0.0,
    max: 1_048_576.0,
    unit: "MiB",
    why: "0 to 1 TiB",
};
/// A CPU GEMM's per-call fill, in rows of the output.
pub const GEMM_FILL_ROWS: Range = Range {
    min: 0.0,
    max: 65_536.0,
    unit: "rows",
    why: "0 to 65,536 rows of A",
};

#[cfg(test)]
mod tests {
    use crate::*;

    fn with(line: &str, replacement: &str) -> String {
        let h200 = BUILTIN
            .iter()
            .find(|(n, _)| *n == "h200")
            .map(|(_, t)| *t)
            .expect("h200 is built in");
        // Whole lines only: `launch-floor-us = 1.3` is also the tail of the graph floor's line.
        assert!(
            h200.lines().any(|l| l == line),
            "h200.toml has the line {line}"
        );
        h200.lines()
            .map(|l| if l == line { replacement } else { l })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn subnormal_and_huge_values_are_refused_with_key_and_range() {
        let cases = [
            (
                "bandwidth-gbps = 4800",
                "bandwidth-gbps = 5e-324",
                "peak.bandwidth-gbps must be in GB/s between 1 and 100000",
            ),
            (
                "bf16-tflops = 989.4",
                "bf16-tflops = 1e-310",
                "peak.bf16-tflops must be in TFLOP/s between 0.00001",
            ),
            (
                "memory-gib = 140.4",
                "memory-gib = 1e308",
                "device.memory-gib must be in GiB",
            ),
            (
                "gemm = 0.8",
                "gemm = 5e-324",
                "efficiency.gemm must be a fraction between 0.001 and 1",
            ),
            (
                "launch-floor-us = 1.3",
                "launch-floor-us = 1e300",
                "overheads.launch-floor-us must be in µs",
            ),
            (
                "python-op-us = 24.699",
                "python-op-us = -1",
                "host.python-op-us must be in µs between 0",
            ),
            ("python-op-us = 24.699", "python-op-us = nan", "got NaN"),
        ];
        for (line, bad, want) in cases {
            let err = parse_profile(&with(line, bad), "bad.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains("bad.toml"), "{err}");
            assert!(err.contains(want), "{bad}: {err}");
            assert!(err.contains("set it within that range"), "{err}");
        }
    }

    #[test]
    fn memory_and_l2_go_down_to_one_mebibyte_and_one_kibibyte() {
        // The lower edges are fractions (1/1024 GiB, 1/1024 MiB): a value just above each is
        // accepted and one just below refused.
        for (range, key) in [(MEMORY_GIB, "device.memory-gib"), (L2_MIB, "device.l2-mib")] {
            assert!(
                (range.min - 1.0 / 1024.0).abs() < 1e-15,
                "{key}: {}",
                range.min
            );
            assert!(range.check(key, 0.001).is_ok(), "{key}");
            let err = range.check(key, 0.0009).unwrap_err();
            assert!(
                err.contains(key) && err.contains("between 0.0009765625"),
                "{err}"
            );
        }
    }

    #[test]
    fn gemm_narrow_fills_are_optional_sourced_and_checked_per_class() {
        let floor = "launch-floor-us = 1.3";
        let p = parse_profile(&with(floor, floor), "h200.toml").unwrap();
        assert_eq!(p.gemm_narrow_fill, None);
        let six = "[12, 2, 34, 3, 12, 50]";
        let both = with(
            floor,
            &format!(
                "gemm-narrow-fill = {six}\ngemm-narrow-fill-bf16 = [60, 10, 60, 10, 45, 85]\n\
                 gemm-narrow-fill-source = \"m\"\nlaunch-floor-us = 1.3"
            ),
        );
        assert_eq!(
            parse_profile(&both, "a.toml").unwrap().gemm_narrow_fill,
            Some([
                [12.0, 2.0, 34.0, 3.0, 12.0, 50.0],
                [60.0, 10.0, 60.0, 10.0, 45.0, 85.0]
            ])
        );
        // The 16-bit array left out takes the fp32 one.
        let one = with(
            floor,
            &format!("gemm-narrow-fill = {six}\ngemm-narrow-fill-source = \"m\"\n{floor}"),
        );
        let f = parse_profile(&one, "b.toml").unwrap().gemm_narrow_fill;
        assert_eq!(f, Some([[12.0, 2.0, 34.0, 3.0, 12.0, 50.0]; 2]));
        for (bad, want) in [
            (
                format!("gemm-narrow-fill = [1, 2, 3]\ngemm-narrow-fill-source = \"m\"\n{floor}"),
                "overheads.gemm-narrow-fill has 3 values; give one per class, in this order: \
                 forward-n, forward-k, dx-n, dx-k, dw-m, dw-n",
            ),
            (
                format!(
                    "gemm-narrow-fill = [1, 2, 3, 4, -5, 6]\ngemm-narrow-fill-source = \"m\"\n{floor}"
                ),
                "overheads.gemm-narrow-fill (dw-m) must be in rows between 0 and 65536",
            ),
            (
                format!("gemm-narrow-fill-bf16 = {six}\ngemm-narrow-fill-source = \"m\"\n{floor}"),
                "without overheads.gemm-narrow-fill",
            ),
            (
                format!("gemm-narrow-fill = {six}\n{floor}"),
                "overheads.gemm-narrow-fill",
            ),
        ] {
            let err = parse_profile(&with(floor, &bad), "bad.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn gemm_fill_rows_are_optional_sourced_and_range_checked() {
        let floor = "launch-floor-us = 1.3";
        let p = parse_profile(&with(floor, floor), "h200.toml").unwrap();
        assert_eq!(p.gemm_fill_rows, None);
        // Both values: fp32 and 16-bit; the 16-bit one left out takes the fp32 one.
        let both = with(
            floor,
            "gemm-fill-rows = 4.5\ngemm-fill-rows-bf16 = 16\ngemm-fill-source = \"m\"\nlaunch-floor-us = 1.3",
        );
        assert_eq!(
            parse_profile(&both, "a.toml").unwrap().gemm_fill_rows,
            Some([4.5, 16.0])
        );
        let one = with(
            floor,
            "gemm-fill-rows = 6\ngemm-fill-source = \"m\"\nlaunch-floor-us = 1.3",
        );
        assert_eq!(
            parse_profile(&one, "b.toml").unwrap().gemm_fill_rows,
            Some([6.0, 6.0])
        );
        for (bad, want) in [
            (
                "gemm-fill-rows = -1\ngemm-fill-source = \"m\"\nlaunch-floor-us = 1.3",
                "overheads.gemm-fill-rows must be in rows between 0 and 65536",
            ),
            (
                "gemm-fill-rows-bf16 = 16\ngemm-fill-source = \"m\"\nlaunch-floor-us = 1.3",
                "without overheads.gemm-fill-rows",
            ),
            (
                "gemm-fill-rows = 6\nlaunch-floor-us = 1.3",
                "overheads.gemm-fill",
            ),
        ] {
            let err = parse_profile(&with(floor, bad), "bad.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn optimizer_op_times_are_optional_sourced_and_range_checked() {
        let floor = "launch-floor-us = 1.3";
        let p = parse_profile(&with(floor, floor), "h200.toml").unwrap();
        assert_eq!(p.optimizer_op_s, None);
        // fp32 and 16-bit in µs, read in seconds; the 16-bit one left out takes the fp32 one.
        let both = with(
            floor,
            "optimizer-op-us = 0.5\noptimizer-op-bf16-us = 0.75\noptimizer-op-source = \"m\"\n\
             launch-floor-us = 1.3",
        );
        assert_eq!(
            parse_profile(&both, "a.toml").unwrap().optimizer_op_s,
            Some([0.5e-6, 0.75e-6])
        );
        let one = with(
            floor,
            "optimizer-op-us = 0.5\noptimizer-op-source = \"m\"\nlaunch-floor-us = 1.3",
        );
        assert_eq!(
            parse_profile(&one, "b.toml").unwrap().optimizer_op_s,
            Some([0.5e-6, 0.5e-6])
        );
        for (bad, want) in [
            (
                "optimizer-op-us = -1\noptimizer-op-source = \"m\"\nlaunch-floor-us = 1.3",
                "overheads.optimizer-op-us must be in µs between 0 and 1000000",
            ),
            (
                "optimizer-op-bf16-us = 0.7\noptimizer-op-source = \"m\"\nlaunch-floor-us = 1.3",
                "optimizer-op-bf16-us needs them",
            ),
            (
                "optimizer-op-us = 0.5\nlaunch-floor-us = 1.3",
                "overheads.optimizer-op-us and optimizer-op-source go together",
            ),
        ] {
            let err = parse_profile(&with(floor, bad), "bad.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn optimizer_size_tables_are_optional_sourced_increasing_and_range_checked() {
        let floor = "launch-floor-us = 1.3";
        let p = parse_profile(&with(floor, floor), "h200.toml").unwrap();
        assert_eq!(p.optimizer_size_rate, None);
        // MiB and GB/s, read in bytes and bytes/s; the 16-bit table defaults to the fp32 one.
        let one = with(
            floor,
            "optimizer-size-gbps = [[0.25, 30.5], [96, 17]]\noptimizer-size-source = \"m\"\n\
             launch-floor-us = 1.3",
        );
        let t = vec![(262144.0, 30.5e9), (96.0 * 1048576.0, 17e9)];
        assert_eq!(
            parse_profile(&one, "a.toml").unwrap().optimizer_size_rate,
            Some([t.clone(), t])
        );
        for (bad, want) in [
            (
                "optimizer-size-gbps = [[2, 30], [2, 20]]\noptimizer-size-source = \"m\"\n\
                 launch-floor-us = 1.3",
                "sizes must increase, but pair 1 (2 MiB) follows 2 MiB",
            ),
            (
                "optimizer-size-gbps = []\noptimizer-size-source = \"m\"\nlaunch-floor-us = 1.3",
                "is empty",
            ),
            (
                "optimizer-size-gbps = [[1, 0.5]]\noptimizer-size-source = \"m\"\n\
                 launch-floor-us = 1.3",
                "overheads.optimizer-size-gbps[0] rate must be in GB/s",
            ),
            (
                "optimizer-size-bf16-gbps = [[1, 10]]\noptimizer-size-source = \"m\"\n\
                 launch-floor-us = 1.3",
                "without overheads.optimizer-size-gbps",
            ),
        ] {
            let err = parse_profile(&with(floor, bad), "bad.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn loop_costs_are_optional_paired_with_sources_and_range_checked() {
        // h200.toml without its loop-* lines, then with the ones each case gives.
        let with = |line: &str, replacement: &str| -> String {
            with(line, replacement)
                .lines()
                .filter(|l| !l.starts_with("loop-") || replacement.contains(l))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let host = "python-op-us = 24.699";
        // Given with their sources: read in seconds.
        let ok = with(
            host,
            "loop-micro-batch-us = 300\nloop-micro-batch-source = \"m\"\nloop-module-us = 1.5\n\
             loop-module-source = \"m\"\nloop-step-us = 40\nloop-step-source = \"m\"\n\
             python-op-us = 24.699",
        );
        let p = parse_profile(&ok, "ok.toml").unwrap();
        assert_eq!(p.host.loop_micro_batch_s, 300.0 * 1e-6);
        assert_eq!(p.host.loop_module_s, 1.5 * 1e-6);
        assert_eq!(p.host.loop_step_s, 40.0 * 1e-6);
        // A value without its source, or a source without its value, is refused.
        for (bad, key) in [
            ("loop-step-us = 40\npython-op-us = 24.699", "host.loop-step"),
            (
                "loop-module-source = \"m\"\npython-op-us = 24.699",
                "host.loop-module",
            ),
        ] {
            let err = parse_profile(&with(host, bad), "bad.toml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("{key}-us and {key}-source go together")),
                "{err}"
            );
        }
        // Out of range.
        let err = parse_profile(
            &with(
                host,
                "loop-micro-batch-us = -3\nloop-micro-batch-source = \"m\"\npython-op-us = 24.699",
            ),
            "bad.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("host.loop-micro-batch-us must be in µs between 0"),
            "{err}"
        );
    }

    #[test]
    fn first_touch_values_are_range_checked() {
        let base = with(
            "kernel-gap-us = 0.26",
            "kernel-gap-us = 0.26\nfirst-touch-gbps = 3\nfirst-touch-min-mib = 32\nfirst-touch-source = \"test\"",
        );
        assert!(parse_profile(&base, "ok.toml").is_ok());
        let err = parse_profile(
            &base.replace("first-touch-min-mib = 32", "first-touch-min-mib = -5"),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("overheads.first-touch-min-mib must be in MiB"),
            "{err}"
        );
        let err = parse_profile(
            &base.replace("first-touch-gbps = 3", "first-touch-gbps = 1e-300"),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("overheads.first-touch-gbps"), "{err}");
    }

    #[test]
    fn a_name_with_a_newline_is_refused() {
        let err = parse_profile(&with("name = \"h200\"", "name = \"h200\\nx\""), "n.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("device.name must be one line"), "{err}");
    }

    #[test]
    fn every_builtin_value_is_inside_its_range_with_room() {
        // The ranges must not be tight around today's devices: each built-in value is at least
        // 10x inside both ends (efficiencies and host costs excepted, whose ends are 1 and 0).
        for p in builtin_profiles().expect("built-ins parse") {
            for (v, r) in [
                (p.bandwidth_bps / 1e9, BANDWIDTH_GBPS),
                (p.peak_fp16_flops / 1e12, PEAK_TFLOPS),
                (p.peak_fp32_flops / 1e12, PEAK_TFLOPS),
                (p.memory_bytes / f64::from(1u32 << 30), MEMORY_GIB),
            ] {
                assert!(v >= 10.0 * r.min && v <= r.max / 10.0, "{}: {v}", p.name);
            }
        }
    }
}
