//! WSL2: the GPU is reached through `/dev/dxg` (the DirectX kernel driver), not `/dev/nvidia*`,
//! and the user-space driver lives in two places Windows maps into the distribution:
//! `/usr/lib/wsl/lib` (libdxcore and the loaders) and the NVIDIA driver store,
//! `/usr/lib/wsl/drivers/<nv….inf_amd64_<hash>>`. Upstream asks dxcore (dlopen, then a D3DKMT
//! query per adapter) for the store paths; nvbox loads nothing, so it reads the same answer
//! from the files: a store is NVIDIA's when it holds `libcuda.so.1.1`, and among several (old
//! driver versions stay in the store, one per adapter model) the newest driver wins, by the
//! `DriverVer` of the store's `.inf`, then by the age of its `libcuda.so.1.1`.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Result, anyhow, bail};

use super::Roots;
use super::devices::{DeviceNode, find_node};
use super::elf::read_elf_file;
use super::root::{Found, RootDir};

pub const DXG: &str = "/dev/dxg";
pub const WSL_LIB: &str = "/usr/lib/wsl/lib";
pub const DRIVER_STORES: &str = "/usr/lib/wsl/drivers";
/// The file that marks an NVIDIA driver store.
const STORE_MARK: &str = "libcuda.so.1.1";
/// What upstream mounts from `/usr/lib/wsl/lib`: the loaders there find the store themselves.
const DXCORE_LIBRARIES: &[&str] = &["libdxcore.so"];
/// The store files upstream names; everything else matching `*.so*`, `*.bin`, `*.dll` follows.
pub const REQUIRED_STORE_FILES: &[&str] = &[
    "libcuda.so.1.1",
    "libcuda_loader.so",
    "libnvidia-ptxjitcompiler.so.1",
    "libnvidia-ml.so.1",
    "libnvidia-ml_loader.so",
    "libnvdxgdmal.so.1",
    "nvcubins.bin",
    "nvidia-smi",
];
/// Files of a store larger than this are not read for their `.inf` text.
const MAX_INF_SIZE: u64 = 16 << 20;

/// A file the container gets, at its host path, and its soname when it is a shared library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WslFile {
    pub path: String,
    pub soname: Option<String>,
}

/// One NVIDIA driver store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverStore {
    /// `/usr/lib/wsl/drivers/nv_dispi.inf_amd64_…`
    pub path: String,
    /// The NVIDIA driver version its `.inf` names (`560.94`), if it has one.
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wsl {
    pub dxg: DeviceNode,
    /// The store in use, then any other NVIDIA stores found (not used, reported).
    pub store: DriverStore,
    pub other_stores: Vec<DriverStore>,
    /// `/usr/lib/wsl/lib` libraries, then the store's required files, then its other files.
    pub files: Vec<WslFile>,
    /// Required store files that are missing (upstream skips them with a warning).
    pub missing: Vec<String>,
}

impl Wsl {
    /// The store's `nvidia-smi`, which containers get as `/usr/bin/nvidia-smi`.
    pub fn nvidia_smi(&self) -> Option<&str> {
        let want = format!("{}/nvidia-smi", self.store.path);
        self.files
            .iter()
            .map(|f| f.path.as_str())
            .find(|p| *p == want)
    }
}

/// Is this a WSL2 host: `/dev/dxg` a character device under the dev root.
pub fn is_wsl(roots: &Roots) -> bool {
    find_node(roots, DXG).is_some()
}

/// Read the WSL2 driver: `Ok(None)` when there is no `/dev/dxg`; an error when there is one but
/// no NVIDIA driver store (the GPU is not NVIDIA's, or the driver is not installed).
pub fn read_wsl(roots: &Roots) -> Result<Option<Wsl>> {
    let Some(dxg) = find_node(roots, DXG) else {
        return Ok(None);
    };
    let root = RootDir::open(&roots.driver)
        .map_err(|e| anyhow!("open driver root {}: {e}", roots.driver.display()))?;
    let mut stores = find_stores(&root)?;
    if stores.is_empty() {
        bail!(
            "WSL2 host ({DXG} exists) but no NVIDIA driver store: no {DRIVER_STORES}/*/{STORE_MARK}"
        );
    }
    let store = stores.remove(0);
    let mut files = Vec::new();
    for name in DXCORE_LIBRARIES {
        if let Some(f) = regular_file(&root, &format!("{WSL_LIB}/{name}")) {
            files.push(wsl_file(f));
        }
    }
    let mut missing = Vec::new();
    for name in REQUIRED_STORE_FILES {
        match regular_file(&root, &format!("{}/{name}", store.path)) {
            Some(f) => files.push(wsl_file(f)),
            None => missing.push(format!("{}/{name}", store.path)),
        }
    }
    let mut names = list_dir(&root, &store.path);
    names.retain(|n| !REQUIRED_STORE_FILES.contains(&n.as_str()) && is_store_payload(n));
    // Upstream's order: the `*.so*` matches, then `*.bin`, then `*.dll`, each sorted.
    names.sort_by_key(|n| (payload_rank(n), n.clone()));
    for name in names {
        if let Some(f) = regular_file(&root, &format!("{}/{name}", store.path)) {
            files.push(wsl_file(f));
        }
    }
    Ok(Some(Wsl {
        dxg,
        store,
        other_stores: stores,
        files,
        missing,
    }))
}

/// `*.so*`, `*.bin`, `*.dll`, as upstream 1.20's globs.
fn is_store_payload(name: &str) -> bool {
    name.contains(".so") || name.ends_with(".bin") || name.ends_with(".dll")
}

