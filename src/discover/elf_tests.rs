//! Tests of the bounded ELF reader.

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

/// A library laid out like NVIDIA's libcuda.so.535 (29 MB, its dynamic section 28 MB in), as
/// the mock writes it: the reader takes its facts in a few KiB.
#[test]
fn reads_a_real_size_library_in_a_few_kib() {
    use crate::mock::elf::{Layout, Machine, library_image};
    let layout = Layout {
        size: 29_384_912,
        strtab: 0x7ae0,
        strsz: 16165,
        dynamic: 0x1affd80,
    };
    let image = library_image(
        Machine::X86_64,
        "libcuda.so.1",
        &["libc.so.6"],
        None,
        Some(&layout),
    );
    let path = std::env::temp_dir().join(format!("nvbox-elf-real-{}", std::process::id()));
    image.write_to(&path).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let r = Reader::new(&file).unwrap();
    let info = read_elf_from(&r).unwrap();
    assert_eq!(info.soname.as_deref(), Some("libcuda.so.1"));
    assert_eq!(info.needed, ["libc.so.6"]);
    assert!(r.bytes_read() <= 8 * 1024, "{} bytes read", r.bytes_read());
    std::fs::remove_file(path).unwrap();
}

/// Hostile sizes and offsets: an error, and never more than the bound read.
#[test]
fn hostile_sizes_give_an_error_within_the_bound() {
    let good = fixture(true, 4);
    let phdr = |i: usize| 64 + i * 56;
    let set = |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    // PT_DYNAMIC (third header) claiming 1 GiB, in a file padded to 2 GiB of holes.
    let mut huge = good.clone();
    set(&mut huge, phdr(2) + 32, 1 << 30);
    let padded = Padded(&huge, 2 << 30);
    let r = Reader::new(&padded).unwrap();
    assert_eq!(
        read_elf_from(&r).unwrap_err().to_string(),
        "ELF metadata larger than 64 KiB"
    );
    assert!(r.bytes_read() <= READ_BOUND);
    // Offsets past the end of the file, and ones that overflow.
    for offset in [good.len() as u64, u64::MAX - 4] {
        let mut past = good.clone();
        set(&mut past, phdr(2) + 8, offset);
        assert_eq!(
            read_elf(&past).unwrap_err().to_string(),
            "truncated ELF file"
        );
    }
    // 65535 program headers of 56 bytes: 3.5 MiB claimed.
    let mut many = good.clone();
    many[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
    let padded = Padded(&many, 8 << 20);
    let r = Reader::new(&padded).unwrap();
    assert!(read_elf_from(&r).is_err());
    assert!(r.bytes_read() <= READ_BOUND);
    // Every note segment pointing at the same 60 KiB: the sum is bounded, not each read.
    let mut notes = good.clone();
    set(&mut notes, phdr(3) + 32, 60 * 1024);
    let padded = Padded(&notes, 1 << 20);
    let r = Reader::new(&padded).unwrap();
    let _ = read_elf_from(&r);
    assert!(r.bytes_read() <= READ_BOUND);
}

/// Bytes followed by a hole of zeros up to `size`, as a sparse file reads.
struct Padded<'a>(&'a [u8], u64);

impl Source for Padded<'_> {
    fn size(&self) -> Result<u64, ElfError> {
        Ok(self.1)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ElfError> {
        for (i, b) in buf.iter_mut().enumerate() {
            let at = offset as usize + i;
            *b = self.0.get(at).copied().unwrap_or(0);
        }
        Ok(())
    }
}
