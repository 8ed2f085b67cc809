//! The few facts about an ELF file that nvbox needs, read with a handful of positioned reads.
//!
//! NVIDIA's driver libraries are 10–120 MB and keep their dynamic section near the END of the
//! file (libcuda.so.535: 28 MB in), so a reader that takes "the first megabyte, else the whole
//! file" reads ~150 MB per container start. This one reads the ELF header and program headers
//! (one page), then `pread`s only what is asked for: the dynamic segment, the few strings of
//! the dynamic string table it names (located through the PT_LOAD that maps them), the note
//! segments, and for the CUDA forward-compat note the section headers. Every read counts
//! against [`READ_BOUND`] per file: a hostile file (offsets past EOF, huge or overlapping
//! segments) gives an error, never a large read.
//!
//! Only program headers are consulted for the dynamic facts, as glibc's `ldconfig` and `ld.so`
//! do: section headers are optional and nothing that loads a library trusts them. Every offset,
//! size and count comes from the file and may be hostile, so all arithmetic is checked.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// The most bytes read from one file, whatever it claims: real libraries need 2–10 KiB.
pub const READ_BOUND: u64 = 64 * 1024;
/// The first read: the ELF header and, in every linked library, the program headers and the
/// ABI note. One page, since the kernel reads at least that much anyway.
const HEAD: u64 = 4096;
/// Bytes read past the last wanted string for its terminator: a soname or DT_NEEDED entry is
/// a file name, so NAME_MAX bounds it.
const NAME_SLACK: u64 = 256;

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

/// Facts read from an ELF file (32 or 64-bit, little-endian). Never panics on hostile input.
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

/// Why a file is not a readable ELF file; Display gives the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfError(&'static str);

const NOT_ELF: ElfError = ElfError("not an ELF file");
const TRUNCATED: ElfError = ElfError("truncated ELF file");
const MALFORMED: ElfError = ElfError("malformed ELF file");
const TOO_LARGE: ElfError = ElfError("ELF metadata larger than 64 KiB");
const IO: ElfError = ElfError("read error");

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ElfError {}

/// Something to read ELF bytes from by offset: an open file, or bytes in memory (tests, fuzzing).
pub trait Source {
    fn size(&self) -> Result<u64, ElfError>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ElfError>;
}

impl Source for File {
    fn size(&self) -> Result<u64, ElfError> {
        self.metadata().map(|m| m.len()).map_err(|_| IO)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ElfError> {
        FileExt::read_exact_at(self, buf, offset).map_err(|_| IO)
    }
}

impl Source for [u8] {
    fn size(&self) -> Result<u64, ElfError> {
        Ok(self.len() as u64)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ElfError> {
        let start = usize::try_from(offset).map_err(|_| TRUNCATED)?;
        let end = start.checked_add(buf.len()).ok_or(TRUNCATED)?;
        buf.copy_from_slice(self.get(start..end).ok_or(TRUNCATED)?);
        Ok(())
    }
}

/// A source with its size and the bytes read from it so far, which may not pass [`READ_BOUND`].
pub struct Reader<'a, S: Source + ?Sized> {
    src: &'a S,
    size: u64,
    used: Cell<u64>,
}

impl<'a, S: Source + ?Sized> Reader<'a, S> {
    pub fn new(src: &'a S) -> Result<Self, ElfError> {
        let size = src.size()?;
        Ok(Reader {
            src,
            size,
            used: Cell::new(0),
        })
    }

    /// Bytes read so far: what the fuzz target and the budget tests check.
    pub fn bytes_read(&self) -> u64 {
        self.used.get()
    }

