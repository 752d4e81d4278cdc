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
        assert!(t.contains("--options K=V") && t.contains("--stats"), "{t}");
        for (k, _) in mie::options::KEYS {
            assert!(t.contains(&format!("  {k} ")), "{flag}: option {k} missing\n{t}");
        }
    }
    let o = mie().arg("--version").output().unwrap();
    assert!(o.status.success() && text(&o).starts_with("mie "), "{}", text(&o));
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
    let o = mie().args(["run", "--no-such-flag", "true"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
