//! Reader and writer for glibc's dynamic loader cache (`/etc/ld.so.cache`).
//!
//! Layouts, as checked against glibc 2.36's `ldconfig -c new|old|compat`:
//!
//! * New: `glibc-ld.so.cache1.1`, then `nlibs`@20, `len_strings`@24, an
//!   endianness byte @28, `extension_offset`@32, entries from 48 (24 bytes:
//!   flags, key, value, osversion, hwcap). String offsets count from the
//!   start of the new header.
//! * Old (libc5): `ld.so-1.7.0`, one pad byte, `nlibs`@12, entries from 16
//!   (12 bytes: flags, key, value). String offsets count from the end of the
//!   entry table.
//! * Combined: an old header and table, then a whole new cache at the next
//!   8-byte boundary. Every string offset, the old entries' included, counts
//!   from the new header. ldconfig repeats the last old entry when needed so
//!   that the table always ends on that boundary.
//!
//! The loader binary-searches the entries, so a cache is only usable when it
//! is sorted exactly the way ldconfig sorts it; see [`compare_sonames`].

// ldconfig's complete flag table is kept whole so that names match glibc's; a host uses only
// its own architectures.
#![allow(dead_code)]

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;

pub const FLAG_LIBC4: i32 = 0x0000;
pub const FLAG_ELF: i32 = 0x0001;
pub const FLAG_ELF_LIBC5: i32 = 0x0002;
pub const FLAG_ELF_LIBC6: i32 = 0x0003;
pub const FLAG_TYPE_MASK: i32 = 0x00ff;
pub const FLAG_ARCH_MASK: i32 = 0xff00;
pub const FLAG_SPARC_LIB64: i32 = 0x0100;
pub const FLAG_IA64_LIB64: i32 = 0x0200;
pub const FLAG_X8664_LIB64: i32 = 0x0300;
pub const FLAG_S390_LIB64: i32 = 0x0400;
pub const FLAG_POWERPC_LIB64: i32 = 0x0500;
pub const FLAG_MIPS64_LIBN32: i32 = 0x0600;
pub const FLAG_MIPS64_LIBN64: i32 = 0x0700;
pub const FLAG_X8664_LIBX32: i32 = 0x0800;
pub const FLAG_ARM_LIBHF: i32 = 0x0900;
pub const FLAG_AARCH64_LIB64: i32 = 0x0a00;
pub const FLAG_ARM_LIBSF: i32 = 0x0b00;
pub const FLAG_MIPS_LIB32_NAN2008: i32 = 0x0c00;
pub const FLAG_MIPS64_LIBN32_NAN2008: i32 = 0x0d00;
pub const FLAG_MIPS64_LIBN64_NAN2008: i32 = 0x0e00;
pub const FLAG_RISCV_FLOAT_ABI_SOFT: i32 = 0x0f00;
pub const FLAG_RISCV_FLOAT_ABI_DOUBLE: i32 = 0x1000;
pub const FLAG_LARCH_FLOAT_ABI_SOFT: i32 = 0x1100;
pub const FLAG_LARCH_FLOAT_ABI_DOUBLE: i32 = 0x1200;

/// Set in `hwcap` when the entry lives in a `glibc-hwcaps` subdirectory; the
/// low 32 bits then index that subdirectory in the cache's extension section.
pub const HWCAP_EXTENSION: u64 = 1 << 62;

const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const OLD_HEADER_LEN: usize = 16;
const OLD_ENTRY_LEN: usize = 12;
/// Magic and version together, since version 1.1 is the only one we can read.
const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const NEW_HEADER_LEN: usize = 48;
const NEW_ENTRY_LEN: usize = 24;
/// The new header holds u64 fields, so glibc places it on an 8-byte boundary.
const NEW_HEADER_ALIGN: usize = 8;
const ENDIAN_UNSET: u8 = 0;
const ENDIAN_LITTLE: u8 = 2;

/// One entry, borrowing from the file bytes (zero-copy: hot path of container start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub flags: i32,
    pub soname: &'a [u8],
    pub path: &'a [u8],
    pub osversion: u32,
    pub hwcap: u64,
}

/// Owned entry for writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEntry {
    pub flags: i32,
    pub soname: String,
    pub path: String,
    pub osversion: u32,
    pub hwcap: u64,
}

