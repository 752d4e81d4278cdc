//! `MIE_OPTIONS="key=value:key=value"`, parsed once at start-up without allocating.
//!
//! Every option has a safe default. Unknown keys and malformed values are reported once (a
//! single warning line each) and ignored. In a privileged (`AT_SECURE`: set-uid/set-gid)
//! process an option is accepted only if it makes the allocator stricter, never weaker: there
//! is no environment "off switch" for an attacker to flip.

use core::fmt::Write;

use crate::report;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Number of pointer buckets per size class (the data bucket comes on top), 1..=7.
    pub buckets: u32,
    /// Slack canaries between the requested size and the end of the slot.
    pub canary: bool,
    /// Zero small slots when they are freed.
    pub zero_on_free: bool,
    /// On reuse, check a zeroed slot is still zero (catches writes after free).
    pub write_after_free_check: bool,
    /// Per-thread quarantine length in freed blocks (0 disables delayed reuse).
    pub quarantine: u32,
    /// Per-thread quarantine byte budget; the oldest entries leave first when it is exceeded.
    pub quarantine_bytes: usize,
    /// Number of freed large mappings kept inaccessible before they are unmapped.
    pub large_quarantine: u32,
    /// Byte budget of the large quarantine (address space, not memory: pages are dropped).
    pub large_quarantine_bytes: usize,
    /// Print statistics to stderr at exit: 1 = totals and the size classes with live
    /// blocks, 2 = every size class and bucket used.
    pub stats: u8,
    /// Report and abort (instead of returning NULL/ENOMEM) when calloc/reallocarray sizes overflow.
    pub overflow_abort: bool,
    /// LLVM AllocToken: number of token ids (0 = 2^64, clang's default); ids in the upper
    /// half belong to types that contain pointers.
    pub alloc_token_max: u64,
    /// Memory tagging (arm64 MTE, synchronous) when the CPU has it.
    pub mte: bool,
    /// Guarded sampling: about one small allocation in this many gets its own page with a
    /// guard page after it (0 = off).
    pub sample_rate: u32,
    /// Record the allocation and free stack of every block (bounded tables; slower) and
    /// print them in reports.
    pub stacks: bool,
    /// Range checks at the call in memcpy, strcpy, read and the other exported memory and
    /// string functions.
    pub checked_calls: bool,
    /// Releases that do not match their allocation (`new[]`/`delete`, `new`/`free`, ...)
    /// at the block's start and in a size it has: 0 = not reported, 1 = reported once per
    /// call site, the program goes on, 2 = fatal. Mismatches that name more memory than
    /// the block has are always fatal.
    pub alloc_dealloc_mismatch: u8,
    /// At exit, check the whole heap once (bounded in time): canaries of blocks never
    /// freed, zeros of free slots (`heap/diagnose/sweep.rs`).
    pub exit_check: bool,
    /// Source lines (file:line, inlined frames) in reports, from binutils' addr2line run as
    /// a child process (`platform/symbolizer.rs`).
    pub symbolize: bool,
    /// The debugging profile: allocation and free stacks, 16 frames of the bad call's stack,
    /// ten times more guarded samples (faults at the access for more blocks).
    pub debug: bool,
    /// Guard mode (`heap/guarded/guard.rs`): every block on pages of its own beside an unmapped page.
    pub guard: bool,
    /// Guard mode: the block's start (not its end) touches the guard page.
    pub guard_below: bool,
    /// Guard mode: the end exactly on the guard page (alignment given up), not rounded to 16.
    pub guard_align: bool,
}

