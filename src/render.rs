//! Output formats shared by every command: the `--format` values, number formatting, the
//! aligned text table and the Markdown table, and CSV (written by the `csv` crate, RFC 4180
//! quoting). The text and Markdown tables stay hand-written: they are a few lines each, and the
//! snapshot tests pin their exact bytes (a table crate's borders and padding differ).

use clap::ValueEnum;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
    Markdown,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Markdown => "markdown",
        }
    }
}

/// Refuse a `--format` the command cannot print (exit 2), naming the ones it can.
pub fn check_format(format: Format, supported: &[Format], what: &str) -> anyhow::Result<()> {
    if supported.contains(&format) {
        return Ok(());
    }
    let names: Vec<&str> = supported.iter().map(|f| f.as_str()).collect();
    Err(crate::errors::usage_error(format!(
        "{what} cannot print --format {}; it prints {} (pass --format {})",
        format.as_str(),
        names.join(" or "),
        names.join(" or --format ")
    )))
}

/// Print a finite number with `decimals`, or "-" (never NaN or inf).
pub(crate) fn num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "-".into()
    }
}

/// Human-readable count: 6.74 B, 19.99 M, 12.3 K.
pub fn count(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{} B", num(v / 1e9, 2))
    } else if a >= 1e6 {
        format!("{} M", num(v / 1e6, 2))
    } else if a >= 1e3 {
        format!("{} K", num(v / 1e3, 1))
    } else {
        num(v, 0)
    }
}

/// One CSV record (RFC 4180: fields with a comma, quote, CR or LF are quoted, quotes doubled),
/// without the line end.
pub fn csv_line(cells: &[String]) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing to memory cannot fail; the bytes written are the UTF-8 cells and ASCII quoting.
    let bytes = w
        .write_record(cells)
        .map_err(|e| e.to_string())
        .and_then(|()| w.into_inner().map_err(|e| e.to_string()))
        .expect("CSV into memory");
    let mut s = String::from_utf8_lossy(&bytes).into_owned();
    if s.ends_with('\n') {
        s.pop();
    }
    s
}

/// A CSV document: the header and the rows, one record a line.
pub fn csv_text(head: &[String], rows: &[Vec<String>]) -> String {
    let mut s = csv_line(head) + "\n";
    for r in rows {
        s += &(csv_line(r) + "\n");
    }
    s
}

/// An aligned text table: first column left-aligned, the others right-aligned.
pub(crate) fn text_table(head: &[String], rows: &[Vec<String>]) -> String {
    let n = head.len();
    let mut width = vec![0usize; n];
    for r in std::iter::once(head).chain(rows.iter().map(|r| r.as_slice())) {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, r: &[String]| {
        let mut s = String::new();
        for (i, c) in r.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut out, head);
    let total: usize = width.iter().sum::<usize>() + 2 * (n - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for r in rows {
        line(&mut out, r);
    }
    out
}

pub(crate) fn md_table(head: &[String], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let esc = |s: &str| s.replace('|', "\\|");
    let _ = writeln!(
        out,
        "| {} |",
        head.iter().map(|h| esc(h)).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(
        out,
        "|{}|",
        (0..head.len())
            .map(|i| if i == 0 { "---" } else { "---:" })
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} |",
            r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_numbers() {
        assert_eq!(count(6_738_415_616.0), "6.74 B");
        assert_eq!(count(19_988_480.0), "19.99 M");
        assert_eq!(num(f64::NAN, 2), "-");
        assert_eq!(num(f64::INFINITY, 2), "-");
    }

    #[test]
    fn table_aligns_columns() {
        let t = text_table(&["".into(), "a".into()], &[vec!["row".into(), "12".into()]]);
        assert_eq!(t, "      a\n-------\nrow  12\n");
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_nothing_else() {
        let cells: Vec<String> = [
            "plain",
            "a,b",
            "say \"hi\"",
            "two\nlines",
            "cr\r",
            "",
            "1.5",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            csv_line(&cells),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\"cr\r\",,1.5"
        );
        assert_eq!(
            csv_text(&["x".into(), "y".into()], &[vec!["1".into(), "2".into()]]),
            "x,y\n1,2\n"
        );
    }
}
