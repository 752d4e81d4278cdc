fn main() {
    println!("cargo:rerun-if-changed=shim/new.c");
    cc::Build::new()
        .file("shim/new.c")
        // Unwind tables so a std::bad_alloc (or a new-handler's exception) can pass through.
        .flag("-fexceptions")
        .flag("-funwind-tables")
        .warnings(true)
        .compile("mie_cxx_shim");

    // The unwinder (stack walks for reports; Rust's standard library names it too) linked
    // in from libgcc_eh.a instead of loading libgcc_s.so.1 in every process: the shared one
    // costs each program start an object to load and relocate, and a constructor that runs
    // CPUID (each one a trap to the hypervisor in a VM): 50-80 us per exec measured in a VM.
    // `-lgcc_s` on the link line finds this linker script first.
    let dir = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("static-unwind");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n").unwrap();
    println!("cargo:rustc-link-search=native={}", dir.display());

    // Big zero-initialised tables (`#[link_section = ".bss.mie_big"]`) after every other
    // static, so the small ones that start-up writes share a few pages (see big-bss.ld).
    let ld = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("link/big-bss.ld");
    println!("cargo:rerun-if-changed={}", ld.display());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{}", ld.display());

    // The code every process runs (start-up, exit, malloc and free) together, before the
    // rest: fewer of the library's pages touched and resident per process (see hot-text.ld).
    let hot = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("link/hot-text.ld");
    println!("cargo:rerun-if-changed={}", hot.display());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{}", hot.display());
}
