//! `mie report`: read a saved mie report and add source lines to its code addresses, from
//! the binaries' DWARF debug info (the `addr2line` crate), so a report from production can
//! be read later on a machine with the same binaries.
//!
//! A report names each code address as `(object+0xoffset, function+0x…)`; the object's
//! path comes from the report's own `source line: addr2line … PATH …` lines, or from
//! `--binary PATH` (matched by file name).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The report with a line `    at FILE:LINE (FUNCTION)` after each code address that could
/// be resolved (one per inlined frame, innermost first).
pub fn symbolize(report: &str, binaries: &[PathBuf]) -> String {
    let mut paths: HashMap<String, PathBuf> = HashMap::new();
    for b in binaries {
        if let Some(name) = b.file_name() {
            paths.insert(name.to_string_lossy().into_owned(), b.clone());
        }
    }
    for line in report.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("source line: addr2line -Cfpie ") {
            if let Some((path, _)) = rest.rsplit_once(' ') {
                let p = PathBuf::from(path);
                if let Some(name) = p.file_name() {
                    paths.entry(name.to_string_lossy().into_owned()).or_insert(p);
                }
            }
        }
    }
    let mut loaders: HashMap<PathBuf, Option<addr2line::Loader>> = HashMap::new();
    let mut out = String::new();
    let mut lines = report.lines().peekable();
    while let Some(line) = lines.next() {
        out.push_str(line);
        out.push('\n');
        if line.trim_start().starts_with("source line:") {
            continue;
        }
        // A report that ran the symbolizer itself already has the lines.
        if lines.peek().is_some_and(|n| n.trim_start().starts_with("at ")) {
            continue;
        }
        let Some((object, offset)) = code_address(line) else { continue };
        let Some(path) = paths.get(object) else { continue };
        let loader = loaders.entry(path.clone()).or_insert_with(|| addr2line::Loader::new(path).ok());
        let Some(loader) = loader else { continue };
        // A return address: the call is the byte before it (not so for the faulting
        // instruction itself).
        let probe = if line.contains("faulting instruction:") { offset } else { offset.saturating_sub(1) };
        let indent = " ".repeat(line.len() - line.trim_start().len() + 4);
        for (func, loc) in frames(loader, probe) {
            out.push_str(&format!("{indent}at {loc} ({func})\n"));
        }
    }
    out
}

/// The first `(object+0xOFFSET` of a line.
fn code_address(line: &str) -> Option<(&str, u64)> {
    let open = line.find(" (")? + 2;
    let rest = &line[open..];
    let plus = rest.find("+0x")?;
    let object = &rest[..plus];
    if object.is_empty() || object.contains(' ') {
        return None;
    }
    let hex: String = rest[plus + 3..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    Some((object, u64::from_str_radix(&hex, 16).ok()?))
}

/// (function, file:line) for each frame at `probe`, innermost first.
fn frames(loader: &addr2line::Loader, probe: u64) -> Vec<(String, String)> {
    let mut v = Vec::new();
    let Ok(mut it) = loader.find_frames(probe) else { return v };
    while let Ok(Some(f)) = it.next() {
        let func = f.function.as_ref().and_then(|n| n.demangle().ok()).map(|s| s.into_owned()).unwrap_or_else(|| "?".into());
        let loc = match f.location {
            Some(l) => format!("{}:{}", l.file.map(shorten).unwrap_or("?"), l.line.unwrap_or(0)),
            None => continue,
        };
        v.push((func, loc));
    }
    v
}

fn shorten(file: &str) -> &str {
    // Keep paths as the compiler recorded them, but without a leading "./".
    file.strip_prefix("./").unwrap_or(file)
}

/// Read a report file (or stdin for "-").
pub fn read(path: &Path) -> Result<String, String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| e.to_string())?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_addresses_are_found_in_report_lines() {
        assert_eq!(code_address("  called from: 0x55bd190ad4d4 (detect_c+0x14d4, main+0x25d)"), Some(("detect_c", 0x14d4)));
        assert_eq!(code_address("    #2: 0x7f797103d305 (libc.so.6+0x27305, __libc_start_main+0x85)"), Some(("libc.so.6", 0x27305)));
        assert_eq!(code_address("  block 0x1264003b72a0: 32-byte slot (size class #1)"), None);
        assert_eq!(code_address("mie: double-free on 0x1264003b72a0 in free()"), None);
    }
}