/// Every option, with what it does (the warning for an unknown key and `mie run --help`
/// list them).
pub const KEYS: &[(&str, &str)] = &[
    ("buckets", "pointer buckets per size class, 1..7 (default 3)"),
    ("canary", "slack canaries checked at free (default 1)"),
    ("zero_on_free", "zero small blocks when freed (default 1)"),
    ("write_after_free_check", "check freed blocks are still zero when reused (default 1)"),
    ("quarantine", "freed blocks each thread delays before reuse (default 64)"),
    ("quarantine_bytes", "byte budget of that delay (default 1m)"),
    ("large_quarantine", "freed large blocks kept inaccessible (default 32)"),
    ("large_quarantine_bytes", "address space budget of those (default 256m)"),
    ("stats", "statistics at exit: 1 short, 2 every class (default 0)"),
    ("overflow_abort", "calloc/reallocarray size overflow aborts instead of NULL (default 0)"),
    ("alloc_token_max", "LLVM alloc-token id count, 0 = 2^64 (default 0)"),
    ("mte", "memory tagging on arm64 with MTE (default 1)"),
    ("sample_rate", "one small allocation in N gets a guard page, 0 = off (default 5000)"),
    ("stacks", "record allocation and free stacks for reports (default 0)"),
    ("checked_calls", "range checks in memcpy, strcpy, read and the like (default 1)"),
    ("alloc_dealloc_mismatch", "harmless mismatches: 0 silent, 1 report once, 2 fatal (default 1)"),
    ("exit_check", "at exit, check never-freed blocks' canaries and free slots (default 1)"),
    ("symbolize", "file:line in reports, by running addr2line (default 1)"),
    ("debug", "debugging profile: stacks=1, longer stacks, sample_rate=500 (default 0)"),
    ("guard", "guard mode: every block on its own pages, faults at the access (default 0)"),
    ("guard_below", "guard mode: guard the block's start instead of its end (default 0)"),
    ("guard_align", "guard mode: end exactly on the guard page, 1-byte alignment (default 0)"),
    ("log_path", "write reports, warnings and statistics to PATH.<pid>, not stderr"),
    ("help", "print this list"),
];

/// The known key closest to `key` (edit distance at most 3), for "did you mean".
pub fn nearest_key(key: &[u8]) -> Option<&'static str> {
    KEYS.iter().map(|&(k, _)| (edit_distance(key, k.as_bytes()), k)).filter(|&(d, _)| d <= 3).min_by_key(|&(d, _)| d).map(|(_, k)| k)
}

/// Levenshtein distance of two short byte strings (keys are under 32 bytes; longer input
/// is cut there), without allocating.
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    const N: usize = 32;
    let (a, b) = (&a[..a.len().min(N)], &b[..b.len().min(N)]);
    let mut prev = [0usize; N + 1];
    let mut cur = [0usize; N + 1];
    for (j, p) in prev.iter_mut().enumerate().take(b.len() + 1) {
        *p = j;
    }
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let sub = prev[j - 1] + (a[i - 1] != b[j - 1]) as usize;
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

pub const MAX_BUCKETS: u32 = 7;
pub const MAX_QUARANTINE: u32 = 1024;
pub const MAX_LARGE_QUARANTINE: u32 = 256;

impl Options {
    pub const DEFAULT: Options = Options {
        buckets: 3,
        canary: true,
        zero_on_free: true,
        write_after_free_check: true,
        quarantine: 64,
        quarantine_bytes: 1 << 20,
        large_quarantine: 32,
        large_quarantine_bytes: 256 << 20,
        stats: 0,
        overflow_abort: false,
        alloc_token_max: 0,
        mte: true,
        sample_rate: 5000,
        stacks: false,
        checked_calls: true,
        alloc_dealloc_mismatch: 1,
        exit_check: true,
        symbolize: true,
        debug: false,
        guard: false,
        guard_below: false,
        guard_align: false,
    };

    /// Parse an option string. `secure` applies the strengthen-only rule. `warn` receives
    /// (message, the item as written, what the key accepts) for every rejected item.
    pub fn parse(input: &[u8], secure: bool, warn: impl FnMut(&str, &[u8], &str)) -> Options {
        Options::parse_onto(Options::DEFAULT, input, secure, warn)
    }

