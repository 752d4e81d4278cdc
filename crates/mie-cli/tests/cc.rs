//! `mie cc` / `mie c++` with the real compiler (Debian's clang-22): type ids put a type with
//! pointers and a pure-data type of the same size in different buckets, for malloc and new,
//! with the default and the fast AllocToken ABI; their slots are never shared.
#![cfg(target_arch = "x86_64")] // builds host programs

use std::path::PathBuf;
use std::process::Command;

fn mie() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mie"))
}

/// clang-22 must be there: CI and scripts/test.sh install it (MIE_SKIP_CLANG=1 skips).
fn have_clang() -> bool {
    if Command::new("clang++-22").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(std::env::var_os("MIE_SKIP_CLANG").is_some(), "clang++-22 is missing: apt-get install clang-22 (or MIE_SKIP_CLANG=1)");
    false
}

fn build(name: &str, extra: &[&str]) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cc/typed.cc");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let o = mie().arg("c++").args(["-O1", "-g"]).args(extra).arg(&src).arg("-o").arg(&out).env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR")).output().unwrap();
    assert!(o.status.success(), "mie c++ failed: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    out
}

fn buckets(line: &str) -> (i32, i32, i32) {
    let n: Vec<i32> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (n[0], n[1], n[2])
}

fn check(bin: &PathBuf) {
    let mut pointer_types_apart = false;
    for _ in 0..5 {
        // The binary finds libmie itself (mie c++ linked it with its rpath): no LD_PRELOAD.
        let o = Command::new(bin).env("MIE_OPTIONS", "buckets=7:sample_rate=0").output().unwrap();
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{t}{}", String::from_utf8_lossy(&o.stderr));
        for prefix in ["malloc ", "new "] {
            let line = t.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{t}"));
            let (w, d, other) = buckets(line);
            assert_eq!(d, 0, "pure data outside the data bucket: {line}");
            assert!(w >= 1 && other >= 1, "a pointer type in the data bucket: {line}");
            pointer_types_apart |= w != other;
        }
        assert!(t.contains("addresses shared by WithPtr and Plain: 0 "), "{t}");
    }
    // Two pointer types land in the same one of 7 buckets by chance 1 in 7 a run.
    assert!(pointer_types_apart, "two pointer types shared a bucket in every run");
}

#[test]
fn typed_buckets_with_the_default_abi() {
    if have_clang() {
        check(&build("typed_default", &[]));
    }
}

#[test]
fn typed_buckets_with_the_fast_abi_and_a_small_id_space() {
    if have_clang() {
        // The id space is recorded in the program (mie cc's object): no option to set.
        check(&build("typed_fast", &["-fsanitize-alloc-token-fast-abi", "-falloc-token-max=16"]));
    }
}

/// The hardening `mie cc` adds: each check stops its bug with a mie report naming it (the
/// same program without the hardening runs past the bug).
#[test]
fn hardening_checks_stop_their_bugs_with_a_report() {
    if !have_clang() {
        return;
    }
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cc/hardening.c");
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let compile = |name: &str, extra: &[&str]| {
        let out = tmp.join(name);
        let o = mie().arg("cc").args(["-O2", "-g"]).args(extra).arg(&src).arg("-o").arg(&out).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let hardened = compile("hardened", &[]);
    let no_fortify = compile("hardened_no_fortify", &["-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=0"]);
    let plain = compile("not_hardened", &["--mie-no-hardening"]);
    let long = "A".repeat(40);
    for (bin, args, signal, head, also) in [
        (&hardened, vec!["b", "4"], libc::SIGILL, "mie: array-index-out-of-bounds (the compiler's check trapped", ", get+0x"),
        (&hardened, vec!["s", long.as_str()], libc::SIGABRT, "mie: buffer-overflow (stopped by the C library's check)", ", smash+0x"),
        (&no_fortify, vec!["s", long.as_str()], libc::SIGABRT, "mie: stack-buffer-overflow (stopped by the C library's check)", ", smash+0x"),
    ] {
        let o = Command::new(bin).args(&args).env("MIE_OPTIONS", "sample_rate=0").output().unwrap();
        let t = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(o.status.signal(), Some(signal), "{args:?}: {:?}\n{t}", o.status);
        assert!(t.contains(head) && t.contains(also), "{args:?}\n{t}");
    }
    // Without the hardening the index reads the next member.
    let o = Command::new(&plain).args(["b", "4"]).output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "42", "{:?}", o);
}

#[test]
fn untyped_build_is_the_control() {
    if !have_clang() {
        return;
    }
    // Without type ids the two types of one size come from call sites: nothing keeps Plain
    // in the data bucket (shows the test can fail).
    let bin = build("typed_none", &["--mie-no-types"]);
    let o = Command::new(&bin).env("MIE_OPTIONS", "buckets=7:sample_rate=0").output().unwrap();
    let t = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = t.lines().find(|l| l.starts_with("malloc ")).unwrap();
    assert_ne!(buckets(line).1, 0, "{t}");
}

