//! Tests of rescale.rs: rescaled graphs against fresh builds, the fit's refusals, guard sides
//! and transient chains, kept costs.

use super::*;
use crate::arch::{preset, PRESETS};
use crate::graph::{build, rebuild_optimizer};
use crate::method::{MethodName, MethodOptions, MethodSpec};
use crate::workload::{AttentionImpl, Precision, Workload};

fn spec(model: &crate::arch::ModelConfig, method: MethodName, r: u64) -> MethodSpec {
    let opts = MethodOptions {
        rank: Some(r),
        ..MethodOptions::default()
    };
    MethodSpec::resolve(method, &opts, model, true).unwrap()
}

/// The workloads the template tests build at: the default (bf16-mixed, SDPA), fp32 with two
/// micro-batches, fp16-mixed with eager attention and checkpointing.
fn three_workloads() -> [Workload; 3] {
    [
        Workload::default(),
        Workload {
            precision: Precision::Fp32,
            batch: 2,
            seq: 96,
            grad_accum: 2,
            ..Workload::default()
        },
        Workload {
            precision: Precision::Fp16Mixed,
            attention: AttentionImpl::Eager,
            grad_checkpointing: true,
            batch: 1,
            seq: 48,
            ..Workload::default()
        },
    ]
}

/// Rescaled graphs equal fresh builds, every field, over every preset, every method with a
/// rank, several precisions and workloads, at ranks below, between and above the probes.
#[test]
fn rescaled_graphs_equal_fresh_builds() {
    let workloads = three_workloads();
    let (mut fitted, mut applied, mut refused) = (0, 0, 0);
    for p in PRESETS {
        let model = preset(p.name).unwrap();
        for method in MethodName::ALL {
            if method == MethodName::Full {
                continue;
            }
            for w in &workloads {
                let probes = [5u64, 9, 7];
                let gs = probes.map(|r| {
                    let sp = spec(&model, method, r);
                    (sp.rank, build(&model, &sp, w))
                });
                let Some(mut fit) = RankFit::new(gs) else {
                    continue;
                };
                fitted += 1;
                for r in [1u64, 2, 6, 8, 16, 33, 64, 100, 190] {
                    let opts = MethodOptions {
                        rank: Some(r),
                        ..MethodOptions::default()
                    };
                    // Past a layer's width the rank is refused before any graph.
                    let Ok(sp) = MethodSpec::resolve(method, &opts, &model, true) else {
                        continue;
                    };
                    let want = build(&model, &sp, w);
                    match fit.apply(sp.rank) {
                        Some(g) => {
                            applied += 1;
                            rebuild_optimizer(&model, &sp, w, g);
                            assert!(
                                *g == want,
                                "{} {method} r {r} {w:?}: rescaled graph differs",
                                p.name
                            );
                        }
                        // Refused (a guard flips, e.g. PaCA's gather at K/16 columns):
                        // the caller builds in full.
                        None => {
                            assert_ne!(method, MethodName::Lora, "{} r {r}", p.name);
                            refused += 1;
                        }
                    }
                }
            }
        }
    }
    // Every combination fits (none needs the full path for its probes). Every LoRA point
    // rescales; PaCA's are refused past a guard: its gather reads min(K, 16·r) columns'
    // sectors (8·r in fp32), and the largest transient becomes P's n·r copy at large r.
    assert_eq!(fitted, PRESETS.len() * 4 * workloads.len());
    assert!(
        applied > 2 * refused,
        "{applied} rescaled, {refused} refused"
    );
}

#[test]
fn a_guard_that_flips_refuses_the_point() {
    // gpt2 PaCA in bf16: the gather reads min(K, 16·r) columns' sectors; K = 768, so
    // r ≥ 48 leaves the probes' side of the guard.
    let model = preset("gpt2").unwrap();
    let w = Workload::default();
    let gs = [4u64, 8, 12].map(|r| {
        let sp = spec(&model, MethodName::Paca, r);
        (sp.rank, build(&model, &sp, &w))
    });
    // Probes on both sides of it do not fit, whichever probe crosses (PaCA ranks given
    // directly, not as LoRA's reference rank).
    let probe = |r: u64| {
        let opts = MethodOptions {
            rank: Some(r),
            ..MethodOptions::default()
        };
        let sp = MethodSpec::resolve(MethodName::Paca, &opts, &model, false).unwrap();
        assert_eq!(sp.rank, r);
        (r, build(&model, &sp, &w))
    };
    assert!(RankFit::new([40, 44, 49].map(probe)).is_none());
    assert!(RankFit::new([40, 49, 44].map(probe)).is_none());
    assert!(RankFit::new([40, 44, 46].map(probe)).is_some());
    // At r = 48 the min's operands tie: 768 either way, so the tie fits with probes on
    // either side of it, and a fit from either side rescales to it exactly.
    let sp = |r: u64| {
        let opts = MethodOptions {
            rank: Some(r),
            ..MethodOptions::default()
        };
        MethodSpec::resolve(MethodName::Paca, &opts, &model, false).unwrap()
    };
    let fresh = |r: u64| build(&model, &sp(r), &w);
    for probes in [[40, 44, 48], [48, 52, 56], [44, 48, 52]] {
        let fit = RankFit::new(probes.map(probe));
        assert_eq!(fit.is_some(), probes != [44, 48, 52], "{probes:?}");
    }
    for (probes, far) in [([40, 44, 46], 49), ([52, 56, 60], 47)] {
        let mut fit = RankFit::new(probes.map(probe)).unwrap();
        let g = fit.apply(48).expect("the tie rescales");
        rebuild_optimizer(&model, &sp(48), &w, g);
        assert!(*g == fresh(48), "{probes:?} at 48");
        assert!(fit.apply(far).is_none(), "{probes:?} at {far}");
    }
    let mut fit = RankFit::new(gs).unwrap();
    assert!(fit.patches() > 0);
    assert!(fit.apply(40).is_some());
    assert!(fit.apply(47).is_some());
    assert!(fit.apply(48).is_some());
    assert!(fit.apply(49).is_none());
    assert!(fit.apply(200).is_none());
    // Back on the probes' side it applies again.
    assert!(fit.apply(10).is_some());
}

#[test]
fn a_transient_chain_is_recomputed_where_its_largest_size_changes() {
    // gpt2 PaCA at 1 × 16 in fp32: from r = 17 on another tensor is the largest transient
    // (LoRA's transients do not change with the rank), so `transient_bytes` stops being
    // affine. The chain is recomputed there: rows-only and full rescaling match fresh
    // builds on both sides.
    let model = preset("gpt2").unwrap();
    let w = Workload {
        precision: Precision::Fp32,
        batch: 1,
        seq: 16,
        ..Workload::default()
    };
    let (mut crossed, mut chained) = (0, 0);
    for method in [MethodName::Lora, MethodName::Paca] {
        let sp = |r: u64| {
            let opts = MethodOptions {
                rank: Some(r),
                ..MethodOptions::default()
            };
            MethodSpec::resolve(method, &opts, &model, false).unwrap()
        };
        let fresh = |r: u64| build(&model, &sp(r), &w);
        let mut fit = RankFit::new([2u64, 3, 4].map(|r| (r, fresh(r)))).unwrap();
        chained += fit.chains.len();
        let line = |g: &StepGraph| scopes(g).map(|s| s.transient_bytes).collect::<Vec<_>>();
        let (t2, t3) = (line(&fresh(2)), line(&fresh(3)));
        for r in [8u64, 16, 17, 24, 40, 47, 60, 90] {
            let want = fresh(r);
            let Some(g) = fit.apply(r) else {
                continue;
            };
            rebuild_optimizer(&model, &sp(r), &w, g);
            assert!(*g == want, "{method} at {r}");
            let lean = fit.apply_for_rows(r).expect("as apply");
            assert_eq!(line(lean), line(&want), "{method} rows at {r}");
            // Off the line through ranks 2 and 3: the largest transient changed.
            let on_line = line(&want)
                .iter()
                .zip(t2.iter().zip(&t3))
                .all(|(t, (a, b))| *t == a + (b - a) * (r as f64 - 2.0));
            crossed += usize::from(!on_line);
        }
    }
    assert!(
        chained > 0 && crossed > 0,
        "{chained} chains, {crossed} crossed"
    );
}

