//! `sipguard identity verify`: check one Identity header the way the proxy does, step by
//! step, for a voice engineer holding a header copied out of a packet capture.
use crate::screen::stir::cert::{TrustStore, leaf_key, pem_blocks};
use crate::screen::stir::passport::{self, canonical_tn};
use crate::screen::stir::{StirConfig, identity};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, clap::Subcommand)]
pub enum IdentityCommand {
    /// Verify an Identity header: parse, header and claims, freshness, signature,
    /// orig/dest, chain, TNAuthList. Exit 0 only when every check passes (orig/dest may be
    /// skipped when --from/--to are not given), 1 when one fails, 2 on a usage error.
    Verify {
        /// The header, with or without the leading `Identity:`.
        #[arg(long)]
        header: String,
        /// The certificate (PEM: the leaf, then any intermediates), instead of fetching x5u.
        #[arg(long, value_name = "PEM", conflicts_with = "fetch")]
        cert: Option<PathBuf>,
        /// Fetch the certificate from the PASSporT's x5u (HTTPS, as the proxy does).
        #[arg(long)]
        fetch: bool,
        /// Directory of trust anchors (PEM) to validate the chain to.
        #[arg(long, value_name = "DIR")]
        ca_dir: Option<PathBuf>,
        /// The time to check freshness and validity at (default: now).
        #[arg(long, value_name = "UNIX_SECONDS")]
        now: Option<u64>,
        /// Seconds iat may be from now (as `[stir] freshness_seconds`).
        #[arg(long, default_value_t = 60)]
        freshness: u64,
        /// The caller number the call presented (orig.tn must equal it).
        #[arg(long, value_name = "NUMBER")]
        from: Option<String>,
        /// The callee (dest.tn must contain it).
        #[arg(long, value_name = "NUMBER")]
        to: Option<String>,
    },
}

struct Report<'a> {
    out: &'a mut dyn Write,
    failed: bool,
}

impl Report<'_> {
    fn line(&mut self, check: &str, result: Result<String, String>) -> bool {
        let ok = result.is_ok();
        let (tag, text) = match result {
            Ok(t) => ("PASS", t),
            Err(t) => ("FAIL", t),
        };
        self.failed |= !ok;
        let _ = writeln!(self.out, "{tag}  {check:<12} {text}");
        ok
    }
    fn skip(&mut self, check: &str, why: &str) {
        let _ = writeln!(self.out, "SKIP  {check:<12} {why}");
    }
}

pub fn run(cmd: IdentityCommand) -> i32 {
    run_to(cmd, &mut std::io::stdout())
}

