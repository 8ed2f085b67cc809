//! What a hook reads: the OCI state on stdin and the bundle's config.json. The input is tried as
//! both. Invariants: a decoded state names a bundle; a container view from a parsed config.json
//! yields a request (or an error) without panicking, and a GPU request's capabilities are known
//! ones.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nvbox::config::Config;
use nvbox::request::{Caps, read_container, read_state, request_from_container};

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = read_state(data) {
        assert!(!state.bundle.is_empty());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(container) = read_container(&value) else {
        return;
    };
    let Ok(req) = request_from_container(&container, &Config::default()) else {
        return;
    };
    assert!(Caps::ALL.contains(req.caps));
    if !req.is_gpu_container() {
        assert!(req.device_spec().is_none());
    }
});
