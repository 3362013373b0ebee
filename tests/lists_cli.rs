//! `costsim models` and `costsim hardware` in every format: JSON and CSV carry the same rows and
//! fields (read back by column name), and the numbers are checked against hand-worked values.

mod common;

use common::{csv_records, stdout_ok as run};
use serde_json::Value;

/// Every JSON row equals its CSV row, field by field.
fn same_rows(json: &Value, csv: &str) {
    let rows = json.as_array().expect("an array");
    let recs = csv_records(csv);
    assert_eq!(rows.len(), recs.len());
    for (j, c) in rows.iter().zip(&recs) {
        let obj = j.as_object().expect("object");
        assert_eq!(obj.len(), c.len(), "same columns: {obj:?} {c:?}");
        for (k, v) in obj {
            let cell = &c[k];
            match v {
                Value::String(s) => assert_eq!(cell, s, "{k}"),
                Value::Number(n) => {
                    let x: f64 = cell.parse().expect("number");
                    assert_eq!(x, n.as_f64().expect("f64"), "{k}");
                }
                Value::Bool(b) => assert_eq!(cell, &b.to_string(), "{k}"),
                Value::Array(a) => {
                    let parts: Vec<&str> = a.iter().map(|x| x.as_str().expect("str")).collect();
                    assert_eq!(cell, &parts.join(";"), "{k}");
                }
                // A missing value (a GPU without a price) is an empty cell.
                Value::Null => assert_eq!(cell, "", "{k}"),
                other => panic!("unexpected {other}"),
            }
        }
    }
}

#[test]
fn models_in_every_format() {
    let json: Value = serde_json::from_str(&run(&["models", "--format", "json"])).expect("JSON");
    same_rows(&json, &run(&["models", "--format", "csv"]));
    let rows = json.as_array().expect("rows");
    assert_eq!(rows.len(), 10);
    let l7 = rows
        .iter()
        .find(|r| r["name"] == "llama2-7b")
        .expect("llama2-7b");
    // Worked by hand: per layer 4·4096² (attention) + 3·4096·11008 (MLP) + 2·4096 (norms)
    // = 202,383,360; × 32 layers = 6,476,267,520; untied embedding and head 2·32000·4096 =
    // 262,144,000; final norm 4096. Total 6,738,415,616.
    assert_eq!(l7["params"], 6_738_415_616u64);
    assert_eq!(
        (l7["heads"].clone(), l7["kv_heads"].clone()),
        (32.into(), 32.into())
    );
    let md = run(&["models", "--format", "markdown"]);
    assert_eq!(md.lines().count(), 2 + 10);
    assert!(md.starts_with("| name | family |"), "{md}");
}

#[test]
fn hardware_in_every_format() {
    let json: Value = serde_json::from_str(&run(&["hardware", "--format", "json"])).expect("JSON");
    same_rows(&json, &run(&["hardware", "--format", "csv"]));
    let rows = json.as_array().expect("rows");
    assert_eq!(rows.len(), 14, "13 GPUs and the generic CPU");
    let a6000 = rows.iter().find(|r| r["name"] == "a6000").expect("a6000");
    // 48 GiB of GDDR6 at 768 GB/s (NVIDIA's RTX A6000 datasheet).
    assert_eq!(a6000["memory_gib"].as_f64(), Some(48.0));
    assert_eq!(a6000["bandwidth_gbps"].as_f64(), Some(768.0));
    // No dated public price for the A6000; the A100 80GB's is AWS's p4de.24xlarge / 8:
    // $27.44705 / 8 = $3.4309 per GPU-hour.
    assert!(a6000["usd_per_hour"].is_null());
    let a100 = rows
        .iter()
        .find(|r| r["name"] == "a100-80gb-sxm")
        .expect("a100");
    assert!((a100["usd_per_hour"].as_f64().unwrap() - 27.44705 / 8.0).abs() < 1e-4);
    // The H200's datasheet peaks (hardware/profiles/h200.toml: dense fp32 66.9, tf32 494.7,
    // bf16 989.4 TFLOP/s) and its 1.3 µs launch floor, listed in the units the columns name.
    let h200 = rows.iter().find(|r| r["name"] == "h200").expect("h200");
    let close = |key: &str, want: f64| {
        let got = h200[key].as_f64().unwrap_or(f64::NAN);
        assert!((got - want).abs() < 1e-9, "{key}: {got} against {want}");
    };
    close("peak_fp32_tflops", 66.9);
    close("peak_tf32_tflops", 494.7);
    close("peak_bf16_tflops", 989.4);
    close("launch_floor_us", 1.3);
    let table = run(&["hardware"]);
    assert!(table.contains("uncalibrated"), "{table}");
    assert!(!run(&["hardware", "--format", "csv"]).contains("uncalibrated"));
}
