//! ld.so.cache reader and writer against the system's glibc: caches written by `ldconfig`
//! in every format are read as `ldconfig -p` lists them, ours are listed and used by glibc.

use super::*;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use super::tests::{LIBC6_X86_64, owned};

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
