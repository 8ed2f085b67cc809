//! The nvidia-docker wrapper's argv and NV_GPU. Input: the NV_GPU value, then the arguments,
//! all separated by NUL bytes. Invariants: the rewrite only inserts (the user's arguments stay,
//! in order, so their own `--runtime` or `-e` still wins), and what it inserts is
//! `--runtime=nvidia`, optionally followed by `-e NVIDIA_VISIBLE_DEVICES=<ids>`, with ids
//! free of blanks.

#![no_main]

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use libfuzzer_sys::fuzz_target;
use nvbox::applets::docker::{docker_program, rewrite_args};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let nv_gpu = parts.next().map(OsStr::from_bytes);
    let args: Vec<OsString> = parts.map(|p| OsStr::from_bytes(p).to_os_string()).collect();
    let out = rewrite_args(args.clone(), nv_gpu);
    let added = out.args.len() - args.len();
    assert!(matches!(added, 0 | 1 | 3), "inserted {added} words");
    if added > 0 {
        assert!(!out.banner);
        let at = (0..=args.len())
            .find(|&i| out.args[..i] == args[..i] && out.args[i + added..] == args[i..])
            .expect("the user's arguments must survive in order");
        assert_eq!(out.args[at], "--runtime=nvidia");
        if added == 3 {
            assert_eq!(out.args[at + 1], "-e");
            let env = out.args[at + 2].as_bytes();
            let ids = env
                .strip_prefix(b"NVIDIA_VISIBLE_DEVICES=")
                .expect("the inserted variable");
            assert!(!ids.is_empty() && !ids.iter().any(u8::is_ascii_whitespace));
        }
    } else {
        assert_eq!(out.args, args);
    }
    let program = docker_program(nv_gpu);
    assert!(!program.is_empty() && program.iter().all(|w| !w.is_empty()));
});
