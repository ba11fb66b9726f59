//! `[stir]`: STIR/SHAKEN verification. Absent or `mode = "off"`: Identity headers pass
//! unread and nothing is tagged. The trust anchors and the CRL are read here, so a missing
//! or unreadable file is a check-config error with its line.
use super::{Diagnostics, Spanned};
use crate::screen::stir::cert::{TrustStore, pem_blocks};
use crate::screen::stir::{OnUnavailable, StirConfig, StirMode};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
pub struct RawStir {
    pub mode: Option<Spanned<String>>,
    pub trust_anchors: Option<Spanned<String>>,
    pub crl: Option<Spanned<String>>,
    pub freshness_seconds: Option<Spanned<i64>>,
    pub fetch_timeout_ms: Option<Spanned<i64>>,
    pub cert_cache_seconds: Option<Spanned<i64>>,
    pub on_unavailable: Option<Spanned<String>>,
    pub x5u_roots: Option<Spanned<String>>,
    pub x5u_allow_private: Option<bool>,
    pub max_pending: Option<Spanned<i64>>,
}

/// The files behind `[stir]`, kept so that SIGHUP can read them again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StirFiles {
    pub trust_anchors: Option<PathBuf>,
    pub crl: Option<PathBuf>,
}

pub fn validate(raw: &RawStir, d: &mut Diagnostics<'_>) -> Option<(StirConfig, StirFiles)> {
    let before = d.errors.len();
    let mode = match raw.mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
        None | Some((_, "off")) => StirMode::Off,
        Some((_, "verify")) => StirMode::Verify,
        Some((_, "require")) => StirMode::Require,
        Some((m, other)) => {
            d.error(m.span(), format!("stir.mode = {other:?}: must be \"off\", \"verify\" or \"require\""));
            StirMode::Off
        }
    };
    let freshness = d.int(&raw.freshness_seconds, "stir.freshness_seconds", 60, 1, 3600);
    let fetch_timeout = d.int(&raw.fetch_timeout_ms, "stir.fetch_timeout_ms", 2000, 10, 30_000);
    let cert_cache = d.int(&raw.cert_cache_seconds, "stir.cert_cache_seconds", 86_400, 60, 30 * 86_400);
    let max_pending = d.int(&raw.max_pending, "stir.max_pending", 10_000, 1, 1_000_000);
    let on_unavailable = match raw.on_unavailable.as_ref().map(|m| (m, m.get_ref().as_str())) {
        None | Some((_, "forward")) => OnUnavailable::Forward,
        Some((_, "reject")) => OnUnavailable::Reject,
        Some((m, other)) => {
            d.error(m.span(), format!("stir.on_unavailable = {other:?}: must be \"forward\" or \"reject\""));
            OnUnavailable::Forward
        }
    };
    let mut files = StirFiles::default();
    let mut anchors = Vec::new();
    match &raw.trust_anchors {
        Some(dir) => {
            let path = d.resolve(dir.get_ref());
            match read_anchor_dir(&path) {
                Ok(a) if a.is_empty() => {
                    d.error(dir.span(), format!("stir.trust_anchors: no PEM certificate in {}", path.display()))
                }
                Ok(a) => anchors = a,
                Err(e) => d.error(dir.span(), format!("stir.trust_anchors: {e}")),
            }
            files.trust_anchors = Some(path);
        }
        None if mode != StirMode::Off => {
            let at = d.text.find("[stir]").unwrap_or(0);
            d.error(at..at, "[stir] needs trust_anchors (a directory of the STI-PA's CA certificates in PEM)");
        }
        None => {}
    }
    let mut crls = Vec::new();
    if let Some(f) = &raw.crl {
        let path = d.resolve(f.get_ref());
        match read_crl(&path) {
            Ok(c) => crls = c,
            Err(e) => d.error(f.span(), format!("stir.crl: {e}")),
        }
        files.crl = Some(path);
    }
    let mut x5u_roots = Vec::new();
    if let Some(f) = &raw.x5u_roots {
        let path = d.resolve(f.get_ref());
        match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| pem_blocks(&b, "CERTIFICATE")) {
            Ok(r) if r.is_empty() => {
                d.error(f.span(), format!("stir.x5u_roots: no PEM certificate in {}", path.display()))
            }
            Ok(r) => x5u_roots = r,
            Err(e) => d.error(f.span(), format!("stir.x5u_roots: {}: {e}", path.display())),
        }
    }
    let trust = match TrustStore::new(anchors, crls) {
        Ok(t) => t,
        Err(e) => {
            let span = raw.trust_anchors.as_ref().map_or(0..0, |s| s.span());
            d.error(span, format!("stir: {e}"));
            TrustStore::default()
        }
    };
    (d.errors.len() == before).then(|| {
        let cfg = StirConfig {
            mode,
            trust: Arc::new(trust),
            freshness: Duration::from_secs(freshness as u64),
            fetch_timeout: Duration::from_millis(fetch_timeout as u64),
            cert_cache: Duration::from_secs(cert_cache as u64),
            on_unavailable,
            x5u_roots,
            x5u_allow_private: raw.x5u_allow_private.unwrap_or(false),
            max_pending: max_pending as usize,
        };
        (cfg, files)
    })
}

/// Every certificate in the `.pem`/`.crt` files of a directory (sorted by name).
pub fn read_anchor_dir(dir: &Path) -> Result<Vec<Vec<u8>>, String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pem" || x == "crt"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for p in names {
        let b = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        out.extend(pem_blocks(&b, "CERTIFICATE").map_err(|e| format!("{}: {e}", p.display()))?);
    }
    Ok(out)
}

/// The CRLs of a file, DER or PEM.
pub fn read_crl(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let crls = pem_blocks(&b, "X509 CRL").map_err(|e| format!("{}: {e}", path.display()))?;
    if crls.is_empty() {
        return Err(format!("{}: no CRL in it", path.display()));
    }
    Ok(crls)
}
