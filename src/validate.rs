//! `costsim validate`: measure with libtorch (feature `tch`) or reread a results file, then
//! compare with the predictions.

use crate::cli::ValidateArgs;
use crate::errors::usage_error;
use crate::render::Format;
use anyhow::{Context, Result};
use costsim_hardware::Profile;
use costsim_validate::compare;
use costsim_validate::record::ResultsFile;
use std::path::{Path, PathBuf};

/// The profile to predict results with: `--hw` when given, else the one the results recorded
/// (their `profile`): a built-in name, or a profile file's path as written where they were
/// measured, usually relative to the repository they ran in. A relative path is tried from
/// here, then from the (first) results file's folder and each folder above it. Errors name the
/// results file and the fix (`--hw`).
pub(crate) fn results_profile(
    hw: Option<&str>,
    recorded: &str,
    results: Option<&Path>,
) -> Result<Profile> {
    if let Some(hw) = hw {
        return costsim_hardware::resolve_device(hw).map_err(usage_error);
    }
    let rel = Path::new(recorded);
    if costsim_hardware::is_profile_path(recorded) && rel.is_relative() && !rel.exists() {
        if let Some(found) = results
            .and_then(Path::parent)
            .into_iter()
            .flat_map(Path::ancestors)
            .map(|dir| dir.join(rel))
            .find(|p| p.is_file())
        {
            return costsim_hardware::load_profile(&found).map_err(usage_error);
        }
    }
    costsim_hardware::resolve_device(recorded).map_err(|e| {
        let from = results.map_or(String::new(), |p| format!(" recorded in {}", p.display()));
        usage_error(format!(
            "the profile '{recorded}'{from}: {e}; pass the profile to predict with as --hw \
             NAME|FILE"
        ))
    })
}

pub fn run(args: &ValidateArgs) -> Result<String> {
    if !args.trace.is_empty() {
        return traces(args);
    }
    if !args.steps.is_empty() {
        return steps(args);
    }
    let file = if args.from.is_empty() {
        measure(args)?
    } else {
        merge(&args.from)?
    };
    let hw = results_profile(
        args.hw.as_deref(),
        &file.profile,
        args.from.first().map(PathBuf::as_path),
    )?;
    let report = compare::compare(&file, &hw).map_err(usage_error)?;
    Ok(match args.format {
        Format::Json => serde_json::to_string_pretty(&report).context("JSON")? + "\n",
        Format::Markdown => compare::render_summary(&report),
        _ => compare::render(&report),
    })
}

/// Load results files and merge their records (they must come from the same device).
pub(crate) fn merge(paths: &[std::path::PathBuf]) -> Result<ResultsFile> {
    let mut files = paths
        .iter()
        .map(|p| ResultsFile::load(p).map_err(usage_error));
    let Some(first) = files.next() else {
        return Err(usage_error("--from needs at least one results file"));
    };
    let mut first = first?;
    for (f, path) in files.zip(&paths[1..]) {
        let f = f?;
        if f.device != first.device {
            return Err(usage_error(format!(
                "{} was measured on '{}', the first file on '{}'; compare one device at a time",
                path.display(),
                f.device,
                first.device
            )));
        }
        // A configuration in two files would count twice in every error and ranking.
        for r in &f.records {
            if first.records.iter().any(|p| p.same_configuration(r)) {
                return Err(usage_error(format!(
                    "{} measures {} {} {}x{} again, as an earlier --from file does; compare one \
                     measurement of each configuration",
                    path.display(),
                    r.model.name,
                    r.method,
                    r.batch,
                    r.seq
                )));
            }
        }
        first.records.extend(f.records);
        let max = costsim_validate::record::MAX_RECORDS;
        if first.records.len() > max {
            return Err(usage_error(format!(
                "the --from files hold more than {max} records together, more than one \
                 comparison reads; compare fewer files at a time"
            )));
        }
    }
    Ok(first)
}

/// The error of a build without libtorch asked to measure; `from` names the file `--from` takes.
#[cfg(not(feature = "tch"))]
pub(crate) fn without_libtorch(from: &str) -> anyhow::Error {
    usage_error(format!(
        "this costsim was built without libtorch, so it cannot measure (`--from {from}` works). \
         Build with the `tch` feature: eval \"$(scripts/setup-libtorch.sh)\" && cargo build \
         --release --features tch"
    ))
}

#[cfg(not(feature = "tch"))]
fn measure(_: &ValidateArgs) -> Result<ResultsFile> {
    Err(without_libtorch("results.json"))
}

