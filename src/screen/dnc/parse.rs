//! Text lists: one number a line (`+E.164`, or national digits under the default country),
//! optionally `,cat1;cat2` opt-out categories; the FTC download format `area code,number`
//! (always US); `#` comments and blank lines. A bad line is reported as file:line and counted;
//! it aborts the load only in strict mode.
use super::DncError;
use super::delta::{Delta, Op};
use super::snapshot::{Contents, Snapshot};
use crate::screen::number::{self, NumberPlan};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Bad lines logged per file; the rest are only counted.
const LOGGED_ERRORS: u64 = 20;

/// One list entry as written on a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    pub number: u64,
    /// The `cat1;cat2` part, when the entry blocks only some account categories.
    pub categories: Option<&'a str>,
}

/// Parse one line; `Ok(None)` for blank and comment lines.
pub fn parse_line<'a>(line: &'a str, plan: Option<&NumberPlan>) -> Result<Option<Line<'a>>, String> {
    let line = line.split('#').next().unwrap_or("").trim();
    if line.is_empty() {
        return Ok(None);
    }
    let (num, rest) = match line.split_once(',') {
        Some((a, b)) => (a.trim(), Some(b.trim())),
        None => (line, None),
    };
    if let Some(rest) = rest {
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if digits(num, 3) && digits(rest, 7) {
            // FTC format: area code, 7-digit number; the registry is US-only.
            let value = |s: &str| s.bytes().fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
            let number = 10_000_000_000 + value(num) * 10_000_000 + value(rest);
            return Ok(Some(Line { number, categories: None }));
        }
        if rest.is_empty() {
            return Err("empty category list after `,`".into());
        }
    }
    let number = number::parse(num, plan).ok_or_else(|| {
        let national = num.bytes().all(|b| b.is_ascii_digit() || b" -.()".contains(&b));
        if plan.is_none() && national && !num.starts_with("00") {
            format!("`{num}` is a national number but [dnc] default_country is not set")
        } else {
            format!("not a phone number: `{num}`")
        }
    })?;
    Ok(Some(Line { number, categories: rest }))
}

/// Category names of one list, each a bit of a u64 mask.
#[derive(Debug, Default, Clone)]
pub struct Categories {
    pub names: Vec<String>,
}

impl Categories {
    /// Mask of a `cat1;cat2` spec, adding new names (names are case-insensitive).
    pub fn mask(&mut self, spec: &str) -> Result<u64, String> {
        let mut mask = 0u64;
        for name in spec.split(';').map(str::trim) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Err(format!("bad category name `{name}` (letters, digits, `_`, `-`)"));
            }
            let name = name.to_ascii_lowercase();
            let bit = match self.names.iter().position(|n| *n == name) {
                Some(i) => i,
                None if self.names.len() < 64 => {
                    self.names.push(name);
                    self.names.len() - 1
                }
                None => return Err("more than 64 categories in one list".into()),
            };
            mask |= 1 << bit;
        }
        Ok(mask)
    }

    /// Re-express a mask written against `other` names in these names.
    fn remap(&mut self, mask: u64, other: &[String]) -> Result<u64, String> {
        let spec: Vec<&str> =
            other.iter().enumerate().take(64).filter(|&(i, _)| mask >> i & 1 == 1).map(|(_, n)| n.as_str()).collect();
        self.mask(&spec.join(";"))
    }
}

/// A bad line that was skipped: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub file: PathBuf,
    pub line: usize,
    pub msg: String,
}

/// Counts bad lines and applies the strict policy; keeps the first ones for check-config.
#[derive(Debug, Default, Clone)]
pub struct LineErrors {
    pub count: u64,
    pub strict: bool,
    /// The first `LOGGED_ERRORS` skipped lines.
    pub first: Vec<Skipped>,
}

impl LineErrors {
    pub fn new(strict: bool) -> LineErrors {
        LineErrors { count: 0, strict, first: Vec::new() }
    }

