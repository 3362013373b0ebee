//! Tests of predict.rs: the breakdown, the memory footprint and its peaks, the reports, each
//! worked by hand.

use super::*;

#[cfg(test)]
mod breakdown_tests {
    use super::*;
    use crate::arch::preset;
    use crate::method::{MethodName, MethodOptions};
    use costsim_hardware::resolve_device;

    #[test]
    fn breakdown_sums_to_the_step_time() {
        for (name, accum) in [(MethodName::Lora, 1), (MethodName::PacaUpperHalf, 3)] {
            let model = preset("tinyllama-1.1b").unwrap();
            let cfg = Config {
                method: MethodSpec::resolve(name, &MethodOptions::default(), &model, true).unwrap(),
                model,
                workload: Workload {
                    grad_accum: accum,
                    ..Workload::default()
                },
                hw: resolve_device("a100").unwrap(),
            };
            let p = predict(&cfg, Detail::default(), None);
            let b = breakdown(&cfg);
            // embedding, 22 layers, head, optimizer, and the Trainer loop (the default).
            assert_eq!(b.len(), 22 + 4);
            assert_eq!(b[25].scope, "loop");
            let mut total = 0.0;
            for s in &b {
                let kinds: f64 = s.by_kind_ms.iter().map(|(_, v)| v).sum();
                let device = s.compute_ms + s.memory_ms + s.launch_ms;
                assert!((kinds - device).abs() <= 1e-9 * device.max(1.0), "{s:?}");
                total += device + s.host_wait_ms;
            }
            assert!(
                (total - p.step_ms).abs() < 1e-6 * p.step_ms,
                "{total} {}",
                p.step_ms
            );
            // Layers below the cut of layer-selective PaCA have no backward GEMMs.
            if name == MethodName::PacaUpperHalf {
                assert!(b[1].by_kind_ms[0].1 < b[21].by_kind_ms[0].1);
            }
        }
    }
}

/// The memory footprint and the `fits` verdict worked by hand (docs/model.md's memory model):
/// the scopes' kept, transient and trainable sizes are set to round numbers on a real graph of
/// a tiny model, so every peak below is summed by hand from them.
#[cfg(test)]
mod memory_tests {
    use super::*;
    use crate::arch::Family;
    use crate::method::{AdapterDtype, MethodName, MethodOptions};
    use costsim_hardware::resolve_device;

    /// Two Llama blocks, hidden 32: small enough that any sum below is exact in f64.
    fn tiny() -> ModelConfig {
        ModelConfig {
            name: "tiny".into(),
            family: Family::Llama,
            hidden: 32,
            layers: 2,
            heads: 4,
            kv_heads: 4,
            intermediate: 96,
            vocab: 1000,
            max_positions: 4096,
            tied_embeddings: false,
            qkv_bias: false,
            other_bias: false,
            dropout: 0.0,
            sliding_window: None,
        }
    }

    fn config(
        name: MethodName,
        opts: MethodOptions,
        precision: Precision,
        optimizer: Optimizer,
        grad_accum: u32,
    ) -> Config {
        let model = tiny();
        Config {
            method: MethodSpec::resolve(name, &opts, &model, false).unwrap(),
            model,
            workload: Workload {
                batch: 1,
                seq: 16,
                grad_accum,
                precision,
                optimizer,
                ..Workload::default()
            },
            hw: resolve_device("a100").unwrap(),
        }
    }

    use crate::workload::Precision;

    /// (saved, checkpoint, transient, trainable, backward working) of one scope.
    type Sizes = (f64, f64, f64, u64, f64);

    fn set(s: &mut ScopeGraph, (saved, ckpt, transient, trainable, working): Sizes) {
        s.saved_bytes = saved;
        s.checkpoint_bytes = ckpt;
        s.transient_bytes = transient;
        s.trainable = trainable;
        s.backward_working_bytes = working;
    }

    /// The graph of `cfg` with the embedding, both layers and the head set to the given sizes;
    /// a scope given `None` is made frozen (no backward kernels: the walk skips it).
    fn graph_with(
        cfg: &Config,
        emb: Option<Sizes>,
        layer: Option<Sizes>,
        head: Option<Sizes>,
    ) -> StepGraph {
        let mut g = graph::build(&cfg.model, &cfg.method, &cfg.workload);
        assert_eq!(g.layer_class.len(), 2);
        // Full fine-tuning trains every scope: each has backward kernels to begin with.
        assert!(!g.embedding.backward.kernels.is_empty());
        assert!(!g.head.backward.kernels.is_empty());
        let apply = |s: &mut ScopeGraph, sizes: Option<Sizes>| match sizes {
            Some(v) => set(s, v),
            None => {
                set(s, (0.0, 0.0, 0.0, 0, 0.0));
                s.backward.kernels.clear();
            }
        };
        apply(&mut g.embedding, emb);
        for l in &mut g.layer_graphs {
            assert!(!l.backward.kernels.is_empty());
            apply(l, layer);
        }
        apply(&mut g.head, head);
        g
    }

    fn full_fp32(accum: u32) -> (Config, f64, f64) {
        let cfg = config(
            MethodName::Full,
            MethodOptions::default(),
            Precision::Fp32,
            Optimizer::AdamwForeach,
            accum,
        );
        let p = cfg.model.total_params() as f64;
        let t = cfg.method.trainable_params(&cfg.model) as f64;
        (cfg, p, t)
    }

