//! `nvidia-docker`: the nvidia-docker 2.x wrapper. It adds `--runtime=nvidia` (and
//! `-e NVIDIA_VISIBLE_DEVICES=…` from `NV_GPU`) to commands that make a container, then `exec`s
//! docker so exit status, signals and stdio stay docker's own.
//!
//! Upstream's script took the first `run`/`create` token anywhere as the trigger, so it broke
//! `network create`, `exec CTR run`, and a global option whose value was `run`. Here the
//! subcommand is found the way docker finds it: past the global options and their values.

use anyhow::Context;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

/// Docker 20.10's global options that take a value (`docker --help`); all others are switches.
const LONG_WITH_VALUE: &[&str] = &[
    "--config",
    "--context",
    "--host",
    "--log-level",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
];
const SHORT_WITH_VALUE: &[u8] = b"cHl";

/// The docker command line to exec, and whether `version` asks for upstream's banner first.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub args: Vec<OsString>,
    pub banner: bool,
}

/// Where docker's subcommand sits in argv, as far as the wrapper cares.
#[derive(Debug, PartialEq, Eq)]
enum Subcommand {
    /// `run`, `create`, `container run|create`: NVIDIA's flags go at this index.
    MakesContainer(usize),
    Version,
    Other,
}

pub fn main(name: &str, args: Vec<OsString>) -> ExitCode {
    let gpu = std::env::var_os("NV_GPU");
    let rewrite = rewrite_args(args, gpu.as_deref());
    let program = docker_program(std::env::var_os("NV_DOCKER").as_deref());
    if std::env::var_os("NV_DEBUG").is_some_and(|v| !v.is_empty()) {
        eprintln!("+ exec {}", trace_line(program.iter().chain(&rewrite.args)));
    }
    if rewrite.banner {
        let mut out = std::io::stdout().lock();
        let printed = writeln!(out, "NVIDIA Docker: {}", crate::version::VERSION)
            .and_then(|()| out.flush())
            .context("print version banner");
        if let Err(err) = printed {
            return crate::report::finish(name, Err(err));
        }
    }
    exec_docker(name, &program, &rewrite.args)
}

/// Replace this process with docker; only a failed exec comes back. Like a shell: 127 when the
/// program is missing, 126 when it cannot be run.
fn exec_docker(name: &str, program: &[OsString], args: &[OsString]) -> ExitCode {
    let err = Command::new(&program[0])
        .args(&program[1..])
        .args(args)
        .exec();
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    let err = anyhow::Error::new(err).context(format!("exec {}", program[0].to_string_lossy()));
    eprintln!("{name}: {}", crate::report::one_line(&err));
    ExitCode::from(code)
}

/// `NV_DOCKER` split on whitespace (upstream expands it unquoted, so `sudo docker` works);
/// `docker` from PATH when unset or blank.
pub fn docker_program(nv_docker: Option<&OsStr>) -> Vec<OsString> {
    let words = nv_docker.map(split_words).unwrap_or_default();
    if words.is_empty() {
        return vec![OsString::from("docker")];
    }
    words
}

/// Insert NVIDIA's flags right after the subcommand word, so the user's own `--runtime` or
/// `-e NVIDIA_VISIBLE_DEVICES` later on the line still wins.
pub fn rewrite_args(mut args: Vec<OsString>, nv_gpu: Option<&OsStr>) -> Rewrite {
    match find_subcommand(&args) {
        Subcommand::MakesContainer(at) => {
            let mut extra = vec![OsString::from("--runtime=nvidia")];
            if let Some(devices) = nv_gpu.and_then(visible_devices) {
                extra.push(OsString::from("-e"));
                let mut env = OsString::from("NVIDIA_VISIBLE_DEVICES=");
                env.push(devices);
                extra.push(env);
            }
            args.splice(at..at, extra);
            Rewrite {
                args,
                banner: false,
            }
        }
        Subcommand::Version => Rewrite { args, banner: true },
        Subcommand::Other => Rewrite {
            args,
            banner: false,
        },
    }
}