#[test]
fn a_broken_transient_chain_is_refused() {
    let (probes, _) = gpt2_lora_probes();
    assert!(probes.iter().all(|(_, g)| scopes(g).all(chain_holds)));
    let mut broken = probes.clone();
    let s = &mut broken[1].1.layer_graphs[0];
    let i = s
        .guards
        .iter()
        .position(|g| g.2 == GuardKind::Transient)
        .unwrap();
    s.guards[i].0 += 1.0;
    assert!(!chain_holds(s));
    assert!(RankFit::new(broken).is_none());
    let mut broken = probes.clone();
    broken[2].1.layer_graphs[0].transient_bytes += 1.0;
    assert!(RankFit::new(broken).is_none());
    assert!(RankFit::new(probes).is_some());
}

#[test]
fn guard_sides_by_kind() {
    use Ordering::{Equal, Greater, Less};
    // A tie of `a < b` is "not less"; a max's or min's is its own side.
    assert_eq!(side(GuardKind::Less, 2.0, 2.0), Some(Greater));
    assert_eq!(side(GuardKind::Less, 1.0, 2.0), Some(Less));
    assert_eq!(side(GuardKind::Extremum, 2.0, 2.0), Some(Equal));
    assert_eq!(side(GuardKind::Extremum, 3.0, 2.0), Some(Greater));
    assert_eq!(side(GuardKind::Extremum, f64::NAN, 2.0), None);
    // A max's tie goes with either side; a fitted tie admits only a tie.
    assert!(same_way(GuardKind::Extremum, Less, Equal));
    assert!(same_way(GuardKind::Extremum, Greater, Equal));
    assert!(!same_way(GuardKind::Extremum, Less, Greater));
    assert!(!same_way(GuardKind::Extremum, Equal, Less));
    assert!(!same_way(GuardKind::Less, Greater, Less));
    assert!(same_way(GuardKind::Less, Greater, Greater));
    // Three probes: ties set aside; two sides, a NaN or a kind that differs refuse.
    let scope = |a: f64, b: f64, kind| ScopeGraph {
        guards: vec![(a, b, kind)],
        ..ScopeGraph::default()
    };
    let e = GuardKind::Extremum;
    let side3 = |v: [(f64, f64); 3], kinds: [GuardKind; 3]| {
        let s = [0, 1, 2].map(|i| scope(v[i].0, v[i].1, kinds[i]));
        probes_side(&[&s[0], &s[1], &s[2]], 0)
    };
    assert_eq!(
        side3([(2.0, 2.0), (3.0, 2.0), (4.0, 2.0)], [e; 3]),
        Some(Greater)
    );
    assert_eq!(
        side3([(1.0, 2.0), (2.0, 2.0), (0.0, 2.0)], [e; 3]),
        Some(Less)
    );
    assert_eq!(side3([(2.0, 2.0); 3], [e; 3]), Some(Equal));
    assert_eq!(side3([(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)], [e; 3]), None);
    assert_eq!(
        side3([(1.0, 2.0), (f64::NAN, 2.0), (1.0, 2.0)], [e; 3]),
        None
    );
    let l = GuardKind::Less;
    assert_eq!(
        side3([(2.0, 2.0), (3.0, 2.0), (4.0, 2.0)], [l; 3]),
        Some(Greater)
    );
    assert_eq!(side3([(1.0, 2.0), (2.0, 2.0), (0.0, 2.0)], [l; 3]), None);
    assert_eq!(side3([(3.0, 2.0); 3], [e, l, e]), None);
}

#[test]
fn probes_that_differ_in_structure_do_not_fit() {
    let model = preset("gpt2").unwrap();
    let w = Workload::default();
    let a = build(&model, &spec(&model, MethodName::Lora, 4), &w);
    let b = build(&model, &spec(&model, MethodName::Lora, 8), &w);
    let other = Workload {
        precision: Precision::Fp32,
        ..Workload::default()
    };
    let c = build(&model, &spec(&model, MethodName::Lora, 12), &other);
    assert!(RankFit::new([(4, a.clone()), (8, b.clone()), (12, c)]).is_none());
    // A count of nn.Modules that differs (the training loop's host work walks them) is
    // not a number the fit rescales: refused.
    let mut d = b.clone();
    d.nn_modules += 1;
    assert!(RankFit::new([(4, a.clone()), (8, b.clone()), (12, d)]).is_none());
    assert!(RankFit::new([
        (4, a.clone()),
        (8, b.clone()),
        (12, build(&model, &spec(&model, MethodName::Lora, 12), &w))
    ])
    .is_some());
    // The same rank twice cannot fix a slope.
    assert!(RankFit::new([(4, a.clone()), (4, a), (8, b)]).is_none());
}

/// Three LoRA probes of gpt2 (ranks 4, 8, 12) and the graph at rank 16.
fn gpt2_lora_probes() -> ([(u64, StepGraph); 3], StepGraph) {
    let model = preset("gpt2").unwrap();
    let w = Workload::default();
    let g = |r| build(&model, &spec(&model, MethodName::Lora, r), &w);
    ([(4, g(4)), (8, g(8)), (12, g(12))], g(16))
}

/// Changed kernels share a cost only with an earlier one equal in every cost input at all
/// three probes: each representative comes first, is its own, and has the same costs on
/// every built-in device at the probes' ranks; and LoRA's equal adapters do share.
#[test]
fn changed_kernels_share_costs_only_with_equal_ones() {
    let (probes, _) = gpt2_lora_probes();
    let graphs = probes.clone().map(|(_, g)| g);
    let fit = RankFit::new(probes).unwrap();
    let c = fit.changed();
    let reps = c.iter().enumerate().filter(|(j, c)| c.rep as usize == *j);
    let distinct = reps.count();
    assert!(distinct < c.len(), "{distinct} of {}", c.len());
    let hws = costsim_hardware::builtin_profiles().unwrap();
    for (j, x) in c.iter().enumerate() {
        let r = &c[x.rep as usize];
        assert!(x.rep as usize <= j);
        assert_eq!(c[r.rep as usize], *r, "a representative is its own");
        for g in &graphs {
            let (a, b) = (
                kernel_at(g, (x.scope, x.seg, x.idx)),
                kernel_at(g, (r.scope, r.seg, r.idx)),
            );
            assert!(same_cost_inputs(a, b));
            for hw in &hws {
                let cost = |k| crate::cost::kernel_cost(k, hw, false).device_s;
                assert_eq!(cost(a), cost(b), "{} on {}", a.name, hw.name);
            }
        }
        // An earlier changed kernel with equal cost inputs at every probe is taken.
        let first = (0..j).find(|&i| {
            let y = &c[i];
            graphs.iter().all(|g| {
                same_cost_inputs(
                    kernel_at(g, (x.scope, x.seg, x.idx)),
                    kernel_at(g, (y.scope, y.seg, y.idx)),
                )
            })
        });
        assert_eq!(c[first.unwrap_or(j)].rep, x.rep);
    }
}

