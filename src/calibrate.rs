//! `costsim calibrate`: run the microbenchmarks (feature `tch`) or reread a saved run, fit the
//! device's parameters and write a profile that `--hw` accepts.

use crate::errors::usage_error;
use anyhow::{Context, Result};
use clap::Args;
use costsim_validate::fit::{self, CalibrationRun};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// cpu, cuda or cuda:N: measure on this device (needs the `tch` feature).
    #[arg(long, required_unless_present_any = ["from", "host", "loop_records"], conflicts_with_all = ["from", "host", "loop_records"])]
    pub device: Option<String>,
    /// Fit the `[host]` section (Python op, module call, adapter layer, autograd node) from timed
    /// traces of the real eager stack (scripts/trace/host-grid.txt; JSON files or folders,
    /// comma-separated) and write BASE with it. Works on any build.
    #[arg(
        long,
        value_name = "FILE|DIR",
        value_delimiter = ',',
        conflicts_with = "from"
    )]
    pub host: Vec<PathBuf>,
    /// Fit a Trainer loop's own work (per micro-batch, per nn.Module, per step) from
    /// scripts/trace/step_overhead.py records (scripts/trace/step-grid.txt; JSON files or
    /// folders, comma-separated) and write BASE with it. Works on any build.
    #[arg(
        long = "loop",
        value_name = "FILE|DIR",
        value_delimiter = ',',
        conflicts_with_all = ["from", "host"]
    )]
    pub loop_records: Vec<PathBuf>,
    /// Refit from a saved run (`--samples`) instead of measuring; works on any build.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// The profile to write (TOML, atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Where to save the raw samples (default: the profile's name with .samples.json).
    #[arg(long, value_name = "FILE")]
    pub samples: Option<PathBuf>,
    /// Profile supplying what is not measured (memory, compute units, Python host costs).
    /// Default: cpu-generic on a CPU; on CUDA the built-in profile named like the GPU.
    #[arg(long)]
    pub base: Option<String>,
    /// Name of the calibrated profile (default: BASE-calibrated).
    #[arg(long)]
    pub name: Option<String>,
    /// Timed repetitions per microbenchmark.
    #[arg(long, default_value_t = 7)]
    pub reps: u32,
    /// Untimed warm-up runs per microbenchmark.
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    /// CPU threads libtorch may use (default: libtorch's own choice). Calibrate and validate
    /// with the same number: a profile describes the device as it was measured.
    #[arg(long)]
    pub threads: Option<i32>,
}

/// The base profile: given, or guessed from the device.
fn base(args: &CalibrateArgs, run: &CalibrationRun) -> Result<costsim_hardware::Profile> {
    if let Some(b) = &args.base {
        return costsim_hardware::resolve_device(b).map_err(usage_error);
    }
    if run.device_kind == "cpu" {
        return costsim_hardware::resolve_device("cpu-generic").map_err(usage_error);
    }
    let name = run.device.to_ascii_lowercase();
    for p in costsim_hardware::builtin_profiles().context("built-in profiles")? {
        let token = p.name.split('-').next().unwrap_or(&p.name).to_string();
        if name.contains(&token) && !p.synchronous {
            return Ok(p);
        }
    }
    Err(usage_error(format!(
        "cannot tell which built-in profile matches '{}'; pass --base NAME (see costsim hardware)",
        run.device
    )))
}

/// A `--name` for the written profile: not empty, and not a built-in profile's name or alias,
/// which `--hw` would then read as two profiles (the built-in and the file) under one name.
fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(usage_error(
            "--name is empty; name the written profile, e.g. --name lab-a100",
        ));
    }
    if costsim_hardware::builtin(name).is_ok() {
        return Err(usage_error(format!(
            "--name {name} is a built-in profile's name or alias; give the calibrated profile \
             its own, e.g. --name {}-lab",
            name.trim()
        )));
    }
    Ok(())
}

pub fn run(args: &CalibrateArgs) -> Result<String> {
    if !matches!(args.out.extension().and_then(|e| e.to_str()), Some("toml")) {
        return Err(usage_error(format!(
            "--out {} must end in .toml (it is a hardware profile)",
            args.out.display()
        )));
    }
    if let Some(name) = &args.name {
        check_name(name)?;
    }
    if !args.host.is_empty() {
        return host(args);
    }
    if !args.loop_records.is_empty() {
        return training_loop(args);
    }
    let run = match &args.from {
        Some(path) => CalibrationRun::load(path).map_err(usage_error)?,
        None => {
            let run = measure(args)?;
            let path = args
                .samples
                .clone()
                .unwrap_or_else(|| args.out.with_extension("samples.json"));
            let text = serde_json::to_string_pretty(&run).context("samples as JSON")? + "\n";
            crate::files::write_atomic(&path, text)?;
            note!("samples written to {}", path.display());
            run
        }
    };
    let base = base(args, &run)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-calibrated", base.name));
    let cal = fit::calibrate(&run, &base, &name).map_err(usage_error)?;
    crate::files::write_atomic(&args.out, &cal.profile_toml)?;
    Ok(format!(
        "calibrated {} from {} samples on {} (base {}):\n{}profile written to {} (use it with --hw {})\n",
        name,
        run.samples.len(),
        run.device,
        base.name,
        fit::render(&cal),
        args.out.display(),
        args.out.display()
    ))
}

