//! Where NVIDIA's driver libraries keep what their readers look at, per driver branch: each
//! file's size, its dynamic string table (file offset and DT_STRSZ) and its dynamic section
//! (file offset), so that `nvbox mock` writes libraries as large as the real ones, with their
//! metadata where the real ones have it (libcuda.so.535's dynamic section is 28 MB in).
//!
//! Source: the x86-64 libraries of Debian's non-free packages (`apt-get download`, then
//! `dpkg-deb -x`), read with `readelf -lWd`: 535.261.03 (bookworm), 550.163.01 (trixie),
//! 555.58.02 (experimental). Debian ships no 570: newer branches take the newest measured one.
//! Libraries no measured package ships (nvbox's table keeps libnvidia-container's superset) take
//! the layout of their nearest kin, named in [`KIN`]; 32-bit builds take their 64-bit layout.

use super::elf::Layout;

const fn row(
    prefix: &'static str,
    size: u64,
    strtab: u64,
    strsz: u64,
    dynamic: u64,
) -> (&'static str, Layout) {
    (
        prefix,
        Layout {
            size,
            strtab,
            strsz,
            dynamic,
        },
    )
}

/// Debian's 535.261.03 packages (bookworm, trixie or experimental non-free), x86-64.
const BRANCH_535: &[(&str, Layout)] = &[
    row("libnvidia-eglcore.so", 43915656, 0x1a518, 58306, 0x2985ca8),
    row("libnvidia-glcore.so", 45959040, 0x22c0, 2972, 0x2b6ad50),
    row("libnvidia-glsi.so", 656472, 0x1110, 1193, 0x9edd0),
    row("libnvidia-glvkspirv.so", 40783152, 0x2620, 2891, 0x2653770),
    row("libnvidia-pkcs11-openssl3.so", 10176, 0x390, 239, 0x1e30),
    row("libnvidia-rtcore.so", 118952432, 0x2578, 2953, 0x70e6868),
    row("libnvidia-tls.so", 18632, 0x768, 400, 0x3e00),
    row("libEGL_nvidia.so", 1337472, 0x1300, 1683, 0x130da0),
    row("libGLESv1_CM_nvidia.so", 68000, 0x1c78, 2674, 0xfe10),
    row("libGLESv2_nvidia.so", 117144, 0x3408, 7235, 0x1be10),
    row("libGLX_nvidia.so", 1195552, 0x1a650, 57245, 0x11ed30),
    row("libcuda.so", 29384912, 0x7ae0, 16165, 0x1affd80),
    row("libcudadebugger.so", 10188744, 0x2c68, 6185, 0x9a85f8),
    row("libnvcuvid.so", 9702720, 0x1300, 1655, 0x93f9f8),
    row("libnvidia-allocator.so", 160552, 0xd68, 1079, 0x25e18),
    row("libnvidia-cfg.so", 270840, 0xe88, 1209, 0x3ee08),
    row("libnvidia-encode.so", 248480, 0x740, 641, 0x3bde0),
    row("libnvidia-fbc.so", 133920, 0xf88, 1508, 0x1fdd8),
    row("libnvidia-ml.so", 1946872, 0x43b8, 11936, 0x1d8db8),
    row("libnvidia-ngx.so", 4553912, 0x1f18, 2861, 0x453ab0),
    row("libnvidia-nvvm.so", 86140736, 0x27c8, 3288, 0x3173f78),
    row("libnvidia-opencl.so", 24290072, 0x1de0, 2406, 0x1623d60),
    row("libnvidia-opticalflow.so", 67704, 0x4f8, 408, 0xfdd0),
    row(
        "libnvidia-ptxjitcompiler.so",
        23357184,
        0x1668,
        2056,
        0x1641740,
    ),
    row("libnvidia-vulkan-producer.so", 22856, 0xce0, 1605, 0x4e18),
    row("libnvoptix.so", 58633480, 0x2cb0, 3533, 0x3784220),
    row("libvdpau_nvidia.so", 642256, 0xf88, 1042, 0x9bd38),
];

