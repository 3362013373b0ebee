//! Host costs of the real eager stack (Python, transformers' module code, peft's adapter loop, the
//! dispatcher, the autograd engine, and on CUDA the launch call), fitted from timed traces.
//!
//! Each trace of `scripts/trace/host-grid.txt` is one configuration at micro widths (hidden 16,
//! sequence 8), where device work per op is negligible next to host work; it carries, per phase,
//! what the host did — kernel-launching aten ops, nn.Module calls, adapter-layer calls (peft
//! LoRA, PaCA), trainable tensors — and the phase's median wall time over N steps: what a run
//! sees (Python's and the allocator's jitter is part of the cost; the minimum understates the
//! median by about 15% on the H200 machine, and predictions are checked against medians).
//! Non-negative least squares with rows weighted by 1/t ([`crate::fit::fit_linear`]):
//!
//! - forward:  t ≈ python_op · ops + module_call · modules + peft_module · adapters
//! - backward: t ≈ autograd_node · ops
//! - optimizer: t ≈ per_op · ops + per_tensor · tensors (reported; costsim's optimizer host model
//!   charges `python_op` per op and `cpp_op` per tensor)
//!
//! These are exactly the counts costsim charges (its kernel records equal the trace's launching
//! ops, docs/traces.md), so the fitted seconds drop into a profile's `[host]` section. Views and
//! metadata ops are not regressors: their cost is folded into the per-op value, as costsim charges
//! nothing for them.

use std::fmt::Write as _;

use serde::Serialize;

use crate::fit::{fit_linear, Fit};
use crate::trace::Trace;
use crate::{Error, Result};

/// The three fits and where they were measured.
#[derive(Debug, Clone, Serialize)]
pub struct HostFit {
    pub forward: Fit,
    pub backward: Fit,
    pub optimizer: Fit,
    /// Device the traces ran on (`cpu`, `cuda`, …) and its name.
    pub device: String,
    pub torch: String,
    pub transformers: String,
    pub samples: usize,
}

fn missing(what: &str, source: &str) -> Error {
    Error::InvalidArgument {
        what: source.to_string(),
        message: format!(
            "trace has no {what}: record it with scripts/trace/trace_step.py --time-reps N \
             (scripts/trace/host-grid.txt)"
        ),
    }
}

/// Fit the host costs from timed traces (`(trace, name for errors)`).
pub fn fit_host(traces: &[(Trace, String)]) -> Result<HostFit> {
    let mut fwd = Vec::new();
    let mut bwd = Vec::new();
    let mut opt = Vec::new();
    let mut device = None::<String>;
    for (t, src) in traces {
        let timings = t.timings.as_ref().ok_or_else(|| missing("timings", src))?;
        let dev = format!("{} ({})", t.provenance.device, t.provenance.device_name);
        match &device {
            None => device = Some(dev),
            Some(d) if *d != dev => {
                return Err(Error::InvalidArgument {
                    what: src.clone(),
                    message: format!(
                        "measured on {dev}, the first trace on {d}: fit one host at a time"
                    ),
                })
            }
            Some(_) => {}
        }
        let phase = |name: &str| {
            t.phases
                .get(name)
                .ok_or_else(|| missing(&format!("'{name}' phase"), src))
        };
        let f = phase("forward")?;
        let (modules, adapters) = match (f.module_calls, f.adapter_calls) {
            (Some(m), Some(a)) => (m as f64, a as f64),
            _ => return Err(missing("module-call counts", src)),
        };
        let time = |name: &str| {
            timings
                .get(name)
                .map(|x| x.median_s)
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| missing(&format!("positive {name} time"), src))
        };
        fwd.push((vec![f.launches as f64, modules, adapters], time("forward")?));
        bwd.push((vec![phase("backward")?.launches as f64], time("backward")?));
        let o = phase("optimizer")?;
        let tensors = o
            .tensors
            .ok_or_else(|| missing("optimizer tensor count", src))? as f64;
        opt.push((vec![o.launches as f64, tensors], time("optimizer")?));
    }
    let too_few = || {
        Error::InvalidArgument {
        what: "--host".into(),
        message: format!(
            "{} timed traces cannot fit 3 host costs; give at least 3 (scripts/trace/host-grid.txt has 80)",
            traces.len()
        ),
    }
    };
    let (first, _) = traces.first().ok_or_else(too_few)?;
    Ok(HostFit {
        forward: fit_linear(
            "forward",
            vec![
                "s per launching op",
                "s per module call",
                "s per adapter layer",
            ],
            &fwd,
        )
        .ok_or_else(too_few)?,
        backward: fit_linear("backward", vec!["s per autograd op"], &bwd).ok_or_else(too_few)?,
        optimizer: fit_linear("optimizer", vec!["s per op", "s per tensor"], &opt)
            .ok_or_else(too_few)?,
        device: device.unwrap_or_default(),
        torch: first.provenance.torch.clone(),
        transformers: first.provenance.transformers.clone(),
        samples: traces.len(),
    })
}

