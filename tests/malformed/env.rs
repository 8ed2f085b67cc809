//! Device, capability, requirement and MIG values: through the hook (the container's env),
//! the runtime shim in jit-cdi mode, and `nvidia-container-cli configure` flags.

use std::os::unix::ffi::OsStrExt;

use super::*;

const HOOK: &str = "nvidia-container-runtime-hook";
const CLI: &str = "nvidia-container-cli";

fn big(n: usize) -> String {
    "x".repeat(n)
}

/// `configure --dry-run ARGS ROOTFS` on the host.
fn configure(host: &Host, args: &[&str]) -> Output {
    let rootfs = host.dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let mut all = vec!["configure", "--dry-run"];
    all.extend_from_slice(args);
    all.push(rootfs.to_str().unwrap());
    host.run(CLI, &all)
}

#[test]
fn visible_devices_that_name_no_gpu() {
    let host = Host::new("mal-dev");
    let shim = Shim::new(&host, "jit-cdi", "");
    let one_mb = big(1 << 20);
    // A single argv string is limited to 128 KiB (MAX_ARG_STRLEN): the flag gets less.
    let flag_max = big(100 << 10);
    // libnvidia-container §5.4: anything that is not all/UUID/bus id/index/MIG ⇒
    // `device error: <token>: unknown device`; jit-cdi refuses the same ids (toolkit §2.5).
    let tokens = [
        "99",
        "GPU-bogus",
        "-1",
        "0:99",
        "MIG-bogus",
        "18446744073709551616",
        one_mb.as_str(),
    ];
    for tok in tokens {
        let case = &format!("NVIDIA_VISIBLE_DEVICES={}", &tok[..tok.len().min(24)]);
        // A long value is quoted with its middle cut: its head must be there.
        let quoted = |t: &str| {
            if t.len() > 1000 {
                format!("device error: {}", &t[..1000])
            } else {
                format!("device error: {t}: unknown device")
            }
        };
        let want = quoted(tok);
        let env = format!("NVIDIA_VISIBLE_DEVICES={tok}");
        let bundle = Bundle::with_env(&host, "b", &[&env], false);
        let before = bundle.tree();
        let out = run_with(
            &host.config,
            HOOK,
            &["prestart"],
            Some(&bundle.state(NO_PID)),
        );
        assert_refused(HOOK, &out, &want, case);
        assert_eq!(bundle.tree(), before, "{case}");
        assert_create_refused(&shim, &bundle, &want, case);
        let tok = if tok.len() > flag_max.len() {
            flag_max.as_str()
        } else {
            tok
        };
        let out = configure(&host, &[&format!("--device={tok}")]);
        assert_refused(CLI, &out, &quoted(tok), case);
        std::fs::remove_dir_all(&bundle.dir).unwrap();
    }
    // Not UTF-8 (only a flag can carry it; JSON cannot).
    let mut arg = b"--device=0,".to_vec();
    arg.extend_from_slice(b"\xff\xfe");
    let rootfs = host.dir.path().join("rootfs");
    let out = command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &host.config)
        .args([CLI, "configure", "--dry-run"])
        .arg(std::ffi::OsStr::from_bytes(&arg))
        .arg(&rootfs)
        .output()
        .unwrap();
    assert_refused(CLI, &out, "input error: ", "non-UTF-8 --device");
    assert_eq!(mounts_under(host.dir.path()), Vec::<String>::new());
}

