//! The binary snapshot of one list: a versioned, checksummed file that is mmap'd and used in
//! place, so start-up costs one checksum pass instead of parsing text.
//!
//! Layout (all integers little-endian, sections 8-byte aligned):
//! ```text
//! 0   magic "SGDNCSNP"         8    count (plain numbers)        u64 @40
//! 8   format version  u32      48   chunk size                  u64
//! 12  header length   u32      56   chunks                      u64
//! 16  xxh3-64 checksum u64     64   data words                  u64
//! 24  file length     u64      72   categorised entries         u64
//! 32  built (unix s)  u64      80   category names bytes        u64
//! 128 heads[chunks](first, meta) data[words] (number, mask)[entries] names ('\n'-joined)
//! ```
//! The checksum covers the whole file with its own field zeroed. Files are written aside
//! and renamed into place, never rewritten in place: the mapping of a file that is later
//! replaced keeps reading the old inode.
use super::efset::{self, CHUNK, Directory, SetView, word};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const MAGIC: &[u8; 8] = b"SGDNCSNP";
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 128;
const CHECKSUM_AT: usize = 16;

/// What a list holds, ready to encode: sorted distinct numbers that block every account,
/// and sorted (number, category bit mask) entries that block only those categories.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Contents {
    pub plain: Vec<u64>,
    pub categorized: Vec<(u64, u64)>,
    pub categories: Vec<String>,
}

/// Encode contents as a snapshot image stamped with `built`.
pub fn image(c: &Contents, built: SystemTime) -> Vec<u8> {
    let e = efset::encode(&c.plain);
    let names = c.categories.join("\n");
    let mut h = [0u64; HEADER_LEN / 8];
    let built_s = built.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let fields = [
        built_s,
        c.plain.len() as u64,
        CHUNK as u64,
        (e.heads.len() / 2) as u64,
        e.data.len() as u64,
        c.categorized.len() as u64,
        names.len() as u64,
    ];
    h[4..4 + fields.len()].copy_from_slice(&fields);
    let mut out = efset::to_bytes(&h);
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    for part in [&e.heads, &e.data] {
        out.extend(efset::to_bytes(part));
    }
    out.extend(c.categorized.iter().flat_map(|&(n, m)| n.to_le_bytes().into_iter().chain(m.to_le_bytes())));
    out.extend(names.as_bytes());
    let len = out.len() as u64;
    out[24..32].copy_from_slice(&len.to_le_bytes());
    let sum = checksum(&out);
    out[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&sum.to_le_bytes());
    out
}

fn checksum(file: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(file.get(..CHECKSUM_AT).unwrap_or(file));
    h.update(&[0; 8]);
    h.update(file.get(CHECKSUM_AT + 8..).unwrap_or(&[]));
    h.digest()
}

/// Write an image to `path` atomically: a temporary file beside it, fsync, rename.
pub fn write_file(path: &Path, image: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(image)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether a file starts with the snapshot magic (else it is read as a text list).
pub fn is_snapshot(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 8];
    let mut f = std::fs::File::open(path)?;
    let mut got = 0;
    while got < magic.len() {
        match f.read(&mut magic[got..])? {
            0 => break,
            k => got += k,
        }
    }
    Ok(got == magic.len() && &magic == MAGIC)
}

/// Copy a mapping into anonymous memory, advised for transparent huge pages (best effort:
/// a lookup touches a few random cache lines of a set of hundreds of MB, so fewer TLB misses
/// can only help, though the gain measured here was within noise). The copy is verified and
/// used, so later changes to the file cannot reach a running list. ~0.1 s per 200 MB.
fn huge_page_copy(src: &[u8]) -> std::io::Result<memmap2::Mmap> {
    let mut anon = memmap2::MmapMut::map_anon(src.len().max(1))?;
    let _ = anon.advise(memmap2::Advice::HugePage);
    if let Some(dst) = anon.get_mut(..src.len()) {
        dst.copy_from_slice(src);
    }
    anon.make_read_only()
}

enum Backing {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// An opened, verified snapshot.
pub struct Snapshot {
    backing: Backing,
    sections: [std::ops::Range<usize>; 4],
    dir: Directory,
    pub count: u64,
    pub built: SystemTime,
    pub version: u32,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("count", &self.count).field("bytes", &self.bytes()).finish()
    }
}

impl Snapshot {
    /// Map and verify a snapshot file. The error says what is wrong with it.
    pub fn open(path: &Path) -> Result<Snapshot, String> {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        // SAFETY: the mapping is read-only and lives only while it is copied; sipguard never
        // writes snapshot files in place (they are renamed into place). A file truncated by
        // someone else during those ~0.1 s is outside what any mmap reader can defend against.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(|e| e.to_string())?;
        // Verify the copy, so what is checked is exactly what is used.
        let copy = huge_page_copy(&map).map_err(|e| e.to_string())?;
        drop(map);
        Self::verify(Backing::Mapped(copy))
    }

    /// Verify an in-memory image (text lists are compiled to one).
    pub fn from_image(image: Vec<u8>) -> Result<Snapshot, String> {
        Self::verify(Backing::Owned(image))
    }

