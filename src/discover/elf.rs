//! The few facts about an ELF file that driver-library selection needs, read straight from its
//! bytes.
//!
//! Only program headers are consulted, as glibc's `ldconfig` and `ld.so` do: section headers are
//! optional (stripped or hand-made files lack them) and nothing that loads a library trusts them.
//! Every offset, size and count comes from the file and may be hostile, so all arithmetic is
//! checked and every read is a bounds-checked slice: bad input gives an error, never a panic.

use std::fmt;

const ELFMAG: &[u8; 4] = b"\x7fELF";
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_NOTE: u32 = 4;

const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_SONAME: u64 = 14;

const NT_GNU_ABI_TAG: u32 = 1;
const ELF_NOTE_OS_LINUX: u32 = 0;
/// n_namesz, n_descsz, n_type: Elf32_Word in both classes.
const NHDR_SIZE: usize = 12;

/// Facts read from an ELF file's bytes (32 or 64-bit, little-endian). Never panics on hostile input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ElfInfo {
    /// ELFCLASS64 (else ELFCLASS32).
    pub class64: bool,
    /// e_machine: EM_X86_64 (62), EM_386 (3), EM_AARCH64 (183)...
    pub machine: u16,
    /// DT_SONAME, if the dynamic section has one.
    pub soname: Option<String>,
    /// DT_NEEDED entries, in file order.
    pub needed: Vec<String>,
    /// [major, minor, patch] of the GNU ABI tag note (NT_GNU_ABI_TAG) when its OS is Linux.
    pub abi_tag: Option<[u32; 3]>,
}

/// Why bytes are not a readable ELF file; Display gives the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfError(&'static str);

const NOT_ELF: ElfError = ElfError("not an ELF file");
const TRUNCATED: ElfError = ElfError("truncated ELF file");
const MALFORMED: ElfError = ElfError("malformed ELF file");

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ElfError {}

struct Phdr {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    align: u64,
}

/// Reads an ELF file's class, machine, DT_SONAME, DT_NEEDED and GNU ABI tag.
pub fn read_elf(data: &[u8]) -> Result<ElfInfo, ElfError> {
    if !data.starts_with(ELFMAG) {
        return Err(NOT_ELF);
    }
    let class64 = match data.get(EI_CLASS) {
        Some(&ELFCLASS64) => true,
        Some(&ELFCLASS32) => false,
        Some(_) => return Err(ElfError("unsupported ELF class")),
        None => return Err(TRUNCATED),
    };
    match data.get(EI_DATA) {
        Some(&ELFDATA2LSB) => {}
        Some(_) => return Err(ElfError("unsupported ELF byte order (not little-endian)")),
        None => return Err(TRUNCATED),
    }
    let r = Reader(data, class64);
    // Where e_phoff and e_phentsize (e_phnum follows) sit, and the smallest valid e_phentsize.
    let (phoff_at, phentsize_at, min_phentsize) = if class64 { (32, 54, 56) } else { (28, 42, 32) };
    let phoff = r.word(phoff_at)?;
    let (phentsize, phnum) = (r.u16(phentsize_at)?, r.u16(phentsize_at + 2)?);
    if phnum > 0 && phentsize < min_phentsize {
        return Err(MALFORMED);
    }
    let table = slice(data, phoff, u64::from(phentsize) * u64::from(phnum))?;
    // p_offset, p_vaddr, p_filesz, p_align; p_type is first in both classes.
    let (o, v, f, a) = if class64 {
        (8, 16, 32, 48)
    } else {
        (4, 8, 16, 28)
    };
    let mut phdrs = Vec::with_capacity(usize::from(phnum));
    for ph in table.chunks_exact(usize::from(phentsize.max(1))) {
        let ph = Reader(ph, class64);
        let (p_type, offset, vaddr) = (ph.u32(0)?, ph.word(o)?, ph.word(v)?);
        phdrs.push(Phdr {
            p_type,
            offset,
            vaddr,
            filesz: ph.word(f)?,
            align: ph.word(a)?,
        });
    }

    let mut abi_tag = None;
    for ph in phdrs.iter().filter(|ph| ph.p_type == PT_NOTE) {
        abi_tag = abi_tag.or(read_abi_tag(slice(data, ph.offset, ph.filesz)?, ph.align));
    }
    let (mut soname, mut needed) = (None, Vec::new());
    if let Some(dynamic) = phdrs.iter().find(|ph| ph.p_type == PT_DYNAMIC) {
        let width = if class64 { 8 } else { 4 };
        let (mut strtab, mut strsz, mut soname_at, mut needed_at) = (None, None, None, Vec::new());
        for entry in slice(data, dynamic.offset, dynamic.filesz)?.chunks_exact(2 * width) {
            let entry = Reader(entry, class64);
            let (tag, val) = (entry.word(0)?, entry.word(width)?);
            match tag {
                DT_NULL => break,
                DT_NEEDED => needed_at.push(val),
                DT_STRTAB => strtab = Some(val),
                DT_STRSZ => strsz = Some(val),
                DT_SONAME => soname_at = Some(val),
                _ => {}
            }
        }
        if soname_at.is_some() || !needed_at.is_empty() {
            let strings = string_table(data, &phdrs, strtab.ok_or(MALFORMED)?, strsz)?;
            let string = |at| string_at(strings, at);
            soname = soname_at.map(string).transpose()?;
            needed = needed_at
                .into_iter()
                .map(string)
                .collect::<Result<_, _>>()?;
        }
    }
    let machine = r.u16(18)?;
    Ok(ElfInfo {
        class64,
        machine,
        soname,
        needed,
        abi_tag,
    })
}

