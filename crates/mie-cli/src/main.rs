//! `mie`: run, build, deploy and measure programs under the mie allocator. `mie --help`
//! lists the commands, `mie COMMAND --help` explains one; `mie completions SHELL` prints
//! shell completions.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

// The tool itself runs on mie too.
#[global_allocator]
static GLOBAL: mie::Mie = mie::Mie;

#[derive(Parser)]
#[command(name = "mie", version, about = "Memory Integrity Enforcement for Linux: run, build, deploy and measure programs under the mie allocator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run PROGRAM with libmie.so preloaded (its children inherit it)
    Run {
        /// Print allocator statistics when the program exits (stats=1)
        #[arg(long)]
        stats: bool,
        /// The debugging profile (debug=1): allocation and free stacks in every report,
        /// longer stacks, ten times more guarded samples; the way to chase a finding
        #[arg(long)]
        debug: bool,
        /// Guard mode (guard=1): every block on pages of its own beside an unmapped page, so
        /// an overflow, an underflow (with -o guard_below=1) or a use after free stops at the
        /// access; slow and page-hungry, for tests
        #[arg(long)]
        guard: bool,
        /// Options added after those already in MIE_OPTIONS (K=V:K=V)
        #[arg(long, short = 'o', value_name = "K=V:K=V")]
        options: Vec<String>,
        /// This libmie.so (default: `mie lib`)
        #[arg(long)]
        lib: Option<PathBuf>,
        /// The program and its arguments
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, value_name = "PROGRAM")]
        program: Vec<OsString>,
    },
    /// The protection lab: classic heap attacks under glibc and under mie, side by side
    /// (exit status 1 if any attack succeeds under mie)
    Demo {
        /// One JSON object instead of the table
        #[arg(long)]
        json: bool,
        /// Only this attack
        #[arg(long, value_name = "NAME")]
        only: Option<String>,
        #[arg(long)]
        lib: Option<PathBuf>,
        /// Keep the built attacks in DIR
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
        /// The attacks without hand-written type ids, the mie column built with `mie cc`
        #[arg(long)]
        typed: bool,
    },
    /// Allocator workloads under glibc, the installed peers and mie, interleaved: median
    /// time and peak RSS as ratios to glibc, and results.csv, results.json, bench.svg
    Bench {
        /// Scale 1, 3 runs (default: scale 3, 5 runs)
        #[arg(long)]
        quick: bool,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        scale: Option<u32>,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        runs: Option<u32>,
        /// Only these workloads
        #[arg(long, value_delimiter = ',', value_name = "W,W")]
        only: Option<Vec<String>>,
        /// Only these allocators
        #[arg(long, value_delimiter = ',', value_name = "A,A")]
        alloc: Option<Vec<String>>,
        /// A column of mie with these options (repeatable)
        #[arg(long, value_name = "K=V:K=V")]
        mie_options: Vec<String>,
        /// A column for another malloc library, say an earlier libmie.so (repeatable)
        #[arg(long, value_name = "NAME=PATH")]
        compare: Vec<String>,
        #[arg(long, value_name = "DIR", default_value = "mie-bench")]
        out: PathBuf,
        #[arg(long)]
        lib: Option<PathBuf>,
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
        /// Instead: instructions per hot-path operation, counted by valgrind's callgrind
        #[arg(long)]
        instructions: bool,
    },
    /// clang 22 with compiler type ids (-fsanitize=alloc-token), hardening and libmie;
    /// every other argument passes through: CC="mie cc". --mie-no-types,
    /// --mie-no-hardening leave parts out; --mie-print prints the command
    #[command(disable_help_flag = true)]
    Cc {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// As `mie cc`, with clang++-22: CXX="mie c++"
    #[command(name = "c++", disable_help_flag = true)]
    Cxx {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Make PROGRAM load libmie itself (a DT_NEEDED entry, with patchelf): it travels with
    /// the binary and covers set-uid programs, where LD_PRELOAD is ignored
    Enable {
        program: PathBuf,
        #[arg(long)]
        lib: Option<PathBuf>,
    },
    /// Undo `mie enable`
    Disable { program: PathBuf },
    /// Print (or install, or remove) the systemd drop-in that runs service NAME under mie
    Service {
        name: String,
        /// MIE_OPTIONS for the service (checked as libmie checks them)
        #[arg(long, value_name = "K=V:K=V")]
        options: Option<String>,
        /// Write /etc/systemd/system/NAME.service.d/mie.conf
        #[arg(long, conflicts_with = "remove")]
        install: bool,
        /// Remove that drop-in (the service runs without mie after a restart)
        #[arg(long)]
        remove: bool,
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Install libmie.so, mie, mie.pc and the man pages under --prefix; --system lists libmie in
    /// /etc/ld.so.preload (after a program ran under it): every program, set-uid ones too
    Install {
        #[arg(long, value_name = "DIR")]
        prefix: Option<PathBuf>,
        #[arg(long)]
        system: bool,
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Take libmie out of /etc/ld.so.preload (--system)
    Uninstall {
        #[arg(long, required = true)]
        system: bool,
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Add source lines (from the binaries' debug info) to a saved report
    Report {
        /// The report (- for stdin)
        #[arg(default_value = "-")]
        file: PathBuf,
        /// A binary the report names (found by file name; repeatable)
        #[arg(long)]
        binary: Vec<PathBuf>,
    },
    /// Print the path of the libmie.so that `mie run` uses
    Lib,
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    Completions { shell: clap_complete::Shell },
}

fn die(msg: &str) -> ! {
    eprintln!("mie: {msg}");
    exit(2)
}

/// libmie.so: $MIE_LIB, else beside this executable (cargo's target dir), else ../lib.
fn find_lib(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(p) = explicit.or_else(|| std::env::var_os("MIE_LIB").map(PathBuf::from)) {
        if p.is_file() {
            return p;
        }
        die(&format!("libmie.so not found at {}", p.display()));
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("cannot locate myself: {e}")));
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    for cand in [dir.join("libmie.so"), dir.join("../lib/libmie.so"), dir.join("../libmie.so")] {
        if cand.is_file() {
            return cand.canonicalize().unwrap_or(cand);
        }
    }
    die(&format!(
        "libmie.so not found beside {} (build it with `cargo build --release --workspace`, or set MIE_LIB)",
        exe.display()
    ))
}

/// What `mie run --help` adds after the flags: every MIE_OPTIONS key.
fn options_help() -> String {
    let mut s = String::from("Options (MIE_OPTIONS=\"key=value:key=value\"):\n");
    for (k, what) in mie::options::KEYS {
        s.push_str(&format!("  {k:<24} {what}\n"));
    }
    s
}

/// The command line as clap sees it, with the option list under `mie run`.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("run", |c| c.after_help(options_help()))
}

/// Man pages from the same definition as `--help`: mie(1) and mie-COMMAND(1) for each
/// command, written to `dir` (DIR/share/man/man1 for `mie install --prefix DIR`).
fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut top = command();
    top.build();
    let mut pages = vec![("mie".to_string(), top.clone())];
    for sub in top.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("mie-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name).bin_name(format!("mie {}", sub.get_name())).version(env!("CARGO_PKG_VERSION"))));
    }
    let mut written = Vec::new();
    for (name, cmd) in pages {
        let mut roff = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut roff).map_err(|e| e.to_string())?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, roff).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn main() {
    // A command writing to a pipe whose reader went away (`mie completions bash | head -1`)
    // ends quietly, as other command line tools do, instead of panicking in println!.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    match cli.cmd {
        Cmd::Run { stats, debug, guard, options, lib, program } => run(stats, debug, guard, options, lib, &program),
        Cmd::Demo { json, only, lib, keep, typed } => demo(json, only, lib, keep, typed),
        Cmd::Bench { quick, scale, runs, only, alloc, mie_options, compare, out, lib, keep, instructions } => {
            let (scale, runs) = if quick { (1, 3) } else { (scale.unwrap_or(3), runs.unwrap_or(5) as usize) };
            bench(BenchArgs { scale, runs, only, alloc, mie_options, compare, out, lib, keep, instructions })
        }
        Cmd::Cc { args } => cc(false, &args),
        Cmd::Cxx { args } => cc(true, &args),
        Cmd::Enable { program, lib } => done(mie_cli::deploy::enable(&program, &find_lib(lib))),
        Cmd::Disable { program } => done(mie_cli::deploy::disable(&program)),
        Cmd::Service { name, options, install, remove, root } => service(&name, options.as_deref(), install, remove, &root),
        Cmd::Install { prefix, system, root } => install(prefix, system, &root),
        Cmd::Uninstall { root, .. } => done(mie_cli::deploy::uninstall_system(&root)),
        Cmd::Report { file, binary } => {
            let text = mie_cli::report::read(&file).unwrap_or_else(|e| die(&e));
            print!("{}", mie_cli::report::symbolize(&text, &binary));
        }
        Cmd::Lib => println!("{}", find_lib(None).display()),
        Cmd::Completions { shell } => clap_complete::generate(shell, &mut Cli::command(), "mie", &mut std::io::stdout()),
    }
}

/// Print a command's message and exit 0, or die with its error.
fn done(r: Result<String, String>) -> ! {
    match r {
        Ok(msg) => {
            println!("{msg}");
            exit(0)
        }
        Err(e) => die(&e),
    }
}

fn run(stats: bool, debug: bool, guard: bool, extra: Vec<String>, lib: Option<PathBuf>, program: &[OsString]) -> ! {
    let lib = find_lib(lib);
    let mut options: Vec<String> = std::env::var("MIE_OPTIONS").ok().filter(|s| !s.is_empty()).into_iter().collect();
    if debug {
        // First, so options given after it (--options sample_rate=...) still win.
        options.push("debug=1".into());
    }
    if guard {
        options.push("guard=1".into());
    }
    options.extend(extra);
    if stats {
        options.push("stats=1".into());
    }
    let mut preload = lib.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|s| !s.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    if let Some(why) = preload_ignored(&program[0]) {
        eprintln!("mie: warning: {} {why}", program[0].to_string_lossy());
    }
    let mut cmd = Command::new(&program[0]);
    cmd.args(&program[1..]).env("LD_PRELOAD", preload);
    if !options.is_empty() {
        // This process (on mie itself) has already warned about whatever in its own
        // MIE_OPTIONS was wrong; the program and its children need not say it again.
        if let Ok(own) = std::env::var("MIE_OPTIONS") {
            cmd.env("MIE_OPTIONS_SAID", own);
        }
        cmd.env("MIE_OPTIONS", options.join(":"));
    }
    let err = cmd.exec();
    die(&format!("cannot run {}: {err}", program[0].to_string_lossy()))
}

/// Why the program `name` (a path, or a name looked up in PATH as exec does) will not load a
/// preloaded library: it is linked statically, or set-uid or set-gid to someone else, which
/// makes the loader run it in secure mode. None when it will (or cannot be found: exec says
/// so).
fn preload_ignored(name: &std::ffi::OsStr) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let path = if name.as_encoded_bytes().contains(&b'/') {
        PathBuf::from(name)
    } else {
        let dirs = std::env::var_os("PATH")?;
        std::env::split_paths(&dirs).map(|d| d.join(name)).find(|p| p.is_file())?
    };
    let m = std::fs::metadata(&path).ok()?;
    if statically_linked(&path) {
        return Some("is statically linked: no dynamic loader reads LD_PRELOAD for it, so it runs with its own allocator, without mie (a dynamically linked build runs under mie)".into());
    }
    if nosuid(&path) {
        return None; // the bits are ignored there: it runs as its caller, mie loads
    }
    // SAFETY: getuid and getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let id = if m.mode() & libc::S_ISUID != 0 && m.uid() != uid {
        format!("set-uid (to uid {})", m.uid())
    } else if m.mode() & libc::S_ISGID != 0 && m.gid() != gid {
        format!("set-gid (to gid {})", m.gid())
    } else {
        return None;
    };
    Some(format!("is {id}: the dynamic loader ignores LD_PRELOAD for it, so it runs without mie (`mie enable PROGRAM` makes it load libmie itself)"))
}