    pub fn report(&mut self, file: &Path, line: usize, msg: String) -> Result<(), DncError> {
        if self.strict {
            return Err(DncError::Line { file: file.to_path_buf(), line, msg });
        }
        self.count += 1;
        if self.count <= LOGGED_ERRORS {
            tracing::warn!(file = %file.display(), line, "DNC list line skipped: {msg}");
            self.first.push(Skipped { file: file.to_path_buf(), line, msg });
        }
        Ok(())
    }

    /// Add another file's skipped lines (the first ones kept stay within the bound).
    pub fn absorb(&mut self, other: &LineErrors) {
        self.count += other.count;
        let room = usize::try_from(LOGGED_ERRORS).unwrap_or(usize::MAX).saturating_sub(self.first.len());
        self.first.extend(other.first.iter().take(room).cloned());
    }
}

/// Call `f(line_number, text)` for each line of a file; `f`'s errors go to `errors`.
pub fn for_each_line(
    path: &Path,
    errors: &mut LineErrors,
    mut f: impl FnMut(&str) -> Result<(), String>,
) -> Result<(), DncError> {
    let io = |e| DncError::Io { path: path.to_path_buf(), source: e };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::with_capacity(256);
    let mut lineno = 0usize;
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf).map_err(io)? == 0 {
            return Ok(());
        }
        lineno += 1;
        let result = match std::str::from_utf8(&buf) {
            Ok(text) => f(text),
            Err(_) => Err("line is not UTF-8".into()),
        };
        if let Err(msg) = result {
            // A first line without any digit is a column header (FTC files may have one).
            let header = lineno == 1 && !buf.iter().any(u8::is_ascii_digit);
            if !header {
                errors.report(path, lineno, msg)?;
            }
        }
    }
}

/// Accumulates entries from several sources into one list's contents.
#[derive(Debug, Default)]
pub struct Builder {
    plain: Vec<u64>,
    categorized: Vec<(u64, u64)>,
    /// Changes that replace whatever the inputs say about their numbers.
    delta: Delta,
    pub categories: Categories,
    pub errors: LineErrors,
}

impl Builder {
    pub fn new(strict: bool) -> Builder {
        Builder { errors: LineErrors::new(strict), ..Builder::default() }
    }

    pub fn add(&mut self, line: Line<'_>) -> Result<(), String> {
        match line.categories {
            None => self.plain.push(line.number),
            Some(spec) => {
                let mask = self.categories.mask(spec)?;
                self.categorized.push((line.number, mask));
            }
        }
        Ok(())
    }

    pub fn add_text_file(&mut self, path: &Path, plan: Option<&NumberPlan>) -> Result<(), DncError> {
        if let Ok(meta) = std::fs::metadata(path) {
            // ~13 bytes a line: reserve once instead of doubling a multi-GB vector.
            self.plain.reserve((meta.len() / 13) as usize);
        }
        let mut errors = std::mem::take(&mut self.errors);
        let result = for_each_line(path, &mut errors, |text| match parse_line(text, plan)? {
            Some(line) => self.add(line),
            None => Ok(()),
        });
        self.errors = errors;
        result
    }

    pub fn add_snapshot(&mut self, snap: &Snapshot) -> Result<(), String> {
        self.plain.extend(snap.set().iter());
        let names = snap.category_names();
        for (n, mask) in snap.categorized_iter() {
            let mask = self.categories.remap(mask, &names)?;
            self.categorized.push((n, mask));
        }
        Ok(())
    }

    /// Fold a deltas directory into the list being built (`dnc build --deltas`).
    pub fn add_deltas(&mut self, dir: &Path, plan: Option<&NumberPlan>) -> Result<(), DncError> {
        self.delta = super::delta::read_dir(dir, plan, &mut self.categories, &mut self.errors)?;
        Ok(())
    }

