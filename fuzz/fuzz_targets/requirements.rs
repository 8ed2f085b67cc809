//! NVIDIA_REQUIRE_* / `--require` predicates come from the image. Input: four fact lines (cuda,
//! driver, arch, brand; an empty line is an unknown fact), then one predicate per line.
//! Invariants: validation does not depend on the facts; unknown facts satisfy every valid
//! predicate; a predicate holds for two devices exactly when it holds for each; evaluation is
//! deterministic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nvbox::require::{DeviceFacts, HostFacts, check_requirements};

fn fact(line: Option<&str>) -> Option<String> {
    line.filter(|l| !l.is_empty()).map(str::to_owned)
}

/// Errors that come from the predicates alone, whatever the host offers.
fn is_invalid<E: std::fmt::Display>(r: &Result<(), E>) -> bool {
    r.as_ref().is_err_and(|e| {
        let s = e.to_string();
        s == "invalid expression" || s == "too many requirements"
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let host = HostFacts {
        cuda: fact(lines.next()),
        driver: fact(lines.next()),
    };
    let dev = DeviceFacts {
        arch: fact(lines.next()),
        brand: fact(lines.next()),
    };
    let predicates: Vec<String> = lines.map(str::to_owned).collect();
    // A second device that differs from the first in every known fact.
    let other = DeviceFacts {
        arch: Some("8.0".into()),
        brand: Some("Tesla".into()),
    };

    let with_host = check_requirements(&predicates, &host, &[]);
    let unknown = check_requirements(&predicates, &HostFacts::default(), &[]);
    assert_eq!(
        is_invalid(&with_host),
        is_invalid(&unknown),
        "validation depends on the facts"
    );
    if !is_invalid(&unknown) {
        assert!(unknown.is_ok(), "unknown facts must satisfy: {unknown:?}");
    }
    let again = check_requirements(&predicates, &host, &[]);
    assert_eq!(
        with_host.as_ref().map_err(ToString::to_string),
        again.as_ref().map_err(ToString::to_string)
    );

    let one = check_requirements(&predicates, &host, std::slice::from_ref(&dev));
    let two = check_requirements(&predicates, &host, std::slice::from_ref(&other));
    let both = check_requirements(&predicates, &host, &[dev.clone(), other.clone()]);
    assert_eq!(
        both.is_ok(),
        one.is_ok() && two.is_ok(),
        "devices are not ANDed"
    );
    assert_eq!(is_invalid(&one), is_invalid(&with_host));
    // The first failing device names the failure.
    if one.is_err() {
        assert_eq!(both.unwrap_err().to_string(), one.unwrap_err().to_string());
    }
});
