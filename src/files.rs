//! Every file the CLI writes goes through here: a uniquely named temporary in the target's own
//! directory (so the rename never crosses a file system), written in full, flushed to disk
//! (`fsync`), then renamed over the target. A reader sees the old file or the whole new one, never
//! half of one; a run that fails, panics or is stopped before `commit` leaves the target
//! untouched. The temporary is removed on drop, and on SIGINT, SIGTERM or SIGHUP, which would
//! otherwise end the process without running drops, by the handler
//! [`remove_temporaries_on_signal`] installs (the run then exits 128 + the signal: 130, 143 or
//! 129). Only a `kill -9` can still
//! leave a `.costsim-*.tmp` behind, which no later run reads or removes, since its name is
//! unique.
//!
//! Targets that are not regular files (directories, FIFOs, devices, `/proc` entries) are refused
//! with a usage error rather than replaced; a symbolic link is followed to its target, which must
//! itself be a regular file or not exist, and the link keeps pointing at the new file.
//!
//! Several outputs of one command are staged together: create every [`Output`], write them all,
//! then [`commit_all`], so a failure in any of them leaves every target as it was.

use crate::errors::usage_error;
use anyhow::{Context, Result};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A file being written: a temporary beside the target until [`Output::commit`].
pub struct Output {
    target: PathBuf,
    tmp: BufWriter<tempfile::NamedTempFile>,
    /// Listed for the signal handler while it lives (dropped after `tmp` is renamed or removed).
    _live: Live,
}

/// The temporaries being written now, for [`remove_temporaries_on_signal`].
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A temporary's place in [`LIVE`], from its creation to its drop.
struct Live(PathBuf);

impl Live {
    fn new(path: &Path) -> Self {
        live().push(path.to_path_buf());
        Live(path.to_path_buf())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut l = live();
        if let Some(i) = l.iter().position(|p| *p == self.0) {
            l.swap_remove(i);
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP (Ctrl-C, `kill`, a closed terminal), remove every temporary
/// still being written and exit with status 128 + the signal (130, 143, 129), as a shell reports
/// a process the signal ended. Without it these signals end the process without running drops,
/// so an interrupted sweep left tens of MB of partial rows beside its `--out` (found by an
/// audit, 2026-11-30). Call once, at start. The signals are received on a thread of their own
/// (signal-hook's iterator), so the cleanup runs as ordinary code, not in a signal handler.
///
/// A signal the process started with ignored (`nohup` ignores SIGHUP, a script's background job
/// SIGINT) stays ignored, so such a run outlives what its user meant it to; the others are
/// handled (Linux reads the ignored set from `/proc/self/status`; elsewhere on Unix all three are
/// handled; not on other systems).
pub fn remove_temporaries_on_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let ignored = ignored_signals();
        let handled: Vec<i32> = [SIGHUP, SIGINT, SIGTERM]
            .into_iter()
            .filter(|&s| ignored & (1u64 << (s - 1)) == 0)
            .collect();
        if handled.is_empty() {
            return Ok(());
        }
        let mut signals = signal_hook::iterator::Signals::new(&handled)
            .context("installing the handler that removes temporaries on a signal")?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    let removed = live()
                        .iter()
                        .filter(|p| std::fs::remove_file(p).is_ok())
                        .count();
                    if removed > 0 {
                        note!("costsim: interrupted; {removed} unfinished output file(s) removed");
                    } else {
                        note!("costsim: interrupted");
                    }
                    // The shell's convention for a process ended by a signal.
                    std::process::exit(128 + signal);
                }
            })
            .context("starting the thread that removes temporaries on a signal")?;
    }
    Ok(())
}

/// The signals this process started with ignored: the `SigIgn` mask of `/proc/self/status`
/// (bit n − 1 for signal n); none where it cannot be read.
#[cfg(unix)]
fn ignored_signals() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or(0)
}

