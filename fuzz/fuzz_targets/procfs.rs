//! /proc/driver/nvidia text: a GPU's `information` file, the `version` file, capability files
//! and mig-minors. These come from the host, but a driver root or a mock can hold anything.
//! Invariants: a parsed bus id prints and parses back to itself; a parsed driver version comes
//! from the `NVRM version:` line and is made of digits and dots.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nvbox::discover::driver::parse_version;
use nvbox::discover::gpus::{BusId, mig_minors_with_prefix, parse_cap_minor, parse_information};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(info) = parse_information(text) {
        let printed = info.bus_id.to_string();
        let back = BusId::parse(&printed).expect("a printed bus id parses");
        assert_eq!(
            back,
            BusId {
                function: 0,
                ..info.bus_id
            }
        );
    }
    for line in text.lines() {
        if let Some(id) = BusId::parse(line) {
            assert_eq!(
                BusId::parse(&id.to_string()),
                Some(BusId { function: 0, ..id })
            );
        }
    }
    if let Some(v) = parse_version(text) {
        assert!(
            text.lines()
                .any(|l| l.starts_with("NVRM version:") && l.contains(&v))
        );
        assert!(v.contains('.') && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
    }
    let _ = parse_cap_minor(text);
    let _ = mig_minors_with_prefix(text, "gpu1/");
});
