//! Deploying mie past LD_PRELOAD: `mie enable` (a set-uid binary run by another user runs
//! under mie), `mie install --prefix` (with mie.pc), and `mie install --system` in a
//! throwaway root (a private mount namespace: an overlay on /etc, a tmpfs for the install),
//! where a shell, ls, python3 and a set-uid program all run under mie, never on the host.
#![cfg(target_arch = "x86_64")] // runs host programs

use std::path::{Path, PathBuf};
use std::process::Command;

fn mie() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mie"))
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Root is needed for set-uid files and mount namespaces: CI runs as root (MIE_SKIP_ROOT=1
/// skips these tests elsewhere).
fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var_os("MIE_SKIP_ROOT").is_some(), "these tests need root (or MIE_SKIP_ROOT=1)");
    false
}

fn setid_program(dir: &Path) -> PathBuf {
    let out = dir.join("setid");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/deploy/setid.c");
    assert!(Command::new("cc").args(["-O1", "-o"]).arg(&out).arg(&src).status().unwrap().success());
    out
}

#[test]
fn enable_makes_a_set_uid_binary_load_mie_and_disable_undoes_it() {
    if !root() {
        return;
    }
    let dir = tmp("enable");
    let prog = setid_program(&dir);
    let original = std::fs::read(&prog).unwrap();
    let run = |args: &[&str]| Command::new(&prog).args(args).output().unwrap();
    assert!(text(&run(&[])).contains("under mie: no"));
    let o = mie().arg("enable").arg(dir.join("no-such-program")).output().unwrap();
    assert!(!o.status.success() && text(&o).contains("no-such-program: no such file"), "{}", text(&o));
    let o = mie().arg("enable").arg(&prog).output().unwrap();
    assert!(o.status.success() && text(&o).contains("now loads"), "{}", text(&o));
    assert!(text(&run(&[])).contains("under mie: yes"));
    // Set-uid root, run by nobody: the loader ignores LD_PRELOAD here, DT_NEEDED it follows.
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    let o = Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&prog).arg("double").output().unwrap();
    let t = text(&o);
    assert!(t.contains("mie: double-free on 0x") && t.contains("(setid+0x"), "{t}");
    let o = mie().arg("disable").arg(&prog).output().unwrap();
    assert!(o.status.success() && text(&o).contains("no longer loads") && text(&o).contains("restored as it was"), "{}", text(&o));
    assert!(text(&run(&[])).contains("under mie: no"));
    // Byte for byte, with its set-uid bit.
    assert!(std::fs::read(&prog).unwrap() == original, "disable did not give the file back as it was");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&prog).unwrap().permissions().mode() & 0o7777, 0o4755);
    // A program changed after enable (say, upgraded) keeps its new bytes: only the entry goes.
    // (Not set-uid this time: a set-uid program may only load a libmie that only root can
    // replace, and a checkout under /tmp is not one.)
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert!(mie().arg("enable").arg(&prog).status().unwrap().success());
    let mut f = std::fs::OpenOptions::new().append(true).open(&prog).unwrap();
    std::io::Write::write_all(&mut f, b"upgraded").unwrap();
    drop(f);
    let o = mie().arg("disable").arg(&prog).output().unwrap();
    assert!(o.status.success() && text(&o).contains("changed since mie enable"), "{}", text(&o));
    assert!(text(&run(&[])).contains("under mie: no"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn enable_refuses_a_set_uid_binary_with_a_library_others_can_replace() {
    if !root() {
        return;
    }
    let dir = tmp("unsafe");
    let prog = setid_program(&dir);
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    // A copy of libmie in a world-writable directory.
    let open = dir.join("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let lib = open.join("libmie.so");
    let real = PathBuf::from(env!("CARGO_BIN_EXE_mie")).parent().unwrap().join("libmie.so");
    std::fs::copy(real, &lib).unwrap();
    let o = mie().arg("enable").arg(&prog).arg("--lib").arg(&lib).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // The reason named: the directory is root's, but anyone can write it.
    assert!(text(&o).contains(&format!("{} can be written by anyone (mode 0777)", open.display())), "{}", text(&o));
    assert!(text(&o).contains("must not load a library that someone else could replace"), "{}", text(&o));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn install_prefix_writes_the_library_the_tool_and_mie_pc() {
    let dir = tmp("prefix");
    let o = mie().arg("install").arg("--prefix").arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for f in ["lib/libmie.so", "bin/mie", "lib/pkgconfig/mie.pc", "lib/pkgconfig/mie-types.pc", "share/man/man1/mie.1", "share/man/man1/mie-run.1", "share/man/man1/mie-cc.1"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // mie-run(1) explains the flags and every MIE_OPTIONS key; man renders it where installed.
    let roff = std::fs::read_to_string(dir.join("share/man/man1/mie-run.1")).unwrap();
    assert!(roff.starts_with(".ie") || roff.contains(".TH mie-run 1"), "{roff}");
    assert!(roff.contains("stats") && roff.contains("sample_rate") && roff.contains("log_path"), "{roff}");
    if Command::new("man").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let o = Command::new("man").arg("-l").arg(dir.join("share/man/man1/mie-run.1")).env("MANPAGER", "cat").env("MANWIDTH", "100").output().unwrap();
        let page = text(&o);
        assert!(page.contains("--stats") && page.contains("sample_rate") && page.contains("mie run"), "{page}");
    }
    let pc = std::fs::read_to_string(dir.join("lib/pkgconfig/mie.pc")).unwrap();
    assert!(pc.contains(&format!("prefix={}\n", dir.display())) && pc.contains("-lmie"), "{pc}");
    // `pkg-config --cflags --libs mie` works with gcc; mie-types adds clang's type ids.
    if Command::new("pkg-config").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let pkg = |what: &str| {
            let o = Command::new("pkg-config").args(["--cflags", "--libs", what]).env("PKG_CONFIG_PATH", dir.join("lib/pkgconfig")).output().unwrap();
            assert!(o.status.success(), "{}", text(&o));
            String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect::<Vec<_>>()
        };
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/deploy/setid.c");
        for (compiler, what) in [("gcc", "mie"), ("clang-22", "mie-types")] {
            let exe = dir.join(format!("linked-{what}"));
            let o = Command::new(compiler).arg("-o").arg(&exe).arg(&src).args(pkg(what)).output().unwrap();
            assert!(o.status.success(), "{compiler} with pkg-config {what}: {}", text(&o));
            let o = Command::new(&exe).output().unwrap();
            assert!(text(&o).contains("under mie: yes"), "{}", text(&o));
        }
        assert!(pkg("mie-types").iter().any(|f| f == "-fsanitize=alloc-token"));
    }
    // A program linked with the .pc's flags loads the installed library by itself.
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/deploy/setid.c");
    let exe = dir.join("linked");
    let libdir = dir.join("lib");
    let st = Command::new("cc").arg("-o").arg(&exe).arg(&src).arg(format!("-L{}", libdir.display())).arg(format!("-Wl,-rpath,{}", libdir.display())).arg("-lmie").status().unwrap();
    assert!(st.success());
    let o = Command::new(&exe).output().unwrap();
    assert!(text(&o).contains("under mie: yes"), "{}", text(&o));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn system_install_in_a_throwaway_root() {
    if !root() {
        return;
    }
    let dir = tmp("system");
    let prog = setid_program(&dir);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/deploy/system.sh");
    let o = Command::new("unshare").args(["-m", "--propagation", "private", "sh"]).arg(&script).arg(env!("CARGO_BIN_EXE_mie")).arg(&prog).arg(&dir).output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for want in ["preload: /opt/mie-test/mie/lib/libmie.so", "sh: yes", "ls: 1", "python3: True", "uid 65534 under mie: yes", "after uninstall: none", "sh after: no"] {
        assert!(t.contains(want), "{want:?} missing\n{t}");
    }
    // The host never saw it.
    assert!(!std::fs::read_to_string("/etc/ld.so.preload").unwrap_or_default().contains("mie-test"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `mie service`: the name is checked (nothing is written outside the drop-in folder), the
/// options are checked as libmie checks them, sandboxing that hides libmie is warned about,
/// and `--remove` takes the drop-in out again.
#[test]
fn service_checks_its_name_and_options_and_removes_its_drop_in() {
    let root = tmp("service");
    let o = mie().args(["service", "../../evil", "--install", "--root"]).arg(&root).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is not a systemd service name"), "{}", text(&o));
    assert!(!root.join("evil.service.d").exists() && !root.join("etc").exists());
    let o = mie().args(["service", "web", "--options", "buckets=9:stats=maybe"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("'buckets=9' (accepted: 1 to 7)") && text(&o).contains("'stats=maybe'"), "{}", text(&o));
    // A unit that keeps /tmp private, with libmie under /tmp: warned about.
    let units = root.join("lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(units.join("web.service"), "[Service]\nExecStart=/usr/bin/web\nPrivateTmp=yes\n").unwrap();
    let lib = PathBuf::from(env!("CARGO_BIN_EXE_mie")).parent().unwrap().join("libmie.so");
    let in_tmp = std::env::temp_dir().join(format!("mie-svc-{}", std::process::id()));
    std::fs::create_dir_all(&in_tmp).unwrap();
    std::fs::copy(&lib, in_tmp.join("libmie.so")).unwrap();
    let o = mie().args(["service", "web", "--install", "--options", "stats=1", "--root"]).arg(&root).env("MIE_LIB", in_tmp.join("libmie.so")).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("web.service has PrivateTmp=yes"), "{}", text(&o));
    let dropin = root.join("etc/systemd/system/web.service.d/mie.conf");
    let body = std::fs::read_to_string(&dropin).unwrap();
    assert!(body.starts_with("# /etc/systemd/system/web.service.d/mie.conf") && body.contains("Environment=MIE_OPTIONS=stats=1\n"), "{body}");
    let o = mie().args(["service", "web", "--remove", "--root"]).arg(&root).output().unwrap();
    assert!(o.status.success() && !dropin.exists() && !dropin.parent().unwrap().exists(), "{}", text(&o));
    let o = mie().args(["service", "web", "--remove", "--root"]).arg(&root).output().unwrap();
    assert!(!o.status.success() && text(&o).contains("has no mie drop-in"), "{}", text(&o));
    std::fs::remove_dir_all(&root).ok();
    std::fs::remove_dir_all(&in_tmp).ok();
}
