//! STIR/SHAKEN verification CPU per INVITE with the certificate chain cached: Identity
//! parse, base64url + JSON decode of the PASSporT, claims and freshness, x5u policy, cache
//! look-up and the ES256 signature check (ring). And, for comparison, the ES256 check alone.
#[path = "../src/screen/stir/testpki.rs"]
mod testpki;

use criterion::{Criterion, criterion_group, criterion_main};
use sipguard::screen::stir::cert::TrustStore;
use sipguard::screen::stir::certs::CertCache;
use sipguard::screen::stir::{Outcome, StirConfig, passport, verify};
use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

const X5U: &str = "https://cert.example.com/sp.pem";

fn bench(c: &mut Criterion) {
    let p = testpki::pki(testpki::Opts::default());
    let iat = 1_780_000_000;
    let now = UNIX_EPOCH + Duration::from_secs(iat + 5);
    let cfg = StirConfig::verify_with(TrustStore::new(vec![p.root_der.clone()], vec![]).unwrap());
    let certs = CertCache::default();
    certs.complete(X5U, Ok(vec![p.leaf_der.clone(), p.inter_der.clone()]), &cfg.trust, now, cfg.cert_cache);
    let identity = p.identity(X5U, "A", "+12155550123", "13105550199", iat);
    let r = verify(&cfg, &certs, Some(&identity), Some(12155550123), Some(13105550199), now, true).unwrap();
    assert_eq!(r.outcome, Outcome::Passed);
    c.bench_function("stir_verify_cached_chain", |b| {
        b.iter(|| {
            verify(&cfg, &certs, Some(black_box(&identity)), Some(12155550123), Some(13105550199), now, true).unwrap()
        })
    });
    let jws = identity.split(';').next().unwrap().to_string();
    let pp = passport::decode_passport(&jws, Some("shaken")).unwrap();
    let key = sipguard::screen::stir::cert::leaf_key(&p.leaf_der).unwrap().0;
    c.bench_function("es256_verify_only", |b| b.iter(|| pp.verify_signature(black_box(&jws), &key).unwrap()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
