//! `mie cc` / `mie c++`: the system's clang 22 with compiler type ids for mie
//! (`-fsanitize=alloc-token`, LLVM AllocToken), low-cost hardening, and libmie linked in, so
//! `CC="mie cc" CXX="mie c++"` is all a make, CMake or autotools build needs. Every argument
//! not meant for mie is passed through unchanged.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Switches `mie cc` takes for itself (not passed to the compiler).
pub const NO_TYPES: &str = "--mie-no-types";
pub const NO_HARDENING: &str = "--mie-no-hardening";
pub const DRY_RUN: &str = "--mie-print";

/// The fast ABI is exported for ids below this (`crates/mie-malloc/src/fast_abi.rs`).
pub const FAST_ABI_IDS: u64 = 64;

/// The token clang gives an allocation whose type it cannot see (`-mllvm
/// -alloc-token-fallback`): libmie buckets it by call site, as an untyped allocation, over
/// the pointer buckets. Clang's own default is 0, a pointer-free id, which would put a
/// `struct` full of pointers allocated through `xmalloc` beside `char` buffers. With the
/// fast ABI it is the id just past the largest id space (libmie exports id 64's functions
/// for it); otherwise one no real token reaches (ids stay below the id space, at most 2^64-1).
pub fn unknown_type_token(fast_abi: bool) -> u64 {
    if fast_abi {
        FAST_ABI_IDS
    } else {
        u64::MAX
    }
}

/// The hardening flags, each with what it catches (the README's table).
pub fn hardening(cxx: bool, arch: &str, optimized: bool) -> Vec<&'static str> {
    let mut f = vec!["-fstack-protector-strong", "-fstack-clash-protection", "-ftrivial-auto-var-init=zero", "-fsanitize=bounds", "-fsanitize-trap=bounds"];
    if optimized {
        // glibc's checked __*_chk calls; they need an optimized build.
        f.push("-D_FORTIFY_SOURCE=3");
    }
    if cxx {
        f.push("-D_GLIBCXX_ASSERTIONS");
    }
    match arch {
        "x86_64" => f.push("-fcf-protection=full"),
        "aarch64" => f.push("-mbranch-protection=standard"),
        _ => {}
    }
    f
}

/// What a compiler invocation does, from its arguments.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    /// It links (no -c, -S, -E, -M, -fsyntax-only).
    pub links: bool,
    /// -O1 and above (or -Os, -Oz, -Og, -Ofast).
    pub optimized: bool,
    /// The program's -falloc-token-max (0: none given).
    pub token_max: u64,
    pub fast_abi: bool,
    /// The program sets _FORTIFY_SOURCE itself.
    pub own_fortify: bool,
    /// It compiles something (a source file or `-x`), not only links objects.
    pub compiles: bool,
}

/// Options whose value is the next argument (so that value is not an input file).
const TAKES_VALUE: [&str; 16] =
    ["-o", "-MF", "-MT", "-MQ", "-I", "-L", "-D", "-U", "-include", "-isystem", "-iquote", "-idirafter", "-Xlinker", "-Xclang", "-mllvm", "-target"];

/// Input files clang compiles (the rest it passes to the linker).
fn is_source(arg: &str) -> bool {
    let ext = arg.rsplit_once('.').map_or("", |(_, e)| e);
    matches!(ext, "c" | "cc" | "cp" | "cpp" | "cxx" | "c++" | "C" | "CPP" | "i" | "ii" | "m" | "mm" | "s" | "S" | "sx")
}

