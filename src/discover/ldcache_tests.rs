use super::*;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

// ----- handcrafted fixtures, built field by field rather than by write_cache -----

const fn entry(flags: i32, soname: &'static str, path: &'static str) -> Entry<'static> {
    Entry {
        flags,
        soname: soname.as_bytes(),
        path: path.as_bytes(),
        osversion: 0,
        hwcap: 0,
    }
}

const LIBC6_X86_64: i32 = FLAG_ELF_LIBC6 | FLAG_X8664_LIB64;

const NEW_ENTRIES: &[Entry<'static>] = &[
    Entry {
        osversion: 0x0003_0200,
        hwcap: 0x8000_0000_0000_0002,
        ..entry(LIBC6_X86_64, "libz.so.1", "/lib/tls/x86_64/libz.so.1")
    },
    entry(LIBC6_X86_64, "libz.so.1", "/lib/libz.so.1"),
    entry(FLAG_ELF_LIBC6, "libm.so.6", "/lib32/libm.so.6"),
];

const OLD_ENTRIES: &[Entry<'static>] = &[
    entry(LIBC6_X86_64, "libz.so.1", "/usr/lib/libz.so.1"),
    entry(FLAG_ELF, "liba.so.2", "/usr/lib/liba.so.2"),
];

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends soname and path to `strings`, returning their offsets from `base`.
fn push_strings(strings: &mut Vec<u8>, base: usize, e: &Entry<'_>) -> (u32, u32) {
    let mut push = |s: &[u8]| {
        let offset = (base + strings.len()) as u32;
        strings.extend_from_slice(s);
        strings.push(0);
        offset
    };
    (push(e.soname), push(e.path))
}

fn new_fixture(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut table = Vec::new();
    let mut strings = Vec::new();
    let strings_base = 48 + 24 * entries.len();
    for e in entries {
        let (key, value) = push_strings(&mut strings, strings_base, e);
        table.extend_from_slice(&e.flags.to_le_bytes());
        put_u32(&mut table, key);
        put_u32(&mut table, value);
        put_u32(&mut table, e.osversion);
        table.extend_from_slice(&e.hwcap.to_le_bytes());
    }
    let mut out = b"glibc-ld.so.cache1.1".to_vec();
    put_u32(&mut out, entries.len() as u32);
    put_u32(&mut out, strings.len() as u32);
    out.extend_from_slice(&[2, 0, 0, 0]);
    out.resize(48, 0);
    out.extend(table);
    out.extend(strings);
    out
}

fn old_header(nlibs: usize) -> Vec<u8> {
    let mut out = b"ld.so-1.7.0\0".to_vec();
    put_u32(&mut out, nlibs as u32);
    out
}

fn old_fixture(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = old_header(entries.len());
    let mut strings = Vec::new();
    for e in entries {
        let (key, value) = push_strings(&mut strings, 0, e);
        out.extend_from_slice(&e.flags.to_le_bytes());
        put_u32(&mut out, key);
        put_u32(&mut out, value);
    }
    out.extend(strings);
    out
}

/// Old table (flags, then key/value borrowed from the new part) followed by
/// the new cache at `new_at(end of old table)`.
fn combined_fixture(old_flags: &[i32], new_at: fn(usize) -> usize) -> Vec<u8> {
    let new_part = new_fixture(NEW_ENTRIES);
    let mut out = old_header(old_flags.len());
    for &flags in old_flags {
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&new_part[52..60]);
    }
    let start = new_at(out.len());
    out.resize(start, 0);
    out.extend(new_part);
    out
}

fn parsed(data: &[u8]) -> (Format, Vec<Entry<'_>>) {
    let cache = LdCache::parse(data).expect("fixture parses");
    (cache.format(), cache.entries().collect())
}

#[test]
fn parses_new_fixture() {
    assert_eq!(
        parsed(&new_fixture(NEW_ENTRIES)),
        (Format::New, NEW_ENTRIES.to_vec())
    );
    assert_eq!(parsed(&new_fixture(&[])), (Format::New, vec![]));
}