    #[test]
    fn full_fp32_footprint_with_the_heads_working_set_by_hand() {
        let (cfg, p, t) = full_fp32(1);
        let g = graph_with(
            &cfg,
            Some((100.0, 0.0, 50.0, 10, 0.0)),
            Some((1000.0, 24.0, 300.0, 20, 0.0)),
            Some((400.0, 0.0, 2000.0, 30, 5000.0)),
        );
        let m = memory(cfg.as_ref(), &g);
        // fp32 parameters, fp32 master: weights 4P, gradients 4T, AdamW's two states 8T.
        let base = 4.0 * p + 8.0 * t;
        assert_eq!(m.weights_bytes, 4.0 * p);
        assert_eq!(m.gradients_bytes, 4.0 * t);
        assert_eq!(m.optimizer_state_bytes, 8.0 * t);
        // Kept: 100 + 2 × (1000 + 24) + 400 = 2548; largest transient 2000 (the head's).
        assert_eq!(m.activations_bytes, 2548.0);
        // grad_accum 1: no accumulated gradients at the end of forward.
        assert_eq!(m.forward_peak_bytes, base + 2548.0 + 2000.0);
        // Backward starts at the head with all 2548 kept; its working set 5000 comes before
        // its gradients (30 × 4 = 120): max(base + 2548 + 0 + 5000, base + 2548 + 120).
        // Later scopes peak lower: layer 1 starts at base + 2148 + 120 + max(300, 600).
        assert_eq!(m.backward_peak_bytes, base + 7548.0);
        // foreach AdamW's temporary list, over the larger of a Trainer's two parameter groups
        // (freed before the next group's update): the weights with decay, all but the five
        // RMSNorms' 5 × 32 = 160 elements; another 4(T − 160) on top of weights, states,
        // gradients.
        let decay = t - 160.0;
        assert_eq!(m.optimizer_peak_bytes, base + 4.0 * t + 4.0 * decay);
        assert_eq!(m.reserved_bytes, 1024.0 * 1024.0 * 1024.0);
        assert_eq!(m.capacity_bytes, 80.0 * 1024.0 * 1024.0 * 1024.0);
        // P ≈ 90 thousand parameters: the optimizer's 4T + 4(T − 160) exceeds 8T + 7548.
        assert_eq!(m.peak_bytes, base + 4.0 * t + 4.0 * decay);
        // One group: the list over all T.
        let one = Config {
            workload: Workload {
                param_groups: crate::ParamGroups::One,
                ..cfg.workload.clone()
            },
            ..cfg.clone()
        };
        let g = graph::build(&one.model, &one.method, &one.workload);
        let m1 = memory(one.as_ref(), &g);
        assert_eq!(m1.optimizer_peak_bytes, base + 8.0 * t);
        assert!(m.fits);
        assert_eq!(m.shortfall_bytes, 0.0);
    }

    #[test]
    fn backward_peak_at_a_layers_start_by_hand() {
        let (cfg, p, t) = full_fp32(1);
        let g = graph_with(
            &cfg,
            Some((100.0, 0.0, 50.0, 10, 0.0)),
            Some((1000.0, 24.0, 300.0, 20, 0.0)),
            Some((400.0, 0.0, 10.0, 30, 0.0)),
        );
        let m = memory(cfg.as_ref(), &g);
        let base = 4.0 * p + 8.0 * t;
        // Kept 2548; largest transient 300 (a layer's).
        assert_eq!(m.forward_peak_bytes, base + 2548.0 + 300.0);
        // Gradients per trainable parameter: 4 bytes. Walk head, layer 1, layer 0, embedding;
        // working = max(transient, 2 × min(saved, transient)):
        //   head:    working max(10, 20) = 20;  start base + 2548 + 0 + 20 = +2568,
        //            end base + (2548 − 400) + 120 + 20 = +2288; kept left 2148
        //   layer 1: working max(300, 600) = 600; start 2148 + 120 + 600 = +2868,
        //            end (2148 − 1024) + 200 + 600 = +1924; kept left 1124
        //   layer 0: start 1124 + 200 + 600 = +1924, end 100 + 280 + 600 = +980
        //   embedding: working max(50, 100) = 100; start 100 + 280 + 100 = +480,
        //            end 0 + 320 + 100 = +420
        assert_eq!(m.backward_peak_bytes, base + 2868.0);
    }

    #[test]
    fn backward_peak_at_a_scopes_end_when_its_gradients_outweigh_what_it_frees() {
        let (cfg, p, t) = full_fp32(1);
        let g = graph_with(
            &cfg,
            Some((100.0, 0.0, 50.0, 10_000, 0.0)),
            Some((1000.0, 24.0, 300.0, 20, 0.0)),
            Some((400.0, 0.0, 10.0, 30, 0.0)),
        );
        let m = memory(cfg.as_ref(), &g);
        let base = 4.0 * p + 8.0 * t;
        // As above up to the embedding (gradients so far 120 + 80 + 80 = 280); the embedding
        // adds 10 000 × 4 = 40 000: start base + 100 + 280 + 100 = +480,
        // end base + (100 − 100) + 40 280 + 100 = +40 380.
        assert_eq!(m.backward_peak_bytes, base + 40_380.0);
    }

    #[test]
    fn working_set_scope_peaks_after_its_gradients_when_they_are_larger() {
        let (cfg, p, t) = full_fp32(1);
        // Only the head trains here: the walk skips the frozen scopes.
        let g = graph_with(&cfg, None, None, Some((400.0, 0.0, 10.0, 10_000, 5000.0)));
        let m = memory(cfg.as_ref(), &g);
        let base = 4.0 * p + 8.0 * t;
        assert_eq!(m.activations_bytes, 400.0);
        // max(base + 400 + 0 + 5000, base + 400 + 40 000)
        assert_eq!(m.backward_peak_bytes, base + 40_400.0);
    }