    fn verify(backing: Backing) -> Result<Snapshot, String> {
        let b: &[u8] = match &backing {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        };
        if b.len() < 16 || b.get(..8) != Some(&MAGIC[..]) {
            return Err("not a sipguard DNC snapshot (bad magic)".into());
        }
        let version = word(b, 1) as u32;
        if version != VERSION {
            return Err(format!("snapshot format version {version}, this sipguard reads version {VERSION}"));
        }
        if b.len() < HEADER_LEN || word(b, 1) >> 32 != HEADER_LEN as u64 {
            return Err("truncated header".into());
        }
        let declared = word(b, 3);
        if declared != b.len() as u64 {
            return Err(format!("truncated or extended: {} bytes, header says {declared}", b.len()));
        }
        if checksum(b) != word(b, 2) {
            return Err("checksum mismatch (corrupt file)".into());
        }
        let [built, count, chunk, chunks, words, entries, names] = [4, 5, 6, 7, 8, 9, 10].map(|i| word(b, i));
        if chunk != CHUNK as u64 {
            return Err(format!("chunk size {chunk} unsupported (expected {CHUNK})"));
        }
        let sizes = [chunks.checked_mul(16), words.checked_mul(8), entries.checked_mul(16), Some(names)];
        let mut at = HEADER_LEN;
        let mut sections: [std::ops::Range<usize>; 4] = Default::default();
        for (s, size) in sections.iter_mut().zip(sizes) {
            let end = size.and_then(|z| usize::try_from(z).ok()).and_then(|z| at.checked_add(z));
            let end = end.filter(|&e| e <= b.len()).ok_or("section sizes exceed the file")?;
            *s = at..end;
            at = end;
        }
        if at != b.len() {
            return Err("section sizes do not add up to the file length".into());
        }
        // A corrupt or hostile file may say any time: out of range is an error, not a panic.
        let built = UNIX_EPOCH.checked_add(Duration::from_secs(built)).ok_or("build time out of range")?;
        let mut snap = Snapshot { backing, sections, dir: Directory::default(), count, built, version };
        snap.set().validate()?;
        snap.dir = Directory::build(snap.section(0));
        let cats = snap.section(2);
        let mut prev = None;
        for i in 0..entries as usize {
            let n = word(cats, 2 * i);
            if prev.is_some_and(|p| p >= n) || word(cats, 2 * i + 1) == 0 {
                return Err("categorised entries out of order".into());
            }
            prev = Some(n);
        }
        if std::str::from_utf8(snap.section(3)).is_err() {
            return Err("category names are not UTF-8".into());
        }
        Ok(snap)
    }

    fn section(&self, i: usize) -> &[u8] {
        let b: &[u8] = match &self.backing {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        };
        self.sections.get(i).and_then(|r| b.get(r.clone())).unwrap_or(&[])
    }

    /// Size of the whole image (what it keeps resident).
    pub fn bytes(&self) -> u64 {
        match &self.backing {
            Backing::Mapped(m) => m.len() as u64,
            Backing::Owned(v) => v.len() as u64,
        }
    }

    pub fn set(&self) -> SetView<'_> {
        SetView { heads: self.section(0), data: self.section(1), count: self.count, dir: &self.dir }
    }

    /// Category mask of a categorised entry.
    pub fn categorized(&self, n: u64) -> Option<u64> {
        let cats = self.section(2);
        let (mut lo, mut hi) = (0usize, cats.len() / 16);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match word(cats, 2 * mid).cmp(&n) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(word(cats, 2 * mid + 1)),
            }
        }
        None
    }

    pub fn categorized_len(&self) -> usize {
        self.section(2).len() / 16
    }

    pub fn categorized_iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let cats = self.section(2);
        (0..cats.len() / 16).map(move |i| (word(cats, 2 * i), word(cats, 2 * i + 1)))
    }

    pub fn category_names(&self) -> Vec<String> {
        let names = std::str::from_utf8(self.section(3)).unwrap_or("");
        if names.is_empty() { Vec::new() } else { names.split('\n').map(str::to_string).collect() }
    }

    /// Decode everything back (for `dnc build` from snapshots, and tests).
    pub fn contents(&self) -> Contents {
        Contents {
            plain: self.set().iter().collect(),
            categorized: self.categorized_iter().collect(),
            categories: self.category_names(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::dnc::testutil::tempdir;

    fn sample() -> Contents {
        Contents {
            plain: (0..3000u64).map(|i| 12_000_000_000 + i * 13).collect(),
            categorized: vec![(12_125_550_100, 0b01), (12_125_550_101, 0b11)],
            categories: vec!["finance".into(), "realestate".into()],
        }
    }

    fn built() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_790_000_000)
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempdir();
        let path = dir.join("list.snap");
        write_file(&path, &image(&sample(), built())).unwrap();
        assert!(is_snapshot(&path).unwrap());
        let s = Snapshot::open(&path).unwrap();
        assert_eq!(s.contents(), sample());
        assert_eq!((s.count, s.built, s.version), (3000, built(), VERSION));
        assert!(s.set().contains(12_000_000_013) && !s.set().contains(12_000_000_014));
        assert_eq!(s.categorized(12_125_550_101), Some(0b11));
        assert_eq!(s.categorized(12_125_550_102), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn corrupt_truncated_and_wrong_version_are_refused() {
        let good = image(&sample(), built());
        let refuse = |img: Vec<u8>| Snapshot::from_image(img).unwrap_err();
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        assert!(refuse(flipped).contains("checksum"));
        assert!(refuse(good[..good.len() - 1].to_vec()).contains("truncated"));
        assert!(refuse(good[..100].to_vec()).contains("truncated"));
        let mut v2 = good.clone();
        v2[8] = 2;
        assert!(refuse(v2).contains("version 2"));
        assert!(refuse(b"+12125550100\n".to_vec()).contains("magic"));
        assert!(Snapshot::from_image(good).is_ok());
    }

    #[test]
    fn a_consistent_checksum_does_not_hide_a_bad_layout() {
        let mut img = image(&sample(), built());
        img[40] += 1; // count no longer matches the chunks
        let sum = checksum(&img);
        img[16..24].copy_from_slice(&sum.to_le_bytes());
        assert!(Snapshot::from_image(img).is_err());
    }
}
