//! `mie bench`: allocator workloads run under glibc, the peer allocators and mie in one
//! session, interleaved, reported as median time and peak RSS relative to glibc.
//!
//! Each workload is a separate process. Allocators other than glibc are preloaded with
//! `LD_PRELOAD`, exactly as a user would deploy them. Wall time is measured around the
//! process; peak RSS is the child's `ru_maxrss` from `wait4`. Every run's output (a checksum
//! that depends only on the workload's seed) must match glibc's, so a broken run is reported
//! as an error, never as a fast one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How a workload is run.
pub enum Program {
    /// A C program from bench/, compiled at run time; it takes the scale as its argument.
    C(&'static str),
    /// A real program: the interpreter or tool, its arguments, extra environment, and its
    /// stdin (where `{scale}` is replaced by the scale; the scale is also in $MIE_BENCH_SCALE).
    Real { program: &'static [&'static str], env: &'static [(&'static str, &'static str)], stdin: &'static str },
}

pub struct Workload {
    pub name: &'static str,
    pub what: &'static str,
    pub program: Program,
}

pub const BENCH_H: &str = include_str!("../bench/bench.h");

const PYTHON_SCRIPT: &str = include_str!("../bench/python_workload.py");
const SQLITE_SCRIPT: &str = include_str!("../bench/sqlite_workload.sql");

pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "larson",
        what: "server: 4 threads replace random blocks (16-512 B); sets rotate, so frees are cross-thread",
        program: Program::C(include_str!("../bench/larson.c")),
    },
    Workload {
        name: "xmalloc",
        what: "producer/consumer: 2 threads allocate, 2 other threads free (16-256 B)",
        program: Program::C(include_str!("../bench/xmalloc.c")),
    },
    Workload {
        name: "cache_scratch",
        what: "false sharing: 4 threads allocate, write and free 8-byte objects",
        program: Program::C(include_str!("../bench/cache_scratch.c")),
    },
    Workload {
        name: "binary_tree",
        what: "many small same-size objects: build and free binary trees (24-byte nodes)",
        program: Program::C(include_str!("../bench/binary_tree.c")),
    },
    Workload {
        name: "real_sizes",
        what: "sizes of real programs: 85% <= 128 B, tail to 1 MiB; 2 threads, 20000-block sets",
        program: Program::C(include_str!("../bench/real_sizes.c")),
    },
    Workload {
        name: "realloc_growth",
        what: "strings grown by small appends and vectors grown by doubling (realloc)",
        program: Program::C(include_str!("../bench/realloc_growth.c")),
    },
    Workload {
        name: "large",
        what: "large blocks, 64 KiB-8 MiB, every page written",
        program: Program::C(include_str!("../bench/large.c")),
    },
    Workload {
        name: "fork_exec",
        what: "a shell's loop: 3000 kept blocks, and per command some churn and a fork + exec of /bin/true",
        program: Program::C(include_str!("../bench/fork_exec.c")),
    },
    Workload {
        name: "string_ops",
        what: "memcpy/memmove/memset/strcpy/strlen of 16-256 B on heap blocks (range-checked calls under mie)",
        program: Program::C(include_str!("../bench/string_ops.c")),
    },
    Workload {
        name: "python",
        what: "python3 (PYTHONMALLOC=malloc): dicts, lists, strings, objects, json, sorting",
        program: Program::Real {
            program: &["python3", "-"],
            env: &[("PYTHONMALLOC", "malloc"), ("PYTHONHASHSEED", "0"), ("PYTHONDONTWRITEBYTECODE", "1")],
            stdin: PYTHON_SCRIPT,
        },
    },
    Workload {
        name: "sqlite",
        what: "sqlite3 in memory: 60k-row inserts, index, joins, group by, integrity check",
        program: Program::Real { program: &["sqlite3", ":memory:"], env: &[], stdin: SQLITE_SCRIPT },
    },
];

