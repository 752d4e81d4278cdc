//! `mie`: run programs under the mie allocator.
//!
//! ```text
//! mie run [--stats] [--options K=V:K=V] [--lib PATH] -- PROGRAM [ARGS...]
//! mie lib                      print the path of libmie.so that `run` would preload
//! mie demo [--json] [--only NAME] [--lib PATH]   the protection lab
//! mie bench [--quick] [--only W,W] [--alloc A,A] [--out DIR] ...   speed against the peers
//! ```

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{exit, Command};

// The tool itself runs on mie too.
#[global_allocator]
static GLOBAL: mie::Mie = mie::Mie;

const USAGE: &str = "usage:
  mie run [--stats] [--options K=V:K=V] [--lib PATH] -- PROGRAM [ARGS...]
      run PROGRAM with libmie.so preloaded; --options are appended to MIE_OPTIONS,
      --stats prints allocator statistics when the program exits
  mie demo [--json] [--only NAME] [--lib PATH] [--keep DIR] [--typed]
      the protection lab: build classic heap attacks (cc), run each under glibc and under
      mie, print what happened side by side; exit status 1 if any attack succeeds under mie.
      --typed: the attacks without hand-written type ids, the mie column built with mie cc
      (compiler type ids)
  mie bench [--quick] [--scale N] [--runs N] [--only W,W] [--alloc A,A]
            [--mie-options OPTS]... [--compare NAME=PATH]... [--out DIR] [--lib PATH]
            [--keep DIR] [--instructions]
      allocator workloads under glibc, jemalloc, mimalloc, tcmalloc, scudo and mie, interleaved;
      prints median time and peak RSS as ratios to glibc and writes results.csv,
      results.json and bench.svg to DIR (default ./mie-bench). --quick: scale 1, 3 runs
      (default: scale 3, 5 runs). Each --mie-options adds a column of mie with those options;
      each --compare adds a column for another malloc library (say, an earlier build of
      libmie.so), measured in the same interleaved rounds.
      --instructions: instead, instructions per hot-path operation (malloc+free, cross-thread
      free, checked memcpy) counted by valgrind's callgrind, written to DIR/instructions.txt.
  mie cc ARGS... / mie c++ ARGS...
      clang 22 (clang-22 / clang++-22) with compiler type ids for mie (-fsanitize=alloc-token),
      hardening (stack protector, stack clash, bounds traps, zeroed locals, CET/BTI,
      _FORTIFY_SOURCE=3 when optimizing, _GLIBCXX_ASSERTIONS for C++) and, when linking,
      libmie (-lmie with its rpath); every other argument is passed through:
      CC='mie cc' CXX='mie c++' make. --mie-no-types, --mie-no-hardening leave parts out;
      --mie-print prints the command instead of running it
  mie enable PROGRAM [--lib PATH] / mie disable PROGRAM
      make PROGRAM load libmie itself (a DT_NEEDED entry, with patchelf): the protection
      travels with the binary and covers set-uid programs, where LD_PRELOAD is ignored
  mie service NAME [--options K=V:...] [--install [--root DIR]]
      print (or install) the systemd drop-in that runs service NAME under mie
  mie install --prefix DIR [--system] / mie install --system / mie uninstall --system
      libmie.so, mie and mie.pc (pkg-config) under DIR; --system lists libmie in
      /etc/ld.so.preload (after a program ran under it): every program, set-uid ones too
  mie report [FILE|-] [--binary PATH]...
      add source lines (from the binaries' debug info) to the code addresses of a saved
      report; binaries are found from the report's addr2line lines or --binary
  mie lib
      print the path of the libmie.so that `mie run` uses
  mie help";

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

/// `mie run --help`: the flags and every MIE_OPTIONS key.
fn run_help() -> String {
    let mut s = String::from(
        "mie run [--stats] [--options K=V:K=V] [--lib PATH] [--] PROGRAM [ARGS...]\n\
         \n\
         Runs PROGRAM with libmie.so preloaded (children inherit it).\n\
         \x20 --stats            print allocator statistics when the program exits (stats=1)\n\
         \x20 --options K=V:...  options, added after those already in MIE_OPTIONS\n\
         \x20                    (--options=K=V works too; -o is short for --options)\n\
         \x20 --lib PATH         use this libmie.so (default: `mie lib`)\n\
         \n\
         Options (MIE_OPTIONS=\"key=value:key=value\"):\n",
    );
    for (k, what) in mie::options::KEYS {
        s.push_str(&format!("  {k:<24} {what}\n"));
    }
    s
}

fn run(args: &[OsString]) -> ! {
    let mut stats = false;
    let mut extra: Vec<String> = Vec::new();
    let mut lib = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        match a.as_ref() {
            "--" => {
                i += 1;
                break;
            }
            "--help" | "-h" => {
                print!("{}", run_help());
                exit(0);
            }
            "--stats" => stats = true,
            "--options" | "-o" => {
                i += 1;
                let v = args.get(i).unwrap_or_else(|| die("--options needs a value"));
                extra.push(v.to_string_lossy().into_owned());
            }
            "--lib" => {
                i += 1;
                lib = Some(PathBuf::from(args.get(i).unwrap_or_else(|| die("--lib needs a path"))));
            }
            s if s.starts_with("--options=") => extra.push(s["--options=".len()..].to_string()),
            s if s.starts_with("--lib=") => lib = Some(PathBuf::from(&s["--lib=".len()..])),
            s if s.starts_with('-') => die(&format!("unknown flag {s}\n{USAGE}")),
            _ => break,
        }
        i += 1;
    }
    let Some(program) = args.get(i) else { die(&format!("no program given\n{USAGE}")) };
    let lib = find_lib(lib);
    let mut options: Vec<String> = std::env::var("MIE_OPTIONS").ok().filter(|s| !s.is_empty()).into_iter().collect();
    options.extend(extra);
    if stats {
        options.push("stats=1".into());
    }
    let mut preload = lib.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|s| !s.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let mut cmd = Command::new(program);
    cmd.args(&args[i + 1..]).env("LD_PRELOAD", preload);
    if !options.is_empty() {
        // This process (on mie itself) has already warned about whatever in its own
        // MIE_OPTIONS was wrong; the program and its children need not say it again.
        if let Ok(own) = std::env::var("MIE_OPTIONS") {
            cmd.env("MIE_OPTIONS_SAID", own);
        }
        cmd.env("MIE_OPTIONS", options.join(":"));
    }
    let err = cmd.exec();
    die(&format!("cannot run {}: {err}", program.to_string_lossy()))
}

