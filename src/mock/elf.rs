//! Tiny ELF shared objects that stand in for NVIDIA driver libraries on a simulated GPU host.
//!
//! A file carries exactly what the consumers of a driver library look at, and nothing else: glibc's
//! `ldconfig` reads the program headers (PT_DYNAMIC for DT_SONAME/DT_NEEDED, PT_NOTE for the ABI tag),
//! `ld.so` maps PT_LOAD and needs a symbol hash table to finish `dlopen`, and section-based readers
//! (libelf in libnvidia-container, Go's debug/elf) only find the dynamic section through section
//! headers. There is no code and no symbol besides the mandatory null one.
//!
//! Every address equals its file offset and one PT_LOAD maps the whole file, so no table needs
//! relocating and the output is a pure function of the arguments.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// ELFCLASS64, EM_X86_64.
    X86_64,
    /// ELFCLASS32, EM_386.
    I386,
    /// ELFCLASS64, EM_AARCH64.
    Aarch64,
}

const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u8 = 1;
const ELFOSABI_NONE: u8 = 0;
const EI_NIDENT: usize = 16;
const ET_DYN: u16 = 3;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_NOTE: u32 = 4;
const PT_GNU_STACK: u32 = 0x6474_e551;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

const DT_NULL: usize = 0;
const DT_NEEDED: usize = 1;
const DT_HASH: usize = 4;
const DT_STRTAB: usize = 5;
const DT_SYMTAB: usize = 6;
const DT_STRSZ: usize = 10;
const DT_SYMENT: usize = 11;
const DT_SONAME: usize = 14;

const SHT_STRTAB: u32 = 3;
const SHT_HASH: u32 = 5;
const SHT_DYNAMIC: u32 = 6;
const SHT_NOTE: u32 = 7;
const SHT_DYNSYM: u32 = 11;
const SHF_WRITE: usize = 1;
const SHF_ALLOC: usize = 2;

const NT_GNU_ABI_TAG: u32 = 1;
const ELF_NOTE_OS_LINUX: u32 = 0;
/// namesz, descsz, type, "GNU\0", then os/major/minor/patch.
const ABI_NOTE_SIZE: usize = 12 + 4 + 16;
/// nbucket, nchain, one bucket, one chain entry: the table for a symbol table holding only the
/// null symbol, which is what lets ld.so finish dlopen (it sets up symbol lookup unconditionally).
const HASH_SIZE: usize = 4 * 4;

/// Where a real library keeps what its readers look at, as file offsets: its size, the dynamic
/// string table (and its size: the wanted strings end it, as a linker writes them) and the
/// dynamic section. Everything else of the file is a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub size: u64,
    pub strtab: u64,
    pub strsz: u64,
    pub dynamic: u64,
}

impl Layout {
    /// For a library of `size` bytes whose real layout was not measured (the WSL driver store,
    /// Jetson's): the shape every measured NVIDIA library has, the dynamic string table in the
    /// first pages and the dynamic section in the last sixteenth of the file.
    pub fn like_nvidia(size: u64) -> Layout {
        let size = size.max(0x4000);
        Layout {
            size,
            strtab: 0x800,
            strsz: 0x800,
            dynamic: (size - size / 16) & !0xf,
        }
    }
}

/// A library as the pieces of bytes it holds and where: between them, a sparse file has holes.
#[derive(Debug, PartialEq, Eq)]
pub struct Image {
    pub size: u64,
    pub pieces: Vec<(u64, Vec<u8>)>,
}

impl Image {
    /// The whole file in memory (stub-size images only).
    pub fn into_bytes(self) -> Vec<u8> {
        let mut out = vec![0u8; self.size as usize];
        for (at, piece) in self.pieces {
            out[at as usize..at as usize + piece.len()].copy_from_slice(&piece);
        }
        out
    }

    /// Writes the file sparse: its size is set first and only the pieces are written, so a
    /// 120 MB library takes a few KiB of disk.
    pub fn write_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let _ = std::fs::remove_file(path);
        let file = std::fs::File::create(path)?;
        file.set_len(self.size)?;
        for (at, piece) in &self.pieces {
            file.write_all_at(piece, *at)?;
        }
        Ok(())
    }
}

/// A stub-size shared object: every piece packed after the other (unit tests, dlopen checks).
pub fn shared_object(
    machine: Machine,
    soname: &str,
    needed: &[&str],
    abi_tag: Option<[u32; 3]>,
) -> Vec<u8> {
    library_image(machine, soname, needed, abi_tag, None).into_bytes()
}

