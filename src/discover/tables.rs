//! The facts NVML would have told us, as tables: what the driver ships (libraries, binaries, IPC
//! paths, by capability), which CUDA version a driver branch supports, which compute capability a
//! PCI device id has, and which brand NVML reports for a model name. Every row says where it comes
//! from, so a reviewer can check it and a new driver branch is one line.

/// The capability group a driver component belongs to; it is mounted when that group is enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    Utility,
    Compute,
    Ngx,
    Video,
    Graphics,
}

/// Library soname prefixes in libnvidia-container's lookup order, which is also `list`'s output
/// order (reference libnvidia-container.md §3.1). A prefix must be followed by a version: the
/// `.so` ends every prefix, so `libnvidia-pkcs11.so` never matches `libnvidia-pkcs11-openssl3.so.*`.
pub const LIBRARIES: &[(&str, Group)] = &[
    ("libnvidia-ml.so", Group::Utility),
    ("libnvidia-cfg.so", Group::Utility),
    ("libnvidia-nscq.so", Group::Utility),
    ("libcuda.so", Group::Compute),
    ("libcudadebugger.so", Group::Compute),
    ("libnvidia-opencl.so", Group::Compute),
    ("libnvidia-gpucomp.so", Group::Compute),
    ("libnvidia-ptxjitcompiler.so", Group::Compute),
    ("libnvidia-fatbinaryloader.so", Group::Compute),
    ("libnvidia-allocator.so", Group::Compute),
    ("libnvidia-compiler.so", Group::Compute),
    ("libnvidia-pkcs11.so", Group::Compute),
    ("libnvidia-pkcs11-openssl3.so", Group::Compute),
    ("libnvidia-nvvm.so", Group::Compute),
    ("libnvidia-tileiras.so", Group::Compute),
    ("libnvidia-ngx.so", Group::Ngx),
    ("libvdpau_nvidia.so", Group::Video),
    ("libnvidia-encode.so", Group::Video),
    ("libnvidia-opticalflow.so", Group::Video),
    ("libnvcuvid.so", Group::Video),
    ("libnvidia-eglcore.so", Group::Graphics),
    ("libnvidia-glcore.so", Group::Graphics),
    ("libnvidia-tls.so", Group::Graphics),
    ("libnvidia-glsi.so", Group::Graphics),
    ("libnvidia-fbc.so", Group::Graphics),
    ("libnvidia-ifr.so", Group::Graphics),
    ("libnvidia-rtcore.so", Group::Graphics),
    ("libnvoptix.so", Group::Graphics),
    // GLVND vendor libraries; the GLVND loaders themselves belong to the image.
    ("libGLX_nvidia.so", Group::Graphics),
    ("libEGL_nvidia.so", Group::Graphics),
    ("libGLESv2_nvidia.so", Group::Graphics),
    ("libGLESv1_CM_nvidia.so", Group::Graphics),
    ("libnvidia-glvkspirv.so", Group::Graphics),
    ("libnvidia-cbl.so", Group::Graphics),
];

/// The TLS library comes in two builds; only the one tagged with this ELF ABI note is the one
/// a modern glibc loads (reference §4.3; the Debian 535 package's file carries it).
pub const TLS_LIBRARY_PREFIX: &str = "libnvidia-tls.so";
pub const TLS_ABI_TAG: [u32; 3] = [2, 3, 99];

/// Driver binaries searched on PATH inside the driver root (reference §3.2), in output order.
pub const BINARIES: &[(&str, Group)] = &[
    ("nvidia-smi", Group::Utility),
    ("nvidia-debugdump", Group::Utility),
    ("nvidia-persistenced", Group::Utility),
    ("nv-fabricmanager", Group::Utility),
    ("nvidia-cuda-mps-control", Group::Compute),
    ("nvidia-cuda-mps-server", Group::Compute),
];

/// The binaries of upstream's CDI specs (nvidia-container-toolkit pkg/nvcdi/driver-nvml.go
/// `newDriverBinariesDiscoverer`): the IMEX daemon and its control tool, no fabric manager.
pub const CDI_BINARIES: &[(&str, Group)] = &[
    ("nvidia-smi", Group::Utility),
    ("nvidia-debugdump", Group::Utility),
    ("nvidia-persistenced", Group::Utility),
    ("nvidia-cuda-mps-control", Group::Compute),
    ("nvidia-cuda-mps-server", Group::Compute),
    ("nvidia-imex", Group::Utility),
    ("nvidia-imex-ctl", Group::Utility),
];

/// Libraries upstream's CDI specs add whatever their version (driver-nvml.go
/// `getLegacyNVVMLibraryMounts`): the NVVM 7.0 compiler ships as `.so.4`.
pub const CDI_ANY_VERSION_LIBRARIES: &[&str] = &["libnvidia-nvvm70.so."];