pub fn run_to(cmd: IdentityCommand, out: &mut dyn Write) -> i32 {
    let IdentityCommand::Verify { header, cert, fetch, ca_dir, now, freshness, from, to } = cmd;
    let now_s = now.unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    let mut r = Report { out, failed: false };
    let value = header.trim();
    let value = value.strip_prefix("Identity:").or_else(|| value.strip_prefix("identity:")).unwrap_or(value).trim();
    let Some(first) = identity::split(value).next() else {
        r.line("parse", Err("empty header".into()));
        return 1;
    };
    let id = match identity::parse(first) {
        Ok(id) => id,
        Err(e) => {
            r.line("parse", Err(e.to_string()));
            return 1;
        }
    };
    r.line(
        "parse",
        Ok(format!("info=<{}> alg={} ppt={}", id.info.unwrap_or("-"), id.alg.unwrap_or("-"), id.ppt.unwrap_or("-"))),
    );
    let pp = match passport::decode_passport(id.jws, id.ppt) {
        Ok(p) => p,
        Err(e) => {
            r.line("claims", Err(e.to_string()));
            return 1;
        }
    };
    let info_ok = id.info.is_none_or(|i| i == pp.x5u);
    r.line(
        "claims",
        if info_ok {
            Ok(format!(
                "attest={} orig={} dest={} iat={} origid={} x5u={}",
                pp.attest.as_str(),
                pp.orig_tn,
                pp.dest_tn.join(","),
                pp.iat,
                pp.origid,
                pp.x5u
            ))
        } else {
            Err(format!("info <{}> is not the x5u {}", id.info.unwrap_or_default(), pp.x5u))
        },
    );
    let age = now_s.abs_diff(pp.iat);
    r.line(
        "freshness",
        if age <= freshness {
            Ok(format!("iat is {age} s from now"))
        } else {
            Err(format!("iat is {age} s from now (> {freshness})"))
        },
    );
    let chain: Option<Vec<Vec<u8>>> = if let Some(path) = &cert {
        match std::fs::read(path).map_err(|e| e.to_string()).and_then(|b| pem_blocks(&b, "CERTIFICATE")) {
            Ok(c) if !c.is_empty() => Some(c),
            Ok(_) => {
                let _ = writeln!(r.out, "sipguard identity: no certificate in {}", path.display());
                return 2;
            }
            Err(e) => {
                let _ = writeln!(r.out, "sipguard identity: {}: {e}", path.display());
                return 2;
            }
        }
    } else if fetch {
        let cfg = fetch_config();
        let got = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(crate::transport::lookup::fetch_once(&pp.x5u, &cfg)));
        match got {
            Ok(c) => {
                r.line("fetch", Ok(format!("{} certificate(s) from {}", c.len(), pp.x5u)));
                Some(c)
            }
            Err(e) => {
                r.line("fetch", Err(e));
                None
            }
        }
    } else {
        None
    };
    match chain.as_ref().and_then(|c| c.first()).map(|leaf| leaf_key(leaf)) {
        Some(Ok((key, _))) => {
            r.line(
                "signature",
                pp.verify_signature(id.jws, &key)
                    .map(|()| "ES256 verifies with the leaf's key".into())
                    .map_err(|e| e.to_string()),
            );
        }
        Some(Err(e)) => {
            r.line("signature", Err(e.to_string()));
        }
        None => {
            r.failed = true;
            r.skip("signature", "no certificate: give --cert FILE or --fetch");
        }
    }
    match from.as_deref() {
        Some(f) => {
            let ok = canonical_tn(&pp.orig_tn).is_some() && canonical_tn(&pp.orig_tn) == canonical_tn(f);
            r.line(
                "orig",
                if ok {
                    Ok(format!("orig.tn {} is {f}", pp.orig_tn))
                } else {
                    Err(format!("orig.tn {} is not {f}", pp.orig_tn))
                },
            );
        }
        None => r.skip("orig", "no --from"),
    }
    match to.as_deref() {
        Some(t) => {
            let want = canonical_tn(t);
            let ok = want.is_some() && pp.dest_tn.iter().any(|d| canonical_tn(d) == want);
            r.line(
                "dest",
                if ok {
                    Ok(format!("dest.tn contains {t}"))
                } else {
                    Err(format!("dest.tn {:?} does not contain {t}", pp.dest_tn))
                },
            );
        }
        None => r.skip("dest", "no --to"),
    }
    match (&chain, &ca_dir) {
        (Some(c), Some(dir)) => {
            let anchors = match crate::config::stir::read_anchor_dir(dir) {
                Ok(a) if !a.is_empty() => a,
                Ok(_) | Err(_) => {
                    let _ = writeln!(r.out, "sipguard identity: no trust anchor in {}", dir.display());
                    return 2;
                }
            };
            let verdict = TrustStore::new(anchors, Vec::new())
                .map_err(|e| e.to_string())
                .and_then(|t| t.validate(c, UNIX_EPOCH + Duration::from_secs(now_s)).map_err(|e| e.to_string()));
            match verdict {
                Ok(v) => {
                    r.line("chain", Ok(format!("validates to a trust anchor in {}", dir.display())));
                    r.line("tnauthlist", v.spc.map(|s| format!("SPC {s}")).ok_or_else(|| "no SPC entry".to_string()));
                }
                Err(e) => {
                    r.line("chain", Err(e));
                }
            }
        }
        (Some(c), None) => {
            r.failed = true;
            r.skip("chain", "no --ca-dir");
            if let Some(leaf) = c.first() {
                r.line(
                    "tnauthlist",
                    leaf_key(leaf)
                        .map_err(|e| e.to_string())
                        .and_then(|(_, spc)| spc.map(|s| format!("SPC {s}")).ok_or_else(|| "no SPC entry".into())),
                );
            }
        }
        (None, _) => {
            r.failed = true;
            r.skip("chain", "no certificate");
        }
    }
    let verdict = if r.failed { "FAILED" } else { "VERIFIED" };
    let _ = writeln!(r.out, "verdict: {verdict}");
    i32::from(r.failed)
}

/// The fetch settings of the CLI: the proxy's defaults, a longer timeout.
fn fetch_config() -> StirConfig {
    StirConfig { fetch_timeout: Duration::from_secs(5), ..StirConfig::verify_with(TrustStore::default()) }
}