/// Whether `path` is an ELF executable with no program interpreter (`PT_INTERP`): linked
/// statically (Go programs by default, `-static` C ones), so no loader reads LD_PRELOAD. A
/// script or anything unreadable: false.
fn statically_linked(path: &std::path::Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    let mut h = [0u8; 64];
    if f.read_exact(&mut h).is_err() || &h[..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return false; // not a 64-bit little-endian ELF file
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let e_type = u16_at(&h, 16);
    let phoff = u64::from_le_bytes(h[32..40].try_into().unwrap());
    let (phentsize, phnum) = (u16_at(&h, 54), u16_at(&h, 56));
    if !(e_type == 2 || e_type == 3) || phentsize < 4 || phnum == 0 || phnum > 512 {
        return false;
    }
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    if f.seek(SeekFrom::Start(phoff)).is_err() || f.read_exact(&mut ph).is_err() {
        return false;
    }
    const PT_INTERP: u32 = 3;
    !ph.chunks(phentsize as usize).any(|p| u32::from_le_bytes(p[..4].try_into().unwrap()) == PT_INTERP)
}

/// Whether `path` is on a file system mounted `nosuid`.
fn nosuid(path: &std::path::Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statvfs fills the buffer it is given; c is NUL-terminated.
    unsafe {
        let mut v: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut v) == 0 && v.f_flag & libc::ST_NOSUID != 0
    }
}