/// Debian's 550.163.01 packages (bookworm, trixie or experimental non-free), x86-64.
const BRANCH_550: &[(&str, Layout)] = &[
    row("libnvidia-eglcore.so", 30352200, 0x1a5c0, 58426, 0x1c96098),
    row("libnvidia-glcore.so", 32464992, 0x2438, 3058, 0x1e8ad30),
    row("libnvidia-glsi.so", 582808, 0x1210, 1226, 0x8cdb8),
    row("libnvidia-glvkspirv.so", 9062480, 0x1fc8, 2299, 0x828858),
    row("libnvidia-gpucomp.so", 43659040, 0x2100, 2501, 0x2927458),
    row("libnvidia-pkcs11-openssl3.so", 10176, 0x390, 239, 0x1e30),
    row("libnvidia-rtcore.so", 76336528, 0x2540, 2996, 0x4842c68),
    row("libnvidia-tls.so", 18632, 0x768, 400, 0x3e00),
    row("libEGL_nvidia.so", 1345696, 0x1338, 1704, 0x132da8),
    row("libGLESv1_CM_nvidia.so", 68000, 0x1c78, 2674, 0xfe10),
    row("libGLESv2_nvidia.so", 117144, 0x3408, 7235, 0x1be10),
    row("libGLX_nvidia.so", 1203776, 0x1a638, 57245, 0x120d30),
    row("libcuda.so", 28712096, 0x7ef0, 17034, 0x1a66d98),
    row("libcudadebugger.so", 10524136, 0x2ef8, 6371, 0x9fa5f8),
    row("libnvcuvid.so", 10566992, 0x1338, 1677, 0xa129c0),
    row("libnvidia-allocator.so", 168808, 0xda0, 1101, 0x27df8),
    row("libnvidia-cfg.so", 398968, 0x1d00, 2765, 0x5ddc8),
    row("libnvidia-encode.so", 277152, 0x740, 641, 0x42dd8),
    row("libnvidia-fbc.so", 137824, 0xc70, 1150, 0x20de8),
    row("libnvidia-ml.so", 2082360, 0x45f0, 12585, 0x1f9db8),
    row("libnvidia-ngx.so", 4562136, 0x1f18, 2861, 0x455ab0),
    row("libnvidia-nvvm.so", 86842616, 0x27e0, 3315, 0x321e6d8),
    row("libnvidia-opencl.so", 23613128, 0x1d70, 2388, 0x1589d98),
    row("libnvidia-opticalflow.so", 67704, 0x4f8, 408, 0xfdd0),
    row(
        "libnvidia-ptxjitcompiler.so",
        28674464,
        0x16d8,
        2123,
        0x1b52730,
    ),
    row("libnvoptix.so", 59923688, 0x2d20, 3564, 0x38b6520),
    row("libvdpau_nvidia.so", 654544, 0xfd8, 1072, 0x9ed98),
];

/// Debian's 555.58.02 packages (bookworm, trixie or experimental non-free), x86-64.
const BRANCH_555: &[(&str, Layout)] = &[
    row("libnvidia-eglcore.so", 31622528, 0x1a5e0, 58540, 0x1dcc078),
    row("libnvidia-glcore.so", 33706656, 0x2450, 3170, 0x1fb9d30),
    row("libnvidia-glsi.so", 586936, 0x1268, 1365, 0x8ddc0),
    row("libnvidia-glvkspirv.so", 9102864, 0x1c60, 2002, 0x830858),
    row("libnvidia-gpucomp.so", 38741224, 0x2090, 2474, 0x24774b0),
    row("libnvidia-pkcs11-openssl3.so", 10176, 0x390, 238, 0x1e30),
    row("libnvidia-rtcore.so", 77699760, 0x2540, 2987, 0x498fc28),
    row("libnvidia-tls.so", 18632, 0x768, 399, 0x3e00),
    row("libEGL_nvidia.so", 1341568, 0x1300, 1682, 0x131da8),
    row("libGLESv1_CM_nvidia.so", 68000, 0x1c78, 2674, 0xfe10),
    row("libGLESv2_nvidia.so", 117144, 0x3408, 7235, 0x1be10),
    row("libGLX_nvidia.so", 1207840, 0x1a5e0, 57203, 0x121d30),
    row("libcuda.so", 28094872, 0x8120, 17388, 0x1a26d90),
    row("libcudadebugger.so", 10678152, 0x2ef8, 6393, 0xa1f618),
    row("libnvcuvid.so", 10583496, 0x1370, 1795, 0xa16a00),
    row("libnvidia-allocator.so", 172904, 0xe88, 1267, 0x28e08),
    row("libnvidia-cfg.so", 403128, 0x1d58, 2915, 0x5edc8),
    row("libnvidia-encode.so", 285400, 0x760, 648, 0x44dc8),
    row("libnvidia-fbc.so", 261936, 0xc70, 1127, 0x3ede0),
    row("libnvidia-ml.so", 2086584, 0x4698, 12814, 0x1fadb8),
    row("libnvidia-ngx.so", 4562136, 0x1f18, 2861, 0x455ab0),
    row("libnvidia-nvvm.so", 81837504, 0x2658, 3150, 0x2d5ac98),
    row("libnvidia-opencl.so", 22987712, 0x1ec0, 2612, 0x1547d90),
    row("libnvidia-opticalflow.so", 67704, 0x4f8, 408, 0xfdd0),
    row(
        "libnvidia-ptxjitcompiler.so",
        29518368,
        0x16f0,
        2129,
        0x1c20690,
    ),
    row("libnvoptix.so", 90196064, 0x2db0, 3621, 0x554a400),
    row("libvdpau_nvidia.so", 654608, 0x1010, 1190, 0x9ed98),
];