/// A changed kernel with an earlier representative takes that one's fresh cost instead of
/// its own; one that is its own representative is costed. (The pair here is deliberately
/// unequal, so the two ways give different costs.)
#[test]
fn a_changed_kernel_copies_its_representatives_cost() {
    let (probes, _) = gpt2_lora_probes();
    let g = probes[0].1.clone();
    let ks = &g.layer_graphs[0].forward.kernels;
    let gemms: Vec<u32> = (0..ks.len() as u32)
        .filter(|&i| ks[i as usize].gemm.is_some())
        .collect();
    let (a, b) = (gemms[0], *gemms.last().unwrap());
    let hw = costsim_hardware::resolve_device("h200").unwrap();
    let w = Workload::default();
    let cost = |i: u32| crate::cost::kernel_cost(&ks[i as usize], &hw, false).device_s;
    assert_ne!(cost(a), cost(b));
    for (rep_b, want) in [(0, cost(a)), (1, cost(b))] {
        let mut memo = GemmMemo::default();
        let mut slot = None;
        cost_kept(&g, &[], &mut slot, &w, &hw, &mut memo, &mut None);
        let changed = [
            Changed::own(1, 0, a, 0),
            Changed {
                scope: 1,
                seg: 0,
                idx: b,
                rep: rep_b,
            },
        ];
        cost_kept(&g, &changed, &mut slot, &w, &hw, &mut memo, &mut None);
        let tc = slot.as_ref().unwrap();
        assert_eq!(tc.segment(3)[b as usize].1.device_s, want, "rep {rep_b}");
        assert_eq!(tc.segment(3)[a as usize].1.device_s, cost(a));
    }
}

/// `same_cost_inputs` compares every field `kernel_cost_memo` reads, and no other.
#[test]
fn cost_inputs_are_the_fields_the_cost_reads() {
    let (probes, _) = gpt2_lora_probes();
    let base = probes[0].1.layer_graphs[0]
        .backward
        .kernels
        .iter()
        .find(|k| k.piece == "lora_B" && k.gemm.is_some())
        .unwrap()
        .clone();
    type Edit = fn(&mut Kernel);
    let cost_fields: [(&str, Edit); 10] = [
        ("name", |k| k.name = "other"),
        ("piece", |k| k.piece = "other"),
        ("kind", |k| k.kind = crate::graph::KernelKind::Reduction),
        ("dtype", |k| k.dtype = crate::workload::DType::I64),
        ("math", |k| k.math = costsim_hardware::MathMode::Tf32),
        ("launches", |k| k.launches += 1),
        ("flops", |k| k.flops += 1.0),
        ("bytes_read", |k| k.bytes_read += 1.0),
        ("bytes_written", |k| k.bytes_written += 1.0),
        ("gemm", |k| k.gemm.as_mut().unwrap().k += 1),
    ];
    for (what, edit) in cost_fields {
        let mut k = base.clone();
        edit(&mut k);
        assert!(!same_cost_inputs(&base, &k), "{what}");
    }
    let other_fields: [Edit; 6] = [
        |k| k.module = "other",
        |k| k.deps.push(0),
        |k| k.module_calls += 1,
        |k| k.peft_calls += 1,
        |k| k.host_tensors += 1,
        |k| k.recompute ^= true,
    ];
    let hws = costsim_hardware::builtin_profiles().unwrap();
    for edit in other_fields {
        let mut k = base.clone();
        edit(&mut k);
        assert!(same_cost_inputs(&base, &k));
        for hw in &hws {
            let cost = |k| crate::cost::kernel_cost(k, hw, false);
            assert_eq!(cost(&base).device_s, cost(&k).device_s);
            assert_eq!(cost(&base).bound, cost(&k).bound);
        }
    }
}

/// Every field the fit does not rescale is compared: a third probe that differs from the
/// others in that one field alone is refused. A kernel deep in a layer's backward (one of
/// LoRA's, whose numbers do change with the rank) carries the change.
#[test]
fn a_probe_differing_in_any_one_structural_field_is_refused() {
    let (probes, _) = gpt2_lora_probes();
    assert!(RankFit::new(probes.clone()).is_some());
    fn layer(g: &mut StepGraph) -> &mut ScopeGraph {
        &mut g.layer_graphs[0]
    }
    fn kernel(g: &mut StepGraph) -> &mut Kernel {
        let ks = &mut g.layer_graphs[0].backward.kernels;
        let i = ks
            .iter()
            .position(|k| k.piece == "lora_B")
            .expect("a lora_B kernel");
        &mut ks[i]
    }
    type Edit = Box<dyn Fn(&mut StepGraph)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("name", Box::new(|g| kernel(g).name = "other")),
        ("module", Box::new(|g| kernel(g).module = "other")),
        ("piece", Box::new(|g| kernel(g).piece = "other")),
        (
            "kind",
            Box::new(|g| kernel(g).kind = crate::graph::KernelKind::Reduction),
        ),
        (
            "dtype",
            Box::new(|g| kernel(g).dtype = crate::workload::DType::I64),
        ),
        (
            "math",
            Box::new(|g| kernel(g).math = costsim_hardware::MathMode::Tf32),
        ),
        ("launches", Box::new(|g| kernel(g).launches += 1)),
        ("gemm", Box::new(|g| kernel(g).gemm = None)),
        ("deps", Box::new(|g| kernel(g).deps.push(0))),
        ("module_calls", Box::new(|g| kernel(g).module_calls += 1)),
        ("peft_calls", Box::new(|g| kernel(g).peft_calls += 1)),
        ("host_tensors", Box::new(|g| kernel(g).host_tensors += 1)),
        ("recompute", Box::new(|g| kernel(g).recompute ^= true)),
        ("output_rg", Box::new(|g| layer(g).output_rg ^= true)),
        (
            "guards",
            Box::new(|g| layer(g).guards.push((1.0, 2.0, GuardKind::Less))),
        ),
        (
            "saved_by_module names",
            Box::new(|g| layer(g).saved_by_module[0].0 = "other"),
        ),
        (
            "saved_by_module count",
            Box::new(|g| layer(g).saved_by_module.push(("other", 1.0))),
        ),
        (
            "kernel count",
            Box::new(|g| {
                let k = kernel(g).clone();
                layer(g).forward.kernels.push(k)
            }),
        ),
        (
            "family",
            Box::new(|g| g.family = crate::arch::Family::Llama),
        ),
        (
            "layer count",
            Box::new(|g| g.layer_graphs.push(g.layer_graphs[0].clone())),
        ),
        ("layer classes", Box::new(|g| g.layer_class[0] += 1)),
    ];
    for (what, edit) in edits {
        for at in [1, 2] {
            let mut p = probes.clone();
            edit(&mut p[at].1);
            assert!(
                RankFit::new(p).is_none(),
                "{what} differs in probe {at}, yet fitted"
            );
        }
    }
}

