//! Tests of the calibration fits (`fit.rs`): the least-squares core on synthetic rows, and
//! whole calibrations of the saved CPU run with made-up times whose parameters the fits must
//! return.

mod tests {
    use super::super::*;

    #[test]
    fn nnls_recovers_a_nonnegative_solution_and_clamps_a_negative_one() {
        // b = 2·x0 + 3·x1 exactly.
        let a = DMatrix::from_row_slice(4, 2, &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 1.0]);
        let b = DVector::from_row_slice(&[2.0, 3.0, 5.0, 7.0]);
        let x = nnls(&a, &b);
        assert!(
            (x[0] - 2.0).abs() < 1e-10 && (x[1] - 3.0).abs() < 1e-10,
            "{x}"
        );
        // The unconstrained solution has x1 < 0: NNLS sets it to 0 and refits x0.
        let b = DVector::from_row_slice(&[2.0, -1.0, 1.0, 3.0]);
        let x = nnls(&a, &b);
        assert_eq!(x[1], 0.0);
        // min over x0 of (x0−2)² + 1 + (x0−1)² + (2x0−3)²: x0 = (2 + 1 + 6) / 6 = 1.5.
        assert!((x[0] - 1.5).abs() < 1e-10, "{x}");
    }

    /// NNLS by exhaustion: of the least-squares fits on every subset of the columns whose
    /// coefficients are all positive (zero elsewhere), the one of smallest residual.
    fn nnls_by_exhaustion(a: &DMatrix<f64>, b: &DVector<f64>) -> DVector<f64> {
        let n = a.ncols();
        let mut best = (b.norm_squared(), DVector::zeros(n));
        for mask in 1u32..(1 << n) {
            let idx: Vec<usize> = (0..n).filter(|j| mask & (1 << j) != 0).collect();
            let sub = DMatrix::from_fn(a.nrows(), idx.len(), |i, k| a[(i, idx[k])]);
            let Some(z) = (sub.transpose() * &sub).lu().solve(&(sub.transpose() * b)) else {
                continue;
            };
            if z.iter().any(|v| *v <= 0.0) {
                continue;
            }
            let mut x = DVector::zeros(n);
            for (k, &j) in idx.iter().enumerate() {
                x[j] = z[k];
            }
            let r = (b - a * &x).norm_squared();
            if r < best.0 {
                best = (r, x);
            }
        }
        best.1
    }

    #[test]
    fn nnls_matches_an_exhaustive_search() {
        // Pseudo-random problems (a fixed linear congruential sequence), 1 to 12 columns, with
        // right-hand sides that make some unconstrained coefficients negative: the active-set
        // loop must step back to the boundary, and a 12-column problem needs more passes than a
        // small one.
        let mut state = 12_345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        let mut stepped_back = 0;
        for n in 1..=12usize {
            for _ in 0..6 {
                let m = n + 5;
                let a = DMatrix::from_fn(m, n, |_, _| next() + 1.2);
                let b = DVector::from_fn(m, |_, _| next() * 3.0 + 1.0);
                let x = nnls(&a, &b);
                let want = nnls_by_exhaustion(&a, &b);
                for j in 0..n {
                    assert!(x[j] >= 0.0, "n {n}: {x}");
                    assert!(
                        (x[j] - want[j]).abs() <= 1e-7 * (1.0 + want[j].abs()),
                        "n {n}: nnls {x} vs exhaustive {want}"
                    );
                }
                // The unconstrained fit has a negative coefficient: NNLS had work to do.
                if let Some(z) = (a.transpose() * &a).lu().solve(&(a.transpose() * &b)) {
                    if z.iter().any(|v| *v < 0.0) {
                        stepped_back += 1;
                    }
                }
            }
        }
        assert!(stepped_back >= 10, "{stepped_back}");
        // All coefficients positive at the optimum of a 12-column problem: every column joins.
        let a = DMatrix::from_fn(20, 12, |i, j| {
            1.0 + ((i * 7 + j * 3) % 11) as f64 + (i == j) as u8 as f64 * 5.0
        });
        let truth = DVector::from_fn(12, |j, _| 1.0 + j as f64);
        let x = nnls(&a, &(&a * &truth));
        assert!((x - truth).norm() < 1e-8);
    }

    #[test]
    fn a_one_term_fit_by_hand() {
        // t = c·x through (1, 1), (2, 2), (3, 3.3), rows weighted by 1/t: a = x/t =
        // (1, 1, 1/1.1), b = 1. Least squares without intercept: c = Σa / Σa²; residuals
        // r = 1 − a·c; R² uncentred (every target is 1): 1 − RSS / n; the 95% interval
        // t(0.975, n − 1) · √(RSS / (n − 1) / Σa²), t(0.975, 2) = 4.302652729911275 (tables).
        let rows = vec![(vec![1.0], 1.0), (vec![2.0], 2.0), (vec![3.0], 3.3)];
        let f = fit_linear("one", vec!["s per x"], &rows).expect("fits");
        let a = [1.0, 1.0, 1.0 / 1.1];
        let (sa, saa): (f64, f64) = (a.iter().sum(), a.iter().map(|v| v * v).sum());
        let c = sa / saa;
        let r: Vec<f64> = a.iter().map(|v| 1.0 - v * c).collect();
        let rss: f64 = r.iter().map(|v| v * v).sum();
        let close = |got: f64, want: f64| (got - want).abs() <= 1e-9 * want.abs().max(1e-12);
        assert!(close(f.coef[0], c), "{f:?}");
        assert!(close(f.r2, 1.0 - rss / 3.0), "{f:?}");
        assert!(
            close(f.worst_rel, r[2].abs()) && r[2].abs() > r[0].abs(),
            "{f:?}"
        );
        let ci = 4.302652729911275 * (rss / 2.0 / saa).sqrt();
        assert!(close(f.ci95[0], ci), "{} vs {ci}", f.ci95[0]);
        assert_eq!(f.n, 3);
        // A second term the data push below zero is clamped: coefficient 0, no interval, and
        // the first term's interval has one more degree of freedom.
        let rows2: Vec<(Vec<f64>, f64)> = rows
            .iter()
            .zip([3.0, 2.0, 1.0])
            .map(|((x, t), z)| (vec![x[0], z], *t))
            .collect();
        let f2 = fit_linear("two", vec!["s per x", "s per z"], &rows2).expect("fits");
        // (Unconstrained, z's coefficient is −0.027.)
        assert_eq!(f2.coef[1], 0.0, "{f2:?}");
        assert!(f2.ci95[1].is_nan());
        assert!(close(f2.coef[0], c));
        assert!(close(f2.ci95[0], ci), "{f2:?}");
        // As many rows as terms: an exact fit (the optimizer's rate at one tensor size is one
        // sample's); fewer: no fit.
        let exact = fit_linear("exact", vec!["s per x"], &rows[2..]).expect("exact");
        assert!(
            close(exact.coef[0], 1.1) && close(exact.r2, 1.0),
            "{exact:?}"
        );
        assert!(fit_linear("few", vec!["a", "b"], &rows[..1]).is_none());
        assert!(fit_linear("none", vec!["a"], &[]).is_none());
    }

    #[test]
    fn linear_fit_finds_rate_and_fixed_cost_with_tight_intervals() {
        // t = bytes / 20 GB/s + 5 µs per op, with ±1% alternating noise.
        let rows: Vec<(Vec<f64>, f64)> = (0..12)
            .map(|i| {
                let bytes = 1e4 * 2f64.powi(i);
                let noise = if i % 2 == 0 { 1.01 } else { 0.99 };
                (vec![bytes, 1.0], (bytes / 20e9 + 5e-6) * noise)
            })
            .collect();
        let f = fit_linear("elementwise", vec!["s per byte", "s per op"], &rows).unwrap();
        assert!((1.0 / f.coef[0] / 20e9 - 1.0).abs() < 0.02, "{f:?}");
        assert!((f.coef[1] / 5e-6 - 1.0).abs() < 0.03, "{f:?}");
        assert!(f.r2 > 0.99);
        assert!(f.ci95.iter().all(|c| c.is_finite() && *c > 0.0));
        assert!(f.worst_rel < 0.03);
        // Too few rows: no fit.
        assert!(fit_linear("x", vec!["a", "b"], &rows[..1]).is_none());
    }
}

