//! User profiles: `--hw FILE.toml` files, which may start from a built-in profile
//! (`base = "NAME"`) and leave sources out (they read "user-supplied").

use crate::*;

/// What a user's value says when the file names no source for it.
pub const USER_SUPPLIED: &str = "user-supplied";

/// The key that holds the source of `key` in `section` (`device.sms` -> `device.source`,
/// `host.python-op-us` -> `host.python-op-source`), and whether that source is shared by the
/// whole section. None for keys without a source (`[calibration]`, the source keys themselves).
fn source_key(section: &str, key: &str) -> Option<(String, bool)> {
    if key == "source" || key.ends_with("-source") || key.ends_with("-date") {
        return None;
    }
    match section {
        "device" | "peak" | "efficiency.kinds" => Some(("source".into(), true)),
        "efficiency" => Some((
            match key {
                "attention-bf16" | "attention-backward" | "attention-backward-bf16" => {
                    "attention-source".into()
                }
                k => format!("{k}-source"),
            },
            false,
        )),
        "overheads" => Some((
            match key {
                "gemm-floor-us" | "gemm-floor-bf16-us" => "gemm-floor-source".into(),
                "optimizer-op-us" | "optimizer-op-bf16-us" => "optimizer-op-source".into(),
                "optimizer-size-gbps" | "optimizer-size-bf16-gbps" => {
                    "optimizer-size-source".into()
                }
                "gemm-fill-rows" | "gemm-fill-rows-bf16" => "gemm-fill-source".into(),
                "gemm-narrow-fill" | "gemm-narrow-fill-bf16" => "gemm-narrow-fill-source".into(),
                "attention-tile-us"
                | "attention-tile-bf16-us"
                | "attention-backward-tile-us"
                | "attention-backward-tile-bf16-us" => "attention-tile-source".into(),
                "first-touch-gbps" | "first-touch-min-mib" => "first-touch-source".into(),
                k => {
                    let stem = k
                        .strip_suffix("-us")
                        .or_else(|| k.strip_suffix("-gbps"))
                        .or_else(|| k.strip_suffix("-mib"))
                        .unwrap_or(k);
                    format!("{stem}-source")
                }
            },
            false,
        )),
        "host" => Some((
            format!("{}-source", key.strip_suffix("-us").unwrap_or(key)),
            false,
        )),
        "price" => Some((format!("{key}-source"), false)),
        _ => None,
    }
}

/// Parse a user's profile file. Unlike a built-in one it may
/// - start from a built-in profile with a top-level `base = "NAME"` (a name or alias) and set
///   only the values it changes, section by section;
/// - leave out the source of a value it sets: that value's source is then "user-supplied" (for
///   the sections with one shared `source`, `device` and `peak`, the source names the keys that
///   are user-supplied and keeps the base's source for the rest).
///
/// A file that needs neither is parsed exactly as a built-in one (errors name the line).
pub fn parse_user_profile(text: &str, origin: &str) -> Result<Profile> {
    let Some(merged) = merged(text, origin)? else {
        return parse_profile(text, origin);
    };
    let file = ProfileFile::deserialize(toml::Value::Table(merged.clone())).map_err(|e| {
        // A value read from a table has no place in the file: find the key it came from.
        let (line, key) = match culprit(&merged, text) {
            Some((key, line)) => (line.map_or_else(String::new, |n| format!(" line {n}")), key),
            None => (String::new(), String::new()),
        };
        let message = e.message().trim();
        Error::Parse {
            path: PathBuf::from(origin),
            line,
            message: if key.is_empty() {
                message.to_string()
            } else {
                format!("{key}: {message}")
            },
        }
    })?;
    file.resolve(origin)
}

