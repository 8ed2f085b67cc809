//! CDI spec files (YAML or JSON) from /etc/cdi and /var/run/cdi, which device plugins and
//! operators write. Invariants: an accepted spec validates again, its cdiVersion covers what
//! it uses, it reads back equal after we write it as JSON and as YAML (as `nvidia-ctk cdi
//! generate` does), and its edits apply to a minimal OCI spec without panicking.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nvbox::spec::cdi::{apply_edits, minimum_version, parse_spec};

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = parse_spec(data, Path::new("/etc/cdi/fuzz.yaml")) else {
        return;
    };
    spec.validate().expect("an accepted spec validates again");
    let (vendor, class) = spec.vendor_class();
    assert!(!vendor.is_empty() && !class.is_empty());
    let _ = minimum_version(&spec);

    let json = serde_json::to_vec(&spec).expect("write as JSON");
    let back = parse_spec(&json, Path::new("/etc/cdi/fuzz.json")).expect("our JSON reads back");
    assert_eq!(back, spec, "JSON round trip");
    let yaml = serde_yaml_ng::to_string(&spec).expect("write as YAML");
    let back = parse_spec(yaml.as_bytes(), Path::new("/etc/cdi/fuzz.yaml"))
        .unwrap_or_else(|e| panic!("our YAML reads back: {e:#}\n{yaml}"));
    assert_eq!(back, spec, "YAML round trip");

    let mut oci = serde_json::json!({
        "ociVersion": "1.1.0",
        "process": {"env": ["PATH=/usr/bin"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {}
    });
    if apply_edits(&mut oci, &spec.container_edits).is_ok() {
        for dev in &spec.devices {
            if apply_edits(&mut oci, &dev.container_edits).is_err() {
                break;
            }
        }
    }
    assert!(oci.is_object());
    serde_json::to_vec(&oci).expect("the edited spec serializes");
});
