//! ld.so.cache bytes from a driver root or a container image: the reader must reject or
//! accept without panicking, every string it returns must lie inside the input, and the merge
//! that rewrites an image's cache must yield a sorted cache that the reader accepts, holding each
//! injected library exactly once.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nvbox::discover::files::parse_ldcache;
use nvbox::discover::ldcache::{
    FLAG_ELF_LIBC6, FLAG_X8664_LIB64, LdCache, OwnedEntry, compare_sonames, write_cache,
};
use nvbox::live::ldcache::merge_cache;
use nvbox::plan::CacheEntry;

const LIB64: i32 = FLAG_ELF_LIBC6 | FLAG_X8664_LIB64;

fn injected() -> Vec<CacheEntry> {
    let entry = |soname: &str, file: &str, flags| CacheEntry {
        dir: "/usr/lib/x86_64-linux-gnu".into(),
        soname: soname.into(),
        file: file.into(),
        flags,
    };
    vec![
        entry("libcuda.so.1", "libcuda.so.535.104.05", LIB64),
        entry("libnvidia-ml.so.1", "libnvidia-ml.so.535.104.05", LIB64),
        entry("libcuda.so.1", "libcuda.so.535.104.05", FLAG_ELF_LIBC6),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Ok(cache) = parse_ldcache(data, "/etc/ld.so.cache") else {
        // The merge must treat an unreadable cache as no cache.
        assert_eq!(
            merge_cache(Some(data), &injected()),
            merge_cache(None, &injected())
        );
        return;
    };
    let input = data.as_ptr_range();
    let entries: Vec<_> = cache.entries().collect();
    for e in &entries {
        for s in [e.soname, e.path] {
            let r = s.as_ptr_range();
            assert!(
                input.start <= r.start && r.end <= input.end,
                "string outside the input"
            );
            assert!(!s.contains(&0), "string runs past its NUL");
            // Every string is NUL-terminated inside the input.
            assert!(r.end < input.end);
        }
    }

    // What we write from these entries reads back as the same entries (after the lossy UTF-8
    // conversion OwnedEntry makes); the writer keeps one entry per (soname, flags, path).
    let owned: Vec<OwnedEntry> = entries.iter().copied().map(OwnedEntry::from).collect();
    let written = write_cache(&owned);
    let reread = LdCache::parse(&written).expect("a cache we wrote must parse");
    let back: Vec<OwnedEntry> = reread.entries().map(OwnedEntry::from).collect();
    let key = |e: &OwnedEntry| (e.soname.clone(), e.flags, e.path.clone());
    for e in &back {
        assert!(owned.contains(e), "entry appeared from nowhere: {e:?}");
    }
    let mut keys: Vec<_> = back.iter().map(key).collect();
    keys.sort();
    let written_count = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), written_count, "duplicate entries written");
    for e in &owned {
        assert!(
            keys.binary_search(&key(e)).is_ok(),
            "entry lost by the writer: {e:?}"
        );
    }
    assert_sorted(&back);

    let ours = injected();
    let merged = merge_cache(Some(data), &ours);
    let merged = LdCache::parse(&merged).expect("a merged cache must parse");
    let merged: Vec<OwnedEntry> = merged.entries().map(OwnedEntry::from).collect();
    assert_sorted(&merged);
    for e in &ours {
        let same: Vec<_> = merged
            .iter()
            .filter(|m| m.soname == e.soname && m.flags == e.flags)
            .collect();
        assert_eq!(same.len(), 1, "injected {e:?} not exactly once: {same:?}");
        assert_eq!(same[0].path, format!("{}/{}", e.dir, e.soname));
    }
});

/// ldconfig's order, which the loader's binary search relies on: sonames never ascend.
fn assert_sorted(entries: &[OwnedEntry]) {
    for pair in entries.windows(2) {
        assert_ne!(
            compare_sonames(pair[0].soname.as_bytes(), pair[1].soname.as_bytes()),
            std::cmp::Ordering::Less,
            "cache out of order: {:?} before {:?}",
            pair[0].soname,
            pair[1].soname
        );
    }
}
