//! C and C++ programs built by this harness and run with libmie.so preloaded: every
//! detection ends in its report and SIGABRT; every legal pattern works.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// libmie.so built by `cargo build` (target/<profile>/libmie.so); `scripts/test.sh` builds it
/// before testing. A library older than the allocator's sources would test stale code.
fn lib() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        // argv[0], not current_exe(): under the arm64 loader /proc/self/exe is the loader.
        let exe = PathBuf::from(std::env::args_os().next().unwrap()).canonicalize().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap();
        let lib = dir.join("libmie.so");
        assert!(lib.is_file(), "libmie.so not built at {}: run `bash scripts/test.sh`", lib.display());
        let built = std::fs::metadata(&lib).unwrap().modified().unwrap();
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for src in ["mie/src", "mie/src/heap", "mie/src/platform", "mie-malloc/src", "mie-malloc/shim"] {
            for e in std::fs::read_dir(crates.join(src)).unwrap() {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                // Code only: a README beside the sources is no part of the library.
                let code = e.path().extension().is_some_and(|x| x == "rs" || x == "c" || x == "cc" || x == "h");
                assert!(
                    !m.is_file() || !code || m.modified().unwrap() <= built,
                    "libmie.so is older than {}: run `bash scripts/test.sh`",
                    e.path().display()
                );
            }
        }
        lib
    })
    .clone()
}

/// Compile a test program once per test run (tests share the binaries).
fn build(src: &str) -> PathBuf {
    match src {
        // The same source without its own operator new.
        "replaced_new_plain.cc" => build_with("replaced_new.cc", "replaced_new_plain", &["-DNO_REPLACEMENT"]),
        _ => build_with(src, &src.replace('.', "_"), &[]),
    }
}

/// A shared library built from a test source (`flags` select its part).
fn build_lib(src: &str, name: &str, flags: &[&str]) -> PathBuf {
    let mut f = vec!["-shared", "-fPIC"];
    f.extend_from_slice(flags);
    build_with(src, name, &f)
}

/// A program linked against a library built by `build_lib` (found through its rpath).
fn build_linked(src: &str, name: &str, flags: &[&str], lib: &Path) -> PathBuf {
    let dir = lib.parent().unwrap().to_str().unwrap().to_string();
    let stem = lib.file_stem().unwrap().to_str().unwrap().trim_start_matches("lib").to_string();
    let mut f: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    f.extend([format!("-L{dir}"), format!("-l{stem}"), format!("-Wl,-rpath,{dir}")]);
    let f: Vec<&str> = f.iter().map(|s| s.as_str()).collect();
    build_with(src, name, &f)
}

/// Compile `src` (from tests/c) with extra `flags` into `name`, once per test run.
fn build_with(src: &str, name: &str, flags: &[&str]) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let srcp = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(src);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let cxx = src.ends_with(".cc");
    let compiler = match (cfg!(target_arch = "aarch64"), cxx) {
        (false, false) => "gcc",
        (false, true) => "g++",
        (true, false) => "aarch64-linux-gnu-gcc",
        (true, true) => "aarch64-linux-gnu-g++",
    };
    // Compile to a private name, then rename: a concurrent run never sees a half-written file.
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let status = Command::new(compiler)
        .args(["-O1", "-g", "-pthread", "-Wall", "-Wno-alloc-size-larger-than", "-fno-builtin", "-o"])
        .arg(&tmp)
        .arg(&srcp)
        .args(flags)
        .status()
        .expect("compiler");
    assert!(status.success(), "compiling {src} as {name}");
    std::fs::rename(&tmp, &out).unwrap();
    built.insert(name.to_string(), out.clone());
    out
}

/// On arm64 (this test binary itself running under qemu-aarch64), test programs run under
/// `qemu-aarch64 -cpu max` (MTE emulated) through the arm64 loader, which preloads libmie.so.
const ARM64_LOADER: &str = "/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1";

fn preloaded(bin: &Path) -> Command {
    if cfg!(target_arch = "aarch64") {
        let mut c = Command::new("qemu-aarch64");
        // The glibc tunable works around qemu 7.2's DC ZVA ignoring tag bits (.cargo/config.toml).
        c.args(["-cpu", "max", "-E", "GLIBC_TUNABLES=glibc.cpu.name=a64fx", ARM64_LOADER])
            .args(["--library-path", "/usr/aarch64-linux-gnu/lib", "--preload"])
            .arg(lib())
            .arg(bin);
        c
    } else {
        let mut c = Command::new(bin);
        c.env("LD_PRELOAD", lib());
        c
    }
}

/// Run a test program, killing it (and failing) if it has not finished after five minutes:
/// a deadlock must fail the suite, not hang CI.
fn run_with(bin: &Path, args: &[&str], options: &str) -> Output {
    use std::process::Stdio;
    if cfg!(target_arch = "aarch64") {
        // Under qemu-user 7.2 a fork from a guest with many threads can hang in qemu itself;
        // the extra pipe-draining threads below made that likely, so use plain output().
        return preloaded(bin).args(args).env("MIE_OPTIONS", options).output().unwrap();
    }
    let mut child = preloaded(bin)
        .args(args)
        .env("MIE_OPTIONS", options)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain the pipes on threads so a chatty program cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).ok();
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).ok();
        v
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("{} {:?} (MIE_OPTIONS={options}) did not finish in 300 s: deadlock?", bin.display(), args);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output { status, stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() }
}

