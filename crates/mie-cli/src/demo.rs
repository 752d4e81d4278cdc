//! The protection lab: classic heap attacks, each a small C program with a real bug and the
//! exploit step that turns it into control, built from sources embedded in this binary and
//! run once under glibc and once under libmie.so, side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One attack program of the lab.
pub struct Attack {
    pub name: &'static str,
    pub technique: &'static str,
    pub source: &'static str,
    /// Report kinds that match the technique when mie stops it.
    pub kinds: &'static [&'static str],
    /// Why mie stops it, in one line (also in the README).
    pub why: &'static str,
}

pub const LAB_H: &str = include_str!("../lab/lab.h");

const UAF_KINDS: &[&str] = &["write-after-free", "use-after-free"];

pub const ATTACKS: &[Attack] = &[
    Attack {
        name: "heap_overflow",
        technique: "linear heap overflow into the next object",
        source: include_str!("../lab/heap_overflow.c"),
        kinds: &["heap-buffer-overflow"],
        why: "data buffers and pointer-holding objects never share a region, so the overrun cannot reach the object; it hits the slack canary, checked at free (MTE: the write faults)",
    },
    Attack {
        name: "off_by_one",
        technique: "off-by-one NUL byte (poison null byte)",
        source: include_str!("../lab/off_by_one.c"),
        kinds: &["heap-buffer-overflow"],
        why: "there are no chunk headers in the heap to corrupt; the NUL lands on the slack canary (never zero), checked at free",
    },
    Attack {
        name: "nonadjacent",
        technique: "non-adjacent overflow at a computed offset",
        source: include_str!("../lab/nonadjacent.c"),
        // With MTE the faulting access names its block by tags alone: a far write that lands
        // just before a block which happens to carry the same tag as the table reads as that
        // block's underflow (about 1 run in 200 under qemu).
        kinds: &["heap-buffer-overflow", "heap-buffer-underflow", "use-after-free", "write-after-free", "invalid-access", "tag-check-fault"],
        why: "no offset from a data buffer reaches a pointer-holding object (separate regions), and slot placement is random (MTE: faults unless the far block's tag happens to match, 1 in 14)",
    },
    Attack {
        name: "uaf_read",
        technique: "use-after-free read (information leak)",
        source: include_str!("../lab/uaf_read.c"),
        kinds: &["use-after-free"],
        why: "freed blocks are zeroed at once, so a stale read finds nothing (MTE: the read faults)",
    },
    Attack {
        name: "uaf_write",
        technique: "use-after-free write into the next object",
        source: include_str!("../lab/uaf_write.c"),
        kinds: UAF_KINDS,
        why: "a freed slot waits in quarantine and only its own type bucket reuses it; the stale write is found when the slot is handed out again (MTE: the write faults)",
    },
    Attack {
        name: "type_confusion",
        technique: "use-after-free type confusion",
        source: include_str!("../lab/type_confusion.c"),
        kinds: UAF_KINDS,
        why: "a data object's memory is never reused for a pointer-holding type; the stale write is found at reuse (MTE: the write faults)",
    },
    Attack {
        name: "double_free",
        technique: "double free into two owners of one block",
        source: include_str!("../lab/double_free.c"),
        kinds: &["double-free"],
        why: "every free is checked against out-of-line live bits: the second free aborts",
    },
    Attack {
        name: "tcache_poison",
        technique: "free-list poisoning to an arbitrary address",
        source: include_str!("../lab/tcache_poison.c"),
        kinds: UAF_KINDS,
        why: "free lists are not kept in freed memory (metadata is out of line); the stale write is found at reuse (MTE: the write faults)",
    },
    Attack {
        name: "escape_copy",
        technique: "escaping copy past a trailing backslash (CVE-2021-3156)",
        source: include_str!("../lab/escape_copy.c"),
        kinds: &["heap-buffer-overflow"],
        why: "the command-line buffer (data) and the service object (pointers) never share a region, so the copy cannot reach on_exit; the buffer is never freed, and the canary it overran is found by the heap sweep at exit (MTE: the write faults)",
    },
    Attack {
        name: "fake_free",
        technique: "freeing a fake block (house of spirit)",
        source: include_str!("../lab/fake_free.c"),
        kinds: &["invalid-free"],
        why: "free accepts only the start of a live block of mie's heap; anything else aborts",
    },
    Attack {
        name: "overlap",
        technique: "overlapping blocks through a corrupted size",
        source: include_str!("../lab/overlap.c"),
        kinds: &["heap-buffer-overflow"],
        why: "sizes live in out-of-line metadata, not next to the data; the overrun hits the slack canary, checked at free",
    },
    Attack {
        name: "realloc_uaf",
        technique: "realloc use-after-free",
        source: include_str!("../lab/realloc_uaf.c"),
        kinds: UAF_KINDS,
        why: "the old block is zeroed and quarantined, and only its own bucket reuses it; the stale write is found at reuse (MTE: it faults)",
    },
    Attack {
        name: "large_uaf",
        technique: "large-block use-after-free",
        source: include_str!("../lab/large_uaf.c"),
        kinds: &["use-after-free"],
        why: "a freed large block stays mapped inaccessible in an address quarantine: the stale access faults",
    },
    Attack {
        name: "heap_spray",
        technique: "heap spray to reclaim a freed slot",
        source: include_str!("../lab/heap_spray.c"),
        kinds: &["use-after-free"],
        why: "sprayed attacker data comes from the data bucket, which never gets a pointer object's slot; the freed slot reads as zero (MTE: the stale read faults)",
    },
    Attack {
        name: "cross_thread_uaf",
        technique: "cross-thread use-after-free",
        source: include_str!("../lab/cross_thread_uaf.c"),
        kinds: UAF_KINDS,
        why: "the freed slot is quarantined and not reused by the next object; the other thread's stale write is found at reuse (MTE: it faults)",
    },
];