fn demo(json: bool, only: Option<String>, lib: Option<PathBuf>, keep: Option<PathBuf>, typed: bool) -> ! {
    use mie_cli::demo;
    let lib = find_lib(lib);
    let workdir = keep.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("mie-lab-{}", std::process::id())));
    let cfg = demo::Config {
        cc: std::env::var("CC").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "cc".into()),
        exec: Vec::new(),
        preload_flag: false,
        lib,
        workdir: workdir.clone(),
        timeout: std::time::Duration::from_secs(120),
        typed: typed.then(|| std::env::current_exe().unwrap_or_else(|e| die(&format!("cannot locate myself: {e}")))),
    };
    if !json {
        eprintln!("mie demo: {} attacks, each run under glibc and under {}", demo::ATTACKS.len(), cfg.lib.display());
    }
    let result = demo::run_lab(&cfg, only.as_deref(), |name| {
        if !json {
            eprint!("  {name} ");
        }
    });
    if !json {
        eprintln!();
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    let rows = result.unwrap_or_else(|e| die(&e));
    let arch = std::env::consts::ARCH;
    if json {
        print!("{}", demo::json(&rows, arch));
    } else {
        print!("{}", demo::table(&rows, arch));
    }
    exit(if rows.iter().any(|r| r.mie.exploited()) { 1 } else { 0 })
}