#[cfg(feature = "tch")]
fn measure(args: &ValidateArgs) -> Result<ResultsFile> {
    use costsim_model::{arch, MethodOptions, MethodSpec};
    use costsim_validate::harness::{self, RunSpec};
    use std::io::IsTerminal;

    let device_arg = args.device.as_deref().unwrap_or("cpu");
    // Before anything else: a CUDA request without a GPU must fail, not time the CPU.
    let device = harness::open_device(device_arg, args.threads).map_err(usage_error)?;
    let model = match &args.model_config {
        Some(p) => arch::from_hf_config(p).map_err(usage_error)?,
        None => arch::preset(&args.model).map_err(usage_error)?,
    };
    let mut specs = Vec::new();
    for &precision in &args.precision {
        let precision = precision.precision();
        for &b in &args.batch {
            for &s in &args.seq {
                let w = costsim_model::Workload {
                    batch: b,
                    seq: s,
                    precision,
                    ..Default::default()
                };
                w.validate(&model).map_err(usage_error)?;
                for m in args.methods.iter().flat_map(|m| m.names()) {
                    let opts = MethodOptions {
                        rank: args.rank,
                        ..Default::default()
                    };
                    let method =
                        MethodSpec::resolve(m, &opts, &model, true).map_err(usage_error)?;
                    specs.push(RunSpec {
                        model: model.clone(),
                        method,
                        batch: b,
                        seq: s,
                        precision,
                        warmup: args.warmup,
                        reps: args.reps,
                    });
                }
            }
        }
    }
    if let Some(bad) = args.precision.iter().find(|p| {
        !matches!(
            p.precision(),
            costsim_model::Precision::Fp32 | costsim_model::Precision::Bf16
        )
    }) {
        return Err(usage_error(format!(
            "the harness measures fp32 and bf16, not {}",
            bad.precision().as_str()
        )));
    }
    let profile_name = match &args.hw {
        Some(h) => h.clone(),
        None if device_arg.trim() == "cpu" => "cpu-generic".into(),
        None => gpu_profile(&harness::device_name(device))?,
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let tty = std::io::stderr().is_terminal();
    let file = harness::run_suite(&specs, device, &profile_name, &command, |i, n, s| {
        if tty {
            eprint!(
                "\r[{}/{}] {} {} {}x{} {}   ",
                i + 1,
                n,
                s.model.name,
                s.method.name,
                s.batch,
                s.seq,
                s.precision.as_str()
            );
        }
    })
    .map_err(|e| match e {
        costsim_validate::Error::Device(_) => usage_error(e),
        other => anyhow::Error::new(other),
    })?;
    if tty {
        note!();
    }
    if let Some(out) = &args.out {
        let text = serde_json::to_string_pretty(&file).context("results as JSON")? + "\n";
        crate::files::write_atomic(out, text)?;
    }
    Ok(file)
}

/// The built-in profile whose device name matches the GPU's (e.g. "NVIDIA H200" → h200).
#[cfg(feature = "tch")]
fn gpu_profile(name: &str) -> Result<String> {
    let lower = name.to_ascii_lowercase();
    let profiles = costsim_hardware::builtin_profiles()?;
    profiles
        .iter()
        .filter(|p| !p.synchronous)
        .find(|p| {
            let model = p.display_name.to_ascii_lowercase().replace("nvidia ", "");
            let first = model.split_whitespace().next().unwrap_or("");
            lower.contains(first)
        })
        .map(|p| p.name.clone())
        .ok_or_else(|| {
            usage_error(format!(
                "no built-in profile matches GPU '{name}'; pass --hw NAME or FILE.toml"
            ))
        })
}

/// `--trace`: compare ground-truth traces of the real stack with the model.
fn traces(args: &ValidateArgs) -> Result<String> {
    use costsim_validate::trace;
    let files = trace_files(&args.trace)?;
    let hw = match &args.hw {
        Some(h) => Some(costsim_hardware::resolve_device(h).map_err(usage_error)?),
        None => None,
    };
    let mut cmps = Vec::new();
    for f in &files {
        let t = trace::read_trace(f).map_err(usage_error)?;
        cmps.push(
            trace::compare_trace(&t, &f.display().to_string(), hw.as_ref()).map_err(usage_error)?,
        );
    }
    if args.ops && cmps.iter().all(|c| c.ledger.is_none()) {
        return Err(usage_error(
            "--ops: none of these traces was timed op by op; record them with \
             scripts/trace/trace_step.py --time-reps N --op-times N (CPU) or \
             --time-reps N --profile-kernels (GPU)",
        ));
    }
    Ok(match args.format {
        Format::Json => serde_json::to_string_pretty(&cmps).context("JSON")? + "\n",
        _ => trace::render(&cmps, args.modules, args.ops),
    })
}

/// `--steps`: predicted Trainer steps against step_overhead.py records.
fn steps(args: &ValidateArgs) -> Result<String> {
    use costsim_validate::steploop;
    let hw = args
        .hw
        .as_deref()
        .ok_or_else(|| usage_error("--steps needs --hw NAME|FILE: the profile to predict on"))?;
    let hw = costsim_hardware::resolve_device(hw).map_err(usage_error)?;
    let mut cmps = Vec::new();
    for f in trace_files(&args.steps)? {
        let origin = f.display().to_string();
        let r = steploop::read_step_record(&f).map_err(usage_error)?;
        cmps.push(steploop::compare_step(&r, &origin, &hw).map_err(usage_error)?);
    }
    let no_loop = !hw.host.has_loop_costs();
    Ok(match args.format {
        Format::Json => serde_json::to_string_pretty(&cmps).context("JSON")? + "\n",
        _ if no_loop => {
            // Its loop work predicts 0: a −100% there is the profile's gap, not a model error.
            steploop::render_steps(&cmps)
                + &format!(
                    "Note: {} has no loop-* costs, so the loop's work is not modelled (0 ms): \
                     calibrate it with `costsim calibrate --loop` (docs/host.md)\n",
                    hw.name
                )
        }
        _ => steploop::render_steps(&cmps),
    })
}

/// Trace files named on the command line: files, or folders whose .json files are taken.
pub(crate) fn trace_files(paths: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inside: Vec<_> = std::fs::read_dir(p)
                .with_context(|| format!("cannot list {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect();
            inside.sort();
            if inside.is_empty() {
                return Err(usage_error(format!("{} holds no .json trace", p.display())));
            }
            files.extend(inside);
        } else {
            files.push(p.clone());
        }
    }
    // A file named twice (directly and in its folder, or twice over) is read once: it would
    // otherwise count twice in every mean and fit.
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    Ok(files)
}