/// The feature flag `enable-explicit-driver-libraries` adds these (driver-nvml.go
/// `getExplicitDriverLibraryMounts`): the GLVND and OpenCL loaders and unversioned driver
/// libraries, for driver installs (GKE) whose images do not carry the loaders.
pub const CDI_EXPLICIT_LIBRARIES: &[&str] = &[
    "libEGL.so.",
    "libGL.so.",
    "libGLESv1_CM.so.",
    "libGLESv2.so.",
    "libGLX.so.",
    "libGLdispatch.so.",
    "libOpenCL.so.",
    "libOpenGL.so.",
    "libnvidia-api.so.",
    "libnvidia-egl-xcb.so.",
    "libnvidia-egl-xlib.so.",
];

/// IPC endpoints (reference §3.3), resolved in the driver root. The MPS pipe directory is taken
/// from `CUDA_MPS_PIPE_DIRECTORY` when set.
pub const PERSISTENCED_SOCKET: &str = "/var/run/nvidia-persistenced/socket";
pub const FABRICMANAGER_SOCKET: &str = "/var/run/nvidia-fabricmanager/socket";
pub const MPS_PIPE_DIRECTORY: &str = "/tmp/nvidia-mps";

/// Driver branch (first component of the NVRM version) → the CUDA driver API version it
/// implements, which is what `nvmlSystemGetCudaDriverVersion` and `nvidia-smi` report.
/// Source of every row: NVIDIA's CUDA Toolkit Release Notes, table "CUDA Toolkit and Corresponding
/// Driver Versions" (minimum Linux driver per toolkit GA), cross-checked with the "CUDA Version"
/// nvidia-smi prints on that branch. A branch missing here gets the row of the nearest older
/// branch: a lower bound is safe for `cuda>=` requirements, a guess above it is not.
pub const CUDA_BY_BRANCH: &[(u32, (u32, u32))] = &[
    (367, (8, 0)),  // CUDA 8.0 GA1: >= 367.48
    (375, (8, 0)),  // CUDA 8.0 GA2: >= 375.26
    (384, (9, 0)),  // CUDA 9.0: >= 384.81
    (387, (9, 1)),  // CUDA 9.1: >= 387.26
    (390, (9, 1)),  // CUDA 9.1 (390 branch): >= 390.46
    (396, (9, 2)),  // CUDA 9.2: >= 396.26
    (410, (10, 0)), // CUDA 10.0: >= 410.48
    (418, (10, 1)), // CUDA 10.1: >= 418.39
    (440, (10, 2)), // CUDA 10.2: >= 440.33
    (450, (11, 0)), // CUDA 11.0: >= 450.36.06
    (455, (11, 1)), // CUDA 11.1: >= 455.23
    (460, (11, 2)), // CUDA 11.2: >= 460.27.03
    (465, (11, 3)), // CUDA 11.3: >= 465.19.01
    (470, (11, 4)), // CUDA 11.4: >= 470.42.01
    (495, (11, 5)), // CUDA 11.5: >= 495.29.05
    (510, (11, 6)), // CUDA 11.6: >= 510.39.01
    (515, (11, 7)), // CUDA 11.7: >= 515.43.04
    (520, (11, 8)), // CUDA 11.8: >= 520.61.05
    (525, (12, 0)), // CUDA 12.0: >= 525.60.13
    (530, (12, 1)), // CUDA 12.1: >= 530.30.02
    (535, (12, 2)), // CUDA 12.2: >= 535.54.03
    (545, (12, 3)), // CUDA 12.3: >= 545.23.06
    (550, (12, 4)), // CUDA 12.4: >= 550.54.14
    (555, (12, 5)), // CUDA 12.5: >= 555.42.02
    (560, (12, 6)), // CUDA 12.6: >= 560.28.03
    (565, (12, 7)), // CUDA 12.7 (565 branch, nvidia-smi reports 12.7)
    (570, (12, 8)), // CUDA 12.8: >= 570.26
    (575, (12, 9)), // CUDA 12.9: >= 575.51.03
    (580, (13, 0)), // CUDA 13.0: >= 580.65.06
    (590, (13, 1)), // CUDA 13.1: >= 590.44.01
];

/// The CUDA version of a driver whose NVRM version starts with `branch`.
pub fn cuda_version_for_branch(branch: u32) -> Option<(u32, u32)> {
    CUDA_BY_BRANCH
        .iter()
        .rev()
        .find(|(b, _)| *b <= branch)
        .map(|(_, v)| *v)
}

