//! A container's environment and mounts (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES,
//! NVIDIA_REQUIRE_*, MIG and IMEX variables, device-list volume mounts) turned into a request,
//! then selected against a fixed simulated host of four GPUs, one with MIG devices.
//! Input: a flags byte (bit 0: privileged), then lines: `KEY=VALUE` environment entries, or
//! `@DEST` for a mount at DEST.
//! Invariants: a selection only names existing GPUs and MIG devices, without duplicates, every
//! MIG device's parent is selected, `all` selects everything, selecting by the selected GPUs'
//! UUIDs gives the same GPUs, and the request's requirements re-evaluate without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nvbox::config::Config;
use nvbox::discover::gpus::{BusId, Gpu, Mig, MigDevice};
use nvbox::request::{Caps, Container, request_from_container};
use nvbox::require::{DeviceFacts, HostFacts, check_requirements};
use nvbox::select::{check_mig_all, select_devices};

fn gpus() -> Vec<Gpu> {
    (0..4u8)
        .map(|i| Gpu {
            index: usize::from(i),
            minor: u32::from(i),
            uuid: format!("GPU-4b2c7a1e-0000-1111-2222-33334444555{i}"),
            bus_id: BusId {
                domain: 0,
                bus: 0x18 + i,
                device: 0,
                function: 0,
            },
            model: "NVIDIA H100 80GB HBM3".into(),
            proc_dir: format!("0000:{:02x}:00.0", 0x18 + i),
            pci_device_id: Some(0x2330),
            arch: Some((9, 0)),
            brand: "Nvidia",
            mig: if i == 1 {
                Mig {
                    capable: true,
                    devices: [(1, 0), (2, 0), (2, 1)]
                        .into_iter()
                        .map(|(gi, ci)| MigDevice {
                            gi,
                            ci,
                            gi_access: format!("gpu1/mig/gi{gi}/access"),
                            ci_access: format!("gpu1/mig/gi{gi}/ci{ci}/access"),
                        })
                        .collect(),
                }
            } else {
                Mig::default()
            },
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut env = Vec::new();
    let mut mounts = Vec::new();
    for line in text.split('\n') {
        match line.strip_prefix('@') {
            Some(dest) => mounts.push(("/dev/null".to_owned(), dest.to_owned())),
            None => env.push(line.to_owned()),
        }
    }
    let container = Container {
        root_path: "rootfs".into(),
        env,
        privileged: flags & 1 != 0,
        mounts,
        annotations: Default::default(),
    };
    let Ok(req) = request_from_container(&container, &Config::default()) else {
        return;
    };
    assert!(Caps::ALL.contains(req.caps));
    assert!(req.imex_channels.iter().all(|&c| c < 1 << 20));
    let Some(spec) = req.device_spec() else {
        return;
    };
    let gpus = gpus();
    let Ok(sel) = select_devices(&gpus, &spec) else {
        return;
    };
    let mut seen = std::collections::HashSet::new();
    assert!(sel.gpus.iter().all(|&i| i < gpus.len() && seen.insert(i)));
    let mut seen = std::collections::HashSet::new();
    for &(g, m) in &sel.migs {
        assert!(g < gpus.len() && m < gpus[g].mig.devices.len() && seen.insert((g, m)));
        assert!(sel.gpus.contains(&g), "MIG device without its GPU");
    }
    if sel.all {
        assert_eq!(sel.gpus.len(), gpus.len());
        assert_eq!(sel.migs.len(), 3);
    }
    // The same GPUs by UUID (MIG devices aside, which bring their parent).
    let uuids: Vec<&str> = sel.gpus.iter().map(|&i| gpus[i].uuid.as_str()).collect();
    let by_uuid = select_devices(&gpus, &uuids.join(",")).expect("selected UUIDs must select");
    let mut a = sel.gpus.clone();
    let mut b = by_uuid.gpus;
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
    let _ = check_mig_all(req.mig_config.as_deref(), req.mig_monitor.as_deref(), &sel);

    let host = HostFacts {
        cuda: Some("12.2".into()),
        driver: Some("535.104.05".into()),
    };
    let devices: Vec<DeviceFacts> = sel
        .gpus
        .iter()
        .map(|&i| DeviceFacts {
            arch: Some(gpus[i].arch_string()),
            brand: Some(gpus[i].brand.into()),
        })
        .collect();
    let _ = check_requirements(&req.requirements, &host, &devices);
});