pub fn classify(args: &[OsString]) -> Invocation {
    let mut inv = Invocation { links: true, ..Default::default() };
    let mut value_next = false;
    for a in args {
        let a = a.to_string_lossy();
        if std::mem::take(&mut value_next) {
            continue;
        }
        if TAKES_VALUE.contains(&a.as_ref()) {
            value_next = true;
            continue;
        }
        if a == "-" || a.starts_with("-x") || !a.starts_with('-') && is_source(&a) {
            inv.compiles = true;
        }
        match a.as_ref() {
            "-c" | "-S" | "-E" | "-M" | "-MM" | "-fsyntax-only" => inv.links = false,
            "-O0" => inv.optimized = false,
            "-fsanitize-alloc-token-fast-abi" => inv.fast_abi = true,
            s if s.starts_with("-O") => inv.optimized = true,
            s if s.starts_with("-falloc-token-max=") => inv.token_max = s["-falloc-token-max=".len()..].parse().unwrap_or(0),
            s if s.contains("_FORTIFY_SOURCE") => inv.own_fortify = true,
            _ => {}
        }
    }
    inv
}

/// Arguments `mie cc` cannot honour, with what to do instead (checked before clang runs).
pub fn unsupported(args: &[OsString]) -> Option<String> {
    for a in args {
        let a = a.to_string_lossy();
        if a == "-static" || a == "-static-pie" {
            return Some(format!(
                "{a}: mie is a shared library (libmie.so) that the program loads at start-up; a static program cannot load it. Link dynamically (leave out {a}), or build without mie"
            ));
        }
        if let Some(list) = a.strip_prefix("-fsanitize=") {
            for s in list.split(',') {
                if matches!(s, "address" | "kernel-address" | "hwaddress" | "memory" | "thread" | "memtag" | "memtag-heap") {
                    return Some(format!(
                        "-fsanitize={s} brings its own allocator and does not combine with mie's: build a {s} sanitizer build with plain clang-22 (no mie), and the mie build with mie cc"
                    ));
                }
            }
        }
    }
    None
}

/// Arguments that take the compiler's type ids away without stopping the build: said on
/// stderr, the build goes on. `-fno-builtin` and `-ffreestanding` turn off the compiler's
/// knowledge of `malloc` & co., and LLVM AllocToken finds allocation calls through it: every
/// block would be untyped (bucketed by call site) with nothing said.
pub fn caution(args: &[OsString]) -> Option<String> {
    if args.iter().any(|a| a == NO_TYPES) {
        return None;
    }
    let a = args.iter().map(|a| a.to_string_lossy()).find(|a| a == "-fno-builtin" || a == "-ffreestanding")?;
    Some(format!(
        "{a} turns off the compiler's type ids for malloc, calloc, realloc and operator new (LLVM AllocToken recognises them as builtins): blocks are bucketed by call site instead. To keep some calls real calls, name them: -fno-builtin-memcpy, -fno-builtin-strcpy, ..."
    ))
}

/// The full command: compiler, then mie's flags, then the caller's arguments, then (when
/// linking) libmie and, if the id space was given, the object that records it.
pub fn command(compiler: &Path, cxx: bool, args: &[OsString], lib: &Path, token_object: Option<&Path>) -> Result<Command, String> {
    let mut types = true;
    let mut harden = true;
    let mut pass: Vec<OsString> = Vec::new();
    for a in args {
        match a.to_str() {
            Some(NO_TYPES) => types = false,
            Some(NO_HARDENING) => harden = false,
            Some(DRY_RUN) => {}
            _ => pass.push(a.clone()),
        }
    }
    let inv = classify(&pass);
    if inv.fast_abi && (inv.token_max == 0 || inv.token_max > FAST_ABI_IDS) {
        return Err(format!(
            "the fast AllocToken ABI needs -falloc-token-max=N with N <= {FAST_ABI_IDS} (libmie exports its entry points for ids below {FAST_ABI_IDS})"
        ));
    }
    let mut c = Command::new(compiler);
    if types {
        c.arg("-fsanitize=alloc-token");
        if inv.compiles {
            c.arg("-mllvm").arg(format!("-alloc-token-fallback={}", unknown_type_token(inv.fast_abi)));
        }
    }
    if harden {
        let mut flags = hardening(cxx, std::env::consts::ARCH, inv.optimized);
        if inv.own_fortify {
            flags.retain(|f| !f.contains("_FORTIFY_SOURCE"));
        }
        c.args(flags);
    }
    c.args(&pass);
    if inv.links {
        let dir = lib.parent().unwrap_or(Path::new("."));
        c.arg(format!("-L{}", dir.display())).arg(format!("-Wl,-rpath,{}", dir.display())).arg("-lmie");
        if let Some(obj) = token_object {
            c.arg(obj).arg("-Wl,--export-dynamic-symbol=__mie_alloc_token_max");
        }
    }
    Ok(c)
}

