//! Gated devices end to end with the real runc: `NVIDIA_GDS`, `NVIDIA_MOFED`, `NVIDIA_GDRCOPY`
//! and `NVIDIA_NVSWITCH` set to `enabled` bring the nodes of that kind, and only those, in
//! legacy mode (the prestart hook, through the shim and as Docker's `--gpus` calls it), jit-cdi
//! and cdi mode, on a mock HPC node (`nvbox mock --gated`). On a host without them the container
//! starts with its GPUs and no gated node. Each node must be the host's (same major:minor) and
//! open past the device cgroup: the mock's majors have no driver, so an allowed open fails with
//! ENXIO or ENODEV where one the cgroup denies fails with EPERM.

mod common;

use common::container::*;
use common::engines::*;
use std::collections::BTreeMap;

fn ready() -> bool {
    have_prerequisites(&[RUNC, BUSYBOX])
}

fn gated_host() -> &'static Host {
    shared_host(&["--gpus", "2", "--gated"])
}

fn plain_host() -> &'static Host {
    shared_host(&["--gpus", "2"])
}

/// Every node the gated patterns could match, and GDS's files, with an open attempt per node.
const PROBE: &str = "for n in /dev/nvidia-fs* /dev/gdrdrv /dev/infiniband/* /dev/nvidia-nvswitch* \
/dev/nvidia0 /dev/nvidiactl; do [ -c $n ] || continue; \
echo \"node $n $(stat -c '%t:%T' $n) $( (: < $n) 2>&1 | grep -q 'Operation not permitted' && echo denied || echo allowed)\"; \
done; for f in /etc/cufile.json /run/udev/data/b259:0; do [ -f $f ] && echo \"file $f\"; done; \
grep -q max_direct_io_size_kb /etc/cufile.json 2>/dev/null && echo cufile-read; echo @@end";

/// The nodes of each kind on the mock (what `ls` on the host shows), not including the MAD
/// nodes that MOFED's patterns leave out.
fn nodes_of(env: &str) -> Vec<String> {
    let mut v: Vec<String> = match env {
        "NVIDIA_GDS" => (0..16).map(|i| format!("/dev/nvidia-fs{i}")).collect(),
        "NVIDIA_MOFED" => vec![
            "/dev/infiniband/rdma_cm".into(),
            "/dev/infiniband/uverbs0".into(),
        ],
        "NVIDIA_GDRCOPY" => vec!["/dev/gdrdrv".into()],
        "NVIDIA_NVSWITCH" => {
            let mut v: Vec<String> = (0..4).map(|i| format!("/dev/nvidia-nvswitch{i}")).collect();
            v.push("/dev/nvidia-nvswitchctl".into());
            v
        }
        other => panic!("{other}"),
    };
    v.sort();
    v
}

const KINDS: [&str; 4] = [
    "NVIDIA_GDS",
    "NVIDIA_MOFED",
    "NVIDIA_GDRCOPY",
    "NVIDIA_NVSWITCH",
];

/// What the probe saw: node → "major:minor open-result", and the files.
struct Seen {
    nodes: BTreeMap<String, String>,
    files: Vec<String>,
}

fn parse(stdout: &str) -> Seen {
    assert!(
        stdout.contains("@@end"),
        "the probe did not finish:\n{stdout}"
    );
    let mut seen = Seen {
        nodes: BTreeMap::new(),
        files: Vec::new(),
    };
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("node ") {
            let (path, desc) = rest.split_once(' ').unwrap();
            seen.nodes.insert(path.to_string(), desc.trim().to_string());
        } else if let Some(f) = line.strip_prefix("file ") {
            seen.files.push(f.to_string());
        } else if line == "cufile-read" {
            seen.files.push(line.to_string());
        }
    }
    seen
}

/// Exactly the GPU nodes of device 0 and the gated nodes of `kinds`, each the host's node and
/// open past the cgroup; GDS's files when GDS is asked for.
fn assert_gated(host: &Host, seen: &Seen, kinds: &[&str]) {
    let mut want = BTreeMap::new();
    let mut expect = |path: &str| {
        let (ma, mi) = host.rdev(path);
        want.insert(path.to_string(), format!("{ma:x}:{mi:x} allowed"));
    };
    for n in ["/dev/nvidia0", "/dev/nvidiactl"] {
        expect(n);
    }
    for k in kinds {
        for n in nodes_of(k) {
            expect(&n);
        }
    }
    assert_eq!(seen.nodes, want, "gated nodes for {kinds:?}");
    let files: Vec<&str> = if kinds.contains(&"NVIDIA_GDS") {
        vec!["/etc/cufile.json", "/run/udev/data/b259:0", "cufile-read"]
    } else {
        Vec::new()
    };
    assert_eq!(seen.files, files, "GDS files for {kinds:?}");
}