/// `NV_GPU="0 2"` → `0,2`. Runs of blanks make one comma (upstream turned each space into one,
/// so `"0  2"` gave an empty id); a blank value means no selection, as an unset one does.
fn visible_devices(nv_gpu: &OsStr) -> Option<OsString> {
    let words = split_words(nv_gpu);
    if words.is_empty() {
        return None;
    }
    Some(OsString::from(OsStr::from_bytes(
        &words
            .iter()
            .map(|w| w.as_bytes())
            .collect::<Vec<_>>()
            .join(&b','),
    )))
}

fn split_words(s: &OsStr) -> Vec<OsString> {
    s.as_bytes()
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty())
        .map(|w| OsStr::from_bytes(w).to_os_string())
        .collect()
}

/// Skip docker's global options (with their values) to the first word, docker's subcommand.
/// docker stops reading its own options there, so nothing after it is scanned; a `--` before
/// it leaves the command alone, as upstream did.
fn find_subcommand(args: &[OsString]) -> Subcommand {
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_bytes();
        if arg == b"--" {
            return Subcommand::Other;
        }
        if !arg.starts_with(b"-") || arg == b"-" {
            break;
        }
        i += 1 + usize::from(takes_next_value(arg));
    }
    let word = |k: usize| args.get(k).map(|a| a.as_bytes());
    match word(i) {
        Some(b"run" | b"create") => Subcommand::MakesContainer(i + 1),
        Some(b"container") if matches!(word(i + 1), Some(b"run" | b"create")) => {
            Subcommand::MakesContainer(i + 2)
        }
        Some(b"version") => Subcommand::Version,
        _ => Subcommand::Other,
    }
}

/// Whether an option token leaves its value to the next argument: `--host X` but not
/// `--host=X`; in a cluster of short options (`-DH X`) the first one that takes a value owns the
/// rest of the token (`-Hunix:///s`), or the next argument when nothing is left.
fn takes_next_value(arg: &[u8]) -> bool {
    if let Some(long) = arg.strip_prefix(b"--") {
        return !long.contains(&b'=') && LONG_WITH_VALUE.iter().any(|o| &o.as_bytes()[2..] == long);
    }
    let shorts = &arg[1..];
    match shorts.iter().position(|c| SHORT_WITH_VALUE.contains(c)) {
        Some(p) => p + 1 == shorts.len(),
        None => false,
    }
}