#[test]
fn parses_old_fixture_with_offsets_from_string_table() {
    assert_eq!(
        parsed(&old_fixture(OLD_ENTRIES)),
        (Format::Old, OLD_ENTRIES.to_vec())
    );
    assert_eq!(parsed(&old_fixture(&[])), (Format::Old, vec![]));
}

#[test]
fn parses_combined_fixture_from_its_new_part() {
    let even = combined_fixture(&[FLAG_ELF, FLAG_ELF], |end| end);
    assert_eq!(parsed(&even), (Format::Combined, NEW_ENTRIES.to_vec()));
    let padded = combined_fixture(&[FLAG_ELF], |end| end.next_multiple_of(8));
    assert!(padded[32..].starts_with(b"glibc-ld.so.cache"));
    assert_eq!(parsed(&padded), (Format::Combined, NEW_ENTRIES.to_vec()));
    // What a glibc with 4-byte u64 alignment (i386) would write.
    let unpadded = combined_fixture(&[FLAG_ELF], |end| end);
    assert_eq!(parsed(&unpadded), (Format::Combined, NEW_ENTRIES.to_vec()));
}

#[test]
fn rejects_malformed_files() {
    let new = new_fixture(NEW_ENTRIES);
    let with = |at: usize, bytes: &[u8]| {
        let mut data = new.clone();
        data[at..at + bytes.len()].copy_from_slice(bytes);
        data
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("magic only", b"glibc-ld.so.cache1.1".to_vec()),
        ("old magic only", b"ld.so-1.7.0".to_vec()),
        ("old header only", old_header(0)[..15].to_vec()),
        (
            "unknown magic",
            b"ELF\x7f and more bytes than any header needs .......".to_vec(),
        ),
        ("version 1.0", with(17, b"1.0")),
        ("big endian", with(28, &[3])),
        ("invalid endian", with(28, &[1])),
        ("nlibs too large", with(20, &4u32.to_le_bytes())),
        ("nlibs huge", with(20, &u32::MAX.to_le_bytes())),
        (
            "key out of range",
            with(52, &(new.len() as u32).to_le_bytes()),
        ),
        ("value huge", with(56, &u32::MAX.to_le_bytes())),
        ("unterminated string", new[..new.len() - 1].to_vec()),
        ("old nlibs too large", {
            let mut old = old_fixture(OLD_ENTRIES);
            old[12] = 200;
            old
        }),
        ("old key out of range", {
            let mut old = old_fixture(OLD_ENTRIES);
            old[20] = 200;
            old
        }),
    ];
    for (name, data) in cases {
        let err = LdCache::parse(&data).err();
        assert!(err.is_some(), "{name}: accepted");
        assert_eq!(
            err.unwrap().to_string(),
            "unsupported file format",
            "{name}"
        );
    }
}

/// xorshift: deterministic, dependency-free noise for the mutation test.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn parse_survives_truncated_and_mutated_caches() {
    let small = [
        new_fixture(NEW_ENTRIES),
        old_fixture(OLD_ENTRIES),
        combined_fixture(&[FLAG_ELF], |end| end.next_multiple_of(8)),
    ];
    let mut inputs: Vec<Vec<u8>> = small.to_vec();
    if let Ok(system) = fs::read("/etc/ld.so.cache") {
        inputs.push(system);
    }
    let mut state = 0x9e37_79b9_7f4a_7c15;
    for input in &inputs {
        let stride = (input.len() / 2000).max(1);
        for len in (0..input.len()).step_by(stride) {
            let _ = LdCache::parse(&input[..len]);
        }
        for _ in 0..2000 {
            let mut data = input.clone();
            for _ in 0..1 + next_random(&mut state) % 4 {
                // Mostly hit the header and table, where offsets live.
                let span = if next_random(&mut state).is_multiple_of(4) {
                    data.len()
                } else {
                    data.len().min(200)
                };
                let at = (next_random(&mut state) % span as u64) as usize;
                data[at] = next_random(&mut state) as u8;
            }
            if let Ok(cache) = LdCache::parse(&data) {
                cache.entries().for_each(drop);
            }
        }
    }
}