/// `base` profile text with its `[host]` values replaced by the fit's, and its name by `name`.
/// The result is parsed back before it is returned, so a profile that would not load is an error.
pub fn write_profile(base: &str, name: &str, fit: &HostFit, date: &str) -> Result<String> {
    let src = |what: &str, f: &Fit| {
        format!(
            "calibrated: {what}, NNLS over the median phase times of {} timed transformers {} + \
             torch {} steps on {} (R² {:.3}, worst {:.0}%), {date}",
            f.n,
            fit.transformers,
            fit.torch,
            fit.device,
            f.r2,
            100.0 * f.worst_rel
        )
    };
    let keys = [
        HostKey::new(
            "python-op",
            fit.forward.coef[0],
            src("forward per launching op", &fit.forward),
        ),
        HostKey::new(
            "module-call",
            fit.forward.coef[1],
            src("forward per nn.Module call", &fit.forward),
        ),
        HostKey::new(
            "peft-module",
            fit.forward.coef[2],
            src("forward per adapter layer (peft LoRA, PaCA)", &fit.forward),
        ),
        HostKey::new(
            "autograd-node",
            fit.backward.coef[0],
            src("backward per op run by the autograd engine", &fit.backward),
        ),
        HostKey::new(
            "optimizer-tensor",
            fit.optimizer.coef[1],
            src(
                "optimizer per trainable tensor (grouping, clipping, zero_grad)",
                &fit.optimizer,
            ),
        ),
    ];
    set_host_keys(
        base,
        name,
        &keys,
        &["python-op", "module-call", "peft-module", "autograd-node"],
    )
}

/// One `[host]` value to write: `KEY-us` (from seconds) and `KEY-source`.
pub struct HostKey {
    pub key: &'static str,
    pub us: String,
    pub source: String,
}

impl HostKey {
    pub fn new(key: &'static str, seconds: f64, source: String) -> Self {
        Self {
            key,
            us: format!("{:.3}", seconds * 1e6),
            source,
        }
    }
}

