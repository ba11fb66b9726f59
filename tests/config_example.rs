//! config.example.toml stays true: it is valid as shipped, and its commented-out `[dnc]`
//! block is valid too once uncommented (with the files it names), so every documented key
//! is a real one.
use sipguard::config::Config;

fn example() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml")).unwrap()
}

/// The example with the commented block that starts at `marker` uncommented (up to the
/// blank line that ends it).
fn uncommented(marker: &str) -> String {
    let text = example();
    let start = text.find(marker).unwrap_or_else(|| panic!("a commented block {marker}"));
    let end = start + text[start..].find("\n\n").expect("the block ends with a blank line");
    let block: Vec<&str> = text[start..end].lines().map(|l| l.strip_prefix("# ").unwrap_or(l)).collect();
    format!("{}{}\n{}", &text[..start], block.join("\n"), &text[end..])
}

#[test]
fn the_example_is_valid_as_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::parse(&dir.path().join("sipguard.toml"), &example()).unwrap();
    assert!(cfg.screening.is_some() && cfg.admin.is_some() && cfg.dnc.is_none());
    // The example closes the relay and record-routes, so it draws no warning.
    assert!(cfg.server.record_route && cfg.server.upstream.is_some());
    assert_eq!(cfg.warnings(), Vec::<&str>::new());
    assert_eq!(cfg.state.dir, std::path::Path::new("/var/lib/sipguard"));
}

#[test]
fn the_commented_dnc_block_is_valid_when_uncommented() {
    let text = example();
    let start = text.find("# [dnc]").expect("a commented [dnc] block");
    let end = start + text[start..].find("\n\n").expect("the block ends with a blank line");
    let block: Vec<&str> = text[start..end]
        .lines()
        .filter(|l| !l.starts_with("# #") && l.trim() != "#")
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect();
    let config = format!("{}{}\n{}", &text[..start], block.join("\n"), &text[end..]);
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in [
        ("lists/national.snap", "+12125550100\n"),
        ("lists/internal.txt", "+12125550101,finance\n"),
        ("consent/acme.txt", "+12125550100\n"),
    ] {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("lists/national.d")).unwrap();
    let cfg = match Config::parse(&dir.path().join("sipguard.toml"), &config) {
        Ok(c) => c,
        Err(e) => panic!("{e}\n{config}"),
    };
    let dnc = cfg.dnc.unwrap();
    assert_eq!(dnc.lists.len(), 2);
    assert_eq!(dnc.consent.len(), 1);
}

#[test]
fn the_commented_stir_block_is_valid_when_uncommented() {
    let config = uncommented("# [stir]");
    let dir = tempfile::tempdir().unwrap();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root = ca.self_signed(&key).unwrap();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2030, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&rcgen::Issuer::from_params(&ca, &key))
    .unwrap();
    for (name, contents) in
        [("stir/ca/root.pem", root.pem()), ("stir/crl.pem", crl.pem().unwrap()), ("stir/tls-roots.pem", root.pem())]
    {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    let cfg = Config::parse(&dir.path().join("sipguard.toml"), &config).unwrap_or_else(|e| panic!("{e}"));
    let stir = cfg.screening.unwrap().stir.unwrap();
    assert_eq!(stir.mode, sipguard::screen::stir::StirMode::Verify);
    assert_eq!((stir.freshness.as_secs(), stir.max_pending), (60, 10_000));
    assert_eq!(cfg.stir_files.crl, Some(dir.path().join("stir/crl.pem")));
}

#[test]
fn the_commented_cluster_block_is_valid_when_uncommented() {
    let config = uncommented("# [cluster]");
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::parse(&dir.path().join("sipguard.toml"), &config).unwrap_or_else(|e| panic!("{e}"));
    let c = cfg.cluster.expect("the redis backend");
    assert_eq!(c.urls, ["redis://127.0.0.1:6379/0"]);
    assert_eq!((c.key_prefix.as_str(), c.timeout.as_millis(), c.nodes, c.connections), ("sipguard:", 50, 1, 2));
    assert!(cfg.screening.unwrap().cluster.is_some(), "screening uses the shared counters");
}

#[test]
fn the_commented_complaints_block_is_valid_when_uncommented() {
    let config = uncommented("# [complaints]");
    let dir = tempfile::tempdir().unwrap();
    let cfg = match Config::parse(&dir.path().join("sipguard.toml"), &config) {
        Ok(c) => c,
        Err(e) => panic!("{e}\n{config}"),
    };
    assert_eq!(cfg.complaints, Some(sipguard::config::complaints::ComplaintsConfig::default()));
}

#[test]
fn the_commented_behaviour_block_and_account_line_are_valid_when_uncommented() {
    use sipguard::screen::behaviour::Action;
    let config = uncommented("# [screening.behaviour]").replacen("# behaviour = {", "behaviour = {", 1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = match Config::parse(&dir.path().join("sipguard.toml"), &config) {
        Ok(c) => c,
        Err(e) => panic!("{e}\n{config}"),
    };
    let screening = cfg.screening.expect("[screening]");
    let b = screening.behaviour.expect("[screening.behaviour]");
    let l = b.limits;
    assert_eq!((l.window_minutes, l.min_attempts, l.short_call_seconds), (360, 20, 6));
    assert_eq!((l.min_asr, l.max_short_call_ratio, l.min_acd_seconds), (Some(0.15), Some(0.3), Some(10)));
    assert_eq!((l.max_concurrent, l.max_sequential, l.sequential_gap), (Some(50), Some(5), 1));
    assert_eq!((l.max_distinct_callees_per_hour, l.max_call_seconds), (Some(300), 14_400));
    assert_eq!((l.action, l.suspend_minutes, b.max_tracked_calls), (Action::SuspendCallerId, 1440, 1_000_000));
    // The account line overrides key by key and keeps the rest.
    let acme = screening.accounts.iter().find(|a| &*a.id == "acme").expect("account acme");
    let a = acme.behaviour.expect("acme's behaviour");
    assert_eq!((a.max_concurrent, a.action, a.max_sequential), (Some(20), Action::SuspendAccount, Some(5)));
}