fn payload_rank(name: &str) -> u8 {
    if name.contains(".so") {
        0
    } else if name.ends_with(".bin") {
        1
    } else {
        2
    }
}

/// Every NVIDIA store, the one to use first: newest `.inf` driver version, then newest
/// `libcuda.so.1.1`, then name (for a stable answer).
fn find_stores(root: &RootDir) -> Result<Vec<DriverStore>> {
    let mut found = Vec::new();
    for name in list_dir(root, DRIVER_STORES) {
        let path = format!("{DRIVER_STORES}/{name}");
        let Some(mark) = regular_file(root, &format!("{path}/{STORE_MARK}")) else {
            continue;
        };
        let version = list_dir(root, &path)
            .into_iter()
            .filter(|n| n.ends_with(".inf"))
            .find_map(|n| read_inf_version(root, &format!("{path}/{n}")));
        let mtime = (mark.stat.st_mtime, mark.stat.st_mtime_nsec);
        found.push((version, mtime, path));
    }
    found.sort_by(|a, b| {
        let key = |v: &Option<String>| v.as_deref().map(version_key);
        key(&b.0)
            .cmp(&key(&a.0))
            .then(b.1.cmp(&a.1))
            .then(a.2.cmp(&b.2))
    });
    Ok(found
        .into_iter()
        .map(|(version, _, path)| DriverStore { path, version })
        .collect())
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// `DriverVer = 08/14/2024,32.0.15.6094` → `560.94`: NVIDIA's version is the last five digits of
/// the last two fields. `.inf` files are often UTF-16; both encodings are read.
fn read_inf_version(root: &RootDir, abs: &str) -> Option<String> {
    let f = regular_file(root, abs)?;
    if f.stat.st_size as u64 > MAX_INF_SIZE {
        return None;
    }
    let mut bytes = Vec::new();
    std::fs::File::from(f.fd).read_to_end(&mut bytes).ok()?;
    parse_inf_version(&decode_inf(&bytes))
}

fn decode_inf(bytes: &[u8]) -> String {
    if bytes.starts_with(&[0xff, 0xfe]) {
        let units: Vec<u16> = bytes[2..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        return String::from_utf16_lossy(&units);
    }
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn parse_inf_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| {
        l.trim_start()
            .get(..9)
            .is_some_and(|k| k.eq_ignore_ascii_case("DriverVer"))
    })?;
    let (_, value) = line.split_once('=')?;
    let windows = value.split(',').nth(1)?.trim();
    let fields: Vec<&str> = windows.split('.').collect();
    if fields.len() != 4 || !fields.iter().all(|f| f.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let digits = format!("{}{}", fields[2], fields[3]);
    let last5 = digits.get(digits.len().checked_sub(5)?..)?;
    let major: u32 = last5[..3].parse().ok()?;
    Some(format!("{major}.{}", &last5[3..]))
}

/// A regular file inside the root (opened for reading), not following a final symlink out of
/// it; `None` for anything else.
fn regular_file(root: &RootDir, abs: &str) -> Option<Found> {
    root.open_read(abs).ok().flatten().filter(Found::is_file)
}

/// The names in a directory inside the root; empty when it is not one.
fn list_dir(root: &RootDir, abs: &str) -> Vec<String> {
    let Some(dir) = root.open_read(abs).ok().flatten().filter(Found::is_dir) else {
        return Vec::new();
    };
    read_dir_fd(&dir.fd)
}

fn read_dir_fd(fd: &OwnedFd) -> Vec<String> {
    // The fd's own procfs link names this very directory: no second lookup of the path.
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

fn wsl_file(f: Found) -> WslFile {
    let name = f.path.rsplit('/').next().unwrap_or("");
    let soname = name
        .contains(".so")
        .then(|| read_soname(f.fd, name))
        .flatten();
    WslFile {
        path: f.path,
        soname,
    }
}

/// The DT_SONAME of a shared object (its name when it has none); `None` when not ELF. The
/// bounded ELF reader reads headers only: the dynamic section lies near the end of the file.
pub fn read_soname(fd: OwnedFd, name: &str) -> Option<String> {
    let info = read_elf_file(&std::fs::File::from(fd)).ok()?;
    Some(info.soname.unwrap_or_else(|| name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_version_from_the_inf() {
        let inf = "[Version]\r\nSignature = \"$Windows NT$\"\r\nDriverVer   = 08/14/2024,32.0.15.6094\r\n";
        assert_eq!(parse_inf_version(inf).as_deref(), Some("560.94"));
        assert_eq!(
            parse_inf_version("driverver=1/2/2024,31.0.15.5222").as_deref(),
            Some("552.22")
        );
        assert_eq!(parse_inf_version("DriverVer = 1/2/2024"), None);
        assert_eq!(parse_inf_version("DriverVer = 1/2/2024,1.2.x.4"), None);
        let utf16: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain(inf.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(
            parse_inf_version(&decode_inf(&utf16)).as_deref(),
            Some("560.94")
        );
    }

    #[test]
    fn store_payload_as_upstream_globs() {
        for n in [
            "libnvwgf2umx.so",
            "libnvoptix_loader.so.1",
            "nvcubins.bin",
            "nvcuda64.dll",
        ] {
            assert!(is_store_payload(n), "{n}");
        }
        for n in ["nv_dispi.inf", "nvidia-smi.exe", "NvTelemetry64.cat"] {
            assert!(!is_store_payload(n), "{n}");
        }
    }
}