/// `from_probes` fits the sweep's sliding probes: on success it takes them (the first
/// becomes the working copy), on refusal it leaves them for the next try; and the patched
/// numbers are exactly those that differ between two probes (here every kernel number and
/// scope number of gpt2 LoRA that moves with the rank).
#[test]
fn from_probes_takes_the_probes_only_when_it_fits() {
    let (probes, at16) = gpt2_lora_probes();
    let mut refused = probes.to_vec();
    refused[2].1.family = crate::arch::Family::Llama;
    assert!(RankFit::from_probes(&mut refused).is_none());
    assert_eq!(refused.len(), 3);
    assert!(RankFit::from_probes(&mut refused[..2].to_vec()).is_none());
    let mut fits = probes.to_vec();
    let mut fit = RankFit::from_probes(&mut fits).expect("fits");
    assert!(fits.is_empty());
    // Count the numbers that differ between the probes at ranks 4 and 8.
    let (a, b) = (&probes[0].1, &probes[1].1);
    let mut moving = 0;
    for (x, y) in scopes(a).zip(scopes(b)) {
        for (sx, sy) in segments(x).into_iter().zip(segments(y)) {
            for (kx, ky) in sx.kernels.iter().zip(&sy.kernels) {
                let nums = |k: &Kernel| {
                    let g = k.gemm.map_or([0; 4], |g| [g.m, g.n, g.k, g.batch]);
                    [
                        k.flops,
                        k.bytes_read,
                        k.bytes_written,
                        g[0] as f64,
                        g[1] as f64,
                        g[2] as f64,
                        g[3] as f64,
                    ]
                };
                moving += nums(kx)
                    .iter()
                    .zip(nums(ky))
                    .filter(|(p, q)| **p != *q)
                    .count();
            }
        }
        let scope_nums = |s: &ScopeGraph| {
            let mut v = vec![
                s.saved_bytes,
                s.checkpoint_bytes,
                s.trainable as f64,
                s.backward_working_bytes,
                s.transient_bytes,
            ];
            v.extend(s.saved_by_module.iter().map(|m| m.1));
            v.extend(s.guards.iter().flat_map(|g| [g.0, g.1]));
            v
        };
        moving += scope_nums(x)
            .iter()
            .zip(scope_nums(y))
            .filter(|(p, q)| **p != *q)
            .count();
    }
    assert!(moving > 0);
    assert_eq!(fit.patches(), moving);
    let mut g = fit
        .apply(16)
        .expect("rank 16 is on the probes' side")
        .clone();
    let gpt2 = preset("gpt2").unwrap();
    rebuild_optimizer(
        &gpt2,
        &spec(&gpt2, MethodName::Lora, 16),
        &Workload::default(),
        &mut g,
    );
    assert_eq!(g, at16);
}

/// A sweep's rows rewrite the scope numbers (but the saved bytes by module, which no row reads,
/// and the guards' operands, checked for the whole line at once) and the representatives'
/// kernel numbers only (a GEMM's but its FLOPs), in their copies apart from the graph (whose
/// representatives keep rank 4's): at rank 16 those equal a fresh build's, while another changed kernel,
/// the per-module breakdown and the guards keep their rank-4 numbers; costed from that graph,
/// every changed kernel takes its representative's cost, the same costs as the fully
/// rewritten graph's.
#[test]
fn rows_rewrite_only_the_representatives() {
    let (probes, at16) = gpt2_lora_probes();
    let at4 = probes[0].1.clone();
    let mut fit = RankFit::new(probes).unwrap();
    let scope_patches = fit.program.scope_ops.len();
    assert!(scope_patches > 0);
    let ops = |p: &Program| p.kernel_ops.len() + p.scope_ops.len();
    assert!(ops(&fit.row_program) < fit.patches());
    // Every scope number is a row's but the saved bytes by module (some of which change with
    // the rank) and the guards' numbers (operands and transient links' sizes); of the kernels',
    // only the representatives'.
    let count = |keep: fn(&SField) -> bool| {
        fit.program
            .scope_ops
            .iter()
            .filter(|(_, f)| keep(f))
            .count()
    };
    let by_module = count(|f| matches!(f, SField::SavedBy(_)));
    let operands = count(|f| matches!(f, SField::GuardA(_) | SField::GuardB(_)));
    let links: usize = fit.chains.iter().map(|c| c.sizes.len()).sum();
    assert!(by_module > 0 && operands > links && links > 0 && !fit.guards.is_empty());
    assert_eq!(
        fit.row_program.scope_ops.len(),
        scope_patches - by_module - operands
    );
    let changed = fit.changed().to_vec();
    // Graph replay with a graph floor apart from the launch floor (equal on every built-in
    // profile), so that a kernel costed with the wrong one shows.
    let mut hw = costsim_hardware::resolve_device("h200").unwrap();
    hw.graph_launch_floor_s = 0.5e-6;
    let w = Workload {
        runtime: Runtime::CudaGraph,
        ..Workload::default()
    };
    let cost = |fit: &RankFit, slot: &mut Option<TemplateCosts>, memo: &mut GemmMemo| {
        fit.costed(slot, &w, &hw, memo, &mut None);
    };
    let costs_of = |fit: &RankFit| {
        let mut slot = None;
        cost(fit, &mut slot, &mut GemmMemo::default());
        slot.expect("costed").costs
    };
    fit.apply_for_rows(16).expect("rank 16");
    let lean = costs_of(&fit);
    let (mut reps, mut gemms, mut copies) = (0, 0, 0);
    for (j, c) in changed.iter().enumerate() {
        let at = (c.scope, c.seg, c.idx);
        let mut k = kernel_at(fit.graph(), at);
        if c.rep as usize == j {
            reps += 1;
            // Read in its copy where rows rewrite it (`RankFit::reps`), the graph's keeping
            // rank 4's numbers; else in the graph.
            let st = fit.plan.steps[j];
            assert_eq!(st.from, Step::OWN);
            if let Some(copy) = fit.reps.get(st.row as usize) {
                assert_eq!(k, kernel_at(&at4, at), "{at:?}: the graph's keeps rank 4's");
                k = copy;
                copies += 1;
            }
            let want = kernel_at(&at16, at);
            if k.kind == crate::graph::KernelKind::Gemm && k.gemm.is_some() {
                // A GEMM's cost reads its shape, not its FLOPs: those keep rank 4's.
                let at4_flops = kernel_at(&at4, at).flops;
                assert_eq!(k.flops, at4_flops, "representative GEMM {at:?}");
                gemms += usize::from(want.flops != at4_flops);
                let with_flops = Kernel {
                    flops: want.flops,
                    ..k.clone()
                };
                assert_eq!(&with_flops, want, "representative {at:?}");
            } else {
                assert_eq!(k, want, "representative {at:?}");
            }
        } else {
            assert_eq!(k, kernel_at(&at4, at), "{at:?} keeps rank 4's numbers");
        }
    }
    assert!(reps < changed.len() && gemms > 0);
    assert!(copies > 0 && copies == fit.reps.len());
    let g = fit.graph();
    let (mut kept_by_module, mut kept_guards) = (0, 0);
    for (si, ((x, y), z)) in scopes(g).zip(scopes(&at16)).zip(scopes(&at4)).enumerate() {
        assert_eq!(
            (x.saved_bytes, x.trainable, x.transient_bytes),
            (y.saved_bytes, y.trainable, y.transient_bytes)
        );
        assert_eq!(x.saved_by_module, z.saved_by_module);
        kept_by_module += usize::from(x.saved_by_module != y.saved_by_module);
        // Neither guards' operands nor transient links are written: rank 4's numbers.
        assert_eq!(x.guards, z.guards, "scope {si}");
        kept_guards += x
            .guards
            .iter()
            .zip(&y.guards)
            .filter(|(a, b)| a != b)
            .count();
    }
    assert!(kept_by_module > 0 && kept_guards > links);
    fit.apply(16).expect("rank 16");
    assert_eq!(lean, costs_of(&fit));
    // Kept from rank 12 and re-costed at 16 (a later point of the line): the same costs.
    fit.apply_for_rows(12).expect("rank 12");
    let (mut slot, mut memo) = (None, GemmMemo::default());
    cost(&fit, &mut slot, &mut memo);
    fit.apply_for_rows(16).expect("rank 16");
    cost(&fit, &mut slot, &mut memo);
    let kept = slot.expect("costed");
    // A changed kernel that is not its own representative, in a segment folded in pieces, is
    // read through its representative (`segment_pieces`): its own place is not rewritten.
    let plan = Plan::new(fit.graph(), &changed);
    let in_pieces = |st: &Step| {
        let at = (st.scope * 3 + u32::from(st.seg)) as usize;
        kept.layout.piece_starts[at] < kept.layout.piece_starts[at + 1]
    };
    let skipped: Vec<&Step> = plan
        .steps
        .iter()
        .filter(|st| st.from != Step::OWN && in_pieces(st))
        .collect();
    assert!(!skipped.is_empty());
    assert_eq!(kept.layout.steps.len() + skipped.len(), plan.steps.len());
    for (i, (a, b)) in lean.iter().zip(&kept.costs).enumerate() {
        if !skipped.iter().any(|st| st.at as usize == i) {
            assert_eq!(a, b, "kernel {i}");
        }
    }
    for st in skipped {
        assert_eq!(kept.costs[st.from as usize].1, lean[st.at as usize].1);
    }
}

