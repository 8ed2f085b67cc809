//! Docker's daemon.json, as `nvidia-ctk runtime configure` finds it. Invariants: after adding
//! the runtime (when the file's shape allows it) the entry is there, every other key is kept,
//! the rendered file parses back to the same object, and removing the runtime again drops it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nvbox::engines::docker::{add_runtime, enable_cdi, parse, remove_runtime, render};
use serde_json::Value;

const PATH: &str = "/usr/bin/nvidia-container-runtime";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(original) = parse(Some(text)) else {
        return;
    };
    let mut cfg = original.clone();
    if add_runtime(&mut cfg, "nvidia", PATH, true).is_err() {
        assert!(!original.get("runtimes").is_none_or(Value::is_object));
        return;
    }
    let _ = enable_cdi(&mut cfg);
    assert_eq!(cfg["runtimes"]["nvidia"]["path"], PATH);
    assert_eq!(cfg["default-runtime"], "nvidia");
    for (k, v) in &original {
        if !matches!(k.as_str(), "runtimes" | "default-runtime" | "features") {
            assert_eq!(cfg.get(k), Some(v), "key {k:?} changed");
        }
    }
    let rendered = render(&cfg);
    let reread = parse(Some(&rendered)).expect("our daemon.json parses");
    assert_eq!(reread, cfg, "render round trip");

    let mut removed = reread;
    assert!(remove_runtime(&mut removed, "nvidia"));
    assert!(
        removed
            .get("runtimes")
            .and_then(|r| r.get("nvidia"))
            .is_none()
    );
    assert_eq!(removed["default-runtime"], "runc");
});
