//! The DNC text readers: the input is written as a text list and read the way a list is
//! loaded (`Builder::add_text_file`, i.e. `for_each_line` + `parse_line` + categories), both
//! without and with a default country, and also as a deltas directory file
//! (`Builder::add_deltas`, with its `add `/`remove ` and FTC change-record forms). Checks:
//! no panic; `finish` gives sorted, distinct, disjoint contents with non-zero masks and at
//! most 64 categories; the contents survive a snapshot round trip (`image` then
//! `Snapshot::from_image`) unchanged; and every entry is found by the compact set.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sipguard::screen::dnc::parse::{Builder, parse_line};
use sipguard::screen::dnc::snapshot::{Contents, Snapshot, image};
use sipguard::screen::number::NumberPlan;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("sipguard-fuzz-dnc-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("deltas")).expect("a temp dir");
    dir
});
static US: LazyLock<NumberPlan> = LazyLock::new(|| NumberPlan::for_country("US").expect("US"));

fn check(c: &Contents) {
    assert!(c.plain.windows(2).all(|w| w[0] < w[1]), "plain numbers not sorted and distinct");
    assert!(c.categorized.windows(2).all(|w| w[0].0 < w[1].0), "categorised numbers not sorted and distinct");
    assert!(c.categorized.iter().all(|&(n, m)| m != 0 && c.plain.binary_search(&n).is_err()));
    assert!(c.categories.len() <= 64);
    let used = c.categorized.iter().fold(0u64, |a, &(_, m)| a | m);
    assert!(c.categories.len() == 64 || used >> c.categories.len() == 0, "mask bit without a name");
    let snap = Snapshot::from_image(image(c, UNIX_EPOCH + Duration::from_secs(1_790_000_000)))
        .unwrap_or_else(|e| panic!("own image rejected: {e}"));
    assert_eq!(&snap.contents(), c, "snapshot round trip changed the contents");
    let set = snap.set();
    for &n in c.plain.iter().take(2000) {
        assert!(set.contains(n), "{n} not found");
        assert!(c.plain.binary_search(&(n + 1)).is_ok() == set.contains(n + 1), "{} misreported", n + 1);
    }
    for &(n, m) in c.categorized.iter().take(2000) {
        assert_eq!(snap.categorized(n), Some(m));
        assert!(!set.contains(n));
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = &*DIR;
    let list = dir.join("list.txt");
    std::fs::write(&list, data).expect("write the list");
    let delta = dir.join("deltas").join("changes.txt");
    for plan in [None, Some(&*US)] {
        let mut b = Builder::new(false);
        if b.add_text_file(&list, plan).is_ok() {
            check(&b.finish());
        }
    }
    // The same bytes as a change list applied over themselves as a base.
    std::fs::write(&delta, data).expect("write the delta");
    let mut b = Builder::new(false);
    if b.add_text_file(&list, Some(&*US)).is_ok() && b.add_deltas(dir, Some(&*US)).is_ok() {
        check(&b.finish());
    }
    let _ = std::fs::remove_file(&delta);
    // Strict mode stops at the first bad line, never panics.
    let _ = Builder::new(true).add_text_file(&list, None);
    // parse_line straight, on each line (including ones for_each_line would not split off).
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.split(['\n', '\r']).take(4096) {
            let _ = parse_line(line, None);
            let _ = parse_line(line, Some(&*US));
        }
    }
});