/// How programs are compiled and started.
pub struct Config {
    /// C compiler (`cc`; `aarch64-linux-gnu-gcc` when cross-testing).
    pub cc: String,
    /// Command prefix that starts a program (empty: run it directly).
    pub exec: Vec<String>,
    /// Preload with the loader's `--preload` flag (given in `exec`) instead of LD_PRELOAD.
    pub preload_flag: bool,
    pub lib: PathBuf,
    pub workdir: PathBuf,
    pub timeout: Duration,
    /// `mie demo --typed`: the `mie` executable; the attacks are built without hand-written
    /// type ids (plain malloc), the mie column with `mie cc` (compiler type ids), the glibc
    /// column with `cc` from the same source.
    pub typed: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The attack took control ("PWNED: ..." printed).
    Exploited(String),
    /// mie stopped the program with a report.
    Stopped { kind: String, report: String, at_access: bool, when: &'static str },
    /// Killed by a signal without a mie report (the allocator's own check, or a crash).
    Crashed { signal: i32, message: String },
    /// Ran to the end; the exploit step did not reach its goal.
    NoEffect(String),
    /// The program could not be run, or exited in an unexpected way.
    Broken(String),
}

impl Outcome {
    pub fn exploited(&self) -> bool {
        matches!(self, Outcome::Exploited(_))
    }

    fn label(&self) -> String {
        match self {
            Outcome::Exploited(_) => "EXPLOITED".into(),
            Outcome::Stopped { kind, when, .. } => format!("stopped: {kind} ({when})"),
            Outcome::Crashed { message, .. } if !message.is_empty() => format!("aborted ({})", short(message, 38)),
            Outcome::Crashed { signal, .. } => format!("crashed ({})", signal_name(*signal)),
            Outcome::NoEffect(_) => "no effect".into(),
            Outcome::Broken(why) => format!("error: {}", short(why, 40)),
        }
    }

    fn detail(&self) -> &str {
        match self {
            Outcome::Exploited(s) | Outcome::NoEffect(s) | Outcome::Broken(s) => s,
            Outcome::Stopped { report, .. } => report,
            Outcome::Crashed { message, .. } => message,
        }
    }
}

/// When mie stopped the program, relative to the bug (from the report's kind and text).
pub fn when(kind: &str, at_access: bool, report: &str) -> &'static str {
    match kind {
        _ if at_access => "at the access",
        "double-free" | "invalid-free" => "at the bad call",
        "write-after-free" if report.contains("left the quarantine") => "when it left the quarantine",
        "write-after-free" => "when the slot was reused",
        _ if report.contains("found at exit") => "at exit",
        _ => "at free",
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGKILL => "SIGKILL (timeout)".into(),
        n => format!("signal {n}"),
    }
}

