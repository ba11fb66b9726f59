//! The decision log: one JSON line per screened INVITE, written by a thread of its own so the
//! proxy never waits on disk. The channel is bounded; when it is full the line is dropped and
//! counted (calls are never held back for logging).
use crate::config::ops::DecisionSink;
use crate::screen::stir::StirReport;
use crate::screen::{CounterReading, Decision, Rule, Verdict};
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
}

impl DecisionLine {
    pub fn new(time: SystemTime, call_id: &str, d: &Decision) -> DecisionLine {
        let (verdict, code) = match &*d.verdict {
            Verdict::Reject { code, .. } => ("reject", Some(*code)),
            Verdict::Forward { .. } if d.would_reject => ("would_reject", None),
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
}

/// Handle to the decision log; cheap to clone.
#[derive(Clone)]
pub struct DecisionLog {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl DecisionLog {
    /// Open the sink and start the writer thread.
    pub fn start(sink: &DecisionSink) -> io::Result<(DecisionLog, JoinHandle<()>)> {
        let out: Box<dyn Write + Send> = match sink {
            DecisionSink::Stdout => Box::new(io::stdout()),
            DecisionSink::File(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        };
        Ok(Self::start_with(out, DEFAULT_CAPACITY))
    }

    /// Start a writer thread over any writer with room for `capacity` pending lines.
    pub fn start_with(out: Box<dyn Write + Send>, capacity: usize) -> (DecisionLog, JoinHandle<()>) {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let handle =
            std::thread::Builder::new().name("decision-log".into()).spawn(move || writer(rx, BufWriter::new(out)));
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

    /// Graceful shutdown: the writer writes everything queued so far and ends; join its
    /// handle to wait for it. Lines sent afterwards through other clones are dropped.
    pub fn close(self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

fn writer(rx: Receiver<Msg>, mut out: BufWriter<Box<dyn Write + Send>>) {
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
                "rule": "quota", "code": 403, "list": null,
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
}
