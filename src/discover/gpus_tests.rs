use super::*;

const H100: &str = "Model: \t\t NVIDIA H100 80GB HBM3
IRQ:   \t\t 0
GPU UUID: \t GPU-4a2e8ab1-5c36-1f2b-9ae3-d0d2e8b2f5c1
Video BIOS: \t 96.00.74.00.0d
Bus Type: \t PCIe
DMA Size: \t 52 bits
DMA Mask: \t 0xfffffffffffff
Bus Location: \t 0000:18:00.0
Device Minor: \t 3
GPU Firmware: \t 535.104.05
GPU Excluded:\t No
";

#[test]
fn information_file() {
    let info = parse_information(H100).unwrap();
    assert_eq!(info.model, "NVIDIA H100 80GB HBM3");
    assert_eq!(info.uuid, "GPU-4a2e8ab1-5c36-1f2b-9ae3-d0d2e8b2f5c1");
    assert_eq!(info.bus_id.to_string(), "00000000:18:00.0");
    assert_eq!(info.minor, 3);
}

#[test]
fn information_missing_fields() {
    let err = parse_information("Model: X\nGPU UUID: GPU-1\n").unwrap_err();
    assert_eq!(err.to_string(), "no Bus Location");
    let err = parse_information(
        "Model: X\nGPU UUID: GPU-1\nBus Location: 0000:01:00.0\nDevice Minor: x\n",
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "bad Device Minor \"x\"");
}

#[test]
fn bus_ids() {
    let b = BusId::parse("0000:3B:00.0").unwrap();
    assert_eq!((b.domain, b.bus, b.device, b.function), (0, 0x3b, 0, 0));
    assert_eq!(b.to_string(), "00000000:3b:00.0");
    assert_eq!(
        BusId::parse("00000001:ab:1f.1").unwrap().to_string(),
        "00000001:ab:1f.0"
    );
    assert_eq!(
        BusId::parse("0:1:2").unwrap().to_string(),
        "00000000:01:02.0"
    );
    assert!(BusId::parse("0000:100:00.0").is_none());
    assert!(BusId::parse("junk").is_none());
    assert!(BusId::parse("0000:01:00:00.0").is_none());
    // Bus order: domain first, then bus, then device.
    assert!(BusId::parse("0000:ff:00.0").unwrap() < BusId::parse("0001:00:00.0").unwrap());
}

#[test]
fn capability_files() {
    let cap = "DeviceFileMinor: 21\nDeviceFileMode: 292\nDeviceFileModify: 1\n";
    assert_eq!(parse_cap_minor(cap), Some(21));
    assert_eq!(parse_cap_minor("nothing"), None);
    let minors = "config 1\nmonitor 2\ngpu0/gi0/access 3\ngpu0/gi0/ci0/access 4\ngpu1/gi0/access 138\ngpu10/gi0/access 1353\n";
    assert_eq!(mig_minors_with_prefix(minors, "gpu0/"), vec![3, 4]);
    assert_eq!(mig_minors_with_prefix(minors, "gpu1/"), vec![138]);
    assert_eq!(mig_minors_with_prefix(minors, "config"), vec![1]);
}

#[test]
fn numbered_names() {
    assert_eq!(numbered("gi12", "gi"), Some(12));
    assert_eq!(numbered("gi", "gi"), None);
    assert_eq!(numbered("gix", "gi"), None);
    assert_eq!(numbered("ci0", "gi"), None);
}