struct BenchArgs {
    scale: u32,
    runs: usize,
    only: Option<Vec<String>>,
    alloc: Option<Vec<String>>,
    mie_options: Vec<String>,
    compare: Vec<String>,
    out: PathBuf,
    lib: Option<PathBuf>,
    keep: Option<PathBuf>,
    instructions: bool,
}

fn bench(a: BenchArgs) -> ! {
    use mie_cli::bench::{self, Allocator};
    let BenchArgs { scale, runs, only, alloc: alloc_filter, mie_options: variants, compare, out: out_dir, lib, keep, instructions } = a;
    let compare: Vec<Allocator> = compare
        .iter()
        .map(|v| {
            let Some((name, path)) = v.split_once('=').filter(|(n, p)| !n.is_empty() && Path::new(p).is_file()) else {
                die(&format!("--compare needs NAME=PATH of an existing library, not {v}"))
            };
            Allocator { name: name.to_string(), lib: Some(PathBuf::from(path)), env: vec![] }
        })
        .collect();
    let arch = std::env::consts::ARCH;
    let lib = find_lib(lib);
    let mut allocators = vec![Allocator { name: "glibc".into(), lib: None, env: vec![] }];
    for (name, path, package) in bench::peers(arch) {
        if path.is_file() {
            allocators.push(Allocator { name: name.into(), lib: Some(path), env: vec![] });
        } else if alloc_filter.as_ref().is_none_or(|f| f.iter().any(|x| x == name)) {
            eprintln!("mie bench: skipping {name}: {} not found (apt-get install {package})", path.display());
        }
    }
    let mie_env = |opts: &str| vec![("MIE_OPTIONS".to_string(), opts.to_string())];
    allocators.push(Allocator { name: "mie".into(), lib: Some(lib.clone()), env: vec![] });
    if arch == "aarch64" && mte_available() {
        allocators.push(Allocator { name: "mie-nomte".into(), lib: Some(lib.clone()), env: mie_env("mte=0") });
    }
    for v in &variants {
        allocators.push(Allocator { name: format!("mie({v})"), lib: Some(lib.clone()), env: mie_env(v) });
    }
    // Columns asked for by name (--compare, --mie-options) stay whatever --alloc says.
    let asked: Vec<String> = compare.iter().map(|a| a.name.clone()).chain(variants.iter().map(|v| format!("mie({v})"))).collect();
    allocators.extend(compare);
    if let Some(f) = &alloc_filter {
        for name in f {
            if !allocators.iter().any(|a| &a.name == name) && !bench::peers(arch).iter().any(|p| p.0 == name) {
                die(&format!("no allocator named {name}"));
            }
        }
        allocators.retain(|a| a.lib.is_none() || f.contains(&a.name) || asked.contains(&a.name));
    }
    if instructions {
        count_instructions(&allocators, &out_dir, keep);
    }
    let mut workloads = Vec::new();
    for w in bench::WORKLOADS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == w.name)) {
            continue;
        }
        match bench::available(w) {
            Ok(()) => workloads.push(w),
            Err(why) => eprintln!("mie bench: skipping workload {}: {why}", w.name),
        }
    }
    if let Some(o) = &only {
        for name in o {
            if !bench::WORKLOADS.iter().any(|w| w.name == name) {
                let names: Vec<_> = bench::WORKLOADS.iter().map(|w| w.name).collect();
                die(&format!("no workload named {name}; there are: {}", names.join(", ")));
            }
        }
    }
    if workloads.is_empty() {
        die("no workload to run");
    }
    let workdir = keep.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("mie-bench-{}", std::process::id())));
    let cfg = bench::Config {
        cc: std::env::var("CC").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "cc".into()),
        workdir: workdir.clone(),
        scale,
        runs,
        timeout: std::time::Duration::from_secs(300),
        allocators,
    };
    let names: Vec<&str> = cfg.allocators.iter().map(|a| a.name.as_str()).collect();
    eprintln!("mie bench: {} workloads x {} allocators ({}), scale {scale}, {runs} runs", workloads.len(), names.len(), names.join(", "));
    let started = std::time::Instant::now();
    let result = bench::run_bench(&cfg, &workloads, |what| eprintln!("  {what} ({:.0} s)", started.elapsed().as_secs_f64()));
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    let r = result.unwrap_or_else(|e| die(&e));
    print!("{}", bench::table(&r, arch));
    std::fs::create_dir_all(&out_dir).unwrap_or_else(|e| die(&format!("{}: {e}", out_dir.display())));
    for (file, text) in [
        ("results.csv", bench::csv(&r)),
        ("results.json", bench::json(&r, arch)),
        ("bench.svg", bench::svg(&r, arch)),
    ] {
        let p = out_dir.join(file);
        std::fs::write(&p, text).unwrap_or_else(|e| die(&format!("{}: {e}", p.display())));
    }
    println!("wrote {}/results.csv, results.json, bench.svg ({:.0} s)", out_dir.display(), started.elapsed().as_secs_f64());
    let failed = r.cells.iter().flatten().any(|c| c.error.is_some());
    exit(if failed { 1 } else { 0 })
}

