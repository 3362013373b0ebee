//! `costsim models` and `costsim hardware`: the built-in models and device profiles, as a table,
//! JSON, CSV or Markdown. JSON and CSV carry the same fields, in plain units (counts, TFLOP/s,
//! GB/s, GiB, µs); the table rounds for reading. `costsim hardware show NAME` prints one built-in
//! profile's TOML as compiled in.

use crate::errors::usage_error;
use crate::render::{count, csv_text, md_table, text_table, Format};
use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Serialize)]
struct ModelRow {
    name: &'static str,
    family: &'static str,
    layers: u32,
    hidden: u64,
    heads: u64,
    kv_heads: u64,
    intermediate: u64,
    vocab: u64,
    max_positions: u64,
    params: u64,
    published_params: u64,
}

#[derive(Serialize)]
struct HardwareRow {
    name: String,
    aliases: Vec<String>,
    display_name: String,
    sms: u32,
    peak_fp32_tflops: f64,
    peak_tf32_tflops: f64,
    peak_bf16_tflops: f64,
    bandwidth_gbps: f64,
    memory_gib: f64,
    gemm_efficiency: f64,
    launch_floor_us: f64,
    calibrated: bool,
    /// The profile's on-demand price per GPU-hour, US dollars (null: none; see
    /// `costsim hardware show NAME` for its source and date).
    usd_per_hour: Option<f64>,
}

/// Render rows whose JSON objects have the columns `head`: JSON straight from serde, CSV and
/// Markdown with every field, the table from `table_cells`.
fn render<T: Serialize>(
    rows: &[T],
    head: &[&str],
    table_head: &[&str],
    table_cells: impl Fn(&T) -> Vec<String>,
    format: Format,
) -> Result<String> {
    if format == Format::Json {
        return Ok(serde_json::to_string_pretty(rows)? + "\n");
    }
    let fields = |r: &T| -> Result<Vec<String>> {
        let v = serde_json::to_value(r)?;
        Ok(head
            .iter()
            .map(|h| match &v[*h] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(";"),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            })
            .collect())
    };
    let owned = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Ok(match format {
        Format::Csv => csv_text(
            &owned(head),
            &rows.iter().map(fields).collect::<Result<Vec<_>>>()?,
        ),
        Format::Markdown => md_table(
            &owned(head),
            &rows.iter().map(fields).collect::<Result<Vec<_>>>()?,
        ),
        _ => text_table(
            &owned(table_head),
            &rows.iter().map(table_cells).collect::<Vec<_>>(),
        ),
    })
}

pub fn models(format: Format) -> Result<String> {
    let rows: Vec<ModelRow> = costsim_model::PRESETS
        .iter()
        .map(|p| {
            let m = p.config();
            ModelRow {
                name: p.name,
                family: match m.family {
                    costsim_model::Family::Gpt2 => "gpt2",
                    costsim_model::Family::Llama => "llama",
                },
                layers: m.layers,
                hidden: m.hidden,
                heads: m.heads,
                kv_heads: m.kv_heads,
                intermediate: m.intermediate,
                vocab: m.vocab,
                max_positions: m.max_positions,
                params: m.total_params(),
                published_params: p.published_params as u64,
            }
        })
        .collect();
    render(
        &rows,
        &[
            "name",
            "family",
            "layers",
            "hidden",
            "heads",
            "kv_heads",
            "intermediate",
            "vocab",
            "max_positions",
            "params",
            "published_params",
        ],
        &[
            "model",
            "family",
            "layers",
            "hidden",
            "heads/kv",
            "ffn",
            "vocab",
            "positions",
            "params",
            "",
            "published",
        ],
        |m| {
            vec![
                m.name.to_string(),
                m.family.to_string(),
                m.layers.to_string(),
                m.hidden.to_string(),
                format!("{}/{}", m.heads, m.kv_heads),
                m.intermediate.to_string(),
                m.vocab.to_string(),
                m.max_positions.to_string(),
                m.params.to_string(),
                count(m.params as f64),
                count(m.published_params as f64),
            ]
        },
        format,
    )
}

pub fn hardware(format: Format) -> Result<String> {
    let profiles = costsim_hardware::builtin_profiles().context("built-in profiles")?;
    let rows: Vec<HardwareRow> = profiles
        .iter()
        .map(|p| HardwareRow {
            name: p.name.clone(),
            aliases: p.aliases.clone(),
            display_name: p.display_name.clone(),
            sms: p.sms,
            peak_fp32_tflops: p.peak_fp32_flops / 1e12,
            peak_tf32_tflops: p.peak_tf32_flops / 1e12,
            peak_bf16_tflops: p.peak_bf16_flops / 1e12,
            bandwidth_gbps: p.bandwidth_bps / 1e9,
            memory_gib: p.memory_bytes / (1u64 << 30) as f64,
            gemm_efficiency: p.gemm_efficiency,
            launch_floor_us: p.launch_floor_s * 1e6,
            calibrated: p.is_calibrated(),
            usd_per_hour: p.price.as_ref().map(|pr| pr.usd_per_hour),
        })
        .collect();
    let mut s = render(
        &rows,
        &[
            "name",
            "aliases",
            "display_name",
            "sms",
            "peak_fp32_tflops",
            "peak_tf32_tflops",
            "peak_bf16_tflops",
            "bandwidth_gbps",
            "memory_gib",
            "gemm_efficiency",
            "launch_floor_us",
            "calibrated",
            "usd_per_hour",
        ],
        &[
            "name", "alias", "device", "SMs", "fp32 TF", "tf32 TF", "bf16 TF", "GB/s", "GiB",
            "gemm eff", "floor us", "$/h",
        ],
        |p| {
            vec![
                p.name.clone(),
                p.aliases.join(","),
                p.display_name.clone(),
                p.sms.to_string(),
                format!("{:.1}", p.peak_fp32_tflops),
                format!("{:.1}", p.peak_tf32_tflops),
                format!("{:.1}", p.peak_bf16_tflops),
                format!("{:.0}", p.bandwidth_gbps),
                format!("{:.1}", p.memory_gib),
                format!("{:.2}", p.gemm_efficiency),
                format!("{:.1}", p.launch_floor_us),
                p.usd_per_hour.map_or("-".into(), |u| format!("{u:.2}")),
            ]
        },
        format,
    )?;
    if format == Format::Table {
        s.push_str(
            "\nEfficiencies and host costs are datasheet defaults or published figures, \
             uncalibrated\nwhere marked; each value's source is in hardware/profiles/NAME.toml \
             (costsim hardware show NAME).\n$/h: on-demand price per GPU-hour where a dated \
             public price was found (-: none; pass --price).\n",
        );
    }
    Ok(s)
}

/// The TOML of the built-in profile `name` (a name or alias), exactly as compiled in.
pub fn show_hardware(name: &str) -> Result<String> {
    if costsim_hardware::is_profile_path(name) {
        return Err(usage_error(format!(
            "`hardware show` prints a built-in profile, and {name} is a file; read the file \
             itself, or show the built-in it is based on (`costsim hardware` lists them)"
        )));
    }
    let (_, text) = costsim_hardware::builtin(name).map_err(|e| match e {
        // The resolver's hint about profile files applies to --hw, not to `show`.
        costsim_hardware::Error::UnknownDevice { name, hint, known } => {
            usage_error(format!("unknown GPU '{name}'{hint}; known GPUs: {known}"))
        }
        e => usage_error(e),
    })?;
    Ok(text.to_string())
}