#[test]
fn compare_sonames_orders_digit_runs_numerically() {
    use std::cmp::Ordering::*;
    let cases: &[(&str, &str, Ordering)] = &[
        ("libfoo.so.10", "libfoo.so.2", Greater),
        ("libfoo.so.2", "libfoo.so.1", Greater),
        ("libfoo.so.1", "libfoo.so.1", Equal),
        ("libfoo.so.01", "libfoo.so.1", Equal),
        ("libfoo.so.1", "libfoo.so", Greater),
        ("libfoo.so.1.2", "libfoo.so.1", Greater),
        ("libfoo2.so", "libfoo.so", Greater),
        ("libfoo2.so", "libfoo_2.so", Greater),
        ("libFoo.so", "libfoo.so", Less),
        ("libz.so", "liba.so", Greater),
        ("lib9.so", "lib10.so", Less),
        (
            "lib99999999999999999999.so",
            "lib99999999999999999998.so",
            Greater,
        ),
        ("lib00000000000000000000001.so", "lib1.so", Equal),
        ("libfoo.so\0junk", "libfoo.so", Equal),
        ("", "", Equal),
        ("", "a", Less),
        ("1", "", Greater),
    ];
    for &(a, b, want) in cases {
        assert_eq!(
            compare_sonames(a.as_bytes(), b.as_bytes()),
            want,
            "{a:?} vs {b:?}"
        );
        assert_eq!(
            compare_sonames(b.as_bytes(), a.as_bytes()),
            want.reverse(),
            "{b:?} vs {a:?}"
        );
    }
}

#[test]
fn compare_sonames_treats_high_bytes_as_c_char() {
    let want = if (0xffu8 as std::ffi::c_char as i32) < 0 {
        Ordering::Less
    } else {
        Ordering::Greater
    };
    assert_eq!(compare_sonames(b"lib\xff.so", b"liba.so"), want);
    assert_eq!(compare_sonames(b"lib\xff", b"lib"), want);
}

