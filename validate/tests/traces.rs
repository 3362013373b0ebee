//! costsim against committed ground-truth traces of the real stack (docs/traces.md).
//!
//! The traces were recorded by scripts/trace/trace_step.py from transformers + peft (and the PaCA
//! reference layer): tiny configs on this CPU (docs/results/traces/cpu), llama2-7b at batch
//! 8 × 512 on the meta device (docs/results/traces/meta-llama2-7b), and real sizes on an H200
//! (docs/results/gpu/traces). Their numbers come from PyTorch itself, never from costsim, so each
//! assertion below fails when a modelling rule drifts from what the libraries do. The bounds are
//! the goals of the ground-truth issue: launching ops within 2% per phase, saved bytes within 2%,
//! peak memory within 3%, FLOPs within 1%.

use std::path::{Path, PathBuf};

use costsim_validate::trace::{bytes_parts, compare_trace, read_trace, TraceComparison};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every .json trace in a folder of the repository, sorted, with its path.
fn read_traces(dir: &str) -> Vec<(costsim_validate::trace::Trace, String)> {
    let dir = root().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.map(|e| e.path()).unwrap_or_default())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no traces in {}", dir.display());
    files
        .iter()
        .map(|f| {
            let t = read_trace(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (t, f.display().to_string())
        })
        .collect()
}

