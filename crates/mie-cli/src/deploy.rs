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

/// The unit a service name means: `NAME` is `NAME.service`; a template instance
/// (`getty@tty1`) too. Only service units run programs with an environment of their own;
/// anything that could leave the drop-in folder is refused.
pub fn service_unit(name: &str) -> Result<String, String> {
    let unit = if name.ends_with(".service") { name.to_string() } else { format!("{name}.service") };
    let stem = &unit[..unit.len() - ".service".len()];
    let ok_char = |c: char| c.is_ascii_alphanumeric() || ":_.@-\\".contains(c);
    if stem.is_empty() || unit.len() > 255 || !stem.chars().all(ok_char) || stem.starts_with('.') || stem.contains("..") {
        return Err(format!(
            "'{name}' is not a systemd service name (letters, digits and : _ . @ - \\ only, as `systemctl list-units --type=service` shows them)"
        ));
    }
    if let Some((_, ext)) = name.rsplit_once('.').filter(|(_, e)| !name.ends_with(".service") && ["socket", "timer", "target", "mount", "path", "slice", "scope", "device", "swap", "automount"].contains(e)) {
        return Err(format!("'{name}' is a .{ext} unit: only a .service runs the program, so name the service it starts"));
    }
    Ok(unit)
}

/// The systemd drop-in that runs service unit `unit` under mie.
pub fn service_dropin(unit: &str, lib: &Path, options: Option<&str>) -> String {
    let mut s = format!(
        "# /etc/systemd/system/{unit}.d/mie.conf, written by `mie service` (`mie service --remove` takes it out)\n\
         # Runs {unit} with libmie preloaded; reports go to the journal (or to log_path).\n\
         [Service]\n\
         Environment=LD_PRELOAD={}\n",
        lib.display()
    );
    if let Some(o) = options {
        s.push_str(&format!("Environment=MIE_OPTIONS={o}\n"));
    }
    s
}

/// The drop-in's path for unit `unit` under `root` ("/" on a real system).
pub fn service_path(root: &Path, unit: &str) -> PathBuf {
    root.join("etc/systemd/system").join(format!("{unit}.d")).join("mie.conf")
}

/// Settings in the unit (its file and drop-ins under `root`) that keep the service from
/// loading libmie at `lib`, or from writing its log: one warning each.
pub fn sandbox_warnings(root: &Path, unit: &str, lib: &Path, options: Option<&str>) -> Vec<String> {
    let mut text = String::new();
    for dir in ["etc/systemd/system", "run/systemd/system", "usr/local/lib/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"] {
        let d = root.join(dir);
        if let Ok(t) = std::fs::read_to_string(d.join(unit)) {
            text.push_str(&t);
            text.push('\n');
        }
        if let Ok(rd) = std::fs::read_dir(d.join(format!("{unit}.d"))) {
            for e in rd.flatten().filter(|e| e.file_name() != "mie.conf") {
                if let Ok(t) = std::fs::read_to_string(e.path()) {
                    text.push_str(&t);
                    text.push('\n');
                }
            }
        }
    }
    let settings: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let last = |key: &str| settings.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.to_ascii_lowercase());
    let yes = |v: Option<String>| v.is_some_and(|v| matches!(v.as_str(), "yes" | "true" | "on" | "1"));
    let under = |p: &str| lib.starts_with(p);
    let mut w = Vec::new();
    if yes(last("PrivateTmp")) && (under("/tmp") || under("/var/tmp")) {
        w.push(format!("{unit} has PrivateTmp=yes: it sees a /tmp of its own, without {}; install libmie elsewhere (mie install --prefix /usr/local) and pass --lib", lib.display()));
    }
    if let Some(v) = last("ProtectHome") {
        if matches!(v.as_str(), "yes" | "true" | "tmpfs") && (under("/home") || under("/root") || under("/run/user")) {
            w.push(format!("{unit} has ProtectHome={v}: {} is hidden from it; install libmie outside the home directories and pass --lib", lib.display()));
        }
    }
    for (k, v) in &settings {
        if k == "InaccessiblePaths" || k == "TemporaryFileSystem" {
            for p in v.split_whitespace().map(|p| p.trim_start_matches(['-', '+']).split(':').next().unwrap_or("")) {
                if !p.is_empty() && lib.starts_with(p) {
                    w.push(format!("{unit} has {k}={p}: {} is hidden from it; install libmie elsewhere and pass --lib", lib.display()));
                }
            }
        }
    }
    if let Some(log) = options.and_then(|o| o.split(':').filter_map(|i| i.strip_prefix("log_path=")).next_back()) {
        if matches!(last("ProtectSystem").as_deref(), Some("strict")) && !settings.iter().any(|(k, v)| k == "ReadWritePaths" && v.split_whitespace().any(|p| log.starts_with(p.trim_start_matches('-')))) {
            w.push(format!("{unit} has ProtectSystem=strict: log_path={log} is read-only for it (reports go to the journal); add its directory to ReadWritePaths="));
        }
    }
    w
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
    fn service_names_are_checked() {
        assert_eq!(service_unit("nginx").unwrap(), "nginx.service");
        assert_eq!(service_unit("getty@tty1.service").unwrap(), "getty@tty1.service");
        for bad in ["../../evil", "a/b", "", ".hidden", "x..y", "sp ace"] {
            assert!(service_unit(bad).is_err(), "{bad}");
        }
        assert!(service_unit("cups.socket").is_err_and(|e| e.contains(".socket unit")));
    }

    #[test]
    fn sandboxing_that_hides_the_library_is_warned_about() {
        let root = std::env::temp_dir().join(format!("mie-sandbox-{}", std::process::id()));
        let d = root.join("lib/systemd/system");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("web.service"), "[Service]\nExecStart=/usr/bin/web\nPrivateTmp=yes\nProtectHome=yes\nProtectSystem=strict\nInaccessiblePaths=-/opt/secret\n").unwrap();
        let w = |lib: &str, o: Option<&str>| sandbox_warnings(&root, "web.service", Path::new(lib), o);
        assert!(w("/usr/local/lib/libmie.so", None).is_empty());
        assert!(w("/tmp/x/libmie.so", None)[0].contains("PrivateTmp=yes"));
        assert!(w("/root/mie/libmie.so", None)[0].contains("ProtectHome=yes"));
        assert!(w("/opt/secret/libmie.so", None)[0].contains("InaccessiblePaths=/opt/secret"));
        assert!(w("/usr/lib/libmie.so", Some("log_path=/var/log/mie/r"))[0].contains("ReadWritePaths"));
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn service_dropin_and_path() {
        let d = service_dropin("nginx.service", Path::new("/usr/local/lib/libmie.so"), Some("stats=1"));
        assert!(d.starts_with("# /etc/systemd/system/nginx.service.d/mie.conf, written by `mie service`"), "{d}");
        assert!(d.contains("[Service]\nEnvironment=LD_PRELOAD=/usr/local/lib/libmie.so\nEnvironment=MIE_OPTIONS=stats=1\n"));
        assert_eq!(service_path(Path::new("/"), "nginx.service"), PathBuf::from("/etc/systemd/system/nginx.service.d/mie.conf"));
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