mod toml_safety_tests {
    use super::super::*;

    /// The tensor sizes (elements) of an optimizer sample, from the name calibrate gives it
    /// (`calibrate.rs`, `optimizer` and `optimizer_adapters`):
    /// `adamw-single d{d} x{layers} vocab {vocab} (…)` (an embedding, per block four d×d, two
    /// d×4d and two norm vectors, a final norm) or `adamw-single adapters r{r} {d_in}+{d_out}
    /// x{count} (…)` (`count` pairs of r×d_in and d_out×r, no r×d_in when d_in is 0). None for
    /// any other name. The count must equal the name's `(N tensors)`.
    fn optimizer_tensors(name: &str) -> Option<Vec<u64>> {
        let words: Vec<&str> = name.split_whitespace().collect();
        let num = |w: &str, prefix: &str| w.strip_prefix(prefix)?.parse::<u64>().ok();
        let sizes = match words.as_slice() {
            ["adamw-single", "adapters", r, dims, count, n, "tensors)"] => {
                let r = num(r, "r")?;
                let (d_in, d_out) = dims.split_once('+')?;
                let (d_in, d_out) = (d_in.parse::<u64>().ok()?, d_out.parse::<u64>().ok()?);
                let mut v = Vec::new();
                for _ in 0..num(count, "x")? {
                    if d_in > 0 {
                        v.push(r * d_in);
                    }
                    v.push(d_out * r);
                }
                (v, *n)
            }
            ["adamw-single", d, layers, "vocab", vocab, n, "tensors)"] => {
                let d = num(d, "d")?;
                let mut v = vec![vocab.parse::<u64>().ok()? * d];
                for _ in 0..num(layers, "x")? {
                    v.extend([d * d, d * d, d * d, d * d, 4 * d * d, 4 * d * d, d, d]);
                }
                v.push(d);
                (v, *n)
            }
            _ => return None,
        };
        let (v, n) = sizes;
        (n.strip_prefix('(')?.parse::<usize>().ok()? == v.len()).then_some(v)
    }