/// DT_STRTAB holds a virtual address; the PT_LOAD containing it says where that lies in the file
/// (the two differ in later segments of a linked library, e.g. by a page in the RW one).
fn string_table<'a>(
    data: &'a [u8],
    phdrs: &[Phdr],
    addr: u64,
    size: Option<u64>,
) -> Result<&'a [u8], ElfError> {
    let load = phdrs
        .iter()
        .find(|ph| {
            ph.p_type == PT_LOAD && addr.checked_sub(ph.vaddr).is_some_and(|d| d < ph.filesz)
        })
        .ok_or(MALFORMED)?;
    let offset = load
        .offset
        .checked_add(addr - load.vaddr)
        .ok_or(MALFORMED)?;
    let size = size.unwrap_or_else(|| (data.len() as u64).saturating_sub(offset));
    slice(data, offset, size)
}

fn string_at(strings: &[u8], at: u64) -> Result<String, ElfError> {
    let tail = strings.get(usize::try_from(at).map_err(|_| MALFORMED)?..);
    let tail = tail.ok_or(MALFORMED)?;
    let len = tail.iter().position(|&b| b == 0).ok_or(MALFORMED)?;
    String::from_utf8(tail[..len].to_vec()).map_err(|_| MALFORMED)
}

/// The first GNU ABI tag note in a PT_NOTE segment, if its OS is Linux.
///
/// As in glibc's ldconfig: p_align 8 means 8-byte aligned notes (gABI for ELF64, what newer linkers
/// emit when .note.gnu.property shares the segment), p_align 4 or less means 4-byte alignment (the
/// Linux convention for both classes), and other alignments are not read. A malformed note ends
/// the walk rather than failing the file: notes are advisory.
fn read_abi_tag(mut notes: &[u8], p_align: u64) -> Option<[u32; 3]> {
    let align = match p_align {
        0..=4 => 4,
        8 => 8,
        _ => return None,
    };
    let word = |b: &[u8], at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    while notes.len() >= NHDR_SIZE {
        let namesz = usize::try_from(word(notes, 0)?).ok()?;
        let descsz = usize::try_from(word(notes, 4)?).ok()?;
        let name_end = NHDR_SIZE.checked_add(namesz)?;
        let desc_at = name_end.checked_next_multiple_of(align)?;
        let desc_end = desc_at.checked_add(descsz)?;
        let name = notes.get(NHDR_SIZE..name_end)?;
        let desc = notes.get(desc_at..desc_end)?;
        if name == b"GNU\0" && word(notes, 8)? == NT_GNU_ABI_TAG && descsz == 16 {
            let [os, major, minor, patch] = [0, 4, 8, 12].map(|at| word(desc, at).unwrap_or(0));
            return (os == ELF_NOTE_OS_LINUX).then_some([major, minor, patch]);
        }
        // The last note's padding may be cut off by p_filesz.
        let next = desc_end.checked_next_multiple_of(align)?.min(notes.len());
        notes = &notes[next..];
    }
    None
}

/// `len` bytes at `offset`; offsets and sizes come from the file, so both may be absurd.
fn slice(data: &[u8], offset: u64, len: u64) -> Result<&[u8], ElfError> {
    let start = usize::try_from(offset).map_err(|_| TRUNCATED)?;
    let end = start.checked_add(usize::try_from(len).map_err(|_| TRUNCATED)?);
    data.get(start..end.ok_or(TRUNCATED)?).ok_or(TRUNCATED)
}

