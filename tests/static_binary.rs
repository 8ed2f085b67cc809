//! The binary cargo builds is the one static executable the design card promises: a plain
//! `cargo build` / `cargo test` goes through .cargo/config.toml (explicit target, +crt-static),
//! so the file under test has no program interpreter and needs no shared library.

mod common;

use common::skip_or_fail;
use std::process::Command;

#[test]
fn the_built_binary_is_static() {
    let bin = env!("CARGO_BIN_EXE_nvbox");
    let file = std::fs::File::open(bin).unwrap();
    let info = nvbox::discover::elf::read_elf_file(&file).unwrap();
    assert!(info.needed.is_empty(), "DT_NEEDED: {:?}", info.needed);
    let out = Command::new("readelf").args(["-lW", bin]).output();
    let Ok(out) = out else {
        return skip_or_fail("readelf is missing (binutils)");
    };
    let headers = String::from_utf8_lossy(&out.stdout);
    assert!(headers.contains("LOAD"), "{headers}");
    assert!(
        !headers.contains("INTERP"),
        "a program interpreter:\n{headers}"
    );
}
