//! The runtime's argv, scanned the way upstream does (reference nvidia-container-toolkit.md
//! §2.2): no flag parser, position independent, so global and subcommand flags of any runc
//! version are understood the same way and passed through untouched.

use anyhow::{Result, bail};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// `-b/--bundle/-bundle[=]VALUE`; empty = the current directory, as runc's default.
    pub bundle: String,
    /// A `create` subcommand word (not the value of a bundle flag).
    pub create: bool,
    /// `--version` anywhere.
    pub version: bool,
    /// `--log FILE` and `--log-format FMT`, as containerd and docker pass them to runc.
    pub log: Option<String>,
    pub log_format: Option<String>,
    pub debug: bool,
}

/// A flag's name with its dashes and any `=value` removed, if `arg` is a flag at all.
fn flag_name(arg: &str) -> Option<(&str, Option<&str>)> {
    if !arg.starts_with('-') {
        return None;
    }
    let (head, value) = match arg.split_once('=') {
        Some((h, v)) => (h, Some(v)),
        None => (arg, None),
    };
    Some((head.trim_start_matches('-'), value))
}

pub fn scan(args: &[String]) -> Result<Scan> {
    let mut s = Scan::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "create" && !(i > 0 && is_bundle_flag_without_value(&args[i - 1])) {
            s.create = true;
        }
        if let Some((name, value)) = flag_name(arg) {
            let mut take = |slot: &mut Option<String>| -> Result<()> {
                *slot = match value {
                    Some(v) => Some(v.to_owned()),
                    None => {
                        i += 1;
                        match args.get(i) {
                            Some(v) => Some(v.clone()),
                            None => bail!("{name} option requires an argument"),
                        }
                    }
                };
                Ok(())
            };
            match name {
                "b" | "bundle" => {
                    let mut b = None;
                    take(&mut b)
                        .map_err(|_| anyhow::anyhow!("bundle option requires an argument"))?;
                    s.bundle = b.unwrap_or_default();
                    // The value was consumed; a `create` there is a directory name.
                    i += 1;
                    continue;
                }
                "log" => take(&mut s.log)?,
                "log-format" => take(&mut s.log_format)?,
                "version" => s.version = true,
                "debug" => s.debug = true,
                _ => {}
            }
        }
        i += 1;
    }
    Ok(s)
}

fn is_bundle_flag_without_value(arg: &str) -> bool {
    matches!(flag_name(arg), Some(("b" | "bundle", None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    /// Upstream's bundle table (reference §10 case 1), plus the create cases (case 2).
    #[test]
    fn bundle_and_create() {
        let ok: &[(&[&str], &str, bool)] = &[
            (&[], "", false),
            (&["create"], "", true),
            (&["--bundle", "/x"], "/x", false),
            (&["-bundle", "/x"], "/x", false),
            (&["--bundle=/x"], "/x", false),
            (&["-b=/x"], "/x", false),
            (&["-b=/foo/=bar"], "/foo/=bar", false),
            (&["create", "-b", "/x"], "/x", true),
            (&["-b", "create", "create"], "create", true),
            (&["--not-bundle", "/x"], "", false),
            (&["--"], "", false),
            (&["--bundle=create"], "create", false),
            (&["--bundle", "create"], "create", false),
            (
                &["--root", "/run/runc", "create", "--bundle", "/b", "ctr"],
                "/b",
                true,
            ),
            (&["-b", "/a", "-b", "/c"], "/c", false),
        ];
        for (args, bundle, create) in ok {
            let s = scan(&v(args)).unwrap();
            assert_eq!(s.bundle, *bundle, "{args:?}");
            assert_eq!(s.create, *create, "{args:?}");
        }
        for bad in [&["--bundle"][..], &["-b"], &["create", "--bundle"]] {
            assert_eq!(
                scan(&v(bad)).unwrap_err().to_string(),
                "bundle option requires an argument",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn logging_and_version_flags() {
        let s = scan(&v(&[
            "--root",
            "/r",
            "--log",
            "/b/log.json",
            "--log-format=json",
            "--debug",
            "create",
            "x",
        ]))
        .unwrap();
        assert_eq!(s.log.as_deref(), Some("/b/log.json"));
        assert_eq!(s.log_format.as_deref(), Some("json"));
        assert!(s.debug && s.create && !s.version);
        assert!(scan(&v(&["--version"])).unwrap().version);
        assert!(scan(&v(&["-v"])).is_ok());
    }
}