/// An allocator under test: none preloaded means the system's (glibc).
#[derive(Clone, Debug)]
pub struct Allocator {
    pub name: String,
    pub lib: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

/// The peer allocators as Debian installs them, and the package that provides each.
pub fn peers(arch: &str) -> Vec<(&'static str, PathBuf, &'static str)> {
    let multiarch = format!("/usr/lib/{arch}-linux-gnu");
    vec![
        ("jemalloc", Path::new(&multiarch).join("libjemalloc.so.2"), "libjemalloc2"),
        ("mimalloc", Path::new(&multiarch).join("libmimalloc.so.2"), "libmimalloc2.0"),
        ("tcmalloc", Path::new(&multiarch).join("libtcmalloc_minimal.so.4"), "libtcmalloc-minimal4"),
        (
            "scudo",
            PathBuf::from(format!("/usr/lib/llvm-19/lib/clang/19/lib/linux/libclang_rt.scudo_standalone-{arch}.so")),
            "libclang-rt-19-dev",
        ),
    ]
}

pub struct Config {
    pub cc: String,
    pub workdir: PathBuf,
    pub scale: u32,
    pub runs: usize,
    pub timeout: Duration,
    pub allocators: Vec<Allocator>,
}

/// One measured run.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub secs: f64,
    pub rss_kib: u64,
}

/// All runs of one workload under one allocator.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub samples: Vec<Sample>,
    pub error: Option<String>,
}

