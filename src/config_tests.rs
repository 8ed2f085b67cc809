use super::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty directory per call, so tests can run in parallel.
fn scratch_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("nvbox-config-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn parse(text: &str) -> Result<Config> {
    Config::parse(text, Path::new("/etc/nvidia-container-runtime/config.toml"))
}

fn parse_err(text: &str) -> String {
    let err = parse(text).expect_err("config should be rejected");
    let msg = format!("{err:#}");
    assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
    msg
}

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |key| map.get(key).cloned()
}

const FULL: &str = r#"
#accept-nvidia-visible-devices-as-volume-mounts = false
accept-nvidia-visible-devices-envvar-when-unprivileged = true
disable-require = false
supported-driver-capabilities = "compat32,compute,display,graphics,ngx,utility,video"
#swarm-resource = "DOCKER_RESOURCE_GPU"

[nvidia-container-cli]
#debug = "/var/log/nvidia-container-toolkit.log"
environment = []
#ldcache = "/etc/ld.so.cache"
ldconfig = "@/sbin/ldconfig.real"
load-kmods = true
#no-cgroups = false
#path = "/usr/bin/nvidia-container-cli"
#root = "/run/nvidia/driver"
#user = "root:video"

[nvidia-container-runtime]
#debug = "/var/log/nvidia-container-runtime.log"
log-level = "info"
mode = "auto"
runtimes = ["docker-runc", "runc", "crun"]

[nvidia-container-runtime.modes]

[nvidia-container-runtime.modes.cdi]
annotation-prefixes = ["cdi.k8s.io/"]
default-kind = "nvidia.com/gpu"
spec-dirs = ["/etc/cdi", "/var/run/cdi"]

[nvidia-container-runtime.modes.csv]
mount-spec-path = "/etc/nvidia-container-runtime/host-files-for-container.d"

[nvidia-container-runtime.modes.jit-cdi]
nvcdi-feature-flags = ["enable-coherent-annotations"]

[nvidia-container-runtime.modes.legacy]
cuda-compat-mode = "ldconfig"

[nvidia-container-runtime-hook]
path = "nvidia-container-runtime-hook"
skip-mode-detection = false

[nvidia-ctk]
path = "nvidia-ctk"

[features]
#allow-ldconfig-from-container = false
disable-imex-channel-creation = true
"#;

#[test]
fn defaults_match_upstream_table() {
    let c = Config::default();
    assert!(!c.disable_require);
    assert_eq!(c.swarm_resource, "");
    assert!(c.accept_nvidia_visible_devices_envvar_when_unprivileged);
    assert!(!c.accept_nvidia_visible_devices_as_volume_mounts);
    assert_eq!(
        c.supported_driver_capabilities,
        "compat32,compute,display,graphics,ngx,utility,video"
    );

    assert_eq!(c.cli.root, "");
    assert_eq!(c.cli.path, "");
    assert!(c.cli.environment.is_empty());
    assert_eq!(c.cli.debug, "");
    assert_eq!(c.cli.ldcache, "");
    assert!(c.cli.load_kmods);
    assert!(!c.cli.no_pivot);
    assert!(!c.cli.no_cgroups);
    let host = CliConfig::default_for_host(Path::new(OS_RELEASE), Path::new(LDCONFIG_REAL));
    assert_eq!(c.cli.user, host.user);
    let ldconfig = if Path::new("/sbin/ldconfig.real").exists() {
        "@/sbin/ldconfig.real"
    } else {
        "@/sbin/ldconfig"
    };
    assert_eq!(c.cli.ldconfig, ldconfig);

    assert_eq!(c.runtime.debug, "/dev/null");
    assert_eq!(c.runtime.log_level, "info");
    assert_eq!(c.runtime.runtimes, ["runc", "crun"]);
    assert_eq!(c.runtime.mode, "auto");
    assert_eq!(c.runtime.modes.cdi.spec_dirs, ["/etc/cdi", "/var/run/cdi"]);
    assert_eq!(c.runtime.modes.cdi.default_kind, "nvidia.com/gpu");
    assert_eq!(c.runtime.modes.cdi.annotation_prefixes, ["cdi.k8s.io/"]);
    assert_eq!(
        c.runtime.modes.csv.mount_spec_path,
        "/etc/nvidia-container-runtime/host-files-for-container.d"
    );
    assert_eq!(c.runtime.modes.csv.compat_container_root, None);
    assert_eq!(c.runtime.modes.jit_cdi.nvcdi_feature_flags, None);
    assert_eq!(c.runtime.modes.jit_cdi.nvcdi_disable_hooks, None);
    assert_eq!(c.runtime.modes.legacy.cuda_compat_mode, "ldconfig");

    assert_eq!(c.hook.path, "nvidia-container-runtime-hook");
    assert!(!c.hook.skip_mode_detection);
    assert_eq!(c.ctk.path, "nvidia-ctk");

    let f = &c.features;
    assert_eq!(f.allow_cuda_compat_libs_from_container, None);
    assert_eq!(f.allow_ldconfig_from_container, None);
    assert_eq!(f.allow_unknown_oci_spec_fields, None);
    assert_eq!(f.disable_cuda_compat_lib_hook, None);
    assert_eq!(f.disable_imex_channel_creation, None);
    assert_eq!(f.ignore_imex_channel_requests, None);
    assert_eq!(f.no_additional_gids_for_device_nodes, None);

    assert_eq!(
        c.nvbox,
        NvboxConfig {
            dev_root: None,
            proc_root: None,
            sys_root: None,
            ldcache: None,
        }
    );
}