/// The key (`[section] key`) whose value the merged profile `merged` could not be read with,
/// and its line in the user's `text`: the merged table written out and read again as text, whose
/// error has a place. The error's line there is either `key = value` under its section's header,
/// or the header of a table given where a value belongs (`sms = { … }` written out as
/// `[device.sms]`). In the user's text the key is found as `key = …` under its section's header
/// (a value spread over several lines, such as an array, is named on the line that opens it),
/// or as that table's own header.
fn culprit(merged: &toml::Table, text: &str) -> Option<(String, Option<usize>)> {
    let whole = toml::to_string(merged).ok()?;
    let err = toml::from_str::<ProfileFile>(&whole).err()?;
    let start = err.span()?.start.min(whole.len());
    let line_start = whole[..start].rfind('\n').map_or(0, |i| i + 1);
    let key_of = |line: &str| -> Option<String> {
        let (k, _) = line.split_once('=')?;
        let k = k.trim().trim_matches('"');
        (!k.is_empty() && !k.starts_with('[')).then(|| k.to_string())
    };
    let header_of = |line: &str| -> Option<String> {
        let l = line.trim();
        let inner = l.strip_prefix('[')?.strip_suffix(']')?;
        Some(inner.trim_matches(['[', ']']).trim().to_string())
    };
    let at = whole[line_start..].lines().next().unwrap_or("");
    let (section, key) = match header_of(at) {
        Some(table) => {
            let (section, key) = table.rsplit_once('.')?;
            (section.to_string(), key.to_string())
        }
        None => (
            whole[..line_start].lines().rev().find_map(header_of)?,
            key_of(at)?,
        ),
    };
    let table = format!("{section}.{key}");
    let mut current = String::new();
    let mut line = None;
    for (i, l) in text.lines().enumerate() {
        if let Some(h) = header_of(l) {
            if h == table {
                line = Some(i + 1);
                break;
            }
            current = h;
        } else if current == section && key_of(l).as_deref() == Some(key.as_str()) {
            line = Some(i + 1);
            break;
        }
    }
    Some((format!("[{section}] {key}"), line))
}

/// A user's profile file as a whole profile's TOML text: what [`parse_user_profile`] reads,
/// with `base = "NAME"` merged into the built-in's sections and the sources left out filled in;
/// a file that needs neither is returned as it is. For commands that rewrite one section of a
/// profile's text (`calibrate --host`, `--loop`). Checked by parsing it.
pub fn whole_profile_text(text: &str, origin: &str) -> Result<String> {
    let Some(merged) = merged(text, origin)? else {
        parse_profile(text, origin)?;
        return Ok(text.to_string());
    };
    let whole = toml::to_string(&merged).map_err(|e| Error::Invalid {
        path: PathBuf::from(origin),
        message: e.to_string(),
    })?;
    parse_profile(&whole, origin)?;
    Ok(whole)
}

/// The user's file merged into its base (`None`: a file without a base and with every source
/// given, which is read as a built-in profile is).
fn merged(text: &str, origin: &str) -> Result<Option<toml::Table>> {
    let parse_error = |e: toml::de::Error| {
        let line = e
            .span()
            .map(|span| {
                let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!(" line {line_no}")
            })
            .unwrap_or_default();
        Error::Parse {
            path: PathBuf::from(origin),
            line,
            message: e.message().to_string(),
        }
    };
    let invalid = |message: String| Error::Invalid {
        path: PathBuf::from(origin),
        message,
    };
    let user: toml::Table = text.parse().map_err(parse_error)?;
    let mut merged = match user.get("base") {
        None => toml::Table::new(),
        Some(toml::Value::String(b)) => {
            let (_, base_text) = builtin(b).map_err(|e| {
                invalid(format!(
                    "base = {b:?} names no built-in profile ({e}); `costsim hardware` lists them"
                ))
            })?;
            base_text
                .parse::<toml::Table>()
                .map_err(|e| invalid(format!("built-in base {b}: {e}")))?
        }
        Some(other) => {
            return Err(invalid(format!(
                "base must be the name of a built-in profile such as \"a100\", got {other}"
            )))
        }
    };
    let has_base = user.contains_key("base");
    let mut filled = false;
    for (section, value) in &user {
        if section == "base" {
            continue;
        }
        let toml::Value::Table(user_sec) = value else {
            return Err(invalid(format!(
                "{section} must be a section ([{section}]), not a single value"
            )));
        };
        filled |= merge_section(&mut merged, section, user_sec, has_base);
    }
    if !has_base && !filled {
        return Ok(None);
    }
    if has_base {
        // Without a name of its own the profile would pass for the unchanged built-in one.
        let user_sets = |key: &str| user.get("device").is_some_and(|d| d.get(key).is_some());
        if let Some(toml::Value::Table(d)) = merged.get_mut("device") {
            for (key, suffix) in [("name", "-custom"), ("display-name", " (custom)")] {
                if user_sets(key) {
                    continue;
                }
                if let Some(toml::Value::String(s)) = d.get_mut(key) {
                    s.push_str(suffix);
                }
            }
        }
    }
    Ok(Some(merged))
}