    #[test]
    fn accumulated_gradients_live_from_the_start() {
        let (cfg, p, t) = full_fp32(2);
        let g = graph_with(
            &cfg,
            Some((100.0, 0.0, 50.0, 10_000, 0.0)),
            Some((1000.0, 24.0, 300.0, 20, 0.0)),
            Some((400.0, 0.0, 10.0, 30, 0.0)),
        );
        let m = memory(cfg.as_ref(), &g);
        let base = 4.0 * p + 8.0 * t;
        // grad_accum 2: all 4T of gradients exist from the first micro-batch on, and backward
        // adds none: forward base + 4T + 2548 + 300.
        assert_eq!(m.forward_peak_bytes, base + 4.0 * t + 2548.0 + 300.0);
        // The head starts at base + 4T + 2548 + 20 = +2568; layer 1 starts higher, at
        // base + 4T + 2148 + 600 = +2748 (its end: 1124 + 600); the embedding's 10 000
        // trainable parameters add nothing now (end: base + 4T + 0 + 100).
        assert_eq!(m.backward_peak_bytes, base + 4.0 * t + 2748.0);
    }

    #[test]
    fn working_set_over_accumulated_gradients() {
        let (cfg, p, t) = full_fp32(2);
        let g = graph_with(
            &cfg,
            Some((100.0, 0.0, 50.0, 10, 0.0)),
            Some((1000.0, 24.0, 300.0, 20, 0.0)),
            Some((400.0, 0.0, 2000.0, 30, 5000.0)),
        );
        let m = memory(cfg.as_ref(), &g);
        let base = 4.0 * p + 8.0 * t;
        // grad_accum 2: the head's working set comes on top of all 4T gradients:
        // max(base + 2548 + 4T + 5000, base + 2548 + 4T).
        assert_eq!(m.backward_peak_bytes, base + 4.0 * t + 7548.0);
    }

    /// `full_fp32` with the LM head tied to the embedding (V·d = 1000 × 32: 128 000 bytes of
    /// fp32 gradient per copy).
    fn full_fp32_tied(accum: u32) -> (Config, f64, f64) {
        let (mut cfg, _, _) = full_fp32(accum);
        cfg.model.tied_embeddings = true;
        let p = cfg.model.total_params() as f64;
        let t = cfg.method.trainable_params(&cfg.model) as f64;
        (cfg, p, t)
    }

    #[test]
    fn a_tied_heads_two_gradients_and_their_sum_meet_in_the_embeddings_backward() {
        let (cfg, p, t) = full_fp32_tied(1);
        // The embedding's 32 010 trainable parameters: wte's 32 000 and 10 more.
        let g = graph_with(
            &cfg,
            Some((100.0, 0.0, 50.0, 32_010, 0.0)),
            Some((1000.0, 24.0, 300.0, 20, 0.0)),
            Some((400.0, 0.0, 10.0, 30, 0.0)),
        );
        let m = memory(cfg.as_ref(), &g);
        let base = 4.0 * p + 8.0 * t;
        // The head's 128 000-byte part of wte's gradient is held from the head on:
        //   head:    start 2548 + 0 + 20 = +2568, end 2148 + (120 + 128 000) + 20 = +130 288
        //   layer 1: start 2148 + 128 120 + 600 = +130 868, end 1124 + 128 200 + 600
        //   layer 0: start 1124 + 128 200 + 600, end 100 + 128 280 + 600 = +128 980
        //   embedding, at the sum: kept 0, gradients 128 280 + the embedding's part 128 000
        //            + the sum 128 000 + the other 10 parameters' 40 = +384 320;
        //            then both parts are freed: end 0 + 128 320 + 100.
        assert_eq!(m.backward_peak_bytes, base + 384_320.0);
        // Untied, the same sizes peak at the embedding's end, with no held part and no sum:
        // 0 + (280 + 128 040) + 100 = +128 420.
        let (cfg_untied, p_u, t_u) = full_fp32(1);
        let m_u = memory(
            cfg_untied.as_ref(),
            &graph_with(
                &cfg_untied,
                Some((100.0, 0.0, 50.0, 32_010, 0.0)),
                Some((1000.0, 24.0, 300.0, 20, 0.0)),
                Some((400.0, 0.0, 10.0, 30, 0.0)),
            ),
        );
        assert_eq!(m_u.backward_peak_bytes, 4.0 * p_u + 8.0 * t_u + 128_420.0);
    }

    #[test]
    fn with_accumulation_the_tied_sum_is_added_into_the_gradient_after_it_exists() {
        let (cfg, p, t) = full_fp32_tied(2);
        let g = graph_with(
            &cfg,
            Some((100.0, 0.0, 50.0, 32_010, 0.0)),
            Some((1000.0, 24.0, 300.0, 20, 0.0)),
            Some((400.0, 0.0, 10.0, 30, 0.0)),
        );
        let m = memory(cfg.as_ref(), &g);
        let base = 4.0 * p + 8.0 * t;
        // All 4T of `.grad` exist throughout; at the sum the head's part, the embedding's part
        // and the sum (3 × 128 000) are alive beside them, before the sum is added in place.
        assert_eq!(m.backward_peak_bytes, base + 4.0 * t + 384_000.0);
    }

    #[test]
    fn backward_peak_at_a_layers_end_with_the_embedding_still_kept() {
        let (cfg, p, t) = full_fp32(1);
        let g = graph_with(
            &cfg,
            Some((100.0, 0.0, 50.0, 10, 0.0)),
            Some((1000.0, 24.0, 300.0, 10_000, 0.0)),
            Some((400.0, 0.0, 10.0, 30, 0.0)),
        );
        let m = memory(cfg.as_ref(), &g);
        let base = 4.0 * p + 8.0 * t;
        // Each layer now adds 40 000 bytes of gradients:
        //   head:    start 2548 + 0 + 20 = +2568, end 2148 + 120 + 20 = +2288
        //   layer 1: start 2148 + 120 + 600 = +2868, end 1124 + 40 120 + 600 = +41 844
        //   layer 0: start 1124 + 40 120 + 600 = +41 844,
        //            end (1124 − 1024) + 80 120 + 600 = +80 820 (the embedding's 100 kept)
        //   embedding: start 100 + 80 120 + 100 = +80 320, end 0 + 80 160 + 100 = +80 260
        assert_eq!(m.backward_peak_bytes, base + 80_820.0);
    }