/// `mie bench --instructions`: instructions per hot-path operation under callgrind.
fn count_instructions(allocators: &[mie_cli::bench::Allocator], out_dir: &Path, keep: Option<PathBuf>) -> ! {
    use mie_cli::instructions;
    let Some(valgrind) = instructions::valgrind() else { die("--instructions needs valgrind (apt-get install valgrind)") };
    let workdir = keep.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("mie-instr-{}", std::process::id())));
    let cc = std::env::var("CC").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "cc".into());
    let bin = instructions::build(&cc, &workdir).unwrap_or_else(|e| die(&e));
    let names: Vec<&str> = allocators.iter().map(|a| a.name.as_str()).collect();
    eprintln!("mie bench --instructions: {} operations x {} allocators ({})", instructions::CASES.len(), names.len(), names.join(", "));
    let t = instructions::measure(&valgrind, &bin, allocators, |c| eprintln!("  {c}"));
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    let text = instructions::table(allocators, &t);
    print!("{text}");
    std::fs::create_dir_all(out_dir).unwrap_or_else(|e| die(&format!("{}: {e}", out_dir.display())));
    let p = out_dir.join("instructions.txt");
    std::fs::write(&p, &text).unwrap_or_else(|e| die(&format!("{}: {e}", p.display())));
    println!("wrote {}", p.display());
    // A peer valgrind cannot run (Scudo) is reported in the table and is no failure;
    // anything else that could not be measured is.
    let failed = t.iter().flatten().any(|r| r.as_ref().is_err_and(|e| !instructions::not_measurable(e)));
    exit(if failed { 1 } else { 0 })
}

