//! sipp wrappers: a background UAS and a UAC run to completion, each in its own temp dir on
//! free ports, with `-timeout`/`-timeout_error` so that no test can hang on a lost message.
use super::ports::{self, Expected, free_media_port, free_port};
use sipguard::config::server::Transport;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tempfile::TempDir;

/// Global timeout of a UAC run when the test gives no `-timeout` of its own.
const DEFAULT_TIMEOUT_S: u32 = 60;
/// Injection row used when a test gives no `-inf`: account; caller E.164; callee E.164.
pub const DEFAULT_CALL: &str = "acct0001;+12125550100;+13125550199";

pub fn sipp_available() -> bool {
    Command::new("sipp").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// True when sipp can be used. Without sipp a test prints a skip message and returns early,
/// unless SIPGUARD_REQUIRE_SIPP=1 (CI), where a missing sipp fails the test.
pub fn require_sipp() -> bool {
    if sipp_available() {
        return true;
    }
    if std::env::var("SIPGUARD_REQUIRE_SIPP").is_ok_and(|v| v == "1") {
        panic!("sipp not found but SIPGUARD_REQUIRE_SIPP=1 (apt-get install sip-tester)");
    }
    eprintln!("skipped: sipp not found (apt-get install sip-tester)");
    false
}

/// tests/sipp/NAME, or NAME itself if it is a path to an existing file.
pub fn scenario(name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_file() {
        return p.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp").join(name)
}

fn temp_dir(prefix: &str) -> TempDir {
    match tempfile::Builder::new().prefix(prefix).tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temp dir: {e}"),
    }
}

fn is_tcp(args: &[&str]) -> bool {
    args.windows(2).any(|w| w[0] == "-t" && w[1].starts_with('t'))
}

/// A sipp UAS running in the background on 127.0.0.1:port; killed on drop.
pub struct Sipp {
    child: Child,
    dir: TempDir,
    addr: SocketAddr,
}

/// What a UAC run reports. `responses` counts the responses the scenario received where it
/// expected them, by status code, from `-trace_counts`; `unexpected` counts messages that
/// arrived where the scenario did not expect them (each fails its call).
#[derive(Debug, Default, Clone)]
pub struct SippStats {
    pub successful: u64,
    pub failed: u64,
    pub exit_code: Option<i32>,
    pub responses: BTreeMap<u16, u64>,
    pub unexpected: u64,
    pub retransmissions: u64,
    /// The `-trace_err` log: every unexpected message in full.
    pub errors: String,
    pub stderr: String,
}

impl SippStats {
    /// Received responses with this status code.
    pub fn responses_with(&self, code: u16) -> u64 {
        self.responses.get(&code).copied().unwrap_or(0)
    }
}

impl Sipp {
    /// A UDP UAS from tests/sipp/`scenario` on 127.0.0.1:`port`.
    pub fn uas(scenario: &str, port: u16) -> Sipp {
        Self::uas_with(scenario, port, &[])
    }

    /// A UAS with extra sipp arguments, e.g. `["-t", "t1"]` for TCP. Returns once its socket is open.
    pub fn uas_with(scenario_name: &str, port: u16, args: &[&str]) -> Sipp {
        let dir = temp_dir("sipp-uas.");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = match Command::new("sipp")
            .arg("-sf")
            .arg(scenario(scenario_name))
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-mp", &free_media_port().to_string()])
            .args(["-nostdin", "-trace_err"])
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file(dir.path(), "stderr.log")))
            .process_group(0)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("spawn sipp: {e}"),
        };
        let transport = if is_tcp(args) { Transport::Tcp } else { Transport::Udp };
        if let Err(e) = ports::wait_ready(&mut child, &[Expected { transport, addr }], super::READY_TIMEOUT) {
            super::kill_group(&mut child);
            let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            panic!("sipp UAS {scenario_name} on {addr}: {e}\n{stderr}");
        }
        Sipp { child, dir, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The UAS's `-trace_err` log (unexpected messages) so far.
    pub fn errors(&self) -> String {
        read_glob(self.dir.path(), "_errors.log")
    }

    /// Run a UAC from tests/sipp/`scenario` against `target` until it is done, with the
    /// harness's own arguments (`-i 127.0.0.1`, free `-p`/`-mp`, `-nostdin`, `-timeout`
    /// (60 s unless `args` has one), `-timeout_error`, traces) followed by `args`, e.g.
    /// `["-m", "1000", "-r", "300", "-key", "uas", "127.0.0.1:5080", "-t", "t1"]`.
    /// Without `-inf` every call uses [`DEFAULT_CALL`]; without `-key uas` the Request-URI
    /// host is `target` itself.
    pub fn uac(scenario_name: &str, target: SocketAddr, args: &[&str]) -> SippStats {
        let dir = temp_dir("sipp-uac.");
        let mut cmd = Command::new("sipp");
        cmd.arg(target.to_string())
            .arg("-sf")
            .arg(scenario(scenario_name))
            .args(["-i", "127.0.0.1", "-p", &free_port().to_string(), "-mp", &free_media_port().to_string()])
            .args(["-nostdin", "-timeout_error", "-trace_err", "-trace_counts"])
            .args(["-trace_stat", "-stf", "stat.csv", "-fd", "3600"]);
        if !args.contains(&"-timeout") {
            cmd.args(["-timeout", &DEFAULT_TIMEOUT_S.to_string()]);
        }
        if !args.contains(&"-inf") {
            let inf = dir.path().join("calls.csv");
            write(&inf, &format!("SEQUENTIAL\n{DEFAULT_CALL}\n"));
            cmd.arg("-inf").arg(inf);
        }
        if !args.windows(2).any(|w| w == ["-key", "uas"]) {
            cmd.args(["-key", "uas", &target.to_string()]);
        }
        let out = match cmd.args(args).current_dir(dir.path()).stdin(Stdio::null()).output() {
            Ok(o) => o,
            Err(e) => panic!("run sipp: {e}"),
        };
        let mut stats = SippStats {
            exit_code: out.status.code(),
            errors: read_glob(dir.path(), "_errors.log"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            ..SippStats::default()
        };
        if let Some((head, last)) = last_row(&dir.path().join("stat.csv")) {
            stats.successful = field(&head, &last, "SuccessfulCall(C)");
            stats.failed = field(&head, &last, "FailedCall(C)");
        }
        if let Some((head, last)) = last_row(&find_glob(dir.path(), "_counts.csv")) {
            count_messages(&head, &last, &mut stats);
        }
        stats
    }

    /// [`Sipp::uac`] with an injection file of `rows` (`account;caller;callee`), used in order.
    pub fn uac_with_calls(scenario_name: &str, target: SocketAddr, rows: &[&str], args: &[&str]) -> SippStats {
        let dir = temp_dir("sipp-inf.");
        let inf = dir.path().join("calls.csv");
        write(&inf, &format!("SEQUENTIAL\n{}\n", rows.join("\n")));
        let inf = inf.display().to_string();
        let mut all = vec!["-inf", inf.as_str()];
        all.extend_from_slice(args);
        Self::uac(scenario_name, target, &all)
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        super::kill_group(&mut self.child);
        if std::thread::panicking() {
            eprintln!("--- sipp UAS {} errors ---\n{}", self.addr, self.errors());
        }
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    match std::fs::File::create(dir.join(name)) {
        Ok(f) => f,
        Err(e) => panic!("create {name}: {e}"),
    }
}

fn write(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        panic!("write {}: {e}", path.display());
    }
}

/// The one file in `dir` whose name ends with `suffix` (sipp names traces after scenario and pid).
fn find_glob(dir: &Path, suffix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_str().is_some_and(|s| s.ends_with(suffix)))
        .unwrap_or_default()
}