    #[test]
    fn fits_up_to_capacity_less_the_reserve() {
        let (mut cfg, _, _) = full_fp32(1);
        let g = graph::build(&cfg.model, &cfg.method, &cfg.workload);
        let gib = 1024.0 * 1024.0 * 1024.0;
        // Find the peak with a roomy device, then set the capacity either side of
        // peak + 1 GiB (all integers below 2^53: exact).
        cfg.hw.memory_bytes = 1000.0 * gib;
        let peak = memory(cfg.as_ref(), &g).peak_bytes;
        assert_eq!(peak.fract(), 0.0);
        cfg.hw.memory_bytes = peak + gib;
        let at = memory(cfg.as_ref(), &g);
        assert!(at.fits);
        assert_eq!(at.shortfall_bytes, 0.0);
        cfg.hw.memory_bytes = peak + gib - 1.0;
        let short = memory(cfg.as_ref(), &g);
        assert!(!short.fits);
        assert_eq!(short.shortfall_bytes, 1.0);
        cfg.hw.memory_bytes = peak - 5.0;
        assert_eq!(memory(cfg.as_ref(), &g).shortfall_bytes, gib + 5.0);
        // predict reports the same verdict and peak.
        let p = predict(&cfg, Detail::default(), None);
        assert!(!p.fits);
        assert_eq!(p.peak_memory_bytes, peak);
    }

    #[test]
    fn master_dtype_and_extra_parameters_by_method() {
        let lora_opts = |dtype| MethodOptions {
            rank: Some(4),
            adapter_dtype: Some(dtype),
            ..MethodOptions::default()
        };
        // (method, options, precision, optimizer, param bytes, master bytes, adapters?, states,
        //  foreach temp?)
        let cases = [
            // bf16 everywhere: 2-byte parameters and master; full has no extra parameters.
            (
                MethodName::Full,
                MethodOptions::default(),
                Precision::Bf16,
                Optimizer::AdamwForeach,
                2.0,
                2.0,
                false,
                2.0,
                true,
            ),
            // LoRA's fp32 adapters over bf16 weights: adapters, gradients, states in fp32.
            (
                MethodName::Lora,
                lora_opts(AdapterDtype::Fp32),
                Precision::Bf16,
                Optimizer::AdamwFused,
                2.0,
                4.0,
                true,
                2.0,
                false,
            ),
            (
                MethodName::Paca,
                lora_opts(AdapterDtype::Fp32),
                Precision::Bf16,
                Optimizer::Sgd,
                2.0,
                4.0,
                true,
                0.0,
                false,
            ),
            // Adapters in the base dtype: 2 bytes.
            (
                MethodName::Lora,
                lora_opts(AdapterDtype::Base),
                Precision::Bf16,
                Optimizer::AdamwSingle,
                2.0,
                2.0,
                true,
                2.0,
                false,
            ),
            // Mixed precision keeps fp32 parameters: 4 bytes either way.
            (
                MethodName::Lora,
                lora_opts(AdapterDtype::Base),
                Precision::Bf16Mixed,
                Optimizer::AdamwForeach,
                4.0,
                4.0,
                true,
                2.0,
                true,
            ),
        ];
        for (name, opts, precision, optimizer, pb, mb, adapters, states, temp) in cases {
            let cfg = config(name, opts, precision, optimizer, 1);
            let g = graph::build(&cfg.model, &cfg.method, &cfg.workload);
            let m = memory(cfg.as_ref(), &g);
            let p = cfg.model.total_params() as f64;
            let t = cfg.method.trainable_params(&cfg.model) as f64;
            let what = format!("{name:?} {precision:?} {optimizer:?}");
            let weights = pb * p + if adapters { mb * t } else { 0.0 };
            assert_eq!(m.weights_bytes, weights, "{what}");
            assert_eq!(m.gradients_bytes, mb * t, "{what}");
            assert_eq!(m.optimizer_state_bytes, states * mb * t, "{what}");
            // foreach: the sqrt list of the larger parameter group's elements (full fine-tuning:
            // all but the five 32-wide RMSNorms, which have no weight decay; LoRA: every
            // adapter); single-tensor: the sqrt and the quotient of the largest trainable tensor.
            let largest = g.trainable_tensors.iter().copied().max().unwrap_or(0) as f64;
            let no_decay = if name == MethodName::Full { 160.0 } else { 0.0 };
            let tmp = match optimizer {
                Optimizer::AdamwForeach if temp => mb * (t - no_decay),
                Optimizer::AdamwSingle => 2.0 * mb * largest,
                _ => 0.0,
            };
            assert_eq!(
                m.optimizer_peak_bytes,
                weights + states * mb * t + mb * t + tmp,
                "{what}"
            );
            // The optimizer phase's kernels work on the same master dtype: clipping's norm
            // reads every gradient once (mb · t bytes).
            let opt = &g.optimizer.kernels;
            for k in opt.iter().filter(|k| k.kind == KernelKind::Optimizer) {
                assert_eq!(k.dtype.size(), mb, "{what}: {}", k.name);
            }
            let norm = opt.iter().find(|k| k.name == "_foreach_norm");
            assert_eq!(norm.map(|k| k.bytes_read), Some(mb * t), "{what}");
        }
    }
}

/// The report built around the simulation, worked by hand: a phase's per-micro-batch figures,
/// h:mm:ss, the training estimate, labels, totals over micro-batches and the per-layer rows.
#[cfg(test)]
mod report_tests {
    use super::*;
    use crate::arch::Family;
    use crate::method::{MethodName, MethodOptions};
    use crate::workload::Precision;
    use costsim_hardware::resolve_device;