/// L4T release (major, minor revision) → the CUDA version its JetPack ships with the driver.
/// The first row whose release is at or below the host's wins. Source: NVIDIA's JetPack
/// release notes (JetPack 4.6 = L4T R32.6, 5.1 = R35.2, 6.0 = R36.3, 6.1 = R36.4).
/// (major, minor) of a release or a CUDA version.
type Version2 = (u32, u32);

const CUDA_BY_L4T: &[(Version2, Version2)] = &[
    ((36, 4), (12, 6)),
    ((36, 0), (12, 2)),
    ((34, 0), (11, 4)),
    ((32, 0), (10, 2)),
];

/// The CUDA version of an L4T release (its `/etc/nv_tegra_release` `R<major>`, `REVISION: <minor>`).
pub fn cuda_version_for_l4t(major: u32, minor: u32) -> Option<(u32, u32)> {
    CUDA_BY_L4T
        .iter()
        .find(|(r, _)| *r <= (major, minor))
        .map(|(_, v)| *v)
}

/// NVIDIA PCI device id → CUDA compute capability, by chip family. The first matching row wins,
/// so a narrow range sits above the wider one it overlaps. Sources: the PCI ID Repository (vendor 10de) for id → chip, and
/// NVIDIA's "CUDA GPUs" compute capability list for chip → capability.
const ARCH_BY_DEVICE_ID: &[(u16, u16, (u32, u32))] = &[
    (0x102d, 0x102d, (3, 7)),  // GK210 Tesla K80
    (0x1000, 0x103f, (3, 5)),  // GK110 Kepler (Tesla K20/K40)
    (0x0fc0, 0x12ff, (3, 0)),  // GK10x Kepler
    (0x1340, 0x13bf, (5, 0)),  // GM10x Maxwell
    (0x15f0, 0x15ff, (6, 0)),  // GP100 Tesla P100
    (0x13c0, 0x17ff, (5, 2)),  // GM20x Maxwell (Tesla M40/M60)
    (0x1d80, 0x1dff, (7, 0)),  // GV100 Volta (TITAN V, Tesla V100/V100S)
    (0x1b00, 0x1d7f, (6, 1)),  // GP10x Pascal (Tesla P4/P40, GeForce 10)
    (0x1e00, 0x1fff, (7, 5)),  // TU10x Turing (Tesla T4, RTX 20)
    (0x2080, 0x20ff, (8, 0)),  // GA100 Ampere (A100, A30, A800)
    (0x2180, 0x21ff, (7, 5)),  // TU11x Turing (GTX 16)
    (0x2300, 0x234f, (9, 0)),  // GH100 Hopper (H100, H800, H200, H20, GH200)
    (0x2200, 0x25ff, (8, 6)),  // GA10x Ampere (A10, A40, A16, RTX 30)
    (0x2600, 0x28ff, (8, 9)),  // AD10x Ada (L4, L40, L40S, RTX 40)
    (0x2900, 0x29ff, (10, 0)), // GB100 Blackwell (B200, GB200)
    (0x2b00, 0x2fff, (12, 0)), // GB20x Blackwell (RTX 50, RTX PRO 6000)
    (0x3180, 0x31ff, (10, 3)), // GB110 Blackwell Ultra (B300, GB300)
];

/// The compute capability of an NVIDIA PCI device id; `None` for an id no row covers.
pub fn arch_for_device_id(id: u16) -> Option<(u32, u32)> {
    ARCH_BY_DEVICE_ID
        .iter()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&id))
        .map(|(_, _, arch)| *arch)
}

/// The brand NVML reports, from the product name the driver puts in `information` (NVML's brand
/// is a per-board attribute, and the product name is what encodes it). Order matters: the most
/// specific pattern first. Names as libnvidia-container prints them (reference §4.6).
const BRAND_BY_MODEL: &[(&str, &str)] = &[
    ("Quadro RTX", "QuadroRTX"),
    ("Quadro", "Quadro"),
    ("NVS", "NVS"),
    ("GRID", "GRID"),
    ("Tesla", "Tesla"),
    ("TITAN RTX", "TitanRTX"),
    ("TITAN", "TITAN"),
    ("GeForce", "GeForce"),
    ("RTX", "NvidiaRTX"),
    ("CMP", "Nvidia"),
];