#[test]
fn host_defaults_follow_os_release_and_ldconfig_real() {
    let dir = scratch_dir("host");
    let absent = dir.join("absent");
    let plain = CliConfig::default_for_host(&absent, &absent);
    assert_eq!(plain.user, "");
    assert_eq!(plain.ldconfig, "@/sbin/ldconfig");

    let real = write_file(&dir, "ldconfig.real", "");
    let debian = write_file(&dir, "debian", "PRETTY_NAME=\"Debian 12\"\nID=debian\n");
    let c = CliConfig::default_for_host(&debian, &real);
    assert_eq!(c.user, "");
    assert_eq!(c.ldconfig, "@/sbin/ldconfig.real");

    let leap = write_file(
        &dir,
        "leap",
        "NAME=\"openSUSE Leap\"\nID=\"opensuse-leap\"\nID_LIKE=\"suse opensuse\"\n",
    );
    assert_eq!(
        CliConfig::default_for_host(&leap, &absent).user,
        "root:video"
    );
    let sles = write_file(&dir, "sles", "ID=sles\nID_LIKE='suse'\n");
    assert_eq!(
        CliConfig::default_for_host(&sles, &absent).user,
        "root:video"
    );
    // Only ID and ID_LIKE count, not other fields that mention SUSE.
    let other = write_file(&dir, "other", "ID=ubuntu\nHOME_URL=https://suse.example\n");
    assert_eq!(CliConfig::default_for_host(&other, &absent).user, "");
}

#[test]
fn locate_prefers_env_then_xdg_then_etc() {
    assert_eq!(
        locate_config_from(env(&[])),
        Path::new("/etc/nvidia-container-runtime/config.toml")
    );
    assert_eq!(
        locate_config_from(env(&[("XDG_CONFIG_HOME", "/home/u/.config")])),
        Path::new("/home/u/.config/nvidia-container-runtime/config.toml")
    );
    assert_eq!(
        locate_config_from(env(&[
            ("NVIDIA_CTK_CONFIG_FILE_PATH", "/x/c.toml"),
            ("XDG_CONFIG_HOME", "/home/u/.config")
        ])),
        Path::new("/x/c.toml")
    );
}

#[test]
fn locate_ignores_empty_env_values() {
    assert_eq!(
        locate_config_from(env(&[
            ("NVIDIA_CTK_CONFIG_FILE_PATH", ""),
            ("XDG_CONFIG_HOME", "/cfg")
        ])),
        Path::new("/cfg/nvidia-container-runtime/config.toml")
    );
    assert_eq!(
        locate_config_from(env(&[
            ("NVIDIA_CTK_CONFIG_FILE_PATH", ""),
            ("XDG_CONFIG_HOME", "")
        ])),
        Path::new("/etc/nvidia-container-runtime/config.toml")
    );
}

