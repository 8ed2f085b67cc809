//! Driver files inside the driver root: libraries (through its ld.so.cache), binaries (through
//! PATH), IPC endpoints and GSP firmware. Lists are in upstream's table order.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use anyhow::{Result, anyhow, bail};

use super::elf::read_elf_file;
use super::ldcache::{self, LdCache};
use super::root::RootDir;
use super::tables::{self, Group};
use crate::{info, warn};

/// A driver library selected from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    /// Real file inside the driver root (`/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05`).
    pub path: String,
    /// The soname its cache entry is filed under (`libcuda.so.1`): the link the loader opens.
    pub soname: String,
    pub prefix: &'static str,
    pub group: Group,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    pub path: String,
    pub name: &'static str,
    pub group: Group,
}

/// Which word size a library lookup is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bits {
    Native,
    Compat32,
}

/// The `ldconfig` architecture flags of this machine's native and 32-bit libraries.
fn arch_flags(bits: Bits) -> Option<i32> {
    match (bits, std::env::consts::ARCH) {
        (Bits::Native, "x86_64") => Some(ldcache::FLAG_X8664_LIB64),
        (Bits::Native, "aarch64") => Some(ldcache::FLAG_AARCH64_LIB64),
        (Bits::Native, "powerpc64") => Some(ldcache::FLAG_POWERPC_LIB64),
        (Bits::Compat32, "x86_64") => Some(0),
        (Bits::Compat32, "aarch64") => Some(ldcache::FLAG_ARM_LIBHF),
        _ => None,
    }
}

/// Read and parse the driver root's ld.so.cache once; both word sizes are selected from it.
pub fn read_ldcache(root: &RootDir, ldcache_path: &str) -> Result<Vec<u8>> {
    let found = root
        .open_read(ldcache_path)
        .map_err(|e| anyhow!("open failed: {ldcache_path}: {}", lower_io(&e)))?
        .ok_or_else(|| anyhow!("open failed: {ldcache_path}: no such file or directory"))?;
    let mut data = Vec::with_capacity(found.stat.st_size.max(0) as usize);
    std::fs::File::from(found.fd)
        .read_to_end(&mut data)
        .map_err(|e| anyhow!("read failed: {ldcache_path}: {}", lower_io(&e)))?;
    Ok(data)
}

/// Parse the cache once for both word sizes; a bad file is upstream's "unsupported file format".
pub fn parse_ldcache<'a>(bytes: &'a [u8], ldcache_path: &str) -> Result<LdCache<'a>> {
    let cache = LdCache::parse(bytes).map_err(|e| {
        warn!("{ldcache_path}: {}", e.reason());
        anyhow!("unsupported file format: {ldcache_path}")
    })?;
    info!("using ldcache {ldcache_path} ({:?} format)", cache.format());
    Ok(cache)
}

/// Select the driver libraries of one word size: for every cache entry of the right
/// architecture whose soname starts with a table prefix, the real file it points to, if that
/// file's name ends with this driver's exact version (which rejects other drivers' leftovers,
/// CUDA compat libraries and stubs). Output is in table order.
pub fn select_libraries(
    root: &RootDir,
    cache: &LdCache,
    version: &str,
    bits: Bits,
) -> Result<Vec<Library>> {
    let Some(arch) = arch_flags(bits) else {
        return Ok(Vec::new());
    };
    let mut chosen: Vec<Option<(String, String)>> = vec![None; tables::LIBRARIES.len()];
    for entry in cache.entries() {
        if entry.flags & ldcache::FLAG_ARCH_MASK != arch || entry.flags & ldcache::FLAG_ELF == 0 {
            continue;
        }
        let Some(idx) = tables::LIBRARIES
            .iter()
            .position(|(prefix, _)| entry.soname.starts_with(prefix.as_bytes()))
        else {
            continue;
        };
        let Ok(path) = std::str::from_utf8(entry.path) else {
            continue;
        };
        let found = match root.open_read(path) {
            Ok(Some(f)) if f.is_file() => f,
            _ => continue,
        };
        if chosen[idx].as_ref().is_some_and(|(p, _)| *p == found.path) {
            continue;
        }
        let real = found.path.clone();
        info!(
            "considering {real} ({})",
            ldcache::describe_flags(entry.flags)
        );
        if accept_library(found, version, tables::LIBRARIES[idx].0)? {
            chosen[idx] = Some((real, String::from_utf8_lossy(entry.soname).into_owned()));
        }
    }
    let mut libs = Vec::new();
    for ((prefix, group), path) in tables::LIBRARIES.iter().zip(chosen) {
        match path {
            Some((path, soname)) => libs.push(Library {
                path,
                soname,
                prefix,
                group: *group,
            }),
            None if bits == Bits::Native => info!("missing library {prefix}"),
            None => info!("missing compat32 library {prefix}"),
        }
    }
    Ok(libs)
}