/// Where `path` really lives: a symbolic link is resolved (so the link survives the rename), and
/// whatever is there must be a regular file.
fn resolve_target(path: &Path) -> Result<PathBuf> {
    if path.as_os_str().is_empty() {
        return Err(usage_error(
            "the output path is empty; name a file to write",
        ));
    }
    if path.as_os_str().to_string_lossy().ends_with('/') {
        return Err(usage_error(format!(
            "the output path {} ends with '/', which names a folder; name a file (remove the \
             trailing /)",
            path.display()
        )));
    }
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(t) => t,
            // A dangling link: write where it points.
            Err(_) => {
                let dest = std::fs::read_link(path)
                    .with_context(|| format!("reading the link {}", path.display()))?;
                match path.parent() {
                    Some(dir) if dest.is_relative() => dir.join(dest),
                    _ => dest,
                }
            }
        },
        _ => path.to_path_buf(),
    };
    match std::fs::metadata(&target) {
        // A rename would replace a file its owner made read-only, which writing it would not.
        Ok(m) if m.is_file() && m.permissions().readonly() => Err(usage_error(format!(
            "{} is read-only; make it writable (chmod u+w) or name another file",
            path.display()
        ))),
        Ok(m) if m.is_file() => Ok(target),
        Ok(m) => Err(usage_error(format!(
            "{} is {}, not a regular file; costsim writes only regular files (name a file path)",
            path.display(),
            if m.is_dir() {
                "a directory"
            } else {
                "a special file"
            }
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(target),
        Err(e) => Err(usage_error(format!(
            "cannot use {} as output: {e}",
            path.display()
        ))),
    }
}

/// Whether two output paths name the same file (after links and `.`/`..` in their folders are
/// resolved): writing both would leave only the second.
pub fn same_target(a: &Path, b: &Path) -> bool {
    let key = |p: &Path| -> Option<PathBuf> {
        let t = resolve_target(p).ok()?;
        let dir = match t.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Some(std::fs::canonicalize(dir).ok()?.join(t.file_name()?))
    };
    match (key(a), key(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The error of a failed write to `path`: "cannot write PATH: why". Exit code 2 (a usage
/// error) when another `--out` fixes it (a missing folder, no permission, a directory, a
/// read-only file system, a name the file system refuses); 1 when the machine does (a full
/// disk or quota, an I/O error): the same for every command, whether the bytes failed while
/// streaming (`sweep`) or at once (`plot`, `write_atomic`).
pub fn write_error(path: &Path, e: &std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind as K;
    let message = format!("cannot write {}: {e}", path.display());
    match e.kind() {
        K::NotFound
        | K::PermissionDenied
        | K::IsADirectory
        | K::NotADirectory
        | K::ReadOnlyFilesystem
        | K::InvalidFilename
        | K::InvalidInput => usage_error(message),
        K::StorageFull | K::QuotaExceeded | K::FileTooLarge => {
            anyhow::anyhow!("{message}; free some space (or write elsewhere) and run it again")
        }
        _ => anyhow::anyhow!(message),
    }
}

impl Output {
    /// Start writing `path`: checks the target, creates the temporary beside it.
    pub fn create(path: &Path) -> Result<Output> {
        let target = resolve_target(path)?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.costsim-");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        // The file a plain create would make (0666 less the umask), not tempfile's private
        // 0600: what lands at `path` is an ordinary output file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let tmp = builder.tempfile_in(&dir).map_err(|e| {
            let err = write_error(path, &e);
            if err.downcast_ref::<crate::errors::UsageError>().is_some() {
                usage_error(format!(
                    "{err} (the folder {} must exist and be writable)",
                    dir.display()
                ))
            } else {
                err
            }
        })?;
        // A file replaced keeps its permissions, as writing it in place would.
        if let Ok(meta) = std::fs::metadata(&target) {
            tmp.as_file()
                .set_permissions(meta.permissions())
                .map_err(|e| write_error(path, &e))?;
        }
        let live = Live::new(tmp.path());
        Ok(Output {
            target,
            tmp: BufWriter::with_capacity(1 << 16, tmp),
            _live: live,
        })
    }

    /// Flush, `fsync`, and rename over the target.
    pub fn commit(self) -> Result<()> {
        self.finish()?.persist()
    }

    /// Flush and `fsync`: everything written is on disk under the temporary name, where a full
    /// disk shows (a `BufWriter` holds up to 64 KiB until here).
    fn finish(self) -> Result<Finished> {
        let Output { target, tmp, _live } = self;
        #[cfg(test)]
        if tests::FULL_DISK_AT.with(|t| t.borrow().as_deref() == Some(target.as_path())) {
            let e = std::io::Error::from(std::io::ErrorKind::StorageFull);
            return Err(write_error(&target, &e));
        }
        let file = tmp
            .into_inner()
            .map_err(|e| write_error(&target, e.error()))?;
        file.as_file()
            .sync_all()
            .map_err(|e| write_error(&target, &e))?;
        Ok(Finished {
            target,
            file,
            _live,
        })
    }
}

/// An [`Output`] on disk under its temporary name, to be renamed over its target.
struct Finished {
    target: PathBuf,
    file: tempfile::NamedTempFile,
    _live: Live,
}

impl Finished {
    /// Rename over the target.
    fn persist(self) -> Result<()> {
        let Finished { target, file, .. } = self;
        file.persist(&target)
            .map_err(|e| write_error(&target, &e.error))?;
        // Make the rename itself durable where the platform allows opening a directory.
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.tmp.write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

/// Write `contents` to `path` through a temporary and rename.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    let mut out = Output::create(path)?;
    out.write_all(contents.as_ref())
        .map_err(|e| write_error(path, &e))?;
    out.commit()
}

/// Commit several staged outputs; call only once every one of them has been written. Every one
/// is flushed to disk before any is renamed, so one that cannot be written (a full disk) leaves
/// none of them at its target: a chart is not left without the data asked for beside it.
pub fn commit_all(outputs: Vec<Output>) -> Result<()> {
    let finished = outputs
        .into_iter()
        .map(Output::finish)
        .collect::<Result<Vec<_>>>()?;
    for f in finished {
        f.persist()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// A target whose flush fails as on a full disk (`Output::finish`), in this thread's
        /// test only.
        pub(super) static FULL_DISK_AT: std::cell::RefCell<Option<PathBuf>> =
            const { std::cell::RefCell::new(None) };
    }

    #[test]
    fn outputs_committed_together_leave_none_when_one_cannot_be_written() {
        // A chart and its data (`plot --data`): the data's flush fails as on a full disk, so the
        // chart, staged first and flushed fine, must not be renamed into place either.
        let dir = tempfile::tempdir().expect("tempdir");
        let (chart, data) = (dir.path().join("c.svg"), dir.path().join("c.json"));
        let mut a = Output::create(&chart).expect("create");
        a.write_all(b"<svg/>").expect("write");
        let mut b = Output::create(&data).expect("create");
        b.write_all(b"{}").expect("write");
        FULL_DISK_AT.with(|t| *t.borrow_mut() = Some(data.clone()));
        let e = commit_all(vec![a, b]).expect_err("the data cannot be written");
        FULL_DISK_AT.with(|t| *t.borrow_mut() = None);
        assert!(e.to_string().contains("free some space"), "{e}");
        assert!(!chart.exists() && !data.exists());
        assert!(leftovers(dir.path()).is_empty());
        // Without the failure both land.
        let mut a = Output::create(&chart).expect("create");
        a.write_all(b"<svg/>").expect("write");
        let mut b = Output::create(&data).expect("create");
        b.write_all(b"{}").expect("write");
        commit_all(vec![a, b]).expect("both written");
        assert_eq!(std::fs::read_to_string(&chart).expect("read"), "<svg/>");
        assert_eq!(std::fs::read_to_string(&data).expect("read"), "{}");
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn a_path_ending_in_a_slash_is_refused_naming_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = format!("{}/x.csv/", dir.path().display());
        let e = Output::create(Path::new(&p))
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("remove the trailing /"), "{e}");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn writes_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("out.csv");
        std::fs::write(&p, "old").expect("seed");
        write_atomic(&p, "new contents\n").expect("write");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "new contents\n");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn dropped_output_leaves_target_and_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("out.csv");
        std::fs::write(&p, "old").expect("seed");
        {
            let mut o = Output::create(&p).expect("create");
            o.write_all(b"half").expect("write");
        }
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "old");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn an_existing_dot_tmp_file_is_not_touched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("out.csv");
        let stray = dir.path().join("out.csv.tmp");
        std::fs::write(&stray, "someone else's").expect("seed");
        write_atomic(&p, "x").expect("write");
        assert_eq!(
            std::fs::read_to_string(&stray).expect("read"),
            "someone else's"
        );
    }

    #[test]
    fn directories_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = write_atomic(dir.path(), "x").expect_err("a directory is not a file");
        assert!(err.to_string().contains("a directory"), "{err}");
        assert!(err.downcast_ref::<crate::errors::UsageError>().is_some());
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_refused_and_symlinks_kept() {
        // A FIFO of the test's own, not /dev/null: a writer that wrongly accepted a special
        // file would rename its temporary over it, and /dev/null is shared (cargo-mutants ran
        // such a mutant as root and left /dev/null a regular file).
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let err = write_atomic(&fifo, "x").expect_err("a FIFO");
        assert!(err.to_string().contains("special file"), "{err}");

        let real = dir.path().join("real.csv");
        let link = dir.path().join("link.csv");
        std::fs::write(&real, "old").expect("seed");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        write_atomic(&link, "new").expect("write");
        assert!(std::fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&real).expect("read"), "new");
    }

    #[cfg(unix)]
    #[test]
    fn a_dangling_relative_link_is_written_where_it_points_from_its_folder() {
        // dir/link.csv → "sub/real.csv" (relative, not there yet): the file is created at
        // dir/sub/real.csv, read from the link's folder, not from the working directory (which
        // has no "sub"), and the link stays a link.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("sub");
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink("sub/real.csv", &link).expect("symlink");
        assert!(
            !Path::new("sub").exists(),
            "the test needs a working directory without sub/"
        );
        write_atomic(&link, "new").expect("write");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sub/real.csv")).expect("read"),
            "new"
        );
        assert!(std::fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink());
    }

    /// A file that does not exist yet is created (the not-found case of `resolve_target`).
    #[test]
    fn a_new_file_is_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("fresh.csv");
        write_atomic(&p, "a,b\n").expect("write");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "a,b\n");
        assert!(leftovers(dir.path()).is_empty());
    }

    /// `Write::write` reports the bytes it took (3 of "abc"), and `flush` pushes the buffer into
    /// the temporary file before `commit`: its size is 3 bytes then, not 0 (the buffer holds 64 KiB).
    #[test]
    fn write_counts_bytes_and_flush_reaches_the_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("out.csv");
        let mut o = Output::create(&p).expect("create");
        assert_eq!(o.write(b"abc").expect("write"), 3);
        o.flush().expect("flush");
        let tmp: Vec<u64> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry"))
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .map(|e| e.metadata().expect("meta").len())
            .collect();
        assert_eq!(tmp, [3]);
        o.commit().expect("commit");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "abc");
    }

    /// A path under a regular file (`file/x.csv`) cannot be looked up (not a directory, not
    /// "not found"): refused as such, naming the path, not taken for a new file.
    #[test]
    fn a_path_under_a_file_is_refused_as_unusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("seed");
        let err = write_atomic(&file.join("x.csv"), "y").expect_err("under a regular file");
        assert!(err.downcast_ref::<crate::errors::UsageError>().is_some());
        assert!(err.to_string().starts_with("cannot use "), "{err}");
    }

    #[test]
    fn a_full_disk_is_not_a_usage_error_and_a_bad_path_is() {
        use std::io::{Error, ErrorKind};
        let p = Path::new("out.csv");
        let usage = |k: ErrorKind| {
            write_error(p, &Error::from(k))
                .downcast_ref::<crate::errors::UsageError>()
                .is_some()
        };
        for k in [
            ErrorKind::StorageFull,
            ErrorKind::QuotaExceeded,
            ErrorKind::FileTooLarge,
            ErrorKind::Other,
        ] {
            assert!(!usage(k), "{k:?}");
        }
        for k in [
            ErrorKind::NotFound,
            ErrorKind::PermissionDenied,
            ErrorKind::IsADirectory,
            ErrorKind::ReadOnlyFilesystem,
        ] {
            assert!(usage(k), "{k:?}");
        }
        let full = write_error(p, &Error::from(ErrorKind::StorageFull)).to_string();
        assert!(
            full.starts_with("cannot write out.csv: ") && full.contains("free some space"),
            "{full}"
        );
    }

    #[test]
    fn a_read_only_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kept.csv");
        std::fs::write(&path, "mine").unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&path, perms).unwrap();
        let err = write_atomic(&path, "new").unwrap_err();
        assert!(err.downcast_ref::<crate::errors::UsageError>().is_some());
        assert!(err.to_string().contains("is read-only"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
    }

    #[test]
    fn missing_folder_is_a_usage_error() {
        let err = write_atomic(Path::new("/nonexistent-costsim-dir/x.csv"), "x")
            .expect_err("no such folder");
        assert!(err.downcast_ref::<crate::errors::UsageError>().is_some());
        assert!(err.to_string().contains("must exist"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn outputs_get_a_plain_file_s_permissions_and_replacements_keep_theirs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // What a plain create makes here (0666 less this process's umask).
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let new = dir.path().join("new.csv");
        write_atomic(&new, "a\n").unwrap();
        assert_eq!(mode(&new), mode(&plain), "not tempfile's private 0600");
        // An existing file keeps its own mode (here 0640, which no umask would produce from
        // 0666 by itself in a test run with the usual 022).
        let old = dir.path().join("old.csv");
        std::fs::write(&old, "x").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&old, "b\n").unwrap();
        assert_eq!(mode(&old), 0o640);
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "b\n");
    }

    #[test]
    fn the_same_file_under_two_spellings_is_one_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        let a = d.join("sub/m.svg");
        assert!(same_target(&a, &d.join("sub/../sub/./m.svg")));
        assert!(!same_target(&a, &d.join("sub/m.json")));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&a, d.join("link.svg")).unwrap();
            assert!(same_target(&a, &d.join("link.svg")));
        }
    }
}