#[test]
fn affine_fits_by_hand() {
    let r = [4.0, 8.0, 12.0];
    // Unchanged (the same bits, even a fraction): nothing to rescale.
    assert_eq!(affine(r, [0.5, 0.5, 0.5]), Some(None));
    // 100 + 3·(r − 4).
    assert_eq!(affine(r, [100.0, 112.0, 124.0]), Some(Some((100.0, 3.0))));
    assert_eq!(affine(r, [100.0, 88.0, 76.0]), Some(Some((100.0, -3.0))));
    // Not on one line, a fraction that changes, a half-integer slope, beyond the exact range.
    assert_eq!(affine(r, [100.0, 112.0, 125.0]), None);
    // Two of three equal is not "unchanged".
    assert_eq!(affine(r, [100.0, 100.0, 124.0]), None);
    assert_eq!(affine(r, [100.0, 124.0, 100.0]), None);
    assert_eq!(affine(r, [100.5, 112.5, 124.5]), None);
    assert_eq!(affine(r, [100.0, 102.0, 104.0]), None);
    let big = LIMIT * 2.0;
    assert_eq!(affine(r, [big, big + 4.0, big + 8.0]), None);
    assert_eq!(
        affine(r, [LIMIT - 8.0, LIMIT - 4.0, LIMIT]),
        Some(Some((LIMIT - 8.0, 1.0)))
    );
}

/// Three ranks must be distinct, whichever two repeat.
#[test]
fn repeated_ranks_are_refused() {
    let (probes, _) = gpt2_lora_probes();
    let [a, b, c] = probes;
    // Each rank with its own graph: a repeated rank brings the same graph again, which
    // would fit any line through the other two.
    let g = |r: u64| if r == 4 { a.1.clone() } else { b.1.clone() };
    for rs in [[4, 4, 8], [4, 8, 4], [4, 8, 8]] {
        let p = rs.map(|r| (r, g(r)));
        assert!(RankFit::new(p).is_none(), "{rs:?}");
    }
    assert!(RankFit::new([a, b, c]).is_some());
}

#[test]
fn names_compare_by_content() {
    let owned = String::from("lora_A");
    assert!(same_str("lora_A", &owned));
    assert!(same_str("lora_A", "lora_A"));
    assert!(!same_str("lora_A", "lora_B"));
    assert!(!same_str("lora_A", "lora_A "));
}

/// Scope indices: 0 the embedding, 1..=n the layer classes, n + 1 the head, and
/// `cost_kept` recosting kernels named in any of them (even unchanged) gives the same costs
/// as costing the graph afresh.
#[test]
fn scopes_by_index_and_recosting_named_kernels() {
    let (probes, _) = gpt2_lora_probes();
    let mut g = probes[0].1.clone();
    let n = g.layer_graphs.len();
    assert!(std::ptr::eq(scope_ref(&g, 0), &g.embedding));
    assert!(std::ptr::eq(scope_ref(&g, 1), &g.layer_graphs[0]));
    assert!(std::ptr::eq(scope_ref(&g, n), &g.layer_graphs[n - 1]));
    assert!(std::ptr::eq(scope_ref(&g, n + 1), &g.head));
    let head: *const ScopeGraph = &g.head;
    assert!(std::ptr::eq(scope_mut(&mut g, n + 1), head));
    let emb: *const ScopeGraph = &g.embedding;
    assert!(std::ptr::eq(scope_mut(&mut g, 0), emb));
    let hw = costsim_hardware::resolve_device("h200").unwrap();
    let w = Workload::default();
    let mut memo = GemmMemo::default();
    let mut slot = None;
    cost_kept(&g, &[], &mut slot, &w, &hw, &mut memo, &mut None);
    let changed = [
        Changed::own(0, 0, 0, 0),
        Changed::own(1, 1, 0, 1),
        Changed::own((n + 1) as u32, 0, 0, 2),
    ];
    let kept = cost_kept(&g, &changed, &mut slot, &w, &hw, &mut memo, &mut None);
    let fresh = crate::simulate::cost_graph_memo(&g, &w, &hw, &mut memo, false);
    let sums = |c: &CostedGraph| {
        c.layers
            .iter()
            .chain([&c.embedding, &c.head])
            .flat_map(|s| s.iter().map(|s| s.totals))
            .collect::<Vec<_>>()
    };
    assert_eq!(sums(kept), sums(&fresh));
}

/// A later probe costed from the costs kept for the one before it, with only the kernels that
/// differ from it costed again (`differing`), gives the rows of costing it afresh; graphs of
/// another shape, or a differing kernel with another launch count, are refused.
#[test]
fn a_probe_is_costed_from_the_one_before_where_they_differ() {
    let (probes, _) = gpt2_lora_probes();
    let [(_, a), (_, b), _] = probes;
    assert_eq!(differing(&a, &a).map(|d| d.len()), Some(0));
    let diff = differing(&b, &a).expect("same shape");
    assert!(!diff.is_empty());
    let mut listed = 0;
    for (si, (x, y)) in scopes(&b).zip(scopes(&a)).enumerate() {
        for (seg, (s, t)) in segments(x).into_iter().zip(segments(y)).enumerate() {
            for (idx, (k, l)) in s.kernels.iter().zip(&t.kernels).enumerate() {
                let at = diff
                    .iter()
                    .position(|c| (c.scope, c.seg, c.idx) == (si as u32, seg as u8, idx as u32));
                assert_eq!(at.is_some(), k != l, "{si} {seg} {idx}");
                if let Some(j) = at {
                    assert_eq!(diff[j].rep as usize, j, "its own representative");
                    listed += 1;
                }
            }
        }
    }
    assert_eq!(listed, diff.len());
    let model = preset("gpt2").unwrap();
    let w = Workload::default();
    for device in ["h200", "cpu-generic"] {
        let hw = costsim_hardware::resolve_device(device).unwrap();
        let mut memo = GemmMemo::default();
        let mut slot = None;
        cost_kept(&a, &[], &mut slot, &w, &hw, &mut memo, &mut None);
        let kept = cost_kept(&b, &diff, &mut slot, &w, &hw, &mut memo, &mut None);
        let fresh = crate::simulate::cost_graph_memo(&b, &w, &hw, &mut memo, false);
        let method = spec(&model, MethodName::Lora, 8);
        let cfg = crate::predict::ConfigRef {
            model: &model,
            method: &method,
            workload: &w,
            hw: &hw,
        };
        let (kept, fresh) = (
            crate::predict::summarize_costed(cfg, &b, kept),
            crate::predict::summarize_costed(cfg, &b, &fresh),
        );
        assert!(
            kept.agrees_with(&fresh, 1e-12),
            "{device}: {kept:?} vs {fresh:?}"
        );
    }
    // A graph of another shape (full fine-tuning: no adapter kernels), and a differing kernel
    // launched a different number of times. (Another model of the same shape, gpt2-medium,
    // differs in every kernel's numbers: all of them are listed, which is as exact.)
    let other = build(&model, &spec(&model, MethodName::Full, 0), &w);
    assert!(differing(&other, &a).is_none());
    let medium = build(
        &preset("gpt2-medium").unwrap(),
        &spec(&model, MethodName::Lora, 8),
        &w,
    );
    let all = differing(&medium, &a).expect("the same shape");
    assert!(all.len() > 2 * diff.len());
    let mut c = b.clone();
    let k = &mut c.layer_graphs[0].forward.kernels[diff[0].idx as usize];
    assert_eq!(diff[0].seg, 0);
    k.launches += 1;
    assert!(differing(&c, &a).is_none());
    assert!(differing(&c, &b).is_none());
}

