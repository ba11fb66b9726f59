//! Integration-test harness shared by every `tests/*.rs`: runs the built `sipguard` binary on
//! free ports with a config written to a temp dir, and waits for it by watching its sockets.
//!
//! - [`Sipguard`] the proxy process (this file), [`ports`] free-port allocation and socket
//!   readiness, [`sipp`] the sipp UAC/UAS wrappers, [`raw`] byte-level SIP clients and a fake
//!   next hop.
//!
//! Each test file compiles this module on its own and uses a different part of it, so unused
//! items are expected per file.
#![allow(dead_code, unused_imports)]

pub mod decisions;
pub mod ports;
pub mod raw;
pub mod redis;
pub mod sipp;

pub use ports::Ports;
pub use raw::{Datagram, NextHop, SipMsg, TcpSip, UdpPeer};
pub use sipp::{Sipp, SippStats, require_sipp, sipp_available};

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a process may take to open its sockets before a test fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Polling period of every wait loop in the harness.
pub const POLL: Duration = Duration::from_millis(10);

pub const BIN: &str = env!("CARGO_BIN_EXE_sipguard");

/// Signals a test can deliver to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Hup,
    Usr1,
    Term,
    Int,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Hup => "HUP",
            Signal::Usr1 => "USR1",
            Signal::Term => "TERM",
            Signal::Int => "INT",
        }
    }
}

/// A running sipguard. Killed (SIGKILL) on drop; its temp dir goes with it.
pub struct Sipguard {
    child: Child,
    dir: TempDir,
    ports: Ports,
    config_path: PathBuf,
    log_path: PathBuf,
    exited: Option<ExitStatus>,
}

impl Sipguard {
    /// Start with a config template on freshly allocated ports; see [`Ports::render`] for the
    /// placeholders. Panics (with the proxy's log) if it exits or does not open its sockets.
    pub fn start(config_template: &str) -> Sipguard {
        Self::start_with(config_template, Ports::allocate(), &[])
    }

    /// Like [`Sipguard::start`], with chosen ports and extra files (name, contents) written
    /// next to the config, e.g. `("owned.csv", "...")`, so the config can name them relatively.
    pub fn start_with(config_template: &str, ports: Ports, files: &[(&str, &str)]) -> Sipguard {
        match Self::try_start(config_template, ports, files) {
            Ok(sg) => sg,
            Err(e) => panic!("{e}"),
        }
    }