impl From<Entry<'_>> for OwnedEntry {
    fn from(entry: Entry<'_>) -> Self {
        OwnedEntry {
            flags: entry.flags,
            soname: String::from_utf8_lossy(entry.soname).into_owned(),
            path: String::from_utf8_lossy(entry.path).into_owned(),
            osversion: entry.osversion,
            hwcap: entry.hwcap,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Old,
    New,
    Combined,
}

/// The bytes are not a cache this module can read. The reason is only for
/// debugging; callers treat every such file alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    reason: &'static str,
}

impl FormatError {
    fn new(reason: &'static str) -> Self {
        FormatError { reason }
    }

    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unsupported file format")
    }
}

impl std::error::Error for FormatError {}

/// Parsed view over a cache file's bytes. Entries in file order.
#[derive(Debug, Clone)]
pub struct LdCache<'a> {
    format: Format,
    // Decoded once so that iteration cannot fail: every offset was checked.
    entries: Vec<Entry<'a>>,
}

impl<'a> LdCache<'a> {
    /// Accepts new, old and combined files. Err on too-small/wrong magic/version/out-of-range offsets.
    pub fn parse(data: &'a [u8]) -> Result<LdCache<'a>, FormatError> {
        if data.starts_with(NEW_MAGIC) {
            let entries = parse_new_entries(data, 0)?;
            return Ok(LdCache {
                format: Format::New,
                entries,
            });
        }
        if !data.starts_with(OLD_MAGIC) {
            return Err(FormatError::new("unknown magic"));
        }
        let nlibs = read_u32(data, 12).ok_or(FormatError::new("truncated old header"))?;
        let table_end = (nlibs as usize)
            .checked_mul(OLD_ENTRY_LEN)
            .and_then(|len| len.checked_add(OLD_HEADER_LEN))
            .filter(|&end| end <= data.len())
            .ok_or(FormatError::new("old entry table out of range"))?;
        // The loader ignores the old table when a new cache follows it, so
        // the old entries of a combined file are not even validated.
        if let Some(new_start) = find_new_header(data, table_end) {
            let entries = parse_new_entries(data, new_start)?;
            return Ok(LdCache {
                format: Format::Combined,
                entries,
            });
        }
        let entries = parse_old_entries(data, table_end)?;
        Ok(LdCache {
            format: Format::Old,
            entries,
        })
    }

    /// File order; a combined file yields its new part, as the loader reads that one.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        self.entries.iter().copied()
    }

    pub fn format(&self) -> Format {
        self.format
    }
}

/// A 32-bit glibc aligns the new header to 4 bytes only, which is the end of
/// the old table itself, so both places are tried.
fn find_new_header(data: &[u8], table_end: usize) -> Option<usize> {
    let aligned = table_end.checked_next_multiple_of(NEW_HEADER_ALIGN)?;
    [aligned, table_end].into_iter().find(|&start| {
        data.get(start..)
            .is_some_and(|rest| rest.starts_with(NEW_MAGIC))
    })
}

fn parse_new_entries(data: &[u8], header: usize) -> Result<Vec<Entry<'_>>, FormatError> {
    let head = data
        .get(header..)
        .filter(|rest| rest.len() >= NEW_HEADER_LEN)
        .ok_or(FormatError::new("truncated new header"))?;
    let nlibs = read_u32(head, 20).unwrap_or_default();
    let endian = head[28];
    if endian != ENDIAN_UNSET && endian != ENDIAN_LITTLE {
        return Err(FormatError::new("not a little-endian cache"));
    }
    let table = header + NEW_HEADER_LEN;
    let table_end = (nlibs as usize)
        .checked_mul(NEW_ENTRY_LEN)
        .and_then(|len| len.checked_add(table))
        .filter(|&end| end <= data.len())
        .ok_or(FormatError::new("new entry table out of range"))?;
    data[table..table_end]
        .chunks_exact(NEW_ENTRY_LEN)
        .map(|raw| {
            Ok(Entry {
                flags: read_i32(raw, 0).unwrap_or_default(),
                soname: read_string(data, header, read_u32(raw, 4))?,
                path: read_string(data, header, read_u32(raw, 8))?,
                osversion: read_u32(raw, 12).unwrap_or_default(),
                hwcap: read_u64(raw, 16).unwrap_or_default(),
            })
        })
        .collect()
}

/// `table_end` is also where the string offsets count from.
fn parse_old_entries(data: &[u8], table_end: usize) -> Result<Vec<Entry<'_>>, FormatError> {
    let strings = table_end;
    data[OLD_HEADER_LEN..table_end]
        .chunks_exact(OLD_ENTRY_LEN)
        .map(|raw| {
            Ok(Entry {
                flags: read_i32(raw, 0).unwrap_or_default(),
                soname: read_string(data, strings, read_u32(raw, 4))?,
                path: read_string(data, strings, read_u32(raw, 8))?,
                osversion: 0,
                hwcap: 0,
            })
        })
        .collect()
}