/// `base` profile text with `keys` set in its `[host]` section — replaced where present,
/// appended to the section where not, except `required` keys, which must be present — its
/// `[device]` name replaced by `name` and its aliases cleared. Parsed back before it is
/// returned, so a profile that would not load is an error.
pub fn set_host_keys(
    base: &str,
    name: &str,
    keys: &[HostKey],
    required: &[&str],
) -> Result<String> {
    let mut out = String::new();
    let mut section = String::new();
    let mut found = vec![false; keys.len()];
    for line in base.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            section = trimmed.to_string();
        }
        let key = trimmed.split('=').next().unwrap_or("").trim();
        let mut new_line = None;
        if section == "[device]" && key == "name" {
            new_line = Some(format!("name = {}", toml_string(name)));
        }
        if section == "[host]" {
            for (i, k) in keys.iter().enumerate() {
                if key == format!("{}-us", k.key) {
                    new_line = Some(format!("{}-us = {}", k.key, k.us));
                    found[i] = true;
                } else if key == format!("{}-source", k.key) {
                    new_line = Some(format!("{}-source = {}", k.key, toml_string(&k.source)));
                }
            }
        }
        if section == "[device]" && key == "aliases" {
            new_line = Some("aliases = []".to_string());
        }
        out.push_str(new_line.as_deref().unwrap_or(line));
        out.push('\n');
    }
    let missing: Vec<String> = keys
        .iter()
        .zip(&found)
        .filter(|(k, f)| !**f && required.contains(&k.key))
        .map(|(k, _)| format!("{}-us", k.key))
        .collect();
    if !missing.is_empty() {
        return Err(Error::InvalidArgument {
            what: "--base".into(),
            message: format!(
                "the base profile's [host] section lacks {}",
                missing.join(", ")
            ),
        });
    }
    let insert: String = keys
        .iter()
        .zip(&found)
        .filter(|(_, f)| !**f)
        .map(|(k, _)| {
            format!(
                "{}-us = {}\n{}-source = {}\n",
                k.key,
                k.us,
                k.key,
                toml_string(&k.source)
            )
        })
        .collect();
    if !insert.is_empty() {
        out = insert_into_section(&out, "[host]", &insert);
    }
    costsim_hardware::parse_profile(&out, "calibrated host profile")?;
    Ok(out)
}

/// `text` with `insert` placed at the end of `section` (before the next section header); a text
/// without that section gets it at its end, so no value is dropped (a user profile may rely on
/// its base for every `[host]` value).
fn insert_into_section(text: &str, section: &str, insert: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    let mut done = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            if inside && !done {
                out.push_str(insert);
                done = true;
            }
            inside = t == section;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !done {
        if !inside {
            out.push_str(section);
            out.push('\n');
        }
        out.push_str(insert);
    }
    out
}