    /// As `parse`, starting from `base` (the program's own defaults). The strengthen-only
    /// rule still compares with the built-in defaults.
    pub fn parse_onto(base: Options, input: &[u8], secure: bool, mut warn: impl FnMut(&str, &[u8], &str)) -> Options {
        let mut o = base;
        for item in input.split(|&c| c == b':' || c == b',') {
            if item.is_empty() {
                continue;
            }
            let (key, val) = match item.iter().position(|&c| c == b'=') {
                Some(i) => (&item[..i], &item[i + 1..]),
                None => (item, &b"1"[..]),
            };
            if key == b"log_path" {
                // A path, not a number: `from_env` takes it.
                continue;
            }
            let switch = SWITCHES.contains(&key);
            let n = match (switch, val) {
                (true, b"true" | b"yes" | b"on") => 1,
                (true, b"false" | b"no" | b"off") => 0,
                _ => match parse_num(val) {
                    Some(n) if !switch || n <= 1 => n,
                    Some(_) => {
                        warn("value out of range for option", item, accepted(key));
                        continue;
                    }
                    None => {
                        warn("malformed value for option", item, accepted(key));
                        continue;
                    }
                },
            };
            let d = Options::DEFAULT;
            let ok = match key {
                b"buckets" => set(&mut o.buckets, n, 1, MAX_BUCKETS as u64, secure, d.buckets as u64, true),
                b"canary" => set_bool(&mut o.canary, n, secure),
                b"zero_on_free" => set_bool(&mut o.zero_on_free, n, secure),
                b"write_after_free_check" => set_bool(&mut o.write_after_free_check, n, secure),
                b"quarantine" => set(&mut o.quarantine, n, 0, MAX_QUARANTINE as u64, secure, d.quarantine as u64, true),
                b"quarantine_bytes" => set(&mut o.quarantine_bytes, n, 0, 1 << 40, secure, d.quarantine_bytes as u64, true),
                b"large_quarantine" => set(
                    &mut o.large_quarantine,
                    n,
                    0,
                    MAX_LARGE_QUARANTINE as u64,
                    secure,
                    d.large_quarantine as u64,
                    true,
                ),
                b"large_quarantine_bytes" => set(
                    &mut o.large_quarantine_bytes,
                    n,
                    0,
                    1 << 44,
                    secure,
                    d.large_quarantine_bytes as u64,
                    true,
                ),
                b"stats" => set(&mut o.stats, n, 0, 2, false, 0, true),
                b"overflow_abort" => {
                    if secure && n == 0 {
                        Err("ignored in a privileged process (would weaken)")
                    } else {
                        o.overflow_abort = n != 0;
                        Ok(())
                    }
                }
                b"alloc_token_max" => {
                    o.alloc_token_max = n;
                    Ok(())
                }
                b"mte" => set_bool(&mut o.mte, n, secure),
                b"sample_rate" => {
                    // More sampling is stronger: a privileged process may only sample more often.
                    if secure && d.sample_rate != 0 && (n == 0 || n > d.sample_rate as u64) {
                        Err("ignored in a privileged process (would weaken)")
                    } else if n > u32::MAX as u64 {
                        Err("value out of range for option")
                    } else {
                        o.sample_rate = n as u32;
                        Ok(())
                    }
                }
                b"stacks" => {
                    o.stacks = n != 0;
                    Ok(())
                }
                b"checked_calls" => set_bool(&mut o.checked_calls, n, secure),
                b"exit_check" => set_bool(&mut o.exit_check, n, secure),
                // None of these weakens a check: allowed everywhere.
                b"symbolize" => set_bool(&mut o.symbolize, n, false),
                b"guard" => {
                    o.guard = n != 0;
                    if o.guard {
                        o.stacks = true;
                    }
                    Ok(())
                }
                b"guard_below" => set_bool(&mut o.guard_below, n, false),
                b"guard_align" => set_bool(&mut o.guard_align, n, false),
                b"debug" => {
                    o.debug = n != 0;
                    if o.debug {
                        o.stacks = true;
                        if o.sample_rate == 0 || o.sample_rate > 500 {
                            o.sample_rate = 500;
                        }
                    }
                    Ok(())
                }
                b"alloc_dealloc_mismatch" => set(&mut o.alloc_dealloc_mismatch, n, 0, 2, secure, d.alloc_dealloc_mismatch as u64, true),
                // Handled by `from_env` (prints the options); nothing to set.
                b"help" => Ok(()),
                _ => Err("unknown option"),
            };
            if let Err(why) = ok {
                warn(why, item, if why == "value out of range for option" { accepted(key) } else { "" });
            }
        }
        o
    }
}

