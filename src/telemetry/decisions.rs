//! The decision log: one JSON line per screened INVITE, written by a thread of its own so the
//! proxy never waits on disk. The channel is bounded; when it is full the line is dropped and
//! counted (calls are never held back for logging).
use crate::config::ops::DecisionSink;
use crate::screen::stir::StirReport;
use crate::screen::{CounterReading, Decision, RawFacts, Rule, Verdict};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::io::{self, BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;
use std::time::SystemTime;

/// Lines buffered between the proxy and the writer thread.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// What one line records: the facts of a `Decision` plus time and Call-ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionLine {
    pub time: SystemTime,
    pub call_id: Box<str>,
    pub account: Option<Arc<str>>,
    pub caller: Option<u64>,
    pub callee: Option<u64>,
    pub verdict: &'static str,
    pub rule: Option<Rule>,
    pub code: Option<u16>,
    pub list: Option<Arc<str>>,
    pub counters: Vec<CounterReading>,
    pub stir: Option<Box<StirReport>>,
    pub detail: Option<Arc<str>>,
    /// Report mode: each rule that would have refused the call, with its code.
    pub fired: Vec<(Rule, u16)>,
    pub raw: Option<Box<RawFacts>>,
}

impl DecisionLine {
    pub fn new(time: SystemTime, call_id: &str, d: &Decision) -> DecisionLine {
        let (verdict, code) = match &*d.verdict {
            Verdict::Reject { code, .. } => ("reject", Some(*code)),
            // The code the first rule would have answered.
            Verdict::Forward { .. } if d.would_reject => ("would_reject", d.fired.first().map(|f| f.1)),
            Verdict::Forward { .. } => ("forward", None),
        };
        DecisionLine {
            time,
            call_id: call_id.into(),
            account: d.account.clone(),
            caller: d.caller,
            callee: d.callee,
            verdict,
            rule: d.rule,
            code,
            list: d.list.clone(),
            counters: d.counters.clone(),
            stir: d.stir.clone(),
            detail: d.detail.clone(),
            fired: d.fired.clone(),
            raw: d.raw.clone(),
        }
    }

    fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        #[derive(Serialize)]
        struct Counter<'a> {
            name: &'a str,
            value: u64,
            limit: u64,
        }
        #[derive(Serialize)]
        struct Json<'a> {
            time: String,
            call_id: &'a str,
            account: Option<&'a str>,
            caller: Option<String>,
            callee: Option<String>,
            verdict: &'a str,
            rule: Option<&'a str>,
            code: Option<u16>,
            list: Option<&'a str>,
            counters: Vec<Counter<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            stir: Option<Stir<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            detail: Option<&'a str>,
            /// The quota counter that refused the call.
            #[serde(skip_serializing_if = "Option::is_none")]
            counter: Option<&'a str>,
            /// Report mode: every rule that would have refused, each with its code.
            #[serde(skip_serializing_if = "Vec::is_empty")]
            rules: Vec<Fired<'a>>,
            /// The offending values as presented, when they could not be used.
            #[serde(skip_serializing_if = "Option::is_none")]
            account_header: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            caller_text: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            callee_text: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Fired<'a> {
            rule: &'a str,
            code: u16,
        }
        /// Attestation, outcome, the failing check and the SPC of the call's PASSporT.
        #[derive(Serialize)]
        struct Stir<'a> {
            outcome: &'a str,
            verstat: &'a str,
            attestation: Option<&'a str>,
            check: Option<&'a str>,
            spc: Option<&'a str>,
        }
        let json = Json {
            time: DateTime::<Utc>::from(self.time).to_rfc3339_opts(SecondsFormat::Millis, true),
            call_id: &self.call_id,
            account: self.account.as_deref(),
            caller: self.caller.map(|n| format!("+{n}")),
            callee: self.callee.map(|n| format!("+{n}")),
            verdict: self.verdict,
            rule: self.rule.map(Rule::name),
            code: self.code,
            list: self.list.as_deref(),
            counters: self.counters.iter().map(|c| Counter { name: c.name, value: c.value, limit: c.limit }).collect(),
            stir: self.stir.as_ref().map(|r| Stir {
                outcome: r.outcome.label(),
                verstat: r.outcome.verstat().as_str(),
                attestation: r.attestation.map(|a| a.as_str()),
                check: r.check.as_deref(),
                spc: r.spc.as_deref(),
            }),
            detail: self.detail.as_deref(),
            counter: (self.rule == Some(Rule::Quota))
                .then(|| self.counters.iter().find(|c| c.value >= c.limit).map(|c| c.name))
                .flatten(),
            rules: if self.verdict == "would_reject" {
                self.fired.iter().map(|&(r, code)| Fired { rule: r.name(), code }).collect()
            } else {
                Vec::new()
            },
            account_header: self.raw.as_ref().and_then(|r| r.account.as_deref()),
            caller_text: self.raw.as_ref().and_then(|r| r.caller.as_deref()),
            callee_text: self.raw.as_ref().and_then(|r| r.callee.as_deref()),
        };
        serde_json::to_writer(&mut *out, &json)?;
        out.write_all(b"\n")
    }
}