/// A shared object (ET_DYN) with DT_SONAME = `soname`, one DT_NEEDED per `needed`, and, when
/// `abi_tag` is given, a GNU `.note.ABI-tag` (PT_NOTE; OS Linux, version major.minor.patch).
/// With a `layout`, the dynamic string table and section sit at a real library's offsets, the
/// section headers end the file at its real size, and a second PT_LOAD (RW, its addresses a
/// page past its offsets as linkers place the data segment) maps the dynamic section, so
/// readers must follow the mapping as they do on NVIDIA's files.
///
/// I386 objects also get DT_NEEDED `libc.so.6` when `needed` lacks it: ldconfig classifies a 32-bit
/// x86 object as libc6 only by that dependency (64-bit ones by their machine alone) and lists it
/// as plain `ELF` otherwise.
pub fn library_image(
    machine: Machine,
    soname: &str,
    needed: &[&str],
    abi_tag: Option<[u32; 3]>,
    layout: Option<&Layout>,
) -> Image {
    let (class, em, page) = match machine {
        Machine::X86_64 => (ELFCLASS64, EM_X86_64, 0x1000),
        Machine::I386 => (ELFCLASS32, EM_386, 0x1000),
        // Linkers default to 64 KiB here: ld.so rejects a p_align below the kernel's page size.
        Machine::Aarch64 => (ELFCLASS64, EM_AARCH64, 0x10000),
    };
    let is64 = class == ELFCLASS64;
    let (ehsize, phentsize, shentsize, symsize, dynsize, wsize) = if is64 {
        (64, 56, 64, 24, 16, 8)
    } else {
        (52, 32, 40, 16, 8, 4)
    };

    let mut needed = needed.to_vec();
    if machine == Machine::I386 && !needed.contains(&"libc.so.6") {
        needed.push("libc.so.6");
    }
    let mut strings = Vec::new();
    let needed_at: Vec<usize> = needed.iter().map(|n| add_str(&mut strings, n)).collect();
    let soname_at = add_str(&mut strings, soname);

    let has_note = abi_tag.is_some();
    let phnum = 3 + usize::from(has_note) + usize::from(layout.is_some());
    let note_off = ehsize + phnum * phentsize;
    let hash_off = align_up(note_off + if has_note { ABI_NOTE_SIZE } else { 0 }, wsize);
    let dynsym_off = hash_off + HASH_SIZE;
    let head_end = dynsym_off + symsize;
    // The table starts with its NUL; the wanted strings close it, as a linker leaves them.
    let (dynstr_off, dynstr_size) = match layout {
        Some(l) => (l.strtab as usize, l.strsz as usize),
        None => (head_end, strings.len() + 1),
    };
    assert!(
        dynstr_off >= head_end && dynstr_size > strings.len(),
        "layout leaves no room for the headers and strings"
    );
    let strings_off = dynstr_size - strings.len();
    let dynamic_off = match layout {
        Some(l) => l.dynamic as usize,
        None => align_up(dynstr_off + dynstr_size, wsize),
    };
    // Where the RW segment starts, and how far its addresses lie past its offsets.
    let (rw_off, shift) = match layout {
        Some(_) => (dynamic_off / page * page, page),
        None => (0, 0),
    };
    assert!(
        layout.is_none() || dynstr_off + dynstr_size <= rw_off,
        "the string table must lie in the read-only segment"
    );

    let mut dynamic: Vec<(usize, usize)> = needed_at
        .iter()
        .map(|&at| (DT_NEEDED, strings_off + at))
        .collect();
    dynamic.extend([
        (DT_SONAME, strings_off + soname_at),
        (DT_HASH, hash_off),
        (DT_STRTAB, dynstr_off),
        (DT_SYMTAB, dynsym_off),
        (DT_STRSZ, dynstr_size),
        (DT_SYMENT, symsize),
        (DT_NULL, 0),
    ]);
    let dynamic_size = dynamic.len() * dynsize;
    assert!(dynamic_off >= dynstr_off + dynstr_size, "layout overlap");

    // .shstrtab comes last, so its own size is known before its header is written.
    let mut names: Vec<&str> = vec![".hash", ".dynsym", ".dynstr", ".dynamic", ".shstrtab"];
    if has_note {
        names.insert(0, ".note.ABI-tag");
    }
    let mut shstrtab = vec![0u8];
    let name_at: Vec<usize> = names.iter().map(|n| add_str(&mut shstrtab, n)).collect();
    let shnum = names.len() + 1;
    // Real libraries end with the section headers; .shstrtab comes right before them.
    let (shstrtab_off, shoff) = match layout {
        Some(l) => {
            let shoff = (l.size as usize - shnum * shentsize) / wsize * wsize;
            (shoff - shstrtab.len(), shoff)
        }
        None => {
            let at = dynamic_off + dynamic_size;
            (at, align_up(at + shstrtab.len(), wsize))
        }
    };
    assert!(shstrtab_off >= dynamic_off + dynamic_size, "layout overlap");
    let total = layout.map_or(shoff + shnum * shentsize, |l| l.size as usize);
    let mut sections = vec![
        (SHT_HASH, hash_off, HASH_SIZE),
        (SHT_DYNSYM, dynsym_off, symsize),
        (SHT_STRTAB, dynstr_off, dynstr_size),
        (SHT_DYNAMIC, dynamic_off, dynamic_size),
        (SHT_STRTAB, shstrtab_off, shstrtab.len()),
    ];
    if has_note {
        sections.insert(0, (SHT_NOTE, note_off, ABI_NOTE_SIZE));
    }
    // Index 0 is the null section; the note, when present, shifts the rest by one.
    let dynsym_idx = names.len() as u32 - 3;
    let dynstr_idx = dynsym_idx + 1;
    let shstrndx = names.len();

    let mut out = Out::new(is64);
    out.bytes(b"\x7fELF");
    out.bytes(&[class, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE]);
    out.pad_to(EI_NIDENT);
    out.u16(ET_DYN);
    out.u16(em);
    out.u32(EV_CURRENT.into());
    out.word(0); // e_entry: a library without code has none
    out.word(ehsize);
    out.word(shoff);
    out.u32(0); // e_flags
    for v in [ehsize, phentsize, phnum, shentsize, shnum, shstrndx] {
        out.u16(v as u16);
    }

    // ld.so adds the load address to .dynamic's pointers in place (glibc >= 2.35 skips that only
    // when PT_DYNAMIC lacks PF_W), so the segment holding it must be writable.
    if layout.is_some() {
        out.phdr(PT_LOAD, PF_R, 0, 0, rw_off, page);
        let rw_size = dynamic_off + dynamic_size - rw_off;
        out.phdr(PT_LOAD, PF_R | PF_W, rw_off, shift, rw_size, page);
    } else {
        out.phdr(PT_LOAD, PF_R | PF_W, 0, 0, total, page);
    }
    out.phdr(
        PT_DYNAMIC,
        PF_R | PF_W,
        dynamic_off,
        shift,
        dynamic_size,
        wsize,
    );
    if has_note {
        out.phdr(PT_NOTE, PF_R, note_off, 0, ABI_NOTE_SIZE, 4);
    }
    // Without PT_GNU_STACK ld.so assumes the object needs an executable stack: older glibc then
    // makes every thread stack executable during dlopen, newer glibc refuses the object.
    out.phdr(PT_GNU_STACK, PF_R | PF_W, 0, 0, 0, 16);

    if let Some([major, minor, patch]) = abi_tag {
        out.pad_to(note_off);
        for v in [4, 16, NT_GNU_ABI_TAG] {
            out.u32(v);
        }
        out.bytes(b"GNU\0");
        for v in [ELF_NOTE_OS_LINUX, major, minor, patch] {
            out.u32(v);
        }
    }
    out.pad_to(hash_off);
    for v in [1, 1, 0, 0] {
        out.u32(v);
    }
    out.pad_to(head_end); // the null symbol is all zeros
    let mut pieces = vec![(0, out.take())];

    out.bytes(&strings);
    pieces.push(((dynstr_off + strings_off) as u64, out.take()));

    // The tables they point to lie in the first segment, where addresses equal offsets.
    for (tag, val) in dynamic {
        out.word(tag);
        out.word(val);
    }
    pieces.push((dynamic_off as u64, out.take()));

    out.bytes(&shstrtab);
    out.pad_to(shoff - shstrtab_off + shentsize); // section 0 is all zeros
    for (&name, (sh_type, off, size)) in name_at.iter().zip(sections) {
        let alloc = off != shstrtab_off;
        let (flags, link, info, align, entsize) = match sh_type {
            SHT_NOTE => (SHF_ALLOC, 0, 0, 4, 0),
            SHT_HASH => (SHF_ALLOC, dynsym_idx, 0, wsize, 4),
            // sh_info: one past the last local symbol, and the null symbol counts as local.
            SHT_DYNSYM => (SHF_ALLOC, dynstr_idx, 1, wsize, symsize),
            SHT_DYNAMIC => (SHF_ALLOC | SHF_WRITE, dynstr_idx, 0, wsize, dynsize),
            _ if alloc => (SHF_ALLOC, 0, 0, 1, 0),
            _ => (0, 0, 0, 1, 0),
        };
        let addr = match sh_type {
            SHT_DYNAMIC => off + shift,
            _ if alloc => off,
            _ => 0,
        };
        out.u32(name as u32);
        out.u32(sh_type);
        out.word(flags);
        out.word(addr);
        out.word(off);
        out.word(size);
        out.u32(link);
        out.u32(info);
        out.word(align);
        out.word(entsize);
    }
    pieces.push((shstrtab_off as u64, out.take()));
    Image {
        size: total as u64,
        pieces,
    }
}

