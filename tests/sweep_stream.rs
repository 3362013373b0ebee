//! `costsim sweep` streams: a large sweep writes rows as they are computed with flat memory, and a
//! sweep killed part-way leaves nothing at `--out` (the rows so far live only in the temporary).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

/// The temporaries `costsim` stages beside `target` (`.NAME.costsim-*.tmp`).
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".tmp"))
        })
        .collect()
}

/// A sweep of 4.2 million points writing CSV to `out`: far more than any test waits for, so it
/// is still running when the test stops it.
fn spawn_big_sweep(out: &Path) -> std::process::Child {
    spawn_big_sweep_via(&[], out)
}

/// [`spawn_big_sweep`] run through `wrapper` (a command that execs the rest: `env
/// --default-signal=...`, `nohup`), so the child keeps the pid the test signals.
fn spawn_big_sweep_via(wrapper: &[&str], out: &Path) -> std::process::Child {
    let (program, wrapped): (&str, &[&str]) = match wrapper {
        [] => (env!("CARGO_BIN_EXE_costsim"), &[]),
        [first, rest @ ..] => (first, rest),
    };
    let mut cmd = Command::new(program);
    cmd.args(wrapped);
    if !wrapper.is_empty() {
        cmd.arg(env!("CARGO_BIN_EXE_costsim"));
    }
    cmd.args([
        "sweep",
        "--model",
        "llama2-7b",
        "--hw",
        "h200",
        "--method",
        "all",
        "--batch",
        "1..64",
        "--seq",
        "16..4096:+16",
        "--rank",
        "1..64",
        "--format",
        "csv",
        "--quiet",
        "--out",
    ])
    .arg(out)
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("run costsim")
}

/// Peak resident set of a running process, KiB (`VmHWM` in /proc/PID/status).
#[cfg(target_os = "linux")]
fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