    fn saved_run() -> CalibrationRun {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/results/cpu/cpu-calibration.json"
        );
        CalibrationRun::load(std::path::Path::new(path)).expect("saved CPU calibration loads")
    }

    fn base() -> Profile {
        costsim_hardware::resolve_device("cpu-generic").expect("built in")
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// The run's first-touch rate as calibrate takes it: the median of its stable samples.
    fn touch_bps(run: &CalibrationRun) -> f64 {
        median(
            run.samples
                .iter()
                .filter(|s| s.bench == Bench::FirstTouch && s.stable() && s.t() > 0.0)
                .map(|s| s.bytes / s.t())
                .collect(),
        )
    }

    /// The median time per op of the run's stable `bench` samples (for the dispatch loop,
    /// calibrate's dispatch cost).
    fn per_op_time(run: &CalibrationRun, bench: Bench) -> f64 {
        median(
            run.samples
                .iter()
                .filter(|s| s.bench == bench && s.stable())
                .map(|s| s.t() / f64::from(s.ops))
                .collect(),
        )
    }

    /// An optimizer sample like `template`, of `bytes` and `ops`, timed `t` seconds exactly.
    fn optimizer_sample(
        template: &Sample,
        name: String,
        dtype: &str,
        bytes: f64,
        ops: u32,
        t: f64,
    ) -> Sample {
        let mut x = template.clone();
        x.name = name;
        x.dtype = dtype.into();
        x.bytes = bytes;
        x.ops = ops;
        x.stats = Stats::from_seconds(&[t, t, t]);
        x
    }

    /// Made-up GEMM times t = (2mnk + m₀·2nk)/R + c·ops (fp32 R = 100 GFLOP/s, m₀ = 5 rows;
    /// bf16 R = 400, m₀ = 16; c = 10 µs), plus, for outputs of at least 32 MiB, their pages
    /// faulted in at the run's first-touch rate (the median of its first-touch samples), which
    /// the fit takes off before fitting.
    fn row_fill_time(run: &CalibrationRun) -> impl Fn([u64; 4], &str, u32) -> f64 {
        let touch_bps = touch_bps(run);
        move |g: [u64; 4], dtype: &str, ops: u32| {
            let (r, m0) = row_fill_params(dtype);
            let (m, n, k, b) = (g[0] as f64, g[1] as f64, g[2] as f64, g[3] as f64);
            let out = m * n * b * if dtype == "bf16" { 2.0 } else { 4.0 };
            let touch = if out >= 32.0 * 1048576.0 {
                out / touch_bps
            } else {
                0.0
            };
            (2.0 * b * m * n * k + m0 * 2.0 * b * n * k) / r + 10e-6 * f64::from(ops) + touch
        }
    }

    /// (R, m₀) of [`row_fill_time`] per dtype.
    fn row_fill_params(dtype: &str) -> (f64, f64) {
        if dtype == "bf16" {
            (400e9, 16.0)
        } else {
            (100e9, 5.0)
        }
    }

    #[test]
    fn attention_fit_separates_a_fixed_time_per_tile() {
        // The saved run's bf16 SDPA-backward samples, given their shapes and made-up times
        // t = F / 60 GFLOP/s + 45 µs · tiles + 20 µs · ops, plus two with more slices: the fit
        // returns the rate and the per-tile time, and the profile carries them. The other
        // attention groups keep no shapes: no per-tile time for them. Tiles by hand (query
        // blocks of 32 rows below S = 192, 64 from there; one key block up to 512): b1 h12
        // s128 48, b2 h8 s256 64, b1 h12 s512 96, b4 h8 s128 128, b4 h12 s256 192.
        let mut run = saved_run();
        let (rate, c_tile, c_op) = (60e9, 45e-6, 20e-6);
        let template = run
            .samples
            .iter()
            .find(|s| s.bench == Bench::AttentionBackward && s.dtype == "bf16")
            .expect("a bf16 SDPA-backward sample")
            .clone();
        run.samples
            .retain(|s| !(s.bench == Bench::AttentionBackward && s.dtype == "bf16"));
        for (b, h, sq, tiles) in [
            (1u64, 12u64, 128u64, 48.0),
            (2, 8, 256, 64.0),
            (1, 12, 512, 96.0),
            (4, 8, 128, 128.0),
            (4, 12, 256, 192.0),
        ] {
            let mut x = template.clone();
            let flops = 2.5 * 2.0 * (b * h) as f64 * (sq * sq * 64) as f64;
            x.flops = flops;
            x.gemm = Some([sq, sq, 64, b * h]);
            x.stats.median_ms = 1e3 * (flops / rate + c_tile * tiles + c_op * f64::from(x.ops));
            run.samples.push(x);
        }
        // The fp32 forward samples take 1 ms whatever their FLOPs: the fit gives no rate (its
        // FLOP term is 0), so the profile keeps the base's forward attention efficiency.
        for x in run
            .samples
            .iter_mut()
            .filter(|s| s.bench == Bench::Attention && s.dtype == "fp32")
        {
            x.stats.median_ms = 1.0;
        }
        let cal = calibrate(&run, &base(), "tiles").expect("calibrates");
        let f = cal
            .fits
            .iter()
            .find(|f| f.what == "attention backward bf16")
            .expect("fit");
        assert!((1.0 / f.coef[0] / rate - 1.0).abs() < 1e-6, "{f:?}");
        assert!((f.coef[1] / c_tile - 1.0).abs() < 1e-6, "{f:?}");
        let p = costsim_hardware::parse_profile(&cal.profile_toml, "t").expect("loads");
        // Written in µs to 4 decimals.
        assert!((p.attention_tile_s[1][1] - c_tile).abs() < 1e-10);
        // The efficiency is the rate over the bf16 GEMM rate (the profile's bf16 peak), written
        // to 5 decimals.
        let eff = rate / p.peak_bf16_flops;
        assert!(
            (p.attention_by[1][1] - eff).abs() < 1e-5,
            "{:?}",
            p.attention_by
        );
        assert!(eff < 0.9, "{eff}: the check must not sit at the 1.0 clamp");
        let fwd = cal
            .fits
            .iter()
            .find(|f| f.what == "attention fp32")
            .expect("fit");
        assert_eq!(fwd.coef[0], 0.0, "{fwd:?}");
        assert!((p.attention_by[0][0] - base().attention_efficiency).abs() < 1e-5);
        assert_eq!(p.attention_tile_s[0], [0.0, 0.0]);
        assert_eq!(p.attention_tile_s[1][0], 0.0);
    }

    #[test]
    fn transcendental_kind_is_fitted_from_tanh_samples_and_does_not_move_the_floor() {
        // A run without tanh samples gives no transcendental line: its profile prices tanh as
        // elementwise. Add fp32 tanh samples at made-up times t = B / 3.5 GB/s +
        // 30 µs (an intercept far above the memory-bound fits'), and bf16 ones: the kind is
        // fitted at each dtype's bandwidth, and the launch floor (the median intercept of the
        // memory-bound fits) is the same as without them.
        // A cold calibration (2026-11-29l), whose launch floor sits above its 0.05 µs minimum,
        // without its own tanh samples.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/results/cpu-2026-11-29l/cpu-calibration.json"
        );
        let mut run = CalibrationRun::load(std::path::Path::new(path)).expect("loads");
        run.samples.retain(|s| s.bench != Bench::Transcendental);
        let before = calibrate(&run, &base(), "before").expect("calibrates");
        assert!(!before.profile_toml.contains("transcendental"));
        let p0 = costsim_hardware::parse_profile(&before.profile_toml, "t").expect("loads");
        assert!(p0.launch_floor_s > 0.2e-6, "{}", p0.launch_floor_s);
        let template = run
            .samples
            .iter()
            .find(|s| s.bench == Bench::Elementwise && s.dtype == "fp32")
            .expect("an elementwise sample")
            .clone();
        // fp32 at 3.5 GB/s and bf16 at 2 GB/s, both with the large intercept: two more votes
        // above the median would move it.
        let (bw, bw16, c) = (3.5e9, 2.0e9, 30e-6);
        for (dtype, size, rate) in [("fp32", 4.0, bw), ("bf16", 2.0, bw16)] {
            for n in [65_536.0f64, 262_144.0, 1_048_576.0, 4_194_304.0] {
                let mut x = template.clone();
                x.bench = Bench::Transcendental;
                x.dtype = dtype.into();
                x.name = format!("tanh {n}");
                x.flops = n;
                x.bytes = 2.0 * size * n;
                x.stats.median_ms = 1e3 * (x.bytes / rate + c * f64::from(x.ops));
                run.samples.push(x);
            }
        }
        let cal = calibrate(&run, &base(), "tanh").expect("calibrates");
        let f = cal
            .fits
            .iter()
            .find(|f| f.what == "transcendental fp32")
            .expect("fit");
        assert!((1.0 / f.coef[0] / bw - 1.0).abs() < 1e-6, "{f:?}");
        let p = costsim_hardware::parse_profile(&cal.profile_toml, "t").expect("loads");
        use costsim_hardware::MemKind;
        let eff = p.kind_bandwidth.get(MemKind::Transcendental, false);
        // Written to 4 decimals, as a fraction of the profile's bandwidth.
        assert!((eff * p.bandwidth_bps / bw - 1.0).abs() < 1e-3, "{eff}");
        let eff16 = p.kind_bandwidth.get(MemKind::Transcendental, true);
        // Half a unit of the 4th decimal of 0.035 is 0.14%.
        assert!(
            (eff16 * p.bandwidth_bps / bw16 - 1.0).abs() < 2e-3,
            "{eff16}"
        );
        assert_eq!(p.launch_floor_s, p0.launch_floor_s);
        assert_eq!(
            p.kind_bandwidth.get(MemKind::Elementwise, false),
            p0.kind_bandwidth.get(MemKind::Elementwise, false)
        );
    }

    #[test]
    fn row_fill_is_fitted_when_the_samples_reach_a_few_rows() {
        // The saved run's GEMM samples keep their shapes and get made-up times
        // t = (2mnk + m₀·2nk) / R + c·ops, fp32 R = 100 GFLOP/s, m₀ = 5 rows; bf16 R = 400,
        // m₀ = 16; c = 10 µs. Without GEMMs of at most 4 rows the fit is the tile model's (the
        // saved run as recorded); with two such samples per dtype (1 × 1536 × 384 and
        // 4 × 384 × 1536) it returns R and m₀ and the profile carries them. The skinny GEMMs
        // (n or k ≤ 64) stay out of it.
        let mut run = saved_run();
        let params = row_fill_params;
        let time = row_fill_time(&run);
        // GEMM samples a fit of each kind takes (stable, per dtype): the tile model every one
        // with all three dimensions above 64, the row fill every one with n and k above 64.
        let count = |run: &CalibrationRun, dtype: &str, rows: bool| {
            run.samples
                .iter()
                .filter(|s| s.bench == Bench::Gemm && s.stable() && s.dtype == dtype)
                .filter(|s| {
                    let g = s.gemm.expect("shape");
                    let nk = g[1].min(g[2]);
                    if rows {
                        nk > SKINNY_DIM
                    } else {
                        nk.min(g[0]) > SKINNY_DIM
                    }
                })
                .count()
        };
        for x in run.samples.iter_mut().filter(|s| s.bench == Bench::Gemm) {
            let g = x.gemm.expect("GEMM samples keep their shape");
            if g[1].min(g[2]) > SKINNY_DIM {
                x.stats.median_ms = 1e3 * time(g, &x.dtype.clone(), x.ops);
            }
        }
        let tiles = calibrate(&run, &base(), "tiles").expect("calibrates");
        assert!(!tiles.profile_toml.contains("gemm-fill-rows"));
        for dtype in ["fp32", "bf16"] {
            let f = tiles
                .fits
                .iter()
                .find(|f| f.what == format!("gemm {dtype}"))
                .expect("fit");
            assert_eq!(f.names[0], "s per tile-FLOP");
            assert_eq!(f.n, count(&run, dtype, false), "{dtype}");
            // Its samples are large, where tiles and the fill nearly agree: the dtype's rate.
            let rate = 1.0 / f.coef[0] / params(dtype).0;
            assert!((rate - 1.0).abs() < 0.3, "{dtype}: {rate}");
        }
        let template = run
            .samples
            .iter()
            .find(|s| s.bench == Bench::Gemm)
            .expect("a GEMM sample")
            .clone();
        for dtype in ["fp32", "bf16"] {
            for g in [[1u64, 1536, 384, 1], [4, 384, 1536, 1]] {
                let mut x = template.clone();
                x.dtype = dtype.to_string();
                x.gemm = Some(g);
                x.stats.median_ms = 1e3 * time(g, dtype, x.ops);
                run.samples.push(x);
            }
        }
        let cal = calibrate(&run, &base(), "rows").expect("calibrates");
        for (dtype, mode) in [("fp32", 0usize), ("bf16", 1)] {
            let f = cal
                .fits
                .iter()
                .find(|f| f.what == format!("gemm {dtype}"))
                .expect("fit");
            let (r, m0) = params(dtype);
            assert_eq!(f.names.len(), 3, "{f:?}");
            assert_eq!(f.n, count(&run, dtype, true), "{dtype}");
            assert!((1.0 / f.coef[0] / r - 1.0).abs() < 1e-6, "{f:?}");
            assert!((f.coef[1] / f.coef[0] / m0 - 1.0).abs() < 1e-6, "{f:?}");
            assert!((f.coef[2] / 10e-6 - 1.0).abs() < 1e-6, "{f:?}");
            let p = costsim_hardware::parse_profile(&cal.profile_toml, "r").expect("loads");
            let fill = p.gemm_fill_rows.expect("the profile carries the fill");
            // Written to 3 decimals.
            assert!((fill[mode] - m0).abs() < 1e-3, "{fill:?}");
            let peak = if mode == 0 {
                p.peak_fp32_flops
            } else {
                p.peak_bf16_flops
            };
            assert!((peak / r - 1.0).abs() < 1e-5, "{peak}");
        }
    }

    #[test]
    fn narrow_fills_are_fitted_per_class_from_layout_samples() {
        // The saved run's GEMMs (n and k above 64) get times t = (2mnk + m₀·2nk)/R + c·ops
        // (fp32 R = 100 GFLOP/s, m₀ = 5; bf16 400, 16; c = 10 µs), plus few-row samples so that
        // the row fill is fitted; then LoRA's six products in nn.Linear's layouts, three shapes
        // each, with t = 2mnk·(s + s₀)/s / R + c·ops, s the rank: per class s₀ = 12, 2, 34, 3, 12,
        // 50 (fp32) and 60, 10, 60, 10, 45, 85 (bf16). The fit returns each s₀ and the profile
        // carries them; the rate, row-fill and skinny-bandwidth fits do not take these samples.
        let mut run = saved_run();
        let params = |dtype: &str| {
            let (r, m0) = row_fill_params(dtype);
            let fills = if dtype == "bf16" {
                [60.0, 10.0, 60.0, 10.0, 45.0, 85.0]
            } else {
                [12.0, 2.0, 34.0, 3.0, 12.0, 50.0]
            };
            (r, m0, fills)
        };
        let time = row_fill_time(&run);
        for x in run.samples.iter_mut().filter(|s| s.bench == Bench::Gemm) {
            let g = x.gemm.expect("GEMM samples keep their shape");
            if g[1].min(g[2]) > SKINNY_DIM {
                x.stats.median_ms = 1e3 * time(g, &x.dtype.clone(), x.ops);
            }
        }
        let template = run
            .samples
            .iter()
            .find(|s| s.bench == Bench::Gemm)
            .expect("a GEMM sample")
            .clone();
        let plain = |run: &CalibrationRun, dtype: &str| {
            run.samples
                .iter()
                .filter(|s| s.bench == Bench::Gemm && s.stable() && s.dtype == dtype)
                .filter(|s| s.gemm.is_some_and(|g| g[1].min(g[2]) > SKINNY_DIM))
                .count()
        };
        let mut unlabelled = [0usize; 2];
        for (i, dtype) in ["fp32", "bf16"].into_iter().enumerate() {
            for g in [[1u64, 1536, 384, 1], [4, 384, 1536, 1]] {
                let mut x = template.clone();
                x.dtype = dtype.to_string();
                x.gemm = Some(g);
                x.stats.median_ms = 1e3 * time(g, dtype, x.ops);
                run.samples.push(x);
            }
            unlabelled[i] = plain(&run, dtype);
        }
        let skinny_n = |cal: &Calibration| {
            cal.fits
                .iter()
                .find(|f| f.what == "skinny gemm")
                .map_or(0, |f| f.n)
        };
        let before = calibrate(&run, &base(), "rows").expect("calibrates");
        assert!(!before.profile_toml.contains("gemm-narrow-fill"));
        // (class, m, n, k, layout) for a k → n linear over m tokens at rank r.
        let roles = |m: u64, r: u64, k: u64, n: u64| {
            [
                (0, m, r, k, "nt"),
                (1, m, n, r, "nt"),
                (2, m, r, n, "nn"),
                (3, m, k, r, "nn"),
                (4, r, k, m, "tn"),
                (5, n, r, m, "tn"),
            ]
        };
        // Class dw-n with two samples (still fitted) and with one (no fills for the dtype).
        let (mut with_two, mut with_one) = (run.clone(), run.clone());
        // fp32 forward-n: the three shapes' fills are 8, 12 and 20 (median 12), so its fit has
        // residuals; every other class is exact. Two ops per timed unit (c counts per op).
        let fill_of = |dtype: &str, class: usize, shape: usize| {
            if dtype == "fp32" && class == 0 {
                [8.0, 12.0, 20.0][shape]
            } else {
                params(dtype).2[class]
            }
        };
        // fp32 forward-n's (time at s₀ = 0, time per element of fill, measured time) per shape.
        let mut forward_n: Vec<(f64, f64, f64)> = Vec::new();
        for dtype in ["fp32", "bf16"] {
            let rate = params(dtype).0;
            for (shape, (m, r, k, n)) in [
                (256, 8, 768, 768),
                (512, 16, 512, 1408),
                (1024, 8, 512, 512),
            ]
            .into_iter()
            .enumerate()
            {
                for (class, gm, gn, gk, layout) in roles(m, r, k, n) {
                    let mut x = template.clone();
                    x.dtype = dtype.to_string();
                    x.name = format!("mm {gm}x{gn}x{gk} {layout}");
                    x.gemm = Some([gm, gn, gk, 1]);
                    x.ops = 2;
                    let flops = 2.0 * (gm * gn * gk) as f64;
                    let s = r as f64;
                    let (base, per_fill) = (flops / rate + 20e-6, flops / rate / s);
                    let t = base + fill_of(dtype, class, shape) * per_fill;
                    x.stats.median_ms = 1e3 * t;
                    if dtype == "fp32" && class == 0 {
                        forward_n.push((base, per_fill, t));
                    }
                    if class != 5 || shape < 2 {
                        with_two.samples.push(x.clone());
                    }
                    if class != 5 || shape < 1 {
                        with_one.samples.push(x.clone());
                    }
                    run.samples.push(x);
                }
            }
        }
        let cal = calibrate(&run, &base(), "narrow").expect("calibrates");
        let p = costsim_hardware::parse_profile(&cal.profile_toml, "n").expect("loads");
        let got = p
            .gemm_narrow_fill
            .expect("the profile carries the narrow fills");
        let fit_of = |cal: &Calibration, dtype: &str, class: usize| {
            cal.fits
                .iter()
                .find(|f| f.what == format!("narrow fill {dtype} {}", NARROW_CLASSES[class]))
                .cloned()
                .expect("a fit per class")
        };
        for (i, dtype) in ["fp32", "bf16"].into_iter().enumerate() {
            let (rate, m0, fills) = params(dtype);
            for (class, want) in fills.iter().enumerate() {
                let f = fit_of(&cal, dtype, class);
                assert_eq!(f.n, 3, "{f:?}");
                assert!((f.coef[0] - want).abs() < 1e-6, "{f:?}");
                if dtype == "bf16" || class > 0 {
                    assert!(f.worst_rel < 1e-9, "{f:?}");
                    assert!((f.r2 - 1.0).abs() < 1e-9, "{f:?}");
                }
                // Written to 2 decimals.
                assert!((got[i][class] - want).abs() < 5e-3, "{got:?}");
            }
            // The rate and row-fill fit kept to the unlabelled samples, and found the same.
            let f = cal
                .fits
                .iter()
                .find(|f| f.what == format!("gemm {dtype}"))
                .expect("fit");
            assert_eq!(f.n, unlabelled[i], "{dtype}");
            assert!((1.0 / f.coef[0] / rate - 1.0).abs() < 1e-6, "{f:?}");
            assert!((f.coef[1] / f.coef[0] / m0 - 1.0).abs() < 1e-6, "{f:?}");
        }
        // fp32 forward-n, by hand: predicted t = base + 12·per_fill against the measured times;
        // R² = 1 − Σ(pred − t)² / Σ(t − mean t)², worst |pred − t| / t.
        let f = fit_of(&cal, "fp32", 0);
        let mean = forward_n.iter().map(|x| x.2).sum::<f64>() / 3.0;
        let (mut res, mut tot, mut worst) = (0.0, 0.0, 0.0f64);
        for &(base, per_fill, t) in &forward_n {
            let pred = base + 12.0 * per_fill;
            res += (pred - t) * (pred - t);
            tot += (t - mean) * (t - mean);
            worst = worst.max((pred - t).abs() / t);
        }
        assert!(worst > 0.05, "{worst}: the check needs residuals");
        assert!((f.worst_rel - worst).abs() < 1e-12, "{f:?} {worst}");
        assert!((f.r2 - (1.0 - res / tot)).abs() < 1e-12, "{f:?}");
        assert_eq!(skinny_n(&cal), skinny_n(&before));
        // A class with two samples is fitted; a dtype with a class of one gets no fills.
        let two = calibrate(&with_two, &base(), "two").expect("calibrates");
        assert_eq!(fit_of(&two, "bf16", 5).n, 2);
        assert!(two.profile_toml.contains("gemm-narrow-fill-bf16"));
        let one = calibrate(&with_one, &base(), "one").expect("calibrates");
        assert!(!one.profile_toml.contains("gemm-narrow-fill"));
    }

    #[test]
    fn hostile_strings_in_the_samples_stay_strings() {
        let mut run = saved_run();
        let evil = "cpu\"\n[host]\npython-op-us = 0\n# '''\u{7}";
        run.device = evil.to_string();
        run.torch_version = "2\"\nx = 1".to_string();
        let cal = calibrate(&run, &base(), "mine").expect("calibrates");
        let v: toml::Value = toml::from_str(&cal.profile_toml).expect("valid TOML");
        assert_eq!(v["calibration"]["device"].as_str(), Some(evil));
        assert!(v["calibration"]["libraries"]
            .as_str()
            .is_some_and(|l| l.contains("2\"\nx = 1")));
        assert!(v.get("x").is_none());
        assert_ne!(v["host"]["python-op-us"].as_float(), Some(0.0));
        // The comment line naming the device stays one comment line.
        let first = cal.profile_toml.lines().next().expect("a first line");
        assert!(first.starts_with("# Calibrated by") && first.contains("python-op-us = 0"));
    }

    #[test]
    fn hostile_samples_are_refused_naming_file_sample_and_key() {
        #[allow(clippy::type_complexity)]
        let edits: [(&str, fn(&mut Sample)); 6] = [
            ("dtype = \"int4\" must be", |s| s.dtype = "int4".into()),
            ("flops = 1e300 must be between 0 and 1e18", |s| {
                s.flops = 1e300
            }),
            ("bytes = -1.0 must be", |s| s.bytes = -1.0),
            ("gemm = [0, 1, 1, 1] must hold", |s| {
                s.gemm = Some([0, 1, 1, 1])
            }),
            ("ops = 4294967295 must be at most", |s| s.ops = u32::MAX),
            ("stats.median_ms must be in ms", |s| {
                s.stats.median_ms = 1e-320
            }),
        ];
        for (want, edit) in edits {
            let mut run = saved_run();
            edit(&mut run.samples[3]);
            let err = run.check("s.json").unwrap_err().to_string();
            assert!(
                err.contains("calibration samples file s.json, sample 3 ("),
                "{err}"
            );
            assert!(err.contains(want), "{want}: {err}");
        }
        let mut run = saved_run();
        run.samples.clear();
        let err = run.check("s.json").unwrap_err().to_string();
        assert!(err.contains("holds no samples"), "{err}");
        assert!(saved_run().check("s.json").is_ok());
    }

    #[test]
    fn a_name_that_would_inject_keys_is_refused() {
        let err = calibrate(&saved_run(), &base(), "x\"\n[host]\nextra = 1")
            .expect_err("refused")
            .to_string();
        assert!(err.contains("device.name must be one line"), "{err}");
        // A name with quotes but on one line is kept exactly.
        let cal = calibrate(&saved_run(), &base(), "my \"fast\" cpu").expect("calibrates");
        let p = costsim_hardware::parse_profile(&cal.profile_toml, "t").expect("loads");
        assert_eq!(p.name, "my \"fast\" cpu");
    }

    #[test]
    fn optimizer_tensor_lists_are_read_back_from_the_sample_names() {
        // d 16, 1 block, vocab 10: the embedding 160, four 256, two 1024, two norms 16, the
        // final norm 16 (9 + 1 + 1 = 10 tensors).
        assert_eq!(
            optimizer_tensors("adamw-single d16 x1 vocab 10 (10 tensors)"),
            Some(vec![160, 256, 256, 256, 256, 1024, 1024, 16, 16, 16])
        );
        // Two pairs of 4×8 and 12×4; with d_in 0 only the 12×4.
        assert_eq!(
            optimizer_tensors("adamw-single adapters r4 8+12 x2 (4 tensors)"),
            Some(vec![32, 48, 32, 48])
        );
        assert_eq!(
            optimizer_tensors("adamw-single adapters r4 0+12 x3 (3 tensors)"),
            Some(vec![48, 48, 48])
        );
        // A count that disagrees with the list, or any other name: nothing.
        assert_eq!(
            optimizer_tensors("adamw-single adapters r4 8+12 x2 (3 tensors)"),
            None
        );
        assert_eq!(optimizer_tensors("adamw-single d16 x1 vocab 10"), None);
        assert_eq!(optimizer_tensors("mm 128x128x128"), None);
    }

    #[test]
    fn optimizer_op_time_is_fitted_on_adapter_lists_and_taken_off_the_dense_fit() {
        // Made-up AdamW times t = bytes / B + c·ops for every list, B = 20 GB/s (fp32) and
        // 10 GB/s (bf16), c = 1.3 µs: the adapter lists' fit returns c (and B), the dense
        // lists' fit then takes c·ops off and returns B alone, and the profile carries
        // c minus the run's dispatch cost as `optimizer-op-us`. The optimizer no longer votes
        // on the launch floor.
        let mut run = saved_run();
        let template = run
            .samples
            .iter()
            .find(|s| s.bench == Bench::Optimizer)
            .expect("an optimizer sample")
            .clone();
        run.samples.retain(|s| s.bench != Bench::Optimizer);
        let dense = |d: u64, layers: u64, vocab: u64| {
            let n = 1 + 8 * layers + 1;
            format!("adamw-single d{d} x{layers} vocab {vocab} ({n} tensors)")
        };
        let adapters = |r: u64, d_in: u64, d_out: u64, count: u64| {
            let n = count * if d_in > 0 { 2 } else { 1 };
            format!("adamw-single adapters r{r} {d_in}+{d_out} x{count} ({n} tensors)")
        };
        let names = [
            dense(128, 2, 4000),
            dense(256, 4, 8000),
            dense(512, 4, 16000),
            dense(768, 6, 32000),
            adapters(4, 64, 192, 64),
            adapters(8, 256, 768, 16),
            adapters(16, 512, 1536, 24),
            adapters(8, 1024, 1024, 48),
            adapters(32, 0, 640, 24),
            adapters(64, 0, 1536, 16),
        ];
        // Per-op time 1.3 µs in fp32 and 1.6 µs in bf16.
        let (bw, cs) = ([20e9, 10e9], [1.3e-6, 1.6e-6]);
        let push = |run: &mut CalibrationRun, names: &[String], c_dense: [f64; 2]| {
            for (i, (dtype, size)) in [("fp32", 4.0), ("bf16", 2.0)].into_iter().enumerate() {
                for name in names {
                    let ts = optimizer_tensors(name).expect("parses");
                    let bytes = 20.0 * ts.iter().sum::<u64>() as f64 * size;
                    let ops = 8 * ts.len() as u32;
                    let per_op = if name.starts_with(ADAPTERS) {
                        cs[i]
                    } else {
                        c_dense[i]
                    };
                    let t = bytes / bw[i] + per_op * f64::from(ops);
                    let x = optimizer_sample(&template, name.clone(), dtype, bytes, ops, t);
                    run.samples.push(x);
                }
            }
        };
        // The dense lists at each dtype's own per-op time: their fit takes it off (a swapped
        // dtype would not).
        push(&mut run, &names, cs);
        let cal = calibrate(&run, &base(), "op").expect("calibrates");
        let fit = |cal: &Calibration, what: &str| {
            cal.fits
                .iter()
                .find(|f| f.what == what)
                .unwrap_or_else(|| panic!("no {what} fit"))
                .clone()
        };
        for (i, dtype) in ["fp32", "bf16"].into_iter().enumerate() {
            let f = fit(&cal, &format!("optimizer adapters {dtype}"));
            assert_eq!(f.n, 6, "{f:?}");
            assert!((f.coef[0] * bw[i] - 1.0).abs() < 1e-6, "{f:?}");
            assert!((f.coef[1] / cs[i] - 1.0).abs() < 1e-6, "{f:?}");
            let f = fit(&cal, &format!("optimizer {dtype}"));
            assert_eq!((f.n, f.coef.len()), (4, 1), "{f:?}");
            assert!((f.coef[0] * bw[i] - 1.0).abs() < 1e-6, "{f:?}");
        }
        let p = costsim_hardware::parse_profile(&cal.profile_toml, "t").expect("loads");
        let dispatch = per_op_time(&run, Bench::Dispatch);
        assert!(dispatch < cs[0] - 0.1e-6, "{dispatch}");
        let op = p.optimizer_op_s.expect("optimizer-op-us");
        for (v, c) in op.iter().zip(cs) {
            // Written in µs to 4 decimals.
            assert!((v - (c - dispatch)).abs() < 0.6e-10, "{op:?}");
        }
        // The launch floor is that of the same run without any optimizer samples: the
        // optimizer's per-op time does not vote.
        let mut bare = run.clone();
        bare.samples.retain(|s| s.bench != Bench::Optimizer);
        let floor = |r: &CalibrationRun| {
            let cal = calibrate(r, &base(), "f").expect("calibrates");
            costsim_hardware::parse_profile(&cal.profile_toml, "t")
                .expect("loads")
                .launch_floor_s
        };
        assert_eq!(floor(&run), floor(&bare));
        // Without the adapter lists: no optimizer-op line, and the dense lists fit bandwidth
        // and per-op cost together, as before (here a dense per-op cost of 50 µs).
        let mut old = bare.clone();
        push(&mut old, &names[..4], [50e-6, 50e-6]);
        let cal = calibrate(&old, &base(), "dense").expect("calibrates");
        assert!(!cal.profile_toml.contains("optimizer-op"));
        let p = costsim_hardware::parse_profile(&cal.profile_toml, "t").expect("loads");
        assert!(p.optimizer_op_s.is_none());
        let f = fit(&cal, "optimizer fp32");
        assert_eq!(f.coef.len(), 2, "{f:?}");
        assert!((f.coef[1] / 50e-6 - 1.0).abs() < 1e-6, "{f:?}");
    }

    #[test]
    fn optimizer_rates_by_tensor_size_take_off_the_op_time_and_first_touch() {
        // Adapter lists at t = bytes / 20 GB/s + 1.3 µs·ops (the per-op time), and lists of
        // equal tensors of 256 KiB, 2 MiB, 16 MiB and 96 MiB at 36, 30, 20 and 17 GB/s, plus
        // 1.3 µs an op, plus, for the 96 MiB tensors, their two fresh outputs faulted in at
        // the run's first-touch rate: the profile's table returns the four rates.
        let mut run = saved_run();
        let template = run
            .samples
            .iter()
            .find(|s| s.bench == Bench::Optimizer)
            .expect("an optimizer sample")
            .clone();
        let touch_bps = touch_bps(&run);
        let c = 1.3e-6;
        let mut push = |name: String, dtype: &str, bytes: f64, ops: u32, t: f64| {
            let x = optimizer_sample(&template, name, dtype, bytes, ops, t);
            run.samples.push(x);
        };
        for dtype in ["fp32", "bf16"] {
            for (i, r) in [(4u32, 8.0), (8, 16.0), (16, 48.0)] {
                let bytes = 1e5 * r;
                let ops = 8 * 16 * i;
                push(
                    format!("adamw-single adapters r{i} 0+{r} x{i} ({i} tensors)"),
                    dtype,
                    bytes,
                    ops,
                    bytes / 20e9 + c * f64::from(ops),
                );
            }
        }
        // bf16 at half the fp32 rates; the 32 MiB list holds two tensors, both faulting.
        let table: [(f64, f64); 5] = [
            (256.0, 36e9),
            (2048.0, 30e9),
            (16384.0, 20e9),
            (32768.0, 18e9),
            (98304.0, 17e9),
        ];
        for (dtype, scale) in [("fp32", 1.0), ("bf16", 0.5)] {
            for (kib, rate) in table {
                let rate = rate * scale;
                let tensor = kib * 1024.0;
                let count = ((256.0 * 1048576.0) / (4.0 * tensor)).floor().max(1.0);
                let bytes = 20.0 * tensor * count;
                let ops = (8.0 * count) as u32;
                let faults = if tensor >= 32.0 * 1048576.0 {
                    2.0 * count * tensor / touch_bps
                } else {
                    0.0
                };
                push(
                    format!("adamw-single uniform {kib} KiB x{count}"),
                    dtype,
                    bytes,
                    ops,
                    bytes / rate + c * f64::from(ops) + faults,
                );
            }
        }
        let cal = calibrate(&run, &base(), "sizes").expect("calibrates");
        let p = costsim_hardware::parse_profile(&cal.profile_toml, "t").expect("loads");
        let got = p.optimizer_size_rate.expect("optimizer-size-gbps");
        for (half, scale) in got.iter().zip([1.0, 0.5]) {
            assert_eq!(half.len(), 5, "{half:?}");
            for ((size, rate), (kib, want)) in half.iter().zip(table) {
                assert_eq!(*size, kib * 1024.0);
                // Written in GB/s to 3 decimals.
                let want = want * scale;
                assert!((rate - want).abs() < 0.6e6, "{size}: {rate} against {want}");
            }
        }
        // The dense fit does not take them: without the uniform lists it is the same.
        let fit = |cal: &Calibration| {
            cal.fits
                .iter()
                .find(|f| f.what == "optimizer fp32")
                .map(|f| f.coef.clone())
        };
        let mut without = run.clone();
        without.samples.retain(|s| !s.name.starts_with(UNIFORM));
        let cal2 = calibrate(&without, &base(), "no sizes").expect("calibrates");
        assert_eq!(fit(&cal), fit(&cal2));
        assert!(!cal2.profile_toml.contains("optimizer-size"));
    }

    #[test]
    fn launch_floor_and_autograd_node_follow_their_definitions() {
        // A cold calibration (29l), whose launch floor sits above its 0.05 µs minimum: the floor
        // is the median per-op intercept of the memory-bound fits (tanh's aside) less the
        // dispatch cost (the median per-op time of the dispatch loop), and the autograd node is
        // its chain's per-node time less that floor, at least the dispatch cost.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/results/cpu-2026-11-29l/cpu-calibration.json"
        );
        let run = CalibrationRun::load(std::path::Path::new(path)).expect("loads");
        let cal = calibrate(&run, &base(), "floor").expect("calibrates");
        let p = costsim_hardware::parse_profile(&cal.profile_toml, "t").expect("loads");
        let dispatch = per_op_time(&run, Bench::Dispatch);
        let labels: Vec<&str> = KINDS
            .iter()
            .filter(|(b, _)| *b != Bench::Transcendental)
            .map(|(_, l)| *l)
            .collect();
        let intercepts: Vec<f64> = cal
            .fits
            .iter()
            .filter(|f| {
                let kind = f.what.trim_end_matches(" fp32").trim_end_matches(" bf16");
                labels.contains(&kind) && f.coef.len() == 2
            })
            .map(|f| f.coef[1])
            .collect();
        assert!(intercepts.len() >= 10, "{intercepts:?}");
        let floor = median(intercepts) - dispatch;
        assert!(floor > 0.2e-6, "{floor}");
        // Written in µs to 4 decimals.
        assert!(
            (p.launch_floor_s - floor).abs() < 0.6e-10,
            "{} {floor}",
            p.launch_floor_s
        );
        let node = (per_op_time(&run, Bench::AutogradNode) - floor).max(dispatch);
        assert!(node > dispatch, "{node} {dispatch}");
        assert!(
            (p.host.autograd_node_s - node).abs() < 0.6e-10,
            "{:?}",
            p.host
        );
    }

    #[test]
    fn a_samples_spread_decides_whether_it_is_used() {
        let mut run = saved_run();
        let i = run
            .samples
            .iter()
            .position(|s| s.bench == Bench::Elementwise && s.dtype == "fp32" && s.stable())
            .expect("a stable elementwise sample");
        // Ten timings, 1 ms apart from the top one: p10 = 1, median = 1, p90 = 1 + 0.1·(top − 1).
        let ms = |top: f64| {
            let mut v = vec![1e-3; 9];
            v.push(top * 1e-3);
            Stats::from_seconds(&v)
        };
        run.samples[i].stats = ms(3.5); // p90 1.25: spread 0.25, at the limit, stable
        assert!((run.samples[i].spread() - 0.25).abs() < 1e-12);
        assert!(run.samples[i].stable());
        let cal = calibrate(&run, &base(), "t").expect("fit");
        let n_stable = cal
            .fits
            .iter()
            .find(|f| f.what == "elementwise fp32")
            .expect("fit")
            .n;
        run.samples[i].stats = ms(3.6); // p90 1.26: spread 0.26, unstable
        assert!(!run.samples[i].stable());
        let cal = calibrate(&run, &base(), "t").expect("fit");
        let n = cal
            .fits
            .iter()
            .find(|f| f.what == "elementwise fp32")
            .expect("fit")
            .n;
        assert_eq!(n + 1, n_stable);
        let name = format!("{} {}", run.samples[i].name, run.samples[i].dtype);
        let (_, spread) = cal
            .unstable
            .iter()
            .find(|(u, _)| *u == name)
            .expect("listed");
        assert!((spread - 0.26).abs() < 1e-9, "{spread}");
    }

    #[test]
    fn a_samples_op_count_is_bounded() {
        let run = saved_run();
        let mut s = run.samples[0].clone();
        s.ops = 1_000_000;
        assert!(s.check().is_ok());
        s.ops = 1_000_001;
        assert!(s.check().unwrap_err().contains("at most 1000000"));
    }
}