fn add_str(table: &mut Vec<u8>, s: &str) -> usize {
    let at = table.len();
    table.extend_from_slice(s.as_bytes());
    table.push(0);
    at
}

fn align_up(v: usize, align: usize) -> usize {
    v.next_multiple_of(align)
}

/// Little-endian output where `word` is the class-sized field (Elf32_Addr/Off vs Elf64_Addr/Off/Xword).
struct Out {
    buf: Vec<u8>,
    is64: bool,
}

impl Out {
    fn new(is64: bool) -> Self {
        Out {
            buf: Vec::new(),
            is64,
        }
    }
    /// The piece written so far; the next one starts at its own offset 0.
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn word(&mut self, v: usize) {
        if self.is64 {
            self.bytes(&(v as u64).to_le_bytes());
        } else {
            self.u32(v as u32);
        }
    }
    fn pad_to(&mut self, off: usize) {
        debug_assert!(self.buf.len() <= off, "layout overlap at {off}");
        self.buf.resize(off, 0);
    }
    /// p_vaddr and p_paddr are the offset plus `shift`; p_filesz and p_memsz are one value.
    fn phdr(
        &mut self,
        p_type: u32,
        flags: u32,
        off: usize,
        shift: usize,
        size: usize,
        align: usize,
    ) {
        self.u32(p_type);
        if self.is64 {
            self.u32(flags);
        }
        for v in [off, off + shift, off + shift, size, size] {
            self.word(v);
        }
        if !self.is64 {
            self.u32(flags);
        }
        self.word(align);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const LIBS: [&str; 2] = ["libm.so.6", "libdl.so.2"];

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nvbox-elf-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    use crate::testing::skip_or_fail as skip;

    /// Runs a host tool; `None` (test skipped) where it is not installed.
    fn run(tool: &str, args: &[&str]) -> Option<(bool, String, String)> {
        let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
        let exe = path
            .split(':')
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.is_file());
        let Some(exe) = exe else {
            skip(&format!("{tool} is not installed"));
            return None;
        };
        let out = Command::new(exe).args(args).output().unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        Some((out.status.success(), text(out.stdout), text(out.stderr)))
    }