    fn tiny() -> ModelConfig {
        ModelConfig {
            name: "tiny".into(),
            family: Family::Llama,
            hidden: 32,
            layers: 2,
            heads: 4,
            kv_heads: 4,
            intermediate: 96,
            vocab: 1000,
            max_positions: 4096,
            tied_embeddings: false,
            qkv_bias: false,
            other_bias: false,
            dropout: 0.0,
            sliding_window: None,
        }
    }

    fn config(name: MethodName, grad_accum: u32) -> Config {
        let model = tiny();
        Config {
            method: MethodSpec::resolve(name, &MethodOptions::default(), &model, false).unwrap(),
            model,
            workload: Workload {
                batch: 2,
                seq: 16,
                grad_accum,
                precision: Precision::Bf16Mixed,
                ..Workload::default()
            },
            hw: resolve_device("a100").unwrap(),
        }
    }

    #[test]
    fn a_phase_report_is_per_micro_batch() {
        // Powers of two, so every quotient below is exact.
        let span = Span {
            time_s: 0.5,
            busy_s: 0.25,
            host_wait_s: 0.125,
            host_s: 7.0,
            launches: 10,
            by_bound: [0.0625, 0.125, 0.25, 0.0625],
        };
        let r = phase_report(Phase::Backward, &span, 4.0, 11.0, 13.0);
        assert_eq!(r.phase, Phase::Backward);
        // 0.5 s / 4 = 0.125 s = 125 ms; 0.25 / 4 = 62.5 ms.
        assert_eq!(r.time_ms, 125.0);
        assert_eq!(r.gpu_busy_ms, 62.5);
        // 0.125 s waited of 0.5 s: a quarter (not divided by the micro-batches).
        assert_eq!(r.host_wait_share, 0.25);
        // 10 launches / 4 = 2.5, rounded half away from zero: 3.
        assert_eq!(r.launches, 3);
        assert_eq!((r.flops, r.bytes), (11.0, 13.0));
        // By bound, /4 and in ms: 15.625, 31.25, 62.5, 15.625.
        assert_eq!(r.compute_ms, 15.625);
        assert_eq!(r.memory_ms, 31.25);
        assert_eq!(r.launch_ms, 62.5);
        assert_eq!(r.host_ms, 15.625);
        // 9 launches / 4 = 2.25 → 2.
        let nine = Span {
            launches: 9,
            ..span
        };
        assert_eq!(
            phase_report(Phase::Forward, &nine, 4.0, 0.0, 0.0).launches,
            2
        );
        // An empty phase waits on nothing: share 0, not 0/0.
        let empty = phase_report(Phase::Optimizer, &Span::default(), 1.0, 0.0, 0.0);
        assert_eq!(empty.host_wait_share, 0.0);
    }

    #[test]
    fn hms_by_hand() {
        // 3661 s = 1 h, 1 min, 1 s.
        assert_eq!(hms(3661.4), "1:01:01");
        // 59.5 s rounds to 60: one minute.
        assert_eq!(hms(59.5), "0:01:00");
        // 100 h 0 min 59 s.
        assert_eq!(hms(360_059.0), "100:00:59");
        assert_eq!(hms(-3.0), "0:00:00");
    }

    #[test]
    fn training_estimate_labels_and_totals() {
        // batch 2 × seq 16 × grad_accum 3: 96 tokens and 6 samples per optimizer step.
        let mut cfg = config(MethodName::Lora, 3);
        // LoRA on q and v only (the default is every linear).
        let opts = MethodOptions {
            targets: Some(crate::method::Targets::parse("q,v").unwrap()),
            ..MethodOptions::default()
        };
        cfg.method = MethodSpec::resolve(MethodName::Lora, &opts, &cfg.model, false).unwrap();
        let detail = Detail::default();
        let steps_of = |a: Amount| {
            let p = predict(&cfg, detail, Some(a));
            let t = p.training.clone().unwrap();
            // seconds = steps × step time.
            let want = t.optimizer_steps as f64 * p.step_ms / 1e3;
            assert!((t.seconds - want).abs() <= 1e-12 * want, "{t:?}");
            assert_eq!(t.wall_clock, hms(t.seconds));
            t.optimizer_steps
        };
        // ⌈97 / 96⌉ = 2, ⌈96 / 96⌉ = 1, ⌈7 / 6⌉ = 2, ⌈6 / 6⌉ = 1, ⌈13 / 6⌉ = 3.
        assert_eq!(steps_of(Amount::Tokens(97)), 2);
        assert_eq!(steps_of(Amount::Tokens(96)), 1);
        assert_eq!(steps_of(Amount::Samples(7)), 2);
        assert_eq!(steps_of(Amount::Samples(6)), 1);
        assert_eq!(steps_of(Amount::Samples(13)), 3);
        let p = predict(&cfg, detail, None);
        assert!(p.training.is_none());
        // 96 tokens per step.
        let tps = 96.0 / (p.step_ms / 1e3);
        assert!((p.tokens_per_s - tps).abs() <= 1e-12 * tps);
        // Labels: the targets as given; both layers trained.
        assert_eq!(p.method, "lora");
        assert_eq!(p.trained_layers, "0..1");
        assert_eq!(p.targets, "q_proj,v_proj");
        assert_eq!(p.rank, cfg.method.rank);
        let full = predict(&config(MethodName::Full, 3), detail, None);
        assert_eq!(full.targets, "all");
        // Totals of the step: three micro-batches of forward and backward, one optimizer.
        for q in [&p, &full] {
            let want = 3.0 * (q.phases[0].flops + q.phases[1].flops) + q.phases[2].flops;
            assert!((q.flops - want).abs() <= 1e-12 * want);
            let want = 3.0 * (q.phases[0].bytes + q.phases[1].bytes) + q.phases[2].bytes;
            assert!((q.bytes - want).abs() <= 1e-12 * want);
            assert_eq!(q.kernels.forward, q.phases[0].launches);
            assert_eq!(q.kernels.backward, q.phases[1].launches);
            assert_eq!(q.kernels.optimizer, q.phases[2].launches);
        }
        // A sweep row's summary carries the same numbers as the prediction.
        let g = graph::build(&cfg.model, &cfg.method, &cfg.workload);
        let cg = simulate::cost_graph(&g, &cfg.workload, &cfg.hw);
        let u = summarize_costed(cfg.as_ref(), &g, &cg);
        let l = predict_costed(cfg.as_ref(), &g, &cg, detail, None);
        assert_eq!(l.step_ms, p.step_ms);
        let want = Summary {
            trainable_params: l.trainable_params,
            kernels: l.kernels,
            forward_ms: l.forward_ms,
            backward_ms: l.backward_ms,
            optimizer_ms: l.optimizer_ms,
            loop_ms: l.loop_ms,
            step_ms: l.step_ms,
            tokens_per_s: l.tokens_per_s,
            peak_memory_bytes: l.peak_memory_bytes,
            fits: l.fits,
            dominant_bound: l.dominant_bound,
        };
        assert_eq!(u, want);
        assert!(u.loop_ms > 0.0 && u.kernels.backward > 0 && u.trainable_params > 0);
        assert_eq!(u.forward_ms, l.phases[0].time_ms);
        assert_eq!(l.targets, "q_proj,v_proj");
        // A step of no time (nothing simulated) has no throughput rather than an infinite one.
        let empty = simulate::Timeline {
            step_s: 0.0,
            phases: [simulate::Span::default(); 3],
            scopes: Vec::new(),
            training_loop: simulate::Span::default(),
            host_waited: Vec::new(),
        };
        let s = summary(cfg.as_ref(), &empty, &l.memory, l.trainable_params);
        assert_eq!((s.step_ms, s.tokens_per_s), (0.0, 0.0));
        assert_eq!(
            s.kernels.forward + s.kernels.backward + s.kernels.optimizer,
            0
        );
    }

