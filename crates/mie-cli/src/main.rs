//! `mie`: run programs under the mie allocator.
//!
//! ```text
//! mie run [--stats] [--options K=V:K=V] [--lib PATH] -- PROGRAM [ARGS...]
//! mie lib                      print the path of libmie.so that `run` would preload
//! mie demo [--json] [--only NAME] [--lib PATH]   the protection lab
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
  mie demo [--json] [--only NAME] [--lib PATH] [--keep DIR]
      the protection lab: build classic heap attacks (cc), run each under glibc and under
      mie, print what happened side by side; exit status 1 if any attack succeeds under mie
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
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        let mut value = |what: &str| {
            i += 1;
            args.get(i).map(|v| v.to_string_lossy().into_owned()).unwrap_or_else(|| die(&format!("{a} needs {what}")))
        };
        match a.as_str() {
            "--json" => json = true,
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

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.first().map(|a| a.to_string_lossy().into_owned()).as_deref() {
        Some("run") => run(&args[1..]),
        Some("demo") => demo(&args[1..]),
        Some("lib") => println!("{}", find_lib(None).display()),
        Some("help" | "--help" | "-h") => println!("{USAGE}"),
        Some(other) => die(&format!("unknown command '{other}'\n{USAGE}")),
        None => die(USAGE),
    }
}
