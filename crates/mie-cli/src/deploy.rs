//! Deploying mie past `LD_PRELOAD`: a binary that loads libmie itself (`mie enable`, a
//! `DT_NEEDED` entry added with Debian's `patchelf`, which also covers set-uid programs,
//! where the loader ignores `LD_PRELOAD`), a systemd service (`mie service`), an install
//! tree (`mie install --prefix`) with a pkg-config file.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn patchelf() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("patchelf")).find(|p| p.is_file()).ok_or_else(|| "patchelf not found (apt-get install patchelf)".to_string())
}

/// The program's DT_NEEDED entries.
pub fn needed(program: &Path) -> Result<Vec<String>, String> {
    let o = Command::new(patchelf()?).arg("--print-needed").arg(program).output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("{}: not a dynamically linked program ({})", program.display(), String::from_utf8_lossy(&o.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
}

/// Whether a set-id program may load `lib`: the file and every directory above it belong to
/// root and nobody else can write them (else anyone who can replace the library runs code
/// with the program's privileges).
pub fn safe_for_set_id(lib: &Path) -> Result<(), String> {
    let mut p = Some(lib);
    while let Some(cur) = p {
        let m = std::fs::metadata(cur).map_err(|e| format!("{}: {e}", cur.display()))?;
        if m.uid() != 0 || m.mode() & 0o022 != 0 {
            return Err(format!(
                "{} is not root-owned and closed to writes by others: a set-uid or set-gid program must not load a library others can replace (put libmie.so where only root can write, e.g. with `mie install --prefix /usr/local`)",
                cur.display()
            ));
        }
        p = cur.parent().filter(|q| !q.as_os_str().is_empty());
    }
    Ok(())
}

fn is_set_id(program: &Path) -> bool {
    std::fs::metadata(program).is_ok_and(|m| m.permissions().mode() & 0o6000 != 0)
}

/// `mie enable PROGRAM`: the program loads libmie itself from now on.
pub fn enable(program: &Path, lib: &Path) -> Result<String, String> {
    let lib = lib.canonicalize().map_err(|e| format!("{}: {e}", lib.display()))?;
    let have = needed(program)?;
    if have.iter().any(|n| n.contains("libmie")) {
        return Ok(format!("{} already loads {}", program.display(), have.iter().find(|n| n.contains("libmie")).unwrap()));
    }
    if is_set_id(program) {
        safe_for_set_id(&lib)?;
    }
    // patchelf rewrites the file; a set-uid bit survives (it edits in place).
    let o = Command::new(patchelf()?).arg("--add-needed").arg(&lib).arg(program).output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("patchelf failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
    }
    Ok(format!("{} now loads {} (mie disable undoes it)", program.display(), lib.display()))
}

/// `mie disable PROGRAM`: remove what `mie enable` added.
pub fn disable(program: &Path) -> Result<String, String> {
    let mine: Vec<String> = needed(program)?.into_iter().filter(|n| n.contains("libmie")).collect();
    if mine.is_empty() {
        return Ok(format!("{} does not load libmie", program.display()));
    }
    for n in &mine {
        let o = Command::new(patchelf()?).arg("--remove-needed").arg(n).arg(program).output().map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("patchelf failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
        }
    }
    Ok(format!("{} no longer loads {}", program.display(), mine.join(", ")))
}

/// The systemd drop-in that runs service `name` under mie.
pub fn service_dropin(lib: &Path, options: Option<&str>) -> String {
    let mut s = format!(
        "# /etc/systemd/system/<service>.service.d/mie.conf, written by `mie service`\n\
         # Runs the service with libmie preloaded; reports go to the journal (or to log_path).\n\
         [Service]\n\
         Environment=LD_PRELOAD={}\n",
        lib.display()
    );
    if let Some(o) = options {
        s.push_str(&format!("Environment=MIE_OPTIONS={o}\n"));
    }
    s
}

/// The drop-in's path for service `name` under `root` ("/" on a real system).
pub fn service_path(root: &Path, name: &str) -> PathBuf {
    let unit = if name.contains('.') { name.to_string() } else { format!("{name}.service") };
    root.join("etc/systemd/system").join(format!("{unit}.d")).join("mie.conf")
}

/// `mie install --prefix DIR`: libmie.so in DIR/lib, mie in DIR/bin, mie.pc in
/// DIR/lib/pkgconfig. Returns the files written.
pub fn install(prefix: &Path, lib: &Path, exe: &Path) -> Result<Vec<PathBuf>, String> {
    let libdir = prefix.join("lib");
    let bindir = prefix.join("bin");
    let pcdir = libdir.join("pkgconfig");
    for d in [&libdir, &bindir, &pcdir] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let copy = |from: &Path, to: PathBuf, mode: u32| -> Result<PathBuf, String> {
        // Through a temporary name: a running program keeps its old file.
        let tmp = to.with_extension("mie-new");
        std::fs::copy(from, &tmp).map_err(|e| format!("{} -> {}: {e}", from.display(), tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &to).map_err(|e| e.to_string())?;
        Ok(to)
    };
    let mut written = vec![copy(lib, libdir.join("libmie.so"), 0o755)?, copy(exe, bindir.join("mie"), 0o755)?];
    for (name, text) in [("mie.pc", pkg_config(prefix)), ("mie-types.pc", pkg_config_types(prefix))] {
        let pc = pcdir.join(name);
        std::fs::write(&pc, text).map_err(|e| format!("{}: {e}", pc.display()))?;
        written.push(pc);
    }
    Ok(written)
}

/// `mie install --system`: every program on the system (set-uid ones included) loads
/// libmie, through `<root>/etc/ld.so.preload`; first a program must run under the library.
pub fn install_system(root: &Path, lib: &Path) -> Result<String, String> {
    safe_for_set_id(lib)?;
    let o = Command::new("/bin/true").env("LD_PRELOAD", lib).output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("/bin/true does not run under {}: {}", lib.display(), String::from_utf8_lossy(&o.stderr).trim()));
    }
    let preload = root.join("etc/ld.so.preload");
    let old = std::fs::read_to_string(&preload).unwrap_or_default();
    let line = lib.display().to_string();
    if old.lines().any(|l| l.trim() == line) {
        return Ok(format!("{} already lists {line}", preload.display()));
    }
    let mut new = old.clone();
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&line);
    new.push('\n');
    write_atomically(&preload, &new)?;
    Ok(format!("{} now lists {line}: every program started from now on runs under mie (mie uninstall --system undoes it)", preload.display()))
}

