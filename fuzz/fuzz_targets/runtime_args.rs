//! The runtime shim's argv, as an engine (or anyone who can run it) passes it. Input: arguments
//! separated by NUL bytes. Invariants: every value found is one of the arguments or the part
//! after `=` of one; `create` and `--version` are only reported when such a word is there.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nvbox::applets::runtime::args::scan;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args: Vec<String> = text.split('\0').map(str::to_owned).collect();
    let Ok(s) = scan(&args) else {
        return;
    };
    let from_args = |v: &str| {
        args.iter()
            .any(|a| a == v || a.split_once('=').is_some_and(|(_, after)| after == v))
    };
    assert!(
        s.bundle.is_empty() || from_args(&s.bundle),
        "bundle {:?}",
        s.bundle
    );
    for v in [&s.log, &s.log_format].into_iter().flatten() {
        assert!(from_args(v), "value {v:?} not from argv");
    }
    if s.create {
        assert!(args.iter().any(|a| a == "create"));
    }
    if s.version {
        assert!(
            args.iter()
                .any(|a| a.trim_start_matches('-').starts_with("version"))
        );
    }
    if s.debug {
        assert!(
            args.iter()
                .any(|a| a.trim_start_matches('-').starts_with("debug"))
        );
    }
    assert_eq!(scan(&args).ok(), Some(s));
});
