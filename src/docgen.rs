//! Man pages and shell completions from the clap definitions of the command line, for the
//! package (`sipguard generate man|completions DIR`, a hidden subcommand): what they say is
//! what `--help` says.
use clap::Command;
use clap_complete::Shell;
use std::io;
use std::path::{Path, PathBuf};

/// The shells completions are written for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Write `NAME.1` for the command and `NAME-SUB[-SUB...].1` for every visible subcommand
/// into `dir` (created if needed). Returns the files written.
pub fn man_pages(cmd: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    // Gives every subcommand its display name (`sipguard-dnc-build`) and bin name.
    cmd.build();
    let source = format!("{} {}", cmd.get_name(), cmd.get_version().unwrap_or_default());
    let mut written = Vec::new();
    write_pages(&cmd, &source, dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: &Command, source: &str, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    let page = clap_mangen::Man::new(cmd.clone()).source(source).manual("sipguard");
    written.push(page.generate_to(dir)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, source, dir, written)?;
    }
    Ok(())
}

/// Write the completion scripts of [`SHELLS`] into `dir` (created if needed): `NAME.bash`,
/// `_NAME` (zsh), `NAME.fish`. Returns the files written.
pub fn completions(cmd: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd;
    cmd.build();
    // clap_complete offers hidden subcommands too: complete what is visible only.
    let mut cmd = visible(&cmd);
    let name = cmd.get_name().to_string();
    SHELLS.iter().map(|shell| clap_complete::generate_to(*shell, &mut cmd, name.clone(), dir)).collect()
}

/// A copy of a built `cmd` without its hidden subcommands (at any depth). Its arguments,
/// the generated --help and --version included, are copied as they are.
fn visible(cmd: &Command) -> Command {
    let mut copy = Command::new(cmd.get_name().to_string())
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true)
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).map(visible));
    if let Some(about) = cmd.get_about() {
        copy = copy.about(about.clone());
    }
    if let Some(v) = cmd.get_version() {
        copy = copy.version(v.to_string());
    }
    copy
}