fn demo(args: &[OsString]) -> ! {
    use mie_cli::demo;
    let mut json = false;
    let mut only = None;
    let mut lib = None;
    let mut keep = None;
    let mut typed = false;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        let mut value = |what: &str| {
            i += 1;
            args.get(i).map(|v| v.to_string_lossy().into_owned()).unwrap_or_else(|| die(&format!("{a} needs {what}")))
        };
        match a.as_str() {
            "--json" => json = true,
            "--typed" => typed = true,
            "--only" => only = Some(value("an attack name")),
            "--lib" => lib = Some(PathBuf::from(value("a path"))),
            "--keep" => keep = Some(PathBuf::from(value("a directory"))),
            other => die(&format!("unknown flag {other}\n{USAGE}")),
        }
        i += 1;
    }
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

fn bench(args: &[OsString]) -> ! {
    use mie_cli::bench::{self, Allocator};
    let mut scale = 3u32;
    let mut runs = 5usize;
    let mut only: Option<Vec<String>> = None;
    let mut alloc_filter: Option<Vec<String>> = None;
    let mut variants: Vec<String> = Vec::new();
    let mut compare: Vec<Allocator> = Vec::new();
    let mut out_dir = PathBuf::from("mie-bench");
    let mut lib = None;
    let mut keep = None;
    let mut instructions = false;
    let mut i = 0;
    let list = |v: String| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect::<Vec<_>>();
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        let mut value = |what: &str| {
            i += 1;
            args.get(i).map(|v| v.to_string_lossy().into_owned()).unwrap_or_else(|| die(&format!("{a} needs {what}")))
        };
        let number = |v: String| v.parse::<u32>().ok().filter(|n| *n > 0).unwrap_or_else(|| die(&format!("not a positive number: {v}")));
        match a.as_str() {
            "--quick" => {
                scale = 1;
                runs = 3;
            }
            "--scale" => scale = number(value("a number")),
            "--runs" => runs = number(value("a number")) as usize,
            "--only" => only = Some(list(value("workload names"))),
            "--alloc" => alloc_filter = Some(list(value("allocator names"))),
            "--mie-options" => variants.push(value("options (K=V:K=V)")),
            "--compare" => {
                let v = value("NAME=PATH");
                let Some((name, path)) = v.split_once('=').filter(|(n, p)| !n.is_empty() && std::path::Path::new(p).is_file()) else {
                    die(&format!("--compare needs NAME=PATH of an existing library, not {v}"))
                };
                compare.push(Allocator { name: name.to_string(), lib: Some(PathBuf::from(path)), env: vec![] });
            }
            "--out" => out_dir = PathBuf::from(value("a directory")),
            "--lib" => lib = Some(PathBuf::from(value("a path"))),
            "--keep" => keep = Some(PathBuf::from(value("a directory"))),
            "--instructions" => instructions = true,
            other => die(&format!("unknown flag {other}\n{USAGE}")),
        }
        i += 1;
    }
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
    if arch == "aarch64" && mte_available() {
        allocators.push(Allocator { name: "mie".into(), lib: Some(lib.clone()), env: vec![] });
        allocators.push(Allocator { name: "mie-nomte".into(), lib: Some(lib.clone()), env: mie_env("mte=0") });
    } else {
        allocators.push(Allocator { name: "mie".into(), lib: Some(lib.clone()), env: vec![] });
    }
    for v in &variants {
        allocators.push(Allocator { name: format!("mie({v})"), lib: Some(lib.clone()), env: mie_env(v) });
    }
    allocators.extend(compare);
    if let Some(f) = &alloc_filter {
        for name in f {
            if !allocators.iter().any(|a| &a.name == name) && !bench::peers(arch).iter().any(|p| p.0 == name) {
                die(&format!("no allocator named {name}"));
            }
        }
        allocators.retain(|a| a.lib.is_none() || f.contains(&a.name));
    }
    if instructions {
        // Scudo stops itself under valgrind: it cannot be counted this way.
        allocators.retain(|a| a.name != "scudo");
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
fn count_instructions(allocators: &[mie_cli::bench::Allocator], out_dir: &std::path::Path, keep: Option<PathBuf>) -> ! {
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
    let failed = t.iter().flatten().any(|r| r.is_err());
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

/// `mie report [FILE|-] [--binary PATH]...`: source lines for a saved report.
fn report(args: &[OsString]) -> ! {
    let mut file = PathBuf::from("-");
    let mut binaries = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        match a.as_str() {
            "--binary" => {
                i += 1;
                binaries.push(PathBuf::from(args.get(i).unwrap_or_else(|| die("--binary needs a path"))));
            }
            s if s.starts_with("--binary=") => binaries.push(PathBuf::from(&s[9..])),
            s if s.starts_with('-') && s != "-" => die(&format!("unknown flag {s}\n{USAGE}")),
            _ => file = PathBuf::from(&args[i]),
        }
        i += 1;
    }
    let text = mie_cli::report::read(&file).unwrap_or_else(|e| die(&e));
    print!("{}", mie_cli::report::symbolize(&text, &binaries));
    exit(0)
}

/// `mie enable|disable PROGRAM [--lib PATH]`.
fn deploy_cmd(args: &[OsString], f: impl Fn(&std::path::Path, PathBuf) -> Result<String, String>) -> ! {
    let mut lib = None;
    let mut program = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        match a.as_str() {
            "--lib" => {
                i += 1;
                lib = Some(PathBuf::from(args.get(i).unwrap_or_else(|| die("--lib needs a path"))));
            }
            s if s.starts_with("--lib=") => lib = Some(PathBuf::from(&s[6..])),
            s if s.starts_with('-') => die(&format!("unknown flag {s}\n{USAGE}")),
            _ => program = Some(PathBuf::from(&args[i])),
        }
        i += 1;
    }
    let program = program.unwrap_or_else(|| die(&format!("no program given\n{USAGE}")));
    match f(&program, find_lib(lib)) {
        Ok(msg) => {
            println!("{msg}");
            exit(0)
        }
        Err(e) => die(&e),
    }
}