/// The compiler: $MIE_CLANG / $MIE_CLANGXX, else clang-22 / clang++-22 on the PATH.
pub fn find_compiler(cxx: bool) -> Result<PathBuf, String> {
    let (var, name) = if cxx { ("MIE_CLANGXX", "clang++-22") } else { ("MIE_CLANG", "clang-22") };
    if let Some(p) = std::env::var_os(var) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{name} not found: mie {} needs clang 22 (apt-get install clang-22), or set {var}", if cxx { "c++" } else { "cc" }))
}

/// An object file that records the program's -falloc-token-max as an exported constant
/// libmie reads at start-up (so `alloc_token_max` never has to be set by hand); made once
/// per value, in a cache directory.
pub fn token_object(compiler: &Path, max: u64) -> Result<PathBuf, String> {
    let dir = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("mie");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let obj = dir.join(format!("alloc-token-max-{max}.c.o"));
    if obj.is_file() {
        return Ok(obj);
    }
    let src = dir.join(format!("alloc-token-max-{max}.{}.c", std::process::id()));
    std::fs::write(
        &src,
        format!("/* made by mie cc: the -falloc-token-max this program was built with */\n__attribute__((visibility(\"default\"), used)) const unsigned long __mie_alloc_token_max = {max}UL;\n"),
    )
    .map_err(|e| e.to_string())?;
    let tmp = dir.join(format!("alloc-token-max-{max}.{}.o", std::process::id()));
    // As C (clang++ would give a namespace-scope const internal linkage and a mangled name).
    let out = Command::new(compiler).args([OsStr::new("-x"), OsStr::new("c"), OsStr::new("-c"), OsStr::new("-fPIC"), src.as_os_str(), OsStr::new("-o"), tmp.as_os_str()]).output();
    let _ = std::fs::remove_file(&src);
    match out {
        Ok(o) if o.status.success() => {
            std::fs::rename(&tmp, &obj).map_err(|e| e.to_string())?;
            Ok(obj)
        }
        Ok(o) => Err(format!("cannot compile the alloc-token-max object: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => Err(format!("cannot run {}: {e}", compiler.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn args_of(c: &Command) -> Vec<String> {
        c.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn compile_only_gets_types_and_hardening_but_no_libraries() {
        let c = command(Path::new("clang-22"), false, &os(&["-O2", "-c", "x.c", "-o", "x.o"]), Path::new("/l/libmie.so"), None).unwrap();
        let a = args_of(&c);
        assert_eq!(a[0], "-fsanitize=alloc-token");
        assert!(a.contains(&"-D_FORTIFY_SOURCE=3".to_string()) && a.contains(&"-fstack-protector-strong".to_string()));
        assert!(!a.iter().any(|x| x == "-lmie"));
        assert!(a.ends_with(&os(&["-O2", "-c", "x.c", "-o", "x.o"]).iter().map(|s| s.to_string_lossy().into_owned()).collect::<Vec<_>>()));
    }

    #[test]
    fn linking_adds_libmie_with_its_rpath_and_the_token_object() {
        let c = command(Path::new("clang-22"), true, &os(&["x.o", "-falloc-token-max=16", "-o", "x"]), Path::new("/l/libmie.so"), Some(Path::new("/c/t.o"))).unwrap();
        let a = args_of(&c);
        assert!(a.contains(&"-D_GLIBCXX_ASSERTIONS".to_string()));
        assert!(!a.iter().any(|x| x.contains("FORTIFY")), "unoptimized: no fortify");
        let tail: Vec<&str> = a.iter().rev().take(5).map(|s| s.as_str()).collect();
        assert_eq!(tail, ["-Wl,--export-dynamic-symbol=__mie_alloc_token_max", "/c/t.o", "-lmie", "-Wl,-rpath,/l", "-L/l"]);
    }

    #[test]
    fn switches_and_checks() {
        let c = command(Path::new("cc"), false, &os(&[NO_TYPES, NO_HARDENING, "-c", "x.c"]), Path::new("/l/libmie.so"), None).unwrap();
        assert_eq!(args_of(&c), ["-c", "x.c"]);
        let own = command(Path::new("cc"), false, &os(&["-O2", "-D_FORTIFY_SOURCE=2", "-c", "x.c"]), Path::new("/l/libmie.so"), None).unwrap();
        assert_eq!(args_of(&own).iter().filter(|a| a.contains("FORTIFY")).count(), 1);
        assert!(command(Path::new("cc"), false, &os(&["-fsanitize-alloc-token-fast-abi", "-c", "x.c"]), Path::new("/l/libmie.so"), None).is_err());
        assert!(command(Path::new("cc"), false, &os(&["-fsanitize-alloc-token-fast-abi", "-falloc-token-max=128", "x.c"]), Path::new("/l/libmie.so"), None).is_err());
        assert!(command(Path::new("cc"), false, &os(&["-fsanitize-alloc-token-fast-abi", "-falloc-token-max=64", "x.c"]), Path::new("/l/libmie.so"), None).is_ok());
        assert_eq!(classify(&os(&["-O2", "-O0", "-E"])), Invocation { links: false, optimized: false, ..Default::default() });
    }

    #[test]
    fn static_links_and_sanitizers_with_their_own_allocator_are_refused_with_the_reason() {
        assert!(unsupported(&os(&["-O2", "x.c", "-static"])).is_some_and(|m| m.contains("shared library")));
        assert!(unsupported(&os(&["-fsanitize=undefined,address", "x.c"])).is_some_and(|m| m.contains("-fsanitize=address")));
        assert!(unsupported(&os(&["-fsanitize=thread", "-c", "x.c"])).is_some());
        assert_eq!(unsupported(&os(&["-fsanitize=undefined", "-fsanitize=bounds", "x.c"])), None);
        assert!(caution(&os(&["-O1", "-fno-builtin", "x.c"])).is_some_and(|m| m.contains("-fno-builtin turns off")));
        assert!(caution(&os(&["-ffreestanding", "x.c"])).is_some());
        assert_eq!(caution(&os(&["-O1", "-fno-builtin-memcpy", "x.c"])), None);
        assert_eq!(caution(&os(&["-fno-builtin", NO_TYPES, "x.c"])), None);
    }

    #[test]
    fn a_type_the_compiler_cannot_see_gets_the_unknown_type_token_where_code_is_compiled() {
        let fallback = |v: &[&str]| {
            let c = command(Path::new("cc"), false, &os(v), Path::new("/l/libmie.so"), None).unwrap();
            let a = args_of(&c);
            a.iter().position(|x| x == "-mllvm").map(|i| a[i + 1].clone())
        };
        assert_eq!(fallback(&["-c", "x.c"]).as_deref(), Some("-alloc-token-fallback=18446744073709551615"));
        assert_eq!(fallback(&["-O2", "lib.cpp", "-shared", "-o", "libx.so"]).as_deref(), Some("-alloc-token-fallback=18446744073709551615"));
        assert_eq!(
            fallback(&["-fsanitize-alloc-token-fast-abi", "-falloc-token-max=16", "-c", "x.c"]).as_deref(),
            Some("-alloc-token-fallback=64")
        );
        // Only objects: nothing is compiled (clang would warn that the flag went unused).
        assert_eq!(fallback(&["x.o", "y.o", "-o", "prog.c"]), None);
        assert!(fallback(&["-x", "c", "-"]).is_some());
        assert_eq!(fallback(&[NO_TYPES, "-c", "x.c"]), None);
    }
}