/// `mie uninstall --system`: take libmie out of `<root>/etc/ld.so.preload`.
pub fn uninstall_system(root: &Path) -> Result<String, String> {
    let preload = root.join("etc/ld.so.preload");
    let Ok(old) = std::fs::read_to_string(&preload) else { return Ok(format!("{} does not exist", preload.display())) };
    let kept: Vec<&str> = old.lines().filter(|l| !l.contains("libmie")).collect();
    if kept.len() == old.lines().count() {
        return Ok(format!("{} does not list libmie", preload.display()));
    }
    if kept.is_empty() {
        std::fs::remove_file(&preload).map_err(|e| format!("{}: {e}", preload.display()))?;
    } else {
        write_atomically(&preload, &(kept.join("\n") + "\n"))?;
    }
    Ok(format!("{} no longer lists libmie", preload.display()))
}

fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("mie-new");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// mie.pc: what any compiler accepts (gcc too): link libmie with its rpath. The program
/// then runs under mie; its type ids come from `mie-types.pc`.
pub fn pkg_config(prefix: &Path) -> String {
    format!(
        "prefix={}\n\
         libdir=${{prefix}}/lib\n\
         \n\
         Name: mie\n\
         Description: Memory Integrity Enforcement: a type-isolating secure allocator (links libmie; mie-types adds clang 22's type ids)\n\
         Version: {}\n\
         Cflags:\n\
         Libs: -L${{libdir}} -Wl,-rpath,${{libdir}} -lmie\n",
        prefix.display(),
        env!("CARGO_PKG_VERSION")
    )
}

/// mie-types.pc: the compiler type ids (LLVM AllocToken), for clang 22 only: `pkg-config
/// --cflags --libs mie-types`. Calls whose type clang cannot see get the token libmie
/// buckets as untyped (`mie cc` passes the same flags).
pub fn pkg_config_types(prefix: &Path) -> String {
    format!(
        "prefix={}\n\
         \n\
         Name: mie-types\n\
         Description: mie with compiler type ids (clang 22 -fsanitize=alloc-token; not for gcc)\n\
         Version: {}\n\
         Requires: mie\n\
         Cflags: -fsanitize=alloc-token -mllvm -alloc-token-fallback={}\n",
        prefix.display(),
        env!("CARGO_PKG_VERSION"),
        u64::MAX
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_dropin_and_path() {
        let d = service_dropin(Path::new("/usr/local/lib/libmie.so"), Some("stats=1"));
        assert!(d.contains("[Service]\nEnvironment=LD_PRELOAD=/usr/local/lib/libmie.so\nEnvironment=MIE_OPTIONS=stats=1\n"));
        assert_eq!(service_path(Path::new("/"), "nginx"), PathBuf::from("/etc/systemd/system/nginx.service.d/mie.conf"));
        assert_eq!(service_path(Path::new("/r"), "a.socket"), PathBuf::from("/r/etc/systemd/system/a.socket.d/mie.conf"));
    }

    #[test]
    fn pkg_config_points_at_the_prefix() {
        let pc = pkg_config(Path::new("/opt/mie"));
        assert!(pc.starts_with("prefix=/opt/mie\n") && pc.contains("Libs: -L${libdir} -Wl,-rpath,${libdir} -lmie\n"));
        assert!(!pc.contains("-fsanitize"), "gcc rejects -fsanitize=alloc-token: {pc}");
        let types = pkg_config_types(Path::new("/opt/mie"));
        assert!(types.contains("Requires: mie\n") && types.contains("Cflags: -fsanitize=alloc-token -mllvm -alloc-token-fallback=18446744073709551615\n"));
    }
}