/// Whether this machine tags memory (arm64 HWCAP2_MTE).
fn mte_available() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: getauxval only reads the auxiliary vector.
        unsafe { libc::getauxval(libc::AT_HWCAP2) & (1 << 18) != 0 }
    }
    #[cfg(not(target_arch = "aarch64"))]
    false
}

fn service(name: &str, options: Option<&str>, install: bool, remove: bool, root: &Path) -> ! {
    use mie_cli::deploy;
    let unit = deploy::service_unit(name).unwrap_or_else(|e| die(&e));
    let path = deploy::service_path(root, &unit);
    if remove {
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::remove_dir(dir); // only if nothing else is in it
                }
                println!("removed {}; run `systemctl daemon-reload && systemctl restart {unit}`", path.display());
                exit(0)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => die(&format!("{unit} has no mie drop-in ({} does not exist)", path.display())),
            Err(e) => die(&format!("{}: {e}", path.display())),
        }
    }
    if let Some(o) = options {
        // The service's libmie would warn about these in the journal; say it here, first.
        let mut bad = Vec::new();
        mie::options::Options::parse(o.as_bytes(), false, |why, item, ok| {
            let ok = if ok.is_empty() { String::new() } else { format!(" (accepted: {ok})") };
            bad.push(format!("{why}: '{}'{ok}", String::from_utf8_lossy(item)));
        });
        if !bad.is_empty() {
            die(&format!("--options: {}", bad.join("; ")));
        }
    }
    let lib = find_lib(None);
    for w in deploy::sandbox_warnings(root, &unit, &lib, options) {
        eprintln!("mie: warning: {w}");
    }
    let text = deploy::service_dropin(&unit, &lib, options);
    if !install {
        print!("{text}");
        exit(0);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| die(&format!("{}: {e}", dir.display())));
    }
    std::fs::write(&path, text).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
    println!("wrote {}; run `systemctl daemon-reload && systemctl restart {unit}` (mie service {name} --remove undoes it)", path.display());
    exit(0)
}

fn install(prefix: Option<PathBuf>, system: bool, root: &Path) -> ! {
    let lib = find_lib(None);
    let lib = match &prefix {
        Some(p) => {
            let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("cannot locate myself: {e}")));
            let mut files = mie_cli::deploy::install(p, &lib, &exe).unwrap_or_else(|e| die(&e));
            files.extend(write_man_pages(&p.join("share/man/man1")).unwrap_or_else(|e| die(&e)));
            for f in &files {
                println!("installed {}", f.display());
            }
            files[0].clone()
        }
        None if system => lib,
        None => die("mie install needs --prefix DIR (and/or --system)"),
    };
    if system {
        done(mie_cli::deploy::install_system(root, &lib));
    }
    exit(0)
}

/// `mie cc` / `mie c++`: clang 22 with type ids, hardening and libmie (`cc.rs`).
fn cc(cxx: bool, args: &[OsString]) -> ! {
    use mie_cli::cc;
    let compiler = cc::find_compiler(cxx).unwrap_or_else(|e| die(&e));
    let lib = find_lib(None);
    let inv = cc::classify(args);
    let uses_types = !args.iter().any(|a| a == cc::NO_TYPES);
    let token_object = if inv.links && inv.token_max != 0 && uses_types {
        Some(cc::token_object(&compiler, inv.token_max).unwrap_or_else(|e| die(&e)))
    } else {
        None
    };
    if let Some(why) = cc::unsupported(args) {
        die(&why);
    }
    if let Some(why) = cc::caution(args) {
        eprintln!("mie: {} {why}", if cxx { "c++" } else { "cc" });
    }
    let mut cmd = cc::command(&compiler, cxx, args, &lib, token_object.as_deref()).unwrap_or_else(|e| die(&e));
    if args.iter().any(|a| a == cc::DRY_RUN) {
        let words: Vec<String> = std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| a.to_string_lossy().into_owned()).collect();
        println!("{}", words.join(" "));
        eprintln!("mie: {} not run ({}): nothing was compiled", if cxx { "c++" } else { "cc" }, cc::DRY_RUN);
        exit(0);
    }
    let err = cmd.exec();
    die(&format!("cannot run {}: {err}", compiler.display()))
}
