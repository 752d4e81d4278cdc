//! The `mie` command line as a user types it: help, version, `mie run` flag forms.
#![cfg(target_arch = "x86_64")] // runs host programs under the x86-64 libmie.so

use std::path::PathBuf;
use std::process::Command;

fn mie() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mie"))
}

fn lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().parent().unwrap().join("libmie.so");
    assert!(lib.is_file(), "libmie.so not built at {}: run `bash scripts/test.sh`", lib.display());
    lib
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn run_help_lists_flags_and_every_option() {
    for flag in ["--help", "-h"] {
        let o = mie().args(["run", flag]).output().unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{flag}: {:?}\n{t}", o.status);
        assert!(t.contains("--options <K=V:K=V>") && t.contains("--stats") && t.contains("--lib <LIB>"), "{t}");
        for (k, _) in mie::options::KEYS {
            assert!(t.contains(&format!("  {k} ")), "{flag}: option {k} missing\n{t}");
        }
    }
    let o = mie().arg("--version").output().unwrap();
    assert!(o.status.success() && text(&o).starts_with("mie "), "{}", text(&o));
    // Every command explains itself, and `mie --help` names them all.
    let o = mie().arg("--help").output().unwrap();
    let top = text(&o);
    assert!(o.status.success(), "{top}");
    for c in ["run", "demo", "bench", "cc", "c++", "enable", "disable", "service", "install", "uninstall", "report", "lib", "completions"] {
        assert!(top.contains(&format!("\n  {c} ")), "mie --help does not list {c}\n{top}");
        let o = mie().args(["help", c]).output().unwrap();
        assert!(o.status.success() && text(&o).contains("Usage: mie "), "mie help {c}\n{}", text(&o));
    }
    // A removal needs its scope said out loud.
    let o = mie().arg("uninstall").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--system"), "{}", text(&o));
}

/// Shell completions name the commands and the flags.
#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let o = mie().args(["completions", shell]).output().unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{shell}: {t}");
        assert!(t.contains("enable") && t.contains("mie-options") && t.contains("stats"), "{shell}: {t}");
    }
    let o = mie().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// A reader that goes away (`mie completions bash | head -1`): the command ends quietly,
/// by SIGPIPE as other tools do, with no panic message.
#[test]
fn writing_to_a_closed_pipe_ends_quietly() {
    use std::os::fd::FromRawFd;
    use std::os::unix::process::ExitStatusExt;
    for args in [&["completions", "bash"][..], &["lib"][..], &["--help"][..]] {
        let mut fds = [0; 2];
        // SAFETY: pipe fills two descriptors; the read end is closed at once, the write end
        // is handed to the child as its stdout (owned by the Stdio).
        let w = unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            libc::close(fds[0]);
            std::process::Stdio::from_raw_fd(fds[1])
        };
        let o = mie().args(args).stdout(w).stderr(std::process::Stdio::piped()).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
        assert!(o.status.success() || o.status.signal() == Some(libc::SIGPIPE), "{args:?}: {:?} {err}", o.status);
    }
}