/// A TOML basic string (quotes, backslashes and control characters escaped).
fn toml_string(s: &str) -> String {
    let mut o = String::from('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The fits as a table: coefficients in µs with 95% intervals, R², worst residual.
pub fn render(fit: &HostFit) -> String {
    let mut s = format!(
        "host costs from {} timed traces on {} (torch {}, transformers {}):\n",
        fit.samples, fit.device, fit.torch, fit.transformers
    );
    for f in [&fit.forward, &fit.backward, &fit.optimizer] {
        let coefs: Vec<String> = f
            .names
            .iter()
            .zip(&f.coef)
            .zip(&f.ci95)
            .map(|((n, c), ci)| {
                if ci.is_finite() {
                    format!(
                        "{:.2} ± {:.2} µs {}",
                        c * 1e6,
                        ci * 1e6,
                        n.trim_start_matches("s ")
                    )
                } else {
                    format!("{:.2} µs {}", c * 1e6, n.trim_start_matches("s "))
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "  {:<9} R² {:.3}  worst {:>4.0}%  {}",
            f.what,
            f.r2,
            100.0 * f.worst_rel,
            coefs.join("; ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_cannot_inject_keys() {
        let s = toml_string("a\"\nb = 1");
        assert_eq!(s, "\"a\\\"\\u000Ab = 1\"");
        let v: toml::Value = toml::from_str(&format!("x = {s}")).expect("parses");
        assert_eq!(v["x"].as_str(), Some("a\"\nb = 1"));
    }
}

#[cfg(test)]
mod fit_tests {
    use super::*;
    use crate::trace::Trace;

    /// A timed trace whose phase times follow known host costs exactly.
    fn synthetic(
        ops: u64,
        modules: u64,
        adapters: u64,
        bwd: u64,
        opt_ops: u64,
        tensors: u64,
    ) -> Trace {
        // python_op 20 µs, module_call 15 µs, peft 5 µs; autograd 25 µs; optimizer 30 µs per op
        // + 10 µs per tensor.
        let f = 20e-6 * ops as f64 + 15e-6 * modules as f64 + 5e-6 * adapters as f64;
        let b = 25e-6 * bwd as f64;
        let o = 30e-6 * opt_ops as f64 + 10e-6 * tensors as f64;
        let text = format!(
            r#"{{"schema":"costsim-trace/1",
            "provenance":{{"torch":"2.11.0","transformers":"5.17.0","peft":null,"device":"cpu","device_name":"test"}},
            "model":{{"family":"llama","preset":"micro1","hf_config":{{}}}},
            "method":{{"name":"full","rank":0,"alpha":0,"dropout":0,"targets":"all","adapter_dtype":"fp32","lowest_trained_layer":0}},
            "workload":{{"batch":1,"seq":8,"precision":"fp32","clip_grad_norm":1.0}},
            "totals":{{"param_bytes":0,"trainable_elems":0,"optimizer_state_bytes":0,"baseline_bytes":0,"saved_activation_bytes":0}},
            "phases":{{
              "forward":{{"ops":0,"launches":{ops},"flops":0,"start_bytes":0,"peak_bytes":0,"module_calls":{modules},"adapter_calls":{adapters}}},
              "backward":{{"ops":0,"launches":{bwd},"flops":0,"start_bytes":0,"peak_bytes":0}},
              "optimizer":{{"ops":0,"launches":{opt_ops},"flops":0,"start_bytes":0,"peak_bytes":0,"tensors":{tensors}}}}},
            "ops":[],
            "timings":{{"forward":{{"median_s":{f},"min_s":{f}}},"backward":{{"median_s":{b},"min_s":{b}}},"optimizer":{{"median_s":{o},"min_s":{o}}},"reps":5}}}}"#
        );
        serde_json::from_str(&text).expect("synthetic trace parses")
    }

    #[test]
    fn exact_host_costs_are_recovered() {
        let traces: Vec<(Trace, String)> = [
            (100, 40, 0, 150, 12, 20),
            (200, 60, 8, 300, 12, 40),
            (400, 90, 16, 520, 16, 90),
            (150, 70, 4, 200, 14, 30),
            (320, 50, 12, 410, 13, 75),
        ]
        .iter()
        .map(|&(a, b, c, d, e, f)| (synthetic(a, b, c, d, e, f), "synthetic".to_string()))
        .collect();
        let fit = fit_host(&traces).expect("fits");
        let close = |got: f64, want: f64| (got - want).abs() < 1e-9;
        assert!(close(fit.forward.coef[0], 20e-6), "{:?}", fit.forward.coef);
        assert!(close(fit.forward.coef[1], 15e-6), "{:?}", fit.forward.coef);
        assert!(close(fit.forward.coef[2], 5e-6), "{:?}", fit.forward.coef);
        assert!(close(fit.backward.coef[0], 25e-6));
        assert!(close(fit.optimizer.coef[0], 30e-6));
        assert!(close(fit.optimizer.coef[1], 10e-6));
        // Written into a profile that loads, with the values in µs.
        let base = costsim_hardware::BUILTIN
            .iter()
            .find(|(n, _)| *n == "h200")
            .expect("h200")
            .1;
        let text = write_profile(base, "h200-test", &fit, "2026-11-28").expect("writes");
        let p = costsim_hardware::parse_profile(&text, "test").expect("loads");
        assert!((p.host.python_op_s - 20e-6).abs() < 1e-12);
        assert!((p.host.autograd_node_s - 25e-6).abs() < 1e-12);
        assert!((p.host.optimizer_tensor_s - 10e-6).abs() < 1e-12);
        assert_eq!(p.name, "h200-test");
    }

    #[test]
    fn traces_from_two_hosts_or_without_a_positive_time_are_refused() {
        let mut other = synthetic(200, 60, 8, 300, 12, 40);
        other.provenance.device_name = "another".into();
        let err = fit_host(&[
            (synthetic(100, 40, 0, 150, 12, 20), "a.json".into()),
            (other, "b.json".into()),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("b.json") && err.contains("one host at a time"),
            "{err}"
        );
        for bad in [0.0, -1e-3, f64::INFINITY] {
            let mut t = synthetic(100, 40, 0, 150, 12, 20);
            t.timings.as_mut().unwrap().backward.median_s = bad;
            let err = fit_host(&[(t, "x.json".into())]).unwrap_err().to_string();
            assert!(err.contains("positive backward time"), "{bad}: {err}");
        }
    }

    #[test]
    fn host_keys_replace_their_lines_and_missing_ones_join_the_host_section() {
        // a100-80gb-sxm: [host] is followed by [price]. Without its optimizer-tensor lines, the
        // written value must land in [host], before [price], and the rest stay as it was.
        let base = costsim_hardware::BUILTIN
            .iter()
            .find(|(n, _)| *n == "a100-80gb-sxm")
            .expect("a100")
            .1;
        let base: String = base
            .lines()
            .filter(|l| !l.starts_with("optimizer-tensor-"))
            .map(|l| format!("{l}\n"))
            .collect();
        let keys = [
            HostKey::new("python-op", 2e-6, "new python source".into()),
            HostKey::new("optimizer-tensor", 7e-6, "new tensor source".into()),
        ];
        let out = set_host_keys(&base, "mine", &keys, &["python-op"]).expect("writes");
        let p = costsim_hardware::parse_profile(&out, "test").expect("loads");
        assert_eq!(p.name, "mine");
        assert!((p.host.python_op_s - 2e-6).abs() < 1e-15);
        assert!((p.host.optimizer_tensor_s - 7e-6).abs() < 1e-15);
        let line = |prefix: &str| out.lines().position(|l| l.starts_with(prefix));
        let (host, price) = (line("[host]").unwrap(), line("[price]").unwrap());
        let tensor = line("optimizer-tensor-us = 7.000").expect("inserted");
        assert!(host < tensor && tensor < price, "{host} {tensor} {price}");
        assert_eq!(line("optimizer-tensor-source"), Some(tensor + 1));
        assert!(out.contains("python-op-us = 2.000\npython-op-source = \"new python source\"\n"));
        assert!(out.contains("aliases = []\n"));
        // Every other line is the base's.
        let changed = |l: &&str| {
            l.starts_with("name = ")
                || l.starts_with("aliases = ")
                || l.starts_with("python-op-")
                || l.starts_with("optimizer-tensor-")
        };
        let rest = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !changed(l))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(rest(&out), rest(&base));
        // A required key the base lacks is refused, naming it.
        let err = set_host_keys(&base, "mine", &keys, &["optimizer-tensor"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lacks optimizer-tensor-us"), "{err}");
    }

    #[test]
    fn insertion_goes_to_the_end_of_its_section_even_when_it_is_last() {
        let text = "[a]\nx = 1\n[host]\ny = 2\n";
        assert_eq!(
            insert_into_section(text, "[host]", "z = 3\n"),
            "[a]\nx = 1\n[host]\ny = 2\nz = 3\n"
        );
        let text = "[host]\ny = 2\n[b]\nw = 4\n[host2]\n";
        assert_eq!(
            insert_into_section(text, "[host]", "z = 3\n"),
            "[host]\ny = 2\nz = 3\n[b]\nw = 4\n[host2]\n"
        );
        // No such section: it is added, with the values, at the end.
        assert_eq!(
            insert_into_section("[a]\nx = 1\n", "[host]", "z = 3\n"),
            "[a]\nx = 1\n[host]\nz = 3\n"
        );
    }

    #[test]
    fn untimed_traces_are_refused_with_the_fix() {
        let mut t = synthetic(100, 40, 0, 150, 12, 20);
        t.timings = None;
        let err = fit_host(&[(t, "x.json".into())]).unwrap_err().to_string();
        assert!(err.contains("--time-reps"), "{err}");
    }
}