    #[test]
    fn dominant_bound_is_where_the_step_time_went() {
        // Summed over the step from the phase reports (per micro-batch × 3, optimizer once)
        // and the loop (GPU waiting on the host).
        for (model, name) in [
            (tiny(), MethodName::Lora),
            (crate::arch::preset("llama2-7b").unwrap(), MethodName::Full),
        ] {
            let mut cfg = config(name, 3);
            cfg.model = model;
            cfg.method =
                MethodSpec::resolve(name, &MethodOptions::default(), &cfg.model, false).unwrap();
            cfg.workload.batch = 8;
            cfg.workload.seq = 512;
            let p = predict(&cfg, Detail::default(), None);
            let mut sums = [0.0; 4];
            for (i, ph) in p.phases.iter().enumerate() {
                let n = if i < 2 { 3.0 } else { 1.0 };
                for (s, v) in
                    sums.iter_mut()
                        .zip([ph.compute_ms, ph.memory_ms, ph.launch_ms, ph.host_ms])
                {
                    *s += n * v;
                }
            }
            sums[3] += p.loop_ms;
            let best = (0..4).max_by(|&a, &b| sums[a].total_cmp(&sums[b])).unwrap();
            assert_eq!(
                p.dominant_bound,
                Bound::ALL[best],
                "{} {sums:?}",
                cfg.model.name
            );
        }
    }

