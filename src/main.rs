//! The `sipguard` command line.
use anyhow::Context;
use clap::{Parser, Subcommand};
use sipguard::config::{Config, ops::LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

/// sipguard: a stateless SIP proxy that screens outbound marketing calls (accounts, quotas,
/// caller-ID ownership, do-not-call lists, calling hours) before they reach the carrier.
#[derive(Parser)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Run the proxy in the foreground with this configuration file.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file: exit 0 when valid, else print FILE:LINE: problem
    /// for every problem and exit 2.
    CheckConfig {
        /// The configuration file to check.
        file: PathBuf,
    },
    /// Do-not-call lists: build snapshots, check a number, show a snapshot, block or
    /// unblock single numbers in a running proxy.
    Dnc {
        #[command(subcommand)]
        cmd: sipguard::dnc_cli::DncCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        // `dnc check` exits 1 for a blocked number, so errors use 2.
        Some(Command::Dnc { cmd }) => match sipguard::dnc_cli::run(cmd) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(2)),
            Err(e) => {
                eprintln!("sipguard dnc: {e}");
                ExitCode::from(2)
            }
        },
        None => match cli.config {
            Some(file) => match run(&file) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sipguard: {e:#}");
                    ExitCode::FAILURE
                }
            },
            None => {
                eprintln!("sipguard: give --config FILE to run, or a subcommand (see --help)");
                ExitCode::from(2)
            }
        },
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sipguard")
        .build()
        .context("starting the runtime")?;
    rt.block_on(sipguard::server::run(cfg))?;
    Ok(())
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
