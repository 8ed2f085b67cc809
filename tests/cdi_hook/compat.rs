//! enable-cuda-compat: numeric major comparison, the ELF note matrix, confinement.

use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;

use super::*;

/// A shared object carrying only a `.note.cuda.fwd_compatibility` section with `json`.
fn compat_elf(json: &str) -> Vec<u8> {
    let owner = b"NVIDIA Corporation\0";
    let pad4 = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(4) * 4, 0);
    let mut note = Vec::new();
    note.extend((owner.len() as u32).to_le_bytes());
    note.extend((json.len() as u32).to_le_bytes());
    note.extend(1u32.to_le_bytes());
    note.extend(owner);
    pad4(&mut note);
    note.extend(json.as_bytes());
    pad4(&mut note);
    let strtab = b"\0.shstrtab\0.note.cuda.fwd_compatibility\0";
    let note_at = 64u64;
    let strtab_at = note_at + note.len() as u64;
    let shoff = (strtab_at + strtab.len() as u64).div_ceil(8) * 8;
    let mut f = vec![0u8; 64];
    f[..4].copy_from_slice(b"\x7fELF");
    (f[4], f[5], f[6]) = (2, 1, 1);
    f[16..18].copy_from_slice(&3u16.to_le_bytes());
    f[18..20].copy_from_slice(&62u16.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[40..48].copy_from_slice(&shoff.to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[58..60].copy_from_slice(&64u16.to_le_bytes());
    f[60..62].copy_from_slice(&3u16.to_le_bytes());
    f[62..64].copy_from_slice(&2u16.to_le_bytes());
    f.extend(&note);
    f.extend(strtab);
    f.resize(shoff as usize, 0);
    let shdr = |name: u32, kind: u32, off: u64, size: u64| {
        let mut h = vec![0u8; 64];
        h[0..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&kind.to_le_bytes());
        h[24..32].copy_from_slice(&off.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        h[48..56].copy_from_slice(&4u64.to_le_bytes());
        h
    };
    f.extend(vec![0u8; 64]);
    f.extend(shdr(11, 7, note_at, note.len() as u64));
    f.extend(shdr(1, 3, strtab_at, strtab.len() as u64));
    f
}

/// Run enable-cuda-compat with the compat library named `file` holding `contents`; returns the
/// 00-compat files' contents.
fn compat_case(file: &str, contents: &[u8], args: &[&str]) -> Vec<String> {
    let f = Fixture::new("compat");
    let dir = f.root().join("usr/local/cuda/compat");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), contents).unwrap();
    let mut all = vec!["enable-cuda-compat"];
    all.extend(args);
    ok(&f.hook(&all));
    files_in(&f.root().join("etc/ld.so.conf.d"), "00-compat-")
        .iter()
        .map(|p| {
            assert_eq!(std::fs::metadata(p).unwrap().mode() & 0o777, 0o644);
            std::fs::read_to_string(p).unwrap()
        })
        .collect()
}

#[test]
fn cuda_compat_compares_majors_as_numbers() {
    let want = vec!["/usr/local/cuda/compat\n".to_owned()];
    assert_eq!(
        compat_case(
            "libcuda.so.100.1.2",
            b"x",
            &["--host-driver-version=99.9.9"]
        ),
        want
    );
    assert!(
        compat_case(
            "libcuda.so.99.1.2",
            b"x",
            &["--host-driver-version=100.0.1"]
        )
        .is_empty()
    );
    assert!(
        compat_case(
            "libcuda.so.550.1.2",
            b"x",
            &["--host-driver-version=550.90.07"]
        )
        .is_empty()
    );
    assert_eq!(
        compat_case(
            "libcuda.so.575.57.08",
            b"x",
            &["--host-driver-version", "550.90.07"]
        ),
        want
    );
    // No version given, or a name without a full version: nothing.
    assert!(compat_case("libcuda.so.575.57.08", b"x", &[]).is_empty());
    assert!(compat_case("libcuda.so.575", b"x", &["--host-driver-version=550.90.07"]).is_empty());
}

#[test]
fn cuda_compat_follows_the_elf_note() {
    let note = compat_elf(r#"{"Format":1,"CUDA Version":"12.9","Driver":[535,550],"Device":[]}"#);
    let want = vec!["/usr/local/cuda/compat\n".to_owned()];
    assert_eq!(
        compat_case(
            "libcuda.so.575.57.08",
            &note,
            &["--host-driver-version=550.90.07"]
        ),
        want
    );
    // The host branch is not in the list.
    assert!(
        compat_case(
            "libcuda.so.575.57.08",
            &note,
            &["--host-driver-version=560.35.03"]
        )
        .is_empty()
    );
    // In the list but the compat library is not newer.
    assert!(
        compat_case(
            "libcuda.so.550.54.14",
            &note,
            &["--host-driver-version=550.90.07"]
        )
        .is_empty()
    );
    // Only a host CUDA version: the note's CUDA version decides.
    assert_eq!(
        compat_case("libcuda.so.575.57.08", &note, &["--host-cuda-version=12.4"]),
        want
    );
    assert!(
        compat_case(
            "libcuda.so.575.57.08",
            &note,
            &["--host-cuda-version=12.10"]
        )
        .is_empty()
    );
    let bad = compat_elf("{not json");
    assert!(
        compat_case(
            "libcuda.so.575.57.08",
            &bad,
            &["--host-driver-version=550.90.07"]
        )
        .is_empty()
    );
}

#[test]
fn cuda_compat_is_confined_and_takes_a_custom_root() {
    let f = Fixture::new("compat-hostile");
    let r = f.root();
    std::fs::create_dir_all(r.join("usr/local")).unwrap();
    std::fs::create_dir_all(r.join("compat")).unwrap();
    std::fs::write(r.join("compat/libcuda.so.999.1.1"), "x").unwrap();
    symlink("/", r.join("usr/local/cuda")).unwrap();
    symlink("/", r.join("etc")).unwrap();
    let host_before = files_in(Path::new("/etc/ld.so.conf.d"), "");
    ok(&f.hook(&["enable-cuda-compat", "--host-driver-version=550.90.07"]));
    let confs = files_in(&r.join("ld.so.conf.d"), "00-compat-");
    assert_eq!(confs.len(), 1);
    assert_eq!(files_in(Path::new("/etc/ld.so.conf.d"), ""), host_before);
    // A custom compat root, and two candidates: a warning and nothing written.
    std::fs::create_dir_all(r.join("opt/compat")).unwrap();
    std::fs::write(r.join("opt/compat/libcuda.so.999.1.1"), "x").unwrap();
    std::fs::write(r.join("opt/compat/libcuda.so.998.1.1"), "x").unwrap();
    let o = f.hook(&[
        "enable-cuda-compat",
        "--host-driver-version=550.90.07",
        "--cuda-compat-container-root=/opt/compat",
    ]);
    ok(&o);
    assert!(stderr(&o).contains("found 2"), "{}", stderr(&o));
    assert_eq!(files_in(&r.join("ld.so.conf.d"), "00-compat-").len(), 1);
    f.assert_outside_untouched();
}
