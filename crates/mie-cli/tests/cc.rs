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