enum Msg {
    Line(Box<DecisionLine>),
    /// Write out everything before this message, then acknowledge.
    Flush(mpsc::Sender<()>),
    /// Write out everything before this message and end the writer thread.
    Stop,
    /// Write out everything before this message, then reopen the file (log rotation: the
    /// old name was renamed away) and acknowledge with the outcome.
    Reopen(mpsc::Sender<io::Result<()>>),
}

/// Opens the sink again; None for stdout (nothing to reopen).
type Opener = Option<Box<dyn Fn() -> io::Result<Box<dyn Write + Send>> + Send>>;

/// Handle to the decision log; cheap to clone.
#[derive(Clone)]
pub struct DecisionLog {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl DecisionLog {
    /// Open the sink and start the writer thread.
    pub fn start(sink: &DecisionSink) -> io::Result<(DecisionLog, JoinHandle<()>)> {
        match sink {
            DecisionSink::Stdout => Ok(Self::start_with(Box::new(io::stdout()), DEFAULT_CAPACITY)),
            DecisionSink::File(path) => {
                let path = path.clone();
                let open = move || -> io::Result<Box<dyn Write + Send>> {
                    Ok(Box::new(std::fs::OpenOptions::new().create(true).append(true).open(&path)?))
                };
                let out = open()?;
                Ok(Self::start_reopening(out, Some(Box::new(open)), DEFAULT_CAPACITY))
            }
        }
    }

    /// Start a writer thread over any writer with room for `capacity` pending lines.
    pub fn start_with(out: Box<dyn Write + Send>, capacity: usize) -> (DecisionLog, JoinHandle<()>) {
        Self::start_reopening(out, None, capacity)
    }

    /// Like `start_with`, with what `reopen` opens in place of `out`.
    fn start_reopening(out: Box<dyn Write + Send>, open: Opener, capacity: usize) -> (DecisionLog, JoinHandle<()>) {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let handle = std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || writer(rx, BufWriter::new(out), open));
        let handle = match handle {
            Ok(h) => h,
            // Without a thread the receiver is gone: every line counts as dropped.
            Err(e) => {
                tracing::error!("cannot start the decision log writer: {e}");
                std::thread::spawn(|| {})
            }
        };
        (DecisionLog { tx, dropped: Arc::new(AtomicU64::new(0)) }, handle)
    }

