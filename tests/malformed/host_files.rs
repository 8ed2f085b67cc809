//! The simulated host's own files gone bad: its ld.so.cache (libnvidia-container §4.3: a file
//! too small, of the wrong magic, or with offsets out of range is "unsupported file format")
//! and its procfs (§4.8).

use super::*;

const CLI: &str = "nvidia-container-cli";
const CTK: &str = "nvidia-ctk";

/// One way of breaking the cache bytes.
type Mutation = Box<dyn Fn(&mut Vec<u8>)>;

fn put_u32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

/// The readers of the host: list, configure --dry-run, and `cdi generate` into a file that was
/// there before (it must keep its bytes).
fn readers(host: &Host) -> Vec<(&'static str, Vec<String>)> {
    let rootfs = host.dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let out = host.dir.path().join("nvidia.yaml");
    let root = host.root().display().to_string();
    vec![
        (CLI, vec!["list".into()]),
        (
            CLI,
            vec![
                "configure".into(),
                "--dry-run".into(),
                "--device=0".into(),
                "--compute".into(),
                rootfs.display().to_string(),
            ],
        ),
        (
            CTK,
            vec![
                "cdi".into(),
                "generate".into(),
                format!("--driver-root={root}"),
                format!("--dev-root={root}"),
                "--output".into(),
                out.display().to_string(),
            ],
        ),
    ]
}

/// Each reader on the host as `mutate` left it must fail with `want`; the host tree and the
/// old spec file stay as they were.
#[track_caller]
fn assert_readers_refuse(host: &Host, case: &str, want: &str) {
    let spec = host.dir.path().join("nvidia.yaml");
    std::fs::write(&spec, "old spec\n").unwrap();
    let before = tree(&host.root());
    for (applet, args) in readers(host) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = host.run(applet, &args);
        assert_refused(applet, &out, want, &format!("{case}: {applet} {}", args[0]));
        assert!(
            out.stdout.is_empty(),
            "{case}: {applet} printed {}",
            stdout(&out)
        );
    }
    assert_eq!(
        std::fs::read_to_string(&spec).unwrap(),
        "old spec\n",
        "{case}: spec replaced"
    );
    assert_eq!(tree(&host.root()), before, "{case}: host changed");
    assert_eq!(
        mounts_under(host.dir.path()),
        Vec::<String>::new(),
        "{case}"
    );
}

#[test]
fn a_corrupt_host_ld_so_cache() {
    let host = Host::new("mal-ldcache");
    let cache = host.file("/etc/ld.so.cache");
    let good = std::fs::read(&cache).unwrap();
    assert!(
        good.starts_with(b"glibc-ld.so.cache1.1"),
        "the mock writes the new format"
    );
    let mutate: Vec<(&str, Mutation)> = vec![
        ("empty", Box::new(|d| d.clear())),
        ("truncated magic", Box::new(|d| d.truncate(10))),
        ("truncated header", Box::new(|d| d.truncate(30))),
        (
            "truncated entries",
            Box::new(|d| d.truncate(48 + 24 * 2 + 5)),
        ),
        ("entry count huge", Box::new(|d| put_u32(d, 20, u32::MAX))),
        (
            "key offset out of range",
            Box::new(|d| put_u32(d, 48 + 4, 0xffff_fff0)),
        ),
        (
            "value offset out of range",
            Box::new(|d| {
                let n = d.len() as u32;
                put_u32(d, 48 + 8, n + 100)
            }),
        ),
        (
            "wrong version",
            Box::new(|d| d[17..20].copy_from_slice(b"9.9")),
        ),
        (
            "old format, count huge",
            Box::new(|d| {
                d.clear();
                d.extend_from_slice(b"ld.so-1.7.0\0");
                d.extend_from_slice(&u32::MAX.to_ne_bytes());
            }),
        ),
    ];
    for (case, m) in &mutate {
        let mut bytes = good.clone();
        m(&mut bytes);
        std::fs::write(&cache, &bytes).unwrap();
        assert_readers_refuse(
            &host,
            case,
            "detection error: unsupported file format: /etc/ld.so.cache",
        );
    }
    std::fs::remove_file(&cache).unwrap();
    std::fs::create_dir(&cache).unwrap();
    assert_readers_refuse(&host, "a directory", "/etc/ld.so.cache: is a directory");
}

#[test]
fn garbage_in_the_host_procfs() {
    let host = Host::new("mal-procfs");
    let version = host.file("/proc/driver/nvidia/version");
    let gpus = host.file("/proc/driver/nvidia/gpus");
    let first = std::fs::read_dir(&gpus)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .min()
        .unwrap();
    let info = first.join("information");
    let (good_version, good_info) = (
        std::fs::read(&version).unwrap(),
        std::fs::read(&info).unwrap(),
    );
    let cases: Vec<(&str, &Path, Vec<u8>, &str)> = vec![
        (
            "version empty",
            &version,
            Vec::new(),
            "initialization error: ",
        ),
        (
            "version garbage",
            &version,
            b"garbage\n".to_vec(),
            "initialization error: ",
        ),
        (
            "version truncated",
            &version,
            good_version[..20].to_vec(),
            "initialization error: ",
        ),
        (
            "version 16 MB of NUL",
            &version,
            vec![0; 16 << 20],
            "initialization error: ",
        ),
        ("information empty", &info, Vec::new(), "detection error: "),
        (
            "information truncated",
            &info,
            good_info[..40].to_vec(),
            "detection error: ",
        ),
        (
            "minor not a number",
            &info,
            String::from_utf8_lossy(&good_info)
                .replace("Device Minor: \t 0", "Device Minor: \t abc")
                .into_bytes(),
            "detection error: ",
        ),
        (
            "minor huge",
            &info,
            String::from_utf8_lossy(&good_info)
                .replace("Device Minor: \t 0", "Device Minor: \t 99999999999")
                .into_bytes(),
            "detection error: ",
        ),
        (
            "not UTF-8",
            &info,
            b"\xff\xfe\n".to_vec(),
            "detection error: ",
        ),
    ];
    for (case, file, bytes, want) in &cases {
        std::fs::write(file, bytes).unwrap();
        assert_readers_refuse(&host, case, want);
        std::fs::write(&version, &good_version).unwrap();
        std::fs::write(&info, &good_info).unwrap();
    }
}

/// /proc/devices only decides the nvcaps style and what --load-kmods creates (§4.7, §5.1): the
/// nodes' majors are read from the nodes themselves, so garbage there changes nothing listed.
#[test]
fn garbage_in_proc_devices_is_not_used_for_listing() {
    let host = Host::new("mal-devices");
    let devices = host.file("/proc/devices");
    let want = host.run(CLI, &["list"]);
    assert!(want.status.success(), "{}", stderr(&want));
    for (case, bytes) in [
        ("empty", &b""[..]),
        (
            "garbage",
            b"Character devices:\nabc nvidia\n195\n\n\n1 2 3 4\n",
        ),
        ("truncated", b"Character devices:\n  1 me"),
    ] {
        std::fs::write(&devices, bytes).unwrap();
        let out = host.run(CLI, &["list"]);
        assert!(out.status.success(), "{case}: {}", stderr(&out));
        assert_eq!(stdout(&out), stdout(&want), "{case}");
        assert_no_panic(&stderr(&out), case);
    }
    // Bytes that are not text at all are refused like the other procfs files.
    std::fs::write(&devices, b"Character devices:\n\xff\xfe nvidia\n").unwrap();
    assert_readers_refuse(&host, "/proc/devices not UTF-8", "detection error: ");
}
