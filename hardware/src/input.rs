//! The one reader of input files (hardware profiles, config.json, results records, calibration
//! samples, traces): it looks at the path's metadata before opening it and refuses anything that
//! is not a regular file (a FIFO would block forever, a device or `/proc` entry never ends), and
//! it reads at most [`MAX_INPUT_BYTES`] (64 MiB), so a huge or growing file cannot exhaust
//! memory. Every error names the file, what it found and what to do.

use std::io::Read;
use std::path::Path;

/// Largest input file costsim reads: 64 MiB. The largest real inputs (timed traces of a
/// 7B-parameter model) are a few MiB; a results or calibration file is kilobytes.
pub const MAX_INPUT_BYTES: u64 = 64 << 20;

/// Read a whole UTF-8 text file of at most [`MAX_INPUT_BYTES`]. `what` names the kind of file
/// in errors ("hardware profile", "config.json" ...). The errors are `std::io::Error`s whose
/// message names the path, the problem and the fix, so every crate's `Io` error can carry them.
pub fn read_text(path: &Path, what: &str) -> std::io::Result<String> {
    read_text_capped(path, what, MAX_INPUT_BYTES)
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

/// [`read_text`] with an explicit cap (tests use a small one).
pub fn read_text_capped(path: &Path, what: &str, cap: u64) -> std::io::Result<String> {
    // Metadata first: opening a FIFO for reading blocks until a writer appears.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "a special file (FIFO, socket or device)"
        };
        return Err(invalid(format!(
            "{} is {kind}, not a regular file; costsim reads a {what} only from a regular file \
             (save it to a file and pass that path)",
            path.display()
        )));
    }
    let cap_text = if cap >= 1 << 20 && cap.is_multiple_of(1 << 20) {
        format!("{} MiB", cap >> 20)
    } else {
        format!("{cap} bytes")
    };
    let too_big = |size: String| {
        invalid(format!(
            "{} is {size}, above the {cap_text} costsim reads for a {what}; pass the right file \
             (a real one is far smaller)",
            path.display(),
        ))
    };
    if meta.len() > cap {
        return Err(too_big(format!("{} bytes", meta.len())));
    }
    let file = std::fs::File::open(path)?;
    // Between the check and the read the file may grow (or be swapped): read one byte past the
    // cap to notice.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(too_big(format!("more than {cap} bytes")));
    }
    let mut text = String::from_utf8(bytes).map_err(|e| {
        invalid(format!(
            "{} is not UTF-8 text (invalid byte at offset {}); a {what} is a text file",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    // A byte-order mark (Windows editors write one) is not part of the text.
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("costsim-input-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn reads_a_small_file_and_refuses_one_over_the_cap() {
        let p = dir().join("small.toml");
        std::fs::write(&p, "abc").expect("write");
        assert_eq!(read_text_capped(&p, "profile", 3).expect("read"), "abc");
        let err = read_text_capped(&p, "profile", 2).unwrap_err().to_string();
        assert!(
            err.contains("is 3 bytes, above the 2 bytes costsim reads for a profile"),
            "{err}"
        );
        assert!(err.contains("small.toml"), "{err}");
    }

    #[test]
    fn the_cap_is_named_in_mib_when_it_is_whole_mib() {
        let p = dir().join("two-mib-and-one.json");
        std::fs::write(&p, vec![b' '; (2 << 20) + 1]).expect("write");
        for (cap, named) in [
            (2u64 << 20, "above the 2 MiB"),
            (1 << 20, "above the 1 MiB"),
            ((1 << 20) + 1, "above the 1048577 bytes"),
            (1000, "above the 1000 bytes"),
        ] {
            let err = read_text_capped(&p, "record", cap).unwrap_err().to_string();
            assert!(err.contains(named), "{cap}: {err}");
        }
        // At the cap exactly the file is read.
        assert!(read_text_capped(&p, "record", (2 << 20) + 1).is_ok());
    }

    #[test]
    fn refuses_a_directory_before_opening_it() {
        let err = read_text(&dir(), "profile").unwrap_err().to_string();
        assert!(err.contains("is a directory, not a regular file"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_fifo_without_blocking() {
        let p = dir().join("fifo");
        let _ = std::fs::remove_file(&p);
        let made = std::process::Command::new("mkfifo").arg(&p).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("mkfifo unavailable; FIFO case covered by tests/hostile.rs only");
            return;
        }
        let err = read_text(&p, "profile").unwrap_err().to_string();
        assert!(err.contains("special file"), "{err}");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn refuses_binary_data() {
        let p = dir().join("bin.json");
        std::fs::write(&p, [b'{', 0xff, 0xfe]).expect("write");
        let err = read_text(&p, "config.json").unwrap_err().to_string();
        assert!(
            err.contains("not UTF-8 text (invalid byte at offset 1)"),
            "{err}"
        );
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_text() {
        let p = dir().join("bom.json");
        std::fs::write(&p, "\u{feff}{\"a\": 1}").unwrap();
        assert_eq!(read_text(&p, "config.json").unwrap(), "{\"a\": 1}");
        // Only a leading one.
        std::fs::write(&p, "x\u{feff}").unwrap();
        assert_eq!(read_text(&p, "config.json").unwrap(), "x\u{feff}");
    }
}