/// Empty entries are dropped (toolkit §3.1: "entries trimmed, empty entries dropped";
/// libnvidia-container §5.4: "empty tokens ignored"), so `0,,1` is GPUs 0 and 1 everywhere.
#[test]
fn empty_device_entries_are_ignored() {
    let host = Host::new("mal-empty");
    let want = stdout(&configure(&host, &["--device=0,1", "--compute"]));
    assert!(want.contains("/dev/nvidia1"), "{want}");
    for spec in ["0,,1", ",0,1,", "0, ,1"] {
        let out = configure(&host, &[&format!("--device={spec}"), "--compute"]);
        assert!(out.status.success(), "{spec}: {}", stderr(&out));
        assert_eq!(stdout(&out), want, "--device={spec}");
    }
    // The hook hands nvidia-container-cli `--device=0,1` (§4.3 argument order).
    let args = host.dir.path().join("cli-args");
    let recorder = host.dir.path().join("record-cli");
    std::fs::write(
        &recorder,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\n", args.display()),
    )
    .unwrap();
    assert!(
        sh(&format!("chmod 755 {}", recorder.display()))
            .status
            .success()
    );
    let cfg = host.config_with("record.toml", "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[nvidia-container-cli]\n",
        &format!(
            "[nvidia-container-cli]\npath = \"{}\"\n",
            recorder.display()
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    let bundle = Bundle::with_env(&host, "b", &["NVIDIA_VISIBLE_DEVICES=0,,1"], false);
    let out = run_with(&cfg, HOOK, &["prestart"], Some(&bundle.state(NO_PID)));
    assert!(out.status.success(), "{}", stderr(&out));
    let got = std::fs::read_to_string(&args).unwrap();
    assert!(got.lines().any(|l| l == "--device=0,1"), "{got}");
    // jit-cdi injects both GPUs.
    let shim = Shim::new(&host, "jit-cdi", "");
    let out = shim.create(&bundle);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(shim.ran());
    let spec = std::fs::read_to_string(bundle.dir.join("config.json")).unwrap();
    for gpu in ["nvidia0", "nvidia1"] {
        assert!(
            spec.contains(&format!("\"/dev/{gpu}\"")),
            "{gpu} missing: {spec}"
        );
    }
}

#[test]
fn capabilities_requirements_and_mig_values() {
    let host = Host::new("mal-caps");
    let too_many: Vec<String> = (0..33)
        .map(|i| format!("NVIDIA_REQUIRE_R{i}=driver>=1"))
        .collect();
    let mut cases: Vec<(String, Vec<String>, &str)> = vec![
        // Toolkit §3.2: any unknown capability fails the hook.
        (
            "caps garbage".into(),
            vec!["NVIDIA_DRIVER_CAPABILITIES=garbage".into()],
            "unsupported capabilities found in 'garbage' (allowed '')",
        ),
        (
            "caps 1 MB".into(),
            vec![format!("NVIDIA_DRIVER_CAPABILITIES={}", big(1 << 20))],
            "unsupported capabilities found in",
        ),
        // libnvidia-container §5.12: bad operator / unknown name ⇒ invalid expression.
        (
            "require bad operator".into(),
            vec!["NVIDIA_REQUIRE_CUDA=cuda>>1".into()],
            "requirement error: invalid expression",
        ),
        (
            "require unknown name".into(),
            vec!["NVIDIA_REQUIRE_X=bogus=1".into()],
            "requirement error: invalid expression",
        ),
        (
            "require no value".into(),
            vec!["NVIDIA_REQUIRE_X=driver>=".into()],
            "requirement error: invalid expression",
        ),
        (
            "require 1 MB".into(),
            vec![format!("NVIDIA_REQUIRE_X=driver>={}", big(1 << 20))],
            "requirement error: invalid expression",
        ),
        // §1.5: at most 32 requirements.
        (
            "33 requirements".into(),
            too_many,
            "requirement error: too many requirements",
        ),
        // §5.4: only `all`.
        (
            "mig-config garbage".into(),
            vec!["NVIDIA_MIG_CONFIG_DEVICES=garbage".into()],
            "mig-config error: only 'all' devices are currently supported",
        ),
        (
            "mig-monitor index".into(),
            vec!["NVIDIA_MIG_MONITOR_DEVICES=0".into()],
            "mig-monitor error: only 'all' devices are currently supported",
        ),
        (
            "CUDA_VERSION garbage".into(),
            vec!["CUDA_VERSION=garbage".into()],
            "invalid CUDA_VERSION \"garbage\"",
        ),
        (
            "IMEX garbage".into(),
            vec!["NVIDIA_IMEX_CHANNELS=garbage".into()],
            "invalid IMEX channel \"garbage\"",
        ),
    ];
    cases.push((
        "unprivileged mig-config".into(),
        vec!["NVIDIA_MIG_CONFIG_DEVICES=all".into()],
        "cannot set MIG_CONFIG_DEVICES in non privileged container",
    ));
    for (i, (case, vars, want)) in cases.iter().enumerate() {
        let mut env: Vec<&str> = vec!["NVIDIA_VISIBLE_DEVICES=all"];
        env.extend(vars.iter().map(String::as_str));
        let privileged = !case.starts_with("unprivileged");
        let bundle = Bundle::with_env(&host, &format!("b{i}"), &env, privileged);
        let before = bundle.tree();
        let out = run_with(
            &host.config,
            HOOK,
            &["prestart"],
            Some(&bundle.state(NO_PID)),
        );
        assert_refused(HOOK, &out, want, case);
        assert_eq!(bundle.tree(), before, "{case}");
    }
    // The same through the flags.
    let mut reqs: Vec<String> = (0..33).map(|_| "--require=driver>=1".to_string()).collect();
    let flag_cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "--require bad",
            vec!["--require=cuda>>1".into()],
            "requirement error: invalid expression",
        ),
        // §10 gives the body only; the command line refuses it while parsing its flags.
        (
            "33 --require",
            std::mem::take(&mut reqs),
            "too many requirements",
        ),
        (
            "--mig-config garbage",
            vec!["--device=all".into(), "--mig-config=garbage".into()],
            "mig-config error: only 'all' devices are currently supported",
        ),
        (
            "--imex-channel garbage",
            vec!["--imex-channel=x".into()],
            "error parsing IMEX info: unsupported IMEX channel value: x",
        ),
    ];
    for (case, args, want) in &flag_cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_refused(CLI, &configure(&host, &args), want, case);
    }
}

/// jit-cdi ignores NVIDIA_DRIVER_CAPABILITIES, NVIDIA_REQUIRE_* and the MIG variables (toolkit
/// §3.2: "jit-cdi/cdi ignore it", "not evaluated in cdi/jit-cdi", "Legacy hook only"): garbage
/// there does not fail `create`.
#[test]
fn jit_cdi_ignores_capabilities_and_requirements() {
    let host = Host::new("mal-jit");
    let shim = Shim::new(&host, "jit-cdi", "");
    let env = [
        "NVIDIA_VISIBLE_DEVICES=0",
        "NVIDIA_DRIVER_CAPABILITIES=garbage",
        "NVIDIA_REQUIRE_X=cuda>>1",
        "NVIDIA_MIG_CONFIG_DEVICES=garbage",
    ];
    let bundle = Bundle::with_env(&host, "b", &env, false);
    let out = shim.create(&bundle);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(shim.ran());
}

/// A reader that went away (`configure --dry-run | head`) ends the plan quietly, not in a panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let host = Host::new("mal-pipe");
    let rootfs = host.dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = command(nvbox())
        .env("NVIDIA_CTK_CONFIG_FILE_PATH", &host.config)
        .args([CLI, "configure", "--dry-run", "--device=all", "--compute"])
        .arg(&rootfs)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_no_panic(&stderr(&out), "closed stdout");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}