/// The forward segments of llama2-7b LoRA's two layer classes (the lowest trained layer and
/// the others) cost the same at every rank: the second copies the first's refilled times, and
/// a rescaled point's costed graph is bit for bit what refilling every segment gives.
#[test]
fn twin_segments_copy_equal_times() {
    let model = preset("llama2-7b").unwrap();
    let w = Workload {
        batch: 4,
        seq: 256,
        ..Workload::default()
    };
    let probes = [1u64, 2, 3].map(|r| {
        let sp = spec(&model, MethodName::Lora, r);
        (sp.rank, build(&model, &sp, &w))
    });
    // A GPU (closed form only) and a CPU (its launch list kept and copied too).
    for device in ["h200", "cpu"] {
        let hw = costsim_hardware::resolve_device(device).unwrap();
        let (mut slot, mut memo) = (None, GemmMemo::default());
        // As a sweep does: the first probe costed in full, its costs kept for the fitted graph.
        cost_kept(&probes[0].1, &[], &mut slot, &w, &hw, &mut memo, &mut None);
        assert!(slot.as_ref().unwrap().twins.iter().all(|t| *t == Step::OWN));
        let mut fit = RankFit::new(probes.clone()).unwrap();
        fit.costed(&mut slot, &w, &hw, &mut memo, &mut None);
        let tc = slot.as_ref().unwrap();
        let n = fit.graph().layer_graphs.len();
        assert_eq!(n, 2);
        // Segment 1·3 + 0 (class 0's forward) is the twin of 2·3 + 0 (class 1's forward).
        let twinned: Vec<(usize, u32)> = tc
            .twins
            .iter()
            .enumerate()
            .filter(|(_, t)| **t != Step::OWN)
            .map(|(at, t)| (at, *t))
            .collect();
        assert_eq!(twinned, vec![(6, 3)]);
        for r in [7u64, 40, 200] {
            fit.apply_for_rows(r).expect("rescaled");
            fit.costed(&mut slot, &w, &hw, &mut memo, &mut None);
            // Every segment folded on its own, from the same kept costs.
            let tc = slot.as_mut().unwrap();
            let mut checked = 0;
            for at in 0..tc.twins.len() {
                let seg = costed_segment(&mut tc.costed, n, at);
                let mut folded = seg.clone();
                // As the point folds its own segments: in stretches where it has them.
                let pieces = &tc.layout.pieces
                    [tc.layout.piece_starts[at] as usize..tc.layout.piece_starts[at + 1] as usize];
                if pieces.is_empty() {
                    folded.refill_times(segment_costs(&tc.costs, &tc.starts, at), hw.synchronous);
                } else {
                    folded.refill_pieces(pieces, &tc.costs, &tc.block_runs);
                }
                assert_eq!(
                    format!("{seg:?}"),
                    format!("{folded:?}"),
                    "{device}: rank {r}, segment {at}"
                );
                checked += 1;
            }
            assert_eq!(checked, 3 * (n + 2));
        }
    }
}

/// The rank fit of a line at sequence length `seq`, fitted from probes built at ranks 5, 9, 7.
fn line_fit(
    model: &crate::arch::ModelConfig,
    method: MethodName,
    w: &Workload,
    seq: u64,
) -> Option<RankFit> {
    let w = Workload { seq, ..w.clone() };
    RankFit::new([5u64, 9, 7].map(|r| {
        let sp = spec(model, method, r);
        (sp.rank, build(model, &sp, &w))
    }))
}