/// Bounds-checked little-endian reads from a slice of an ELF file of the given class (`true` for
/// ELFCLASS64); `word` is the class-sized field (Elf32/Elf64 Addr, Off, Sword/Sxword...).
struct Reader<'a>(&'a [u8], bool);

impl Reader<'_> {
    fn array<const N: usize>(&self, at: usize) -> Result<[u8; N], ElfError> {
        let bytes = self.0.get(at..).and_then(|b| b.get(..N)).ok_or(TRUNCATED);
        bytes?.try_into().map_err(|_| TRUNCATED)
    }
    fn u16(&self, at: usize) -> Result<u16, ElfError> {
        self.array(at).map(u16::from_le_bytes)
    }
    fn u32(&self, at: usize) -> Result<u32, ElfError> {
        self.array(at).map(u32::from_le_bytes)
    }
    fn u64(&self, at: usize) -> Result<u64, ElfError> {
        self.array(at).map(u64::from_le_bytes)
    }
    fn word(&self, at: usize) -> Result<u64, ElfError> {
        if self.1 {
            self.u64(at)
        } else {
            self.u32(at).map(u64::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn le(values: &[u64], width: u64) -> Vec<u8> {
        values
            .iter()
            .flat_map(|v| v.to_le_bytes()[..width as usize].to_vec())
            .collect()
    }

    fn pad(b: &mut Vec<u8>, align: u64) {
        b.resize(b.len().next_multiple_of(align as usize), 0);
    }

    /// A library laid out like a linked one: .dynstr and .dynamic sit in a second PT_LOAD whose
    /// vaddr is 0x1000 past its offset, and the ABI tag follows a note whose 12-byte descriptor
    /// needs padding when the PT_NOTE segment is 8-byte aligned.
    fn fixture(class64: bool, note_align: u64) -> Vec<u8> {
        let (ehsize, phentsize, w) = if class64 { (64, 56, 8) } else { (52, 32, 4) };
        let mut notes = Vec::new();
        for (n_type, desc) in [(3, vec![0xaa; 12]), (1, le(&[0, 5, 10, 1], 4))] {
            notes.extend(le(&[4, desc.len() as u64, n_type], 4));
            notes.extend(b"GNU\0");
            pad(&mut notes, note_align);
            notes.extend(desc);
            pad(&mut notes, note_align);
        }
        let strings = b"\0libfoo.so.1\0libc.so.6\0libm.so.6\0";
        let (notes_len, str_len) = (notes.len() as u64, strings.len() as u64);
        let notes_off = u64::next_multiple_of(ehsize + 4 * phentsize, 8);
        let str_off = (notes_off + notes_len).next_multiple_of(w);
        let dyn_off = (str_off + str_len).next_multiple_of(w);
        let (strtab, shift) = (str_off + 0x1000, 0x1000);
        // DT_NEEDED, DT_SONAME, DT_STRTAB, DT_NEEDED, DT_STRSZ, DT_NULL
        let dynamic = [1, 13, 14, 1, 5, strtab, 1, 23, 10, str_len, 0, 0];
        let dyn_len = dynamic.len() as u64 * w;
        let load_len = dyn_off + dyn_len - str_off;

        let mut b = b"\x7fELF".to_vec();
        b.extend([1 + u8::from(class64), ELFDATA2LSB, 1]); // ELFCLASS32 = 1, ELFCLASS64 = 2
        pad(&mut b, 16);
        b.extend(le(&[3, expected(class64).machine.into()], 2)); // ET_DYN
        b.extend(le(&[1], 4));
        b.extend(le(&[0, ehsize, 0], w)); // no entry point, no section headers
        b.extend(le(&[0], 4)); // e_flags
        b.extend(le(&[ehsize, phentsize, 4, 0, 0, 0], 2));
        for (p_type, off, vaddr, size, align) in [
            (PT_LOAD, 0, 0, str_off, 0x1000),
            (PT_LOAD, str_off, strtab, load_len, 0x1000),
            (PT_DYNAMIC, dyn_off, dyn_off + shift, dyn_len, w),
            (PT_NOTE, notes_off, notes_off, notes_len, note_align),
        ] {
            let mut ph = le(&[p_type.into()], 4);
            ph.extend(le(&[off, vaddr, vaddr, size, size], w));
            // p_flags (RW) comes second in ELF64 and seventh in ELF32.
            let at = if class64 { 4 } else { ph.len() };
            ph.splice(at..at, le(&[6], 4));
            ph.extend(le(&[align], w));
            b.extend(ph);
        }
        pad(&mut b, notes_off);
        b.extend(notes);
        pad(&mut b, str_off);
        b.extend(strings);
        pad(&mut b, dyn_off);
        b.extend(le(&dynamic, w));
        b
    }

    fn expected(class64: bool) -> ElfInfo {
        ElfInfo {
            class64,
            machine: if class64 { 62 } else { 3 },
            soname: Some("libfoo.so.1".into()),
            needed: vec!["libc.so.6".into(), "libm.so.6".into()],
            abi_tag: Some([5, 10, 1]),
        }
    }

    #[test]
    fn reads_hand_made_libraries() {
        for (class64, note_align) in [(true, 4), (true, 8), (false, 4), (false, 8)] {
            assert_eq!(
                read_elf(&fixture(class64, note_align)),
                Ok(expected(class64))
            );
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |b: &[u8]| read_elf(b).unwrap_err().to_string();
        assert_eq!(err(b""), "not an ELF file");
        assert_eq!(err(b"#!/bin/sh\n"), "not an ELF file");
        assert_eq!(err(b"\x7fELF\x02\x01\x01"), "truncated ELF file");
        assert_eq!(err(b"\x7fELF\x03\x01\x01"), "unsupported ELF class");
        assert!(err(b"\x7fELF\x02\x02\x01").contains("byte order"));
        let mut no_strtab = fixture(true, 4);
        let at = no_strtab
            .windows(8)
            .position(|w| w == DT_STRTAB.to_le_bytes())
            .unwrap();
        no_strtab[at] = 0x7f; // an unknown tag now: DT_SONAME and DT_NEEDED point nowhere
        assert_eq!(err(&no_strtab), "malformed ELF file");
        let _: &dyn std::error::Error = &read_elf(b"").unwrap_err();
    }

    #[test]
    fn never_panics_on_truncated_or_corrupted_input() {
        for (class64, note_align) in [(true, 4), (true, 8), (false, 4), (false, 8)] {
            let good = fixture(class64, note_align);
            // The dynamic section ends the file, so every proper prefix lacks part of it.
            for len in 0..good.len() {
                assert!(read_elf(&good[..len]).is_err(), "prefix of {len} bytes");
            }
            for (at, byte) in
                (0..good.len()).flat_map(|at| [(at, good[at] ^ 0xff), (at, 0x80), (at, 0)])
            {
                let mut bad = good.clone();
                bad[at] = byte;
                let _ = read_elf(&bad);
            }
        }
    }

    /// `readelf -hdnW` read the way a person reads it: the reference for real system files.
    fn readelf(path: &str) -> Option<ElfInfo> {
        let out = Command::new("readelf")
            .args(["-hdnW", path])
            .output()
            .ok()?;
        let machine = match std::env::consts::ARCH {
            "x86_64" => 62,
            "aarch64" => 183,
            _ => return None,
        };
        let mut info = ElfInfo {
            machine,
            ..ElfInfo::default()
        };
        for line in String::from_utf8(out.stdout).ok()?.lines().map(str::trim) {
            let bracketed = || Some(line.split_once('[')?.1.split_once(']')?.0.to_string());
            if let Some(class) = line.strip_prefix("Class:") {
                info.class64 = class.trim() == "ELF64";
            } else if line.contains("(SONAME)") {
                info.soname = bracketed();
            } else if line.contains("(NEEDED)") {
                info.needed.extend(bracketed());
            } else if let Some((_, v)) = line.split_once("OS: Linux, ABI: ") {
                let v: Vec<u32> = v.split('.').map(|n| n.parse().unwrap()).collect();
                info.abi_tag = info.abi_tag.or(Some([v[0], v[1], v[2]]));
            }
        }
        Some(info)
    }

    #[test]
    fn agrees_with_readelf_on_system_files() {
        let libdir = format!("/lib/{}-linux-gnu", std::env::consts::ARCH);
        let mut paths = ["libc.so.6", "libz.so.1", "libm.so.6"]
            .map(|l| format!("{libdir}/{l}"))
            .to_vec();
        paths.push(
            std::env::current_exe()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string(),
        ); // no SONAME
        for path in &paths {
            let Ok(data) = std::fs::read(path) else {
                continue;
            };
            let Some(want) = readelf(path) else {
                return crate::testing::skip_or_fail("no readelf, or an unknown architecture");
            };
            assert_eq!(read_elf(&data), Ok(want), "{path}");
            for len in (0..data.len().min(1 << 16)).step_by(97) {
                let _ = read_elf(&data[..len]);
            }
        }
        if let Ok(data) = std::fs::read(&paths[0]) {
            let info = read_elf(&data).unwrap();
            assert_eq!(info.soname.as_deref(), Some("libc.so.6"));
            assert!(info.abi_tag.is_some(), "glibc carries .note.ABI-tag");
        }
    }
}