/// The on/off options: 0 or 1, also written true/false, yes/no, on/off.
const SWITCHES: [&[u8]; 13] = [
    b"canary",
    b"zero_on_free",
    b"write_after_free_check",
    b"overflow_abort",
    b"mte",
    b"stacks",
    b"checked_calls",
    b"exit_check",
    b"symbolize",
    b"debug",
    b"guard",
    b"guard_below",
    b"guard_align",
];

/// What an option accepts, for the warning about a value it does not.
fn accepted(key: &[u8]) -> &'static str {
    if SWITCHES.contains(&key) {
        return "0 or 1 (or true/false, yes/no, on/off)";
    }
    match key {
        b"buckets" => "1 to 7",
        b"quarantine" => "0 to 1024 blocks",
        b"quarantine_bytes" => "0 to 1t bytes (k, m, g suffixes)",
        b"large_quarantine" => "0 to 256 blocks",
        b"large_quarantine_bytes" => "0 to 16t bytes (k, m, g suffixes)",
        b"stats" => "0, 1 or 2",
        b"alloc_token_max" => "a number of ids (0 = 2^64)",
        b"sample_rate" => "0 (off) or one in N, N up to 4294967295",
        b"alloc_dealloc_mismatch" => "0, 1 or 2",
        b"help" => "1",
        _ => "",
    }
}

fn set_bool(slot: &mut bool, n: u64, secure: bool) -> Result<(), &'static str> {
    if secure && n == 0 {
        return Err("ignored in a privileged process (would weaken)");
    }
    *slot = n != 0;
    Ok(())
}

fn set<T: TryFrom<u64>>(
    slot: &mut T,
    n: u64,
    min: u64,
    max: u64,
    secure: bool,
    default: u64,
    bigger_is_stronger: bool,
) -> Result<(), &'static str> {
    if n < min || n > max {
        return Err("value out of range for option");
    }
    if secure && ((bigger_is_stronger && n < default) || (!bigger_is_stronger && n > default)) {
        return Err("ignored in a privileged process (would weaken)");
    }
    match T::try_from(n) {
        Ok(v) => {
            *slot = v;
            Ok(())
        }
        Err(_) => Err("value out of range for option"),
    }
}