/// Strings may run to the end of the file, as glibc bounds them by the file
/// size rather than by `len_strings`.
fn read_string(data: &[u8], base: usize, offset: Option<u32>) -> Result<&[u8], FormatError> {
    let rest = offset
        .and_then(|offset| base.checked_add(offset as usize))
        .and_then(|start| data.get(start..))
        .ok_or(FormatError::new("string offset out of range"))?;
    let len = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(FormatError::new("unterminated string"))?;
    Ok(&rest[..len])
}

fn read_array<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    read_array(data, at).map(u32::from_le_bytes)
}

fn read_i32(data: &[u8], at: usize) -> Option<i32> {
    read_array(data, at).map(i32::from_le_bytes)
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    read_array(data, at).map(u64::from_le_bytes)
}

/// Serialize a NEW-format (glibc-ld.so.cache1.1, little-endian flag set) cache that glibc's
/// `ldconfig -p -C FILE` and the dynamic loader accept; sorts entries as ldconfig does;
/// dedups identical (soname, flags, path).
///
/// Entries that tie on every sort key keep the caller's order, just as ldconfig keeps
/// its directory order; the loader prefers the first of them. No extension section is
/// written, so `glibc-hwcaps` entries (see [`HWCAP_EXTENSION`]) are kept but never
/// chosen by the loader. Strings are cut at an embedded NUL by every reader.
///
/// # Panics
/// If the strings do not fit in the format's 32-bit offsets (a cache over 4 GiB).
pub fn write_cache(entries: &[OwnedEntry]) -> Vec<u8> {
    let mut seen = HashSet::new();
    let mut sorted: Vec<&OwnedEntry> = entries
        .iter()
        .filter(|e| seen.insert((e.soname.as_str(), e.flags, e.path.as_str())))
        .collect();
    sorted.sort_by(|a, b| compare_entries(a, b));

    let strings_start = NEW_HEADER_LEN + NEW_ENTRY_LEN * sorted.len();
    let mut strings = StringTable::new(strings_start);
    let offsets: Vec<(u32, u32)> = sorted
        .iter()
        .map(|e| {
            let path = strings.insert(&e.path);
            // Most sonames are the tail of their path and can share its bytes.
            let soname = match e.path.strip_suffix(e.soname.as_str()) {
                Some(dir) => path + to_u32(dir.len()),
                None => strings.insert(&e.soname),
            };
            (soname, path)
        })
        .collect();

    let mut out = Vec::with_capacity(strings_start + strings.bytes.len());
    out.extend_from_slice(NEW_MAGIC);
    out.extend_from_slice(&to_u32(sorted.len()).to_le_bytes());
    out.extend_from_slice(&to_u32(strings.bytes.len()).to_le_bytes());
    out.extend_from_slice(&[ENDIAN_LITTLE, 0, 0, 0]);
    // Zero extension_offset and unused words: no extension section.
    out.resize(NEW_HEADER_LEN, 0);
    for (entry, (soname, path)) in sorted.iter().zip(offsets) {
        out.extend_from_slice(&entry.flags.to_le_bytes());
        out.extend_from_slice(&soname.to_le_bytes());
        out.extend_from_slice(&path.to_le_bytes());
        out.extend_from_slice(&entry.osversion.to_le_bytes());
        out.extend_from_slice(&entry.hwcap.to_le_bytes());
    }
    out.extend_from_slice(&strings.bytes);
    out
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("ld.so.cache larger than 4 GiB")
}

/// NUL-terminated strings, each stored once, addressed from the header.
struct StringTable<'s> {
    base: usize,
    bytes: Vec<u8>,
    offsets: HashMap<&'s str, u32>,
}

impl<'s> StringTable<'s> {
    fn new(base: usize) -> Self {
        StringTable {
            base,
            bytes: Vec::new(),
            offsets: HashMap::new(),
        }
    }

    fn insert(&mut self, s: &'s str) -> u32 {
        if let Some(&offset) = self.offsets.get(s) {
            return offset;
        }
        let offset = to_u32(self.base + self.bytes.len());
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        self.offsets.insert(s, offset);
        offset
    }
}

/// ldconfig's order: descending soname, then flags, then hwcap specificity, then osversion.
fn compare_entries(a: &OwnedEntry, b: &OwnedEntry) -> Ordering {
    compare_sonames(b.soname.as_bytes(), a.soname.as_bytes())
        .then_with(|| b.flags.cmp(&a.flags))
        .then_with(|| compare_hwcaps(a.hwcap, b.hwcap))
        .then_with(|| b.osversion.cmp(&a.osversion))
}