    /// Sorted, deduplicated contents: categories of one number are merged, and a plain entry
    /// (blocks everyone) absorbs categorised ones for the same number.
    pub fn finish(mut self) -> Contents {
        if !self.delta.is_empty() {
            self.plain.retain(|&n| self.delta.get(n).is_none());
            self.categorized.retain(|&(n, _)| self.delta.get(n).is_none());
            for (n, op) in self.delta.iter() {
                match op {
                    Op::Add(0) => self.plain.push(n),
                    Op::Add(mask) => self.categorized.push((n, mask)),
                    Op::Remove => {}
                }
            }
        }
        self.plain.sort_unstable();
        self.plain.dedup();
        self.categorized.sort_unstable();
        let mut cats: Vec<(u64, u64)> = Vec::with_capacity(self.categorized.len());
        for (n, m) in self.categorized {
            if self.plain.binary_search(&n).is_ok() {
                continue;
            }
            match cats.last_mut() {
                Some(last) if last.0 == n => last.1 |= m,
                _ => cats.push((n, m)),
            }
        }
        Contents { plain: self.plain, categorized: cats, categories: self.categories.names }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::dnc::testutil::tempdir;

    fn us() -> NumberPlan {
        NumberPlan::for_country("US").unwrap()
    }

    #[test]
    fn line_forms() {
        let p = Some(us());
        fn ok<'a>(s: &'a str, p: &Option<NumberPlan>) -> Option<Line<'a>> {
            parse_line(s, p.as_ref()).unwrap()
        }
        let ok = |s: &'static str| ok(s, &p);
        let n = |number| Some(Line { number, categories: None });
        assert_eq!(ok("+12125550100"), n(12125550100));
        assert_eq!(ok("  +12125550100  # the Smiths\r\n"), n(12125550100));
        assert_eq!(ok("2125550100"), n(12125550100));
        assert_eq!(ok("212,5550100"), n(12125550100), "FTC format");
        assert_eq!(ok("+999999999999999"), n(999_999_999_999_999), "15 digits");
        assert_eq!(ok("# only a comment"), None);
        assert_eq!(ok("   "), None);
        assert_eq!(
            ok("+12125550100,Finance;realestate"),
            Some(Line { number: 12125550100, categories: Some("Finance;realestate") })
        );
        assert!(parse_line("+1234567890123456", None).is_err(), "16 digits");
        assert!(parse_line("2125550100", None).unwrap_err().contains("default_country"));
        assert!(parse_line("212,5550100", None).is_ok(), "FTC needs no default country");
        assert!(parse_line("+1212555010x", None).is_err());
        assert!(parse_line("+12125550100,", None).is_err());
    }

    #[test]
    fn category_masks() {
        let mut c = Categories::default();
        assert_eq!(c.mask("finance;RealEstate").unwrap(), 0b11);
        assert_eq!(c.mask("realestate").unwrap(), 0b10);
        assert!(c.mask("bad name").is_err());
        for i in 0..62 {
            c.mask(&format!("c{i}")).unwrap();
        }
        assert!(c.mask("one_too_many").is_err());
    }

    #[test]
    fn bad_lines_are_counted_with_file_and_line_unless_strict() {
        let dir = tempdir();
        let f = dir.join("list.txt");
        std::fs::write(
            &f,
            "Area Code,Phone Number\n212,5550100\nnot a number\n\n+12125550101,finance\n+12125550101\n+44207946001,x\n",
        )
        .unwrap();
        let mut b = Builder::new(false);
        b.add_text_file(&f, None).unwrap();
        assert_eq!(b.errors.count, 1, "the header line is not an error");
        let c = b.finish();
        assert_eq!(c.plain, vec![12125550100, 12125550101]);
        assert_eq!(c.categorized, vec![(44207946001, 0b10)], "plain absorbs the finance entry");
        let mut strict = Builder::new(true);
        let err = strict.add_text_file(&f, None).unwrap_err().to_string();
        assert_eq!(err, format!("{}:3: not a phone number: `not a number`", f.display()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