fn read_glob(dir: &Path, suffix: &str) -> String {
    std::fs::read_to_string(find_glob(dir, suffix)).unwrap_or_default()
}

/// Header and last row of a sipp `;`-separated CSV.
fn last_row(path: &Path) -> Option<(Vec<String>, Vec<String>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let split = |l: &str| l.split(';').map(|s| s.trim().to_owned()).collect::<Vec<_>>();
    let head = split(lines.next()?);
    let last = split(lines.next_back()?);
    Some((head, last))
}

fn field(head: &[String], row: &[String], name: &str) -> u64 {
    head.iter().position(|h| h == name).and_then(|i| row.get(i)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `-trace_counts` columns are `<index>_<message>_<what>`: for a received response the
/// message is its code, `what` is Recv (expected there) or Unexp.
pub fn count_messages(head: &[String], row: &[String], stats: &mut SippStats) {
    for (name, value) in head.iter().zip(row) {
        let Ok(n) = value.parse::<u64>() else {
            continue;
        };
        let mut parts = name.splitn(3, '_');
        let (Some(_index), Some(msg), Some(what)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        match what {
            "Recv" if n > 0 => {
                if let Ok(code) = msg.parse::<u16>() {
                    *stats.responses.entry(code).or_default() += n;
                }
            }
            "Unexp" => stats.unexpected += n,
            "Retrans" => stats.retransmissions += n,
            _ => {}
        }
    }
}