/// Rank templates derived for another sequence length equal the ones fitted there from probes,
/// part for part, and rescale to graphs equal to fresh builds, over every preset, every ranked
/// method and three workloads.
#[test]
fn derived_sequence_templates_equal_fitted_ones() {
    // Their sequence lengths are replaced by the lines' (`line_fit`).
    let workloads = three_workloads();
    let fitted_at = [32u64, 48, 80, 128];
    let (mut seq_fits, mut derived, mut refused) = (0, 0, 0);
    for p in PRESETS {
        let model = preset(p.name).unwrap();
        for method in MethodName::ALL {
            if method == MethodName::Full {
                continue;
            }
            for w in &workloads {
                let lines: Vec<(u64, RankFit)> = fitted_at
                    .iter()
                    .filter_map(|&s| Some((s, line_fit(&model, method, w, s)?)))
                    .collect();
                let refs: Vec<(u64, &RankFit)> = lines.iter().map(|(s, f)| (*s, f)).collect();
                let Some(sf) = SeqFit::new(&refs) else {
                    continue;
                };
                seq_fits += 1;
                assert_eq!(sf.r0(), lines[0].1.r0(), "{} {method}", p.name);
                // Past the lengths it evaluates (s² and a signed cast stay exact below them).
                assert!(sf.derive(seq::MAX_SEQ + 1).is_none());
                assert!(sf.derive(u64::MAX).is_none());
                for s in [16u64, 40, 64, 100, 256, 500, 1000] {
                    if s > model.max_positions {
                        continue;
                    }
                    let fresh = line_fit(&model, method, w, s);
                    let Some(mut got) = sf.derive(s) else {
                        refused += 1;
                        continue;
                    };
                    derived += 1;
                    let mut want = fresh.unwrap_or_else(|| {
                        panic!("{} {method} s {s} {w:?}: derived where no fit", p.name)
                    });
                    let what = format!("{} {method} s {s} {w:?}", p.name);
                    assert!(got.work == want.work, "{what}: graph at r0 differs");
                    let (a, b) = (got.patch_list(), want.patch_list());
                    assert_eq!(a.len(), b.len(), "{what}");
                    for (x, y) in a.iter().zip(&b) {
                        assert_eq!(x.loc, y.loc, "{what}");
                        assert_eq!(x.base.to_bits(), y.base.to_bits(), "{what} {:?}", x.loc);
                        assert_eq!(x.slope.to_bits(), y.slope.to_bits(), "{what} {:?}", x.loc);
                    }
                    let rows = |f: &RankFit| -> Vec<(Loc, u64, u64)> {
                        f.row_program
                            .numbers()
                            .map(|(loc, (b, s))| (loc, b.to_bits(), s.to_bits()))
                            .collect()
                    };
                    assert_eq!(rows(&got), rows(&want), "{what}");
                    assert_eq!(got.changed, want.changed, "{what}");
                    assert_eq!(got.guards.len(), want.guards.len(), "{what}");
                    for (x, y) in got.guards.iter().zip(&want.guards) {
                        assert_eq!((x.scope, x.idx, x.ord), (y.scope, y.idx, y.ord), "{what}");
                    }
                    assert_eq!(got.chains.len(), want.chains.len(), "{what}");
                    for (x, y) in got.chains.iter().zip(&want.chains) {
                        assert_eq!(x.scope, y.scope, "{what}");
                        assert_eq!(x.varying, y.varying, "{what}");
                        assert_eq!(x.fixed_max.to_bits(), y.fixed_max.to_bits(), "{what}");
                        assert_eq!(x.sizes, y.sizes, "{what}");
                    }
                    // The rows' rank interval is the one at s, found from the derived numbers.
                    for (x, y) in got.guards.iter().zip(&want.guards) {
                        assert_eq!(x.ops, y.ops, "{what}");
                    }
                    assert_eq!(got.rows_valid, want.rows_valid, "{what}");
                    let ws = Workload {
                        seq: s,
                        ..w.clone()
                    };
                    for r in [1u64, 5, 8, 33, 64] {
                        let opts = MethodOptions {
                            rank: Some(r),
                            ..MethodOptions::default()
                        };
                        let Ok(sp) = MethodSpec::resolve(method, &opts, &model, true) else {
                            continue;
                        };
                        // The optimizer phase rebuilt on a copy: a sweep lends the template
                        // the rank's phase and takes it back (`RankFit::swap_optimizer`).
                        let a = got.apply(sp.rank).map(|g| {
                            let mut g = g.clone();
                            rebuild_optimizer(&model, &sp, &ws, &mut g);
                            g
                        });
                        let b = want.apply(sp.rank).map(|g| {
                            rebuild_optimizer(&model, &sp, &ws, g);
                            g.clone()
                        });
                        assert_eq!(a.is_some(), b.is_some(), "{what} r {r}");
                        if let Some(a) = a {
                            assert!(a == build(&model, &sp, &ws), "{what} r {r}: differs");
                        }
                        // Rows rewrite only the numbers they read: a later derivation into
                        // this template must undo those too.
                        got.apply_for_rows(sp.rank);
                    }
                    // Derived again into the rescaled template, at this and another length:
                    // equal to a fresh derivation, part for part.
                    for s2 in [s, fitted_at[1]] {
                        let fresh = sf.derive(s2).unwrap();
                        assert!(sf.derive_into(s2, &mut got).is_some(), "{what} s2 {s2}");
                        assert!(got.work == fresh.work, "{what} s2 {s2}: graph differs");
                        for (a, b) in [
                            (&got.program, &fresh.program),
                            (&got.row_program, &fresh.row_program),
                        ] {
                            let bits = |p: &Program| -> Vec<(Loc, u64, u64)> {
                                p.numbers()
                                    .map(|(loc, (b, s))| (loc, b.to_bits(), s.to_bits()))
                                    .collect()
                            };
                            assert_eq!(bits(a), bits(b), "{what} s2 {s2}");
                        }
                        for (x, y) in got.chains.iter().zip(&fresh.chains) {
                            assert_eq!(x.fixed_max.to_bits(), y.fixed_max.to_bits(), "{what}");
                        }
                        assert_eq!(got.rows_valid, fresh.rows_valid, "{what} s2 {s2}");
                        let ws2 = Workload {
                            seq: s2,
                            ..w.clone()
                        };
                        let sp = spec(&model, method, 6);
                        if let Some(g) = got.apply(sp.rank) {
                            let mut g = g.clone();
                            rebuild_optimizer(&model, &sp, &ws2, &mut g);
                            assert!(g == build(&model, &sp, &ws2), "{what} s2 {s2} r 6");
                        }
                    }
                }
            }
        }
    }
    // Every preset, method and workload fits over the sequence length (the three-op
    // derivatives' FLOPs are thirds: `Quad`'s denominators).
    assert!(
        seq_fits == PRESETS.len() * 4 * workloads.len(),
        "{seq_fits} sequence fits of {}",
        PRESETS.len() * 4 * workloads.len()
    );
    assert!(
        derived > 10 * refused,
        "{derived} derived, {refused} refused"
    );
}

#[test]
fn integer_intervals_by_hand() {
    let all = || Interval { lo: -100, hi: 100 };
    // 3 + 2x ≤ 0: x ≤ −1.5, so x ≤ −2.
    let mut x = all();
    x.at_most(3, 2);
    assert_eq!(x, Interval { lo: -100, hi: -2 });
    // 3 − 2x ≤ 0: x ≥ 1.5, so x ≥ 2; and 4 − 2x ≤ 0 reaches x = 2 exactly.
    let mut x = all();
    x.at_most(3, -2);
    assert_eq!(x, Interval { lo: 2, hi: 100 });
    let mut x = all();
    x.at_most(4, -2);
    assert_eq!(x, Interval { lo: 2, hi: 100 });
    // 7 − 3x ≥ 0: x ≤ 2; −7 + 3x ≥ 0: x ≥ 3 (−7/3 rounds away from the set).
    let mut x = all();
    x.at_least(7, -3);
    assert_eq!(x, Interval { lo: -100, hi: 2 });
    let mut x = all();
    x.at_least(-7, 3);
    assert_eq!(x, Interval { lo: 3, hi: 100 });
    // Constant: all or nothing. Both sides at once: one point (6 − 2x = 0 at 3).
    let mut x = all();
    x.at_most(-1, 0);
    assert_eq!(x, all());
    x.at_most(1, 0);
    assert!(x.lo > x.hi);
    let mut x = all();
    x.at_most(6, -2);
    x.at_least(6, -2);
    assert_eq!(x, Interval { lo: 3, hi: 3 });
    assert_eq!(exact_int(3.0), Some(3));
    assert_eq!(exact_int(2.5), None);
    assert_eq!(exact_int(2f64.powi(60)), None);
}

/// A line's rank range (`rows_range`) holds exactly the ranks where the point-by-point checks
/// it replaces pass (`apply`: every number in range, every guard on its probes' side): every
/// ranked method on gpt2 and tinyllama at three workloads, fitted at ranks 4, 8 and 12, ranks 1
/// to 600 and a few far beyond. PaCA's gather at K/16 columns ends some ranges (gpt2: 48).
#[test]
fn a_lines_rank_range_is_where_its_points_pass_their_checks() {
    let mut bounded = 0;
    for name in ["gpt2", "tinyllama-1.1b"] {
        let model = preset(name).unwrap();
        for w in three_workloads() {
            for method in MethodName::ALL
                .into_iter()
                .filter(|&m| m != MethodName::Full)
            {
                let g = |r| build(&model, &spec(&model, method, r), &w);
                let Some(mut fit) = RankFit::new([(4, g(4)), (8, g(8)), (12, g(12))]) else {
                    continue;
                };
                let range = fit.rows_valid;
                let far = [1u64 << 20, 1 << 40, u64::MAX];
                for r in (1..=600).chain(far) {
                    let inside = range.is_some_and(|(lo, hi)| (lo..=hi).contains(&r));
                    assert_eq!(
                        inside,
                        fit.apply(r).is_some(),
                        "{name} {method:?} {w:?} rank {r}"
                    );
                    assert_eq!(inside, fit.apply_for_rows(r).is_some());
                }
                bounded += usize::from(range.is_some_and(|(_, hi)| hi < 600));
            }
        }
    }
    assert!(bounded > 0);
}

