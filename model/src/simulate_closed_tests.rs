//! Tests of the closed form of a segment's launches on a GPU (`Closed`), and of the wait for
//! the device that splits it (`SyncPoint`): worked by hand, and against stepping through the
//! launches one by one.

use super::*;

#[test]
fn closed_form_worked_by_hand() {
    // Host 10, 20 (host-only), 10 µs; device 5 µs at each launch (the ops of
    // `host_only_ops_delay_the_next_launch`): H = 10, 40 at the two launches, D before them 0
    // and 5, so L = max(10 − 0, 40 − 5) = 35 µs and D = 10 µs. From a GPU 7 µs ahead of the
    // host (h₀ − g₀ = −7 µs) the GPU waits max(0, −7 + 35) = 28 µs and ends D + 28 = 38 µs
    // after g₀; from a host 100 µs behind, it waits 135 µs.
    let s = seg(&[(10.0, 5.0), (20.0, 0.0), (10.0, 5.0), (7.0, 0.0)]);
    assert_us(s.closed.lead_s, 35.0);
    assert_us(s.closed.device_s, 10.0);
    assert_us(s.closed.host_s, 40.0);
    for (h0, want_wait) in [(-7.0, 28.0), (100.0, 135.0), (-50.0, 0.0)] {
        let mut clock = Clock {
            host: 1000.0 * US + h0 * US,
            gpu: 1000.0 * US,
        };
        let mut span = Span::default();
        run(false, &mut clock, &s, &mut span, None);
        assert_us(span.host_wait_s, want_wait);
        assert_us(span.time_s, 10.0 + want_wait);
        assert_us(clock.gpu, 1000.0 + 10.0 + want_wait);
        assert_us(clock.host, 1000.0 + h0 + 47.0);
    }
}

proptest::proptest! {
    /// The closed form equals stepping through the launches (the recording path) from any
    /// host−GPU offset, for any segment: clocks and every field of the span.
    #[test]
    fn closed_form_equals_stepping_through(
        ops in proptest::collection::vec((0.0f64..50.0, 0.0f64..50.0, 0u8..4), 0..40),
        offset in -500.0f64..500.0,
    ) {
        // A third of the ops host-only (device 0), the rest launches of each bound.
        let mut kernels = Vec::new();
        let mut fast = Vec::new();
        let mut pending = 0.0;
        for &(h, d, b) in &ops {
            let d = if b == 3 { 0.0 } else { d + 0.001 };
            let bound = [Bound::Compute, Bound::Memory, Bound::Launch, Bound::Memory][b as usize];
            let cost = KernelCost { math_s: 0.0, mem_s: d * US, floor_s: 0.0, device_s: d * US, bound };
            kernels.push((h * US, cost));
            pending += h * US;
            if d > 0.0 {
                fast.push((pending, d * US, bound_index(bound) as u8));
                pending = 0.0;
            }
        }
        let s = CostedSegment {
            kernels,
            closed: Closed::of(&fast),
            fast,
            tail_host_s: pending,
            sync: None,
            totals: (0.0, 0.0, 0),
        };
        let mut out = Vec::new();
        for record in [false, true] {
            let mut clock = Clock { host: 10_000.0 * US + offset * US, gpu: 10_000.0 * US };
            let mut span = Span::default();
            let mut flags = Vec::new();
            run(false, &mut clock, &s, &mut span, record.then_some(&mut flags));
            out.push((clock, span));
        }
        let ((c0, s0), (c1, s1)) = (&out[0], &out[1]);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * US;
        proptest::prop_assert!(close(c0.gpu, c1.gpu) && close(c0.host, c1.host), "{out:?}");
        for (x, y) in span_fields(s0, s1) {
            proptest::prop_assert!(close(x, y), "{x} vs {y}: {out:?}");
        }
    }
}

/// A segment of `(host µs, device µs)` ops folded as a sweep folds it (`refill`, the costs kept
/// for the recording path), the op at `sync_at` one the host waits at (`.item()`).
fn synced(ops: &[(f64, f64)], sync_at: usize, synchronous: bool) -> CostedSegment {
    let kernels = ops
        .iter()
        .enumerate()
        .map(|(i, &(_, d))| {
            let kind = if d > 0.0 {
                crate::graph::KernelKind::Elementwise
            } else {
                crate::graph::KernelKind::Host
            };
            let mut k = Kernel::new_for_test(kind, MathMode::Bf16);
            k.launches = u32::from(d > 0.0);
            k.syncs = i == sync_at;
            k
        })
        .collect();
    let costs: Vec<_> = ops
        .iter()
        .map(|&(h, d)| {
            let cost = KernelCost {
                math_s: 0.0,
                mem_s: d * US,
                floor_s: 0.0,
                device_s: d * US,
                bound: Bound::Memory,
            };
            (h * US, cost)
        })
        .collect();
    let mut s = CostedSegment::empty();
    s.refill(&Segment { kernels }, &costs, synchronous);
    s.kernels = costs;
    s
}

