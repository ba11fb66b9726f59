//! `sipguard dnc ...`: operator commands for do-not-call lists.
//!
//! `add`/`remove` append to the operator journal in the list's `deltas` directory
//! (`sipguard-operator.delta`); a running proxy's watcher reloads within about a second,
//! and the journal persists across restarts until the operator folds it into a new snapshot.
use crate::config::Config;
use crate::config::dnc::DncConfig;
use crate::screen::dnc::list::{Entry, List};
use crate::screen::dnc::parse::{Builder, Categories};
use crate::screen::dnc::query::{self, AsAccount};
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
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// ISO country for national numbers in the inputs (FTC lines are always US).
        #[arg(long, value_name = "CC")]
        country: Option<String>,
        /// Fail on the first bad line instead of skipping it (each skipped line is printed as FILE:LINE).
        #[arg(long)]
        strict: bool,
        /// Fold this deltas directory (change files and operator journal) into the output.
        #[arg(long, value_name = "DIR")]
        deltas: Option<PathBuf>,
        /// Text lists (one number a line, or FTC `area,number`) and snapshots to merge.
        #[arg(required = true, value_name = "INPUT")]
        inputs: Vec<PathBuf>,
    },
    /// Say whether and why a number is blocked (exit 1 when it is, 0 when not, 2 on error).
    /// With --account the verdict is the one the proxy gives a call from that account (its
    /// lists, its configured category and consent).
    Check {
        /// The callee: +E.164, or national digits under the configured default country.
        number: String,
        /// The configuration whose lists and accounts to load (ignored with --admin).
        #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Screen as a call from this configured account; an unknown account is an error.
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Ask the running proxy instead (`[admin] listen`, e.g. localhost:9060): the lists
        /// and accounts it has loaded now.
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
        /// The admin token (`[admin] token`), with --admin.
        #[arg(long, value_name = "TOKEN", requires = "admin")]
        token: Option<String>,
    },
    /// Print a snapshot's count, size and build time.
    Stats {
        /// The snapshot file.
        snapshot: PathBuf,
    },
    /// Block a number now: recorded in the list's deltas directory.
    Add {
        /// The number to block: +E.164, or national digits under the configured default country.
        number: String,
        /// The configuration that names the list.
        #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// The `[[dnc.list]]` name (it needs a `deltas` directory).
        #[arg(long, value_name = "NAME")]
        list: String,
        /// Block only these account categories (`finance;realestate`).
        #[arg(long, value_name = "CATS")]
        categories: Option<String>,
    },
    /// Unblock a number now: recorded in the list's deltas directory (a number the list
    /// does not block is left alone, with a warning).
    Remove {
        /// The number to unblock.
        number: String,
        /// The configuration that names the list.
        #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// The `[[dnc.list]]` name.
        #[arg(long, value_name = "NAME")]
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
        DncCommand::Check { number, account, admin: Some(admin), token, .. } => {
            check_live(&number, &admin, account.as_deref(), token.as_deref(), out)
        }
        DncCommand::Check { number, config, account, admin: None, .. } => {
            check(&number, &config, account.as_deref(), out)
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
    // Name what was skipped, so it can be fixed at the source.
    for s in &b.errors.first {
        writeln!(out, "skipped {}:{}: {}", s.file.display(), s.line, s.msg).map_err(stdout_err)?;
    }
    if skipped > b.errors.first.len() as u64 {
        writeln!(out, "... and {} more bad lines", skipped - b.errors.first.len() as u64).map_err(stdout_err)?;
    }
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

fn check(n: &str, config: &Path, account: Option<&str>, out: &mut dyn Write) -> Result<i32, DncError> {
    let cfg = Config::load(config).map_err(|e| DncError::Config(e.to_string()))?;
    let dc = cfg.dnc.as_ref().ok_or_else(|| DncError::Config(format!("{}: no [dnc] section", config.display())))?;
    let screening = cfg.screening.as_ref();
    let acct = match account {
        None => None,
        Some(id) => {
            let sc = screening.ok_or_else(|| {
                DncError::Config(format!("{}: no [screening] section, so no account `{id}`", config.display()))
            })?;
            let a = sc.accounts.iter().find(|a| &*a.id == id).ok_or_else(|| DncError::UnknownAccount(id.into()))?;
            Some(AsAccount { id, category: a.category.as_deref() })
        }
    };
    // The callee is read as the screening engine reads it (its default country first).
    let plan = screening.and_then(|s| s.plan.as_ref()).or(dc.plan.as_ref());
    let number = number::parse(n, plan).ok_or_else(|| DncError::BadNumber(n.to_string()))?;
    let dnc = Dnc::load(dc)?;
    let answer = query::query(&dnc, number, acct);
    out.write_all(query::render(&answer).as_bytes()).map_err(stdout_err)?;
    Ok(i32::from(answer.blocked))
}

/// `dnc check --admin`: the running proxy's answer (`GET /dnc/<number>?account=ID`).
fn check_live(
    n: &str,
    admin: &str,
    account: Option<&str>,
    token: Option<&str>,
    out: &mut dyn Write,
) -> Result<i32, DncError> {
    use crate::admin_client::{encode, request};
    let mut path = format!("/dnc/{}", encode(n));
    if let Some(a) = account {
        path += &format!("?account={}", encode(a));
    }
    let r = request(admin, token, "GET", &path, None, std::time::Duration::from_secs(5))
        .map_err(|e| DncError::Config(e.to_string()))?;
    let (code, body) = (r.status, r.body);
    if code != 200 {
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or_else(|| body.trim().to_string());
        return Err(DncError::Config(format!("{admin} answered {code}: {reason}")));
    }
    let answer: query::Answer = serde_json::from_str(&body)
        .map_err(|e| DncError::Config(format!("{admin}: unreadable answer ({e}): {}", body.trim())))?;
    out.write_all(query::render(&answer).as_bytes()).map_err(stdout_err)?;
    Ok(i32::from(answer.blocked))
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
    if remove {
        let loaded = List::load(l, cfg.plan.as_ref(), None)?;
        if !matches!(loaded.entry(number), Some(Entry::All | Entry::Categories(_))) {
            let e164 = number::format_e164(number);
            eprintln!("sipguard dnc: warning: list `{list}` does not block {e164}; nothing recorded");
            writeln!(out, "{e164} is not on list `{list}`: nothing changed").map_err(stdout_err)?;
            return Ok(0);
        }
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
        let own = dir.join("own.txt").display().to_string();
        assert!(text.contains(&format!("skipped {own}:2: not a phone number: `nonsense`")), "{text}");
        let (_, text) = run_str(DncCommand::Stats { snapshot: snap.clone() });
        assert!(
            text.contains("numbers:       3 (1 with categories)") && text.contains("categories:    finance"),
            "{text}"
        );

        let config = dir.join("sipguard.toml");
        std::fs::write(
            &config,
            "[screening]\ndefault_country = \"US\"\n\
             [[account]]\nid = \"acme\"\nsources = [\"10.0.0.0/24\"]\ncategory = \"finance\"\n\
             [[account]]\nid = \"tours\"\nsources = [\"10.0.1.0/24\"]\ncategory = \"travel\"\n\
             [dnc]\ndefault_country = \"US\"\n[[dnc.list]]\nname = \"national\"\npath = \"list.snap\"\ndeltas = \"deltas\"\n",
        )
        .unwrap();
        let check = |number: &str, account: Option<&str>| {
            run_str(DncCommand::Check {
                number: number.into(),
                config: config.clone(),
                account: account.map(String::from),
                admin: None,
                token: None,
            })
        };
        let (code, text) = check("+12125550100", None);
        assert_eq!(code, 1);
        assert!(text.contains("list `national` blocks every account"), "{text}");
        // The account's configured category decides, as in the proxy.
        let (code, text) = check("2125550102", Some("acme"));
        assert_eq!(code, 1);
        assert!(text.contains("BLOCKED for account `acme` by list `national`, category `finance`"), "{text}");
        let (code, text) = check("2125550102", Some("tours"));
        assert_eq!(code, 0);
        assert!(text.contains("not blocked for account `tours` (category `travel`)"), "{text}");
        let unknown = DncCommand::Check {
            number: "2125550102".into(),
            config: config.clone(),
            account: Some("nosuch".into()),
            admin: None,
            token: None,
        };
        let err = run_to(unknown, &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "no [[account]] `nosuch` in the configuration");

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
        assert_eq!(check("+12125550199", Some("acme")).0, 1);
        let (code, text) = check("+12125550100", Some("acme"));
        assert_eq!(code, 0);
        assert!(text.contains("removed by a delta"), "{text}");
        // Removing a number the list does not block records nothing.
        let journal = dir.join("deltas").join(delta::JOURNAL);
        let before = std::fs::read_to_string(&journal).unwrap();
        let (code, text) = rec(true, "+12125550177");
        assert_eq!(code, 0);
        assert!(text.contains("+12125550177 is not on list `national`: nothing changed"), "{text}");
        assert_eq!(rec(true, "+12125550100").0, 0, "already removed: nothing to do");
        assert_eq!(std::fs::read_to_string(&journal).unwrap(), before);
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