/// Merge the user's `section` (and its sub-sections) into `merged`, filling the sources the
/// user left out. True when a source was filled in.
fn merge_section(
    merged: &mut toml::Table,
    section: &str,
    user: &toml::Table,
    has_base: bool,
) -> bool {
    let path: Vec<&str> = section.split('.').collect();
    let mut target = &mut *merged;
    for part in &path {
        let entry = target
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => target = t,
            other => {
                // A malformed base cannot happen (built-ins are tested); a user value of the
                // wrong shape is replaced and caught by the deserializer.
                *other = toml::Value::Table(toml::Table::new());
                let toml::Value::Table(t) = other else {
                    unreachable!()
                };
                target = t;
            }
        }
    }
    let mut filled = false;
    let mut shared_user_keys: Vec<&str> = Vec::new();
    let mut subsections = Vec::new();
    for (key, value) in user {
        if let toml::Value::Table(sub) = value {
            subsections.push((format!("{section}.{key}"), sub));
            continue;
        }
        target.insert(key.clone(), value.clone());
        if let Some((src, shared)) = source_key(section, key) {
            if user.contains_key(&src) {
                continue;
            }
            if shared {
                shared_user_keys.push(key);
            } else {
                target.insert(src, toml::Value::String(USER_SUPPLIED.into()));
                filled = true;
            }
        }
    }
    if !shared_user_keys.is_empty() {
        let note = format!("{USER_SUPPLIED}: {}", shared_user_keys.join(", "));
        let source = match target.get("source") {
            Some(toml::Value::String(base)) if has_base => {
                format!("{note}; the rest from the base profile: {base}")
            }
            _ => note,
        };
        target.insert("source".into(), toml::Value::String(source));
        filled = true;
    }
    for (name, sub) in subsections {
        filled |= merge_section(merged, &name, sub, has_base);
    }
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source<'a>(p: &'a Profile, key: &str) -> &'a str {
        p.sources
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, s)| s.as_str())
            .unwrap_or_else(|| panic!("no source for {key}"))
    }

    #[test]
    fn a_file_can_start_from_a_builtin_and_override_a_few_values() {
        let text = "base = \"a6000\"\n[device]\nmemory-gib = 96\n[efficiency]\ngemm = 0.7\n\
                    [host]\npython-op-us = 30\npython-op-source = \"my trace, 2026-11-01\"\n";
        let p = parse_user_profile(text, "mine.toml").expect("loads");
        let a6000 = resolve_device("a6000").unwrap();
        // Overridden: 96 GiB = 96 * 2^30 bytes; gemm 0.7; python-op 30 µs.
        assert_eq!(p.memory_bytes, 96.0 * 1073741824.0);
        assert_eq!(p.gemm_efficiency, 0.7);
        assert_eq!(p.host.python_op_s, 30.0 * 1e-6);
        // Everything else is the base's.
        assert_eq!(p.bandwidth_bps, a6000.bandwidth_bps);
        assert_eq!(p.peak_bf16_flops, a6000.peak_bf16_flops);
        assert_eq!(p.host.autograd_node_s, a6000.host.autograd_node_s);
        assert_eq!(p.sms, 84);
        // Without a name of its own it does not pass for the built-in.
        assert_eq!(p.name, "a6000-custom");
        assert_eq!(p.display_name, "NVIDIA RTX A6000 (custom)");
        assert_eq!(p.origin, "mine.toml");
        // Sources: the user's own where given, "user-supplied" where not, the base's elsewhere.
        assert_eq!(source(&p, "efficiency.gemm"), USER_SUPPLIED);
        assert_eq!(source(&p, "host.python-op"), "my trace, 2026-11-01");
        assert_eq!(
            source(&p, "device"),
            format!(
                "user-supplied: memory-gib; the rest from the base profile: {}",
                source(&a6000, "device")
            )
        );
        assert_eq!(source(&p, "peak"), source(&a6000, "peak"));
        assert_eq!(
            source(&p, "efficiency.bandwidth"),
            source(&a6000, "efficiency.bandwidth")
        );
    }

    #[test]
    fn a_base_file_with_its_own_name_keeps_it() {
        let p = parse_user_profile(
            "base = \"A100\"\n[device]\nname = \"lab-a100\"\ndisplay-name = \"Lab A100\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(
            (p.name.as_str(), p.display_name.as_str()),
            ("lab-a100", "Lab A100")
        );
        assert_eq!(p.peak_bf16_flops, 312e12);
        // Only the name given: the display name still says it is not the built-in.
        let p =
            parse_user_profile("base = \"a100\"\n[device]\nname = \"lab\"\n", "x.toml").unwrap();
        assert_eq!(p.name, "lab");
        assert_eq!(p.display_name, "NVIDIA A100 80GB SXM4 (custom)");
    }

    #[test]
    fn a_value_of_the_wrong_type_in_a_merged_file_is_named_with_its_line() {
        // On a base: the merged table's error names the user's key and line.
        let text =
            "base = \"h200\"\n\n[device]\nname = \"mine\"\n\n[peak]\nbf16-tflops = \"fast\"\n";
        let err = parse_user_profile(text, "w.toml").unwrap_err().to_string();
        assert!(
            err.contains("w.toml line 7: [peak] bf16-tflops: invalid type: string \"fast\""),
            "{err}"
        );
        // Without a base, sources left out (also merged): the same.
        let whole = builtin("h200").unwrap().1;
        let text: String = whole
            .lines()
            .filter(|l| !l.contains("source"))
            .map(|l| {
                if l.starts_with("sms") {
                    "sms = \"many\"".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let line = text.lines().position(|l| l.starts_with("sms")).unwrap() + 1;
        let err = parse_user_profile(&text, "v.toml").unwrap_err().to_string();
        assert!(
            err.contains(&format!("v.toml line {line}: [device] sms: invalid type")),
            "{err}"
        );
        // A value spread over lines is named on the line that opens it; a table where a value
        // belongs, inline or as a section of its own, by its key and line (not the written-out
        // table's header and first key).
        for (text, line, key, what) in [
            (
                "base = \"h200\"\n[device]\nname = \"x\"\naliases = [\n  \"a\",\n  3,\n]\n",
                4,
                "[device] aliases",
                "expected a string",
            ),
            (
                "base = \"h200\"\n[device]\nname = \"x\"\nsms = [\n  1,\n  2,\n]\n",
                4,
                "[device] sms",
                "sequence, expected u32",
            ),
            (
                "base = \"h200\"\n[device]\nname = \"x\"\nsms = { a = 1 }\n",
                4,
                "[device] sms",
                "map, expected u32",
            ),
            (
                "base = \"h200\"\n[device]\nname = \"x\"\n\n[device.sms]\na = 1\n",
                5,
                "[device] sms",
                "map, expected u32",
            ),
        ] {
            let err = parse_user_profile(text, "m.toml").unwrap_err().to_string();
            assert!(
                err.contains(&format!("m.toml line {line}: {key}: invalid type"))
                    && err.contains(what)
                    && !err.contains('\n'),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn a_bad_base_or_value_is_named() {
        let err = parse_user_profile("base = \"a10O\"\n", "b.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.toml"), "{err}");
        assert!(err.contains("names no built-in profile"), "{err}");
        assert!(err.contains("did you mean 'a100'"), "{err}");
        let err = parse_user_profile("base = 3\n", "b.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("base must be the name of a built-in profile"),
            "{err}"
        );
        // Overrides go through the same range checks as any profile.
        let err = parse_user_profile("base = \"a100\"\n[efficiency]\ngemm = 2\n", "b.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("efficiency.gemm must be a fraction"), "{err}");
        let err = parse_user_profile("base = \"a100\"\n[device]\nsms = \"many\"\n", "b.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("b.toml") && err.contains("invalid type"),
            "{err}"
        );
        let err = parse_user_profile("base = \"a100\"\n[device]\ncolour = 1\n", "b.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn a_full_file_may_leave_out_sources_which_then_say_user_supplied() {
        let h200 = BUILTIN.iter().find(|(n, _)| *n == "h200").unwrap().1;
        // The built-in text itself loads as a user file exactly as it does built in.
        let as_user = parse_user_profile(h200, "h200.toml").unwrap();
        let builtin = parse_profile(h200, "h200.toml").unwrap();
        assert_eq!(as_user, builtin);
        let without: String = h200
            .lines()
            .filter(|l| !l.starts_with("gemm-source") && !l.starts_with("cpp-op-source"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            parse_profile(&without, "x.toml").is_err(),
            "built-ins stay strict"
        );
        let p = parse_user_profile(&without, "x.toml").unwrap();
        assert_eq!(source(&p, "efficiency.gemm"), USER_SUPPLIED);
        assert_eq!(source(&p, "host.cpp-op"), USER_SUPPLIED);
        assert_eq!(source(&p, "peak"), source(&builtin, "peak"));
        assert_eq!(p.gemm_efficiency, builtin.gemm_efficiency);
    }

    #[test]
    fn a_subsections_missing_source_is_filled_too() {
        // A calibrated CPU profile's [efficiency.kinds] without its source: only the
        // sub-section lacks one, and it alone makes the file a user file with a filled source.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/results/cpu/eager-2026-11-29q/cpu-calibrated.toml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let mut in_kinds = false;
        let without: String = text
            .lines()
            .filter(|l| {
                if l.starts_with('[') {
                    in_kinds = *l == "[efficiency.kinds]";
                }
                !(in_kinds && l.starts_with("source = "))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(without, text);
        assert!(parse_profile(&without, "x.toml").is_err());
        let p = parse_user_profile(&without, "x.toml").unwrap();
        // A shared source: it names the keys the user supplied.
        let src = source(&p, "efficiency.kinds");
        assert!(
            src.starts_with(&format!("{USER_SUPPLIED}: cast, ")),
            "{src}"
        );
    }

    #[test]
    fn whole_text_reads_as_the_user_profile_it_came_from() {
        // With a base and a value changed, sources left out: the whole text is a complete
        // profile that reads (as a built-in one) exactly as the user's file does.
        let user = "base = \"a6000\"\n[device]\nmemory-gib = 96\n[efficiency]\ngemm = 0.7\n";
        let whole = whole_profile_text(user, "u.toml").unwrap();
        assert!(!whole.contains("base ="));
        let from_whole = parse_profile(&whole, "u.toml").unwrap();
        assert_eq!(from_whole, parse_user_profile(user, "u.toml").unwrap());
        assert_eq!(from_whole.memory_bytes, 96.0 * f64::from(1u32 << 30));
        // A built-in's own text comes back unchanged; a bad base is refused.
        let (_, a100) = builtin("a100").unwrap();
        assert_eq!(whole_profile_text(a100, "a100.toml").unwrap(), a100);
        assert!(whole_profile_text("base = \"nope\"\n", "u.toml").is_err());
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let text = "base = \"a100\"\n[peak]\nfp32-tflops = = 3\n";
        let err = parse_user_profile(text, "mine.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mine.toml") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn every_builtin_price_names_its_source_and_date() {
        let mut priced = 0;
        for p in builtin_profiles().unwrap() {
            if let Some(pr) = &p.price {
                priced += 1;
                assert!(pr.usd_per_hour > 0.0, "{}", p.name);
                assert!(pr.source.contains("http"), "{}: {}", p.name, pr.source);
                assert!(pr.date.is_some(), "{} has no price date", p.name);
            }
        }
        assert_eq!(priced, 3, "a100-80gb-sxm, a100-40gb-sxm, h100-sxm");
        // A price must be a sane number, with a real date.
        for (bad, want) in [
            (
                "usd-per-hour = -2",
                "price.usd-per-hour must be in US dollars per hour",
            ),
            (
                "usd-per-hour = 1e9",
                "price.usd-per-hour must be in US dollars per hour",
            ),
        ] {
            let text = format!("base = \"a6000\"\n[price]\n{bad}\nusd-per-hour-source = \"x\"\n");
            let err = parse_user_profile(&text, "p.toml").unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let err = parse_user_profile(
            "base = \"a6000\"\n[price]\nusd-per-hour = 1\nusd-per-hour-date = \"Nov 9\"\n",
            "p.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must be a date YYYY-MM-DD"), "{err}");
        // A user's price without a source says so.
        let p =
            parse_user_profile("base = \"l4\"\n[price]\nusd-per-hour = 0.8\n", "p.toml").unwrap();
        let price = p.price.unwrap();
        assert_eq!(
            (price.usd_per_hour, price.source.as_str()),
            (0.8, USER_SUPPLIED)
        );
    }

    /// The ```toml blocks of docs/profiles.md, in order.
    fn doc_examples() -> Vec<String> {
        let doc = include_str!("../../docs/profiles.md");
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in doc.lines() {
            match (&mut current, line.trim_end()) {
                (None, "```toml") => current = Some(String::new()),
                (Some(_), "```") => blocks.push(current.take().unwrap()),
                (Some(b), l) => {
                    b.push_str(l);
                    b.push('\n');
                }
                (None, _) => {}
            }
        }
        blocks
    }

    #[test]
    fn the_examples_in_docs_profiles_md_load() {
        let blocks = doc_examples();
        assert_eq!(blocks.len(), 2, "the base example and the full example");
        let full = parse_user_profile(&blocks[1], "docs/profiles.md").expect("full example");
        // Values as written in the example: 108 SMs, 2039 GB/s, 312 TFLOP/s bf16, 80 GiB.
        assert_eq!(full.sms, 108);
        assert_eq!(full.bandwidth_bps, 2039e9);
        assert_eq!(full.peak_bf16_flops, 312e12);
        assert_eq!(full.memory_bytes, 80.0 * 1073741824.0);
        assert_eq!(full.price.as_ref().map(|p| p.usd_per_hour), Some(3.4309));
        let based = parse_user_profile(&blocks[0], "docs/profiles.md").expect("base example");
        let a100 = resolve_device("a100").unwrap();
        assert_eq!(based.name, "a100-96gb");
        assert_eq!(based.memory_bytes, 96.0 * 1073741824.0);
        assert_eq!(based.bandwidth_bps, a100.bandwidth_bps);
    }
}