#[cfg(target_os = "linux")]
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(target_os = "linux")]
#[test]
fn a_large_sweep_streams_in_flat_memory_and_a_killed_one_leaves_no_output() {
    // 4.2 million points: far more than the 8 MiB of CSV this test waits for, so the sweep is
    // still running when it is killed.
    let d = dir("sweep-stream");
    let out = d.join("big.csv");
    let mut child = spawn_big_sweep(&out);
    // Wait until 8 MiB of rows (about 45 000, several chunks) have reached the temporary,
    // noting the resident size once the first MiB is out (everything loaded, the first chunks
    // streamed).
    let start = Instant::now();
    let mut early: Option<u64> = None;
    let written = loop {
        let size = temporaries(&d)
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0);
        if early.is_none() && size >= 1 << 20 {
            early = status_kib(child.id(), "VmRSS:");
        }
        if size >= 8 << 20 {
            break size;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("the sweep ended early ({status}) with {size} bytes written");
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no 8 MiB of rows after 10 minutes ({size} bytes)"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let peak = peak_rss_kib(child.id()).expect("VmHWM of the running sweep");
    child.kill().expect("kill");
    child.wait().expect("reap");
    // Rows were written as they were computed, and memory did not grow with them: from the first
    // MiB of rows to the eighth, the resident size rose by less than 32 MiB (the rows written
    // meanwhile are 7 MiB of CSV; holding them would add several times that).
    assert!(written >= 8 << 20);
    let early = early.expect("VmRSS after the first MiB");
    assert!(
        peak < early + 32 * 1024,
        "resident {early} KiB after 1 MiB of rows, peak {peak} KiB after 8 MiB"
    );
    // The whole process stays under 100 MiB. A build with the `tch` feature maps libtorch,
    // whose pages count too, so the bound is held on the default build only.
    #[cfg(not(feature = "tch"))]
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB while writing");
    // Nothing at --out: the partial rows are only in the temporary (which a SIGKILL cannot
    // remove; the test does).
    assert!(!out.exists(), "a killed sweep left {}", out.display());
    let tmps = temporaries(&d);
    assert_eq!(tmps.len(), 1, "{tmps:?}");
    let partial = std::fs::read_to_string(&tmps[0]).expect("partial rows");
    assert!(partial.starts_with("model,hw,method,batch,seq,rank,"));
    assert!(partial
        .lines()
        .nth(1)
        .expect("a row")
        .starts_with("llama2-7b,h200,"));
    std::fs::remove_file(&tmps[0]).expect("remove temporary");
}

/// Wait until rows have reached `d`'s temporary: the sweep is under way.
fn wait_for_rows(d: &Path, child: &mut std::process::Child) {
    let start = Instant::now();
    while temporaries(d)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .all(|m| m.len() < 1 << 20)
    {
        assert!(child.try_wait().expect("wait").is_none(), "ended early");
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no rows written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send(signal: &str, child: &std::process::Child) {
    let sent = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
}

/// SIGINT, SIGTERM and SIGHUP end a sweep writing `--out` with status 128 + the signal (130,
/// 143, 129, as a shell reports a process the signal ended), and its handler removes the
/// temporary: nothing at `--out`, nothing beside it (until 2026-11-30 these signals
/// left tens of MB of partial rows in `.NAME.costsim-*.tmp`). The sweep starts with the three
/// at their default (`env --default-signal`), whatever this test inherited: a test run in a
/// script's background starts with SIGINT ignored, and so would the sweep.
#[cfg(target_os = "linux")]
#[test]
fn an_interrupted_sweep_leaves_no_output_and_no_temporary() {
    for (signal, code) in [("INT", 130), ("TERM", 143), ("HUP", 129)] {
        let d = dir(&format!("sweep-signal-{signal}"));
        let out = d.join("grid.csv");
        let mut child = spawn_big_sweep_via(&["env", "--default-signal=HUP,INT,TERM"], &out);
        wait_for_rows(&d, &mut child);
        send(signal, &child);
        let o = child.wait_with_output().expect("reap");
        assert_eq!(o.status.code(), Some(code), "SIG{signal}: {o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("interrupted; 1 unfinished"));
        assert!(!out.exists(), "SIG{signal} left {}", out.display());
        assert_eq!(temporaries(&d), Vec::<PathBuf>::new(), "SIG{signal}");
    }
}

/// A sweep started under `nohup` keeps SIGHUP ignored: it outlives a closed terminal (a handler
/// for it would end the run: found in review, 2026-11-30). SIGTERM, which `nohup` leaves alone,
/// is still handled: the run ends with status 143 and removes its temporary (until the handler
/// covered each signal on its own, such a run had none, and SIGTERM left its temporary).
#[cfg(target_os = "linux")]
#[test]
fn a_sweep_under_nohup_outlives_a_hangup() {
    let d = dir("sweep-nohup");
    let out = d.join("grid.csv");
    let mut child = spawn_big_sweep_via(&["env", "--default-signal=HUP,INT,TERM", "nohup"], &out);
    wait_for_rows(&d, &mut child);
    send("HUP", &child);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "a hangup ended a nohup run"
    );
    send("TERM", &child);
    let o = child.wait_with_output().expect("reap");
    assert_eq!(o.status.code(), Some(143), "{o:?}");
    assert!(!out.exists());
    assert_eq!(temporaries(&d), Vec::<PathBuf>::new());
}

#[test]
fn a_failed_sweep_leaves_no_output_and_no_temporary() {
    // --format table holds every row, so it refuses a grid this size before evaluating it; the
    // error is a usage error and nothing is created.
    let d = dir("sweep-refused");
    let out = d.join("t.txt");
    let o = Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args([
            "sweep", "--model", "gpt2", "--hw", "a100", "--seq", "1..1000", "--rank", "1..100",
            "--format", "table", "--out",
        ])
        .arg(&out)
        .output()
        .expect("run costsim");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("401000 points") && err.contains("--format csv"),
        "{err}"
    );
    assert!(!out.exists());
    assert!(temporaries(&d).is_empty());
}

#[test]
fn a_sweep_whose_size_overflows_is_a_usage_error() {
    // 10^6 batches × 10^6 sequences × (1 + 4·10^6) method-rank pairs × 5 devices: 2·10^19
    // points, more than 2^64, which must not wrap around to a small number and slip under the
    // cap.
    let o = Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args([
            "sweep",
            "--model",
            "gpt2",
            "--hw",
            "a100,l4,h100,h200,a6000",
            "--method",
            "all",
            "--batch",
            "1..1000000",
            "--seq",
            "1..1000000",
            "--rank",
            "1..1000000",
            "--format",
            "csv",
        ])
        .output()
        .expect("run costsim");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("more than 2^64 points") && err.contains("split"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn a_reader_that_stops_early_ends_a_streamed_sweep_quietly() {
    // `costsim sweep ... | head`: once the pipe closes, the sweep stops with exit 0 and no
    // error, in CSV and in JSON (whose serializer wraps the closed pipe in its own error).
    use std::io::Read;
    for format in ["csv", "json"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_costsim"))
            .args([
                "sweep",
                "--model",
                "llama2-7b",
                "--hw",
                "h200",
                "--method",
                "all",
                "--batch",
                "1..64",
                "--seq",
                "16..4096:+16",
                "--rank",
                "1..64",
                "--quiet",
                "--format",
            ])
            .arg(format)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run costsim");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut first = [0u8; 4096];
        stdout.read_exact(&mut first).expect("the first rows");
        drop(stdout);
        let out = child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(0), "{format}");
        assert!(
            out.stderr.is_empty(),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// An invalid point has no numbers: empty CSV fields (what CSV readers take as missing, so a
/// numeric column stays numeric), null in JSON, "-" in the table; its reason in `message`.
#[test]
fn invalid_points_have_empty_csv_fields_and_null_json_numbers() {
    let run = |format: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_costsim"))
            .args([
                "sweep", "--model", "gpt2", "--hw", "a100", "--method", "lora", "--batch", "1",
                "--seq", "128,2048", "--quiet", "--format", format,
            ])
            .output()
            .expect("run costsim");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let csv = run("csv");
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().expect("header").split(',').collect();
    let invalid = lines
        .find(|l| l.contains(",invalid,"))
        .expect("the seq-2048 point");
    // The message holds no comma here, so a plain split reads the row.
    let cells: Vec<&str> = invalid.split(',').collect();
    assert_eq!(cells.len(), head.len(), "{invalid}");
    for col in [
        "step_ms",
        "forward_ms",
        "backward_ms",
        "optimizer_ms",
        "loop_ms",
        "tokens_per_s",
        "peak_memory_gib",
        "trainable_params",
        "kernels_per_step",
        "dominant_bound",
    ] {
        let i = head.iter().position(|h| *h == col).expect(col);
        assert_eq!(cells[i], "", "{col} of an invalid point");
    }
    assert!(invalid.ends_with("use --seq 1024 or less"), "{invalid}");
    let json: serde_json::Value = serde_json::from_str(&run("json")).expect("JSON");
    let bad = &json[1];
    assert_eq!(bad["status"], "invalid");
    for key in [
        "step_ms",
        "tokens_per_s",
        "peak_memory_gib",
        "dominant_bound",
    ] {
        assert!(bad[key].is_null(), "{key}: {}", bad[key]);
    }
    let table = run("table");
    let row = table.lines().find(|l| l.contains("invalid")).expect("row");
    assert!(row.contains(" - "), "{row}");
}

/// `--out` with a bare file name (no folder part) is written in the working directory, its
/// temporary beside it in "." (the folder of a bare name is empty, which is not a folder to
/// create a temporary in): one header line and one row for one point, no temporary left.
#[test]
fn a_bare_file_name_is_written_in_the_working_directory() {
    let d = tempfile::tempdir().expect("tempdir");
    let o = Command::new(env!("CARGO_BIN_EXE_costsim"))
        .current_dir(d.path())
        .args([
            "sweep", "--model", "gpt2", "--hw", "a100", "--method", "full", "--batch", "1",
            "--seq", "128", "--format", "csv", "--quiet", "--out", "rows.csv",
        ])
        .output()
        .expect("run costsim");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(d.path().join("rows.csv")).expect("rows.csv");
    assert_eq!(text.lines().count(), 2, "{text}");
    let names: Vec<String> = std::fs::read_dir(d.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["rows.csv"]);
}

/// A table or Markdown sweep holds every row, so it stops at `MAX_TABLE_POINTS` (100 000):
/// 100 001 points (batch 1..100001, one of everything else) are refused before any work, with
/// exit 2 and the streaming formats named; nothing is printed.
#[test]
fn a_table_sweep_over_the_cap_is_refused() {
    for format in ["table", "markdown"] {
        let o = Command::new(env!("CARGO_BIN_EXE_costsim"))
            .args([
                "sweep",
                "--model",
                "gpt2",
                "--hw",
                "a100",
                "--method",
                "full",
                "--batch",
                "1..100001",
                "--seq",
                "128",
                "--format",
                format,
            ])
            .output()
            .expect("run costsim");
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("100001") || err.contains("100 001"), "{err}");
        assert!(err.contains("csv or json"), "{err}");
        assert!(err.contains(&format!("--format {format}")), "{err}");
        assert!(o.stdout.is_empty());
    }
}

/// `--train-layers default` keeps each method's own layers: paca-upper-half on GPT-2's 12
/// layers trains the upper half, 6..11 (12 / 2 = 6 below the cut), and LoRA all 12, 0..11.
/// Without --quiet a sweep written to --out says so on stderr ("wrote FILE (N points in …)");
/// with --quiet it prints nothing.
#[test]
fn default_layers_and_the_closing_line() {
    let d = tempfile::tempdir().expect("tempdir");
    let out = d.path().join("rows.csv");
    let run = |quiet: bool| {
        let mut args = vec![
            "sweep",
            "--model",
            "gpt2",
            "--hw",
            "a100",
            "--method",
            "paca-upper-half,lora",
            "--batch",
            "1",
            "--seq",
            "128",
            "--train-layers",
            "default",
            "--format",
            "csv",
            "--out",
        ];
        args.push(out.to_str().expect("utf-8 path"));
        if quiet {
            args.push("--quiet");
        }
        Command::new(env!("CARGO_BIN_EXE_costsim"))
            .args(&args)
            .output()
            .expect("run costsim")
    };
    let o = run(false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(&format!("wrote {} (2 points in ", out.display())),
        "{err}"
    );
    let text = std::fs::read_to_string(&out).expect("rows");
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().expect("header").split(',').collect();
    let (m, l) = (
        head.iter().position(|c| *c == "method").expect("method"),
        head.iter()
            .position(|c| *c == "train_layers")
            .expect("train_layers"),
    );
    let rows: Vec<(String, String)> = lines
        .map(|r| {
            let c: Vec<&str> = r.split(',').collect();
            (c[m].to_string(), c[l].to_string())
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("paca-upper-half".to_string(), "6..11".to_string()),
            ("lora".to_string(), "0..11".to_string())
        ]
    );
    let o = run(true);
    assert!(o.status.success());
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
