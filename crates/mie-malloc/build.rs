fn main() {
    println!("cargo:rerun-if-changed=shim/new.c");
    cc::Build::new()
        .file("shim/new.c")
        // Unwind tables so a std::bad_alloc (or a new-handler's exception) can pass through.
        .flag("-fexceptions")
        .flag("-funwind-tables")
        .warnings(true)
        .compile("mie_cxx_shim");
}