/// Upstream's CDI library set beyond the tables: every native `*.so.<version>` in the loader
/// cache that sits in a directory of the driver's libraries (`dirs`), and the
/// any-version libraries ([`tables::CDI_ANY_VERSION_LIBRARIES`], and with `explicit`
/// [`tables::CDI_EXPLICIT_LIBRARIES`]). `known` are the ones the
/// tables already chose. They are mounted whatever the capabilities, so their group is moot.
pub fn select_cdi_libraries(
    root: &RootDir,
    cache: &LdCache,
    version: &str,
    dirs: &[&str],
    known: &[Library],
    explicit: bool,
) -> Result<Vec<Library>> {
    let Some(arch) = arch_flags(Bits::Native) else {
        return Ok(Vec::new());
    };
    let suffix = format!(".so.{version}");
    let mut libs: Vec<Library> = Vec::new();
    for entry in cache.entries() {
        if entry.flags & ldcache::FLAG_ARCH_MASK != arch || entry.flags & ldcache::FLAG_ELF == 0 {
            continue;
        }
        let (Ok(path), Ok(soname)) = (
            std::str::from_utf8(entry.path),
            std::str::from_utf8(entry.soname),
        ) else {
            continue;
        };
        let named = |list: &[&str]| list.iter().any(|p| soname.starts_with(p));
        let any_version = named(tables::CDI_ANY_VERSION_LIBRARIES)
            || (explicit && named(tables::CDI_EXPLICIT_LIBRARIES));
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        // The tables' libraries were chosen (or refused) already: no need to open them again.
        let tabled = tables::LIBRARIES.iter().any(|(p, _)| soname.starts_with(p));
        if tabled || !dirs.contains(&dir) {
            continue;
        }
        let found = match root.open_read(path) {
            Ok(Some(f)) if f.is_file() => f,
            _ => continue,
        };
        let name = found.path.rsplit('/').next().unwrap_or("");
        if !(any_version || name.ends_with(&suffix))
            || known.iter().chain(&libs).any(|l| l.path == found.path)
        {
            continue;
        }
        let real = found.path.clone();
        let mut head = [0u8; 4];
        let is_elf = std::fs::File::from(found.fd)
            .read_exact(&mut head)
            .is_ok_and(|()| head == *b"\x7fELF");
        if !is_elf {
            warn!("skipping {real}: not an ELF file");
            continue;
        }
        info!("selecting {real}");
        libs.push(Library {
            path: real,
            soname: soname.to_owned(),
            prefix: "",
            group: Group::Utility,
        });
    }
    Ok(libs)
}

/// The selector: exact driver version suffix; a real ELF file; for the TLS library, the build
/// carrying the new-TLS ABI note.
fn accept_library(found: super::root::Found, version: &str, prefix: &str) -> Result<bool> {
    let name = found.path.rsplit('/').next().unwrap_or(&found.path);
    let suffix_ok = name
        .strip_suffix(version)
        .is_some_and(|head| head.ends_with('.'));
    if !suffix_ok {
        info!("skipping {}", found.path);
        return Ok(false);
    }
    let file = std::fs::File::from(found.fd);
    let mut magic = [0u8; 4];
    let is_elf = match file.read_exact_at(&mut magic, 0) {
        Ok(()) => &magic == b"\x7fELF",
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
        Err(e) => bail!("read failed: {}: {}", found.path, lower_io(&e)),
    };
    if !is_elf {
        warn!("skipping {}: not an ELF file", found.path);
        return Ok(false);
    }
    // Only the TLS library is told apart by more than its name: its ABI note.
    if prefix == tables::TLS_LIBRARY_PREFIX {
        let tag = read_elf_file(&file).ok().and_then(|e| e.abi_tag);
        if tag != Some(tables::TLS_ABI_TAG) {
            info!("skipping {}: not the new TLS ABI", found.path);
            return Ok(false);
        }
    }
    info!("selecting {}", found.path);
    Ok(true)
}