    #[test]
    fn per_layer_rows_by_hand() {
        let cfg = config(MethodName::Full, 3);
        let g = graph::build(&cfg.model, &cfg.method, &cfg.workload);
        let detail = Detail {
            per_layer: true,
            kernels: false,
        };
        let p = predict(&cfg, detail, None);
        let rows = p.per_layer.as_ref().unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.scope.as_str()).collect();
        // The Trainer (default loop) adds a row of its own.
        assert_eq!(
            names,
            [
                "embedding",
                "layer.0",
                "layer.1",
                "head",
                "optimizer",
                "loop"
            ]
        );
        let launches =
            |s: &graph::Segment| s.kernels.iter().map(|k| u64::from(k.launches)).sum::<u64>();
        let scopes = [&g.embedding, g.layer(0), g.layer(1), &g.head];
        for (r, s) in rows.iter().zip(scopes) {
            assert!(r.trained, "{}", r.scope);
            assert_eq!(r.trainable_params, s.trainable);
            assert_eq!(r.saved_bytes, s.saved_bytes + s.checkpoint_bytes);
            assert_eq!(r.forward_kernels, launches(&s.forward));
            // First micro-batch's backward once, the accumulating one twice, over 3.
            let (b1, ba) = (launches(&s.backward), launches(&s.backward_accum));
            assert!(ba > b1, "{}: accumulation adds kernels", r.scope);
            let want = ((b1 + 2 * ba) as f64 / 3.0).round() as u64;
            assert_eq!(r.backward_kernels, want, "{}", r.scope);
            assert_eq!((r.optimizer_ms, r.optimizer_kernels), (0.0, 0));
            let fwd: f64 = s.forward.kernels.iter().map(|k| k.flops).sum();
            let bwd = |seg: &graph::Segment| seg.kernels.iter().map(|k| k.flops).sum::<f64>();
            let want = fwd + (bwd(&s.backward) + 2.0 * bwd(&s.backward_accum)) / 3.0;
            assert!((r.flops - want).abs() <= 1e-9 * want, "{}", r.scope);
            let by = |seg: &graph::Segment| {
                seg.kernels
                    .iter()
                    .map(|k| k.bytes_read + k.bytes_written)
                    .sum::<f64>()
            };
            let want = by(&s.forward) + (by(&s.backward) + 2.0 * by(&s.backward_accum)) / 3.0;
            assert!((r.bytes - want).abs() <= 1e-9 * want, "{}", r.scope);
        }
        // Rows' forward and backward times per micro-batch add up to the phases'.
        let fwd: f64 = rows.iter().map(|r| r.forward_ms).sum();
        let bwd: f64 = rows.iter().map(|r| r.backward_ms).sum();
        assert!(
            (fwd - p.forward_ms).abs() <= 1e-9 * p.forward_ms,
            "{fwd} {}",
            p.forward_ms
        );
        assert!(
            (bwd - p.backward_ms).abs() <= 1e-9 * p.backward_ms,
            "{bwd} {}",
            p.backward_ms
        );
        let opt = &rows[4];
        assert!(opt.trained);
        assert_eq!(opt.optimizer_ms, p.optimizer_ms);
        assert_eq!(opt.optimizer_kernels, launches(&g.optimizer));
        assert_eq!(
            opt.flops,
            g.optimizer.kernels.iter().map(|k| k.flops).sum::<f64>()
        );
        assert_eq!(
            (opt.forward_ms, opt.backward_ms, opt.trainable_params),
            (0.0, 0.0, 0)
        );
        let lp = &rows[5];
        assert!(!lp.trained);
        assert_eq!(lp.optimizer_ms, p.loop_ms);
        assert!(lp.optimizer_ms > 0.0);
        // Under gradient checkpointing a block keeps its input too: saved + checkpoint.
        let mut ckpt = cfg.clone();
        ckpt.workload.grad_checkpointing = true;
        let gc = graph::build(&ckpt.model, &ckpt.method, &ckpt.workload);
        assert!(gc.layer(0).checkpoint_bytes > 0.0);
        let rows = predict(&ckpt, detail, None).per_layer.unwrap();
        assert_eq!(
            rows[1].saved_bytes,
            gc.layer(0).saved_bytes + gc.layer(0).checkpoint_bytes
        );
        // A bare loop has no loop row; SGD has no optimizer kernels... (frozen optimizer row).
        let mut bare = cfg.clone();
        bare.workload.training_loop = crate::TrainingLoop::Bare;
        let rows = predict(&bare, detail, None).per_layer.unwrap();
        assert_eq!(rows.last().unwrap().scope, "optimizer");
    }

    #[test]
    fn kernel_rows_follow_the_graph_in_issue_order() {
        let mut cfg = config(MethodName::Full, 1);
        // Eager attention: batched matmuls (q·kᵀ, p·v) for the four-part shape.
        cfg.workload.attention = crate::workload::AttentionImpl::Eager;
        let g = graph::build(&cfg.model, &cfg.method, &cfg.workload);
        let detail = Detail {
            per_layer: false,
            kernels: true,
        };
        let p = predict(&cfg, detail, None);
        let rows = p.kernel_rows.as_ref().unwrap();
        // Issue order: forward embedding, layers 0, 1, head; backward head, layers 1, 0,
        // embedding; then the optimizer.
        let order: [(Phase, Scope, &graph::Segment); 9] = [
            (Phase::Forward, Scope::Embedding, &g.embedding.forward),
            (Phase::Forward, Scope::Layer(0), &g.layer(0).forward),
            (Phase::Forward, Scope::Layer(1), &g.layer(1).forward),
            (Phase::Forward, Scope::Head, &g.head.forward),
            (Phase::Backward, Scope::Head, &g.head.backward),
            (Phase::Backward, Scope::Layer(1), &g.layer(1).backward),
            (Phase::Backward, Scope::Layer(0), &g.layer(0).backward),
            (Phase::Backward, Scope::Embedding, &g.embedding.backward),
            (Phase::Optimizer, Scope::Optimizer, &g.optimizer),
        ];
        let mut it = rows.iter();
        let mut next_index = [0usize; 3];
        let (mut batched, mut plain, mut with_deps) = (0, 0, 0);
        for (phase, scope, seg) in order {
            let base = next_index[phase as usize];
            for (i, k) in seg.kernels.iter().enumerate() {
                let r = it.next().expect("a row per kernel");
                assert_eq!((r.phase, r.index, r.name), (phase, base + i, k.name));
                assert_eq!(r.module, k.path(g.family, scope));
                assert_eq!((r.kind, r.dtype), (k.kind, k.dtype.as_str()));
                assert_eq!(
                    (r.flops, r.bytes_read, r.bytes_written),
                    (k.flops, k.bytes_read, k.bytes_written)
                );
                assert_eq!((r.launches, r.recompute), (k.launches, k.recompute));
                // Dependencies index the phase's rows: the segment's offset added.
                let deps: Vec<usize> = k.deps.iter().map(|&d| base + d as usize).collect();
                assert_eq!(r.deps, deps);
                with_deps += usize::from(base > 0 && !deps.is_empty());
                match k.gemm {
                    Some(s) if s.batch > 1 => {
                        batched += 1;
                        let want = format!("{}x{}x{}x{}", s.m, s.n, s.k, s.batch);
                        assert_eq!(r.shape.as_deref(), Some(want.as_str()));
                    }
                    Some(s) => {
                        plain += 1;
                        let want = format!("{}x{}x{}", s.m, s.n, s.k);
                        assert_eq!(r.shape.as_deref(), Some(want.as_str()));
                    }
                    None => assert_eq!(r.shape, None),
                }
            }
            next_index[phase as usize] += seg.kernels.len();
        }
        assert!(it.next().is_none());
        assert!(batched > 0 && plain > 0 && with_deps > 0);
        // Device time: the forward rows' µs add up to the forward phase's busy time (one
        // micro-batch).
        let fwd_us: f64 = rows
            .iter()
            .filter(|r| r.phase == Phase::Forward)
            .map(|r| r.device_us)
            .sum();
        let busy_us = p.phases[0].gpu_busy_ms * 1e3;
        assert!(
            (fwd_us - busy_us).abs() <= 1e-9 * busy_us,
            "{fwd_us} {busy_us}"
        );
        // This tiny model is host-bound: some rows waited on the host and say so; the others
        // keep their own bound.
        assert!(p.phases[0].host_ms > 0.0);
        assert!(rows.iter().any(|r| r.bound == Bound::Host));
        assert!(rows.iter().any(|r| r.bound != Bound::Host));
        let host_us: f64 = rows
            .iter()
            .filter(|r| r.phase == Phase::Forward)
            .map(|r| r.host_us)
            .sum();
        assert!(host_us > 0.0);
        // Host time per op in µs: an eager PyTorch op costs microseconds to tens of
        // microseconds on the host, never a second, and some forward op at least 1 µs.
        assert!(rows.iter().all(|r| r.host_us < 1000.0));
        assert!(rows
            .iter()
            .any(|r| r.phase == Phase::Forward && r.host_us > 1.0));
    }
}