/// One line of the table.
pub struct Row {
    pub attack: &'static Attack,
    pub glibc: Outcome,
    pub mie: Outcome,
}

/// Write the sources into the work directory and compile one attack.
pub fn build(cfg: &Config, a: &Attack) -> Result<PathBuf, String> {
    build_with(cfg, a, None)
}

/// Compile one attack with `cc`, or with `mie cc` when `mie` is given (`--typed`).
fn build_with(cfg: &Config, a: &Attack, mie: Option<&Path>) -> Result<PathBuf, String> {
    std::fs::create_dir_all(&cfg.workdir).map_err(|e| format!("{}: {e}", cfg.workdir.display()))?;
    std::fs::write(cfg.workdir.join("lab.h"), LAB_H).map_err(|e| e.to_string())?;
    let src = cfg.workdir.join(format!("{}.c", a.name));
    std::fs::write(&src, a.source).map_err(|e| e.to_string())?;
    let bin = cfg.workdir.join(if mie.is_some() { format!("{}.typed", a.name) } else { a.name.to_string() });
    let mut cmd = match mie {
        // Type ids only: the hardening would stop some attacks before the allocator sees them.
        Some(m) => {
            let mut c = Command::new(m);
            c.args(["cc", "--mie-no-hardening"]);
            c
        }
        None => Command::new(&cfg.cc),
    };
    if cfg.typed.is_some() {
        cmd.arg("-DLAB_COMPILER_TYPES=1");
    }
    // Every memcpy/strcpy stays a real call, as in code the compiler cannot see through, and
    // no access of the attack is optimised away: -fno-builtin at -O1. Not in the typed build:
    // -fno-builtin also takes away the type ids (the compiler finds allocation calls through
    // the allocation builtins), so that one is built at -O0 with the copies and string
    // functions named one by one. No fortify, so the bugs reach the allocator.
    let flags: Vec<String> = if mie.is_some() {
        ["-O0"].into_iter().map(String::from).chain(["memcpy", "memmove", "memset", "strcpy", "strncpy", "strcat", "strncat", "stpcpy", "strlen"].map(|f| format!("-fno-builtin-{f}"))).collect()
    } else {
        vec!["-O1".into(), "-fno-builtin".into()]
    };
    let out = cmd
        .args(&flags)
        .args(["-g", "-pthread", "-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=0", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cfg.cc))?;
    if !out.status.success() {
        return Err(format!("{} failed on {}:\n{}", cfg.cc, a.name, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(bin)
}

/// Run a built attack, under mie (preloaded) or plain glibc.
pub fn run(cfg: &Config, bin: &Path, under_mie: bool) -> Outcome {
    let mut cmd = match cfg.exec.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest);
            if under_mie && cfg.preload_flag {
                c.arg("--preload").arg(&cfg.lib);
            }
            c.arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.env_remove("LD_PRELOAD");
    if under_mie && !cfg.preload_flag {
        cmd.env("LD_PRELOAD", &cfg.lib);
    }
    if !under_mie {
        cmd.env_remove("MIE_OPTIONS");
    }
    let tag = if under_mie { "mie" } else { "glibc" };
    let name = bin.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let out_path = cfg.workdir.join(format!("{name}.{tag}.out"));
    let err_path = cfg.workdir.join(format!("{name}.{tag}.err"));
    let (Ok(out), Ok(err)) = (std::fs::File::create(&out_path), std::fs::File::create(&err_path)) else {
        return Outcome::Broken("cannot create output files".into());
    };
    let mut child = match cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Broken(format!("cannot start {}: {e}", bin.display())),
    };
    let deadline = Instant::now() + cfg.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Outcome::Broken(format!("no result after {} s", cfg.timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Outcome::Broken(e.to_string()),
        }
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    classify(status, &stdout, &stderr)
}

fn classify(status: std::process::ExitStatus, stdout: &str, stderr: &str) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    if let Some(l) = stdout.lines().find_map(|l| l.strip_prefix("PWNED: ")) {
        return Outcome::Exploited(l.to_string());
    }
    if let Some(head) = stderr.lines().find(|l| l.starts_with("mie: ") && !l.starts_with("mie: warning")) {
        let kind = head["mie: ".len()..].split(' ').next().unwrap_or("").to_string();
        let at_access = head.contains("MTE tag-check fault") || head.contains("the access hit");
        let when = when(&kind, at_access, stderr);
        return Outcome::Stopped { kind, report: head.to_string(), at_access, when };
    }
    if let Some(sig) = status.signal() {
        let message = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
        return Outcome::Crashed { signal: sig, message };
    }
    if let Some(l) = stdout.lines().find_map(|l| l.strip_prefix("NOEFFECT: ")) {
        return Outcome::NoEffect(l.to_string());
    }
    Outcome::Broken(format!("exit status {status}, no result line: {}", short(stderr.trim(), 80)))
}

/// Build and run the selected attacks (all when `only` is None).
pub fn run_lab(cfg: &Config, only: Option<&str>, mut progress: impl FnMut(&str)) -> Result<Vec<Row>, String> {
    let chosen: Vec<&'static Attack> = ATTACKS.iter().filter(|a| only.is_none_or(|o| o == a.name)).collect();
    if chosen.is_empty() {
        let names: Vec<_> = ATTACKS.iter().map(|a| a.name).collect();
        return Err(format!("no attack named {:?}; the lab has: {}", only.unwrap_or(""), names.join(", ")));
    }
    let mut rows = Vec::new();
    for a in chosen {
        progress(a.name);
        let bin = build(cfg, a)?;
        let glibc = run(cfg, &bin, false);
        let mie = match &cfg.typed {
            Some(m) => run(cfg, &build_with(cfg, a, Some(m))?, true),
            None => run(cfg, &bin, true),
        };
        rows.push(Row { attack: a, glibc, mie });
    }
    Ok(rows)
}

/// The human table.
pub fn table(rows: &[Row], arch: &str) -> String {
    let mut s = String::new();
    let w0 = rows.iter().map(|r| r.attack.technique.len()).max().unwrap_or(9).max(9);
    let g: Vec<String> = rows.iter().map(|r| r.glibc.label()).collect();
    let m: Vec<String> = rows.iter().map(|r| r.mie.label()).collect();
    let w1 = g.iter().map(|x| x.chars().count()).max().unwrap_or(5).max(5);
    let w2 = m.iter().map(|x| x.chars().count()).max().unwrap_or(3).max(3);
    let _ = writeln!(s, "{:<w0$}  {:<w1$}  {:<w2$}  mie's report (first line)", "technique", "glibc", "mie");
    let _ = writeln!(s, "{}", "-".repeat(w0 + w1 + w2 + 32));
    for (i, r) in rows.iter().enumerate() {
        let _ = writeln!(s, "{:<w0$}  {:<w1$}  {:<w2$}  {}", r.attack.technique, g[i], m[i], r.mie.detail());
    }
    let exploited_glibc = rows.iter().filter(|r| r.glibc.exploited()).count();
    let exploited_mie = rows.iter().filter(|r| r.mie.exploited()).count();
    let stopped = rows.iter().filter(|r| matches!(r.mie, Outcome::Stopped { .. })).count();
    let at_access = rows.iter().filter(|r| matches!(r.mie, Outcome::Stopped { at_access: true, .. })).count();
    let _ = writeln!(
        s,
        "\n{arch}: {} attacks; glibc exploited {exploited_glibc}; mie exploited {exploited_mie}, stopped {stopped} with a report ({at_access} at the faulting access), the rest had no effect.",
        rows.len()
    );
    s
}

fn outcome_json(o: &Outcome) -> serde_json::Value {
    use serde_json::json;
    match o {
        Outcome::Stopped { kind, report, at_access, when } => {
            json!({ "result": "stopped", "kind": kind, "at_access": at_access, "when": when, "report": report })
        }
        Outcome::Crashed { signal, message } => json!({ "result": "crashed", "signal": signal, "message": message }),
        Outcome::Exploited(d) => json!({ "result": "exploited", "detail": d }),
        Outcome::NoEffect(d) => json!({ "result": "no-effect", "detail": d }),
        Outcome::Broken(d) => json!({ "result": "error", "detail": d }),
    }
}

/// The machine-readable form: one object per attack.
pub fn json(rows: &[Row], arch: &str) -> String {
    let attacks: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::json!({ "name": r.attack.name, "technique": r.attack.technique, "glibc": outcome_json(&r.glibc), "mie": outcome_json(&r.mie) }))
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "arch": arch, "attacks": attacks })).unwrap_or_default() + "\n"
}
