//! STIR/SHAKEN verification of an Identity header value (`stir::verify`, what screening runs
//! for every INVITE with `[stir]` on), on the fuzzer's bytes: Identity parsing and
//! splitting, base64url and JSON decoding of the PASSporT, claims, freshness, the x5u policy
//! and the certificate cache. The cache is empty, so no signature is checked (that is ring's
//! code); instead: no panic, no hang, and whenever verification asks for a certificate, the
//! URL it names passes the x5u policy (HTTPS, port, no private host), so no input can make
//! the proxy fetch from where it must not.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sipguard::screen::stir::cert::TrustStore;
use sipguard::screen::stir::certs::CertCache;
use sipguard::screen::stir::{StirConfig, verify, x5u};
use std::time::{Duration, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    let cfg = StirConfig::verify_with(TrustStore::default());
    let certs = CertCache::default();
    let now = UNIX_EPOCH + Duration::from_secs(1_780_000_000);
    let (caller, callee) = (Some(12155550123), Some(13105550199));
    match verify(&cfg, &certs, Some(&value), caller, callee, now, true) {
        Err(need) => assert!(x5u::check_url(&need.0, false).is_ok(), "asked to fetch a refused URL: {}", need.0),
        Ok(_) => {}
    }
    let _ = verify(&cfg, &certs, Some(&value), caller, callee, now, false).expect("never waits when told not to");
});