#[cfg(not(feature = "tch"))]
fn measure(_: &CalibrateArgs) -> Result<CalibrationRun> {
    Err(crate::validate::without_libtorch("samples.json"))
}

#[cfg(feature = "tch")]
fn measure(args: &CalibrateArgs) -> Result<CalibrationRun> {
    use costsim_validate::calibrate::{self, Effort};
    use costsim_validate::harness;
    use std::io::IsTerminal;
    let device = harness::open_device(args.device.as_deref().unwrap_or("cpu"), args.threads)
        .map_err(usage_error)?;
    let tty = std::io::stderr().is_terminal();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    calibrate::run(
        device,
        Effort {
            warmup: args.warmup,
            reps: args.reps,
        },
        &command,
        |i, n, name| {
            if tty {
                eprint!("\r[{}/{}] {:<24}", i + 1, n, name);
            }
        },
    )
    .map_err(|e| anyhow::anyhow!(e))
    .inspect(|_| {
        if tty {
            note!();
        }
    })
}

/// The text of `--base` (a built-in profile's name or a file), for `--host` and `--loop`.
fn base_text(args: &CalibrateArgs, option: &str) -> Result<(String, String)> {
    let base_name = args.base.as_deref().ok_or_else(|| {
        usage_error(format!(
            "{option} needs --base NAME|FILE: the profile whose [host] section is replaced"
        ))
    })?;
    // A built-in name or alias (as --hw takes), else a profile file; one that starts from a
    // built-in (`base = "a100"`) is merged into it first, so the text is a whole profile.
    let text = match costsim_hardware::builtin(base_name) {
        Ok((_, text)) => text.to_string(),
        Err(_) => {
            let raw =
                costsim_hardware::input::read_text(std::path::Path::new(base_name), "profile")
                    .map_err(|e| {
                        usage_error(format!(
                            "--base {base_name}: not a built-in profile (see costsim hardware) \
                             nor a readable file ({e})"
                        ))
                    })?;
            costsim_hardware::whole_profile_text(&raw, base_name).map_err(usage_error)?
        }
    };
    Ok((base_name.to_string(), text))
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `--loop`: fit a Trainer loop's work from step records and write the base profile with it.
fn training_loop(args: &CalibrateArgs) -> Result<String> {
    use costsim_validate::steploop;
    let (base_name, base_text) = base_text(args, "--loop")?;
    let mut records = Vec::new();
    for f in crate::validate::trace_files(&args.loop_records)? {
        let r = steploop::read_step_record(&f).map_err(usage_error)?;
        records.push((r, f.display().to_string()));
    }
    let fit = steploop::fit_loop(&records).map_err(usage_error)?;
    let base = costsim_hardware::parse_profile(&base_text, &base_name).map_err(usage_error)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-loop", base.name));
    let text =
        steploop::write_loop_profile(&base_text, &name, &fit, &today()).map_err(usage_error)?;
    crate::files::write_atomic(&args.out, &text)?;
    Ok(format!(
        "{}profile {} written to {} (use it with --hw {})\n",
        steploop::render(&fit),
        name,
        args.out.display(),
        args.out.display()
    ))
}

/// `--host`: fit the host costs from timed traces and write the base profile with them.
fn host(args: &CalibrateArgs) -> Result<String> {
    use costsim_validate::{host, trace};
    let (base_name, base_text) = base_text(args, "--host")?;
    let base_name = base_name.as_str();
    let mut traces = Vec::new();
    for f in crate::validate::trace_files(&args.host)? {
        let t = trace::read_trace(&f).map_err(usage_error)?;
        traces.push((t, f.display().to_string()));
    }
    let fit = host::fit_host(&traces).map_err(usage_error)?;
    let base = costsim_hardware::parse_profile(&base_text, base_name).map_err(usage_error)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-host", base.name));
    let date = today();
    let text = host::write_profile(&base_text, &name, &fit, &date).map_err(usage_error)?;
    crate::files::write_atomic(&args.out, &text)?;
    Ok(format!(
        "{}profile {} written to {} (use it with --hw {})\n",
        host::render(&fit),
        name,
        args.out.display(),
        args.out.display()
    ))
}