    #[test]
    fn headers_match_the_machine() {
        let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        for (machine, class, em, phoff, phentsize) in [
            (Machine::X86_64, ELFCLASS64, EM_X86_64, 64, 56),
            (Machine::I386, ELFCLASS32, EM_386, 52, 32),
            (Machine::Aarch64, ELFCLASS64, EM_AARCH64, 64, 56),
        ] {
            let b = shared_object(machine, "libcuda.so.1", &LIBS, Some([3, 2, 0]));
            assert_eq!(b[..6], [0x7f, b'E', b'L', b'F', class, ELFDATA2LSB]);
            assert_eq!((u16_at(&b, 16), u16_at(&b, 18)), (ET_DYN, em));
            let phnum = usize::from(u16_at(&b, phoff - 8));
            let types: Vec<u32> = (0..phnum)
                .map(|i| u32_at(&b, phoff + i * phentsize))
                .collect();
            assert_eq!(types, [PT_LOAD, PT_DYNAMIC, PT_NOTE, PT_GNU_STACK]);
            assert!(b.len() < 1100, "{machine:?}: {} bytes", b.len());
        }
    }

    #[test]
    fn output_is_deterministic_and_follows_the_arguments() {
        let so = |soname, needed: &[&str], tag| shared_object(Machine::I386, soname, needed, tag);
        let base = so("libcuda.so.1", &[], None);
        assert_eq!(base, so("libcuda.so.1", &[], None));
        assert_ne!(base, so("libcuda.so.2", &[], None));
        assert_ne!(base, so("libcuda.so.1", &[], Some([3, 2, 0])));
        // libc.so.6 is added once for I386, never twice, and only there.
        assert_eq!(base, so("libcuda.so.1", &["libc.so.6"], None));
        let x86_64 = shared_object(Machine::X86_64, "libcuda.so.1", &[], None);
        assert!(!x86_64.windows(7).any(|w| w == b"libc.so"));
    }