#[cfg(test)]
mod breakdown_by_hand {
    use super::*;
    use crate::method::{MethodName, MethodOptions};
    use costsim_hardware::resolve_device;

    /// The per-kind split against the kernel rows of `predict` (another walk of the graph),
    /// summed here by kind for one block and for the optimizer.
    #[test]
    fn kinds_match_the_kernel_rows() {
        let model = crate::arch::preset("gpt2").unwrap();
        let cfg = Config {
            method: MethodSpec::resolve(MethodName::Full, &MethodOptions::default(), &model, false)
                .unwrap(),
            model,
            workload: Workload::default(),
            hw: resolve_device("a100").unwrap(),
        };
        assert_eq!(cfg.workload.grad_accum, 1);
        let detail = Detail {
            per_layer: false,
            kernels: true,
        };
        let p = predict(&cfg, detail, None);
        let rows = p.kernel_rows.as_ref().unwrap();
        let b = breakdown(&cfg);
        let check = |scope: &str, of: &dyn Fn(&KernelRow) -> bool| {
            let s = b.iter().find(|s| s.scope == scope).unwrap();
            let mut nonzero = 0;
            for &(kind, ms) in &s.by_kind_ms {
                let want: f64 = rows
                    .iter()
                    .filter(|r| of(r) && r.kind == kind)
                    .map(|r| r.device_us / 1e3)
                    .sum();
                assert!(
                    (ms - want).abs() <= 1e-9 * want.max(1e-6),
                    "{scope} {kind}: {ms} vs {want}"
                );
                nonzero += usize::from(want > 0.0);
            }
            assert!(nonzero >= 2, "{scope}");
            // Device time by bound adds up to the same total.
            let device: f64 = rows
                .iter()
                .filter(|r| of(r))
                .map(|r| r.device_us / 1e3)
                .sum();
            let bounds = s.compute_ms + s.memory_ms + s.launch_ms;
            assert!(
                (bounds - device).abs() <= 1e-9 * device,
                "{scope}: {bounds} vs {device}"
            );
            s.clone()
        };
        // Block 5's rows: `transformer.h.5` itself (the residual adds) and its submodules.
        check("layer.5", &|r| {
            r.module == "transformer.h.5" || r.module.starts_with("transformer.h.5.")
        });
        let opt = check("optimizer", &|r| r.phase == Phase::Optimizer);
        // Full fine-tuning's AdamW streams 124 M parameters: memory-bound time on the A100.
        assert!(opt.memory_ms > 0.0 && opt.compute_ms + opt.launch_ms < opt.memory_ms);
    }
}

/// Walking runs of identical layers at once (`footprint`) gives the same footprint, bit for bit,
/// as walking every layer: every preset, every method, full and layer-selective, with and
/// without gradient accumulation and checkpointing, in three precisions and both attentions,
/// and GPT-2's tied head (trained embeddings under full fine-tuning).
#[test]
fn footprint_by_runs_equals_the_walk_layer_by_layer() {
    use crate::arch::{preset, PRESETS};
    use crate::method::{MethodName, MethodOptions};
    use crate::workload::{AttentionImpl, Precision};
    let (mut runs_seen, mut compared) = (0, 0);
    for p in PRESETS {
        let (name, model) = (p.name, preset(p.name).unwrap());
        for method in MethodName::ALL {
            for (accum, gc, precision, attention) in [
                (1, false, Precision::Bf16Mixed, AttentionImpl::Sdpa),
                (3, false, Precision::Fp32, AttentionImpl::Eager),
                (1, true, Precision::Fp16Mixed, AttentionImpl::Sdpa),
                (2, true, Precision::Bf16, AttentionImpl::Eager),
            ] {
                let w = Workload {
                    batch: 2,
                    seq: 64,
                    grad_accum: accum,
                    grad_checkpointing: gc,
                    precision,
                    attention,
                    ..Workload::default()
                };
                let Ok(spec) = MethodSpec::resolve(method, &MethodOptions::default(), &model, true)
                else {
                    continue;
                };
                let g = crate::graph::build(&model, &spec, &w);
                runs_seen += usize::from(g.layer_class.windows(2).any(|p| p[0] == p[1]));
                let (a, b) = (
                    footprint(&model, &spec, &w, &g),
                    footprint_walk(&model, &spec, &w, &g, false, ParamCounts::of(&model, &spec)),
                );
                let bits = |m: &Memory| {
                    [
                        m.weights_bytes,
                        m.gradients_bytes,
                        m.optimizer_state_bytes,
                        m.activations_bytes,
                        m.forward_peak_bytes,
                        m.backward_peak_bytes,
                        m.optimizer_peak_bytes,
                        m.peak_bytes,
                    ]
                    .map(f64::to_bits)
                };
                assert_eq!(
                    bits(&a),
                    bits(&b),
                    "{name} {method} {accum} {gc} {precision:?}"
                );
                compared += 1;
            }
        }
    }
    assert!(runs_seen > 0, "some graphs have runs of identical layers");
    assert_eq!(
        compared,
        PRESETS.len() * MethodName::ALL.len() * 4,
        "every configuration"
    );
}
