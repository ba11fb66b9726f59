//! `sipguard dnc ...`: operator commands for do-not-call lists.
//!
//! `add`/`remove` append to the operator journal in the list's `deltas` directory
//! (`sipguard-operator.delta`); a running proxy's watcher reloads within about a second,
//! and the journal persists across restarts until the operator folds it into a new snapshot.
use crate::config::Config;
use crate::config::dnc::DncConfig;
use crate::screen::dnc::list::Entry;
use crate::screen::dnc::parse::{Builder, Categories};
use crate::screen::dnc::snapshot::{self, Snapshot};
use crate::screen::dnc::{Dnc, DncError, delta};
use crate::screen::number::{self, NumberPlan};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

#[derive(Debug, clap::Subcommand)]
pub enum DncCommand {
    /// Compile text lists (and snapshots) into one versioned, checksummed snapshot.
    Build {
        /// Snapshot to write (replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// ISO country for national numbers in the inputs (FTC lines are always US).
        #[arg(long)]
        country: Option<String>,
        /// Fail on the first bad line instead of skipping and counting it.
        #[arg(long)]
        strict: bool,
        /// Fold this deltas directory (change files and operator journal) into the output.
        #[arg(long)]
        deltas: Option<PathBuf>,
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Say whether and why a number is blocked (exit 1 when it is).
    Check {
        number: String,
        #[arg(long)]
        config: PathBuf,
        /// Screen as a call from this account (its lists, category and consent).
        #[arg(long)]
        account: Option<String>,
        /// The account's category, for categorised entries.
        #[arg(long)]
        category: Option<String>,
    },
    /// Print a snapshot's count, size and build time.
    Stats { snapshot: PathBuf },
    /// Block a number now: recorded in the list's deltas directory.
    Add {
        number: String,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        list: String,
        /// Block only these account categories (`finance;realestate`).
        #[arg(long)]
        categories: Option<String>,
    },
    /// Unblock a number now: recorded in the list's deltas directory.
    Remove {
        number: String,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        list: String,
    },
}

/// Run a command, printing to stdout; returns the process exit code.
pub fn run(cmd: DncCommand) -> Result<i32, DncError> {
    run_to(cmd, &mut std::io::stdout().lock())
}

pub fn run_to(cmd: DncCommand, out: &mut dyn Write) -> Result<i32, DncError> {
    match cmd {
        DncCommand::Build { out: path, country, strict, deltas, inputs } => {
            build(&path, country.as_deref(), strict, deltas.as_deref(), &inputs, out)
        }
        DncCommand::Check { number, config, account, category } => {
            check(&number, &config, account.as_deref(), category.as_deref(), out)
        }
        DncCommand::Stats { snapshot } => stats(&snapshot, out),
        DncCommand::Add { number, config, list, categories } => {
            record(&number, &config, &list, false, categories.as_deref(), out)
        }
        DncCommand::Remove { number, config, list } => record(&number, &config, &list, true, None, out),
    }
}

fn stdout_err(e: std::io::Error) -> DncError {
    DncError::Io { path: PathBuf::from("stdout"), source: e }
}

fn build(
    path: &Path,
    country: Option<&str>,
    strict: bool,
    deltas: Option<&Path>,
    inputs: &[PathBuf],
    out: &mut dyn Write,
) -> Result<i32, DncError> {
    let plan = match country {
        Some(c) => Some(NumberPlan::for_country(c).ok_or_else(|| DncError::Config(format!("unknown country `{c}`")))?),
        None => None,
    };
    let start = Instant::now();
    let mut b = Builder::new(strict);
    for input in inputs {
        let io = |e| DncError::Io { path: input.clone(), source: e };
        if snapshot::is_snapshot(input).map_err(io)? {
            let snap = Snapshot::open(input).map_err(|reason| DncError::Snapshot { path: input.clone(), reason })?;
            b.add_snapshot(&snap).map_err(|e| DncError::Config(format!("{}: {e}", input.display())))?;
        } else {
            b.add_text_file(input, plan.as_ref())?;
        }
    }
    if let Some(dir) = deltas {
        b.add_deltas(dir, plan.as_ref())?;
    }
    let skipped = b.errors.count;
    let contents = b.finish();
    let image = snapshot::image(&contents, SystemTime::now());
    snapshot::write_file(path, &image).map_err(|e| DncError::Io { path: path.to_path_buf(), source: e })?;
    let n = contents.plain.len() + contents.categorized.len();
    writeln!(
        out,
        "wrote {}: {n} numbers ({} with categories), {} bytes ({:.3} bytes/number), {skipped} bad lines skipped, {:.1} s",
        path.display(),
        contents.categorized.len(),
        image.len(),
        image.len() as f64 / n.max(1) as f64,
        start.elapsed().as_secs_f64()
    )
    .map_err(stdout_err)?;
    Ok(0)
}

fn stats(path: &Path, out: &mut dyn Write) -> Result<i32, DncError> {
    let start = Instant::now();
    let snap = Snapshot::open(path).map_err(|reason| DncError::Snapshot { path: path.to_path_buf(), reason })?;
    let opened = start.elapsed();
    let n = snap.count + snap.categorized_len() as u64;
    let built = chrono::DateTime::<chrono::Utc>::from(snap.built).to_rfc3339();
    let text = format!(
        "snapshot:      {}\nformat:        version {}\nnumbers:       {n} ({} with categories)\ncategories:    {}\n\
         bytes:         {} ({:.3} bytes/number)\nbuilt:         {built}\nverified in:   {:.3} s\n",
        path.display(),
        snap.version,
        snap.categorized_len(),
        snap.category_names().join(", "),
        snap.bytes(),
        snap.bytes() as f64 / n.max(1) as f64,
        opened.as_secs_f64(),
    );
    out.write_all(text.as_bytes()).map_err(stdout_err)?;
    Ok(0)
}

fn dnc_config(config: &Path) -> Result<DncConfig, DncError> {
    let cfg = Config::load(config).map_err(|e| DncError::Config(e.to_string()))?;
    cfg.dnc.ok_or_else(|| DncError::Config(format!("{}: no [dnc] section", config.display())))
}

fn parse_number(s: &str, cfg: &DncConfig) -> Result<u64, DncError> {
    number::parse(s, cfg.plan.as_ref()).ok_or_else(|| DncError::BadNumber(s.to_string()))
}

fn check(
    n: &str,
    config: &Path,
    account: Option<&str>,
    category: Option<&str>,
    out: &mut dyn Write,
) -> Result<i32, DncError> {
    let cfg = dnc_config(config)?;
    let number = parse_number(n, &cfg)?;
    let dnc = Dnc::load(&cfg)?;
    let e164 = number::format_e164(number);
    let mut text = String::new();
    for e in dnc.entries(number) {
        let what = match &e.entry {
            Entry::All => "blocks every account".to_string(),
            Entry::Categories(c) => format!("blocks accounts of category {}", c.join(", ")),
            Entry::Removed => "removed by a delta".to_string(),
        };
        let scope =
            e.accounts.as_ref().map(|a| format!(" (list applies to accounts {})", a.join(", "))).unwrap_or_default();
        text += &format!("{e164}: list `{}` {what}{scope}, response `{}`\n", e.list, e.response);
    }
    for a in dnc.consenting_accounts(number) {
        text += &format!("{e164}: account `{a}` has consent to call it\n");
    }
    let blocked = match account {
        Some(account) => match dnc.check(number, account, category) {
            Some(hit) => {
                let cat = hit.category.map(|c| format!(", category `{c}`")).unwrap_or_default();
                text += &format!(
                    "BLOCKED for account `{account}` by list `{}`{cat}, response `{}`\n",
                    hit.list, hit.response
                );
                true
            }
            None => {
                text += &format!("not blocked for account `{account}`\n");
                false
            }
        },
        None => {
            let any = dnc.entries(number).iter().any(|e| e.entry != Entry::Removed);
            text += if any { "BLOCKED (for the accounts above)\n" } else { "not on any list\n" };
            any
        }
    };
    out.write_all(text.as_bytes()).map_err(stdout_err)?;
    Ok(i32::from(blocked))
}

fn record(
    n: &str,
    config: &Path,
    list: &str,
    remove: bool,
    cats: Option<&str>,
    out: &mut dyn Write,
) -> Result<i32, DncError> {
    let cfg = dnc_config(config)?;
    let number = parse_number(n, &cfg)?;
    let l = cfg.lists.iter().find(|l| &*l.name == list).ok_or_else(|| DncError::UnknownList(list.to_string()))?;
    let dir = l.deltas.as_ref().ok_or_else(|| DncError::NoDeltas(list.to_string()))?;
    if let Some(c) = cats {
        Categories::default().mask(c).map_err(DncError::Config)?;
    }
    let file = delta::append_journal(dir, remove, number, cats)?;
    let verb = if remove { "removal of" } else { "addition of" };
    writeln!(
        out,
        "recorded {verb} {} in list `{list}` ({}); a running sipguard applies it within a second",
        number::format_e164(number),
        file.display()
    )
    .map_err(stdout_err)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::dnc::testutil::tempdir;

    fn run_str(cmd: DncCommand) -> (i32, String) {
        let mut out = Vec::new();
        let code = run_to(cmd, &mut out).unwrap();
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn build_stats_add_remove_and_check() {
        let dir = tempdir();
        std::fs::write(dir.join("ftc.txt"), "212,5550100\n212,5550101\n").unwrap();
        std::fs::write(dir.join("own.txt"), "2125550102,finance\nnonsense\n").unwrap();
        std::fs::create_dir(dir.join("deltas")).unwrap();
        let snap = dir.join("list.snap");
        let inputs = vec![dir.join("ftc.txt"), dir.join("own.txt")];
        let build =
            DncCommand::Build { out: snap.clone(), country: Some("US".into()), strict: false, deltas: None, inputs };
        let (code, text) = run_str(build);
        assert_eq!(code, 0);
        assert!(text.contains("3 numbers (1 with categories)") && text.contains("1 bad lines skipped"), "{text}");
        let (_, text) = run_str(DncCommand::Stats { snapshot: snap.clone() });
        assert!(
            text.contains("numbers:       3 (1 with categories)") && text.contains("categories:    finance"),
            "{text}"
        );

        let config = dir.join("sipguard.toml");
        std::fs::write(
            &config,
            "[dnc]\ndefault_country = \"US\"\n[[dnc.list]]\nname = \"national\"\npath = \"list.snap\"\ndeltas = \"deltas\"\n",
        )
        .unwrap();
        let check = |number: &str, account: Option<&str>, category: Option<&str>| {
            run_str(DncCommand::Check {
                number: number.into(),
                config: config.clone(),
                account: account.map(String::from),
                category: category.map(String::from),
            })
        };
        let (code, text) = check("+12125550100", None, None);
        assert_eq!(code, 1);
        assert!(text.contains("list `national` blocks every account"), "{text}");
        let (code, text) = check("2125550102", Some("acme"), Some("finance"));
        assert_eq!(code, 1);
        assert!(text.contains("BLOCKED for account `acme` by list `national`, category `finance`"), "{text}");
        assert_eq!(check("2125550102", Some("acme"), Some("travel")).0, 0);

        let rec = |remove: bool, n: &str| {
            let (config, list, number) = (config.clone(), "national".to_string(), n.to_string());
            if remove {
                run_str(DncCommand::Remove { number, config, list })
            } else {
                run_str(DncCommand::Add { number, config, list, categories: None })
            }
        };
        assert_eq!(rec(false, "2125550199").0, 0);
        assert_eq!(rec(true, "+12125550100").0, 0);
        assert_eq!(check("+12125550199", Some("acme"), None).0, 1);
        let (code, text) = check("+12125550100", Some("acme"), None);
        assert_eq!(code, 0);
        assert!(text.contains("removed by a delta"), "{text}");
        let err = run_to(
            DncCommand::Add {
                number: "+12125550100".into(),
                config: config.clone(),
                list: "nope".into(),
                categories: None,
            },
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "no [[dnc.list]] named `nope`");
        // Folding the journal into a new snapshot keeps what it said.
        let compact = DncCommand::Build {
            out: dir.join("compact.snap"),
            country: None,
            strict: true,
            deltas: Some(dir.join("deltas")),
            inputs: vec![snap.clone()],
        };
        assert_eq!(run_str(compact).0, 0);
        let contents = Snapshot::open(&dir.join("compact.snap")).unwrap().contents();
        assert_eq!(contents.plain, vec![12125550101, 12125550199]);
        assert_eq!((contents.categorized, contents.categories), (vec![(12125550102, 1)], vec!["finance".to_string()]));
        let _ = std::fs::remove_dir_all(dir);
    }
}