/// Decimal (or 0x hex) with an optional k/m/g suffix (powers of 1024).
pub fn parse_num(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let (digits, mult) = match v[v.len() - 1] {
        b'k' | b'K' => (&v[..v.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&v[..v.len() - 1], 1 << 20),
        b'g' | b'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    let (digits, radix) = if digits.len() > 2 && (digits.starts_with(b"0x") || digits.starts_with(b"0X")) {
        (&digits[2..], 16)
    } else {
        (digits, 10)
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &c in digits {
        let d = (c as char).to_digit(radix)? as u64;
        n = n.checked_mul(radix as u64)?.checked_add(d)?;
    }
    n.checked_mul(mult)
}

/// Whether options may only strengthen: in a privileged process (`AT_SECURE`: set-uid,
/// set-gid, file capabilities), or wherever `MIE_LOCK_OPTIONS=1` asks for the same rule (an
/// administrator's way to pin a service's protections; it can only ever make mie stricter,
/// so it is no way around the rule either).
pub fn strengthen_only() -> bool {
    crate::platform::is_secure_exec() || crate::platform::getenv(c"MIE_LOCK_OPTIONS").is_some_and(|v| v == b"1")
}

/// Read `MIE_OPTIONS` from the environment, warning on stderr about rejected items. A
/// process whose parent runs under mie with the same `MIE_OPTIONS` stays quiet: the parent
/// has said it (a pipeline warns once, not once per program).
pub fn from_env() -> Options {
    let secure = strengthen_only();
    // The program's own defaults first (its author's choice, so not subject to the
    // strengthen-only rule), then the environment's.
    let base = match crate::platform::program_options() {
        Some(p) => {
            take_log_path(p);
            Options::parse(p, false, |why, item, ok| report::warn(format_args!("{}: '{}' (__mie_default_options){}", why, report::Bytes(item), Accepts(ok))))
        }
        None => Options::DEFAULT,
    };
    let Some(s) = crate::platform::getenv(c"MIE_OPTIONS") else { return base };
    take_log_path(s);
    let mut quiet: Option<bool> = None;
    let said = crate::platform::getenv(c"MIE_OPTIONS_SAID").unwrap_or(b"");
    let help = s.split(|&c| c == b':' || c == b',').any(|i| i == b"help" || i == b"help=1");
    if help && !parent_has_said_it(s) && !said_already(said, b"help") {
        let mut line = report::Line::new();
        let _ = writeln!(line, "mie: options (MIE_OPTIONS=\"key=value:key=value\"):");
        for (k, what) in KEYS {
            let _ = writeln!(line, "mie:   {k:<24} {what}");
        }
        line.flush();
    }
    Options::parse_onto(base, s, secure, |why, item, ok| {
        let key = item.split(|&c| c == b'=').next().unwrap_or(item);
        if *quiet.get_or_insert_with(|| parent_has_said_it(s)) || said_already(said, key) {
            return;
        }
        if why == "unknown option" {
            let mut line = report::Line::new();
            let _ = write!(line, "mie: warning: unknown option: '{}' (MIE_OPTIONS)", report::Bytes(key));
            if let Some(k) = nearest_key(key) {
                let _ = write!(line, "; did you mean '{k}'?");
            }
            let _ = write!(line, " Options:");
            for (k, _) in KEYS {
                let _ = write!(line, " {k}");
            }
            let _ = writeln!(line, " (mie run --help says what each does)");
            line.flush();
        } else {
            report::warn(format_args!("{}: '{}' (MIE_OPTIONS){}", why, report::Bytes(item), Accepts(ok)));
        }
    })
}

/// "; accepted: ..." after a rejected value (nothing when the key has no such list).
struct Accepts<'a>(&'a str);

impl core::fmt::Display for Accepts<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "; accepted: {}, kept the default", self.0)
        }
    }
}

/// `log_path=PATH` (the last one) goes to the report layer: a path, not a number.
fn take_log_path(s: &'static [u8]) {
    if let Some(path) = s.split(|&c| c == b':' || c == b',').filter_map(|i| i.strip_prefix(b"log_path=")).next_back() {
        if !path.is_empty() {
            report::set_log_path(path);
        }
    }
}

/// Whether `mie run`, which read (and warned about) the options it was given itself, lists
/// an item with this key in `MIE_OPTIONS_SAID`.
fn said_already(said: &[u8], key: &[u8]) -> bool {
    said.split(|&c| c == b':' || c == b',').any(|item| item.split(|&c| c == b'=').next() == Some(key))
}

