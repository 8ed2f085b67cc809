//! A broken config.toml, for every applet that reads it: each refuses with one line naming the
//! file, changes nothing, and the runtime never starts runc (toolkit §2.7).

use super::*;

#[test]
fn every_applet_refuses_a_broken_config_toml() {
    let host = Host::new("mal-toml");
    let good = std::fs::read_to_string(&host.config).unwrap();
    let huge = format!(
        "{good}\n[nvidia-container-runtime]\nmode = \"{}",
        "a".repeat(10 << 20)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "syntax",
            format!("{good}\n[nvidia-container-runtime\n").into_bytes(),
            "invalid config: unclosed table",
        ),
        (
            "mode a number",
            format!("{good}\n[nvidia-container-runtime]\nmode = 5\n").into_bytes(),
            "invalid config: invalid type: integer `5`, expected a string",
        ),
        (
            "unknown mode",
            format!("{good}\n[nvidia-container-runtime]\nmode = \"bogus\"\n").into_bytes(),
            "nvidia-container-runtime.mode \"bogus\" is not one of",
        ),
        (
            "bool a string",
            good.replace(
                "[nvidia-container-cli]\n",
                "[nvidia-container-cli]\nload-kmods = \"yes\"\n",
            )
            .into_bytes(),
            "expected a boolean",
        ),
        (
            "runtimes a string",
            format!("{good}\n[nvidia-container-runtime]\nruntimes = \"runc\"\n").into_bytes(),
            "expected a sequence",
        ),
        (
            "duplicate key",
            good.replace("[nvbox]\n", "[nvbox]\nsys-root = \"/\"\n")
                .into_bytes(),
            "invalid config: duplicate key",
        ),
        ("huge unterminated", huge.into_bytes(), "invalid config"),
        (
            "not UTF-8",
            [good.as_bytes(), b"\n# \xff\xfe\n"].concat(),
            "stream did not contain valid UTF-8",
        ),
    ];
    let rootfs = host.dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let r = rootfs.to_str().unwrap();
    let bundle = Bundle::with_env(&host, "b", &["NVIDIA_VISIBLE_DEVICES=all"], false);
    let b = bundle.dir.to_str().unwrap();
    let cdi_out = host.dir.path().join("out/nvidia.yaml");
    let runs: &[(&str, &[&str], &str)] = &[
        (
            "nvidia-container-runtime-hook",
            &["prestart"],
            "nvidia-container-runtime-hook: ",
        ),
        (
            "nvidia-container-runtime",
            &["create", "--bundle", b, "m"],
            "nvidia-container-runtime: ",
        ),
        (
            "nvidia-container-cli",
            &["list"],
            "nvidia-container-cli: initialization error: ",
        ),
        (
            "nvidia-container-cli",
            &["info"],
            "nvidia-container-cli: initialization error: ",
        ),
        (
            "nvidia-container-cli",
            &["configure", "--dry-run", "--device=0", r],
            "nvidia-container-cli: initialization error: ",
        ),
        (
            "nvidia-ctk",
            &["cdi", "generate", "--output", cdi_out.to_str().unwrap()],
            "nvidia-ctk: ",
        ),
        ("nvidia-ctk", &["config"], "nvidia-ctk: "),
    ];
    for (case, bytes, want) in &cases {
        let cfg = host.dir.path().join(format!("{case}.toml"));
        std::fs::write(&cfg, bytes).unwrap();
        let before = (bundle.tree(), tree(&host.root()));
        for (applet, args, prefix) in runs {
            let what = format!("{case}: {applet} {}", args[0]);
            let out = run_with(&cfg, applet, args, Some(&bundle.state(NO_PID)));
            assert_refused(applet, &out, want, &what);
            assert!(stderr(&out).starts_with(prefix), "{what}: {}", stderr(&out));
            assert!(
                stderr(&out).contains(&cfg.display().to_string()),
                "{what}: file not named"
            );
            assert!(!cdi_out.exists(), "{what}: spec written");
        }
        assert_eq!(
            std::fs::read(&cfg).unwrap(),
            *bytes,
            "{case}: config.toml changed"
        );
        assert_eq!((bundle.tree(), tree(&host.root())), before, "{case}");
    }
    // A directory where the file should be.
    let dir_cfg = host.dir.path().join("dir.toml");
    std::fs::create_dir_all(&dir_cfg).unwrap();
    for (applet, args, _) in runs {
        let out = run_with(&dir_cfg, applet, args, Some(&bundle.state(NO_PID)));
        assert_refused(applet, &out, "dir.toml", &format!("directory: {applet}"));
    }
}