#[test]
fn full_upstream_file_parses() {
    let c = parse(FULL).unwrap();
    let mut want = Config::default();
    want.cli.ldconfig = "@/sbin/ldconfig.real".into();
    want.runtime.log_level = "info".into();
    want.runtime.runtimes = strings(&["docker-runc", "runc", "crun"]);
    want.runtime.modes.jit_cdi.nvcdi_feature_flags =
        Some(strings(&["enable-coherent-annotations"]));
    want.features.disable_imex_channel_creation = Some(true);
    assert_eq!(c, want);
}

#[test]
fn partial_file_keeps_other_defaults() {
    let c = parse("[nvidia-container-cli]\nno-cgroups = true\n[nvidia-container-runtime.modes.cdi]\ndefault-kind = \"example.com/gpu\"\n").unwrap();
    let mut want = Config::default();
    want.cli.no_cgroups = true;
    want.runtime.modes.cdi.default_kind = "example.com/gpu".into();
    assert_eq!(c, want);
    assert_eq!(parse("").unwrap(), Config::default());
}

#[test]
fn optional_settings_parse() {
    let c = parse(
        "[nvidia-container-runtime.modes.csv]\ncompat-container-root = \"/usr/local/cuda/compat\"\n\
         [nvidia-container-runtime.modes.jit-cdi]\nnvcdi-disable-hooks = [\"update-ldcache\"]\n\
         [features]\nallow-unknown-oci-spec-fields = false\nno-additional-gids-for-device-nodes = true\n",
    )
    .unwrap();
    assert_eq!(
        c.runtime.modes.csv.compat_container_root.as_deref(),
        Some("/usr/local/cuda/compat")
    );
    assert_eq!(
        c.runtime.modes.jit_cdi.nvcdi_disable_hooks,
        Some(strings(&["update-ldcache"]))
    );
    assert_eq!(c.features.allow_unknown_oci_spec_fields, Some(false));
    assert_eq!(c.features.no_additional_gids_for_device_nodes, Some(true));
    assert_eq!(c.features.allow_ldconfig_from_container, None);
}

#[test]
fn nvbox_roots_parse() {
    let c = parse(
        "[nvbox]\ndev-root = \"/mock/dev\"\nproc-root = \"/mock/proc\"\nsys-root = \"/mock/sys\"\n",
    )
    .unwrap();
    assert_eq!(c.nvbox.dev_root.as_deref(), Some(Path::new("/mock/dev")));
    assert_eq!(c.nvbox.proc_root.as_deref(), Some(Path::new("/mock/proc")));
    assert_eq!(c.nvbox.sys_root.as_deref(), Some(Path::new("/mock/sys")));
}

#[test]
fn syntax_error_names_file_and_line() {
    let msg = parse_err("disable-require = false\n\n[nvidia-container-cli\nload-kmods = true\n");
    assert!(
        msg.starts_with("/etc/nvidia-container-runtime/config.toml:3: invalid config: "),
        "{msg}"
    );
}

#[test]
fn wrong_type_names_file_and_line() {
    let msg = parse_err("# comment\n[nvidia-container-cli]\nload-kmods = \"yes\"\n");
    assert!(
        msg.starts_with("/etc/nvidia-container-runtime/config.toml:3: invalid config: "),
        "{msg}"
    );
    // Messages speak TOML, not Rust type names.
    let msg = parse_err("disable-require = false\nnvidia-container-cli = 5\n");
    assert!(
        msg.starts_with("/etc/nvidia-container-runtime/config.toml:2: "),
        "{msg}"
    );
    assert!(msg.ends_with("expected a table"), "{msg}");
    let msg = parse_err("[nvidia-container-runtime]\nruntimes = \"runc\"\n");
    assert!(
        msg.starts_with("/etc/nvidia-container-runtime/config.toml:2: invalid config: "),
        "{msg}"
    );
}

#[test]
fn container_ldconfig_needs_feature() {
    let text = "[nvidia-container-cli]\nldconfig = \"/sbin/ldconfig\"\n";
    let msg = parse_err(text);
    assert_eq!(
        msg,
        "/etc/nvidia-container-runtime/config.toml: invalid config: nvidia-container-cli.ldconfig \"/sbin/ldconfig\" \
         must be a host path starting with '@' (set features.allow-ldconfig-from-container = true to allow a container path)"
    );
    parse_err(&format!(
        "{text}[features]\nallow-ldconfig-from-container = false\n"
    ));
    let c = parse(&format!(
        "{text}[features]\nallow-ldconfig-from-container = true\n"
    ))
    .unwrap();
    assert_eq!(c.cli.ldconfig, "/sbin/ldconfig");
}

