//! A program's own default options (`mie::default_options!`), and `MIE_OPTIONS` over them.

#[global_allocator]
static GLOBAL: mie::Mie = mie::Mie;

mie::default_options!("quarantine=7:stacks=1");

#[test]
fn the_programs_options_apply_and_the_environment_wins() {
    let want_quarantine = match std::env::var("MIE_OPTIONS").ok().as_deref() {
        Some("quarantine=9") => 9,
        Some(other) => panic!("unexpected MIE_OPTIONS {other}"),
        None => 7,
    };
    let o = mie::options();
    assert_eq!(o.quarantine, want_quarantine);
    assert!(o.stacks, "stacks=1 from the program");
    assert_eq!(o.buckets, mie::options::Options::DEFAULT.buckets);
    // Under qemu the test's own executable is the arm64 loader: the re-run is x86-64 only
    // (options::tests covers the order on both).
    if want_quarantine == 7 && cfg!(target_arch = "x86_64") {
        // Again, with the environment saying otherwise about one key.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "the_programs_options_apply_and_the_environment_wins", "--nocapture"])
            .env("MIE_OPTIONS", "quarantine=9")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}
