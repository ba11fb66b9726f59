//! The DNC snapshot reader, `Snapshot::from_image` (what `Snapshot::open` runs on the mmap'd
//! file). So that the fuzzer gets past the integrity checks to the layout validation and the
//! readers, the input's header is patched when it is at least 128 bytes: magic, version,
//! header length, file length and the xxh3 checksum are made right; everything else (counts,
//! section sizes, chunk heads, bits) is the fuzzer's. An accepted snapshot is then used the
//! ways sipguard uses one: membership (`set().contains`), iteration, categorised lookups,
//! category names, `contents()`. Checks: no panic, no hang, bounded memory; and for an
//! accepted snapshot whose values come out sorted, that every value it lists is found by
//! `contains` and that re-encoding its contents gives a snapshot with the same contents.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sipguard::screen::dnc::snapshot::{MAGIC, Snapshot, VERSION, image};
use std::time::UNIX_EPOCH;

fn checksum(b: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&b[..16]);
    h.update(&[0; 8]);
    h.update(&b[24..]);
    h.digest()
}

fuzz_target!(|data: &[u8]| {
    let mut img = data.to_vec();
    if img.len() >= 128 {
        img[..8].copy_from_slice(MAGIC);
        img[8..12].copy_from_slice(&VERSION.to_le_bytes());
        img[12..16].copy_from_slice(&128u32.to_le_bytes());
        let len = img.len() as u64;
        img[24..32].copy_from_slice(&len.to_le_bytes());
        let sum = checksum(&img);
        img[16..24].copy_from_slice(&sum.to_le_bytes());
    }
    let Ok(snap) = Snapshot::from_image(img) else { return };
    let set = snap.set();
    let values: Vec<u64> = set.iter().take(1 << 20).collect();
    for probe in data.chunks_exact(8).take(64) {
        let x = u64::from_le_bytes(probe.try_into().unwrap());
        let _ = set.contains(x);
        let _ = snap.categorized(x);
    }
    let _ = snap.category_names();
    let contents = snap.contents();
    let _ = (snap.bytes(), snap.categorized_len(), snap.count);
    if !values.windows(2).all(|w| w[0] < w[1]) {
        return;
    }
    for &v in values.iter().take(4096) {
        assert!(set.contains(v), "listed value {v} not found by contains");
    }
    for (n, m) in snap.categorized_iter().take(4096) {
        assert_eq!(snap.categorized(n), Some(m));
    }
    let again = Snapshot::from_image(image(&contents, UNIX_EPOCH)).expect("re-encoded snapshot accepted");
    assert_eq!(again.contents(), contents, "re-encoding changed the contents");
});