/// The loader stops scanning at the first entry outside `glibc-hwcaps`, so
/// those come first; ldconfig orders them by subdirectory name, for which the
/// index is our only stand-in. Legacy hwcap entries go most bits first, then
/// highest value first (verified with nested `tls/x86_64`-style directories).
fn compare_hwcaps(a: u64, b: u64) -> Ordering {
    let (a_ext, b_ext) = (a & HWCAP_EXTENSION != 0, b & HWCAP_EXTENSION != 0);
    b_ext.cmp(&a_ext).then_with(|| {
        if a_ext {
            (a as u32).cmp(&(b as u32))
        } else {
            b.count_ones().cmp(&a.count_ones()).then(b.cmp(&a))
        }
    })
}

/// The libcmp rule of the loader's binary search: runs of decimal digits
/// compare as numbers and after any other character (the end of the string
/// included); other bytes compare as C `char`, which is signed on x86, so
/// bytes >= 0x80 sort per target exactly as the local loader sorts them. A
/// NUL byte ends the string, as in C.
///
/// glibc accumulates digit runs in an `int`; we compare them exactly instead,
/// which agrees for every run below 2^31 and stays a total order beyond it.
pub fn compare_sonames(a: &[u8], b: &[u8]) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        let ca = a.first().copied().unwrap_or(0);
        let cb = b.first().copied().unwrap_or(0);
        match (ca.is_ascii_digit(), cb.is_ascii_digit()) {
            (true, true) => {
                let (a_digits, a_rest) = split_digits(a);
                let (b_digits, b_rest) = split_digits(b);
                match compare_numbers(a_digits, b_digits) {
                    Ordering::Equal => (a, b) = (a_rest, b_rest),
                    unequal => return unequal,
                }
            }
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            (false, false) if ca != cb => return c_char_value(ca).cmp(&c_char_value(cb)),
            (false, false) if ca == 0 => return Ordering::Equal,
            (false, false) => (a, b) = (&a[1..], &b[1..]),
        }
    }
}

fn c_char_value(byte: u8) -> i32 {
    i32::from(byte as std::ffi::c_char)
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    s.split_at(len)
}

fn compare_numbers(a: &[u8], b: &[u8]) -> Ordering {
    let a = trim_leading_zeros(a);
    let b = trim_leading_zeros(b);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn trim_leading_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&b| b == b'0').count();
    &digits[zeros..]
}

/// Human name of the flags as `ldconfig -p` prints them, e.g. "libc6,x86-64" (for tests and debugging)
///
/// Matches glibc 2.36 (Debian 12), which predates names for the LoongArch
/// flags and prints them as decimal numbers like any unknown architecture.
pub fn describe_flags(flags: i32) -> String {
    let kind = match flags & FLAG_TYPE_MASK {
        FLAG_LIBC4 => "libc4",
        FLAG_ELF => "ELF",
        FLAG_ELF_LIBC5 => "libc5",
        FLAG_ELF_LIBC6 => "libc6",
        _ => "unknown",
    };
    let arch = match flags & FLAG_ARCH_MASK {
        0 => "",
        FLAG_SPARC_LIB64 | FLAG_S390_LIB64 | FLAG_POWERPC_LIB64 | FLAG_MIPS64_LIBN64 => ",64bit",
        FLAG_IA64_LIB64 => ",IA-64",
        FLAG_X8664_LIB64 => ",x86-64",
        FLAG_MIPS64_LIBN32 => ",N32",
        FLAG_X8664_LIBX32 => ",x32",
        FLAG_ARM_LIBHF => ",hard-float",
        FLAG_AARCH64_LIB64 => ",AArch64",
        FLAG_ARM_LIBSF | FLAG_RISCV_FLOAT_ABI_SOFT => ",soft-float",
        FLAG_MIPS_LIB32_NAN2008 => ",nan2008",
        FLAG_MIPS64_LIBN32_NAN2008 => ",N32,nan2008",
        FLAG_MIPS64_LIBN64_NAN2008 => ",64bit,nan2008",
        FLAG_RISCV_FLOAT_ABI_DOUBLE => ",double-float",
        unknown => return format!("{kind},{unknown}"),
    };
    format!("{kind}{arch}")
}

#[cfg(test)]
#[path = "ldcache_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "ldcache_glibc_tests.rs"]
mod glibc_tests;