    #[test]
    fn readelf_accepts_the_output() {
        let dir = scratch("readelf");
        for machine in [Machine::X86_64, Machine::I386, Machine::Aarch64] {
            let path = dir.join(format!("{machine:?}.so"));
            let tag = (machine != Machine::Aarch64).then_some([4, 15, 0]);
            fs::write(&path, shared_object(machine, "libcuda.so.1", &LIBS, tag)).unwrap();
            let Some((ok, out, err)) = run("readelf", &["-aW", path.to_str().unwrap()]) else {
                break;
            };
            assert!(ok && err.is_empty(), "{machine:?}: {err}");
            assert!(out.contains("Library soname: [libcuda.so.1]"), "{out}");
            for lib in LIBS {
                assert!(out.contains(&format!("Shared library: [{lib}]")), "{out}");
            }
            assert_eq!(
                out.contains("OS: Linux, ABI: 4.15.0"),
                tag.is_some(),
                "{out}"
            );
        }
        fs::remove_dir_all(dir).unwrap();
    }

    /// The x86 ldconfig knows both classes; `-r` chroots, so this runs as root only.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn ldconfig_links_and_caches_both_classes() {
        use std::os::unix::fs::MetadataExt;
        let root = scratch("ldconfig");
        if fs::metadata(&root).unwrap().uid() != 0 {
            return skip("ldconfig -r needs root");
        }
        let dirs = [
            (Machine::X86_64, "/usr/lib/x86_64-linux-gnu", "libc6,x86-64"),
            (Machine::I386, "/usr/lib/i386-linux-gnu", "libc6"),
        ];
        fs::create_dir_all(root.join("etc")).unwrap();
        let conf: String = dirs.iter().map(|(_, dir, _)| format!("{dir}\n")).collect();
        fs::write(root.join("etc/ld.so.conf"), conf).unwrap();
        for (machine, dir, _) in dirs {
            let dir = root.join(&dir[1..]);
            fs::create_dir_all(&dir).unwrap();
            let lib = shared_object(machine, "libcuda.so.1", &[], None);
            fs::write(dir.join("libcuda.so.535.104.05"), lib).unwrap();
        }
        let Some((ok, _, err)) = run("ldconfig", &["-v", "-r", root.to_str().unwrap()]) else {
            return;
        };
        // Complaints about the host's builtin dirs missing under ROOT are expected, not about ours.
        assert!(ok && !err.contains("libcuda"), "{err}");
        let cache = root.join("etc/ld.so.cache");
        let (_, listing, _) = run("ldconfig", &["-p", "-C", cache.to_str().unwrap()]).unwrap();
        for (_, dir, flags) in dirs {
            let line = format!("\tlibcuda.so.1 ({flags}) => {dir}/libcuda.so.1\n");
            assert!(listing.contains(&line), "no {line:?} in\n{listing}");
            let link = fs::read_link(root.join(format!("{}/libcuda.so.1", &dir[1..]))).unwrap();
            assert_eq!(link, Path::new("libcuda.so.535.104.05"));
        }
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn dlopen_accepts_the_x86_64_object() {
        let dir = scratch("dlopen");
        let path = dir.join("libnvidia-ml.so.1");
        let lib = shared_object(Machine::X86_64, "libnvidia-ml.so.1", &LIBS, Some([3, 2, 0]));
        fs::write(&path, lib).unwrap();
        let script = format!("import ctypes; ctypes.CDLL({:?})", path.to_str().unwrap());
        if let Some((ok, _, err)) = run("python3", &["-c", &script]) {
            assert!(ok, "{err}");
        }
        fs::remove_dir_all(dir).unwrap();
    }
}
