//! Engine-level behaviour: lists, categories, consent, account scope, deltas, reload.
use super::*;
use crate::config::dnc::{ConsentConfig, ListConfig};
use crate::screen::number::NumberPlan;
use arc_swap::ArcSwap;
use std::path::Path;
use testutil::{Rng, tempdir};

fn list(name: &str, path: &Path) -> ListConfig {
    ListConfig {
        name: name.into(),
        path: path.to_path_buf(),
        response: "dnc".into(),
        accounts: None,
        deltas: None,
        strict: false,
        consent_applies: true,
    }
}

fn hit(list: &str, response: &str, category: Option<&str>) -> Option<DncHit> {
    Some(DncHit { list: list.into(), response: response.into(), category: category.map(Arc::from) })
}

#[test]
fn text_and_snapshot_lists_agree_with_a_hashset() {
    let dir = tempdir();
    let mut rng = Rng(5);
    let numbers: Vec<u64> = (0..20_000).map(|_| 12_000_000_000 + rng.below(8_000_000_000)).collect();
    // Unsorted, with duplicates, mixed notations.
    let mut text = String::from("# national sample\n");
    for (i, n) in numbers.iter().chain(numbers.iter().take(100)).enumerate() {
        let line = match i % 3 {
            0 => format!("+{n}\n"),
            1 => format!("{}\n", n - 10_000_000_000),
            _ => format!("{},{:07}\n", (n / 10_000_000) % 1000, n % 10_000_000),
        };
        text.push_str(&line);
    }
    std::fs::write(dir.join("national.txt"), text).unwrap();
    let mut b = parse::Builder::new(true);
    b.add_text_file(&dir.join("national.txt"), NumberPlan::for_country("US").as_ref()).unwrap();
    let image = snapshot::image(&b.finish(), SystemTime::now());
    snapshot::write_file(&dir.join("national.snap"), &image).unwrap();
    let cfg = |file: &str| DncConfig {
        plan: NumberPlan::for_country("US"),
        lists: vec![list("national", &dir.join(file))],
        ..DncConfig::default()
    };
    let reference: std::collections::HashSet<u64> = numbers.iter().copied().collect();
    for file in ["national.txt", "national.snap"] {
        let dnc = Dnc::load(&cfg(file)).unwrap();
        let s = &dnc.summary()[0];
        assert_eq!((s.count, s.from_snapshot, s.line_errors), (reference.len() as u64, file.ends_with("snap"), 0));
        for probe in numbers.iter().copied().chain((0..20_000).map(|_| 12_000_000_000 + rng.below(8_000_000_000))) {
            let want = reference.contains(&probe).then(|| hit("national", "dnc", None)).flatten();
            assert_eq!(dnc.check(probe, "acme", None), want, "{file}: {probe}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn categories_consent_and_account_scope() {
    let dir = tempdir();
    std::fs::write(dir.join("internal.txt"), "+12125550100\n+12125550101,finance;RealEstate\n+12125550102,travel\n")
        .unwrap();
    std::fs::write(dir.join("acme-only.txt"), "+12125550200\n").unwrap();
    std::fs::write(dir.join("acme-consent.txt"), "+12125550100\n+12125550200\n").unwrap();
    let mut scoped = list("acme-list", &dir.join("acme-only.txt"));
    scoped.accounts = Some(vec!["acme".into()]);
    scoped.response = "acme_dnc".into();
    scoped.consent_applies = false;
    let cfg = DncConfig {
        lists: vec![list("internal", &dir.join("internal.txt")), scoped],
        consent: vec![ConsentConfig { account: "acme".into(), path: dir.join("acme-consent.txt") }],
        ..DncConfig::default()
    };
    let dnc = Dnc::load(&cfg).unwrap();
    // A plain entry blocks everyone, with or without a category...
    assert_eq!(dnc.check(12125550100, "globex", None), hit("internal", "dnc", None));
    assert_eq!(dnc.check(12125550100, "globex", Some("finance")), hit("internal", "dnc", None));
    // ...but not an account with consent for it.
    assert_eq!(dnc.check(12125550100, "acme", None), None);
    // A categorised entry blocks only matching categories (case-insensitive).
    assert_eq!(dnc.check(12125550101, "globex", Some("FINANCE")), hit("internal", "dnc", Some("finance")));
    assert_eq!(dnc.check(12125550101, "globex", Some("realestate")), hit("internal", "dnc", Some("realestate")));
    assert_eq!(dnc.check(12125550101, "globex", Some("travel")), None);
    assert_eq!(dnc.check(12125550101, "globex", Some("insurance")), None, "category unknown to the list");
    assert_eq!(dnc.check(12125550101, "globex", None), None, "account without category");
    assert_eq!(dnc.check(12125550102, "globex", Some("travel")), hit("internal", "dnc", Some("travel")));
    // The account-limited list applies to acme only, and ignores acme's consent.
    assert_eq!(dnc.check(12125550200, "acme", None), hit("acme-list", "acme_dnc", None));
    assert_eq!(dnc.check(12125550200, "globex", None), None);
    assert_eq!(dnc.consenting_accounts(12125550200), vec!["acme"]);
    assert_eq!(dnc.entries(12125550101)[0].entry, list::Entry::Categories(vec!["finance".into(), "realestate".into()]));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn deltas_apply_on_top_of_a_snapshot() {
    let dir = tempdir();
    let contents = snapshot::Contents { plain: vec![12125550100, 12125550101], ..Default::default() };
    snapshot::write_file(&dir.join("n.snap"), &snapshot::image(&contents, SystemTime::now())).unwrap();
    std::fs::create_dir(dir.join("deltas")).unwrap();
    std::fs::write(dir.join("deltas/2026-11-30-additions.txt"), "212,5550102\n+12125550103,finance\n").unwrap();
    std::fs::write(dir.join("deltas/2026-11-30-deletions.txt"), "212,5550101\n").unwrap();
    let mut l = list("national", &dir.join("n.snap"));
    l.deltas = Some(dir.join("deltas"));
    let cfg = DncConfig { lists: vec![l], ..DncConfig::default() };
    let dnc = Dnc::load(&cfg).unwrap();
    assert!(dnc.check(12125550100, "a", None).is_some());
    assert!(dnc.check(12125550101, "a", None).is_none(), "deleted");
    assert!(dnc.check(12125550102, "a", None).is_some(), "added");
    assert_eq!(dnc.check(12125550103, "a", Some("finance")), hit("national", "dnc", Some("finance")));
    assert_eq!(dnc.entries(12125550101)[0].entry, list::Entry::Removed);
    let s = &dnc.summary()[0];
    assert_eq!((s.count, s.entries, s.delta_added, s.delta_removed), (2, 3, 2, 1));
    // The operator journal takes effect on the next load.
    delta::append_journal(&dir.join("deltas"), false, 12125550199, None).unwrap();
    delta::append_journal(&dir.join("deltas"), true, 12125550100, None).unwrap();
    let dnc = Dnc::load(&cfg).unwrap();
    assert!(dnc.check(12125550199, "a", None).is_some());
    assert!(dnc.check(12125550100, "a", None).is_none());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failed_reload_keeps_the_old_lists_and_unchanged_bases_are_reused() {
    let dir = tempdir();
    let snap = dir.join("n.snap");
    let contents = snapshot::Contents { plain: vec![12125550100], ..Default::default() };
    snapshot::write_file(&snap, &snapshot::image(&contents, SystemTime::now())).unwrap();
    std::fs::write(dir.join("consent.txt"), "").unwrap();
    let cfg = DncConfig {
        lists: vec![list("national", &snap)],
        consent: vec![ConsentConfig { account: "acme".into(), path: dir.join("consent.txt") }],
        ..DncConfig::default()
    };
    let target = ArcSwap::from_pointee(Dnc::load(&cfg).unwrap());
    let before = target.load_full();
    // A consent change reloads without re-opening the unchanged snapshot.
    std::fs::write(dir.join("consent.txt"), "+12125550100\n").unwrap();
    let after = reload(&cfg, &target).unwrap();
    assert!(Arc::ptr_eq(&before.lists[0].base, &after.lists[0].base));
    assert_eq!(target.load().check(12125550100, "acme", None), None);
    // A corrupt replacement is refused and the active lists stay.
    let mut bad = std::fs::read(&snap).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    snapshot::write_file(&snap, &bad).unwrap();
    let err = reload(&cfg, &target).unwrap_err().to_string();
    assert!(err.contains("snapshot refused: checksum mismatch"), "{err}");
    assert!(Arc::ptr_eq(&target.load_full(), &after));
    assert!(target.load().check(12125550100, "globex", None).is_some());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn strict_lists_abort_on_a_bad_line_and_lenient_ones_count_it() {
    let dir = tempdir();
    std::fs::write(dir.join("l.txt"), "+12125550100\nbogus\n").unwrap();
    let mut l = list("l", &dir.join("l.txt"));
    let lenient = Dnc::load(&DncConfig { lists: vec![l.clone()], ..DncConfig::default() }).unwrap();
    assert_eq!(lenient.summary()[0].line_errors, 1);
    l.strict = true;
    let err = Dnc::load(&DncConfig { lists: vec![l], ..DncConfig::default() }).unwrap_err();
    assert_eq!(err.to_string(), format!("{}:2: not a phone number: `bogus`", dir.join("l.txt").display()));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_watcher_swaps_in_a_replaced_list() {
    let dir = tempdir();
    let path = dir.join("internal.txt");
    std::fs::write(&path, "+12125550100\n").unwrap();
    std::fs::create_dir(dir.join("deltas")).unwrap();
    let mut l = list("internal", &path);
    l.deltas = Some(dir.join("deltas"));
    let cfg = DncConfig { lists: vec![l], ..DncConfig::default() };
    let target = Arc::new(ArcSwap::from_pointee(Dnc::load(&cfg).unwrap()));
    let handle = spawn_watcher(cfg, Arc::clone(&target)).unwrap();
    let wait = || handle.outcomes().recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    // Replaced by rename, as operators and `dnc build` do.
    std::fs::write(dir.join("new.tmp"), "+12125550101\n").unwrap();
    std::fs::rename(dir.join("new.tmp"), &path).unwrap();
    assert!(matches!(wait(), watch::ReloadOutcome::Reloaded { .. }));
    assert!(target.load().check(12125550100, "a", None).is_none());
    assert!(target.load().check(12125550101, "a", None).is_some());
    // `dnc add` appends to the journal in the deltas directory.
    delta::append_journal(&dir.join("deltas"), false, 12125550102, None).unwrap();
    assert!(matches!(wait(), watch::ReloadOutcome::Reloaded { .. }));
    assert!(target.load().check(12125550102, "a", None).is_some());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn calls_screened_during_reloads_always_see_a_whole_list() {
    let dir = tempdir();
    let snap = dir.join("n.snap");
    let write = |extra: u64| {
        let contents = snapshot::Contents { plain: vec![12125550100, extra], ..Default::default() };
        snapshot::write_file(&snap, &snapshot::image(&contents, SystemTime::now())).unwrap();
    };
    write(12125550101);
    let cfg = DncConfig { lists: vec![list("national", &snap)], ..DncConfig::default() };
    let target = Arc::new(ArcSwap::from_pointee(Dnc::load(&cfg).unwrap()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Reloads start once both readers are screening (on a loaded machine a reader thread
    // may otherwise not run at all before the reloads are over).
    let started = Arc::new(std::sync::Barrier::new(3));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (target, stop, started) = (Arc::clone(&target), Arc::clone(&stop), Arc::clone(&started));
            std::thread::spawn(move || {
                assert!(target.load().check(12125550100, "acme", None).is_some());
                let mut screened = 1u64;
                started.wait();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // On every generation of the list: a missing list would let it through.
                    assert!(target.load().check(12125550100, "acme", None).is_some());
                    screened += 1;
                }
                screened
            })
        })
        .collect();
    started.wait();
    for i in 0..10 {
        write(12125550200 + i);
        let now = reload(&cfg, &target).unwrap();
        assert!(now.check(12125550200 + i, "acme", None).is_some());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 15: add, remove, remove of an unlisted number, add. The count /health, the metric and
/// the reload log show is the number of numbers blocked, whatever the journal says.
#[test]
fn entry_counts_follow_the_journal_exactly() {
    let dir = tempdir();
    std::fs::write(dir.join("own.txt"), "+12125550100\n+12125550101,finance\n").unwrap();
    std::fs::create_dir(dir.join("deltas")).unwrap();
    let mut l = list("own", &dir.join("own.txt"));
    l.deltas = Some(dir.join("deltas"));
    let cfg = DncConfig { lists: vec![l], ..DncConfig::default() };
    let j = dir.join("deltas");
    delta::append_journal(&j, false, 12125550102, None).unwrap();
    delta::append_journal(&j, true, 12125550102, None).unwrap();
    delta::append_journal(&j, true, 12125550199, None).unwrap();
    delta::append_journal(&j, false, 12125550103, None).unwrap();
    // Adding a listed number, and removing one the base has: one change.
    delta::append_journal(&j, false, 12125550100, None).unwrap();
    delta::append_journal(&j, true, 12125550101, None).unwrap();
    let dnc = Dnc::load(&cfg).unwrap();
    let candidates = [12125550100, 12125550101, 12125550102, 12125550103, 12125550199];
    let blocked: Vec<u64> = candidates.into_iter().filter(|&n| dnc.check(n, "a", Some("finance")).is_some()).collect();
    assert_eq!(blocked, [12125550100, 12125550103]);
    let s = &dnc.summary()[0];
    assert_eq!((s.count, s.entries, s.delta_added, s.delta_removed), (2, blocked.len() as u64, 1, 1));
    let _ = std::fs::remove_dir_all(dir);
}