fn load(dir: &str) -> Vec<TraceComparison> {
    read_traces(dir)
        .iter()
        .map(|(t, f)| compare_trace(t, f, None).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect()
}

fn file_name(c: &TraceComparison) -> String {
    Path::new(&c.source)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn pct(e: f64) -> String {
    format!("{:+.2}%", 100.0 * e)
}

/// GPT-2 and Llama × {full, LoRA q,v and all-linear with dropout 0 and 0.1, PaCA, upper-half
/// PaCA} × {fp32, bf16, bf16-mixed}, Mistral with LoRA below its sliding window (SDPA runs
/// causal without a mask there), and Qwen2 (q, k, v biases, tied embeddings: full fp32, LoRA
/// bf16-mixed, PaCA bf16-mixed), and fp16-mixed with a GradScaler (GPT-2 full, Llama LoRA and
/// PaCA): every phase's launching ops, saved bytes, peaks, FLOPs.
#[test]
fn tiny_grid_agrees_with_the_real_stack() {
    let cmps = load("docs/results/traces/cpu");
    assert_eq!(cmps.len(), 43, "the CI grid has 43 traces");
    for c in &cmps {
        let name = file_name(c);
        let e = c.saved_bytes.error();
        assert!(e.abs() <= 0.02, "{name}: saved {}", pct(e));
        let (mut fp, mut ft) = (0.0, 0.0);
        for p in &c.phases {
            let e = p.launches.error();
            assert!(e.abs() <= 0.02, "{name} {}: ops {}", p.phase, pct(e));
            let e = p.peak_bytes.error();
            assert!(e.abs() <= 0.03, "{name} {}: peak {}", p.phase, pct(e));
            fp += p.flops.predicted;
            ft += p.flops.traced;
        }
        let e = (fp - ft) / ft;
        assert!(e.abs() <= 0.01, "{name}: flops {}", pct(e));
    }
}

/// transformers' eager attention (`--attention eager`, scripts/trace/ci-eager-grid.txt): GPT-2
/// and Llama × {full, LoRA on every linear with dropout 0.1, PaCA, upper-half PaCA} × {fp32,
/// bf16, bf16-mixed}, GPT-2 with its attention dropout at 0.1, and Mistral (full fp32, LoRA
/// bf16-mixed) with a sliding window of 16 at seq 32, whose mask launches five more kernels in
/// the model's forward (`graph::block`), and Qwen2 full fp32. Every phase's launching ops equal,
/// saved bytes within 0.5%, peaks within 3%, FLOPs within 0.1%, forward and backward bytes read
/// and written within 6%, and the attention's own launches equal module by module. Before the recipe followed
/// transformers 5.17's `eager_attention_forward` (2026-11-30), the forward was 5–16% short of
/// launches and saved bytes 6% off either way.
#[test]
fn eager_attention_grid_agrees_with_the_real_stack() {
    let cmps = load("docs/results/traces/cpu-eager");
    assert_eq!(cmps.len(), 27, "the eager-attention grid has 27 traces");
    let windowed = cmps.iter().filter(|c| c.name.contains("mistral")).count();
    assert_eq!(windowed, 2, "two traces of a windowed Mistral");
    for c in &cmps {
        let name = file_name(c);
        let e = c.saved_bytes.error();
        assert!(e.abs() <= 0.005, "{name}: saved {}", pct(e));
        for p in &c.phases {
            assert_eq!(
                p.launches.predicted, p.launches.traced,
                "{name} {}: launches",
                p.phase
            );
            let e = p.peak_bytes.error();
            assert!(e.abs() <= 0.03, "{name} {}: peak {}", p.phase, pct(e));
            let e = p.flops.error();
            assert!(e.abs() <= 0.001, "{name} {}: flops {}", p.phase, pct(e));
            // (The optimizer's bytes are its few non-foreach ops': not what this grid tests.)
            if p.phase == "optimizer" {
                continue;
            }
            for (what, b) in [("read", p.bytes_read), ("written", p.bytes_written)] {
                let e = b.expect("the trace records bytes").error();
                assert!(
                    e.abs() <= 0.06,
                    "{name} {}: bytes {what} {}",
                    p.phase,
                    pct(e)
                );
            }
        }
        let attn: Vec<_> = c
            .modules
            .iter()
            .filter(|m| m.module.ends_with("attn"))
            .collect();
        assert!(
            attn.len() >= 2,
            "{name}: forward and backward attention rows"
        );
        for m in attn {
            assert_eq!(
                m.predicted, m.traced,
                "{name} {} {}: {} against {}",
                m.phase, m.module, m.predicted_ops, m.traced_ops
            );
        }
    }
}

/// transformers' gradient checkpointing (`trace_step.py --grad-checkpointing`: non-reentrant
/// torch.utils.checkpoint around every decoder layer, the input embeddings' output made to
/// require grad), measured first on 2026-12-01: ten tiny CPU steps (GPT-2, Llama and Qwen2, full,
/// LoRA, PaCA, upper-half PaCA, fp32, bf16, bf16-mixed, fp16-mixed, eager attention) and llama2-7b
/// at 8 × 512 on
/// meta (full, LoRA, upper-half PaCA). Forward and backward launches equal and FLOPs exact: each
/// layer's recompute stops where torch.utils.checkpoint's early stop does (before its last
/// projection's GEMM, without the residual add), which a recompute of the whole forward missed
/// by 2–5 launches a layer and 3–8% of the backward's FLOPs; GPT-2's embedding dropout runs its
/// backward (the embeddings' output requires grad). Memory: at llama2-7b every peak within
/// 1%, but LoRA's forward (+2.8%: costsim keeps a layer's whole saved set as its forward working
/// set under checkpointing, an upper bound); at tiny sizes, where a layer's working set is a
/// large share, the forward peak stays an upper bound (within 30%) and the backward's within 11%.
#[test]
fn checkpointed_steps_agree_with_the_real_stack() {
    let tiny = load("docs/results/traces/cpu-checkpointing");
    assert_eq!(tiny.len(), 10, "the checkpointing grid has 10 traces");
    let real = load("docs/results/traces/meta-llama2-7b-checkpointing");
    assert_eq!(real.len(), 3, "three llama2-7b steps");
    for (c, at_7b) in tiny
        .iter()
        .map(|c| (c, false))
        .chain(real.iter().map(|c| (c, true)))
    {
        let name = file_name(c);
        let e = c.saved_bytes.error();
        assert!(e.abs() <= 0.035, "{name}: saved {}", pct(e));
        for p in &c.phases {
            let e = p.peak_bytes.error();
            let ok = match (p.phase, at_7b) {
                ("forward", true) => e.abs() <= 0.03,
                ("forward", false) => (-0.001..=0.30).contains(&e),
                ("backward", false) => e.abs() <= 0.11,
                ("optimizer", false) => e.abs() <= 0.055,
                _ => e.abs() <= 0.01,
            };
            assert!(ok, "{name} {}: peak {}", p.phase, pct(e));
            // (The optimizer's launches and FLOPs are not what this grid tests: meta runs
            // AdamW one tensor at a time, and the traces count no optimizer FLOPs.)
            if p.phase == "optimizer" {
                continue;
            }
            assert_eq!(
                p.launches.predicted, p.launches.traced,
                "{name} {}: launches",
                p.phase
            );
            let e = p.flops.error();
            assert!(e.abs() <= 1e-4, "{name} {}: flops {}", p.phase, pct(e));
        }
    }
}

/// The other optimizers (`trace_step.py --optimizer`, measured first on 2026-12-01) on GPT-2 and
/// Llama full fine-tuning and Llama LoRA: AdamW `fused=True` and plain SGD launch what costsim
/// launches (10 and 9 with clipping: a fused AdamW's step counters are on the device, so their
/// `_foreach_add_` launches) and peak within 0.2%; so does a fused AdamW under fp16-mixed's
/// GradScaler (Llama LoRA clipped, GPT-2 full fine-tuning not). The optimizer a default Trainer
/// builds (`--optimizer trainer`, costsim's default under a Trainer) is that fused AdamW in two
/// parameter groups, which costsim holds as the Trainer does (`ParamGroups::DecayAndNoDecay`):
/// the same tensors in each group, and each non-empty group steps its counters and runs its
/// fused kernel apart (full fine-tuning's biases and norms; LoRA's tensors all fall in the
/// first group): the same tensors in each group as the Trainer holds for GPT-2 (biases and
/// LayerNorms without decay) and Llama (RMSNorms) full fine-tuning, Llama LoRA and GPT-2 PaCA on
/// the upper half of the layers. A Trainer's foreach AdamW (`--optimizer trainer-foreach`:
/// `optim="adamw_torch"`, weight decay 0.01) skips the decay's `_foreach_mul_` in the second
/// group, whose decay is 0.0, as costsim does: GPT-2 full fine-tuning's 23 launches, where one
/// group would launch 25 and decay in both 24. AdamW `foreach=False` launches one
/// kernel a tensor more in these CPU traces than costsim: its step counter `state_steps[i] += 1`,
/// a 0-dim tensor that stays on the CPU when the parameters are on CUDA (host work there, no
/// kernel; not modelled, docs/model.md); its peak is within 3%.
#[test]
fn other_optimizers_agree_with_the_real_stack() {
    let traces = read_traces("docs/results/traces/cpu-optimizers");
    assert_eq!(
        traces.len(),
        16,
        "three optimizers × three configurations, two fused under a GradScaler, five a Trainer's"
    );
    for (t, f) in &traces {
        let c = compare_trace(t, f, None).unwrap_or_else(|e| panic!("{f}: {e}"));
        let name = file_name(&c);
        let opt = c
            .phases
            .iter()
            .find(|p| p.phase == "optimizer")
            .expect("an optimizer phase");
        let e = opt.peak_bytes.error();
        let single = t.workload.optimizer == "adamw-single";
        let trainer = t.workload.optimizer.starts_with("trainer");
        if trainer {
            // The tensors in each group: a Trainer's split, as costsim makes it.
            let cfg = costsim_validate::trace::config_of(t, f, None).expect("config");
            assert_eq!(
                costsim_model::graph::param_group_sizes(&cfg.model, &cfg.method, &cfg.workload),
                t.workload.param_groups,
                "{f}: tensors with and without weight decay"
            );
        }
        if ["adamw-fused", "trainer"].contains(&t.workload.optimizer.as_str()) {
            // Its step counters on the device, counted as launches (⌈n/110⌉ for n tensors).
            let steps = t
                .foreach
                .iter()
                .find(|f| f.op == "_foreach_add_" && f.counters_on_device)
                .unwrap_or_else(|| panic!("{f}: a fused AdamW's device step counters"));
            assert_eq!(steps.launches(), 1, "{f}: {} counters", steps.numels.len());
        }
        // PaCA's tiny model misses the same 7.7 KB in every phase in this trace as in the tiny
        // grid's (docs/results/traces/cpu, held to 3% there): its peaks take that bound.
        let paca = name.contains("paca");
        assert!(
            e.abs() <= if single || paca { 0.03 } else { 0.002 },
            "{name}: optimizer peak {}",
            pct(e)
        );
        // Per trainable tensor, one addcdiv_ in AdamW's update.
        let tensors: u64 = t
            .ops
            .iter()
            .filter(|r| r.phase == "optimizer" && r.op == "addcdiv_")
            .map(|r| r.calls)
            .sum();
        let missing = if single {
            assert!(tensors > 0, "{name}: AdamW's per-tensor updates");
            tensors as f64
        } else {
            0.0
        };
        assert_eq!(
            opt.launches.predicted + missing,
            opt.launches.traced,
            "{name}: optimizer launches"
        );
        for p in c.phases.iter().filter(|p| p.phase != "optimizer") {
            assert_eq!(
                p.launches.predicted, p.launches.traced,
                "{name} {}",
                p.phase
            );
        }
    }
}

/// The eager held-out steps (transformers + peft at 1 × 128 with the models' real vocabularies,
/// recorded with their timings on this project's CPU, docs/results/cpu/eager-2026-11-29q): every
/// phase's peak within 3% and saved bytes within 2%. GPT-2's full fine-tunings peak in backward
/// where autograd sums the tied wte's two V×d gradients out of place (three V×d tensors alive);
/// before the memory model held that sum they came out 21–22% low.
#[test]
fn eager_steps_at_real_vocabularies_agree_on_memory() {
    let cmps = load("docs/results/cpu/eager-2026-11-29q/eager");
    assert_eq!(cmps.len(), 24, "the eager grid has 24 traces");
    let mut tied_sums = 0;
    for c in &cmps {
        let name = file_name(c);
        let e = c.saved_bytes.error();
        assert!(e.abs() <= 0.02, "{name}: saved {}", pct(e));
        for p in &c.phases {
            let e = p.peak_bytes.error();
            assert!(e.abs() <= 0.03, "{name} {}: peak {}", p.phase, pct(e));
        }
        if name.starts_with("gpt2") && name.contains("-full-fp32") {
            // Their backward peak is the tied sum's, measured, and predicted within 0.1%.
            let b = &c.phases[1];
            assert_eq!(b.phase, "backward");
            assert!(
                b.peak_bytes.error().abs() <= 0.001,
                "{name}: {}",
                pct(b.peak_bytes.error())
            );
            tied_sums += 1;
        }
    }
    assert_eq!(tied_sums, 2, "gpt2-tiny and gpt2-narrow-deep full fp32");
}

/// The headline case at its real size: llama2-7b, batch 8 × 512, every method, on the
/// meta device (bf16 and fp32), saved bytes within 2% and forward/backward peaks within 3%; the
/// optimizer's peak, predicted with the single-tensor AdamW meta runs (its largest tensor's square
/// root and quotient alive together), within 0.1%.
#[test]
fn llama2_7b_every_method_on_meta() {
    let cmps = load("docs/results/traces/meta-llama2-7b");
    assert!(
        cmps.len() >= 8,
        "full, LoRA, PaCA, upper-half and three-quarters PaCA"
    );
    for c in &cmps {
        let e = c.saved_bytes.error();
        assert!(e.abs() <= 0.02, "{}: saved {}", c.name, pct(e));
        // The optimizer runs per tensor on meta (no foreach kernels there): its ops are not
        // CUDA's, so only forward and backward are held here.
        for p in c.phases.iter().filter(|p| p.phase != "optimizer") {
            let e = p.launches.error();
            assert!(e.abs() <= 0.02, "{} {}: ops {}", c.name, p.phase, pct(e));
            let e = p.peak_bytes.error();
            assert!(e.abs() <= 0.03, "{} {}: peak {}", c.name, p.phase, pct(e));
        }
        let opt = c
            .phases
            .iter()
            .find(|p| p.phase == "optimizer")
            .expect("optimizer");
        let e = opt.peak_bytes.error();
        assert!(e.abs() <= 0.001, "{} optimizer: peak {}", c.name, pct(e));
    }
}

/// Bytes moved by the kernel-launching ops, against the tensors the real stack's ops take and
/// return (the tracer's rule, worked by hand in scripts/trace/test_trace.py: arguments read,
/// outputs written, gathers reading only the rows they return, index_put_ writing its values).
/// Per phase, forward and backward, bytes written within `w` and read within `r`; every part
/// (`bytes_parts`: a module in forward, a whole layer in backward) within `of_part` of its own
/// bytes plus `of_phase` of the phase's. PaCA's strided gather `x[..., idx]` and column write,
/// which costsim prices per touched 32-byte sector, are compared at their tensors' sizes (the
/// comparison's rule, validate/src/trace.rs). Two differences are known and explained, and get a
/// factor-of-two bound instead (docs/traces.md):
/// - the loss's reads: `nll_loss` reads one log-probability per row and its backward writes its
///   gradient without reading the log-probabilities, which costsim prices as such, while the
///   trace counts the whole M×V argument;
/// - LayerNorm's backward reads: one aten op that runs two CUDA kernels (dX; γ and β), each
///   reading dY and X, which costsim counts twice and the trace once (seen whole in GPT-2's
///   final `ln_f`; inside a layer it is within the layer's bound).
///
/// The bounds record today's agreement; they were not fitted (no model number was changed to
/// meet them); the four model fixes the comparison found (rotate_half's reads, SDPA backward
/// reading its output, a bf16 embedding's gradient in bf16, the rotary tables' own sizes) were
/// made for what the trace shows op by op.
fn check_bytes(c: &TraceComparison, w: f64, r: f64, of_part: f64, of_phase: f64) {
    for ph in c.phases.iter().filter(|p| p.phase != "optimizer") {
        let (read, written) = (
            ph.bytes_read.expect("trace records bytes"),
            ph.bytes_written.expect("trace records bytes"),
        );
        assert!(
            written.error().abs() <= w,
            "{} {}: written {}",
            c.name,
            ph.phase,
            pct(written.error())
        );
        assert!(
            read.error().abs() <= r,
            "{} {}: read {}",
            c.name,
            ph.phase,
            pct(read.error())
        );
        for part in bytes_parts(c, ph.phase).expect("bytes") {
            for (what, p, total) in [
                ("read", part.read, read.traced),
                ("written", part.written, written.traced),
            ] {
                let known = what == "read"
                    && (part.part.is_empty() || (ph.phase == "backward" && part.part == "ln_f"));
                let slack = if known {
                    p.traced + of_phase * total
                } else {
                    of_part * p.traced + of_phase * total
                };
                assert!(
                    (p.predicted - p.traced).abs() <= slack,
                    "{} {} '{}': {what} {} vs traced {}",
                    c.name,
                    ph.phase,
                    part.part,
                    p.predicted,
                    p.traced
                );
            }
        }
    }
}

/// In forward, where both sides file every op under the same module, each part's bytes are the
/// trace's exactly (to 0.01%), except where a difference is known and explained: the loss (its
/// kernels' real traffic against whole arguments), PaCA's linear layers' reads (the index
/// tensor, 8 bytes a selected column, read by the gather and the column write), self-attention under SDPA's math path at tiny sizes (CPU's kernel arguments), and
/// GPT-2's LayerNorms' writes (CUDA keeps the mean and rstd in fp32, as costsim does; the CPU
/// trace in the activation dtype). One byte term dropped anywhere else shows here.
fn check_forward_parts_exact(c: &TraceComparison) {
    let paca = c.name.contains(" paca");
    for part in bytes_parts(c, "forward").expect("bytes") {
        let name = part.part.as_str();
        // PaCA's linears: the trace also counts the index tensor its gather and column write
        // read (8 bytes a selected column each), which costsim leaves out.
        let loose_read = name.is_empty()
            || name.ends_with("self_attn")
            || (paca
                && (name.ends_with("proj") || name.ends_with("c_attn") || name.ends_with("c_fc")));
        let loose_written = name.is_empty() || name.ends_with("self_attn") || name.contains("ln_");
        for (what, p, loose) in [
            ("read", part.read, loose_read),
            ("written", part.written, loose_written),
        ] {
            if loose {
                continue;
            }
            assert!(
                (p.predicted - p.traced).abs() <= 1e-4 * p.traced + 16.0,
                "{} forward '{}': {what} {} vs traced {} exactly",
                c.name,
                name,
                p.predicted,
                p.traced
            );
        }
    }
}

#[test]
fn forward_bytes_are_exact_where_both_sides_agree_on_the_op() {
    for dir in [
        "docs/results/traces/cpu",
        "docs/results/traces/meta-llama2-7b",
    ] {
        for c in load(dir) {
            check_forward_parts_exact(&c);
        }
    }
}

#[test]
fn bytes_agree_with_the_real_stack() {
    for c in load("docs/results/traces/cpu") {
        check_bytes(&c, 0.06, 0.08, 0.10, 0.001);
    }
    for c in load("docs/results/traces/meta-llama2-7b") {
        check_bytes(&c, 0.005, 0.02, 0.03, 0.0005);
    }
}

/// Measured on an H200 with the real libraries: llama2-7b PaCA and LoRA at batch 8 × 512,
/// bf16-mixed. Saved bytes within 2% and each phase's peak within 3% of the live bytes the tracer
/// followed (which sit within 0.2% of the CUDA caching allocator's own peak, also recorded).
#[test]
fn llama2_7b_memory_agrees_with_the_gpu_trace() {
    let cmps = load("docs/results/gpu/traces");
    let big: Vec<_> = cmps
        .iter()
        .filter(|c| file_name(c).starts_with("llama7b"))
        .collect();
    assert_eq!(big.len(), 2, "PaCA and LoRA on llama2-7b");
    for c in big {
        let e = c.saved_bytes.error();
        assert!(e.abs() <= 0.02, "{}: saved {}", c.name, pct(e));
        for p in &c.phases {
            let e = p.peak_bytes.error();
            assert!(e.abs() <= 0.03, "{} {}: peak {}", c.name, p.phase, pct(e));
        }
    }
}

/// The built-in GPU profiles' host costs are the fit of the H200 session's timed micro traces
/// (docs/host.md): refitting the committed traces gives the committed values.
#[test]
fn host_costs_regenerate_from_the_committed_h200_traces() {
    let traces = read_traces("docs/results/gpu/host/traces");
    assert_eq!(traces.len(), 80);
    let fit = costsim_validate::host::fit_host(&traces).expect("fits");
    let h200 = costsim_hardware::resolve_device("h200").expect("h200");
    let us = |s: f64| (s * 1e6 * 1000.0).round() / 1000.0;
    assert_eq!(us(fit.forward.coef[0]), us(h200.host.python_op_s));
    assert_eq!(us(fit.forward.coef[1]), us(h200.host.module_call_s));
    assert_eq!(us(fit.forward.coef[2]), us(h200.host.peft_module_s));
    assert_eq!(us(fit.backward.coef[0]), us(h200.host.autograd_node_s));
    assert_eq!(us(fit.optimizer.coef[1]), us(h200.host.optimizer_tensor_s));
    // The fit explains the micro steps it was made from.
    assert!(fit.forward.r2 > 0.9 && fit.backward.r2 > 0.9, "{fit:?}");
}

/// The eager-stack held-out check on this CPU (docs/host.md): real transformers + peft steps of
/// the held-out models, predicted with the calibrated CPU profile and this CPU's measured host
/// costs. Every LoRA-vs-full direction of the measured steps must come out right.
#[test]
fn cpu_eager_lora_vs_full_directions_are_right() {
    let hw = costsim_hardware::load_profile(&root().join("docs/results/cpu/host/cpu-eager.toml"))
        .expect("cpu-eager profile");
    let mut steps = std::collections::BTreeMap::new();
    for (t, f) in read_traces("docs/results/cpu/eager") {
        let c = compare_trace(&t, &f, Some(&hw)).expect("compares");
        let (p, m) = c.phases.iter().fold((0.0, 0.0), |(p, m), ph| {
            let t = ph.time_ms.expect("timed trace");
            (p + t.predicted, m + t.traced)
        });
        let stem = Path::new(&f)
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        steps.insert(stem, (p, m));
    }
    let mut checked = 0;
    for (name, &(p, m)) in steps.iter().filter(|(n, _)| n.contains("-lora-")) {
        // gpt2-tiny-lora-qv-fp32 → gpt2-tiny-full-fp32
        let (model, rest) = name.split_once("-lora-").expect("lora name");
        let prec = rest.rsplit('-').next().expect("precision");
        let &(pf, mf) = steps
            .get(&format!("{model}-full-{prec}"))
            .unwrap_or_else(|| panic!("no full run for {name}"));
        assert_eq!(
            p < pf,
            m < mf,
            "{name}: predicted {p:.1} vs full {pf:.1} ms, measured {m:.1} vs {mf:.1} ms"
        );
        checked += 1;
    }
    assert_eq!(checked, 12);
}

/// This CPU's eager host costs regenerate from the committed timed micro traces.
#[test]
fn cpu_host_costs_regenerate_from_the_committed_traces() {
    let traces = read_traces("docs/results/cpu/host/traces");
    assert_eq!(traces.len(), 80);
    let fit = costsim_validate::host::fit_host(&traces).expect("fits");
    let hw = costsim_hardware::load_profile(&root().join("docs/results/cpu/host/cpu-eager.toml"))
        .expect("cpu-eager profile");
    let us = |s: f64| (s * 1e6 * 1000.0).round() / 1000.0;
    assert_eq!(us(fit.forward.coef[0]), us(hw.host.python_op_s));
    assert_eq!(us(fit.backward.coef[0]), us(hw.host.autograd_node_s));
    assert_eq!(us(fit.optimizer.coef[1]), us(hw.host.optimizer_tensor_s));
}

/// What a Trainer's `model.train()` walks every micro-batch: costsim's count of nn.Modules
/// (`training_loop::nn_modules`, worked by hand in its unit test) against `model.modules()` of
/// the real model — GPT-2 and Llama, every method, LoRA on q,v and on all linears, PaCA and
/// upper-half PaCA — exactly.
#[test]
fn module_counts_equal_the_real_models() {
    // The 43 tiny CPU traces, and llama2-7b with every method on meta (423 modules full, 2665
    // with LoRA on all seven linears of 32 blocks, 647 with PaCA, 535 and 591 layer-selective).
    for dir in [
        "docs/results/traces/cpu",
        "docs/results/traces/meta-llama2-7b",
    ] {
        let cmps = load(dir);
        let counted: Vec<_> = cmps
            .iter()
            .filter_map(|c| c.nn_modules.map(|m| (c, m)))
            .collect();
        assert_eq!(
            counted.len(),
            cmps.len(),
            "every trace in {dir} records its structure"
        );
        for (c, m) in counted {
            assert_eq!(m.predicted, m.traced, "{}: nn.Modules", file_name(c));
        }
    }
}

/// What `host.module-call-us` and `host.peft-module-us` are fitted on (the traces' forward
/// `module_calls` and `adapter_calls`, counted by forward pre-hooks on every module) is what
/// costsim charges them on: the counts of its forward graph, exactly, for GPT-2 and Llama, every
/// method and precision, the micro host grids of both machines and llama2-7b on meta.
#[test]
fn forward_module_calls_equal_the_real_stacks() {
    for dir in [
        "docs/results/traces/cpu",
        "docs/results/traces/meta-llama2-7b",
        "docs/results/cpu/host/traces",
        "docs/results/gpu/host/traces",
    ] {
        let mut wrong = Vec::new();
        let cmps = load(dir);
        for c in &cmps {
            let calls = c.module_calls.expect("the trace counts module calls");
            let adapters = c.adapter_calls.expect("the trace counts adapter calls");
            if calls.predicted != calls.traced || adapters.predicted != adapters.traced {
                wrong.push(format!(
                    "{}: modules {} vs {}, adapters {} vs {}",
                    file_name(c),
                    calls.predicted,
                    calls.traced,
                    adapters.predicted,
                    adapters.traced
                ));
            }
        }
        assert!(wrong.is_empty(), "{dir}:\n{}", wrong.join("\n"));
    }
}

/// One committed trace, compared (on `hw` when given).
fn one(
    path: &str,
    hw: Option<&costsim_hardware::Profile>,
) -> (costsim_validate::trace::Trace, TraceComparison) {
    let f = root().join(path);
    let t = read_trace(&f).unwrap_or_else(|e| panic!("{path}: {e}"));
    let c = compare_trace(&t, path, hw).unwrap_or_else(|e| panic!("{path}: {e}"));
    (t, c)
}

/// The per-module tables add up to the phase totals computed apart from them: launches per
/// module (both sides) to each phase's launching ops in forward and backward (which run no
/// multi-tensor ops), saved bytes per module to the saved totals, bytes per part to the phase's.
#[test]
fn module_tables_add_up_to_the_phase_totals() {
    for path in [
        "docs/results/traces/cpu/gpt2-lora-all-d01-fp32.json",
        "docs/results/traces/cpu/llama-paca-bf16mixed.json",
        "docs/results/traces/cpu/gpt2-full-fp32.json",
    ] {
        let (t, c) = one(path, None);
        // Module rows list launching ops only, and never a multi-tensor op (in any phase).
        for m in &c.modules {
            assert!(
                !m.traced_ops.contains("×0") && !m.traced_ops.contains("_foreach_"),
                "{path} {} {}: {}",
                m.phase,
                m.module,
                m.traced_ops
            );
        }
        for p in &c.phases[..2] {
            let rows: Vec<_> = c.modules.iter().filter(|m| m.phase == p.phase).collect();
            assert!(rows.len() > 3, "{path} {}", p.phase);
            let pred: u64 = rows.iter().map(|m| m.predicted).sum();
            let traced: u64 = rows.iter().map(|m| m.traced).sum();
            assert_eq!(pred as f64, p.launches.predicted, "{path} {}", p.phase);
            assert_eq!(traced as f64, p.launches.traced, "{path} {}", p.phase);
            // Each row's op list counts its launches.
            for m in &rows {
                let count = |ops: &str| -> u64 {
                    ops.split_whitespace()
                        .map(|o| {
                            o.rsplit_once('×')
                                .expect("op×n")
                                .1
                                .parse::<u64>()
                                .expect("n")
                        })
                        .sum()
                };
                assert_eq!(count(&m.traced_ops), m.traced, "{path} {}", m.module);
                assert_eq!(count(&m.predicted_ops), m.predicted, "{path} {}", m.module);
            }
            let parts = costsim_validate::trace::bytes_parts(&c, p.phase).expect("bytes");
            assert!(!parts.is_empty());
            let read = p.bytes_read.expect("phase bytes");
            let sum = |f: fn(&costsim_validate::trace::BytesPart) -> (f64, f64)| {
                parts
                    .iter()
                    .map(f)
                    .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
            };
            let (pr, tr) = sum(|b| (b.read.predicted, b.read.traced));
            assert!(
                (pr - read.predicted).abs() <= 1e-6 * read.predicted,
                "{path}"
            );
            assert!((tr - read.traced).abs() <= 1e-6 * read.traced, "{path}");
        }
        // Saved bytes: costsim's rows add up to its activations, the trace's (activations only,
        // not parameters) to its saved total; the detail lists the trace's tensors by dtype.
        let pred: f64 = c.saved_modules.iter().map(|r| r.predicted).sum();
        let traced: f64 = c.saved_modules.iter().map(|r| r.traced).sum();
        assert!(
            (pred - c.saved_bytes.predicted).abs() <= 1e-6 * pred,
            "{path}: {pred}"
        );
        assert_eq!(traced, t.totals.saved_activation_bytes, "{path}");
        // The detail's tensor counts: the trace's saved activation tensors.
        let tensors: u64 = t.saved.iter().filter(|r| !r.param).map(|r| r.tensors).sum();
        let listed: u64 = c
            .saved_modules
            .iter()
            .filter(|r| r.traced > 0.0)
            .flat_map(|r| {
                r.traced_detail
                    .split(", ")
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .map(|d| {
                d.split_once('×')
                    .expect("n×dtype")
                    .0
                    .parse::<u64>()
                    .expect("n")
            })
            .sum();
        assert_eq!(listed, tensors, "{path}");
        for r in c.saved_modules.iter().filter(|r| r.traced > 0.0) {
            let bytes: f64 = r
                .traced_detail
                .split(", ")
                .map(|d| {
                    d.trim_end_matches(" B")
                        .rsplit_once(' ')
                        .expect("dtype B")
                        .1
                        .parse::<f64>()
                        .expect("B")
                })
                .sum();
            assert_eq!(bytes, r.traced, "{path} {}", r.module);
        }
    }
}

/// A trace whose ops lack their bytes written (one op suffices) compares no bytes at all,
/// rather than sums with holes.
#[test]
fn bytes_are_compared_only_when_every_op_has_them() {
    let src = root().join("docs/results/traces/cpu/gpt2-lora-all-fp32.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&src).expect("trace")).expect("JSON");
    let ops = v["ops"].as_array_mut().expect("ops");
    assert!(ops.iter().all(|o| o.get("written_bytes").is_some()));
    ops[0].as_object_mut().expect("op").remove("written_bytes");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-written.json");
    std::fs::write(&path, v.to_string()).expect("write");
    let t = read_trace(&path).expect("trace");
    let c = compare_trace(&t, "no-written", None).expect("compare");
    assert!(c
        .modules
        .iter()
        .all(|m| m.bytes_read.is_none() && m.bytes_written.is_none()));
    assert!(c.phases.iter().all(|p| p.bytes_read.is_none()));
    assert!(costsim_validate::trace::bytes_parts(&c, "forward").is_none());
}

/// Timed and profiled traces compared on a profile: each phase's kernel count is the
/// prediction's, its traced time the record's median in ms; the per-class times add up to
/// costsim's kernel times and to the profiler's device times of the phase, and dropout is a
/// class of its own.
#[test]
fn times_and_kernel_classes_add_up() {
    let h200 = costsim_hardware::resolve_device("h200").expect("h200");
    // The committed profiles predate per-op device times: give each op 1.5 µs a call.
    let src = root().join("docs/results/gpu/traces/gpt2-tiny-lora-d01-bf16mixed.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&src).expect("trace")).expect("JSON");
    for ph in v["cuda_kernels"]
        .as_object_mut()
        .expect("profiled")
        .values_mut()
    {
        for op in ph["by_op"].as_object_mut().expect("by_op").values_mut() {
            let calls = op["calls"].as_f64().expect("calls");
            op["device_us"] = serde_json::json!(1.5 * calls);
        }
    }
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("timed-profile.json");
    std::fs::write(&path, v.to_string()).expect("write");
    let t = read_trace(&path).expect("trace");
    let c = compare_trace(&t, "timed-profile", Some(&h200)).expect("compare");
    let cfg = costsim_validate::trace::config_of(&t, "t", Some(&h200)).expect("config");
    let p = costsim_model::predict::predict(
        &cfg,
        costsim_model::predict::Detail {
            per_layer: false,
            kernels: true,
        },
        None,
    );
    for (pc, pr) in c.phases.iter().zip(&p.phases) {
        assert_eq!(pc.kernels, pr.launches, "{}", pc.phase);
    }
    let prof = t.cuda_kernels.as_ref().expect("profiled");
    assert!(!c.kinds.is_empty());
    for (phase, name) in [
        (costsim_model::graph::Phase::Forward, "forward"),
        (costsim_model::graph::Phase::Backward, "backward"),
    ] {
        let kinds: Vec<_> = c.kinds.iter().filter(|k| k.phase == name).collect();
        let pred: f64 = kinds.iter().map(|k| k.time_ms.predicted).sum();
        let want: f64 = p
            .kernel_rows
            .iter()
            .flatten()
            .filter(|k| k.phase == phase)
            .map(|k| k.device_us / 1e3)
            .sum();
        assert!(
            (pred - want).abs() <= 1e-9 * want,
            "{name}: {pred} vs {want}"
        );
        let traced: f64 = kinds.iter().map(|k| k.time_ms.traced).sum();
        let by_op: f64 = prof[name]
            .by_op
            .values()
            .filter_map(|o| o.device_us)
            .sum::<f64>()
            / 1e3;
        assert!(
            (traced - by_op).abs() <= 1e-9 * by_op,
            "{name}: {traced} vs {by_op}"
        );
        let calls: u64 = kinds.iter().map(|k| k.traced_ops).sum();
        let want_calls: u64 = prof[name]
            .by_op
            .values()
            .filter(|o| o.device_us.is_some())
            .map(|o| o.calls)
            .sum();
        assert_eq!(calls, want_calls, "{name}");
    }
    let class = |kind: &str| {
        c.kinds
            .iter()
            .find(|k| k.phase == "forward" && k.kind == kind)
    };
    assert!(class("dropout").expect("dropout").time_ms.predicted > 0.0);
    assert!(class("elementwise").expect("elementwise").time_ms.predicted > 0.0);
    // A timed trace's phase times: its medians in ms.
    let h = costsim_hardware::resolve_device("h200").expect("h200");
    let (t, c) = one(
        "docs/results/gpu/traces/tinyllama-lora-b4s512-bf16mixed.json",
        Some(&h),
    );
    let tm = t.timings.as_ref().expect("timed");
    for (pc, s) in c.phases.iter().zip([
        tm.forward.median_s,
        tm.backward.median_s,
        tm.optimizer.median_s,
    ]) {
        assert_eq!(pc.time_ms.expect("timed").traced, s * 1e3, "{}", pc.phase);
    }
    // Without a profile, no times.
    let (_, c) = one(
        "docs/results/gpu/traces/tinyllama-lora-b4s512-bf16mixed.json",
        None,
    );
    assert!(c.phases.iter().all(|p| p.time_ms.is_none()) && c.kinds.is_empty());
}

/// A trace's own rank, alpha and clipping set the configuration (the committed traces use
/// the defaults, which hide a rank or alpha dropped on the way).
#[test]
fn a_traces_rank_alpha_and_clipping_are_its_own() {
    let f = root().join("docs/results/traces/cpu/gpt2-lora-all-fp32.json");
    let mut t = read_trace(&f).expect("trace");
    t.method.rank = 4;
    t.method.alpha = 8.0;
    t.workload.clip_grad_norm = 0.0;
    let cfg = costsim_validate::trace::config_of(&t, "t", None).expect("config");
    assert_eq!(cfg.method.rank, 4);
    assert_eq!(cfg.method.alpha, 8.0);
    assert!(!cfg.workload.grad_clip);
    t.workload.clip_grad_norm = 1.0;
    assert!(
        costsim_validate::trace::config_of(&t, "t", None)
            .expect("config")
            .workload
            .grad_clip
    );
    // A LoRA trace without its rank or alpha (0, negative, NaN) is refused, naming the trace
    // and the key: the tracer always records what it ran, and a default would hide a value
    // dropped on the way.
    let refused = |t: &costsim_validate::trace::Trace| {
        costsim_validate::trace::config_of(t, "t.json", None)
            .expect_err("refused")
            .to_string()
    };
    t.method.rank = 0;
    let e = refused(&t);
    assert!(
        e.contains("t.json: method.rank") && e.contains("0 for lora"),
        "{e}"
    );
    t.method.rank = 4;
    for alpha in [0.0, -3.0, f64::NAN] {
        t.method.alpha = alpha;
        let e = refused(&t);
        assert!(e.contains("t.json: method.alpha"), "{alpha}: {e}");
    }
    // Full fine-tuning has neither (the tracer writes 0 for both).
    let f = root().join("docs/results/traces/cpu/gpt2-full-fp32.json");
    let full = read_trace(&f).expect("trace");
    assert_eq!((full.method.rank, full.method.alpha), (0, 0.0));
    costsim_validate::trace::config_of(&full, "t", None).expect("full needs no rank");
    // The model's and workload's own errors name the trace too.
    let mut big = full.clone();
    big.workload.batch = 0;
    let e = refused(&big);
    assert!(e.contains("t.json") && e.contains("batch"), "{e}");
    let mut opt = full;
    opt.workload.optimizer = "adam".into();
    let e = refused(&opt);
    assert!(
        e.contains("t.json: optimizer") && e.contains("'adam'"),
        "{e}"
    );
}