fn bundle(kinds: &[&str]) -> Bundle {
    let mut b = Bundle::new(true);
    b.script(PROBE);
    let mut env = vec!["NVIDIA_VISIBLE_DEVICES=0".to_string()];
    env.extend(kinds.iter().map(|k| format!("{k}=enabled")));
    let env: Vec<&str> = env.iter().map(String::as_str).collect();
    b.env(&env);
    b
}

fn through_shim(host: &Host, mode_lines: &str, kinds: &[&str]) -> ShimRun {
    let config = ShimConfig::new(host, mode_lines);
    let mut b = bundle(kinds);
    let run = run_shim(&mut b, &config.path, &[]);
    assert!(run.created, "create failed:\n{}", run.create_stderr);
    run
}

#[test]
fn legacy_each_kind_alone() {
    if !ready() {
        return;
    }
    let host = gated_host();
    for kind in KINDS {
        let run = through_shim(host, &mode_toml("legacy"), &[kind]);
        assert_gated(host, &parse(&run.stdout), &[kind]);
        for n in nodes_of(kind) {
            let (ma, mi) = host.rdev(&n);
            let rule = format!("c {ma}:{mi} rw");
            assert!(run.devices_list.contains(&rule), "{kind}: {rule} missing");
        }
    }
}

#[test]
fn jit_cdi_each_kind_alone_rules_in_the_spec() {
    if !ready() {
        return;
    }
    let host = gated_host();
    for kind in KINDS {
        let run = through_shim(host, &mode_toml("jit-cdi"), &[kind]);
        assert_gated(host, &parse(&run.stdout), &[kind]);
        // In the spec, so whatever re-applies the device cgroup from it keeps them.
        let rules = spec_device_rules(&run.config_after);
        for n in nodes_of(kind) {
            let (ma, mi) = host.rdev(&n);
            assert!(rules.contains(&format!("c {ma}:{mi}")), "{kind}: {rules:?}");
        }
    }
}

/// Docker's `--gpus` calls only the prestart hook: the hook alone brings them too.
#[test]
fn prestart_hook_under_plain_runc_brings_all_kinds() {
    if !ready() {
        return;
    }
    let host = gated_host();
    let mut b = bundle(&KINDS);
    b.hook(host);
    let run = run_runc(&mut b);
    assert!(run.created, "create failed:\n{}", run.create_stderr);
    assert_gated(host, &parse(&run.stdout), &KINDS);
}

/// cdi mode resolves GPU names from a spec directory; the gated devices come from the host.
/// Upstream's cdi mode drops them without a word.
#[test]
fn cdi_mode_adds_the_gated_devices() {
    if !ready() {
        return;
    }
    let host = gated_host();
    let config = ShimConfig::new(host, "");
    let specs = config.dir().join("cdi");
    write_cdi_spec(&specs, host);
    config.write(&format!(
        "{}[nvidia-container-runtime.modes.cdi]\nspec-dirs = [\"{}\"]\n",
        mode_toml("cdi"),
        specs.display()
    ));
    let mut b = bundle(&["NVIDIA_GDRCOPY", "NVIDIA_MOFED"]);
    let run = run_shim(&mut b, &config.path, &[]);
    assert!(run.created, "create failed:\n{}", run.create_stderr);
    assert_gated(
        host,
        &parse(&run.stdout),
        &["NVIDIA_MOFED", "NVIDIA_GDRCOPY"],
    );
}

/// A host without the drivers: every kind asked for, none there, the container still starts
/// with its GPU (upstream fails it on an empty CDI device).
#[test]
fn absent_on_the_host_brings_nothing() {
    if !ready() {
        return;
    }
    let host = plain_host();
    for mode in ["legacy", "jit-cdi"] {
        let run = through_shim(host, &mode_toml(mode), &KINDS);
        assert_gated(host, &parse(&run.stdout), &[]);
    }
}

/// Not asked for: a gated host's nodes stay out, whatever else the container gets.
#[test]
fn not_asked_for_brings_nothing() {
    if !ready() {
        return;
    }
    let host = gated_host();
    for mode in ["legacy", "jit-cdi"] {
        let run = through_shim(host, &mode_toml(mode), &[]);
        assert_gated(host, &parse(&run.stdout), &[]);
    }
    // `true` is not `enabled`.
    let config = ShimConfig::mode(host, "jit-cdi");
    let mut b = Bundle::new(true);
    b.script(PROBE);
    b.env(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_GDRCOPY=true"]);
    let run = run_shim(&mut b, &config.path, &[]);
    assert!(run.created, "create failed:\n{}", run.create_stderr);
    assert_gated(host, &parse(&run.stdout), &[]);
}