/// NVML brand name for a model and its compute capability. Checked against `nvidia-smi -q`
/// ("Product Brand") on R470–R570 drivers: `NVIDIA H100…`/`NVIDIA A100…` → `Nvidia`;
/// `Tesla V100…`/`Tesla P40` → `Tesla` but `Tesla T4` (Turing) → `Nvidia`; every
/// `NVIDIA GeForce RTX …` → `GeForce`.
pub fn brand_for_model(model: &str, arch: Option<(u32, u32)>) -> &'static str {
    let name = model.strip_prefix("NVIDIA ").unwrap_or(model);
    for (pattern, brand) in BRAND_BY_MODEL {
        if name.starts_with(pattern) {
            // From Turing on, boards still named "Tesla …" carry the NVIDIA brand.
            if *brand == "Tesla" && arch.is_some_and(|a| a >= (7, 5)) {
                return "Nvidia";
            }
            return brand;
        }
    }
    if model.starts_with("NVIDIA") {
        "Nvidia"
    } else {
        "Unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_versions_follow_branches() {
        assert_eq!(cuda_version_for_branch(535), Some((12, 2)));
        assert_eq!(cuda_version_for_branch(550), Some((12, 4)));
        assert_eq!(cuda_version_for_branch(580), Some((13, 0)));
        assert_eq!(cuda_version_for_branch(470), Some((11, 4)));
        // A future branch gets the newest known version, never a guess above it.
        assert_eq!(cuda_version_for_branch(999), Some((13, 1)));
        assert_eq!(cuda_version_for_branch(300), None);
    }

    #[test]
    fn cuda_versions_follow_l4t_releases() {
        assert_eq!(cuda_version_for_l4t(36, 4), Some((12, 6)));
        assert_eq!(cuda_version_for_l4t(36, 3), Some((12, 2)));
        assert_eq!(cuda_version_for_l4t(35, 5), Some((11, 4)));
        assert_eq!(cuda_version_for_l4t(32, 7), Some((10, 2)));
        assert_eq!(cuda_version_for_l4t(28, 2), None);
        assert!(CUDA_BY_L4T.windows(2).all(|w| w[0].0 > w[1].0));
    }

    #[test]
    fn branch_table_is_sorted() {
        assert!(CUDA_BY_BRANCH.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn arch_by_pci_id() {
        assert_eq!(arch_for_device_id(0x2330), Some((9, 0))); // H100 SXM5
        assert_eq!(arch_for_device_id(0x2335), Some((9, 0))); // H200
        assert_eq!(arch_for_device_id(0x20b2), Some((8, 0))); // A100 SXM4 80GB
        assert_eq!(arch_for_device_id(0x1db5), Some((7, 0))); // V100 SXM2 32GB
        assert_eq!(arch_for_device_id(0x1eb8), Some((7, 5))); // T4
        assert_eq!(arch_for_device_id(0x15f8), Some((6, 0))); // P100
        assert_eq!(arch_for_device_id(0x1b38), Some((6, 1))); // P40
        assert_eq!(arch_for_device_id(0x2236), Some((8, 6))); // A10
        assert_eq!(arch_for_device_id(0x27b8), Some((8, 9))); // L4
        assert_eq!(arch_for_device_id(0x2684), Some((8, 9))); // RTX 4090
        assert_eq!(arch_for_device_id(0x2901), Some((10, 0))); // B200
        assert_eq!(arch_for_device_id(0x2b85), Some((12, 0))); // RTX 5090
        assert_eq!(arch_for_device_id(0x0001), None);
    }

    #[test]
    fn brands_as_nvml_reports_them() {
        let b = |m| brand_for_model(m, None);
        assert_eq!(
            brand_for_model("NVIDIA H100 80GB HBM3", Some((9, 0))),
            "Nvidia"
        );
        assert_eq!(b("NVIDIA A100-SXM4-80GB"), "Nvidia");
        assert_eq!(brand_for_model("Tesla T4", Some((7, 5))), "Nvidia");
        assert_eq!(
            brand_for_model("Tesla V100-SXM2-32GB", Some((7, 0))),
            "Tesla"
        );
        assert_eq!(brand_for_model("Tesla P40", Some((6, 1))), "Tesla");
        assert_eq!(b("NVIDIA GeForce RTX 4090"), "GeForce");
        assert_eq!(b("NVIDIA GeForce GTX 1080"), "GeForce");
        assert_eq!(b("Quadro RTX 8000"), "QuadroRTX");
        assert_eq!(b("Quadro P4000"), "Quadro");
        assert_eq!(b("NVIDIA RTX A6000"), "NvidiaRTX");
        assert_eq!(b("NVIDIA TITAN RTX"), "TitanRTX");
        assert_eq!(b("NVIDIA TITAN V"), "TITAN");
        assert_eq!(b("GRID K520"), "GRID");
        assert_eq!(b("Graphics Device"), "Unknown");
    }

    #[test]
    fn library_prefixes_end_in_so() {
        assert!(LIBRARIES.iter().all(|(p, _)| p.ends_with(".so")));
    }
}
