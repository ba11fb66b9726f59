//! The config loader: `Config::parse` must never panic on any text, and a config it accepts
//! must be usable: `ProxyConfig::from_config`, the screening policy (`Screener::new`) and the
//! DNC lists it names (`Dnc::load`) must not panic either. The config is parsed as if it were
//! `<tmp>/sipguard.toml` in a directory holding small `owned.csv`, `national.txt`,
//! `consent.txt` and `deltas/` files, so relative paths in it can resolve.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sipguard::config::Config;
use sipguard::proxy::ProxyConfig;
use sipguard::screen::dnc::Dnc;
use sipguard::screen::policy::Screener;
use sipguard::sip::branch::Key;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("sipguard-fuzz-config-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("deltas")).expect("a temp dir");
    let files = [
        ("owned.csv", "account,number\nacme,+12125550100\nbeta,+13125550100\n"),
        ("national.txt", "+13125550111\n+13125550112,finance\n212,5550199\n"),
        ("consent.txt", "+13125550111\n"),
        ("deltas/add.txt", "add +13125550113\nremove +13125550111\n"),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("a fixture");
    }
    dir
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = DIR.join("sipguard.toml");
    let Ok(cfg) = Config::parse(&file, text) else { return };
    let _ = ProxyConfig::from_config(&cfg, Key::derive(b"fuzz"));
    let dnc = match &cfg.dnc {
        Some(d) => Dnc::load(d).ok(),
        None => None,
    };
    if let Some(sc) = cfg.screening.clone() {
        let _ = Screener::new(sc, Arc::new(arc_swap::ArcSwap::from_pointee(dnc.unwrap_or_default())));
    }
});