/// The attack lab without hand-written type ids, the mie column built with `mie cc`: type
/// ids from the compiler, nothing exploited (the spray reclaims nothing, the type confusion
/// is stopped).
#[test]
fn the_lab_with_compiler_type_ids_stops_every_attack() {
    if !have_clang() {
        return;
    }
    let o = mie().args(["demo", "--typed"]).env("MIE_OPTIONS", "sample_rate=0").output().unwrap();
    let t = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{t}");
    assert!(t.contains("mie exploited 0,"), "{t}");
    for technique in ["heap spray to reclaim a freed slot", "use-after-free type confusion"] {
        let line = t.lines().find(|l| l.starts_with(technique)).unwrap_or_else(|| panic!("{technique}\n{t}"));
        assert!(line.contains("no effect") || line.contains("stopped:"), "{line}");
    }
}

fn lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().parent().unwrap().join("libmie.so");
    assert!(lib.is_file(), "libmie.so not built at {}: run `bash scripts/test.sh`", lib.display());
    lib
}

fn field(t: &str, key: &str) -> i64 {
    let w: Vec<&str> = t.split_whitespace().collect();
    let i = w.iter().position(|x| *x == key).unwrap_or_else(|| panic!("no {key} in {t}"));
    w[i + 1].parse().unwrap()
}

/// A library built with `mie c++` used by a gcc-built program that does not run under mie:
/// the library's blocks are the process allocator's (the program frees them, and the
/// library frees and grows the program's), nothing is reported, and no heap of mie's is set
/// up. Under mie (LD_PRELOAD) the same binaries get the type ids, and an allocation whose
/// type the compiler could not see (through `xmalloc`, through a function pointer) is
/// bucketed as untyped, over the pointer buckets, not in the data bucket.
#[test]
fn a_library_built_with_mie_cc_works_with_and_without_mie() {
    if !have_clang() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("optin");
    let (typed_dir, fast_dir, plain_dir) = (dir.join("typed"), dir.join("fast"), dir.join("plain"));
    for d in [&typed_dir, &fast_dir, &plain_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cc");
    let run = |c: &mut Command| {
        let o = c.output().unwrap();
        assert!(o.status.success(), "{c:?}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    };
    let lib_args = ["-O1", "-g", "-shared", "-fPIC"];
    let src_lib = src.join("optin_lib.cc");
    run(mie().arg("c++").args(lib_args).arg(&src_lib).arg("-o").arg(typed_dir.join("liboptin.so")).env("XDG_CACHE_HOME", &dir));
    let fast = ["-fsanitize-alloc-token-fast-abi", "-falloc-token-max=16"];
    run(mie().arg("c++").args(lib_args).args(fast).arg(&src_lib).arg("-o").arg(fast_dir.join("liboptin.so")).env("XDG_CACHE_HOME", &dir));
    run(Command::new("clang++-22").args(lib_args).arg(&src_lib).arg("-o").arg(plain_dir.join("liboptin.so")));
    let prog = dir.join("optin_prog");
    run(Command::new("gcc").args(["-O1", "-g"]).arg(src.join("optin_prog.c")).arg(format!("-L{}", typed_dir.display())).args(["-loptin", "-lstdc++", "-o"]).arg(&prog));
    let exec = |libdir: &PathBuf, preload: bool| {
        let mut c = Command::new(&prog);
        c.env("LD_LIBRARY_PATH", libdir).env("MIE_OPTIONS", "buckets=7:sample_rate=0:stats=1").env_remove("LD_PRELOAD");
        if preload {
            c.env("LD_PRELOAD", lib());
        }
        let o = c.output().unwrap();
        let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
        assert!(o.status.success() && out.contains("\nok"), "{out}{err}");
        (out, err)
    };
    let (plain, _) = exec(&plain_dir, false);
    for libdir in [&typed_dir, &fast_dir] {
        for _ in 0..2 {
            let (out, err) = exec(libdir, false);
            assert!(!err.contains("mie"), "a report or statistics without mie as the allocator: {err}");
            assert!(out.contains("buckets: typed -1 xmalloc -1 fnptr -1 chars -1"), "a block of mie's without mie: {out}");
            // libmie.so's own image is not counted; its .bss and the loader's note of one
            // more object can add two anonymous mappings. mie's heap would add dozens.
            assert!(field(&out, "mappings") <= field(&plain, "mappings") + 2, "without mie:\n{out}plain build:\n{plain}");
        }
        // The fast ABI: the id-64 forms (the unknown type) are the untyped functions.
        let (out, err) = exec(libdir, true);
        assert!(field(&out, "xmalloc") >= 1 && field(&out, "fnptr") >= 1, "{out}");
        assert!(!err.contains("mie: "), "{err}");
    }
    for _ in 0..3 {
        let (out, err) = exec(&typed_dir, true);
        let (typed, xmalloc, fnptr, chars) = (field(&out, "typed"), field(&out, "xmalloc"), field(&out, "fnptr"), field(&out, "chars"));
        assert!(typed >= 1 && xmalloc >= 1 && fnptr >= 1, "a struct of pointers in the data bucket: {out}");
        assert_eq!(chars, 0, "char buffers outside the data bucket: {out}");
        let stats = err.lines().find(|l| l.contains("type ids:")).unwrap_or_else(|| panic!("{err}"));
        let n: Vec<u64> = stats.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        // "<typed> of <all> allocations came with a compiler type id (mie cc), <unknown> of them ..."
        assert!(n[0] >= 16000 && n[2] >= 4000, "{stats}");
        assert!(!err.contains("mie: "), "{err}");
    }
}