#[test]
fn compare_sonames_is_a_total_order() {
    let names: Vec<&[u8]> = [
        "",
        "a",
        "a1",
        "a01",
        "a10",
        "a2",
        "a.",
        "a.1",
        "a.1.2",
        "a\u{e9}",
        "b",
        "1",
        "10",
        "9a",
        "4294967296",
        "4294967295",
        "2147483648",
        "\u{ff}1",
    ]
    .iter()
    .map(|s| s.as_bytes())
    .collect();
    for a in &names {
        for b in &names {
            let ab = compare_sonames(a, b);
            assert_eq!(ab, compare_sonames(b, a).reverse());
            for c in &names {
                if ab != Ordering::Greater && compare_sonames(b, c) != Ordering::Greater {
                    assert_ne!(
                        compare_sonames(a, c),
                        Ordering::Greater,
                        "{a:?} {b:?} {c:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn describe_flags_names_types_and_architectures() {
    assert_eq!(describe_flags(LIBC6_X86_64), "libc6,x86-64");
    assert_eq!(describe_flags(FLAG_ELF_LIBC6), "libc6");
    assert_eq!(describe_flags(FLAG_ELF | FLAG_AARCH64_LIB64), "ELF,AArch64");
    assert_eq!(
        describe_flags(FLAG_ELF_LIBC5 | FLAG_X8664_LIBX32),
        "libc5,x32"
    );
    assert_eq!(
        describe_flags(FLAG_LIBC4 | FLAG_MIPS64_LIBN64_NAN2008),
        "libc4,64bit,nan2008"
    );
    assert_eq!(
        describe_flags(0x0007 | FLAG_RISCV_FLOAT_ABI_DOUBLE),
        "unknown,double-float"
    );
    assert_eq!(describe_flags(FLAG_ELF_LIBC6 | 0x1300), "libc6,4864");
    assert_eq!(
        describe_flags(FLAG_ELF_LIBC6 | FLAG_LARCH_FLOAT_ABI_DOUBLE),
        "libc6,4608"
    );
}

fn owned(flags: i32, soname: &str, path: &str) -> OwnedEntry {
    OwnedEntry {
        flags,
        soname: soname.into(),
        path: path.into(),
        osversion: 0,
        hwcap: 0,
    }
}

#[test]
fn write_cache_sorts_dedups_and_round_trips() {
    let tls = OwnedEntry {
        hwcap: 0x8000_0000_0000_0000,
        ..owned(LIBC6_X86_64, "libfoo.so.2", "/l/tls/libfoo.so.2")
    };
    let two_bits = OwnedEntry {
        hwcap: 0x3,
        ..owned(LIBC6_X86_64, "libfoo.so.2", "/l/x86_64/sse2/libfoo.so.2")
    };
    let newer_os = OwnedEntry {
        osversion: 0x0005_0000,
        ..owned(LIBC6_X86_64, "libfoo.so.2", "/l/new/libfoo.so.2")
    };
    let hwcaps_dir = OwnedEntry {
        hwcap: HWCAP_EXTENSION | 1,
        ..owned(
            LIBC6_X86_64,
            "libfoo.so.2",
            "/l/glibc-hwcaps/x86-64-v3/libfoo.so.2",
        )
    };
    let input = vec![
        owned(LIBC6_X86_64, "libfoo.so.1", "/l/libfoo.so.1"),
        owned(FLAG_ELF_LIBC6, "libfoo.so.10", "/l32/libfoo.so.10"),
        owned(LIBC6_X86_64, "libfoo.so.2", "/l/libfoo.so.2"),
        tls.clone(),
        owned(LIBC6_X86_64, "libfoo.so.10", "/l/libfoo.so.10"),
        newer_os.clone(),
        two_bits.clone(),
        hwcaps_dir.clone(),
        owned(LIBC6_X86_64, "libbar.so", "/elsewhere/libbar-1.so"),
        owned(LIBC6_X86_64, "libfoo.so.1", "/l/libfoo.so.1"),
    ];
    let want = vec![
        owned(LIBC6_X86_64, "libfoo.so.10", "/l/libfoo.so.10"),
        owned(FLAG_ELF_LIBC6, "libfoo.so.10", "/l32/libfoo.so.10"),
        hwcaps_dir,
        two_bits,
        tls,
        newer_os,
        owned(LIBC6_X86_64, "libfoo.so.2", "/l/libfoo.so.2"),
        owned(LIBC6_X86_64, "libfoo.so.1", "/l/libfoo.so.1"),
        owned(LIBC6_X86_64, "libbar.so", "/elsewhere/libbar-1.so"),
    ];
    let data = write_cache(&input);
    let cache = LdCache::parse(&data).unwrap();
    assert_eq!(cache.format(), Format::New);
    let got: Vec<OwnedEntry> = cache.entries().map(OwnedEntry::from).collect();
    assert_eq!(got, want);
    // Sonames that end their path share its bytes; libbar's does not.
    let strings: usize = want.iter().map(|e| e.path.len() + 1).sum::<usize>() + "libbar.so\0".len();
    assert_eq!(data.len(), 48 + 24 * want.len() + strings);
    assert_eq!(
        u32::from_le_bytes(data[24..28].try_into().unwrap()) as usize,
        strings
    );
    assert_eq!(write_cache(&[]).len(), 48);
}

// ----- checks against the system's glibc -----

use crate::testing::skip_or_fail as skip;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, AtomicOrdering::Relaxed);
        let dir = env::temp_dir().join(format!("nvbox-ldcache-{}-{n}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn find_ldconfig() -> Option<PathBuf> {
    ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .into_iter()
        .map(PathBuf::from)
        .find(|tool| {
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

fn run_ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// (soname, parenthesised description, path), as `ldconfig -p` prints an entry.
type Listed = (String, String, String);

fn list_with_ldconfig(ldconfig: &Path, cache: &Path) -> Vec<Listed> {
    let output = run_ok(Command::new(ldconfig).arg("-p").arg("-C").arg(cache));
    let text = String::from_utf8(output.stdout).unwrap();
    let listed: Vec<Listed> = text
        .lines()
        .filter_map(|line| line.strip_prefix('\t'))
        .map(|line| {
            let (soname, rest) = line.split_once(" (").unwrap();
            let (description, path) = rest.split_once(") => ").unwrap();
            (soname.into(), description.into(), path.into())
        })
        .collect();
    let count = format!("{} libs found in cache", listed.len());
    assert!(text.starts_with(&count), "{count:?} not in {text}");
    listed
}

fn list_with_reader(cache: &LdCache<'_>) -> Vec<Listed> {
    cache
        .entries()
        .map(|e| {
            let mut description = describe_flags(e.flags);
            if e.hwcap != 0 {
                description += &format!(", hwcap: {:#018x}", e.hwcap);
            }
            let text = |s: &[u8]| String::from_utf8_lossy(s).into_owned();
            (text(e.soname), description, text(e.path))
        })
        .collect()
}

fn system_entries() -> Option<Vec<OwnedEntry>> {
    let data = fs::read("/etc/ld.so.cache").ok()?;
    let cache = LdCache::parse(&data).ok()?;
    Some(cache.entries().map(OwnedEntry::from).collect())
}

fn native_library(entries: &[OwnedEntry], soname: &str) -> Option<PathBuf> {
    let native = NATIVE_FLAGS;
    let found = entries
        .iter()
        .find(|e| e.soname == soname && e.flags == native && e.hwcap == 0)?;
    Some(PathBuf::from(&found.path))
}

#[cfg(target_arch = "x86_64")]
const NATIVE_FLAGS: i32 = LIBC6_X86_64;
#[cfg(target_arch = "aarch64")]
const NATIVE_FLAGS: i32 = FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64;
#[cfg(target_arch = "x86_64")]
const NATIVE_MACHINE: (bool, u16) = (true, 62);
#[cfg(target_arch = "aarch64")]
const NATIVE_MACHINE: (bool, u16) = (true, 183);
/// i386 and x32: the other classes ldconfig classifies on an x86_64 host.
#[cfg(target_arch = "x86_64")]
const FOREIGN_MACHINES: &[(bool, u16, &str)] = &[(false, 3, "opt/i386"), (false, 62, "opt/x32")];
#[cfg(not(target_arch = "x86_64"))]
const FOREIGN_MACHINES: &[(bool, u16, &str)] = &[];
/// Legacy hwcap subdirectories ldconfig 2.36 knows on x86_64, nested ones included.
#[cfg(target_arch = "x86_64")]
const HWCAP_DIRS: &[&str] = &["tls", "tls/x86_64", "x86_64", "x86_64/sse2", "haswell"];
#[cfg(not(target_arch = "x86_64"))]
const HWCAP_DIRS: &[&str] = &[];

/// The smallest shared object ldconfig indexes: one PT_LOAD, one PT_DYNAMIC
/// and the string table. The DT_NEEDED on libc.so.6 is what makes ldconfig
/// call an i386 library libc6 rather than plain ELF.
fn elf_library(wide: bool, machine: u16, soname: &str) -> Vec<u8> {
    let (ehdr, phdr, dyn_len) = if wide { (64, 56, 16) } else { (52, 32, 8) };
    let dynamic = ehdr + 2 * phdr;
    let strtab = dynamic + 4 * dyn_len;
    let libc = 1 + soname.len() + 1;
    let end = (libc + strtab + "libc.so.6".len() + 1) as u64;
    let mut out = vec![0x7f, b'E', b'L', b'F', if wide { 2 } else { 1 }, 1, 1];
    out.resize(16, 0);
    let word = |out: &mut Vec<u8>, v: u64| {
        if wide {
            out.extend_from_slice(&v.to_le_bytes())
        } else {
            out.extend_from_slice(&(v as u32).to_le_bytes())
        }
    };
    out.extend_from_slice(&3u16.to_le_bytes()); // ET_DYN
    out.extend_from_slice(&machine.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    word(&mut out, 0);
    word(&mut out, ehdr as u64);
    word(&mut out, 0);
    out.extend_from_slice(&0u32.to_le_bytes());
    for half in [ehdr as u16, phdr as u16, 2, 0, 0, 0] {
        out.extend_from_slice(&half.to_le_bytes());
    }
    // PT_LOAD covering the file, then PT_DYNAMIC.
    for (kind, offset, size, align) in [
        (1u32, 0, end, 0x1000),
        (2, dynamic as u64, 4 * dyn_len as u64, 8),
    ] {
        out.extend_from_slice(&kind.to_le_bytes());
        if wide {
            out.extend_from_slice(&4u32.to_le_bytes());
        }
        for field in [offset, offset, offset, size, size] {
            word(&mut out, field);
        }
        if !wide {
            out.extend_from_slice(&4u32.to_le_bytes());
        }
        word(&mut out, align);
    }
    for (tag, value) in [(1, libc as u64), (5, strtab as u64), (14, 1), (0, 0)] {
        word(&mut out, tag);
        word(&mut out, value);
    }
    out.push(0);
    out.extend_from_slice(soname.as_bytes());
    out.extend_from_slice(b"\0libc.so.6\0");
    out
}

const SYNTHETIC_SONAMES: &[&str] = &[
    "libnvbx.so.1",
    "libnvbx.so.10",
    "libnvbx.so.2",
    "libnvbx.so",
    "libnvbx.so.1.2",
    "libnvbx2.so.1",
    "libnvbx-extra.so.3",
    "libNvbx.so.1",
    "libnvbx_9.so.100",
    "libnvbx_9.so.99",
];

/// A root holding copies of real libraries plus synthetic ones that cover
/// every sort key, indexed by ldconfig in all three formats.
struct LdconfigRoot {
    dir: TempDir,
    ldconfig: PathBuf,
}

impl LdconfigRoot {
    fn build() -> Option<LdconfigRoot> {
        let Some(ldconfig) = find_ldconfig() else {
            skip("ldconfig not found");
            return None;
        };
        let Some(system) = system_entries() else {
            skip("/etc/ld.so.cache unreadable");
            return None;
        };
        let dir = TempDir::new("root");
        let root = dir.path();
        let lib = root.join("usr/lib/nvbox");
        fs::create_dir_all(&lib).unwrap();
        for soname in ["libz.so.1", "libm.so.6"] {
            let Some(path) = native_library(&system, soname) else {
                skip(&format!("{soname} not in /etc/ld.so.cache"));
                return None;
            };
            fs::copy(path, lib.join(soname)).unwrap();
        }
        let (wide, machine) = NATIVE_MACHINE;
        for soname in SYNTHETIC_SONAMES {
            fs::write(lib.join(soname), elf_library(wide, machine, soname)).unwrap();
        }
        let mut conf = String::from("/usr/lib/nvbox\n");
        for (wide, machine, sub) in FOREIGN_MACHINES {
            fs::create_dir_all(root.join(sub)).unwrap();
            fs::write(
                root.join(sub).join("libnvbx.so.1"),
                elf_library(*wide, *machine, "libnvbx.so.1"),
            )
            .unwrap();
            conf += &format!("/{sub}\n");
        }
        for sub in HWCAP_DIRS {
            fs::create_dir_all(lib.join(sub)).unwrap();
            fs::write(
                lib.join(sub).join("libnvbx.so.2"),
                elf_library(wide, machine, "libnvbx.so.2"),
            )
            .unwrap();
        }
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/ld.so.conf"), conf).unwrap();
        for format in ["new", "old", "compat"] {
            if format == "old" {
                // glibc 2.36 writes corrupt old-format tables (or aborts) when
                // hwcap entries exist, so only the new format gets them.
                for sub in HWCAP_DIRS {
                    let _ = fs::remove_dir_all(lib.join(sub));
                }
            }
            run_ok(
                Command::new(&ldconfig)
                    .arg("-r")
                    .arg(root)
                    .args(["-c", format, "-C"])
                    .arg(format!("/etc/ld.so.cache.{format}")),
            );
        }
        Some(LdconfigRoot { dir, ldconfig })
    }

    fn cache(&self, format: &str) -> PathBuf {
        self.dir.path().join(format!("etc/ld.so.cache.{format}"))
    }
}

#[test]
fn reads_caches_written_by_ldconfig_like_ldconfig() {
    let Some(root) = LdconfigRoot::build() else {
        return;
    };
    let mut listings = Vec::new();
    for (name, format) in [
        ("new", Format::New),
        ("old", Format::Old),
        ("compat", Format::Combined),
    ] {
        let data = fs::read(root.cache(name)).unwrap();
        let cache = LdCache::parse(&data).unwrap();
        assert_eq!(cache.format(), format, "{name}");
        let ours = list_with_reader(&cache);
        assert_eq!(
            ours,
            list_with_ldconfig(&root.ldconfig, &root.cache(name)),
            "{name}"
        );
        listings.push(ours);
    }
    let without_hwcaps: Vec<Listed> = listings[0]
        .iter()
        .filter(|l| !l.1.contains("hwcap"))
        .cloned()
        .collect();
    assert_eq!(
        without_hwcaps.len(),
        2 + SYNTHETIC_SONAMES.len() + FOREIGN_MACHINES.len()
    );
    // glibc 2.37 dropped legacy hwcap directories; 2.36 indexes every one.
    let hwcaps = listings[0].len() - without_hwcaps.len();
    assert!(
        hwcaps == HWCAP_DIRS.len() || hwcaps == 0,
        "{hwcaps} hwcap entries"
    );
    assert_eq!(listings[1], without_hwcaps);
    assert_eq!(listings[2], without_hwcaps);
}

#[test]
fn write_cache_orders_entries_like_ldconfig() {
    let Some(root) = LdconfigRoot::build() else {
        return;
    };
    let data = fs::read(root.cache("new")).unwrap();
    let theirs: Vec<OwnedEntry> = LdCache::parse(&data)
        .unwrap()
        .entries()
        .map(OwnedEntry::from)
        .collect();
    let mut shuffled = theirs.clone();
    shuffled.reverse();
    shuffled.rotate_left(theirs.len() / 3);
    shuffled.push(theirs[0].clone());
    let ours_data = write_cache(&shuffled);
    let ours: Vec<OwnedEntry> = LdCache::parse(&ours_data)
        .unwrap()
        .entries()
        .map(OwnedEntry::from)
        .collect();
    assert_eq!(ours, theirs);
}

#[test]
fn ldconfig_lists_caches_written_by_us() {
    let Some(ldconfig) = find_ldconfig() else {
        return skip("ldconfig not found");
    };
    let Some(mut entries) = system_entries() else {
        return skip("/etc/ld.so.cache unreadable");
    };
    for soname in [
        "libnvbxsynth.so.1",
        "libnvbxsynth.so.10",
        "libnvbxsynth.so.2",
    ] {
        for flags in [FLAG_ELF_LIBC6, LIBC6_X86_64] {
            entries.push(owned(flags, soname, &format!("/opt/{flags:x}/{soname}")));
        }
    }
    let dir = TempDir::new("ours");
    let file = dir.path().join("ld.so.cache");
    fs::write(&file, write_cache(&entries)).unwrap();
    let data = fs::read(&file).unwrap();
    let cache = LdCache::parse(&data).unwrap();
    let ours = list_with_reader(&cache);
    assert_eq!(ours.len(), entries.len());
    assert_eq!(list_with_ldconfig(&ldconfig, &file), ours);
    let synthetic: Vec<String> = ours
        .iter()
        .filter(|l| l.0.starts_with("libnvbxsynth"))
        .map(|l| format!("{} {}", l.0, l.1))
        .collect();
    let want = [
        "libnvbxsynth.so.10 libc6,x86-64",
        "libnvbxsynth.so.10 libc6",
        "libnvbxsynth.so.2 libc6,x86-64",
        "libnvbxsynth.so.2 libc6",
        "libnvbxsynth.so.1 libc6,x86-64",
        "libnvbxsynth.so.1 libc6",
    ];
    assert_eq!(synthetic, want);
}

#[test]
fn ldconfig_describes_flags_like_describe_flags() {
    let Some(ldconfig) = find_ldconfig() else {
        return skip("ldconfig not found");
    };
    let mut entries = Vec::new();
    for kind in 0..=4 {
        for arch in (0..=0x13).map(|a| a << 8) {
            let soname = format!("libflags{kind}x{arch:x}.so");
            entries.push(owned(kind | arch, &soname, &format!("/f/{soname}")));
        }
    }
    let dir = TempDir::new("flags");
    let file = dir.path().join("ld.so.cache");
    fs::write(&file, write_cache(&entries)).unwrap();
    let data = fs::read(&file).unwrap();
    let cache = LdCache::parse(&data).unwrap();
    let theirs = list_with_ldconfig(&ldconfig, &file);
    assert_eq!(theirs.len(), entries.len());
    for ((entry, ours), theirs) in cache.entries().zip(list_with_reader(&cache)).zip(theirs) {
        // glibc after 2.36 names the LoongArch flags.
        let newer = match entry.flags & FLAG_ARCH_MASK {
            FLAG_LARCH_FLOAT_ABI_SOFT => ",soft-float",
            FLAG_LARCH_FLOAT_ABI_DOUBLE => ",double-float",
            _ => "",
        };
        let renamed = ours.1.split(',').next().unwrap().to_string() + newer;
        assert!(
            theirs == ours || !newer.is_empty() && theirs.1 == renamed,
            "{theirs:?} vs {ours:?}"
        );
    }
}

/// Sonames found nowhere but in our cache; several, with numeric suffixes,
/// so that a mis-sorted table would derail the loader's binary search.
const LOADER_SONAMES: &[&str] = &[
    "libnvboxtest.so.1",
    "libnvboxtest.so.10",
    "libnvboxtest.so.2",
    "libnvboxtest2.so.1",
];

#[test]
fn dynamic_loader_resolves_sonames_from_our_cache() {
    let unshare_works = Command::new("unshare")
        .args(["-m", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !unshare_works {
        return skip("`unshare -m` unavailable (needs root)");
    }
    let Some(mut entries) = system_entries() else {
        return skip("/etc/ld.so.cache unreadable");
    };
    let Some(libz) = native_library(&entries, "libz.so.1") else {
        return skip("no libz.so.1");
    };
    let dir = TempDir::new("loader");
    for soname in LOADER_SONAMES {
        let lib = dir.path().join(soname);
        fs::copy(&libz, &lib).unwrap();
        entries.push(owned(NATIVE_FLAGS, soname, lib.to_str().unwrap()));
    }
    let cache = dir.path().join("ld.so.cache");
    fs::write(&cache, write_cache(&entries)).unwrap();

    // The loader resolves a slash-less LD_PRELOAD name exactly as it would a
    // DT_NEEDED or dlopen() one, and tracing prints where it found it.
    let script = r#"
        [ -z "$1" ] || mount --bind "$1" /etc/ld.so.cache || exit 90
        LD_PRELOAD="$2" LD_TRACE_LOADED_OBJECTS=1 /bin/true
        if command -v python3 >/dev/null 2>&1; then
            python3 -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1]); print("dlopen ok")' "$3"
        else
            echo "python3 missing"
        fi
    "#;
    let probe = |cache: &str| {
        let output = Command::new("unshare")
            .args([
                "-m",
                "sh",
                "-c",
                script,
                "sh",
                cache,
                &LOADER_SONAMES.join(":"),
                LOADER_SONAMES[0],
            ])
            .output()
            .unwrap();
        assert_ne!(output.status.code(), Some(90), "bind mount failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    };
    let resolved = |soname: &str| format!("{soname} => {}", dir.path().join(soname).display());
    let with_ours = probe(cache.to_str().unwrap());
    for soname in LOADER_SONAMES {
        assert!(with_ours.contains(&resolved(soname)), "{with_ours}");
    }
    assert!(
        with_ours.contains("dlopen ok") || with_ours.contains("python3 missing"),
        "{with_ours}"
    );
    let without = probe("");
    for soname in LOADER_SONAMES {
        assert!(!without.contains(&resolved(soname)), "{without}");
    }
    assert!(!without.contains("dlopen ok"), "{without}");
}
