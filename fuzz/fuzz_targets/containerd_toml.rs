//! containerd's config.toml, as `nvidia-ctk runtime configure` finds it. Invariants: when its
//! version and shape allow the edit, the runtime lands at the CRI plugin's path; the rendered
//! file parses back to the same table; the comment-keeping `imports` edit of the top-level file
//! yields TOML that parses, imports the drop-in and keeps every other key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nvbox::engines::containerd::{add_import, add_runtime, cri_path, remove_runtime, version_of};
use nvbox::engines::toml_doc::{get, parse, render};

const PATH: &str = "/usr/bin/nvidia-container-runtime";
const DROP_IN: &str = "/etc/containerd/conf.d/99-nvidia.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(original) = parse(text, "containerd config") else {
        return;
    };
    let Ok(version) = version_of(&original) else {
        return;
    };

    if let Ok((edited, _kept_comments)) = add_import(text, DROP_IN, version) {
        let t = parse(&edited, "edited").unwrap_or_else(|e| panic!("{e:#}\n{edited}"));
        let imports = t
            .get("imports")
            .and_then(|v| v.as_array())
            .expect("imports array");
        assert!(imports.iter().any(|v| v.as_str() == Some(DROP_IN)));
        for (k, v) in &original {
            if k != "imports" && !(k == "version" && original.is_empty()) {
                assert_eq!(t.get(k), Some(v), "key {k:?} changed by the imports edit");
            }
        }
    }

    let mut cfg = original.clone();
    if add_runtime(&mut cfg, version, "nvidia", PATH, true).is_err() {
        return;
    }
    let [plugins, cri] = cri_path(version);
    let runtime =
        get(&cfg, &[plugins, cri, "containerd", "runtimes", "nvidia"]).expect("the runtime entry");
    assert_eq!(
        runtime
            .get("options")
            .and_then(|o| o.get("BinaryName"))
            .and_then(|b| b.as_str()),
        Some(PATH)
    );
    let rendered = render(&cfg);
    let reread = parse(&rendered, "rendered").unwrap_or_else(|e| panic!("{e:#}\n{rendered}"));
    assert_eq!(reread, cfg, "render round trip");
    let mut removed = reread;
    assert!(remove_runtime(&mut removed, version, "nvidia"));
});
