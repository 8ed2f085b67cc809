use std::fs;
use std::os::unix::fs::symlink;

use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nvbox-csv-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn line_table() {
    let spec = |kind, path: &str| {
        Ok(MountSpec {
            kind,
            path: path.to_string(),
        })
    };
    let cases: [(&str, Result<MountSpec, &str>); 12] = [
        ("", Err("failed to parse line: ")),
        ("\t", Err("failed to parse line: \t")),
        (
            "dev /dev/nvhost-ctrl",
            Err("failed to parse line: dev /dev/nvhost-ctrl"),
        ),
        (",", Err("unexpected mount type: ")),
        ("dev,", Err("invalid path: ")),
        ("dev ,/a/path", spec(MountKind::Dev, "/a/path")),
        (
            "dev ,/a/path,with,commas",
            spec(MountKind::Dev, "/a/path,with,commas"),
        ),
        (
            "  lib,   /usr/lib/libcuda.so.1.1  ",
            spec(MountKind::Lib, "/usr/lib/libcuda.so.1.1"),
        ),
        (
            "sym, /usr/lib/libcuda.so",
            spec(MountKind::Sym, "/usr/lib/libcuda.so"),
        ),
        (
            "dir,/usr/local/cuda-10.2",
            spec(MountKind::Dir, "/usr/local/cuda-10.2"),
        ),
        ("not-dev ,/a/path", Err("unexpected mount type: not-dev")),
        ("DEV, /a", Err("unexpected mount type: DEV")),
    ];
    for (line, want) in cases {
        let got = parse_mount_spec_line(line).map_err(|e| e.to_string());
        assert_eq!(got, want.map_err(str::to_string), "{line:?}");
    }
}

#[test]
fn file_skips_comments_and_names_bad_lines() {
    let text = "# Jetson\n\ndev, /dev/nvhost-ctrl\n  \nlib, /usr/lib/libnvrm.so\nfoo, /x\nsym,\n\tdir , /usr/src\n";
    let parsed = parse_mount_specs(text);
    assert_eq!(
        parsed.specs,
        [
            MountSpec {
                kind: MountKind::Dev,
                path: "/dev/nvhost-ctrl".into()
            },
            MountSpec {
                kind: MountKind::Lib,
                path: "/usr/lib/libnvrm.so".into()
            },
            MountSpec {
                kind: MountKind::Dir,
                path: "/usr/src".into()
            },
        ]
    );
    assert_eq!(
        parsed.skipped,
        [
            "line 6: unexpected mount type: foo",
            "line 7: invalid path: "
        ]
    );
}

#[test]
fn file_lists_and_loading() {
    let dir = scratch("files");
    fs::write(dir.join("l4t.csv"), "dir, /usr/src\n").unwrap();
    fs::write(dir.join("devices.csv"), "dev, /dev/null\nbad line\n").unwrap();
    fs::write(dir.join("extra.csv"), "# only a comment\n").unwrap();
    fs::write(dir.join("notes.txt"), "lib, /x\n").unwrap();
    let default = list_csv_files(&dir, false);
    assert_eq!(default, [dir.join("devices.csv"), dir.join("l4t.csv")]);
    let all = list_csv_files(&dir, true);
    assert_eq!(
        all,
        [
            dir.join("devices.csv"),
            dir.join("extra.csv"),
            dir.join("l4t.csv")
        ]
    );
    let (specs, warnings) =
        load_mount_specs(&[all.clone(), vec![dir.join("missing.csv")]].concat()).unwrap();
    assert_eq!(specs.len(), 2);
    let shown = |f: &str| dir.join(f).display().to_string();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert_eq!(
        warnings[0],
        format!(
            "{}: skipping invalid mount spec: line 2: failed to parse line: bad line",
            shown("devices.csv")
        )
    );
    assert_eq!(
        warnings[1],
        format!(
            "skipping CSV file {}: CSV file is empty",
            shown("extra.csv")
        )
    );
    assert!(warnings[2].starts_with(&format!(
        "skipping CSV file {}: failed to open",
        shown("missing.csv")
    )));
    assert!(list_csv_files(&dir.join("nope"), true).is_empty());
}

#[test]
fn library_link_patterns() {
    for (name, want) in [
        ("/usr/lib/libcuda.so", true),
        ("/usr/lib/libv4l2.so.0", true),
        ("libEGL_nvidia.so.0", true),
        ("/usr/lib/libnvos.so.32.1.0", false),
        ("/usr/lib/libfoo.so.10", false),
        ("/etc/alternatives/x", false),
    ] {
        assert_eq!(is_library_link(name), want, "{name}");
    }
}

#[test]
fn devices_are_stated() {
    let regular = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let text = format!("dev, /dev/null\ndev, null\ndev, /dev/nvbox-missing\ndev, {regular}\n");
    let specs = parse_mount_specs(&text).specs;
    let out = find_devices(&specs, Path::new("/"));
    let want = DeviceNode {
        path: "/dev/null".into(),
        major: 1,
        minor: 3,
    };
    // `null` and `/dev/null` are one node.
    assert_eq!(out.device_nodes, [want]);
    let warnings = out.warnings;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("could not locate device /dev/nvbox-missing: "),
        "{}",
        warnings[0]
    );
    assert_eq!(
        warnings[1],
        format!("could not locate device {regular}: not a character device")
    );
    assert!(out.mounts.is_empty() && out.links.is_empty());
}