/// By hand: launch A (1 µs to issue, 10 µs on the device), `.item()` (2 µs of host), launch B
/// (3 µs, 1 µs), from both clocks at 0. The host issues A at 1 (the device idles 1 µs), is done
/// with the read at 3 and waits for A's end at 11; it issues B at 14, so the device idles
/// 11–14 and B ends at 15: 4 µs of host wait, where without the wait B would be issued at 6
/// and start when A ends (12, 1 µs of wait). Both code paths, and `refill_times` of the same
/// costs.
#[test]
fn the_host_waits_at_item_by_hand() {
    let ops = [(1.0, 10.0), (2.0, 0.0), (3.0, 1.0)];
    for (sync_at, gpu_end, waits, host_end) in [(1, 15.0, 4.0, 14.0), (usize::MAX, 12.0, 1.0, 6.0)]
    {
        let mut s = synced(&ops, sync_at, false);
        for refold in [false, true] {
            if refold {
                let costs = s.kernels.clone();
                s.refill_times(&costs, false);
                s.kernels = costs;
            }
            for record in [false, true] {
                let mut clock = Clock {
                    host: 0.0,
                    gpu: 0.0,
                };
                let mut span = Span::default();
                let mut flags = Vec::new();
                run(
                    false,
                    &mut clock,
                    &s,
                    &mut span,
                    record.then_some(&mut flags),
                );
                assert_us(clock.gpu, gpu_end);
                assert_us(clock.host, host_end);
                assert_us(span.host_wait_s, waits);
                assert_us(span.by_bound[3], waits);
                assert_us(span.time_s, gpu_end);
                assert_us(span.host_s, 6.0);
                assert_us(span.busy_s, 11.0);
                if record {
                    assert_eq!(flags, [true, false, sync_at == 1]);
                }
            }
        }
    }
    // On a CPU the host waits for every op already: the same as without the read's wait.
    let (cpu, plain) = (synced(&ops, 1, true), synced(&ops, usize::MAX, true));
    let (a, b) = (run_both(true, &cpu), run_both(true, &plain));
    assert_eq!((a.0, a.1, a.2), (b.0, b.1, b.2));
}

proptest::proptest! {
    /// With an op the host waits at, the two closed forms and the wait between them equal
    /// stepping through the ops (the recording path), from any host−GPU offset, for any
    /// segment and any place of the op; `refill_times` folds the same times as `refill`.
    #[test]
    fn a_wait_for_the_device_equals_stepping_through(
        ops in proptest::collection::vec((0.0f64..50.0, 0.0f64..50.0, proptest::bool::ANY), 1..40),
        at in 0usize..40,
        offset in -500.0f64..500.0,
    ) {
        // About half the ops host-only; the op the host waits at is host-only.
        let mut ops: Vec<(f64, f64)> =
            ops.into_iter().map(|(h, d, host)| (h, if host { 0.0 } else { d + 0.001 })).collect();
        let at = at % ops.len();
        ops[at].1 = 0.0;
        let mut s = synced(&ops, at, false);
        let mut out = Vec::new();
        for refold in [false, true] {
            if refold {
                let costs = s.kernels.clone();
                s.refill_times(&costs, false);
                s.kernels = costs;
            }
            for record in [false, true] {
                let mut clock = Clock { host: 10_000.0 * US + offset * US, gpu: 10_000.0 * US };
                let mut span = Span::default();
                let mut flags = Vec::new();
                run(false, &mut clock, &s, &mut span, record.then_some(&mut flags));
                out.push((clock.gpu, clock.host, span));
            }
        }
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * US;
        // The recording path, launch by launch, is the reference.
        let (g1, h1, s1) = out[1];
        for &(g, h, sp) in &out {
            proptest::prop_assert!(close(g, g1) && close(h, h1), "{out:?}");
            for (x, y) in span_fields(&sp, &s1) {
                proptest::prop_assert!(close(x, y), "{x} vs {y}: {out:?}");
            }
        }
        // The folds agree to the bit.
        proptest::prop_assert_eq!(out[0].0.to_bits(), out[2].0.to_bits());
        // After the wait the host is at least where the device was when the host reached it.
        proptest::prop_assert!(h1 >= 10_000.0 * US + offset * US);
    }
}