/// Driver binaries: the first `PATH` directory (inside the driver root) holding a regular file
/// of that name. Empty PATH elements mean the current directory, as for execvp.
pub fn find_binaries(root: &RootDir, path_env: Option<&str>, no_mps: bool) -> Result<Vec<Binary>> {
    find_binaries_of(tables::BINARIES, root, path_env, no_mps)
}

/// [`find_binaries`] over another table (upstream's CDI list).
pub fn find_binaries_of(
    table: &'static [(&'static str, Group)],
    root: &RootDir,
    path_env: Option<&str>,
    no_mps: bool,
) -> Result<Vec<Binary>> {
    let path_env = path_env.ok_or_else(|| anyhow!("environment variable PATH not found"))?;
    let mut bins = Vec::new();
    for (name, group) in table {
        if no_mps && *group == Group::Compute {
            continue;
        }
        let found = path_env.split(':').find_map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            let candidate = format!("{}/{name}", dir.trim_end_matches('/'));
            match root.find(&candidate) {
                Ok(Some(f)) if f.is_file() => Some(f.path),
                _ => None,
            }
        });
        match found {
            Some(path) => {
                info!("selecting {path}");
                bins.push(Binary {
                    path,
                    name,
                    group: *group,
                });
            }
            None => info!("missing binary {name}"),
        }
    }
    Ok(bins)
}

/// What to skip when looking for IPC endpoints (the driver options of the same names).
#[derive(Debug, Clone, Copy, Default)]
pub struct IpcOptions {
    pub no_persistenced: bool,
    pub no_fabricmanager: bool,
    pub no_mps: bool,
}

/// IPC endpoints that exist, as resolved paths, with the group that mounts each.
pub fn find_ipcs(root: &RootDir, opts: IpcOptions, mps_dir: Option<&str>) -> Vec<(String, Group)> {
    let mut wanted = Vec::new();
    if !opts.no_persistenced {
        wanted.push((tables::PERSISTENCED_SOCKET, Group::Utility));
    }
    if !opts.no_fabricmanager {
        wanted.push((tables::FABRICMANAGER_SOCKET, Group::Utility));
    }
    if !opts.no_mps {
        wanted.push((
            mps_dir.unwrap_or(tables::MPS_PIPE_DIRECTORY),
            Group::Compute,
        ));
    }
    let mut ipcs = Vec::new();
    for (path, group) in wanted {
        // A driver root without the `/var/run -> /run` link still has its sockets under `/run`
        // (upstream looks in both).
        let in_run = path.strip_prefix("/var").filter(|p| p.starts_with("/run/"));
        let mut found = root.find(path);
        if let (Ok(None) | Err(_), Some(run)) = (&found, in_run) {
            found = root.find(run);
        }
        match found {
            Ok(Some(f)) => {
                info!("listing ipc path {}", f.path);
                ipcs.push((f.path, group));
            }
            // EACCES counts as missing, so `list` works without root (upstream 1.17.6).
            Ok(None) | Err(_) => info!("missing ipc path {path}"),
        }
    }
    ipcs
}

/// `/lib/firmware/nvidia/<version>/gsp*.bin`, sorted, as container paths.
pub fn find_firmwares(root: &RootDir, version: &str) -> Vec<String> {
    let dir = format!("/lib/firmware/nvidia/{version}");
    let Ok(Some(found)) = root.open_read(&dir) else {
        warn!("missing firmware path {dir}");
        return Vec::new();
    };
    if !found.is_dir() {
        return Vec::new();
    }
    let listing = format!("/proc/self/fd/{}", found.fd.as_raw_fd());
    let Ok(entries) = std::fs::read_dir(listing) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("gsp") && n.ends_with(".bin"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| format!("{dir}/{n}"))
        .filter(|p| matches!(root.find(p), Ok(Some(f)) if f.is_file()))
        .inspect(|p| info!("listing firmware path {p}"))
        .collect()
}

/// Upstream prints errno text in lower case ("no such file or directory").
pub fn lower_io(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}