/// A statically linked program (no dynamic loader) runs without mie under `mie run`: mie says
/// so. (A shared library's ELF type is the same as a position-independent program's: only the
/// program interpreter tells them apart.)
#[test]
fn run_warns_that_a_static_program_runs_without_mie() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("s.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    for (flags, static_) in [(&["-static"][..], true), (&["-static-pie"][..], true), (&[][..], false)] {
        let prog = dir.join(format!("s{}", flags.join("")));
        let built = Command::new("cc").args(flags).arg("-o").arg(&prog).arg(&src).status().is_ok_and(|s| s.success());
        assert!(built || static_, "cc failed");
        if !built {
            continue; // no static C library here
        }
        let o = mie().arg("run").arg(format!("--lib={}", lib().display())).arg(&prog).output().unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert_eq!(t.contains("is statically linked: no dynamic loader reads LD_PRELOAD for it, so it runs with its own allocator, without mie"), static_, "{flags:?}: {t}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A set-uid program (to another user) runs without mie under `mie run`: the loader
/// ignores LD_PRELOAD for it. mie says so instead of letting it look covered.
#[test]
fn run_warns_that_a_set_uid_program_runs_without_mie() {
    use std::os::unix::fs::PermissionsExt;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("setuid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join("true");
    std::fs::copy("/bin/true", &prog).unwrap();
    let run = || mie().arg("run").arg(format!("--lib={}", lib().display())).arg(&prog).output().unwrap();
    let o = run();
    assert!(o.status.success() && !text(&o).contains("set-uid"), "{}", text(&o));
    // Owned by someone else than who runs it (root can give it away; anyone else can only
    // test the bit on a file of another owner, which this cannot make).
    // SAFETY: getuid has no preconditions; chown takes a NUL-terminated path.
    let me = unsafe { libc::getuid() };
    let other = if me == 0 { 65534 } else { me };
    let c = std::ffi::CString::new(prog.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs fills the buffer it is given.
    let nosuid = unsafe {
        let mut v: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut v) == 0 && v.f_flag & libc::ST_NOSUID != 0
    };
    if me == 0 && !nosuid && unsafe { libc::chown(c.as_ptr(), other, u32::MAX) } == 0 {
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let o = run();
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(t.contains(&format!("is set-uid (to uid {other}): the dynamic loader ignores LD_PRELOAD for it, so it runs without mie")), "{t}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_accepts_both_option_forms_and_adds_to_mie_options() {
    for args in [vec!["--options=stats=1"], vec!["--options", "stats=1"], vec!["-o", "stats=1"]] {
        let lib = lib();
        let mut cmd = mie();
        cmd.arg("run").arg(format!("--lib={}", lib.display())).args(&args).args(["--", "true"]);
        let o = cmd.env("MIE_OPTIONS", "sample_rate=0").output().unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{args:?}: {:?}\n{t}", o.status);
        assert!(t.contains("]: stats: live "), "{args:?}: no statistics\n{t}");
        assert!(!t.contains("unknown"), "{args:?}\n{t}");
    }
    // A typo in MIE_OPTIONS is reported once: by mie itself (which runs on mie), not again
    // by the program it starts; one added with --options is reported by the program.
    let o = mie().arg("run").arg(format!("--lib={}", lib().display())).args(["--options", "sampel_rate=1", "--", "true"]).env("MIE_OPTIONS", "typo=1").output().unwrap();
    let t = text(&o);
    assert_eq!(t.matches("unknown option: 'typo'").count(), 1, "{t}");
    assert_eq!(t.matches("unknown option: 'sampel_rate'").count(), 1, "{t}");
    let o = mie().args(["run", "--no-such-flag", "true"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// `ls` closes its stderr in an exit handler, before mie's statistics are written: they
/// reach it all the same (here a pipe). `log_path=PATH` sends them (and reports) to
/// PATH.<pid> instead.
#[test]
fn log_path_keeps_what_a_program_that_closes_stderr_would_lose() {
    let o = mie().arg("run").arg(format!("--lib={}", lib().display())).args(["--stats", "--", "ls", "/"]).output().unwrap();
    assert!(o.status.success() && text(&o).contains("]: stats: live "), "{}", text(&o));
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("logpath-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("mie");
    let o = mie()
        .arg("run")
        .arg(format!("--lib={}", lib().display()))
        .args(["--stats", "--options"])
        .arg(format!("log_path={}", base.display()))
        .args(["--", "ls", "/"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let logs: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let name = logs[0].file_name().unwrap().to_string_lossy().into_owned();
    let pid = name.strip_prefix("mie.").expect("PATH.<pid>");
    let body = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(body.contains(&format!("mie[{pid}]: stats: live ")), "{body}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A log file that cannot be written: one warning that says where the output goes instead,
/// and the output there (here: a rejected option's warning, with the accepted values, and
/// the statistics).
#[test]
fn an_unwritable_log_path_is_said_once_and_stderr_takes_over() {
    // A program that allocates and exits through exit() with stderr open (coreutils close
    // it first; an interpreter's wrapper script would start mie once per exec).
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("logfail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("alloc.c");
    std::fs::write(&src, "#include <stdlib.h>\nint main(void) { free(malloc(100)); return 0; }\n").unwrap();
    let bin = dir.join("alloc");
    assert!(Command::new("cc").arg("-o").arg(&bin).arg(&src).status().unwrap().success());
    let o = Command::new(&bin)
        .env("LD_PRELOAD", lib())
        .env("MIE_OPTIONS", "log_path=/nonexistent-dir/mie:stats=1:buckets=9:canary=no")
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert_eq!(t.matches("cannot write the log file /nonexistent-dir/mie.").count(), 1, "{t}");
    assert!(t.contains("no such directory; reports, warnings and statistics go to stderr instead"), "{t}");
    assert!(t.contains("value out of range for option: 'buckets=9' (MIE_OPTIONS); accepted: 1 to 7"), "{t}");
    assert!(t.contains("stats: live "), "{t}");
    assert!(!t.contains("canary"), "canary=no is a valid switch: {t}");
}

/// `MIE_OPTIONS=help=1` lists every option with what it does.
#[test]
fn help_option_lists_every_option() {
    let o = Command::new("true").env("LD_PRELOAD", lib()).env("MIE_OPTIONS", "help=1").output().unwrap();
    let t = text(&o);
    for (k, _) in mie::options::KEYS {
        assert!(t.contains(&format!("mie:   {k} ")), "{k} missing\n{t}");
    }
    assert!(!t.contains("unknown option"), "{t}");
}

/// `mie report` adds source lines to a saved report (from the binary's debug info): a
/// double free's call site and its allocation and free stacks.
#[test]
fn report_symbolizes_a_saved_report() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/deploy/setid.c");
    let bin = dir.join("twice");
    assert!(Command::new("cc").args(["-g", "-O1", "-o"]).arg(&bin).arg(&src).status().unwrap().success());
    // As a report looks from a machine without binutils (symbolize=0): mie report adds the
    // lines later.
    let o = Command::new(&bin).arg("double").env("LD_PRELOAD", lib()).env("MIE_OPTIONS", "stacks=1:sample_rate=0:symbolize=0").output().unwrap();
    assert!(!String::from_utf8_lossy(&o.stderr).contains("setid.c:"), "{}", String::from_utf8_lossy(&o.stderr));
    let saved = dir.join("report.txt");
    std::fs::write(&saved, &o.stderr).unwrap();
    let o = mie().arg("report").arg(&saved).output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // Three places in main resolved: allocation, free, and the second free's call.
    assert!(t.matches("setid.c:").count() >= 3 && t.contains("(main)"), "{t}");
    // The same from stdin, with the binary named (a report without addr2line lines).
    let stripped: String = String::from_utf8_lossy(&std::fs::read(&saved).unwrap()).lines().filter(|l| !l.contains("source line:")).map(|l| format!("{l}\n")).collect();
    let mut child = mie().args(["report", "-", "--binary"]).arg(&bin).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), stripped.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).matches("setid.c:").count() >= 3, "{}", String::from_utf8_lossy(&o.stdout));
    std::fs::remove_dir_all(&dir).ok();
}