/// Run with guarded sampling off: these tests check which mechanism reports a bug, and a
/// block that happened to be sampled (1 in 5000 by default) would be caught by the guard page
/// instead. The sampling tests and the legal-program tests run with sampling on.
fn run_exact(bin: &Path, args: &[&str], options: &str) -> Output {
    run_with(bin, args, &format!("sample_rate=0:{options}"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn detect_bin() -> PathBuf {
    build("detect.c")
}

fn checked_bin() -> PathBuf {
    build("checked.c")
}

/// Run `bin` in `mode`; expect SIGABRT and a report whose first line names `kind` and the
/// function, plus every string in `also`.
fn expect_report_in(bin: &Path, mode: &str, kind: &str, func: &str, also: &[&str]) -> String {
    expect_report_with(bin, mode, "", kind, func, also)
}

/// As `expect_report_in`, with MIE_OPTIONS.
fn expect_report_with(bin: &Path, mode: &str, options: &str, kind: &str, func: &str, also: &[&str]) -> String {
    let o = run_exact(bin, &[mode], options);
    let t = text(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{mode}: expected SIGABRT, got {:?}\n{t}", o.status);
    assert!(!t.contains("NOT DETECTED"), "{mode}: ran past the error\n{t}");
    let first = t.lines().find(|l| l.starts_with("mie: ")).unwrap_or_else(|| panic!("{mode}: no report\n{t}"));
    assert!(first.starts_with(&format!("mie: {kind} on 0x")), "{mode}: headline {first:?}");
    assert!(first.ends_with(&format!("in {func}()")), "{mode}: headline {first:?}");
    for a in also {
        assert!(t.contains(a), "{mode}: report lacks {a:?}\n{t}");
    }
    assert!(t.contains(&format!("mie: aborting (error: {kind})")), "{mode}\n{t}");
    t
}

/// Run detect.c in `mode`; expect SIGABRT and a report whose first line names `kind` and
/// the function, plus every string in `also`.
fn expect_report(mode: &str, kind: &str, func: &str, also: &[&str]) -> String {
    expect_report_in(&detect_bin(), mode, kind, func, also)
}

/// Run detect.c in `mode` on arm64; expect an MTE tag-check fault report of `kind` (the
/// faulting access is stopped: "NOT DETECTED" never prints) and SIGABRT.
fn expect_fault(mode: &str, kind: &str, also: &[&str]) -> String {
    let o = run_exact(&detect_bin(), &[mode], "");
    let t = text(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{mode}: expected SIGABRT, got {:?}\n{t}", o.status);
    assert!(!t.contains("NOT DETECTED"), "{mode}: ran past the faulting access\n{t}");
    let head = format!("mie: {kind} on 0x");
    let first = t.lines().find(|l| l.starts_with("mie: ")).unwrap_or_else(|| panic!("{mode}: no report\n{t}"));
    assert!(first.starts_with(&head) && first.contains("MTE tag-check fault"), "{mode}: headline {first:?}");
    for a in also {
        assert!(t.contains(a), "{mode}: report lacks {a:?}\n{t}");
    }
    assert!(t.contains("faulting instruction: 0x") && t.contains("(detect_c+0x"), "{mode}: no faulting pc\n{t}");
    t
}

#[test]
fn double_free() {
    // Reported whole through a full non-blocking stderr (a child copies it to stdout once it
    // starts reading; it skips the filler).
    if cfg!(target_arch = "x86_64") {
        expect_report("double_free_full_stderr", "double-free", "free", &["already freed", "mie: aborting (error: double-free)"]);
    }
    let t = expect_report("double_free", "double-free", "free", &["already freed", "state: free", "called from: 0x"]);
    // The call site names the program and the function (from the program's symbol table),
    // and, the program having line tables (-g), its source line in the report (binutils'
    // addr2line, run by the report) and the rest of the stack of the call.
    assert!(t.contains("(detect_c+0x") && t.contains(", main+0x"), "{t}");
    let called = t.lines().position(|l| l.starts_with("  called from: ")).unwrap();
    let next: Vec<&str> = t.lines().skip(called + 1).take(2).collect();
    assert!(next[0].starts_with("    at ") && next[0].contains("detect.c:") && next[0].ends_with("(main)"), "{t}");
    assert!(next[1].starts_with("    #1: 0x") && next[1].contains("libc.so.6"), "the stack of the call goes on: {t}");
    // Without the symbolizer: the addr2line command, which works and points into detect.c.
    let o = run_exact(&detect_bin(), &["double_free"], "symbolize=0");
    let t = text(&o);
    let src = t.lines().find_map(|l| l.strip_prefix("    source line: addr2line -Cfpie ")).unwrap_or_else(|| panic!("{t}"));
    let (path, addr) = src.rsplit_once(' ').unwrap();
    assert!(path.ends_with("/detect_c") && addr.starts_with("0x"), "{src}");
    assert!(!t.contains("    at "), "{t}");
    if cfg!(target_arch = "x86_64") {
        let o = Command::new("addr2line").args(["-Cfpie", path, addr]).output().unwrap();
        let line = String::from_utf8_lossy(&o.stdout);
        assert!(line.contains("main at ") && line.contains("detect.c:"), "{line}");
    }
}

/// With `stacks=1` reports carry the block's allocation and free stacks, in the program.
#[test]
fn stacks_option_adds_allocation_and_free_stacks() {
    let o = run_exact(&detect_bin(), &["double_free"], "stacks=1");
    let t = text(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{t}");
    let alloc = t.find("  allocated at:\n").unwrap_or_else(|| panic!("no allocation stack\n{t}"));
    let free = t.find("  freed at:\n").unwrap_or_else(|| panic!("no free stack\n{t}"));
    assert!(alloc < free, "{t}");
    for part in [&t[alloc..free], &t[free..]] {
        assert!(part.contains("    #0: 0x") && part.contains("(detect_c+0x"), "stack without program frames\n{t}");
    }
    // A live block has an allocation stack and no free stack.
    let o = run_exact(&detect_bin(), &["overflow"], "stacks=1");
    let t = text(&o);
    assert!(t.contains("mie: heap-buffer-overflow") && t.contains("  allocated at:\n"), "{t}");
    assert!(!t.contains("freed at:"), "{t}");
    // Without the option no stacks are recorded.
    let o = run_exact(&detect_bin(), &["double_free"], "");
    assert!(!text(&o).contains("allocated at:"), "{}", text(&o));
}

/// mie's stack walks call the unwinder directly and never make the C library load anything.
/// (glibc's `backtrace()` `dlopen`s libgcc_s at its first call; a first call made from inside
/// a `dlopen`, from an allocation the loader makes while it files the new object, re-entered
/// the loader and broke its table of objects: python crashed at about 1 start in 600.) The
/// loader's own trace names every object a `dlopen` opens.
#[test]
fn stack_walks_make_the_loader_open_nothing() {
    let o = preloaded(&detect_bin()).arg("double_free").env("MIE_OPTIONS", "sample_rate=0:stacks=1").env("LD_DEBUG", "files").output().unwrap();
    let t = text(&o);
    assert!(t.contains("  allocated at:\n") && t.contains("  freed at:\n"), "no stack was walked\n{t}");
    assert!(!t.contains("opening file="), "a stack walk made the loader open an object:\n{t}");
}

/// libmie.so brings its unwinder with it (libgcc_eh, linked in by `build.rs`): it needs no
/// object but the C library's, so a program that does not use libgcc_s never pays for
/// loading it and running its CPUID constructor at every start. The loader's trace names
/// each object it loads and the object that needed it. (Under qemu-user the emulator's own
/// loader writes its trace too, and qemu itself needs libgcc_s: only what libmie.so needs
/// counts.)
#[test]
fn preloading_loads_no_other_object() {
    // (An unknown mode: the program allocates nothing and exits.)
    let o = preloaded(&detect_bin()).arg("none").env("LD_DEBUG", "files").output().unwrap();
    let t = text(&o);
    assert!(t.contains("libmie.so"), "the loader's trace does not name libmie.so:\n{t}");
    // "file=X [0];  needed by Y [0]": the objects Y = libmie.so made the loader load.
    let by_mie: Vec<&str> = t.lines().filter(|l| l.split_once("needed by").is_some_and(|(_, by)| by.contains("libmie.so"))).collect();
    assert!(by_mie.is_empty(), "preloading libmie.so loaded another object:\n{}", by_mie.join("\n"));
}

#[test]
fn double_free_after_quarantine() {
    expect_report("double_free_delayed", "double-free", "free", &["already freed"]);
}

#[test]
fn interior_free() {
    expect_report("interior_free", "invalid-free", "free", &["16 bytes inside the block", "state: live"]);
}

#[test]
fn misaligned_free() {
    expect_report("misaligned_free", "invalid-free", "free", &["1 bytes inside the block"]);
}

#[test]
fn stack_global_and_fake_block_frees() {
    for mode in ["stack_free", "global_free", "foreign_free"] {
        expect_report(mode, "invalid-free", "free", &["not a block allocated by mie"]);
    }
}

#[test]
fn realloc_of_invalid_pointers() {
    // realloc gives the old block back: on a freed block that is a second release.
    expect_report("realloc_freed", "double-free", "realloc", &["already freed"]);
    expect_report("realloc_interior", "invalid-free", "realloc", &["8 bytes inside the block"]);
}

#[test]
fn usable_size_never_answers_for_a_non_block() {
    // Nothing is freed by a query: a freed block is a use after free, anything else an
    // invalid pointer, in that call.
    expect_report("usable_size_freed", "use-after-free", "malloc_usable_size", &["already freed", "malloc_usable_size() asked about it"]);
    expect_report("usable_size_foreign", "invalid-pointer", "malloc_usable_size", &["not a block allocated by mie"]);
}

#[test]
fn overflows_caught_by_canary() {
    expect_report("overflow", "heap-buffer-overflow", "free", &["byte 0 past the end of the 20-byte block", "20 bytes requested"]);
    if cfg!(target_arch = "aarch64") {
        // A 16-byte block fills its granule: the byte after it carries the free tag (slack),
        // so with MTE the NUL's store itself faults.
        expect_fault("off_by_one_nul", "heap-buffer-overflow", &["the access is 0 bytes past the end of the 16-byte block"]);
    } else {
        expect_report("off_by_one_nul", "heap-buffer-overflow", "free", &["byte 0 past the end of the 16-byte block"]);
    }
    expect_report("overflow_on_realloc", "heap-buffer-overflow", "realloc", &["byte 0 past the end of the 100-byte block"]);
    expect_report("large_overflow", "heap-buffer-overflow", "free", &["large allocation"]);
}

#[test]
fn write_after_free_caught() {
    if cfg!(target_arch = "aarch64") {
        // With MTE the freed slot carries the free tag: the dangling write itself faults.
        expect_fault("write_after_free", "use-after-free", &["was freed: access through a dangling pointer", "memory tag 0xf"]);
    } else {
        // Without tags, the zeroed slot is checked when it leaves the quarantine (and again
        // when it is handed out): here the churn of frees pushes it out of the quarantine.
        expect_report("write_after_free", "write-after-free", "free", &["byte 8 of the", "modified while it was free", "left the quarantine"]);
        // A block that never leaves the quarantine before the program ends: checked at exit.
        let t = expect_report("write_after_free_at_exit", "write-after-free", "exit", &["byte 8 of the", "at exit: the block was still waiting"]);
        assert!(t.contains("exiting\n"), "{t}");
    }
}

/// Blocks that are never freed: an overrun inside the slot is found by the sweep at exit;
/// one that runs out of a slab of a big class faults at the unmapped gap after it.
#[test]
fn overflows_of_blocks_never_freed() {
    let t = expect_report("never_freed_overflow", "heap-buffer-overflow", "exit", &["byte 0 past the end of the 56-byte block", "found at exit: the block was never freed"]);
    assert!(t.contains("exiting\n"), "{t}");
    let t = expect_report("never_freed_large_overflow", "heap-buffer-overflow", "exit", &["byte 0 past the end of the 200000-byte block", "large allocation"]);
    assert!(t.contains("exiting\n"), "{t}");
    if cfg!(target_arch = "x86_64") {
        // A store past the canary into a never-used slot (with MTE it faults at the store).
        let t = expect_report("never_freed_skip_overflow", "heap-buffer-overflow", "exit", &["a never-used slot at 0x", "8 bytes past the end of the 8-byte block", "found at exit: the block was never freed"]);
        assert!(t.contains("exiting\n"), "{t}");
    }
    // Another thread still uses the heap at exit (a pool nobody joined): the exiting thread's
    // own slabs are swept all the same.
    let t = expect_report("never_freed_overflow_threads", "heap-buffer-overflow", "exit", &["byte 0 past the end of the 56-byte block", "found at exit: the block was never freed"]);
    assert!(t.contains("exiting\n"), "{t}");
    // ... and the slabs of threads that have ended (in the pools).
    let t = expect_report("ended_thread_never_freed_overflow", "heap-buffer-overflow", "exit", &["byte 0 past the end of the 40-byte block", "found at exit: the block was never freed"]);
    assert!(t.contains("exiting\n"), "{t}");
    {
        // ... and the slabs of threads still running (with MTE, read with the sweeping
        // thread's tag checks suspended: such a thread retags slots meanwhile).
        let t = expect_report("idle_worker_never_freed_overflow", "heap-buffer-overflow", "exit", &["byte 0 past the end of the 40-byte block", "found at exit: the block was never freed"]);
        assert!(t.contains("exiting\n"), "{t}");
        let t = expect_report("idle_worker_never_freed_large_overflow", "heap-buffer-overflow", "exit", &["byte 0 past the end of the 200000-byte block", "large allocation"]);
        assert!(t.contains("exiting\n"), "{t}");
    }
    // A program whose exit handler closes its stderr before mie's exit checks run (as every
    // GNU tool's does): the report still reaches it, here a pipe (a copy kept when `exit`
    // began).
    expect_report("never_freed_overflow_stderr_closed", "heap-buffer-overflow", "exit", &["byte 0 past the end of the 56-byte block", "found at exit: the block was never freed"]);
    // Closed before `exit`: the report goes to what stderr was at start-up, opened again by
    // name, here a file.
    let path = std::env::temp_dir().join(format!("mie-stderr-closed-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let o = preloaded(&detect_bin())
        .arg("never_freed_overflow_stderr_closed_early")
        .env("MIE_OPTIONS", "sample_rate=0")
        .stderr(file)
        .output()
        .unwrap();
    let t = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{t}");
    assert!(t.starts_with(&format!("mie: the program closed its standard error; mie's output goes to {}\n", path.display())), "{t}");
    assert!(t.contains("mie: heap-buffer-overflow on 0x") && t.contains("found at exit: the block was never freed"), "{t}");
    assert!(t.contains("mie: aborting (error: heap-buffer-overflow)"), "{t}");
    // exit_check=0 switches the sweep off: the same program then ends normally.
    let o = run_exact(&detect_bin(), &["never_freed_overflow"], "exit_check=0");
    assert!(o.status.success() && !text(&o).contains("mie: "), "{}", text(&o));
    let o = run_exact(&detect_bin(), &["slab_gap_overflow"], "");
    let t = text(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{t}");
    assert!(!t.contains("NOT DETECTED"), "{t}");
    assert!(t.contains("mie: heap-buffer-overflow on 0x"), "{t}");
    if cfg!(target_arch = "aarch64") {
        // With MTE the first byte past the block's granules faults.
        assert!(t.contains("the access is 0 bytes past the end of the 65539-byte block") || t.contains("past the end of the 65539-byte block"), "{t}");
    } else {
        assert!(t.contains("the access hit the guard after a slab's last slot") && t.contains("bytes past the end of the 65539-byte block"), "{t}");
        assert!(t.contains("faulting instruction: 0x"), "{t}");
    }
}

/// A fatal signal mie cannot name as a heap error still gets what and where (the faulting
/// line), and ends the process with that signal, as without mie.
#[test]
fn fatal_signals_outside_the_heap_say_what_and_where() {
    let cases: &[(&str, i32, &str)] = if cfg!(target_arch = "x86_64") {
        &[("null_deref", libc::SIGSEGV, "mie: SIGSEGV on 0xc: an access through a NULL pointer"), ("divide_by_zero", libc::SIGFPE, "mie: SIGFPE on 0x")]
    } else {
        // (arm64 divides by zero without a fault.)
        &[("null_deref", libc::SIGSEGV, "mie: SIGSEGV on 0xc: an access through a NULL pointer")]
    };
    for &(mode, sig, head) in cases {
        let o = run_exact(&detect_bin(), &[mode], "");
        let t = text(&o);
        assert_eq!(o.status.signal(), Some(sig), "{mode}: {:?}\n{t}", o.status);
        assert!(t.contains(head) && t.contains("faulting instruction: 0x") && t.contains("(detect_c+0x"), "{mode}\n{t}");
    }
}

/// Guard mode: overflows (byte-precise with guard_align=1), underflows (guard_below=1), uses
/// after free and after a realloc moved the block stop at the access; a double free at the
/// call; a program with thousands of blocks runs clean.
#[test]
fn guard_mode_stops_each_bug_at_the_access() {
    let b = build("guard.c");
    for opts in ["guard=1", "guard=1:guard_align=1", "guard=1:guard_below=1", "guard=1:guard_below=1:guard_align=1"] {
        let o = run_exact(&b, &["clean"], opts);
        let t = text(&o);
        assert!(o.status.success() && t.contains("guard clean: ok") && !t.contains("mie:"), "{opts}: {:?}\n{t}", o.status);
    }
    for (mode, opts, kind, also) in [
        ("overflow", "guard=1", "heap-buffer-overflow", "0 bytes past the end of the 32-byte block"),
        ("overflow_odd", "guard=1:guard_align=1", "heap-buffer-overflow", "0 bytes past the end of the 13-byte block"),
        ("underflow", "guard=1:guard_below=1", "heap-buffer-underflow", "1 bytes before the 40-byte block"),
        ("uaf_read", "guard=1", "use-after-free", "byte 16 of the freed 48-byte block"),
        ("stale_after_realloc", "guard=1", "use-after-free", "byte 0 of the freed 40-byte block"),
    ] {
        let o = run_exact(&b, &[mode], opts);
        let t = text(&o);
        assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{mode}: {:?}\n{t}", o.status);
        assert!(!t.contains("NOT DETECTED"), "{mode}\n{t}");
        assert!(t.contains(&format!("mie: {kind} on 0x")) && t.contains(also) && t.contains("stopped at the access (guard mode)"), "{mode}\n{t}");
        assert!(t.contains("allocated at:") && t.contains("faulting instruction: 0x"), "{mode}: stacks\n{t}");
    }
    expect_report_with(&b, "double_free", "guard=1", "double-free", "free", &["guarded block was already freed", "freed at:"]);
    // A real program: the interpreter starts, works and exits under guard mode, silently.
    if cfg!(target_arch = "x86_64") && Path::new("/usr/bin/python3").exists() {
        let o = Command::new("/usr/bin/python3")
            .args(["-c", "import json, re; d = [{'k': i, 's': str(i) * 9} for i in range(3000)]; print(len(json.loads(json.dumps(d))), len(re.findall('1', str(d))))"])
            .env("LD_PRELOAD", lib())
            .env("MIE_OPTIONS", "guard=1")
            .output()
            .unwrap();
        let t = text(&o);
        assert!(o.status.success() && t.starts_with("3000 ") && !t.contains("mie:"), "{:?}\n{t}", o.status);
    }
}

/// Findings that were reported under another name before (issue 20): each under its own.
#[test]
fn findings_named_right() {
    expect_report("memcpy_before_block", "heap-buffer-underflow", "memcpy", &["starting 32 bytes before the 8-byte block"]);
    expect_report("large_double_free_later", "double-free", "free", &["a large block at this address was freed before"]);
    expect_report("large_interior_free", "invalid-free", "free", &["pointer is 4096 bytes inside the block at 0x", "262144 bytes requested"]);
    if cfg!(target_arch = "x86_64") {
        // (With MTE the first slot's neighbour granule faults at the write instead.)
        // Two ways: the slab before exists (its last slot's canary or tail, checked at the
        // free) or not (nothing mapped: the write faults). Either is an underflow.
        let o = run_exact(&detect_bin(), &["first_slot_underflow"], "");
        let t = text(&o);
        assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{:?}\n{t}", o.status);
        assert!(t.contains("mie: heap-buffer-underflow on 0x") && t.contains("the first of its slab") && t.contains("slot 0"), "{t}");
        // The slab before in its pool (given back empty): found at the free as well, not
        // left to the exit sweep.
        expect_report("pooled_slab_underflow", "heap-buffer-underflow", "free", &["the first of its slab", "slot 0"]);
    }
    let o = run_exact(&detect_bin(), &["large_far_write"], "");
    let t = text(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{:?}\n{t}", o.status);
    assert!(t.contains("mie: heap-buffer-overflow on 0x") && t.contains("(the access hit unmapped space in mie's large-block area)"), "{t}");
    assert!(t.contains("1048576 bytes past the end of the 262144-byte large block"), "{t}");
}

#[test]
fn large_blocks() {
    expect_report("large_double_free", "double-free", "free", &["large block of 1048576 bytes was already freed"]);
    // The inaccessible pages fault at the access, and the handler names the block.
    for (mode, kind, also) in [
        ("large_use_after_free", "use-after-free", "bytes into the freed 1048576-byte large block"),
        ("large_use_after_reuse", "use-after-free", "bytes into the freed 1048576-byte large block"),
        ("large_guard_overflow", "heap-buffer-overflow", "bytes past the end of the"),
    ] {
        let o = run_exact(&detect_bin(), &[mode], "");
        let t = text(&o);
        assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{mode}: {:?}\n{t}", o.status);
        assert!(!t.contains("NOT DETECTED"), "{t}");
        assert!(t.contains(&format!("mie: {kind} on 0x")) && t.contains(also), "{mode}\n{t}");
        assert!(t.contains("large block: the access hit an inaccessible page") && t.contains("faulting instruction: 0x"), "{t}");
    }
}

#[test]
fn wild_access_into_unmapped_heap_space_is_reported() {
    let o = run_exact(&detect_bin(), &["wild_heap_write"], "");
    let t = text(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{t}");
    assert!(t.contains("mie: invalid-access on 0x") && t.contains("unmapped space inside mie's heap"), "{t}");
    assert!(!t.contains("NOT DETECTED"), "{t}");
}

/// Two threads free one block at the same instant, many times over: each run ends in a
/// double-free report (from either call, or from the owner collecting the second free);
/// no run goes on with the slot handed out twice.
#[test]
fn racing_double_frees_are_always_reported() {
    let bin = build("race.c");
    let runs = if cfg!(target_arch = "aarch64") { 6 } else { 40 };
    for mode in ["local_remote", "remote_remote"] {
        for _ in 0..runs {
            let o = run_exact(&bin, &[mode], "");
            let t = text(&o);
            assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{mode}: {:?}\n{t}", o.status);
            assert!(t.contains("mie: double-free on 0x"), "{mode}\n{t}");
            assert!(!t.contains("NOT DETECTED") && !t.contains("HANDED OUT TWICE"), "{mode}\n{t}");
        }
    }
}

/// A SIGSEGV sent with kill/raise is not a fault: the process ends by signal 11 as without
/// mie (core dump action), and when the program has its own handler it runs and mie stays
/// in front of it.
#[test]
fn sent_segv_ends_the_process_as_without_mie() {
    for mode in ["raise_segv", "kill_segv"] {
        let o = run_exact(&detect_bin(), &[mode], "");
        assert_eq!(o.status.signal(), Some(libc::SIGSEGV), "{mode}: {:?}\n{}", o.status, text(&o));
        assert!(!text(&o).contains("alive"), "{}", text(&o));
    }
    let o = run_exact(&detect_bin(), &["sent_segv_then_uaf"], "");
    let t = text(&o);
    assert!(t.contains("program handler ran 2 times"), "{t}");
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{t}");
    assert!(t.contains("mie: use-after-free on 0x"), "{t}");
    if !cfg!(target_arch = "aarch64") {
        // A shell killing itself: rc 139 (128 + SIGSEGV), as without mie.
        let o = Command::new("bash").args(["-c", "kill -SEGV $$; echo alive"]).env("LD_PRELOAD", lib()).output().unwrap();
        assert_eq!(o.status.signal(), Some(libc::SIGSEGV), "{:?} {}", o.status, text(&o));
        let o = Command::new("bash").args(["-c", "bash -c 'kill -SEGV $$'; echo rc=$?"]).env("LD_PRELOAD", lib()).output().unwrap();
        assert!(text(&o).contains("rc=139"), "{}", text(&o));
    }
}

/// Faults inside a live block's own memory: execution is a heap error (reported, SIGABRT);
/// a write to a page the program made read-only is not (SIGSEGV, with a note).
#[test]
fn faults_inside_live_blocks_are_named_for_what_they_are() {
    for (mode, what) in [("exec_small", "of the live 64-byte block"), ("exec_large", "of the live 300000-byte block")] {
        let o = run_exact(&detect_bin(), &[mode], "");
        let t = text(&o);
        assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{mode}: {:?}\n{t}", o.status);
        assert!(t.contains("mie: heap-execute on 0x") && t.contains("the program jumped into heap memory"), "{mode}\n{t}");
        assert!(t.contains("execution reached byte 0") && t.contains(what), "{mode}\n{t}");
        assert!(t.contains("jumped from a call returning to: 0x") && t.contains("(detect_c+0x"), "{mode}\n{t}");
        assert!(!t.contains("bytes past the end") && !t.contains("unmapped space"), "{mode}\n{t}");
    }
    let o = run_exact(&detect_bin(), &["readonly_page"], "");
    let t = text(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGSEGV), "{:?}\n{t}", o.status);
    assert!(t.contains("mie: access-fault on 0x") && t.contains("changed the page's protection"), "{t}");
    assert!(t.contains("not a heap error"), "{t}");
}

#[test]
fn detections_hold_with_mitigations_switched_off() {
    // Double/invalid free detection does not depend on any option.
    let o = run_exact(&detect_bin(), &["double_free"], "canary=0:zero_on_free=0:quarantine=0");
    assert_eq!(o.status.signal(), Some(libc::SIGABRT));
    assert!(text(&o).contains("mie: double-free on 0x"));
    // With canaries off an overflow is not checked: the option really switches it.
    let o = run_exact(&detect_bin(), &["overflow"], "canary=0");
    assert!(text(&o).contains("NOT DETECTED: overflow"), "{}", text(&o));
    // With the write-after-free check off, the dangling write goes unnoticed without tags
    // (with MTE it still faults at the write: tagging does not depend on that option).
    let o = run_exact(&detect_bin(), &["write_after_free"], "write_after_free_check=0");
    if cfg!(target_arch = "aarch64") {
        assert!(text(&o).contains("mie: use-after-free on 0x"), "{}", text(&o));
    } else {
        assert!(text(&o).contains("NOT DETECTED"), "{}", text(&o));
    }
}

/// A new block never shows a freed block's bytes, small or large (large blocks reuse the
/// pages of freed ones).
#[test]
fn no_block_shows_a_previous_blocks_bytes() {
    let bin = build("stale.c");
    for opts in ["", "sample_rate=0", "zero_on_free=0:write_after_free_check=0"] {
        let o = run_with(&bin, &[], opts);
        assert!(o.status.success() && text(&o).contains("stale: ok"), "options {opts:?}\n{}", text(&o));
    }
}

/// One canary read through an over-read (with its block's address) does not give the next
/// block's canary: secrets.c inverts the mixer canaries once used and guesses the key.
#[test]
fn one_leaked_canary_does_not_give_the_next() {
    let bin = build("secrets.c");
    let o = run_exact(&bin, &[], "");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(", 0 next canaries predicted"), "{}", text(&o));
}

/// A program that allocates through its own wrapper: after the wrapper's hot site is
/// found, blocks go to buckets by the wrapper's caller (eight callers, seven buckets: all
/// in one bucket by chance has probability 7^-7).
#[test]
fn blocks_from_an_allocation_wrapper_are_bucketed_by_its_callers() {
    let bin = build("wrapper.c");
    // One wrapper, then a wrapper called by a wrapper: by the outermost wrapper's caller.
    for args in [&[][..], &["chain"][..]] {
        let o = run_exact(&bin, args, "buckets=7");
        let t = text(&o);
        assert!(o.status.success(), "{args:?}: {t}");
        let value = |key: &str| t.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse::<usize>().ok());
        assert!(value("distinct buckets: ").unwrap_or(0) >= 2, "{args:?}: every caller of the wrapper in one bucket\n{t}");
        // Every call from one caller, remembered or looked up again, in one bucket.
        assert_eq!(value("inconsistent: "), Some(0), "{args:?}: {t}");
    }
}

/// A library bound to the C library's allocator (dlopen RTLD_DEEPBIND, as php-cli loads its
/// extensions) meets mie blocks: the report names the cause and the library, both ways.
#[test]
fn deepbind_library_mixing_allocators_is_explained() {
    let lib = build_lib("deepbind.c", "libdeepbind.so", &["-DDEEPBIND_LIB"]);
    let bin = build_with("deepbind.c", "deepbind_main", &["-ldl"]);
    let lib = lib.to_str().unwrap();
    let o = run_exact(&bin, &["give_to_lib", lib], "");
    let t = text(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{:?}\n{t}", o.status);
    // The C library's free stops the program ("free(): invalid pointer"), or faults reading
    // the header it expects before the block (with MTE: tagged as the neighbour's; without:
    // unmapped, when the block is the first of its slab). Either way the report says why.
    assert!(
        t.contains("mie: foreign-free in free() of the C library") || t.contains("the fault is in the C library's own free()"),
        "{t}"
    );
    assert!(t.contains("called from: 0x") && t.contains("(libdeepbind.so+0x") && t.contains(", lib_free+0x"), "{t}");
    assert!(t.contains("libdeepbind.so calls the C library's allocator") && t.contains("RTLD_DEEPBIND"), "{t}");
    // Through a function pointer the library handed over (php's phar extension gives php
    // its free as a hash table's destructor): the library is named, not the program.
    let o = run_exact(&bin, &["pointer_from_lib", lib], "");
    let t = text(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{:?}\n{t}", o.status);
    assert!(t.contains("mie: foreign-free in free() of the C library") && t.contains("(deepbind_main+0x"), "{t}");
    assert!(t.contains("deepbind_main called free() through a function pointer") && t.contains("RTLD_DEEPBIND) does: libdeepbind.so"), "{t}");
    let o = run_exact(&bin, &["take_from_lib", lib], "");
    let t = text(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{:?}\n{t}", o.status);
    assert!(t.contains("mie: invalid-free on 0x") && t.contains("the C library's own heap") && t.contains("RTLD_DEEPBIND"), "{t}");
}

#[test]
fn legal_patterns() {
    let bin = build("legal.c");
    for opts in ["", "canary=0:zero_on_free=0:quarantine=0:large_quarantine=0", "buckets=7:quarantine=1024", "stacks=1:sample_rate=3"] {
        let o = run_with(&bin, &[], opts);
        assert!(o.status.success() && text(&o).contains("legal: ok"), "options {opts:?}\n{}", text(&o));
    }
}

#[test]
fn type_isolation() {
    let bin = build("isolation.c");
    // With 7 pointer buckets most runs test the call-site half too; every run tests types.
    let mut sites_tested = 0;
    for _ in 0..4 {
        let o = run_with(&bin, &[], "buckets=7");
        let t = text(&o);
        assert!(o.status.success() && t.contains("isolation: ok"), "{t}");
        if t.contains("call sites distinct buckets: 1") {
            sites_tested += 1;
        }
    }
    assert!(sites_tested > 0, "call sites never landed in distinct buckets in 4 runs");
}

#[test]
fn threads_fork_and_thread_exit() {
    let bin = build("threads.c");
    // qemu-user 7.2 crashes on fork from a multithreaded guest even with glibc's malloc,
    // so under qemu (arm64) the fork phase is skipped; it runs natively on x86-64.
    let args: &[&str] = if cfg!(target_arch = "aarch64") { &["nofork"] } else { &[] };
    let o = run_with(&bin, args, "");
    assert!(o.status.success() && text(&o).contains("threads: ok"), "{}", text(&o));
}

/// A thread's key destructors that free and allocate after mie's own destructor gave the
/// thread's cache back: they are served by the shared fallback cache (set up at its first
/// use, from all zero).
#[test]
fn allocations_in_key_destructors_after_the_cache_is_given_back() {
    let bin = build("key_destructors.c");
    let o = run_with(&bin, &[], "");
    assert!(o.status.success() && text(&o).contains("key destructors: ok"), "{:?}\n{}", o.status, text(&o));
}

#[test]
fn cxx_new_delete() {
    let bin = build("cxx.cc");
    let o = run_with(&bin, &[], "");
    assert!(o.status.success() && text(&o).contains("cxx: ok"), "{:?}\n{}", o.status, text(&o));
}

#[test]
fn options_warn_once_and_stats_print() {
    let bin = build("legal.c");
    let o = run_with(&bin, &[], "nosuch=1:stat=1:stats=1");
    let t = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success());
    assert_eq!(t.matches("unknown option: 'nosuch'").count(), 1, "{t}");
    assert!(t.contains("unknown option: 'stat' (MIE_OPTIONS); did you mean 'stats'? Options: buckets canary "), "{t}");
    // Statistics: every line carries the process id; stats=1 lists only classes with live
    // blocks, stats=2 all.
    let pid_lines: Vec<&str> = t.lines().filter(|l| l.contains("]: stats: ")).collect();
    assert!(pid_lines.iter().all(|l| l.starts_with("mie[") && l[4..].split(']').next().unwrap().parse::<u32>().is_ok()), "{t}");
    assert!(t.contains("]: stats: live ") && t.contains("class   bucket"), "{t}");
    let rows = |t: &str| t.lines().filter(|l| l.contains("]: stats: ") && l.split_whitespace().nth(2).is_some_and(|w| w.parse::<u32>().is_ok())).count();
    let o2 = run_with(&bin, &[], "stats=2");
    let t2 = String::from_utf8_lossy(&o2.stderr);
    assert!(rows(&t2) > rows(&t), "stats=2 shows no more rows than stats=1\n{t}\n{t2}");
    assert!(t.contains("more class/bucket rows with no live blocks"), "{t}");
}

/// A typo in MIE_OPTIONS is reported by the first process under mie, not again by every
/// program it starts with the same options (a pipeline warns once).
#[test]
#[cfg_attr(target_arch = "aarch64", ignore = "under qemu libmie is preloaded by the loader, not LD_PRELOAD")]
fn an_option_typo_is_reported_once_per_process_tree() {
    let bin = build("legal.c");
    let script = format!("{0} | cat >/dev/null; {0} >/dev/null; {0} | {0} >/dev/null", bin.display());
    let o = Command::new("sh").args(["-c", &script]).env("LD_PRELOAD", lib()).env("MIE_OPTIONS", "sample_rat=10").output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert_eq!(t.matches("unknown option: 'sample_rat'").count(), 1, "{t}");
    // Run alone (its parent is not under mie), the program says it itself.
    let o = run_with(&bin, &[], "sample_rat=10");
    assert_eq!(text(&o).matches("unknown option: 'sample_rat'").count(), 1);
}

#[test]
#[cfg_attr(target_arch = "aarch64", ignore = "host programs are x86-64")]
fn real_programs_run() {
    for (prog, args) in [("ls", vec!["-la", "/"]), ("sort", vec!["/etc/passwd"]), ("gcc", vec!["--version"])] {
        let o = Command::new(prog).args(&args).env("LD_PRELOAD", lib()).output().unwrap();
        assert!(o.status.success(), "{prog}: {:?}\n{}", o.status, text(&o));
    }
}

// ---------------------------------------------------------------------------------------
// Memory tagging (arm64 under qemu-aarch64 -cpu max): each attack faults at the access.

#[cfg(target_arch = "aarch64")]
mod mte {
    use super::*;

    fn mte_bin() -> PathBuf {
        build("mte.c")
    }

    /// Run mte.c in `mode`: SIGABRT from mie's fault handler (or its free-path check), no
    /// "NOT DETECTED", a first line naming `kind`, plus the strings in `also`.
    fn expect(mode: &str, kind: &str, also: &[&str]) -> String {
        let o = run_exact(&mte_bin(), &[mode], "");
        let t = text(&o);
        assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{mode}: {:?}\n{t}", o.status);
        assert!(!t.contains("NOT DETECTED"), "{mode}: the access completed\n{t}");
        let first = t.lines().find(|l| l.starts_with("mie: ")).unwrap_or_else(|| panic!("{mode}: no report\n{t}"));
        assert!(first.starts_with(&format!("mie: {kind} on 0x")), "{mode}: headline {first:?}");
        for a in also {
            assert!(t.contains(a), "{mode}: report lacks {a:?}\n{t}");
        }
        t
    }

    /// An access two slots past a block, into a slot never handed out (the allocator's tag):
    /// named for the block it ran out of, not as the allocator's granule.
    #[test]
    fn far_overflow_into_an_unused_slot_names_the_block() {
        for _ in 0..3 {
            let o = run_exact(&mte_bin(), &["far_into_unused"], "sample_rate=0");
            let t = text(&o);
            assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{:?}\n{t}", o.status);
            let (kind, what) = if t.contains("direction overflow") {
                ("heap-buffer-overflow", "bytes past its slot")
            } else {
                ("heap-buffer-underflow", "bytes before it")
            };
            assert!(t.contains(&format!("mie: {kind} on 0x")) && t.contains("the pointer belongs to the block at 0x") && t.contains(what), "{t}");
        }
    }

    #[test]
    fn overflow_into_neighbour_faults_at_the_write() {
        let t = expect(
            "neighbour_overflow",
            "heap-buffer-overflow",
            &["MTE tag-check fault", "the access is 0 bytes past its slot, in the next block", "faulting instruction: 0x", "(mte_c+0x"],
        );
        assert!(t.contains("neighbours 0x"), "{t}");
    }

    /// Only the block's own granules carry its tag: the first access that faults is at the
    /// requested size rounded up to 16 (in the slot's slack, or the next slot when the block
    /// fills its slot), for reads and writes.
    #[test]
    fn first_fault_is_at_the_end_of_the_blocks_granules() {
        for (size, how) in [(20usize, "write"), (32, "write"), (32, "read"), (64, "write"), (100, "write"), (1000, "write"), (1000, "read"), (4000, "write")] {
            let mode = format!("granule_edge {size} {how}");
            let o = run_exact(&mte_bin(), &["granule_edge", &size.to_string(), how], "");
            let t = text(&o);
            let edge = size.div_ceil(16) * 16;
            assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{mode}: {:?}\n{t}", o.status);
            assert!(t.contains(&format!("accessed {edge} bytes\n")), "{mode}: faulted before the edge\n{t}");
            let block = t.lines().find_map(|l| l.strip_prefix("block 0x")).and_then(|h| usize::from_str_radix(h.trim(), 16).ok()).unwrap();
            assert!(t.contains(&format!("mie: heap-buffer-overflow on {:#x} (MTE tag-check fault", block + edge)), "{mode}\n{t}");
            let slot = t.lines().find_map(|l| l.split_once("-byte slot (size class").map(|(a, _)| a.rsplit(' ').next().unwrap().parse::<usize>().unwrap())).unwrap();
            if edge < slot {
                assert!(t.contains(&format!("the access is {} bytes past the end of the {size}-byte block", edge - size)), "{mode}\n{t}");
            } else {
                assert!(t.contains("the access is 0 bytes past its slot, in "), "{mode}\n{t}");
            }
        }
    }

    #[test]
    fn read_after_free_faults() {
        expect("read_after_free", "use-after-free", &["memory tag 0xf", "was freed: access through a dangling pointer"]);
    }

    #[test]
    fn tag_fault_reports_carry_stacks_with_the_option() {
        let o = run_exact(&mte_bin(), &["read_after_free"], "stacks=1");
        let t = text(&o);
        assert!(t.contains("mie: use-after-free on 0x"), "{t}");
        assert!(t.contains("  allocated at:\n") && t.contains("  freed at:\n") && t.contains("(mte_c+0x"), "{t}");
        let o = run_exact(&mte_bin(), &["neighbour_overflow"], "stacks=1");
        let t = text(&o);
        assert!(t.contains("mie: heap-buffer-overflow on 0x"), "{t}");
        assert!(t.contains("the pointer's block was allocated at:"), "{t}");
    }

    #[test]
    fn stale_pointer_after_reuse_faults() {
        let t = expect("stale_after_reuse", "use-after-free", &["was reused by a new block"]);
        assert!(t.contains("slot reused: old tag"), "{t}");
    }

    /// With MTE a freed slot is not checked for zeros: the only write that reaches it is one
    /// through a pointer forged with the free tag, and the tag store that hands the slot
    /// out again zeroes it, so nothing of that write reaches the next block.
    #[test]
    fn a_write_with_a_forged_free_tag_never_reaches_the_next_block() {
        let o = run_exact(&mte_bin(), &["forged_free_tag"], "");
        let t = text(&o);
        assert!(o.status.success() && t.contains("forged_free_tag: slot reused, 0 non-zero bytes"), "{:?}\n{t}", o.status);
    }

    #[test]
    fn wrong_tag_free_aborts_without_answering() {
        expect("wrong_tag_free", "invalid-free", &["tag mismatch: the pointer carries tag"]);
    }

    #[test]
    fn tagged_pointer_into_metadata_faults() {
        expect("metadata_walk", "invalid-access", &["reached mie's metadata"]);
    }
}

// ---------------------------------------------------------------------------------------
// Guarded sampling (every architecture), with every eligible allocation sampled.

fn sample_run(mode: &str) -> (Output, String) {
    let o = run_with(&build("sample.c"), &[mode], "sample_rate=1");
    let t = text(&o);
    (o, t)
}

fn expect_sample_report(mode: &str, headline: &str, also: &[&str]) {
    let (o, t) = sample_run(mode);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{mode}: {:?}\n{t}", o.status);
    assert!(!t.contains("NOT DETECTED"), "{mode}\n{t}");
    let first = t.lines().find(|l| l.starts_with("mie: ")).unwrap_or_else(|| panic!("{mode}: no report\n{t}"));
    assert!(first.starts_with(headline), "{mode}: headline {first:?}");
    for a in also {
        assert!(t.contains(a), "{mode}: report lacks {a:?}\n{t}");
    }
}

#[test]
fn sampled_overflow_by_one_byte_faults_with_allocation_stack() {
    expect_sample_report(
        "overflow_by_one",
        "mie: heap-buffer-overflow on 0x",
        &["guarded sample", "0 bytes past the end of the 32-byte block", "(live)", "allocated at:", "(sample_c+0x", "faulting instruction"],
    );
}

#[test]
fn sampled_use_after_free_faults_with_both_stacks() {
    expect_sample_report(
        "use_after_free",
        "mie: use-after-free on 0x",
        &["0 bytes into the freed 32-byte block", "allocated at:", "freed at:", "(sample_c+0x"],
    );
}

#[test]
fn sampled_padding_overflow_and_double_free() {
    expect_sample_report("overflow_in_padding", "mie: heap-buffer-overflow on 0x", &["byte 0 past its end", "allocated at:"]);
    expect_sample_report("double_free", "mie: double-free on 0x", &["already freed", "freed at:"]);
}

#[test]
fn sampled_blocks_behave_like_any_block() {
    let (o, t) = sample_run("legal");
    assert!(o.status.success() && t.contains("sample legal: ok"), "{t}");
    // Sampling on while threads allocate, exchange and free.
    let args: &[&str] = if cfg!(target_arch = "aarch64") { &["nofork"] } else { &[] };
    let o = run_with(&build("threads.c"), args, "sample_rate=20");
    assert!(o.status.success() && text(&o).contains("threads: ok"), "{}", text(&o));
}

// ---------------------------------------------------------------------------------------
// Bounds-checked memory and string functions

const CHECKED: &[&str] = &[
    "memcpy", "memmove", "mempcpy", "memset", "strcpy", "stpcpy", "strncpy", "strcat", "strncat", "memccpy", "wmemcpy",
    "wmemmove", "wmemset", "__memcpy_chk", "__memmove_chk", "__mempcpy_chk", "__memset_chk", "__strcpy_chk",
    "__stpcpy_chk", "__strncpy_chk", "__strcat_chk", "__strncat_chk", "__wmemcpy_chk", "__wmemmove_chk",
    "__wmemset_chk", "read", "pread", "recv", "fread", "fgets", "__read_chk", "__pread_chk", "__recv_chk", "__fread_chk",
    "__fgets_chk",
];

#[test]
fn every_checked_function_stops_an_overflow_before_writing() {
    // The destination page is read-only during the call: a single byte written before the
    // check would end the process with SIGSEGV, not with this report.
    for f in CHECKED {
        let wide = f.contains("wmem");
        let over = if wide { "4 bytes past its end" } else { "1 byte past its end" };
        expect_report_in(
            &checked_bin(),
            f,
            "heap-buffer-overflow",
            f,
            &[&format!("{f} would write"), "of the 40-byte block at 0x", over, "no byte was written", "called from: 0x"],
        );
    }
}

#[test]
fn checked_calls_option_switches_the_call_checks() {
    // With checked_calls=0 the copy goes ahead and hits the read-only page (a fault, not
    // memcpy's report): the option really switches the checks.
    let o = run_exact(&checked_bin(), &["memcpy"], "checked_calls=0");
    let t = text(&o);
    assert!(!t.contains("in memcpy()") && !t.contains("NOT DETECTED"), "{t}");
}

#[test]
fn checked_reads_and_dangling_destinations() {
    let b = checked_bin();
    // The source page is inaccessible: the check comes before any read.
    expect_report_in(&b, "read_memcpy", "heap-buffer-overflow", "memcpy", &["memcpy would read 41 bytes at offset 0 of the 40-byte block", "1 byte past its end", "stopped before reading past the end"]);
    expect_report_in(&b, "read_strcpy", "heap-buffer-overflow", "strcpy", &["strcpy would read 41 bytes at offset 0 of the 40-byte block"]);
    expect_report_in(&b, "freed_memcpy", "use-after-free", "memcpy", &["memcpy would write 8 bytes at offset 0 of a freed"]);
    // A thread remembers the block of its last checked copy (bounds::Hint): a free or an
    // in-place shrink in between must end that, and a read past the end is still caught.
    expect_report_in(&b, "hinted_freed", "use-after-free", "memcpy", &["memcpy would write 8 bytes at offset 0 of a freed"]);
    expect_report_in(&b, "hinted_shrunk", "heap-buffer-overflow", "memcpy", &["memcpy would write 21 bytes at offset 0 of the 20-byte block"]);
    expect_report_in(&b, "hinted_shrunk_wide", "heap-buffer-overflow", "memcpy", &["memcpy would write 901 bytes at offset 0 of the 900-byte block"]);
    expect_report_in(&b, "hinted_read", "heap-buffer-overflow", "memcpy", &["memcpy would read 41 bytes at offset 0 of the 40-byte block"]);
    // A signal handler's checked copies change the hints under the interrupted ones: no
    // report for the legal copies on either side, and the overflow after them is caught.
    expect_report_in(&b, "hinted_signal", "heap-buffer-overflow", "memcpy", &["signal copies: 20000 or more", "memcpy would write 41 bytes at offset 0 of the 40-byte block"]);
    // A string's scan is bounded by the remembered block too, and a freed one ends it.
    expect_report_in(&b, "hinted_strcpy", "heap-buffer-overflow", "strcpy", &["strcpy would read 41 bytes at offset 0 of the 40-byte block"]);
    expect_report_in(&b, "hinted_strcpy_freed", "use-after-free", "strcpy", &["strcpy would read", "of a freed"]);
    expect_report_in(&b, "large_memcpy", "heap-buffer-overflow", "memcpy", &["memcpy would write 11 bytes at offset 299990 of the 300000-byte block", "1 byte past its end", "large allocation"]);
    // Large blocks are remembered too (by the large blocks' generation).
    expect_report_in(&b, "large_hinted_shrunk", "heap-buffer-overflow", "memcpy", &["memcpy would write 11 bytes at offset 199990 of the 200000-byte block", "1 byte past its end", "large allocation"]);
    // A large block found again after another one's free made the hints stale (no full
    // check of each range), and its shrink still ends it.
    expect_report_in(&b, "large_found_again", "heap-buffer-overflow", "memmove", &["memmove would write 11 bytes at offset 199990 of the 200000-byte block", "1 byte past its end", "large allocation"]);
    // And the last large block, remembered apart from the hints (a small block's copy took
    // the write hint in between), ends with the shrink as well.
    expect_report_in(&b, "large_remembered_shrunk", "heap-buffer-overflow", "memcpy", &["memcpy would write 11 bytes at offset 199990 of the 200000-byte block", "1 byte past its end", "large allocation"]);
}

#[test]
fn checked_functions_do_their_job_at_every_length_up_to_the_end() {
    let o = run_with(&checked_bin(), &["legal"], "");
    let t = text(&o);
    assert!(o.status.success() && t.contains("legal: ok"), "{:?}\n{t}", o.status);
}

/// A fortify failure outside the heap stays glibc's (its message, SIGABRT), and mie names
/// it and the call that overflowed.
#[test]
fn fortify_failures_outside_the_heap_stay_glibcs() {
    let o = run_exact(&checked_bin(), &["fortified"], "");
    let t = text(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{t}");
    assert!(t.contains("buffer overflow detected"), "{t}");
    assert!(t.contains("mie: buffer-overflow (stopped by the C library's check)") && t.contains("(checked_c+0x"), "{t}");
}

#[test]
fn object_size_answers() {
    let o = run_exact(&checked_bin(), &["object_size"], "");
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "40 30 0 1", "{t}");
    assert_eq!(lines[1], "199900", "{t}");
    assert_eq!(lines[2], "0", "{t}");
}

// ---------------------------------------------------------------------------------------
// malloc(0)

#[test]
fn zero_size_blocks_are_inaccessible_and_validated() {
    for (mode, at) in [("zero_read", "0 bytes into the zero-size block"), ("zero_write", "3 bytes into the zero-size block")] {
        let o = run_exact(&detect_bin(), &[mode], "");
        let t = text(&o);
        assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{mode}: {:?}\n{t}", o.status);
        assert!(!t.contains("NOT DETECTED"), "{t}");
        assert!(t.contains("mie: zero-size-access on 0x") && t.contains("the access hit a zero-size block"), "{mode}\n{t}");
        assert!(t.contains(at) && t.contains("(live)") && t.contains("faulting instruction: 0x"), "{mode}\n{t}");
    }
    expect_report("zero_double_free", "double-free", "free", &["zero-size block (malloc(0)) was already freed"]);
    expect_report("zero_memcpy", "heap-buffer-overflow", "memcpy", &["memcpy would write 4 bytes at offset 0 of the 0-byte block", "zero-size block"]);
}

// ---------------------------------------------------------------------------------------
// Allocation kinds

#[test]
fn every_release_matches_its_allocation() {
    let b = build("mismatch.cc");
    let o = run_with(&b, &["legal"], "");
    assert!(o.status.success() && text(&o).contains("mismatch legal: ok"), "{:?}\n{}", o.status, text(&o));
    for (mode, func, also) in [
        ("free_of_new", "free", "free() of a block allocated with operator new: release it with operator delete()"),
        ("delete_of_malloc", "operator delete", "operator delete() of a block allocated with malloc"),
        ("delete_of_new_array", "operator delete", "allocated with operator new[]: release it with operator delete[]()"),
        ("delete_array_of_new", "operator delete[]", "operator delete[]() of a block allocated with operator new: release it with operator delete()"),
        ("delete_array_of_malloc", "operator delete[]", "allocated with malloc (or calloc, realloc, aligned_alloc, ...): release it with free()"),
        ("aligned_delete_of_new", "operator delete", "allocated with operator new: release it with operator delete()"),
        ("sized_delete_wrong_size", "operator delete", "operator delete() names a size of 32 bytes, but the block was allocated with 24 bytes"),
        ("sized_delete_large_wrong_size", "operator delete[]", "names a size of 299999 bytes, but the block was allocated with 300000 bytes"),
        ("free_sized_wrong_size", "free_sized", "free_sized() names a size of 41 bytes, but the block was allocated with 40 bytes"),
        ("realloc_of_new", "realloc", "realloc() of a block allocated with operator new"),
        ("delete_of_malloc0", "operator delete", "operator delete() of a block allocated with malloc"),
    ] {
        // Strict: every mismatch stops the program.
        expect_report_with(&b, mode, "alloc_dealloc_mismatch=2", "alloc-dealloc-mismatch", func, &[also, "called from: 0x"]);
        // Default: a mismatch at the block's start, in a size the block has, is reported
        // and the program goes on; one that names more memory than the block has stops it.
        let fatal = ["sized_delete_wrong_size", "free_sized_wrong_size"].contains(&mode);
        let o = run_exact(&b, &[mode], "");
        let t = text(&o);
        assert!(t.contains("mie: alloc-dealloc-mismatch on 0x") && t.contains(also), "{mode}\n{t}");
        if fatal {
            assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{mode}: {t}");
        } else {
            assert!(o.status.success() && t.contains("NOT DETECTED") && t.contains("mie: continuing"), "{mode}: {:?}\n{t}", o.status);
        }
        // Off: not even reported (the fatal ones stay fatal).
        let o = run_exact(&b, &[mode], "alloc_dealloc_mismatch=0");
        assert_eq!(text(&o).contains("mie: alloc-dealloc-mismatch"), fatal, "{mode}: {}", text(&o));
    }
}

/// A warning (not fatal) written to a stderr pipe whose reader has gone must not kill the
/// program with SIGPIPE: it goes on, as it would have without mie.
#[test]
fn warning_into_a_closed_pipe() {
    use std::os::fd::FromRawFd;
    let b = build("mismatch.cc");
    let mut fds = [0; 2];
    // SAFETY: pipe fills the two descriptors it is given.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] is ours to close; fds[1] is ours, handed to the child's stderr.
    let w = unsafe {
        libc::close(fds[0]);
        std::os::fd::OwnedFd::from_raw_fd(fds[1])
    };
    let o = preloaded(&b).arg("free_of_new").env("MIE_OPTIONS", "sample_rate=0").stderr(std::process::Stdio::from(w)).output().unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && t.contains("NOT DETECTED"), "{:?} {:?}\n{t}", o.status, o.status.signal());
}

/// new char[] released by delete (a third-party benchmark does this): reported once per
/// call site, not for every one of its 100 releases, and the program finishes; a delete of
/// a new[] array with a cookie is an interior pointer: an alloc-dealloc-mismatch, fatal in
/// every mode.
#[test]
fn harmless_mismatch_is_reported_once_per_call_site() {
    let b = build("replaced_new_plain.cc");
    let o = run_exact(&b, &["new_array_delete"], "");
    let t = text(&o);
    assert!(o.status.success() && t.contains("new_array_delete: done"), "{:?}\n{t}", o.status);
    assert_eq!(t.matches("mie: alloc-dealloc-mismatch").count(), 1, "{t}");
    assert!(t.contains("operator delete() of a block allocated with operator new[]"), "{t}");
    let o = run_exact(&b, &["new_array_delete"], "alloc_dealloc_mismatch=2");
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{}", text(&o));
    // Named for what it is (delete of what new[] made), on both architectures (the cookie
    // is 8 bytes on x86-64, 16 on arm64); fatal whatever the option says.
    for opts in ["", "alloc_dealloc_mismatch=0"] {
        expect_report_with(
            &b,
            "delete_interior",
            opts,
            "alloc-dealloc-mismatch",
            "operator delete",
            &["operator delete() of an array allocated with operator new[]", "past the array cookie", "-byte slot"],
        );
    }
}

/// A program (or a -Bsymbolic library, like LLVM) that replaces operator new with malloc and
/// keeps the default delete is legal C++: no report, in any mode.
#[test]
fn replaced_operator_new_with_default_delete_runs_clean() {
    let main = build("replaced_new.cc");
    let lib = build_lib("replaced_new.cc", "libreplacednew.so", &["-DREPLACED_NEW_LIB", "-Wl,-Bsymbolic"]);
    let with_lib = build_linked("replaced_new.cc", "replaced_new_uses_lib", &["-DNO_REPLACEMENT"], &lib);
    for opts in ["", "alloc_dealloc_mismatch=2"] {
        let o = run_with(&main, &[], opts);
        let t = text(&o);
        assert!(o.status.success() && t.contains("replaced_new main: ") && !t.contains("mie:"), "{opts}: {:?}\n{t}", o.status);
        let o = run_with(&with_lib, &["lib"], opts);
        let t = text(&o);
        assert!(o.status.success() && t.contains("replaced_new lib: ") && !t.contains("mie:"), "{opts}: {:?}\n{t}", o.status);
        // The library's blocks (its own new, malloc) deleted by the program (libmie's
        // delete), as rust-lld deletes libLLVM's: no report either.
        let o = run_with(&with_lib, &["lib_blocks"], opts);
        let t = text(&o);
        assert!(o.status.success() && t.contains("replaced_new lib_blocks: done") && !t.contains("mie:"), "{opts}: {:?}\n{t}", o.status);
    }
}

/// One bug, one name, on both architectures: each bug shape and the report kind it must get,
/// whichever mechanism finds it (a check in free, a checked call, a guard page, an MTE fault).
#[test]
fn every_bug_shape_is_named_the_same_on_both_architectures() {
    let detect = detect_bin();
    let checked = checked_bin();
    // Without MTE a write to a freed slot is found when the slot's zeros are checked (write
    // after free); with MTE the write itself faults, before anything is written.
    let waf = if cfg!(target_arch = "aarch64") { "use-after-free" } else { "write-after-free" };
    let table: &[(&Path, &str, &str)] = &[
        (&detect, "double_free", "double-free"),
        (&detect, "double_free_delayed", "double-free"),
        (&detect, "realloc_freed", "double-free"),
        (&detect, "large_double_free", "double-free"),
        (&detect, "zero_double_free", "double-free"),
        (&detect, "interior_free", "invalid-free"),
        (&detect, "misaligned_free", "invalid-free"),
        (&detect, "stack_free", "invalid-free"),
        (&detect, "foreign_free", "invalid-free"),
        (&detect, "realloc_interior", "invalid-free"),
        (&detect, "usable_size_freed", "use-after-free"),
        (&detect, "usable_size_foreign", "invalid-pointer"),
        (&detect, "overflow", "heap-buffer-overflow"),
        (&detect, "off_by_one_nul", "heap-buffer-overflow"),
        (&detect, "large_overflow", "heap-buffer-overflow"),
        (&detect, "large_guard_overflow", "heap-buffer-overflow"),
        (&detect, "underflow_short", "heap-buffer-underflow"),
        (&detect, "underflow_long", "heap-buffer-underflow"),
        (&detect, "underflow_free_neighbour", "heap-buffer-underflow"),
        (&detect, "large_use_after_free", "use-after-free"),
        (&detect, "write_after_free", waf),
        (&detect, "exec_small", "heap-execute"),
        (&detect, "exec_large", "heap-execute"),
        (&detect, "wild_heap_write", "invalid-access"),
        (&detect, "zero_write", "zero-size-access"),
        (&checked, "read_memcpy", "heap-buffer-overflow"),
        (&checked, "large_memcpy", "heap-buffer-overflow"),
        (&checked, "freed_memcpy", "use-after-free"),
        (&checked, "underflow_memcpy_free", "heap-buffer-underflow"),
        (&checked, "underflow_memcpy_live", "heap-buffer-underflow"),
        (&checked, "hinted_underflow_read", "heap-buffer-underflow"),
        (&checked, "hinted_underflow_write", "heap-buffer-underflow"),
    ];
    let mut wrong = Vec::new();
    for &(bin, mode, kind) in table {
        let o = run_exact(bin, &[mode], "");
        let t = text(&o);
        let first = t.lines().find(|l| l.starts_with("mie: ")).unwrap_or("(no report)");
        if o.status.signal() != Some(libc::SIGABRT) || !first.starts_with(&format!("mie: {kind} on 0x")) || t.contains("NOT DETECTED") {
            wrong.push(format!("{mode}: expected {kind}, got {:?}: {first}\n{t}", o.status));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn underflow_lands_on_the_previous_slots_canary() {
    // Short slack (40 of 48 bytes) and long slack (1100 of 1280: the tail canary).
    for (mode, n) in [("underflow_short", 40), ("underflow_long", 1100)] {
        if cfg!(target_arch = "aarch64") {
            // With MTE the byte before a block carries its neighbour's tag: the write faults.
            let o = run_exact(&detect_bin(), &[mode], "");
            let t = text(&o);
            assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{mode}: {t}");
            assert!(t.contains("mie: heap-buffer-underflow on 0x") && t.contains("the access is 1 bytes before it"), "{mode}\n{t}");
            continue;
        }
        // The previous block's canary is intact up to the slot's last byte: the write was
        // before the next block, which the report names (found when the first is freed).
        let t = expect_report(mode, "heap-buffer-underflow", "free", &["a write 1 byte before the block at 0x", &format!(": {n} bytes requested")]);
        let second = t.lines().find_map(|l| l.split("second ").nth(1)).expect("second block printed").trim().to_string();
        assert!(t.contains(&format!("mie: heap-buffer-underflow on {second}")), "{t}");
    }
    if cfg!(target_arch = "x86_64") {
        // The second block freed by a thread that does not own its slab: found when the
        // owner takes it back, not left to the first block's free or the exit.
        let t = expect_report("remote_underflow", "heap-buffer-underflow", "free", &["the canary at the end of the previous slot", "48-byte slot", "found when the thread that owns the block's slab took the block back after another thread freed it"]);
        let second = t.lines().find_map(|l| l.split("second ").nth(1)).expect("second block printed").trim().to_string();
        assert!(t.contains(&format!("mie: heap-buffer-underflow on {second}")), "{t}");
    }
}

#[test]
fn an_overflow_found_by_the_next_blocks_free_is_named_an_overflow() {
    // The second block's free reads the end of the previous slot; broken from right after
    // the first block's end, that is the first block's overflow (it was named an underflow
    // of the second).
    let o = run_exact(&detect_bin(), &["overflow_found_by_next"], "");
    let t = text(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{t}");
    // The address as printed by the program, without its MTE tag (top byte).
    let first = t.lines().find_map(|l| l.split("first ").nth(1)).expect("blocks printed").split(' ').next().unwrap();
    let first = format!("{:#x}", usize::from_str_radix(first.trim_start_matches("0x"), 16).unwrap() & ((1 << 56) - 1));
    assert!(t.contains(&format!("mie: heap-buffer-overflow on {first}")), "{t}");
    if cfg!(target_arch = "aarch64") {
        // With MTE the 8 bytes lie in the block's last granule (no fault) and nothing reads
        // the previous slot at a free: the exit sweep finds the canary.
        assert!(t.contains("byte 0 past the end of the 40-byte block") && t.contains("found at exit"), "{t}");
        return;
    }
    let second = t.lines().find_map(|l| l.split("second ").nth(1)).unwrap().trim().to_string();
    assert!(t.contains("byte 0 past the end of the 40-byte block") && t.contains(&format!("found when the block after it ({second}) was released")), "{t}");
}

// ---------------------------------------------------------------------------------------
// Options cannot weaken a privileged process

#[test]
fn locked_options_only_strengthen() {
    // MIE_LOCK_OPTIONS=1 applies the privileged-process rule: canary=0 is refused (with a
    // warning), so the overflow is still caught; a strengthening option still applies.
    let o = preloaded(&detect_bin())
        .arg("overflow")
        .env("MIE_OPTIONS", "sample_rate=0:canary=0:zero_on_free=0:quarantine=0:stacks=1")
        .env("MIE_LOCK_OPTIONS", "1")
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{t}");
    assert!(t.contains("mie: heap-buffer-overflow on 0x"), "{t}");
    for key in ["canary", "zero_on_free", "quarantine", "sample_rate"] {
        assert!(t.contains(&format!("ignored in a privileged process (would weaken): '{key}")), "{key}\n{t}");
    }
    assert!(t.contains("allocated by thread") || t.contains("allocated at"), "stacks=1 (stronger) applies\n{t}");
}

/// A real set-uid program: linked against libmie.so (set-uid programs ignore LD_PRELOAD
/// paths), owned by nobody with the set-uid bit, run by root, so the kernel marks it
/// AT_SECURE. MIE_OPTIONS=canary=0 must not switch the canary off.
#[test]
#[cfg_attr(target_arch = "aarch64", ignore = "qemu-user does not honour the set-uid bit")]
fn setuid_program_ignores_weakening_options() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("setuid_program_ignores_weakening_options: needs root to make a set-uid test binary; covered by locked_options_only_strengthen");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("suid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("detect_suid");
    let libdir = lib().parent().unwrap().to_path_buf();
    let st = Command::new("gcc")
        .args(["-O1", "-g", "-fno-builtin", "-o"])
        .arg(&bin)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/detect.c"))
        .arg(format!("-L{}", libdir.display()))
        .arg("-lmie")
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let c = std::ffi::CString::new(bin.to_str().unwrap()).unwrap();
    // SAFETY: a valid path; 65534 is the conventional nobody user.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let o = Command::new(&bin).arg("overflow").env("MIE_OPTIONS", "sample_rate=0:canary=0").env_remove("LD_PRELOAD").output().unwrap();
    let t = text(&o);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{t}");
    assert!(t.contains("ignored in a privileged process (would weaken): 'canary"), "{t}");
    assert!(t.contains("mie: heap-buffer-overflow on 0x"), "{t}");
}

// ---------------------------------------------------------------------------------------
// Portable layout: page sizes and address-space sizes

/// Run an arm64 test program under qemu with extra emulator arguments (page size, address
/// space), libmie.so preloaded.
#[cfg(target_arch = "aarch64")]
fn qemu_with(qemu_args: &[&str], bin: &Path, args: &[&str], options: &str) -> Output {
    Command::new("qemu-aarch64")
        .args(qemu_args)
        .args(["-cpu", "max", "-E", "GLIBC_TUNABLES=glibc.cpu.name=a64fx", "-E"])
        .arg(format!("MIE_OPTIONS={options}"))
        .arg(ARM64_LOADER)
        .args(["--library-path", "/usr/aarch64-linux-gnu/lib", "--preload"])
        .arg(lib())
        .arg(bin)
        .args(args)
        .output()
        .unwrap()
}

/// A 64 KiB-page system (qemu -p 65536; its MTE emulation does not work with that page
/// size, so tagging is off here): mappings, guard pages, valloc and purging follow the
/// system page size.
#[test]
#[cfg_attr(not(target_arch = "aarch64"), ignore = "the page size can only be varied under qemu (arm64 leg)")]
fn runs_on_64k_pages() {
    #[cfg(target_arch = "aarch64")]
    {
        let q = ["-p", "65536"];
        let o = qemu_with(&q, &build("legal.c"), &[], "mte=0");
        assert!(o.status.success() && text(&o).contains("legal: ok"), "{}", text(&o));
        let o = qemu_with(&q, &checked_bin(), &["legal"], "mte=0");
        assert!(o.status.success() && text(&o).contains("legal: ok"), "{}", text(&o));
        let o = qemu_with(&q, &detect_bin(), &["large_use_after_reuse"], "mte=0:sample_rate=0");
        assert!(text(&o).contains("mie: use-after-free on 0x") && text(&o).contains("bytes into the freed 1048576-byte large block"), "{}", text(&o));
        let o = qemu_with(&q, &detect_bin(), &["overflow"], "mte=0:sample_rate=0");
        assert!(text(&o).contains("mie: heap-buffer-overflow on 0x"), "{}", text(&o));
    }
}

/// A 39-bit (512 GiB) user address space, as arm64 kernels with three-level page tables
/// give (qemu -R 0x8000000000): mie detects it at start-up and sizes its regions to fit.
#[test]
#[cfg_attr(not(target_arch = "aarch64"), ignore = "the address-space size can only be varied under qemu (arm64 leg)")]
fn runs_in_a_39_bit_address_space() {
    #[cfg(target_arch = "aarch64")]
    {
        let q = ["-R", "0x8000000000"];
        let o = qemu_with(&q, &build("legal.c"), &[], "");
        assert!(o.status.success() && text(&o).contains("legal: ok"), "{}", text(&o));
        let o = qemu_with(&q, &build("isolation.c"), &[], "");
        assert!(o.status.success(), "{}", text(&o));
        let o = qemu_with(&q, &detect_bin(), &["double_free"], "sample_rate=0");
        assert!(text(&o).contains("mie: double-free on 0x"), "{}", text(&o));
        // MTE still stops an overflow at the access.
        let o = qemu_with(&q, &build("mte.c"), &["neighbour_overflow"], "sample_rate=0");
        assert!(text(&o).contains("mie: heap-buffer-overflow on 0x") && text(&o).contains("MTE tag-check fault"), "{}", text(&o));
        // Every heap address lies below 2^39.
        let o = qemu_with(&q, &checked_bin(), &["object_size"], "sample_rate=0");
        assert!(o.status.success(), "{}", text(&o));
    }
}

/// The number of memory mappings stays bounded: at most 4 per (class, bucket) region in use
/// for any number of small blocks (so at most 1536 in all), plus one per slab of the classes
/// from 16 KiB up while the process has fewer than 4096 of them (each ends at an unmapped
/// guard gap, `pool::GUARDED_SLABS_MAX`), and 3 per live large block (guard, body, guard)
/// plus 2 per quarantined one; far below vm.max_map_count (65530).
#[test]
fn mappings_stay_bounded() {
    // (The gap probe forks: not under qemu-user, and MTE has no guarded slabs.)
    let probe: &[&str] = if cfg!(target_arch = "aarch64") { &[] } else { &["gaps"] };
    let o = run_with(&build("mappings.c"), probe, "");
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let nums: Vec<i64> = t
        .lines()
        .find(|l| l.starts_with("mappings: before"))
        .unwrap_or_else(|| panic!("{t}"))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (before, small, large, freed) = (nums[0], nums[1], nums[2], nums[3]);
    eprintln!("mappings: {before} at start, +{} for 200000 small blocks, +{} for 300 large blocks, {freed} after freeing", small - before, large - small);
    // This program makes about 20 000 slabs of guarded classes: the budget is used up.
    let guarded = if cfg!(target_arch = "aarch64") { 0 } else { 4096 };
    assert!(small - before <= 4 * 384 + guarded, "{t}");
    // Guarded slabs near each other share a mapping where the kernel has guard markers
    // (`islands.rs`); wherever they are mapped, the gap after each still faults.
    if guarded != 0 {
        assert!(t.contains("guard gaps: 40 of 40 faulted"), "{t}");
    }
    assert!(large - small <= 3 * 300, "{t}");
    assert!(freed - before <= 4 * 384 + guarded + 2 * 32, "{t}");
}

// ---------------------------------------------------------------------------------------
// Reliability: stress and out of memory

#[test]
fn stress_threads_forks_signals_cross_thread_frees() {
    // 8 threads on 2 cores, random sizes and alignments, realloc chains, contents checked
    // before every free, a 1 ms timer signal, short-lived threads, forks with the child
    // allocating (not under qemu-user, which cannot fork a multithreaded guest reliably).
    let fork = if cfg!(target_arch = "aarch64") { "0" } else { "1" };
    let secs = if cfg!(target_arch = "aarch64") { "2" } else { "4" };
    let o = run_with(&build("stress.c"), &[secs, "8", fork], "");
    let t = text(&o);
    eprintln!("{}", t.trim());
    assert!(o.status.success() && t.contains("stress: ok"), "{:?}\n{t}", o.status);
}

#[test]
#[cfg_attr(target_arch = "aarch64", ignore = "qemu-user does not apply a guest's RLIMIT_AS")]
fn out_of_memory_returns_null_and_the_program_goes_on() {
    let o = run_with(&build("oom.c"), &[], "");
    let t = text(&o);
    eprintln!("{}", t.trim());
    assert!(o.status.success() && t.contains("oom: ok"), "{:?}\n{t}", o.status);
}

#[test]
#[cfg_attr(target_arch = "aarch64", ignore = "qemu-user does not apply a guest's RLIMIT_AS")]
fn operator_new_out_of_memory_follows_cxx_rules() {
    let o = run_with(&build("oom_new.cc"), &[], "");
    let t = text(&o);
    assert!(o.status.success() && t.contains("oom_new: ok"), "{:?}\n{t}", o.status);
}

/// A program's own `__mie_default_options()` applies (statistics at exit), whether the
/// program links libmie or exports the function for LD_PRELOAD; MIE_OPTIONS overrides it.
#[test]
fn program_default_options() {
    let linked = build_linked("default_options.c", "default_options_linked", &[], &lib());
    let exported = build_with("default_options.c", "default_options_rdynamic", &["-rdynamic"]);
    let plain = build_with("default_options.c", "default_options_plain", &[]);
    for (bin, applies) in [(&linked, true), (&exported, true), (&plain, false)] {
        let o = preloaded(bin).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ran 1"), "{}: {err}", bin.display());
        assert_eq!(err.contains("stats: live"), applies, "{}: {err}", bin.display());
        let o = preloaded(bin).env("MIE_OPTIONS", "stats=0").output().unwrap();
        assert!(!String::from_utf8_lossy(&o.stderr).contains("stats: live"), "{}", bin.display());
    }
}