impl Cell {
    pub fn median_secs(&self) -> Option<f64> {
        median(self.samples.iter().map(|s| s.secs).collect())
    }
    pub fn median_rss(&self) -> Option<f64> {
        median(self.samples.iter().map(|s| s.rss_kib as f64).collect())
    }
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

pub fn geomean(v: &[f64]) -> Option<f64> {
    if v.is_empty() || v.iter().any(|x| x.is_nan() || *x <= 0.0) {
        return None;
    }
    Some((v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

/// The results: `cells[w][a]` for workload `w` of `workloads` and allocator `a`.
pub struct Results {
    pub workloads: Vec<&'static Workload>,
    pub allocators: Vec<Allocator>,
    pub cells: Vec<Vec<Cell>>,
    pub scale: u32,
    pub runs: usize,
}

impl Results {
    /// Ratio of allocator `a` to glibc (column 0) for workload `w`, by `f`.
    pub fn ratio(&self, w: usize, a: usize, f: impl Fn(&Cell) -> Option<f64>) -> Option<f64> {
        let base = f(&self.cells[w][0])?;
        let x = f(&self.cells[w][a])?;
        (base > 0.0).then(|| x / base)
    }

    /// Geometric mean of the ratios over the workloads every allocator completed.
    pub fn geomean_ratio(&self, a: usize, f: impl Fn(&Cell) -> Option<f64> + Copy) -> Option<f64> {
        let ok: Vec<usize> = (0..self.workloads.len())
            .filter(|&w| (0..self.allocators.len()).all(|b| self.ratio(w, b, f).is_some()))
            .collect();
        geomean(&ok.iter().filter_map(|&w| self.ratio(w, a, f)).collect::<Vec<_>>())
    }

    /// Workloads left out of the geometric mean (some allocator failed them or was skipped).
    pub fn incomplete(&self) -> Vec<&'static str> {
        (0..self.workloads.len())
            .filter(|&w| (0..self.allocators.len()).any(|a| self.ratio(w, a, Cell::median_secs).is_none()))
            .map(|w| self.workloads[w].name)
            .collect()
    }
}

/// Whether a real program's tool is installed (its absence skips the workload).
pub fn available(w: &Workload) -> Result<(), String> {
    match &w.program {
        Program::C(_) => Ok(()),
        Program::Real { program, .. } => {
            let tool = program[0];
            if find_in_path(tool).is_some() {
                Ok(())
            } else {
                Err(format!("{tool} is not installed"))
            }
        }
    }
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    // Debian's own interpreter first: a python3 from pyenv or a venv is a different build.
    for dir in ["/usr/bin", "/bin"] {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return Some(p);
        }
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(tool)).find(|p| p.is_file()))
}

/// Compile a C workload into the work directory.
pub fn build(cfg: &Config, w: &Workload) -> Result<PathBuf, String> {
    let Program::C(source) = w.program else { return Err("not a C workload".into()) };
    std::fs::create_dir_all(&cfg.workdir).map_err(|e| format!("{}: {e}", cfg.workdir.display()))?;
    std::fs::write(cfg.workdir.join("bench.h"), BENCH_H).map_err(|e| e.to_string())?;
    let src = cfg.workdir.join(format!("{}.c", w.name));
    std::fs::write(&src, source).map_err(|e| e.to_string())?;
    let bin = cfg.workdir.join(w.name);
    let out = Command::new(&cfg.cc)
        .args(["-O2", "-g", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cfg.cc))?;
    if !out.status.success() {
        return Err(format!("{} failed on {}:\n{}", cfg.cc, w.name, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(bin)
}

/// A runnable workload: the command line and what to feed it.
pub struct Prepared {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<String>,
}

pub fn prepare(cfg: &Config, w: &Workload) -> Result<Prepared, String> {
    match &w.program {
        Program::C(_) => {
            let bin = build(cfg, w)?;
            Ok(Prepared { argv: vec![bin.display().to_string(), cfg.scale.to_string()], env: vec![], stdin: None })
        }
        Program::Real { program, env, stdin } => {
            let tool = find_in_path(program[0]).ok_or_else(|| format!("{} is not installed", program[0]))?;
            let mut argv = vec![tool.display().to_string()];
            argv.extend(program[1..].iter().map(|s| s.to_string()));
            let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            env.push(("MIE_BENCH_SCALE".into(), cfg.scale.to_string()));
            Ok(Prepared { argv, env, stdin: Some(stdin.replace("{scale}", &cfg.scale.to_string())) })
        }
    }
}

/// Run once: (sample, stdout) or why it failed.
pub fn run_once(cfg: &Config, p: &Prepared, a: &Allocator) -> Result<(Sample, String), String> {
    let out_path = cfg.workdir.join("run.out");
    let err_path = cfg.workdir.join("run.err");
    let in_path = cfg.workdir.join("run.in");
    std::fs::write(&in_path, p.stdin.as_deref().unwrap_or("")).map_err(|e| e.to_string())?;
    let open = |path: &Path| std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()));
    let mut cmd = Command::new(&p.argv[0]);
    cmd.args(&p.argv[1..])
        .env_remove("LD_PRELOAD")
        .env_remove("MIE_OPTIONS")
        .envs(p.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(a.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::fs::File::open(&in_path).map_err(|e| e.to_string())?)
        .stdout(open(&out_path)?)
        .stderr(open(&err_path)?);
    if let Some(lib) = &a.lib {
        cmd.env("LD_PRELOAD", lib);
    }
    let start = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", p.argv[0]))?;
    let pid = child.id() as libc::pid_t;
    // A watchdog kills the run if it overstays; the child is reaped here with wait4, which
    // also reports its peak resident set.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let timeout = cfg.timeout;
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(timeout).is_err() {
            // SAFETY: pid is our unreaped child (reaped only after this thread is joined).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break r;
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    drop(child);
    if r < 0 {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    if timed_out {
        return Err(format!("killed after {} s", cfg.timeout.as_secs()));
    }
    if libc::WIFSIGNALED(status) {
        return Err(format!("killed by signal {}: {}", libc::WTERMSIG(status), first_line(&stderr)));
    }
    if libc::WEXITSTATUS(status) != 0 {
        return Err(format!("exit status {}: {}", libc::WEXITSTATUS(status), first_line(&stderr)));
    }
    Ok((Sample { secs, rss_kib: ru.ru_maxrss.max(0) as u64 }, stdout))
}

fn first_line(s: &str) -> String {
    let l = s.lines().find(|l| !l.trim().is_empty()).unwrap_or("(no message)").trim();
    l.chars().take(160).collect()
}

/// Run every workload under every allocator, `runs` times, interleaved: each round runs each
/// workload under all allocators back to back, starting from a different allocator each
/// round, so slow drifts of the machine spread over all of them.
pub fn run_bench(
    cfg: &Config,
    workloads: &[&'static Workload],
    mut progress: impl FnMut(&str),
) -> Result<Results, String> {
    if cfg.allocators.first().is_none_or(|a| a.lib.is_some()) {
        return Err("the first allocator must be glibc (the baseline)".into());
    }
    let na = cfg.allocators.len();
    std::fs::create_dir_all(&cfg.workdir).map_err(|e| format!("{}: {e}", cfg.workdir.display()))?;
    let mut prepared = Vec::new();
    for w in workloads {
        progress(&format!("build {}", w.name));
        prepared.push(prepare(cfg, w)?);
    }
    let mut cells = vec![vec![Cell::default(); na]; workloads.len()];
    let mut expected: Vec<Option<String>> = vec![None; workloads.len()];
    for round in 0..cfg.runs {
        progress(&format!("round {}/{}", round + 1, cfg.runs));
        for (w, p) in prepared.iter().enumerate() {
            // glibc first in the first round: its output is the reference.
            let order: Vec<usize> = if round == 0 { (0..na).collect() } else { (0..na).map(|i| (i + round) % na).collect() };
            for a in order {
                let cell = &mut cells[w][a];
                if cell.error.is_some() {
                    continue;
                }
                match run_once(cfg, p, &cfg.allocators[a]) {
                    Ok((s, out)) => match &expected[w] {
                        Some(e) if *e != out => {
                            cell.error = Some(format!("wrong output: {:?}, glibc printed {:?}", first_line(&out), first_line(e)))
                        }
                        Some(_) => cell.samples.push(s),
                        None if a == 0 => {
                            expected[w] = Some(out);
                            cell.samples.push(s);
                        }
                        None => cell.error = Some("glibc's reference run failed".into()),
                    },
                    Err(e) => cell.error = Some(e),
                }
            }
        }
    }
    Ok(Results { workloads: workloads.to_vec(), allocators: cfg.allocators.clone(), cells, scale: cfg.scale, runs: cfg.runs })
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
}

/// The human tables: time and peak RSS ratios to glibc, with glibc's absolute numbers.
pub fn table(r: &Results, arch: &str) -> String {
    let mut s = String::new();
    let names: Vec<&str> = r.allocators.iter().map(|a| a.name.as_str()).collect();
    let w0 = r.workloads.iter().map(|w| w.name.len()).max().unwrap_or(8).max(14);
    let cols: Vec<usize> = names.iter().map(|n| n.len().max(8)).collect();
    for (title, f, unit) in [
        ("time (median), ratio to glibc; lower is better", Cell::median_secs as fn(&Cell) -> Option<f64>, "s"),
        ("peak RSS (median), ratio to glibc; lower is better", Cell::median_rss as fn(&Cell) -> Option<f64>, "MiB"),
    ] {
        let _ = writeln!(s, "{title}");
        let _ = write!(s, "{:<w0$}  {:>9}", "workload", format!("glibc {unit}"));
        for (a, n) in names.iter().enumerate().skip(1) {
            let _ = write!(s, "  {:>w$}", n, w = cols[a]);
        }
        s.push('\n');
        for (w, wl) in r.workloads.iter().enumerate() {
            let base = f(&r.cells[w][0]).map(|b| if unit == "MiB" { b / 1024.0 } else { b });
            let _ = write!(s, "{:<w0$}  {:>9}", wl.name, base.map(|b| format!("{b:.3}")).unwrap_or_else(|| "-".into()));
            for (a, width) in cols.iter().enumerate().skip(1) {
                let cell = if r.cells[w][a].error.is_some() { "error".into() } else { fmt_ratio(r.ratio(w, a, f)) };
                let _ = write!(s, "  {:>width$}", cell);
            }
            s.push('\n');
        }
        let _ = write!(s, "{:<w0$}  {:>9}", "geometric mean", "1.00");
        for (a, width) in cols.iter().enumerate().skip(1) {
            let _ = write!(s, "  {:>width$}", fmt_ratio(r.geomean_ratio(a, f)));
        }
        s.push_str("\n\n");
    }
    for (w, wl) in r.workloads.iter().enumerate() {
        for (a, c) in r.cells[w].iter().enumerate() {
            if let Some(e) = &c.error {
                let _ = writeln!(s, "error: {} under {}: {e}", wl.name, names[a]);
            }
        }
    }
    let inc = r.incomplete();
    if !inc.is_empty() {
        let _ = writeln!(s, "not in the geometric mean (a run failed): {}", inc.join(", "));
    }
    let _ = writeln!(
        s,
        "{arch}, scale {}, {} interleaved runs per cell, {} logical CPUs",
        r.scale,
        r.runs,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    s
}

/// Raw samples, one line per run.
pub fn csv(r: &Results) -> String {
    let mut s = String::from("workload,allocator,run,seconds,peak_rss_kib\n");
    for (w, wl) in r.workloads.iter().enumerate() {
        for (a, al) in r.allocators.iter().enumerate() {
            for (i, x) in r.cells[w][a].samples.iter().enumerate() {
                let _ = writeln!(s, "{},{},{},{:.6},{}", wl.name, al.name, i + 1, x.secs, x.rss_kib);
            }
        }
    }
    s
}

/// Medians, ratios and geometric means, machine-readable.
pub fn json(r: &Results, arch: &str) -> String {
    use serde_json::{json, Map, Value};
    let workloads: Vec<Value> = r
        .workloads
        .iter()
        .enumerate()
        .map(|(w, wl)| {
            let mut results = Map::new();
            for (a, al) in r.allocators.iter().enumerate() {
                let c = &r.cells[w][a];
                results.insert(
                    al.name.clone(),
                    json!({
                        "median_s": c.median_secs(),
                        "peak_rss_kib": c.median_rss(),
                        "time_ratio": r.ratio(w, a, Cell::median_secs),
                        "rss_ratio": r.ratio(w, a, Cell::median_rss),
                        "runs": c.samples.len(),
                        "error": c.error,
                    }),
                );
            }
            json!({ "name": wl.name, "what": wl.what, "results": results })
        })
        .collect();
    let mut geomean = Map::new();
    for (a, al) in r.allocators.iter().enumerate() {
        geomean.insert(al.name.clone(), json!({ "time": r.geomean_ratio(a, Cell::median_secs), "rss": r.geomean_ratio(a, Cell::median_rss) }));
    }
    let doc = json!({ "arch": arch, "scale": r.scale, "runs": r.runs, "workloads": workloads, "geomean": geomean });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

use plotters::style::RGBColor;

const COLORS: &[RGBColor] = &[
    RGBColor(0x88, 0x88, 0x88),
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0xed, 0xc9, 0x48),
];

/// Grouped bar chart of the ratios to glibc (time left, peak RSS right) on a log scale, as
/// SVG, drawn with plotters: one group of bars per workload and one for the geometric mean.
pub fn svg(r: &Results, arch: &str) -> String {
    let mut out = String::new();
    if let Err(e) = draw_svg(r, arch, &mut out) {
        // Drawing to a string fails only on a plotters bug; say so in the file itself.
        return format!("<svg xmlns=\"http://www.w3.org/2000/svg\"><text y=\"20\">chart failed: {e}</text></svg>\n");
    }
    out
}

fn draw_svg(r: &Results, arch: &str, out: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let na = r.allocators.len().max(1);
    let groups: Vec<String> = r.workloads.iter().map(|w| w.name.to_string()).chain(["geometric mean".to_string()]).collect();
    let ng = groups.len();
    // Each group is one unit tall; its bars share 80 % of it, the first group at the top.
    let bar_h = 0.8 / na as f64;
    let bar_y = |g: usize, a: usize| (ng - 1 - g) as f64 + 0.1 + (na - 1 - a) as f64 * bar_h;
    let (lo, hi) = (0.125f64, 8.0f64);
    let height = (90 + ng * (8 * na + 10)).max(240) as u32;
    let title = format!("mie bench ({arch}, scale {}, median of {}): ratio to glibc, log scale, lower is better", r.scale, r.runs);
    {
        let full = SVGBackend::with_string(out, (900, height)).into_drawing_area();
        full.fill(&WHITE)?;
        let root = full.titled(&title, ("sans-serif", 15))?;
        // The legend: one line under the title, clear of every bar.
        let (legend, root) = root.split_vertically(22);
        let mut x = 130;
        for (a, al) in r.allocators.iter().enumerate() {
            legend.draw(&Rectangle::new([(x, 6), (x + 10, 16)], COLORS[a % COLORS.len()].filled()))?;
            legend.draw(&Text::new(al.name.clone(), (x + 14, 6), ("sans-serif", 12)))?;
            x += 30 + 7 * al.name.len() as i32;
        }
        let (left, right) = root.split_horizontally(900 / 2 + 60);
        for (panel, area, what, f) in [
            (0, &left, "time", Cell::median_secs as fn(&Cell) -> Option<f64>),
            (1, &right, "peak RSS", Cell::median_rss as fn(&Cell) -> Option<f64>),
        ] {
            let mut chart = ChartBuilder::on(area)
                .caption(what, ("sans-serif", 13))
                .margin(6)
                .margin_right(22)
                .x_label_area_size(24)
                .y_label_area_size(if panel == 0 { 120 } else { 0 })
                .build_cartesian_2d((lo..hi).log_scale().with_key_points(vec![0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]), 0.0..ng as f64)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .disable_y_axis()
                .x_labels(7)
                .x_label_formatter(&|v| format!("{v}×"))
                .draw()?;
            // The 1× line: glibc.
            chart.draw_series(std::iter::once(PathElement::new(vec![(1.0, 0.0), (1.0, ng as f64)], BLACK)))?;
            for a in 0..r.allocators.len() {
                let color = COLORS[a % COLORS.len()];
                let bars = (0..ng).filter_map(|g| {
                    let v = if g < r.workloads.len() { r.ratio(g, a, f) } else { r.geomean_ratio(a, f) }?;
                    let v = v.clamp(lo, hi);
                    let y = bar_y(g, a);
                    Some(Rectangle::new([(1.0f64.min(v), y), (1.0f64.max(v), y + bar_h * 0.9)], color.filled()))
                });
                chart.draw_series(bars)?;
            }
            if panel == 0 {
                // Workload names left of the plot, at each group's middle.
                for (g, name) in groups.iter().enumerate() {
                    let (px, py) = chart.backend_coord(&(lo, (ng - 1 - g) as f64 + 0.5));
                    let bold = if g == r.workloads.len() { FontStyle::Bold } else { FontStyle::Normal };
                    let style = ("sans-serif", 11).into_font().style(bold).into_text_style(&full).pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Right,
                        plotters::style::text_anchor::VPos::Center,
                    ));
                    // backend_coord is in the whole picture's pixels: draw on the whole picture.
                    full.draw(&Text::new(name.clone(), (px - 6, py), style))?;
                }
            }
        }
        full.present()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_geomean() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        let g = geomean(&[2.0, 8.0]).unwrap();
        assert!((g - 4.0).abs() < 1e-12);
        assert_eq!(geomean(&[1.0, 0.0]), None);
    }

    fn results() -> Results {
        let cell = |secs: &[f64], rss: u64| Cell {
            samples: secs.iter().map(|&s| Sample { secs: s, rss_kib: rss }).collect(),
            error: None,
        };
        let glibc = Allocator { name: "glibc".into(), lib: None, env: vec![] };
        let other = Allocator { name: "other".into(), lib: Some("/x.so".into()), env: vec![] };
        Results {
            workloads: vec![&WORKLOADS[0], &WORKLOADS[1], &WORKLOADS[2]],
            allocators: vec![glibc, other],
            cells: vec![
                vec![cell(&[1.0, 1.2, 0.8], 1000), cell(&[2.0, 2.0, 9.0], 1500)],
                vec![cell(&[1.0], 1000), cell(&[0.5], 500)],
                vec![cell(&[1.0], 1000), Cell { samples: vec![], error: Some("boom".into()) }],
            ],
            scale: 1,
            runs: 3,
        }
    }

    #[test]
    fn ratios_use_medians_and_skip_failed_workloads() {
        let r = results();
        assert_eq!(r.ratio(0, 1, Cell::median_secs), Some(2.0));
        assert_eq!(r.ratio(1, 1, Cell::median_rss), Some(0.5));
        assert_eq!(r.ratio(2, 1, Cell::median_secs), None);
        // Geometric mean over the two complete workloads: sqrt(2.0 * 0.5) = 1.
        assert!((r.geomean_ratio(1, Cell::median_secs).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(r.incomplete(), vec![WORKLOADS[2].name]);
        let t = table(&r, "x86_64");
        assert!(t.contains("error: cache_scratch under other: boom"), "{t}");
        assert!(t.contains("geometric mean"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&json(&r, "x86_64")).unwrap();
        assert!((j["geomean"]["other"]["time"].as_f64().unwrap() - 1.0).abs() < 1e-12, "{j}");
        assert_eq!(j["workloads"][2]["results"]["other"]["error"].as_str(), Some("boom"), "{j}");
        assert_eq!(csv(&r).lines().count(), 1 + 3 + 3 + 1 + 1 + 1);
        let svg = svg(&r, "x86_64");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        for name in ["glibc", "other", WORKLOADS[0].name, "geometric mean", "peak RSS", "1×", "8×"] {
            assert!(svg.contains(name), "{name} missing\n{svg}");
        }
        // Bars: 3 workloads + mean, 2 allocators, 2 panels, the failed cell and glibc's
        // zero-length bars included (glibc's are 1 px tall strips at 1×), minus the failed one.
        assert!(svg.matches("<rect").count() >= 2 * (4 * 2 - 1), "{svg}");
    }
}
