//! ELF bytes from a driver root or a container image (libraries, compat libcuda): the bounded
//! reader must accept or reject without panicking, never read more than READ_BOUND bytes
//! however large the file claims to be, and return strings that lie in the file.
//!
//! The first 4 input bytes give the file's size past the input (a hole of zeros, as a sparse
//! file reads), so that offsets and sizes up to 4 GiB are reachable without 4 GiB inputs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nvbox::discover::elf::{ElfError, READ_BOUND, Reader, Source, read_elf_from};

struct Sparse<'a> {
    bytes: &'a [u8],
    size: u64,
}

impl Source for Sparse<'_> {
    fn size(&self) -> Result<u64, ElfError> {
        Ok(self.size)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ElfError> {
        for (i, b) in buf.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = usize::try_from(at)
                .ok()
                .and_then(|at| self.bytes.get(at))
                .copied()
                .unwrap_or(0);
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((hole, bytes)) = data.split_first_chunk::<4>() else {
        return;
    };
    let size = bytes.len() as u64 + u64::from(u32::from_le_bytes(*hole));
    let src = Sparse { bytes, size };
    let reader = Reader::new(&src).unwrap();
    let result = read_elf_from(&reader);
    assert!(reader.bytes_read() <= READ_BOUND, "{} bytes read", reader.bytes_read());
    if let Ok(info) = result {
        for name in info.soname.iter().chain(&info.needed) {
            let found = name.is_empty()
                || bytes.windows(name.len()).any(|w| w == name.as_bytes());
            assert!(found, "{name:?} is not in the input");
        }
    }
});
