//! The `sipguard` command line.
use anyhow::Context;
use clap::{Parser, Subcommand};
use sipguard::config::{Config, ops::LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

/// sipguard: a stateless SIP proxy that screens outbound marketing calls (accounts, quotas,
/// caller-ID ownership, do-not-call lists, calling hours) before they reach the carrier.
#[derive(Parser)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_help = "Running: `sipguard` (or `sipguard -c FILE`) stays in the foreground and logs to \
stderr. SIGHUP (or POST /reload on the admin listener) re-reads the config and lists; a \
bad file is refused and the running config kept. SIGUSR1 reopens the decision log (log rotation). \
SIGTERM or SIGINT stops accepting, drains TCP \
connections for server.shutdown_grace_seconds, flushes the decision log and exits 0.\n\n\
Exit status: 0 after a clean stop, 1 when it cannot start (e.g. a port in use), 2 for an invalid \
configuration."
)]
struct Cli {
    /// Run the proxy in the foreground with this configuration file (TOML).
    #[arg(short, long, value_name = "FILE", default_value = sipguard::config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file: exit 0 when valid, else print FILE:LINE: problem
    /// for every problem and exit 2.
    CheckConfig {
        /// The configuration file to check.
        #[arg(default_value = sipguard::config::DEFAULT_PATH)]
        file: PathBuf,
    },
    /// Do-not-call lists: build snapshots, check a number, show a snapshot, block or
    /// unblock single numbers in a running proxy.
    Dnc {
        #[command(subcommand)]
        cmd: sipguard::dnc_cli::DncCommand,
    },
    /// STIR/SHAKEN: check an Identity header step by step.
    Identity {
        #[command(subcommand)]
        cmd: sipguard::identity_cli::IdentityCommand,
    },
    /// Complaints of callees: file one or a file of them with a running proxy (attributed to
    /// the account that placed the call and acted on at once), list them, trace one back.
    Complaint {
        #[command(subcommand)]
        cmd: sipguard::complaint_cli::ComplaintCommand,
    },
    /// Suspended caller IDs and accounts of a running proxy: list them, lift one early.
    Suspension {
        #[command(subcommand)]
        cmd: sipguard::suspension_cli::SuspensionCommand,
    },
    /// Live view of a running sipguard: calls/s, verdicts by rule and the accounts with the
    /// most rejects, redrawn every --interval from the admin listener's /metrics.
    Top {
        /// The admin listener (`[admin] listen` of the running proxy); names such as
        /// localhost are resolved.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9060")]
        admin: String,
        /// The admin token (`[admin] token`), if one is set.
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
        /// Seconds between scrapes; rates are computed over this interval.
        #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
        interval: f64,
        /// Accounts to list.
        #[arg(long, value_name = "N", default_value_t = 10)]
        accounts: usize,
        /// Print one view (two scrapes --interval apart) without clearing the screen, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Write the man pages or the shell completions (bash, zsh, fish) into DIR (packaging).
    #[command(hide = true)]
    Generate {
        /// `man` or `completions`.
        #[arg(value_enum)]
        what: Generated,
        /// Directory to write into (created if needed).
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Generated {
    Man,
    Completions,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Suspension { cmd }) => match sipguard::suspension_cli::run(cmd, &mut std::io::stdout()) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("sipguard suspension: {e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Complaint { cmd }) => {
            match sipguard::complaint_cli::run(cmd, &mut std::io::stdout(), &mut std::io::stderr()) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("sipguard complaint: {e}");
                    ExitCode::from(2)
                }
            }
        }
        // `dnc check` exits 1 for a blocked number, so errors use 2.
        Some(Command::Dnc { cmd }) => match sipguard::dnc_cli::run(cmd) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(2)),
            Err(e) => {
                eprintln!("sipguard dnc: {e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Identity { cmd }) => ExitCode::from(u8::try_from(sipguard::identity_cli::run(cmd)).unwrap_or(2)),
        Some(Command::Top { admin, token, interval, accounts, once }) => {
            match top(&admin, token.as_deref(), interval, accounts, once) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sipguard top: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Generate { what, dir }) => {
            use clap::CommandFactory;
            let written = match what {
                Generated::Man => sipguard::docgen::man_pages(Cli::command(), &dir),
                Generated::Completions => sipguard::docgen::completions(Cli::command(), &dir),
            };
            match written {
                Ok(files) => {
                    files.iter().for_each(|f| println!("{}", f.display()));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sipguard generate: {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
        None => match run(&cli.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sipguard: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(cfg) => {
            // The files it names, loaded as start-up loads them.
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let files = sipguard::config::files::check(&cfg, &text);
            for w in &files.warnings {
                eprintln!("{}:{}: warning: {}", w.file.display(), w.line, w.msg);
            }
            for w in cfg.warnings() {
                eprintln!("{}: warning: {w}", file.display());
            }
            if !files.errors.is_empty() {
                eprintln!("{}", sipguard::config::ConfigErrors(files.errors));
                return ExitCode::from(2);
            }
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn top(admin: &str, token: Option<&str>, interval: f64, accounts: usize, once: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::time::{Duration, Instant};
    anyhow::ensure!(interval.is_finite() && interval > 0.0, "--interval must be a positive number of seconds");
    let period = Duration::from_secs_f64(interval);
    let timeout = Duration::from_secs(5);
    let mut before = sipguard::top::scrape(admin, token, timeout)?;
    let mut at = Instant::now();
    loop {
        std::thread::sleep(period);
        let after = sipguard::top::scrape(admin, token, timeout)?;
        let now = Instant::now();
        let view = sipguard::top::render(&before, &after, (now - at).as_secs_f64(), accounts);
        let mut out = std::io::stdout().lock();
        if once {
            write!(out, "{view}")?;
            return Ok(());
        }
        // Home and clear, then the view: a plain ANSI redraw.
        write!(out, "\x1b[H\x1b[2Jsipguard top  {admin}  every {interval}s  (Ctrl-C to quit)\n\n{view}")?;
        out.flush()?;
        (before, at) = (after, now);
    }
}

fn run(file: &std::path::Path) -> anyhow::Result<()> {
    let cfg = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    init_logging(&cfg);
    // TLS to Redis (rediss://) uses the process's default provider: ring, as for x5u.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sipguard")
        .build()
        .context("starting the runtime")?;
    match rt.block_on(sipguard::server::run(cfg)) {
        // A list the configuration names that does not load is an invalid configuration.
        Err(sipguard::server::ServerError::Dnc(e)) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
        r => Ok(r?),
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;
    use clap::Parser;

    /// Every option and argument of every (sub)command says what it is for in --help.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let cmd = Cli::command();
        walk(&cmd, "sipguard", &mut missing);
        assert_eq!(missing, Vec::<String>::new());
        cmd.debug_assert();
    }

    #[test]
    fn config_has_a_short_flag_and_the_packaged_default() {
        let cli = Cli::try_parse_from(["sipguard"]).unwrap();
        assert_eq!(cli.config, std::path::Path::new("/etc/sipguard/sipguard.toml"));
        let cli = Cli::try_parse_from(["sipguard", "-c", "x.toml"]).unwrap();
        assert_eq!(cli.config, std::path::Path::new("x.toml"));
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("shutdown_grace_seconds") && !help.contains("shutdown_grace,"), "{help}");
    }
}
