//! `mie bench --instructions`: instructions per hot-path operation, counted by valgrind's
//! callgrind (exact and repeatable, whatever the machine's load), for mie and the peer
//! allocators side by side. Each case runs twice, with two iteration counts; the difference
//! over the difference in iterations is the cost of one operation, start-up and exit
//! cancelled out. The loop around the operation (a few instructions) is included.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bench::Allocator;

const OPS_C: &str = include_str!("../bench/ops.c");

/// One measured operation: the ops.c mode, its size argument, and what it is.
pub struct Case {
    pub name: &'static str,
    pub args: &'static [&'static str],
    /// Iteration counts (the second larger).
    pub n: (u64, u64),
}

pub const CASES: &[Case] = &[
    Case { name: "malloc+free 16 B", args: &["pair", "{n}", "16"], n: (20_000, 120_000) },
    Case { name: "malloc+free 64 B", args: &["pair", "{n}", "64"], n: (20_000, 120_000) },
    Case { name: "malloc+free 1 KiB", args: &["pair", "{n}", "1024"], n: (20_000, 120_000) },
    Case { name: "malloc+free 32 B, 100 at a time FIFO", args: &["fifo", "{n}", "32"], n: (20_000, 120_000) },
    Case { name: "malloc+free 16 B through xmalloc", args: &["xmalloc", "{n}", "16"], n: (20_000, 120_000) },
    Case { name: "operator new + delete 16 B (C++)", args: &["new", "{n}", "16"], n: (20_000, 120_000) },
    Case { name: "malloc + cross-thread free 64 B", args: &["cross", "{n}", "64"], n: (20_000, 120_000) },
    Case { name: "memcpy 64 B, heap to heap", args: &["memcpy_heap", "{n}"], n: (20_000, 120_000) },
    Case { name: "memcpy 64 B, stack to stack", args: &["memcpy_stack", "{n}"], n: (20_000, 120_000) },
    Case { name: "memcpy 48 B, two blocks not just used", args: &["memcpy_miss", "{n}"], n: (20_000, 120_000) },
];

/// Whether valgrind is installed.
pub fn valgrind() -> Option<PathBuf> {
    ["/usr/bin/valgrind", "/usr/local/bin/valgrind"].iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Build ops.c in `dir`.
pub fn build(cc: &str, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let src = dir.join("ops.c");
    std::fs::write(&src, OPS_C).map_err(|e| e.to_string())?;
    let bin = dir.join("ops");
    // -fno-builtin: the program's memcpy and malloc calls stay calls, so they reach the
    // allocator being measured. -rdynamic: `xmalloc` has a name mie can read.
    let out = Command::new(cc).args(["-O2", "-fno-builtin", "-pthread", "-rdynamic", "-o"]).arg(&bin).arg(&src).output().map_err(|e| format!("cannot run {cc}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cc} failed on ops.c:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(bin)
}

/// How a peer that valgrind cannot run is reported.
const NOT_MEASURABLE: &str = "not measurable under valgrind";

/// Whether a cell's error says the allocator cannot run under valgrind at all (a known
/// limit, shown in the table), not that the measurement failed.
pub fn not_measurable(e: &str) -> bool {
    e.starts_with(NOT_MEASURABLE)
}

/// Instructions of one run (callgrind's total).
fn count(valgrind: &Path, bin: &Path, a: &Allocator, args: &[&str], n: u64) -> Result<u64, String> {
    let mut cmd = Command::new(valgrind);
    cmd.args(["--tool=callgrind", "--callgrind-out-file=/dev/null", "--trace-children=yes", "env"]);
    for (k, v) in &a.env {
        cmd.arg(format!("{k}={v}"));
    }
    if let Some(lib) = &a.lib {
        cmd.arg(format!("LD_PRELOAD={}", lib.display()));
    }
    cmd.arg(bin);
    cmd.args(args.iter().map(|s| s.replace("{n}", &n.to_string())));
    let out = cmd.output().map_err(|e| format!("cannot run valgrind: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("internal map failure") {
        // Scudo maps its whole primary region up front, which valgrind refuses; the size is
        // fixed when Scudo is compiled, so no option caps it.
        return Err(format!("{NOT_MEASURABLE}: it reserves its address space up front and valgrind refuses the mapping (\"{}\")", err.lines().find(|l| l.contains("internal map failure")).unwrap_or("").trim()));
    }
    if !out.status.success() {
        return Err(format!("{} {:?} failed: {}", a.name, args, err.lines().last().unwrap_or("")));
    }
    // The last "Collected" line is the program's (the first is env's, with --trace-children).
    err.lines()
        .rev()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|v| v.trim().replace(',', "").parse().ok())
        .ok_or_else(|| format!("no instruction count in valgrind's output for {}", a.name))
}

/// Instructions per operation of `case` under `a`.
pub fn per_op(valgrind: &Path, bin: &Path, a: &Allocator, case: &Case) -> Result<f64, String> {
    let lo = count(valgrind, bin, a, case.args, case.n.0)?;
    let hi = count(valgrind, bin, a, case.args, case.n.1)?;
    Ok((hi as f64 - lo as f64) / (case.n.1 - case.n.0) as f64)
}

/// Measure every case under every allocator: `table[c][a]`.
pub fn measure(valgrind: &Path, bin: &Path, allocators: &[Allocator], progress: impl Fn(&str)) -> Vec<Vec<Result<f64, String>>> {
    CASES
        .iter()
        .map(|c| {
            progress(c.name);
            allocators.iter().map(|a| per_op(valgrind, bin, a, c)).collect()
        })
        .collect()
}

/// The table: instructions per operation, one column per allocator.
pub fn table(allocators: &[Allocator], t: &[Vec<Result<f64, String>>]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "instructions per operation (valgrind callgrind, exact); lower is better");
    let _ = write!(s, "{:<38}", "operation");
    for a in allocators {
        let _ = write!(s, " {:>12}", a.name);
    }
    let _ = writeln!(s);
    for (c, row) in CASES.iter().zip(t) {
        let _ = write!(s, "{:<38}", c.name);
        for r in row {
            match r {
                Ok(v) => {
                    let _ = write!(s, " {:>12.0}", v);
                }
                Err(e) => {
                    let _ = write!(s, " {:>12}", if not_measurable(e) { "n/m" } else { "error" });
                }
            }
        }
        let _ = writeln!(s);
    }
    let mut said = Vec::new();
    for (c, row) in CASES.iter().zip(t) {
        for (a, r) in allocators.iter().zip(row) {
            match r {
                Err(e) if not_measurable(e) => {
                    if !said.contains(&a.name) {
                        let _ = writeln!(s, "  n/m: {} is {e}", a.name);
                        said.push(a.name.clone());
                    }
                }
                Err(e) => {
                    let _ = writeln!(s, "  {} under {}: {e}", c.name, a.name);
                }
                Ok(_) => {}
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_valgrind_refuses_is_no_failure_but_a_failed_run_is() {
        let refused = format!("{NOT_MEASURABLE}: it reserves its address space up front");
        assert!(not_measurable(&refused));
        assert!(!not_measurable("mie [\"pair\"] failed: valgrind: killed"));
        assert!(!not_measurable("no instruction count in valgrind's output for mie"));
    }
}