    /// Queue a line without waiting; false (and counted) when the queue is full or closed.
    pub fn try_send(&self, line: DecisionLine) -> bool {
        match self.tx.try_send(Msg::Line(Box::new(line))) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queue the line of one screened call.
    pub fn log(&self, time: SystemTime, call_id: &str, decision: &Decision) -> bool {
        self.try_send(DecisionLine::new(time, call_id, decision))
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The drop counter itself, for the metrics exporter.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Return once every line queued before this call is written and flushed.
    pub fn flush(&self) {
        let (ack_tx, ack_rx) = mpsc::channel();
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            // An error means the writer ended; nothing more can be written.
            let _ = ack_rx.recv();
        }
    }

    /// Write out every line queued before this call into the file open now, then open the
    /// configured path again (after logrotate renamed it): each line lands in exactly one of
    /// the two files. On error the old file stays in use. Stdout: nothing to do.
    pub fn reopen(&self) -> io::Result<()> {
        let (ack_tx, ack_rx) = mpsc::channel();
        let gone = || io::Error::other("the decision log writer has stopped");
        self.tx.send(Msg::Reopen(ack_tx)).map_err(|_| gone())?;
        ack_rx.recv().map_err(|_| gone())?
    }

    /// Graceful shutdown: the writer writes everything queued so far and ends; join its
    /// handle to wait for it. Lines sent afterwards through other clones are dropped.
    pub fn close(self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

fn writer(rx: Receiver<Msg>, mut out: BufWriter<Box<dyn Write + Send>>, open: Opener) {
    let mut failing = false;
    let mut report = |r: io::Result<()>| match r {
        Ok(()) => failing = false,
        // Warn once per run of failures, not per line.
        Err(e) if !failing => {
            failing = true;
            tracing::warn!("decision log write failed: {e}");
        }
        Err(_) => {}
    };
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty) => {
                // Idle: push buffered lines out before waiting.
                report(out.flush());
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        match msg {
            Msg::Line(line) => report(line.write_json(&mut out)),
            Msg::Flush(ack) => {
                report(out.flush());
                let _ = ack.send(());
            }
            Msg::Stop => break,
            Msg::Reopen(ack) => {
                report(out.flush());
                let result = match &open {
                    Some(open) => open().map(|f| out = BufWriter::new(f)),
                    None => Ok(()),
                };
                let _ = ack.send(result);
            }
        }
    }
    report(out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A writer into shared memory.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Gated {
        inner: Shared,
        entered: mpsc::Sender<()>,
        release: Receiver<()>,
    }

    impl Write for Gated {
        // BufWriter only calls write when it holds data, so the gate closes on a real line.
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.release.recv();
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(s: &Shared) -> Vec<serde_json::Value> {
        let text = String::from_utf8(s.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn decision() -> Decision {
        Decision {
            verdict: std::sync::Arc::new(Verdict::Reject { code: 403, reason: "Forbidden".into(), headers: vec![] }),
            rule: Some(Rule::Quota),
            would_reject: false,
            account: Some("acme".into()),
            caller: Some(12125550100),
            callee: Some(13105550199),
            list: None,
            counters: vec![CounterReading { name: "account_per_day", value: 3, limit: 3 }],
            charge: None,
            stir: None,
            tracked: None,
            detail: None,
            fired: Vec::new(),
            raw: None,
            source: None,
        }
    }

    #[test]
    fn lines_are_json_with_every_field() {
        let out = Shared::default();
        let (log, handle) = DecisionLog::start_with(Box::new(out.clone()), 16);
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_780_329_600_123);
        assert!(log.log(t, "abc@pbx", &decision()));
        let mut report = Decision::pass();
        report.would_reject = true;
        report.rule = Some(Rule::Dnc);
        report.list = Some("federal".into());
        assert!(log.log(t, "def@pbx", &report));
        assert!(log.log(t, "ghi@pbx", &Decision::pass()));
        log.flush();
        let l = lines(&out);
        assert_eq!(l.len(), 3);
        assert_eq!(
            l[0],
            serde_json::json!({
                "time": "2026-06-01T16:00:00.123Z", "call_id": "abc@pbx", "account": "acme",
                "caller": "+12125550100", "callee": "+13105550199", "verdict": "reject",
                "rule": "quota", "code": 403, "list": null, "counter": "account_per_day",
                "counters": [{"name": "account_per_day", "value": 3, "limit": 3}]
            })
        );
        assert_eq!(
            (l[1]["verdict"].as_str(), l[1]["rule"].as_str(), l[1]["list"].as_str()),
            (Some("would_reject"), Some("dnc"), Some("federal"))
        );
        assert_eq!(l[2]["verdict"], "forward");
        log.close();
        handle.join().unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines() {
        let out = Shared::default();
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let gated = Gated { inner: out.clone(), entered: entered_tx, release: release_rx };
        let (log, handle) = DecisionLog::start_with(Box::new(gated), 1);
        // The writer takes line 1, finds the queue empty and blocks writing it out.
        assert!(log.log(SystemTime::UNIX_EPOCH, "1", &decision()));
        entered_rx.recv().unwrap();
        assert!(log.log(SystemTime::UNIX_EPOCH, "2", &decision()), "fills the one slot");
        assert!(!log.log(SystemTime::UNIX_EPOCH, "3", &decision()), "queue full");
        assert_eq!(log.dropped(), 1);
        // Release every flush from now on.
        drop(release_tx);
        let counter = log.dropped_counter();
        log.close();
        handle.join().unwrap();
        let ids: Vec<String> = lines(&out).iter().map(|l| l["call_id"].as_str().unwrap().to_string()).collect();
        assert_eq!(ids, ["1", "2"]);
        assert_eq!(counter.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn close_writes_everything_to_a_file() {
        let path = std::env::temp_dir().join(format!("sipguard-decisions-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let (log, handle) = DecisionLog::start(&DecisionSink::File(path.clone())).unwrap();
        for i in 0..1000 {
            assert!(log.log(SystemTime::UNIX_EPOCH, &i.to_string(), &decision()));
        }
        log.close();
        handle.join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1000);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn reopen_after_a_rename_splits_the_lines_without_loss_or_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let (log, handle) = DecisionLog::start(&DecisionSink::File(path.clone())).unwrap();
        for i in 0..500 {
            log.log(SystemTime::UNIX_EPOCH, &i.to_string(), &decision());
        }
        std::fs::rename(&path, dir.path().join("decisions.jsonl.1")).unwrap();
        for i in 500..700 {
            log.log(SystemTime::UNIX_EPOCH, &i.to_string(), &decision());
        }
        log.reopen().unwrap();
        for i in 700..1000 {
            log.log(SystemTime::UNIX_EPOCH, &i.to_string(), &decision());
        }
        log.close();
        handle.join().unwrap();
        let ids = |name: &str| -> Vec<u32> {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            text.lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["call_id"].as_str().unwrap().parse().unwrap()
                })
                .collect()
        };
        // Lines queued before the reopen go to the renamed file, the rest to the new one.
        assert_eq!(ids("decisions.jsonl.1"), (0..700).collect::<Vec<_>>());
        assert_eq!(ids("decisions.jsonl"), (700..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_reopen_keeps_writing_to_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("logs");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("d.jsonl");
        let (log, handle) = DecisionLog::start(&DecisionSink::File(path.clone())).unwrap();
        log.log(SystemTime::UNIX_EPOCH, "1", &decision());
        let moved = dir.path().join("moved");
        std::fs::rename(&sub, &moved).unwrap();
        assert!(log.reopen().is_err(), "the directory is gone");
        log.log(SystemTime::UNIX_EPOCH, "2", &decision());
        log.close();
        handle.join().unwrap();
        assert_eq!(std::fs::read_to_string(moved.join("d.jsonl")).unwrap().lines().count(), 2);
    }
}