/// `mie service NAME [--options K=V] [--install] [--root DIR]`.
fn service(args: &[OsString]) -> ! {
    let mut name = None;
    let mut options = None;
    let mut install = false;
    let mut root = PathBuf::from("/");
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        match a.as_str() {
            "--install" => install = true,
            "--options" => {
                i += 1;
                options = Some(args.get(i).unwrap_or_else(|| die("--options needs a value")).to_string_lossy().into_owned());
            }
            "--root" => {
                i += 1;
                root = PathBuf::from(args.get(i).unwrap_or_else(|| die("--root needs a directory")));
            }
            s if s.starts_with('-') => die(&format!("unknown flag {s}\n{USAGE}")),
            s => name = Some(s.to_string()),
        }
        i += 1;
    }
    let name = name.unwrap_or_else(|| die(&format!("no service named\n{USAGE}")));
    let text = mie_cli::deploy::service_dropin(&find_lib(None), options.as_deref());
    if !install {
        print!("{text}");
        exit(0);
    }
    let path = mie_cli::deploy::service_path(&root, &name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| die(&format!("{}: {e}", dir.display())));
    }
    std::fs::write(&path, text).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
    println!("wrote {}; run `systemctl daemon-reload && systemctl restart {name}`", path.display());
    exit(0)
}

