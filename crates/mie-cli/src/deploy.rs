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
        let why = if m.uid() != 0 {
            Some(format!("is owned by uid {}, not root", m.uid()))
        } else if m.mode() & 0o022 != 0 {
            let who = if m.mode() & 0o002 != 0 { "anyone" } else { "its group" };
            Some(format!("can be written by {who} (mode {:04o})", m.mode() & 0o7777))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(format!(
                "{} {why}: a set-uid or set-gid program must not load a library that someone else could replace or rename (put libmie.so where only root can write, e.g. with `mie install --prefix /usr/local`, and pass --lib)",
                cur.display()
            ));
        }
        p = cur.parent().filter(|q| !q.as_os_str().is_empty());
    }
    Ok(())
}

/// Where `mie enable` keeps the program as it was, for `mie disable` to give back byte for
/// byte: a hidden file beside it, and the fingerprint of the file `mie enable` made.
fn backup_paths(program: &Path) -> (PathBuf, PathBuf) {
    let dir = program.parent().unwrap_or(Path::new("."));
    let name = program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    (dir.join(format!(".{name}.before-mie")), dir.join(format!(".{name}.before-mie.sum")))
}

/// FNV-1a of a file's bytes (tells whether the program changed since `mie enable`).
fn fingerprint(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    Ok(format!("{h:016x} {}\n", bytes.len()))
}

/// The program must exist and be a file before patchelf is asked about it.
fn existing_file(program: &Path) -> Result<(), String> {
    match std::fs::metadata(program) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(format!("{}: not a regular file", program.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!("{}: no such file", program.display())),
        Err(e) => Err(format!("{}: {e}", program.display())),
    }
}

fn is_set_id(program: &Path) -> bool {
    std::fs::metadata(program).is_ok_and(|m| m.permissions().mode() & 0o6000 != 0)
}

/// `mie enable PROGRAM`: the program loads libmie itself from now on.
pub fn enable(program: &Path, lib: &Path) -> Result<String, String> {
    existing_file(program)?;
    let lib = lib.canonicalize().map_err(|e| format!("{}: {e}", lib.display()))?;
    let have = needed(program)?;
    if have.iter().any(|n| n.contains("libmie")) {
        return Ok(format!("{} already loads {}", program.display(), have.iter().find(|n| n.contains("libmie")).unwrap()));
    }
    if is_set_id(program) {
        safe_for_set_id(&lib)?;
    }
    // The program as it is, for `mie disable` (copied with its mode, set-uid bit included).
    let (backup, sum) = backup_paths(program);
    std::fs::copy(program, &backup).map_err(|e| format!("cannot keep a copy of {} at {}: {e}", program.display(), backup.display()))?;
    // patchelf rewrites the file; a set-uid bit survives (it edits in place).
    let o = Command::new(patchelf()?).arg("--add-needed").arg(&lib).arg(program).output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        let _ = std::fs::remove_file(&backup);
        return Err(format!("patchelf failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
    }
    std::fs::write(&sum, fingerprint(program)?).map_err(|e| format!("{}: {e}", sum.display()))?;
    Ok(format!("{} now loads {} (mie disable undoes it; the original is kept as {})", program.display(), lib.display(), backup.display()))
}

/// `mie disable PROGRAM`: remove what `mie enable` added.
pub fn disable(program: &Path) -> Result<String, String> {
    existing_file(program)?;
    let mine: Vec<String> = needed(program)?.into_iter().filter(|n| n.contains("libmie")).collect();
    if mine.is_empty() {
        return Ok(format!("{} does not load libmie", program.display()));
    }
    // Unchanged since `mie enable`: put the original bytes back, with the owner and mode the
    // file has now (through a new name in the same directory, so a running copy keeps its
    // file).
    let (backup, sum) = backup_paths(program);
    if backup.is_file() && std::fs::read_to_string(&sum).ok() == fingerprint(program).ok() {
        let meta = std::fs::metadata(program).map_err(|e| e.to_string())?;
        let tmp = backup.with_extension("restoring");
        std::fs::copy(&backup, &tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid())).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::set_permissions(&tmp, meta.permissions()).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, program).map_err(|e| format!("{}: {e}", program.display()))?;
        let _ = std::fs::remove_file(&backup);
        let _ = std::fs::remove_file(&sum);
        return Ok(format!("{} no longer loads {}: restored as it was before mie enable", program.display(), mine.join(", ")));
    }
    let changed = if backup.is_file() { " (it changed since mie enable, so the copy kept then is not put back)" } else { "" };
    for n in &mine {
        let o = Command::new(patchelf()?).arg("--remove-needed").arg(n).arg(program).output().map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("patchelf failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
        }
    }
    Ok(format!("{} no longer loads {}{changed}", program.display(), mine.join(", ")))
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