/// Whether the parent process runs under mie (libmie preloaded) with this same
/// `MIE_OPTIONS` value, so it has warned about it already.
fn parent_has_said_it(value: &[u8]) -> bool {
    let mut found_options = false;
    let mut under_mie = false;
    crate::platform::for_each_parent_env(|entry| {
        if let Some(v) = entry.strip_prefix(b"MIE_OPTIONS=") {
            found_options = v == value;
        } else if let Some(v) = entry.strip_prefix(b"LD_PRELOAD=") {
            under_mie = v.windows(6).any(|w| w == b"libmie");
        }
    });
    found_options && under_mie
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, secure: bool) -> (Options, usize) {
        let mut warnings = 0;
        let o = Options::parse(s.as_bytes(), secure, |_, _, _| warnings += 1);
        (o, warnings)
    }

    #[test]
    fn unknown_keys_get_the_nearest_known_one() {
        assert_eq!(nearest_key(b"stat"), Some("stats"));
        assert_eq!(nearest_key(b"sampel_rate"), Some("sample_rate"));
        assert_eq!(nearest_key(b"quarantine_byte"), Some("quarantine_bytes"));
        assert_eq!(nearest_key(b"canaries"), Some("canary"));
        assert_eq!(nearest_key(b"completely_different"), None);
        assert_eq!(edit_distance(b"kitten", b"sitting"), 3);
        // Every key parses (the list and the parser agree).
        for (k, _) in KEYS {
            let (_, w) = parse(&format!("{k}=1"), false);
            assert_eq!(w, 0, "{k}");
        }
    }

    #[test]
    fn rejected_values_name_the_item_and_what_is_accepted() {
        let mut said = Vec::new();
        let o = Options::parse(b"buckets=9:stats=maybe:canary=false:stacks=on:mte=2", false, |why, item, ok| {
            said.push(format!("{why}: {}: {ok}", String::from_utf8_lossy(item)))
        });
        assert_eq!(said, [
            "value out of range for option: buckets=9: 1 to 7",
            "malformed value for option: stats=maybe: 0, 1 or 2",
            "value out of range for option: mte=2: 0 or 1 (or true/false, yes/no, on/off)",
        ]);
        assert!(!o.canary && o.stacks && o.mte);
    }

    #[test]
    fn defaults_when_empty() {
        assert_eq!(parse("", false), (Options::DEFAULT, 0));
    }

    #[test]
    fn parses_values_and_suffixes() {
        let (o, w) = parse("buckets=5:canary=0:quarantine_bytes=2m:large_quarantine=0x10:stats", false);
        assert_eq!(w, 0);
        assert_eq!(o.buckets, 5);
        assert!(!o.canary);
        assert_eq!(o.quarantine_bytes, 2 << 20);
        assert_eq!(o.large_quarantine, 16);
        assert_eq!(o.stats, 1);
    }

    #[test]
    fn rejects_unknown_out_of_range_and_malformed() {
        let (o, w) = parse("nosuch=1:buckets=9:quarantine=abc:buckets=0", false);
        assert_eq!(w, 4);
        assert_eq!(o.buckets, Options::DEFAULT.buckets);
        assert_eq!(o.quarantine, Options::DEFAULT.quarantine);
    }

    #[test]
    fn environment_options_go_on_top_of_the_programs() {
        let program = Options::parse(b"quarantine=7:stacks=1:canary=0", false, |_, _, _| {});
        let o = Options::parse_onto(program, b"quarantine=9", false, |_, _, _| {});
        assert_eq!((o.quarantine, o.stacks, o.canary), (9, true, false));
        // In a privileged process the environment still cannot weaken the built-in defaults,
        // while the program's own choice stands.
        let o = Options::parse_onto(program, b"zero_on_free=0", true, |_, _, _| {});
        assert!(o.zero_on_free && !o.canary);
    }

    #[test]
    fn privileged_process_only_strengthens() {
        let (o, w) = parse("canary=0:zero_on_free=0:quarantine=0:buckets=1:quarantine=128:buckets=6:checked_calls=0", true);
        assert_eq!(w, 5);
        assert!(o.canary && o.zero_on_free && o.checked_calls);
        assert_eq!(o.quarantine, 128);
        assert_eq!(o.buckets, 6);
        // Sampling may only become more frequent; recording stacks is always allowed.
        let (o, w) = parse("sample_rate=0:sample_rate=100000:stacks=1", true);
        assert_eq!(w, 2);
        assert_eq!(o.sample_rate, Options::DEFAULT.sample_rate);
        assert!(o.stacks);
        let (o, w) = parse("sample_rate=100", true);
        assert_eq!((o.sample_rate, w), (100, 0));
    }

    #[test]
    fn number_parser_edges() {
        assert_eq!(parse_num(b"0"), Some(0));
        assert_eq!(parse_num(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_num(b"18446744073709551616"), None);
        assert_eq!(parse_num(b"16g"), Some(16 << 30));
        assert_eq!(parse_num(b"k"), None);
        assert_eq!(parse_num(b"0x"), None);
    }
}
