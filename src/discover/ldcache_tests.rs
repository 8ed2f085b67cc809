use super::*;
use std::fs;

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

pub(super) const LIBC6_X86_64: i32 = FLAG_ELF_LIBC6 | FLAG_X8664_LIB64;

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

pub(super) fn owned(flags: i32, soname: &str, path: &str) -> OwnedEntry {
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