#[test]
fn libs_dirs_and_symlinks_under_a_driver_root() {
    let root = scratch("root");
    let lib = root.join("usr/lib/aarch64-linux-gnu");
    fs::create_dir_all(lib.join("tegra")).unwrap();
    fs::create_dir_all(root.join("usr/src/jetson")).unwrap();
    fs::write(lib.join("tegra/libcuda.so.1.1"), "").unwrap();
    fs::write(lib.join("tegra/libnvos.so.32.1.0"), "").unwrap();
    symlink("libcuda.so.1.1", lib.join("tegra/libcuda.so.1")).unwrap();
    symlink("tegra/libcuda.so.1", lib.join("libcuda.so")).unwrap();
    // A two-step chain: absolute then relative.
    symlink(
        "/usr/lib/aarch64-linux-gnu/tegra/nvos-link",
        lib.join("libnvos.so.32"),
    )
    .unwrap();
    symlink("libnvos.so.32.1.0", lib.join("tegra/nvos-link")).unwrap();
    let text = "lib, /usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1\n\
                sym, /usr/lib/aarch64-linux-gnu/libcuda.so\n\
                sym, /usr/lib/aarch64-linux-gnu/libnvos.so.32\n\
                dir, /usr/src/jetson\n\
                dir, /usr/src/missing\n\
                lib, /usr/lib/missing.so.1\n";
    let specs = parse_mount_specs(text).specs;
    let out = find_files(&specs, &root, &[]).unwrap();
    let host = |p: &str| root.join(p.trim_start_matches('/')).display().to_string();
    let at = |p: &str, dir| CsvMount {
        path: p.to_owned(),
        dir,
    };
    assert_eq!(
        out.mounts,
        [
            at("/usr/src/jetson", true),
            at("/usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1.1", false),
            at("/usr/lib/aarch64-linux-gnu/tegra/libnvos.so.32.1.0", false),
        ]
    );
    let pair = |l: &str, t: &str| (l.to_owned(), t.to_owned());
    let lib = "/usr/lib/aarch64-linux-gnu";
    assert_eq!(
        out.links,
        [
            pair(&format!("{lib}/libcuda.so"), "tegra/libcuda.so.1"),
            pair(&format!("{lib}/tegra/libcuda.so.1"), "libcuda.so.1.1"),
            pair(
                &format!("{lib}/libnvos.so.32"),
                &format!("{lib}/tegra/nvos-link")
            ),
            pair(&format!("{lib}/tegra/nvos-link"), "libnvos.so.32.1.0"),
        ]
    );
    assert_eq!(
        out.library_links,
        [pair(&format!("{lib}/tegra/libcuda.so"), "libcuda.so.1")]
    );
    // Empty files are no ELF objects: no soname.
    assert!(out.libraries.iter().all(|l| l.soname.is_none()));
    assert_eq!(
        out.warnings,
        [
            format!("could not locate directory {}", host("/usr/src/missing")),
            format!("could not locate {}", host("/usr/lib/missing.so.1"))
        ]
    );
    // --csv.ignore-pattern: by name with `**/`, else by path.
    let by_name = find_files(&specs, &root, &["**/libcuda.so".to_owned()]).unwrap();
    assert!(
        !by_name
            .links
            .iter()
            .any(|(l, _)| l.ends_with("/libcuda.so"))
    );
    let by_path = find_files(&specs, &root, &["/usr/lib/*/libnvos.so.*".to_owned()]).unwrap();
    assert_eq!(by_path.links.len(), 2, "{:?}", by_path.links);
}

/// Hostile CSV files and roots: every one is a single-line error, nothing is mounted.
#[test]
fn hostile_entries_are_errors() {
    let root = scratch("hostile");
    let lib = root.join("usr/lib");
    fs::create_dir_all(&lib).unwrap();
    // A link that climbs out of the driver root, and one through a directory link that would
    // lead out if joined as a string.
    symlink("../../../../../etc/shadow", lib.join("libescape.so.1")).unwrap();
    symlink("/", root.join("usr/lib/up")).unwrap();
    let one = |text: &str| {
        let specs = parse_mount_specs(text).specs;
        find_files(&specs, &root, &[])
    };
    let e = one("lib, /usr/lib/libescape.so.1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("points out of the driver root"), "{e}");
    assert!(!e.contains('\n'));
    // `/usr/lib/up/etc/hostname` resolves inside the root, where it does not exist.
    let out = one("lib, /usr/lib/up/etc/hostname\n").unwrap();
    assert!(out.mounts.is_empty(), "{:?}", out.mounts);
    // `..` in a CSV path, a huge file, a directory, /dev/zero.
    let dir = scratch("hostile-files");
    fs::write(dir.join("dotdot.csv"), "lib, /usr/lib/../../etc/shadow\n").unwrap();
    let e = load_mount_specs(&[dir.join("dotdot.csv")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "CSV file {}: path \"/usr/lib/../../etc/shadow\" has a '..' component",
            dir.join("dotdot.csv").display()
        )
    );
    let huge = fs::File::create(dir.join("huge.csv")).unwrap();
    huge.set_len(MAX_CSV_SIZE + 1).unwrap();
    let e = load_mount_specs(&[dir.join("huge.csv")])
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("1048577 bytes, more than the 1048576 a CSV file may have"),
        "{e}"
    );
    let e = load_mount_specs(std::slice::from_ref(&dir))
        .unwrap_err()
        .to_string();
    assert!(e.ends_with("not a regular file"), "{e}");
    let e = load_mount_specs(&[PathBuf::from("/dev/zero")])
        .unwrap_err()
        .to_string();
    assert_eq!(e, "CSV file /dev/zero: not a regular file");
}
