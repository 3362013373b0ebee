//! What numbers a trace may hold: the physical ranges `read_trace` checks every trace against
//! (bytes, FLOPs, counts, the optimizer's tensor sizes, the clipping norm), so a corrupted file
//! is refused naming its key rather than compared.

use super::Trace;

/// Bytes a traced step can hold: 0 to 2⁶⁰ (an exbibyte).
const BYTES: costsim_hardware::Range = costsim_hardware::Range {
    min: 0.0,
    max: (1u64 << 60) as f64,
    unit: "bytes",
    why: "no step holds more than an exbibyte",
};
/// FLOPs of a traced step: 0 to 10²⁴.
const FLOPS: costsim_hardware::Range = costsim_hardware::Range {
    min: 0.0,
    max: 1e24,
    unit: "FLOPs",
    why: "no step does more than 10^24",
};
/// Ops, launches, calls and tensors counted in one step's phase: up to 10⁹.
const COUNT_MAX: u64 = 1_000_000_000;

impl Trace {
    /// Every number a physical one: bytes, FLOPs and counts within range (a trace with
    /// `peak_bytes = -1` compared as −150 630 500%, 2026-11-30), the clipping norm not negative.
    /// The message names the key.
    pub fn check(&self) -> std::result::Result<(), String> {
        let count = |key: &str, v: u64| {
            if v <= COUNT_MAX {
                Ok(())
            } else {
                Err(format!(
                    "{key} must be at most {COUNT_MAX} (a step's phase), got {v}"
                ))
            }
        };
        let tot = &self.totals;
        for (key, v) in [
            ("param_bytes", tot.param_bytes),
            ("optimizer_state_bytes", tot.optimizer_state_bytes),
            ("baseline_bytes", tot.baseline_bytes),
            ("saved_activation_bytes", tot.saved_activation_bytes),
        ] {
            BYTES.check(&format!("totals.{key}"), v)?;
        }
        if tot.trainable_elems > 1 << 50 {
            return Err(format!(
                "totals.trainable_elems must be at most 2^50, got {}",
                tot.trainable_elems
            ));
        }
        for (name, p) in &self.phases {
            let key = |k: &str| format!("phases.{name}.{k}");
            count(&key("ops"), p.ops)?;
            count(&key("launches"), p.launches)?;
            FLOPS.check(&key("flops"), p.flops)?;
            BYTES.check(&key("start_bytes"), p.start_bytes)?;
            BYTES.check(&key("peak_bytes"), p.peak_bytes)?;
            for (k, v) in [
                ("module_calls", p.module_calls),
                ("adapter_calls", p.adapter_calls),
                ("tensors", p.tensors),
            ] {
                if let Some(v) = v {
                    count(&key(k), v)?;
                }
            }
        }
        for (name, p) in self.cuda_allocator_peaks.iter().flatten() {
            BYTES.check(
                &format!("cuda_allocator_peaks.{name}.start_bytes"),
                p.start_bytes,
            )?;
            BYTES.check(
                &format!("cuda_allocator_peaks.{name}.peak_bytes"),
                p.peak_bytes,
            )?;
        }
        for (i, op) in self.ops.iter().enumerate() {
            let key = |k: &str| format!("ops[{i}] ({}).{k}", op.op);
            count(&key("calls"), op.calls)?;
            count(&key("launches"), op.launches)?;
            FLOPS.check(&key("flops"), op.flops)?;
            BYTES.check(&key("out_bytes"), op.out_bytes)?;
            for (k, v) in [
                ("read_bytes", op.read_bytes),
                ("written_bytes", op.written_bytes),
            ] {
                if let Some(v) = v {
                    BYTES.check(&key(k), v)?;
                }
            }
        }
        for (i, f) in self.foreach.iter().enumerate() {
            let key = format!("foreach[{i}] ({})", f.op);
            count(&format!("{key}.numels (its length)"), f.numels.len() as u64)?;
            if let Some(n) = f.numels.iter().find(|&&n| n > 1 << 50) {
                return Err(format!(
                    "{key}.numels holds {n} elements for one tensor, more than 2^50"
                ));
            }
        }
        let clip = self.workload.clip_grad_norm;
        if !(clip.is_finite() && clip >= 0.0) {
            return Err(format!(
                "workload.clip_grad_norm must be 0 (no clipping) or a positive norm, got {clip}"
            ));
        }
        Ok(())
    }
}