/// Libraries of nvbox's table that no measured package ships, and the measured one each is
/// written like: the OpenSSL 1.1 build of the PKCS#11 module; the NVSwitch query library (the
/// fabric manager's package, not Debian's); compiler pieces of older drivers; the capture and
/// graphics helpers of older drivers; the tile compiler of 580.
const KIN: &[(&str, &str)] = &[
    ("libnvidia-pkcs11.so", "libnvidia-pkcs11-openssl3.so"),
    ("libnvidia-nscq.so", "libnvidia-ml.so"),
    (
        "libnvidia-fatbinaryloader.so",
        "libnvidia-ptxjitcompiler.so",
    ),
    ("libnvidia-compiler.so", "libnvidia-ptxjitcompiler.so"),
    ("libnvidia-ifr.so", "libnvidia-fbc.so"),
    ("libnvidia-cbl.so", "libnvidia-glsi.so"),
    ("libnvidia-tileiras.so", "libnvidia-nvvm.so"),
];

/// The measured branch whose layouts a driver version gets: its own, else the newest one
/// below it, else the oldest.
fn branch(driver_version: &str) -> &'static [(&'static str, Layout)] {
    let major: u32 = driver_version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    match major {
        555.. => BRANCH_555,
        550.. => BRANCH_550,
        _ => BRANCH_535,
    }
}

/// The layout of a library of the given prefix (`libcuda.so`) on a driver of that version.
pub fn layout(driver_version: &str, prefix: &str) -> Layout {
    let rows = branch(driver_version);
    let find = |name: &str| rows.iter().find(|(p, _)| *p == name).map(|(_, l)| *l);
    let kin = KIN.iter().find(|(p, _)| *p == prefix).map(|(_, k)| *k);
    // A library the branch does not ship (gpucomp before 550) takes the next branch's row.
    find(prefix)
        .or_else(|| kin.and_then(find))
        .or_else(|| {
            let newer = BRANCH_555
                .iter()
                .find(|(p, _)| Some(*p) == kin.or(Some(prefix)));
            newer.map(|(_, l)| *l)
        })
        .unwrap_or_else(|| panic!("no layout for {prefix}: add its row to src/mock/layouts.rs"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::tables;

    #[test]
    fn every_library_of_the_table_has_a_layout_on_every_branch() {
        for version in [
            "470.256.02",
            "535.104.05",
            "550.163.01",
            "570.148.08",
            "580.65.06",
        ] {
            for (prefix, _) in tables::LIBRARIES {
                let l = layout(version, prefix);
                assert!(l.strtab < l.dynamic && l.dynamic < l.size, "{prefix}");
            }
        }
        assert_eq!(layout("535.104.05", "libcuda.so").size, 29_384_912);
        assert_eq!(
            layout("570.1.2", "libcuda.so"),
            layout("555.58.02", "libcuda.so")
        );
    }
}
