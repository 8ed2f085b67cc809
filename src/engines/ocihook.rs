//! The OCI hook file for podman / CRI-O hooks.d (reference nvidia-container-toolkit.md §6.5): run
//! the legacy hook at prestart for every container. Fields in upstream's order.

use std::path::Path;

use serde::Serialize;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Serialize)]
struct HookFile<'a> {
    version: &'a str,
    hook: Hook,
    when: When,
    stages: [&'a str; 1],
}

#[derive(Serialize)]
struct Hook {
    path: String,
    args: Vec<String>,
    env: Vec<String>,
}

#[derive(Serialize)]
struct When {
    always: bool,
    commands: [&'static str; 1],
}

/// The hook JSON (two-space indentation, final newline) for the hook binary at `hook_path`; its
/// directory joins PATH unless already listed.
pub fn render(hook_path: &Path) -> String {
    let dir = hook_path
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let mut path = PATH.to_owned();
    if !dir.is_empty() && !PATH.split(':').any(|p| p == dir) {
        path = format!("{path}:{dir}");
    }
    let base = hook_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = HookFile {
        version: "1.0.0",
        hook: Hook {
            path: hook_path.display().to_string(),
            args: vec![base, "prestart".into()],
            env: vec![format!("PATH={path}")],
        },
        when: When {
            always: true,
            commands: [".*"],
        },
        stages: ["prestart"],
    };
    let mut text = serde_json::to_string_pretty(&file).expect("hook JSON serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_dir_joins_path_only_when_missing() {
        let usr = render(Path::new("/usr/bin/nvidia-container-runtime-hook"));
        assert!(usr.contains(&format!("\"PATH={PATH}\"")), "{usr}");
        let opt = render(Path::new("/opt/nv/bin/nvidia-container-runtime-hook"));
        assert!(
            opt.contains(&format!("\"PATH={PATH}:/opt/nv/bin\"")),
            "{opt}"
        );
        let v: serde_json::Value = serde_json::from_str(&opt).unwrap();
        assert_eq!(
            v["hook"]["args"],
            serde_json::json!(["nvidia-container-runtime-hook", "prestart"])
        );
        assert_eq!(
            v["when"],
            serde_json::json!({"always": true, "commands": [".*"]})
        );
        assert_eq!(v["stages"], serde_json::json!(["prestart"]));
        assert_eq!(v["version"], "1.0.0");
    }
}