/// Stretches of two or more changed kernels in a row that recur in segments folded at each
/// point become blocks, worked by hand: a twin's occurrences are rewritten but not counted, a
/// stretch once in a folded segment (and once in its twin) stays, a stretch of the same
/// representatives at another host time is another stretch, segments folded whole have none,
/// and a stretch repeated back to back is its copies.
#[test]
fn recurring_stretches_become_blocks() {
    const O: u32 = Step::OWN;
    // Per kernel place: (representative's place or OWN, host time).
    let segs: [&[(u32, f64)]; 7] = [
        &[
            (O, 0.0),
            (5, 1.0),
            (6, 2.0),
            (O, 0.0),
            (5, 1.0),
            (6, 2.0),
            (O, 0.0),
            (7, 3.0),
        ],
        // The twin of segment 0.
        &[
            (O, 0.0),
            (5, 1.0),
            (6, 2.0),
            (O, 0.0),
            (5, 1.0),
            (6, 2.0),
            (O, 0.0),
            (7, 3.0),
        ],
        // A longer stretch holding a, b; then a, b at another host time.
        &[(5, 1.0), (6, 2.0), (7, 3.0), (O, 0.0), (5, 9.0), (6, 2.0)],
        &[(8, 4.0), (9, 5.0)],
        // The twin of segment 3: that stretch is folded once.
        &[(8, 4.0), (9, 5.0)],
        // Folded whole: no stretches.
        &[(8, 4.0), (9, 5.0)],
        // a, b three times in a row: three copies of one stretch.
        &[(5, 1.0), (6, 2.0), (5, 1.0), (6, 2.0), (5, 1.0), (6, 2.0)],
    ];
    let twins = [O, 0, O, O, 3, O, O];
    let in_pieces = [true, true, true, true, true, false, true];
    let mut starts = vec![0u32];
    let (mut rep, mut host) = (Vec::new(), Vec::new());
    for s in segs {
        rep.extend(s.iter().map(|k| k.0));
        host.extend(s.iter().map(|k| k.1));
        starts.push(rep.len() as u32);
    }
    let (stretches, blocks, block_starts) =
        find_blocks(&starts, &in_pieces, &rep, |i| host[i], &twins);
    // Segment 0's two (places 1..3 and 4..6), its twin's (9..11, 12..14) and the last
    // segment's three (28..34): one block.
    assert_eq!(
        stretches,
        vec![
            (1, 3, 0),
            (4, 6, 0),
            (9, 11, 0),
            (12, 14, 0),
            (28, 30, 0),
            (30, 32, 0),
            (32, 34, 0)
        ]
    );
    assert_eq!(blocks, vec![(1.0, 5), (2.0, 6)]);
    assert_eq!(block_starts, vec![0, 2]);
}

/// Every segment of a costed graph but the optimizer's, as text (`{:?}` prints each time
/// exactly), to compare two costings bit for bit.
fn segments_text(cg: &CostedGraph) -> String {
    let mut out = format!("{:?}", cg.embedding);
    for l in &cg.layers {
        out += &format!("{l:?}");
    }
    out + &format!("{:?}", cg.head)
}

/// A line's costs recycled for the next line of its key (`TemplateCosts::recycle`) cost that
/// line's points bit for bit as fresh ones do: derived from the same sequence template on the
/// same device, the layout is kept (its storage too) with its runs refolded; for a line of
/// another origin (fitted from its own probes), or on a device whose host times differ (the
/// changed kernels' pieces and blocks hold them), it is found afresh.
#[test]
fn recycled_costs_cost_what_fresh_ones_do() {
    let w = Workload {
        batch: 2,
        ..Workload::default()
    };
    let fitted_at = [32u64, 48, 80, 128];
    let h200 = costsim_hardware::resolve_device("h200").unwrap();
    let mut slower_host = h200.clone();
    slower_host.host.python_op_s *= 1.5;
    slower_host.host.autograd_node_s *= 1.5;
    slower_host.name = "h200, slower host".into();
    let cpu = costsim_hardware::resolve_device("cpu").unwrap();
    let mut kept_layouts = 0;
    for (name, method) in [
        ("gpt2", MethodName::Lora),
        ("tinyllama-1.1b", MethodName::Paca),
        ("llama2-7b", MethodName::Lora),
    ] {
        let model = preset(name).unwrap();
        let lines: Vec<(u64, RankFit)> = fitted_at
            .iter()
            .map(|&s| (s, line_fit(&model, method, &w, s).unwrap()))
            .collect();
        let refs: Vec<(u64, &RankFit)> = lines.iter().map(|(s, f)| (*s, f)).collect();
        let sf = SeqFit::new(&refs).expect("a sequence template");
        for (from, to, same_device) in [
            (&h200, &h200, true),
            (&h200, &slower_host, false),
            (&cpu, &cpu, true),
        ] {
            for derived in [true, false] {
                let what = format!(
                    "{name} {method} {} → {} derived {derived}",
                    from.name, to.name
                );
                // The lines before: derived at 64, costed at two ranks, then recycled.
                let w64 = Workload {
                    seq: 64,
                    ..w.clone()
                };
                let mut before = sf.derive(64).unwrap();
                let (mut slot, mut memo) = (None, GemmMemo::default());
                for r in [3u64, 17] {
                    before.apply_for_rows(r).unwrap();
                    before.costed(&mut slot, &w64, from, &mut memo, &mut None);
                }
                slot.as_mut().unwrap().recycle();
                // And at 96, costed once: its first costing finds the classes of equal kernels
                // the next line takes as hints (`cost_hinted`); scrambled (every kernel in one
                // class, most unequal to its first) on one device pair, where every kernel
                // unequal to its class's first must be costed for itself.
                let w96 = Workload {
                    seq: 96,
                    ..w.clone()
                };
                let mut before = sf.derive(96).unwrap();
                before.apply_for_rows(3).unwrap();
                before.costed(&mut slot, &w96, from, &mut memo, &mut None);
                let tc = slot.as_mut().unwrap();
                assert_eq!(tc.classes.len(), tc.costs.len(), "{what}: hints found");
                if !same_device {
                    tc.classes.iter_mut().for_each(|c| *c = 0);
                }
                let storage = tc.layout.pieces.as_ptr();
                tc.recycle();
                // This line, at 200: derived from the same template, or fitted from probes.
                let w200 = Workload {
                    seq: 200,
                    ..w.clone()
                };
                let mut fit = if derived {
                    sf.derive(200).unwrap()
                } else {
                    line_fit(&model, method, &w, 200).unwrap()
                };
                let mut fresh = fit.clone();
                let (mut fresh_slot, mut fresh_memo) = (None, GemmMemo::default());
                if !same_device {
                    memo = GemmMemo::default();
                }
                for (i, r) in [5u64, 9, 33, 64].into_iter().enumerate() {
                    fit.apply_for_rows(r).unwrap();
                    fresh.apply_for_rows(r).unwrap();
                    let got = segments_text(fit.costed(&mut slot, &w200, to, &mut memo, &mut None));
                    let want = segments_text(fresh.costed(
                        &mut fresh_slot,
                        &w200,
                        to,
                        &mut fresh_memo,
                        &mut None,
                    ));
                    assert!(got == want, "{what} r {r}: the costed graphs differ");
                    let (a, b) = (slot.as_ref().unwrap(), fresh_slot.as_ref().unwrap());
                    assert_eq!(a.twins, b.twins, "{what}");
                    let (x, y) = (&a.layout, &b.layout);
                    assert_eq!(
                        format!("{:?}", x.pieces),
                        format!("{:?}", y.pieces),
                        "{what}"
                    );
                    assert_eq!(x.piece_starts, y.piece_starts, "{what}");
                    assert_eq!(
                        format!("{:?}", x.blocks),
                        format!("{:?}", y.blocks),
                        "{what}"
                    );
                    assert_eq!(x.block_starts, y.block_starts, "{what}");
                    assert_eq!(x.refills, y.refills, "{what}");
                    assert_eq!(x.steps.len(), y.steps.len(), "{what}");
                    if i == 0 && !x.pieces.is_empty() {
                        // Kept where the same template and the same host times make it so (a
                        // CPU's layout has no pieces: its launch lists are kept whole).
                        let kept = x.pieces.as_ptr() == storage;
                        assert_eq!(kept, derived && same_device, "{what}: layout kept");
                        kept_layouts += usize::from(kept);
                    }
                }
            }
        }
    }
    assert_eq!(kept_layouts, 3);
}