    /// `len` bytes at `offset`; both come from the file, so both may be absurd.
    fn fetch(&self, offset: u64, len: u64) -> Result<Vec<u8>, ElfError> {
        let end = offset.checked_add(len).ok_or(TRUNCATED)?;
        if end > self.size {
            return Err(TRUNCATED);
        }
        let used = self.used.get().saturating_add(len);
        if used > READ_BOUND {
            return Err(TOO_LARGE);
        }
        self.used.set(used);
        let mut buf = vec![0u8; usize::try_from(len).map_err(|_| TOO_LARGE)?];
        self.src.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

struct Phdr {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    align: u64,
}

/// The ELF header's facts and the program headers: the first step of every read.
struct Headers {
    class64: bool,
    machine: u16,
    head: Vec<u8>,
    phdrs: Vec<Phdr>,
}

fn read_headers<S: Source + ?Sized>(r: &Reader<'_, S>) -> Result<Headers, ElfError> {
    let head = r.fetch(0, r.size.min(HEAD))?;
    if !head.starts_with(ELFMAG) {
        return Err(NOT_ELF);
    }
    let class64 = match head.get(EI_CLASS) {
        Some(&ELFCLASS64) => true,
        Some(&ELFCLASS32) => false,
        Some(_) => return Err(ElfError("unsupported ELF class")),
        None => return Err(TRUNCATED),
    };
    match head.get(EI_DATA) {
        Some(&ELFDATA2LSB) => {}
        Some(_) => return Err(ElfError("unsupported ELF byte order (not little-endian)")),
        None => return Err(TRUNCATED),
    }
    let h = Fields(&head, class64);
    // Where e_phoff and e_phentsize (e_phnum follows) sit, and the smallest valid e_phentsize.
    let (phoff_at, phentsize_at, min_phentsize) = if class64 { (32, 54, 56) } else { (28, 42, 32) };
    let phoff = h.word(phoff_at)?;
    let (phentsize, phnum) = (h.u16(phentsize_at)?, h.u16(phentsize_at + 2)?);
    if phnum > 0 && phentsize < min_phentsize {
        return Err(MALFORMED);
    }
    let machine = h.u16(18)?;
    let table = within_or_fetch(r, &head, phoff, u64::from(phentsize) * u64::from(phnum))?;
    // p_offset, p_vaddr, p_filesz, p_align; p_type is first in both classes.
    let (o, v, f, a) = if class64 {
        (8, 16, 32, 48)
    } else {
        (4, 8, 16, 28)
    };
    let mut phdrs = Vec::with_capacity(usize::from(phnum));
    for ph in table.chunks_exact(usize::from(phentsize.max(1))) {
        let ph = Fields(ph, class64);
        phdrs.push(Phdr {
            p_type: ph.u32(0)?,
            offset: ph.word(o)?,
            vaddr: ph.word(v)?,
            filesz: ph.word(f)?,
            align: ph.word(a)?,
        });
    }
    Ok(Headers {
        class64,
        machine,
        head,
        phdrs,
    })
}

/// `len` bytes at `offset`, from the head already read when they lie in it.
fn within_or_fetch<S: Source + ?Sized>(
    r: &Reader<'_, S>,
    head: &[u8],
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, ElfError> {
    let in_head = offset
        .checked_add(len)
        .filter(|&end| end <= head.len() as u64)
        .map(|end| head[offset as usize..end as usize].to_vec());
    match in_head {
        Some(bytes) => Ok(bytes),
        None => r.fetch(offset, len),
    }
}

/// Reads an ELF file's class, machine, DT_SONAME, DT_NEEDED and GNU ABI tag.
pub fn read_elf_file(file: &File) -> Result<ElfInfo, ElfError> {
    read_elf_from(&Reader::new(file)?)
}

/// [`read_elf_file`] over bytes in memory.
pub fn read_elf(data: &[u8]) -> Result<ElfInfo, ElfError> {
    read_elf_from(&Reader::new(data)?)
}

/// The facts, from any source; `r.bytes_read()` afterwards says what it cost.
pub fn read_elf_from<S: Source + ?Sized>(r: &Reader<'_, S>) -> Result<ElfInfo, ElfError> {
    let h = read_headers(r)?;
    let mut abi_tag = None;
    for ph in h.phdrs.iter().filter(|ph| ph.p_type == PT_NOTE) {
        if abi_tag.is_none() {
            let notes = within_or_fetch(r, &h.head, ph.offset, ph.filesz)?;
            abi_tag = read_abi_tag(&notes, ph.align);
        }
    }
    let (mut soname, mut needed) = (None, Vec::new());
    if let Some(dynamic) = h.phdrs.iter().find(|ph| ph.p_type == PT_DYNAMIC) {
        let width = if h.class64 { 8 } else { 4 };
        let (mut strtab, mut strsz, mut soname_at, mut needed_at) = (None, None, None, Vec::new());
        let entries = within_or_fetch(r, &h.head, dynamic.offset, dynamic.filesz)?;
        for entry in entries.chunks_exact(2 * width) {
            let entry = Fields(entry, h.class64);
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
        let wanted = || soname_at.iter().chain(&needed_at).copied();
        if let (Some(first), Some(last)) = (wanted().min(), wanted().max()) {
            let table = string_table(&h.phdrs, strtab.ok_or(MALFORMED)?, strsz, r.size)?;
            // Only the span holding the wanted strings: .dynstr of libstdc++ is 300 KB.
            if last >= table.size {
                return Err(MALFORMED);
            }
            let end = last.saturating_add(NAME_SLACK).min(table.size);
            let at = table.offset.checked_add(first).ok_or(MALFORMED)?;
            let span = within_or_fetch(r, &h.head, at, end - first)?;
            let string = |at: u64| string_at(&span, at - first);
            soname = soname_at.map(string).transpose()?;
            needed = needed_at
                .into_iter()
                .map(string)
                .collect::<Result<_, _>>()?;
        }
    }
    Ok(ElfInfo {
        class64: h.class64,
        machine: h.machine,
        soname,
        needed,
        abi_tag,
    })
}

struct Table {
    offset: u64,
    size: u64,
}

/// DT_STRTAB holds a virtual address; the PT_LOAD containing it says where that lies in the file
/// (the two differ in later segments of a linked library, e.g. by a page in the RW one). Without
/// DT_STRSZ the table runs to the end of its segment.
fn string_table(
    phdrs: &[Phdr],
    addr: u64,
    size: Option<u64>,
    file_size: u64,
) -> Result<Table, ElfError> {
    let load = phdrs
        .iter()
        .find(|ph| {
            ph.p_type == PT_LOAD && addr.checked_sub(ph.vaddr).is_some_and(|d| d < ph.filesz)
        })
        .ok_or(MALFORMED)?;
    let within = addr - load.vaddr;
    let offset = load.offset.checked_add(within).ok_or(MALFORMED)?;
    let size = size.unwrap_or(load.filesz - within);
    if offset.checked_add(size).is_none_or(|end| end > file_size) {
        return Err(TRUNCATED);
    }
    Ok(Table { offset, size })
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
fn read_abi_tag(notes: &[u8], p_align: u64) -> Option<[u32; 3]> {
    let align = match p_align {
        0..=4 => 4,
        8 => 8,
        _ => return None,
    };
    let (_, _, desc) = walk_notes(notes, align).find(|(name, n_type, desc)| {
        *name == b"GNU\0" && *n_type == NT_GNU_ABI_TAG && desc.len() == 16
    })?;
    let word = |at: usize| u32::from_le_bytes(desc[at..at + 4].try_into().unwrap_or_default());
    let [os, major, minor, patch] = [0, 4, 8, 12].map(word);
    (os == ELF_NOTE_OS_LINUX).then_some([major, minor, patch])
}

/// The notes of a note segment or section as (name, type, descriptor); a malformed note ends
/// the walk. The last note's padding may be cut off by the segment's size.
fn walk_notes(notes: &[u8], align: usize) -> impl Iterator<Item = (&[u8], u32, &[u8])> {
    let word = |b: &[u8], at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let mut rest = notes;
    std::iter::from_fn(move || {
        if rest.len() < NHDR_SIZE {
            return None;
        }
        let namesz = usize::try_from(word(rest, 0)?).ok()?;
        let descsz = usize::try_from(word(rest, 4)?).ok()?;
        let n_type = word(rest, 8)?;
        let name_end = NHDR_SIZE.checked_add(namesz)?;
        let desc_at = name_end.checked_next_multiple_of(align)?;
        let desc_end = desc_at.checked_add(descsz)?;
        let name = rest.get(NHDR_SIZE..name_end)?;
        let desc = rest.get(desc_at..desc_end)?;
        let next = desc_end.checked_next_multiple_of(align)?.min(rest.len());
        let note = (name, n_type, desc);
        rest = &rest[next..];
        Some(note)
    })
}

/// The descriptor of the first note owned by `owner` in the section named `section` (both ELF
/// classes), found through the section headers: how NVIDIA marks the CUDA forward-compat
/// libcuda (`.note.cuda.fwd_compatibility`, owner "NVIDIA Corporation"). `Ok(None)` when the
/// file has no such section or note.
pub fn read_section_note(
    file: &File,
    section: &str,
    owner: &str,
) -> Result<Option<Vec<u8>>, ElfError> {
    let r = Reader::new(file)?;
    let h = read_headers(&r)?;
    let f = Fields(&h.head, h.class64);
    // e_shoff, e_shentsize (e_shnum, e_shstrndx follow); sh_offset, sh_size, sh_addralign.
    let (shoff, entsize_at, off_at, size_at, align_at) = if h.class64 {
        (f.word(40)?, 58, 24, 32, 48)
    } else {
        (f.word(32)?, 46, 16, 20, 32)
    };
    let entsize = u64::from(f.u16(entsize_at)?);
    let (shnum, shstrndx) = (f.u16(entsize_at + 2)?, f.u16(entsize_at + 4)?);
    if shnum == 0 {
        return Ok(None);
    }
    if entsize < if h.class64 { 64 } else { 40 } {
        return Err(MALFORMED);
    }
    let table = within_or_fetch(&r, &h.head, shoff, entsize * u64::from(shnum))?;
    let sh = |i: u16| {
        let at = usize::try_from(u64::from(i) * entsize).map_err(|_| MALFORMED)?;
        Ok(Fields(table.get(at..).ok_or(MALFORMED)?, h.class64))
    };
    let names = sh(shstrndx)?;
    let names = within_or_fetch(&r, &h.head, names.word(off_at)?, names.word(size_at)?)?;
    for i in 0..shnum {
        let header = sh(i)?;
        let name_at = u64::from(header.u32(0)?);
        if string_at(&names, name_at).ok().as_deref() != Some(section) {
            continue;
        }
        let notes = r.fetch(header.word(off_at)?, header.word(size_at)?)?;
        let align = if header.word(align_at)? == 8 { 8 } else { 4 };
        let desc = walk_notes(&notes, align)
            .find(|(name, _, _)| name.strip_suffix(b"\0").unwrap_or(name) == owner.as_bytes())
            .map(|(_, _, desc)| desc.to_vec());
        return Ok(desc);
    }
    Ok(None)
}

/// Bounds-checked little-endian reads from a slice of an ELF file of the given class (`true` for
/// ELFCLASS64); `word` is the class-sized field (Elf32/Elf64 Addr, Off, Sword/Sxword...).
struct Fields<'a>(&'a [u8], bool);

impl Fields<'_> {
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
#[path = "elf_tests.rs"]
mod tests;
