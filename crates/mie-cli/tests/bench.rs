//! `mie bench` end to end on a small scale: workloads build, run under glibc and under
//! libmie.so, produce glibc's output, and yield samples, ratios and every output format; a
//! run whose output differs from glibc's is an error, never a result.
#![cfg(target_arch = "x86_64")] // the arm64 leg runs under qemu, where timing means nothing

use mie_cli::bench::{self, Allocator, Cell, Config, Program, Workload};
use std::path::PathBuf;
use std::time::Duration;

fn lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().parent().unwrap().join("libmie.so");
    assert!(lib.is_file(), "libmie.so not built at {}: run `bash scripts/test.sh`", lib.display());
    lib
}

fn config(name: &str, allocators: Vec<Allocator>) -> Config {
    Config {
        cc: "cc".into(),
        workdir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-{name}-{}", std::process::id())),
        scale: 1,
        runs: 2,
        timeout: Duration::from_secs(120),
        allocators,
    }
}

fn glibc() -> Allocator {
    Allocator { name: "glibc".into(), lib: None, env: vec![] }
}

#[test]
fn workloads_run_under_glibc_and_mie_with_the_same_output() {
    let mie = Allocator { name: "mie".into(), lib: Some(lib()), env: vec![] };
    let cfg = config("ok", vec![glibc(), mie]);
    let chosen: Vec<&'static Workload> =
        bench::WORKLOADS.iter().filter(|w| ["xmalloc", "realloc_growth", "large"].contains(&w.name)).collect();
    assert_eq!(chosen.len(), 3);
    let r = bench::run_bench(&cfg, &chosen, |_| {}).unwrap();
    for (w, wl) in r.workloads.iter().enumerate() {
        for a in 0..2 {
            let c = &r.cells[w][a];
            assert!(c.error.is_none(), "{} under {}: {:?}", wl.name, r.allocators[a].name, c.error);
            assert_eq!(c.samples.len(), 2);
            assert!(c.samples.iter().all(|s| s.secs > 0.0 && s.rss_kib > 0));
        }
        assert_eq!(r.ratio(w, 0, Cell::median_secs), Some(1.0));
        assert!(r.ratio(w, 1, Cell::median_rss).unwrap() > 0.0);
    }
    assert!(r.geomean_ratio(1, Cell::median_secs).is_some());
    let table = bench::table(&r, "x86_64");
    assert!(table.contains("geometric mean") && table.contains("large"), "{table}");
    assert_eq!(bench::csv(&r).lines().count(), 1 + 3 * 2 * 2);
    let v: serde_json::Value = serde_json::from_str(&bench::json(&r, "x86_64")).unwrap();
    assert!(v["geomean"]["mie"]["time"].as_f64().is_some_and(|t| t > 0.0), "{v}");
    assert!(v["workloads"][0]["results"]["mie"]["median_s"].as_f64().is_some(), "{v}");
    assert!(bench::svg(&r, "x86_64").contains("</svg>"));
    let _ = std::fs::remove_dir_all(&cfg.workdir);
}

static ECHO: Workload = Workload {
    name: "echo",
    what: "prints an environment variable",
    program: Program::Real { program: &["sh", "-c", "echo ok $ANSWER"], env: &[], stdin: "" },
};

#[test]
fn a_wrong_answer_is_an_error_not_a_sample() {
    let liar = Allocator { name: "liar".into(), lib: None, env: vec![("ANSWER".into(), "41".into())] };
    let honest = Allocator { name: "honest".into(), lib: None, env: vec![] };
    let cfg = config("wrong", vec![glibc(), honest, liar]);
    let r = bench::run_bench(&cfg, &[&ECHO], |_| {}).unwrap();
    assert!(r.cells[0][1].error.is_none(), "{:?}", r.cells[0][1].error);
    let e = r.cells[0][2].error.as_deref().unwrap_or("");
    assert!(e.contains("wrong output"), "{e}");
    assert!(r.cells[0][2].samples.is_empty());
    assert_eq!(r.incomplete(), vec!["echo"]);
    let _ = std::fs::remove_dir_all(&cfg.workdir);
}