    /// Start and wait for readiness; Err carries the reason and the log.
    pub fn try_start(config_template: &str, ports: Ports, files: &[(&str, &str)]) -> Result<Sipguard, String> {
        let dir = tempfile::Builder::new().prefix("sipguard-test.").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        for (name, contents) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("mkdir for {name}: {e}"))?;
            }
            std::fs::write(&path, contents).map_err(|e| format!("write {name}: {e}"))?;
        }
        let config = with_state_dir(&ports.render(config_template, dir.path()), dir.path());
        let config_path = dir.path().join("sipguard.toml");
        std::fs::write(&config_path, &config).map_err(|e| format!("write config: {e}"))?;
        let log_path = dir.path().join("sipguard.log");
        let log = File::create(&log_path).map_err(|e| format!("log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn {BIN}: {e}"))?;
        let mut sg = Sipguard { child, dir, ports, config_path, log_path, exited: None };
        match ports::wait_ready(&mut sg.child, &ports::expected_sockets(&config), READY_TIMEOUT) {
            Ok(()) => Ok(sg),
            Err(e) => {
                if let Ok(Some(status)) = sg.child.try_wait() {
                    sg.exited = Some(status);
                }
                Err(format!("sipguard {e}\nconfig:\n{config}\nlog:\n{}", sg.log()))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// 127.0.0.1:{udp_port}
    pub fn udp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.udp))
    }

    /// 127.0.0.1:{tcp_port}
    pub fn tcp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.tcp))
    }

    /// 127.0.0.1:{upstream_port}, where a test puts its UAS or [`NextHop`].
    pub fn upstream_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.upstream))
    }

    /// The directory holding the config, the log and any extra files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Replace the config file (same ports and placeholders), e.g. before `send_signal(Hup)`.
    pub fn rewrite_config(&self, config_template: &str) {
        let config = with_state_dir(&self.ports.render(config_template, self.dir.path()), self.dir.path());
        if let Err(e) = std::fs::write(&self.config_path, config) {
            panic!("rewrite {}: {e}", self.config_path.display());
        }
    }

    /// Write or replace a file next to the config (a CSV or list it names).
    pub fn write_file(&self, name: &str, contents: &str) {
        if let Err(e) = std::fs::write(self.dir.path().join(name), contents) {
            panic!("write {name}: {e}");
        }
    }

    /// The decision log `{dir}/decisions.jsonl` as it stands (whole lines).
    pub fn decisions(&self) -> Vec<serde_json::Value> {
        decisions::read(&self.dir().join("decisions.jsonl"))
    }

    /// The decision log once `done` holds for it (polled), or as it stands after a timeout.
    pub fn decisions_until(&self, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        decisions::until(&self.dir().join("decisions.jsonl"), done)
    }

    /// The decision log once it holds at least `n` lines (polled; fails after a timeout).
    pub fn wait_decisions(&self, n: usize) -> Vec<serde_json::Value> {
        decisions::wait(&self.dir().join("decisions.jsonl"), n)
    }

    /// Everything the proxy has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Poll the log until it contains `needle`; false on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn send_signal(&self, sig: Signal) {
        // `kill(1)` keeps the harness free of unsafe libc calls.
        let status = Command::new("kill").arg(format!("-{}", sig.name())).arg(self.pid().to_string()).status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!("kill -{} {}: {other:?}", sig.name(), self.pid()),
        }
    }

    /// Wait for the process to exit; panics with the log on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.exited = Some(s);
                    return s;
                }
                Ok(None) if Instant::now() > deadline => {
                    panic!("sipguard still running after {timeout:?}\nlog:\n{}", self.log())
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => panic!("wait for sipguard: {e}"),
            }
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exited.is_none() && matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Sipguard {
    fn drop(&mut self) {
        if self.exited.is_none() {
            kill_group(&mut self.child);
        }
        // Keep the evidence of a failed test: print the log when unwinding.
        if std::thread::panicking() {
            eprintln!("--- sipguard log ({}) ---\n{}", self.log_path.display(), self.log());
        }
    }
}

/// Each test proxy keeps its state (the secret) in its own temp dir unless the config says
/// where: `[state] dir = "<dir>/state"` is appended to a config without a `[state]` section.
pub fn with_state_dir(config: &str, dir: &Path) -> String {
    if config.contains("[state]") {
        return config.to_string();
    }
    format!("{config}\n[state]\ndir = \"{}/state\"\n", dir.display())
}

/// SIGKILL a child started with `process_group(0)` and everything it forked, then reap it.
pub fn kill_group(child: &mut Child) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Run `sipguard check-config` on a rendered template (plus extra files) and return
/// (exit code, stdout + stderr). The config is written as `sipguard.toml` in a temp dir, so
/// diagnostics read `<dir>/sipguard.toml:LINE: ...`; the dir is returned too.
pub fn check_config(config_template: &str, files: &[(&str, &str)]) -> (Option<i32>, String, TempDir) {
    let dir = match tempfile::Builder::new().prefix("sipguard-check.").tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temp dir: {e}"),
    };
    for (name, contents) in files {
        if let Err(e) = std::fs::write(dir.path().join(name), contents) {
            panic!("write {name}: {e}");
        }
    }
    let config = Ports::allocate().render(config_template, dir.path());
    let path = dir.path().join("sipguard.toml");
    if let Err(e) = std::fs::write(&path, config) {
        panic!("write config: {e}");
    }
    let out = match Command::new(BIN).arg("check-config").arg(&path).output() {
        Ok(o) => o,
        Err(e) => panic!("run {BIN}: {e}"),
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text, dir)
}

/// One HTTP/1.1 request to the proxy's admin listener; returns (status, body).
pub fn http(sg: &Sipguard, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], sg.ports().admin));
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("write to {addr}: {e}"));
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap_or_else(|e| panic!("read from {addr}: {e}"));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad response: {raw}"));
    (status, body.to_string())
}