/// The command as `set -x` shows it: words with shell metacharacters in single quotes.
fn trace_line<'a>(words: impl Iterator<Item = &'a OsString>) -> String {
    let quote = |w: &OsString| {
        let s = w.to_string_lossy();
        let plain = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=+/.,:@%".contains(&b));
        if plain {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    words.map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(words: &str) -> Vec<OsString> {
        words
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(OsString::from)
            .collect()
    }

    fn rewrite(args: &str, gpu: Option<&str>) -> String {
        let out = rewrite_args(os(args), gpu.map(OsStr::new));
        assert!(!out.banner, "{args}");
        out.args
            .iter()
            .map(|a| a.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn run_and_create_get_the_runtime_right_after_the_subcommand() {
        let table = [
            ("run img", "run --runtime=nvidia img"),
            (
                "create --name x img",
                "create --runtime=nvidia --name x img",
            ),
            (
                "run --runtime=runc img",
                "run --runtime=nvidia --runtime=runc img",
            ),
            ("container run img", "container run --runtime=nvidia img"),
            (
                "container create img",
                "container create --runtime=nvidia img",
            ),
            ("run img run create", "run --runtime=nvidia img run create"),
            ("run -- img", "run --runtime=nvidia -- img"),
        ];
        for (args, want) in table {
            assert_eq!(rewrite(args, None), want, "{args}");
        }
    }

    #[test]
    fn global_options_and_their_values_are_skipped() {
        let table = [
            (
                "-H unix:///s run img",
                "-H unix:///s run --runtime=nvidia img",
            ),
            (
                "--host unix:///s run img",
                "--host unix:///s run --runtime=nvidia img",
            ),
            (
                "--host=unix:///s run img",
                "--host=unix:///s run --runtime=nvidia img",
            ),
            (
                "-Hunix:///s run img",
                "-Hunix:///s run --runtime=nvidia img",
            ),
            (
                "-DH unix:///s run img",
                "-DH unix:///s run --runtime=nvidia img",
            ),
            (
                "--config /c -l debug --context ctx -D --tls --tlsverify run img",
                "--config /c -l debug --context ctx -D --tls --tlsverify run --runtime=nvidia img",
            ),
            (
                "--tlscacert a --tlscert b --tlskey c container create img",
                "--tlscacert a --tlscert b --tlskey c container create --runtime=nvidia img",
            ),
            ("-c run run img", "-c run run --runtime=nvidia img"),
        ];
        for (args, want) in table {
            assert_eq!(rewrite(args, None), want, "{args}");
        }
    }

    #[test]
    fn other_commands_pass_through_untouched() {
        for args in [
            "-H run ps",
            "--host run ps",
            "--context create ps",
            "-l run images",
            "network create x",
            "volume create v",
            "context create c",
            "exec ctr run",
            "container exec ctr create",
            "image ls run",
            "compose run svc",
            "help run",
            "container ls",
            "-- run img",
            "-H unix:///s -- run img",
            "--version",
            "-v",
            "",
        ] {
            assert_eq!(rewrite(args, Some("0 2")), args, "{args}");
        }
    }

    #[test]
    fn nv_gpu_becomes_visible_devices() {
        let table = [
            (
                Some("0 2"),
                "run --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=0,2 img",
            ),
            (
                Some("1"),
                "run --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=1 img",
            ),
            (
                Some(" 0  1\t3 "),
                "run --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=0,1,3 img",
            ),
            (
                Some("0,1 GPU-x"),
                "run --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=0,1,GPU-x img",
            ),
            (
                Some("all"),
                "run --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=all img",
            ),
            (Some(""), "run --runtime=nvidia img"),
            (Some("   "), "run --runtime=nvidia img"),
            (None, "run --runtime=nvidia img"),
        ];
        for (gpu, want) in table {
            let gpu = gpu.map(|g| g.replace("\\t", "\t"));
            assert_eq!(rewrite("run img", gpu.as_deref()), want, "{gpu:?}");
        }
        assert_eq!(
            rewrite("-H unix:///s container create img", Some("3")),
            "-H unix:///s container create --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=3 img"
        );
    }

    #[test]
    fn version_subcommand_asks_for_the_banner() {
        for args in ["version", "-H unix:///s version", "version --format x"] {
            let out = rewrite_args(os(args), Some(OsStr::new("0")));
            assert!(out.banner, "{args}");
            assert_eq!(out.args, os(args), "{args}");
        }
        for args in ["--context version ps", "exec ctr version", "-v"] {
            assert!(!rewrite_args(os(args), None).banner, "{args}");
        }
    }

    #[test]
    fn non_utf8_arguments_survive() {
        let odd = OsString::from(OsStr::from_bytes(b"\xff\xfe"));
        let args = vec![OsString::from("run"), odd.clone()];
        let out = rewrite_args(args, None);
        assert_eq!(
            out.args,
            vec![OsString::from("run"), "--runtime=nvidia".into(), odd]
        );
    }

    #[test]
    fn nv_docker_picks_the_program() {
        assert_eq!(docker_program(None), os("docker"));
        assert_eq!(docker_program(Some(OsStr::new(""))), os("docker"));
        assert_eq!(docker_program(Some(OsStr::new(" "))), os("docker"));
        assert_eq!(
            docker_program(Some(OsStr::new("/usr/bin/docker"))),
            os("/usr/bin/docker")
        );
        assert_eq!(
            docker_program(Some(OsStr::new("sudo  docker"))),
            os("sudo docker")
        );
    }

    #[test]
    fn trace_quotes_like_set_x() {
        let words = [
            OsString::from("docker"),
            "run".into(),
            "sh".into(),
            "-c".into(),
            "echo it's $X".into(),
            "".into(),
        ];
        assert_eq!(
            trace_line(words.iter()),
            r"docker run sh -c 'echo it'\''s $X' ''"
        );
    }
}