/// `mie install --prefix DIR` / `mie install --system [--prefix DIR] [--root DIR]` /
/// `mie uninstall --system [--root DIR]`.
fn install(args: &[OsString], remove: bool) -> ! {
    let mut prefix = None;
    let mut system = false;
    let mut root = PathBuf::from("/");
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        match a.as_str() {
            "--system" => system = true,
            "--prefix" => {
                i += 1;
                prefix = Some(PathBuf::from(args.get(i).unwrap_or_else(|| die("--prefix needs a directory"))));
            }
            "--root" => {
                i += 1;
                root = PathBuf::from(args.get(i).unwrap_or_else(|| die("--root needs a directory")));
            }
            s => die(&format!("unknown argument {s}\n{USAGE}")),
        }
        i += 1;
    }
    if remove {
        if !system {
            die("mie uninstall takes --system (an install tree is removed with rm)");
        }
        match mie_cli::deploy::uninstall_system(&root) {
            Ok(m) => println!("{m}"),
            Err(e) => die(&e),
        }
        exit(0);
    }
    let lib = find_lib(None);
    let lib = match &prefix {
        Some(p) => {
            let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("cannot locate myself: {e}")));
            let files = mie_cli::deploy::install(p, &lib, &exe).unwrap_or_else(|e| die(&e));
            for f in &files {
                println!("installed {}", f.display());
            }
            files[0].clone()
        }
        None if system => lib,
        None => die("mie install needs --prefix DIR (and/or --system)"),
    };
    if system {
        match mie_cli::deploy::install_system(&root, &lib) {
            Ok(m) => println!("{m}"),
            Err(e) => die(&e),
        }
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
    let mut cmd = cc::command(&compiler, cxx, args, &lib, token_object.as_deref()).unwrap_or_else(|e| die(&e));
    if args.iter().any(|a| a == cc::DRY_RUN) {
        let words: Vec<String> = std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| a.to_string_lossy().into_owned()).collect();
        println!("{}", words.join(" "));
        exit(0);
    }
    let err = cmd.exec();
    die(&format!("cannot run {}: {err}", compiler.display()))
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.first().map(|a| a.to_string_lossy().into_owned()).as_deref() {
        Some("run") => run(&args[1..]),
        Some("demo") => demo(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("lib") => println!("{}", find_lib(None).display()),
        Some("enable") => deploy_cmd(&args[1..], |p, lib| mie_cli::deploy::enable(p, &lib)),
        Some("disable") => deploy_cmd(&args[1..], |p, _| mie_cli::deploy::disable(p)),
        Some("service") => service(&args[1..]),
        Some("install") => install(&args[1..], false),
        Some("uninstall") => install(&args[1..], true),
        Some("report") => report(&args[1..]),
        Some("cc") => cc(false, &args[1..]),
        Some("c++") => cc(true, &args[1..]),
        Some("help" | "--help" | "-h") => println!("{USAGE}"),
        Some("--version" | "version") => println!("mie {}", env!("CARGO_PKG_VERSION")),
        Some(other) => die(&format!("unknown command '{other}'\n{USAGE}")),
        None => die(USAGE),
    }
}