#[test]
fn enumerated_values_are_checked() {
    let msg = parse_err("[nvidia-container-runtime]\nmode = \"magic\"\n");
    assert!(
        msg.contains("nvidia-container-runtime.mode \"magic\""),
        "{msg}"
    );
    assert!(msg.contains("auto, legacy, cdi, jit-cdi, csv"), "{msg}");
    let msg = parse_err("[nvidia-container-runtime]\nlog-level = \"loud\"\n");
    assert!(msg.contains("nvidia-container-runtime.log-level"), "{msg}");
    let msg = parse_err("[nvidia-container-runtime.modes.legacy]\ncuda-compat-mode = \"copy\"\n");
    assert!(
        msg.contains("nvidia-container-runtime.modes.legacy.cuda-compat-mode"),
        "{msg}"
    );
    assert!(msg.contains("ldconfig, mount, disabled, hook"), "{msg}");
    let msg = parse_err("[nvbox]\nldcache = \"fast\"\n");
    assert!(msg.contains("nvbox.ldcache"), "{msg}");
    for mode in ["builtin", "ldconfig"] {
        let c = parse(&format!("[nvbox]\nldcache = \"{mode}\"\n")).unwrap();
        assert_eq!(c.nvbox.ldcache.as_deref(), Some(mode));
    }

    for mode in MODES {
        assert_eq!(
            parse(&format!("[nvidia-container-runtime]\nmode = \"{mode}\"\n"))
                .unwrap()
                .runtime
                .mode,
            *mode
        );
    }
    for level in LOG_LEVELS {
        parse(&format!(
            "[nvidia-container-runtime]\nlog-level = \"{level}\"\n"
        ))
        .unwrap();
    }
    for compat in CUDA_COMPAT_MODES {
        parse(&format!(
            "[nvidia-container-runtime.modes.legacy]\ncuda-compat-mode = \"{compat}\"\n"
        ))
        .unwrap();
    }
}

#[test]
fn unknown_keys_are_ignored() {
    let c = parse(
        "future-key = 1\n[nvidia-container-cli]\nshiny = \"x\"\n[some-new-table]\na = [1, 2]\n",
    )
    .unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn missing_file_is_defaults_unless_required() {
    let dir = scratch_dir("missing");
    let path = dir.join("config.toml");
    assert_eq!(Config::load_from(&path, false).unwrap(), Config::default());
    let msg = format!("{:#}", Config::load_from(&path, true).unwrap_err());
    assert_eq!(
        msg,
        format!("{}: open: No such file or directory", path.display())
    );
}

#[test]
fn load_from_reads_and_reports_path() {
    let dir = scratch_dir("load");
    let path = write_file(
        &dir,
        "config.toml",
        "disable-require = true\nswarm-resource = \"\n",
    );
    let msg = format!("{:#}", Config::load_from(&path, false).unwrap_err());
    assert!(
        msg.starts_with(&format!("{}:2: invalid config: ", path.display())),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg:?}");

    std::fs::write(&path, "disable-require = true\n").unwrap();
    assert!(Config::load_from(&path, true).unwrap().disable_require);
    // A directory in the file's place is a real problem, not "absent".
    assert!(Config::load_from(&dir, false).is_err());
}

#[test]
fn serialized_defaults_round_trip() {
    let mut c = Config::default();
    let text = toml::to_string(&c).unwrap();
    assert!(!text.contains("compat-container-root"), "{text}");
    assert!(!text.contains("nvcdi-"), "{text}");
    assert_eq!(parse(&text).unwrap(), c);

    c.nvbox.sys_root = Some("/mock/sys".into());
    c.features.allow_ldconfig_from_container = Some(true);
    c.runtime.modes.csv.compat_container_root = Some("/compat".into());
    assert_eq!(parse(&toml::to_string(&c).unwrap()).unwrap(), c);
}
