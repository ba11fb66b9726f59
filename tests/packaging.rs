//! What the Debian package installs, checked without building it (CI's .ci/run builds and
//! installs the .deb): the man pages and completions `sipguard generate` writes from the
//! clap definitions, the names Cargo.toml's `[package.metadata.deb]` expects of them, the
//! systemd unit (hardened, the package's paths and user, accepted by `systemd-analyze
//! verify`), and the shipped config passing `check-config` on its own.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sipguard");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn generate(what: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A directory that does not exist yet: generate creates it.
    let dir = tmp.path().join("out").join(what);
    let out = run(Command::new(BIN).arg("generate").arg(what).arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    // It prints what it wrote, one path a line.
    let printed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| Path::new(l).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default())
        .collect();
    assert_eq!(printed, files(&dir));
    (tmp, dir)
}

#[test]
fn man_pages_cover_every_visible_subcommand() {
    let (_tmp, dir) = generate("man");
    let pages = files(&dir);
    for p in [
        "sipguard.1",
        "sipguard-check-config.1",
        "sipguard-dnc.1",
        "sipguard-dnc-build.1",
        "sipguard-dnc-check.1",
        "sipguard-dnc-add.1",
        "sipguard-identity.1",
        "sipguard-top.1",
    ] {
        assert!(pages.contains(p), "{p} missing from {pages:?}");
    }
    // The hidden generator and clap's help pseudo-command get no page.
    assert!(!pages.iter().any(|p| p.contains("generate") || p.contains("help")), "{pages:?}");

    let main = std::fs::read_to_string(dir.join("sipguard.1")).unwrap_or_default();
    assert!(main.starts_with(".ie") || main.contains(".TH sipguard 1"), "{main}");
    assert!(main.contains(".TH sipguard 1"), "{main}");
    assert!(main.contains(&format!("sipguard {}", env!("CARGO_PKG_VERSION"))), "version in the footer: {main}");
    // Options and subcommands, from the same definitions as --help.
    assert!(main.contains("\\-\\-config"), "{main}");
    assert!(main.contains("check\\-config"), "{main}");
    assert!(!main.contains("generate"), "{main}");
    let top = std::fs::read_to_string(dir.join("sipguard-top.1")).unwrap_or_default();
    assert!(top.contains(".TH sipguard-top 1") && top.contains("\\-\\-interval"), "{top}");
    assert!(top.contains("sipguard top"), "the synopsis names the command as typed: {top}");

    // man renders it without a warning.
    if Command::new("man").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let out = run(Command::new("man")
            .arg("-l")
            .arg(dir.join("sipguard.1"))
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_STDERR", "1")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat"));
        assert!(out.status.success(), "{}", text(&out));
        let rendered = String::from_utf8_lossy(&out.stdout);
        assert!(rendered.contains("check-config") && rendered.contains("--config"), "{rendered}");
        assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let (_tmp, dir) = generate("completions");
    assert_eq!(files(&dir), BTreeSet::from(["sipguard.bash".into(), "_sipguard".into(), "sipguard.fish".into()]));
    let bash = std::fs::read_to_string(dir.join("sipguard.bash")).unwrap_or_default();
    assert!(bash.contains("check-config") && bash.contains("complete -F"), "{bash}");
    let out = run(Command::new("bash").arg("-n").arg(dir.join("sipguard.bash")));
    assert!(out.status.success(), "bash -n: {}", text(&out));
    // Sourced, it registers the completion; the hidden generator is not offered.
    let script = format!(
        "source {}; COMP_WORDS=(sipguard ''); COMP_CWORD=1; _sipguard sipguard '' sipguard; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        dir.join("sipguard.bash").display()
    );
    let out = run(Command::new("bash").arg("-c").arg(&script));
    let offered = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    for word in ["check-config", "dnc", "identity", "top", "--config"] {
        assert!(offered.lines().any(|l| l == word), "{word} not offered: {offered}");
    }
    assert!(!offered.lines().any(|l| l == "generate"), "{offered}");
    let zsh = std::fs::read_to_string(dir.join("_sipguard")).unwrap_or_default();
    assert!(zsh.starts_with("#compdef sipguard"), "{zsh}");
    let fish = std::fs::read_to_string(dir.join("sipguard.fish")).unwrap_or_default();
    assert!(fish.contains("complete -c sipguard"), "{fish}");
}

#[test]
fn generate_is_hidden_and_refuses_what_it_cannot_write() {
    let out = run(Command::new(BIN).arg("--help"));
    assert!(out.status.success());
    assert!(!text(&out).contains("generate"), "{}", text(&out));
    let out = run(Command::new(BIN).args(["generate", "pdf", "/tmp"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // A file where the directory should be: an error naming it, exit 1.
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap_or_else(|e| panic!("{e}"));
    let out = run(Command::new(BIN).arg("generate").arg("man").arg(&file));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&file.display().to_string()), "{}", text(&out));
}

fn deb_metadata() -> toml::Value {
    let cargo: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap_or_else(|e| panic!("Cargo.toml: {e}"));
    cargo["package"]["metadata"]["deb"].clone()
}

/// (source, destination) of each asset.
fn assets(deb: &toml::Value) -> Vec<(String, String)> {
    deb["assets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| (a[0].as_str().unwrap_or("").to_string(), a[1].as_str().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn package_metadata_names_what_exists() {
    let deb = deb_metadata();
    let assets = assets(&deb);
    let dest = |d: &str| assets.iter().find(|(_, t)| t == d).map(|(s, _)| s.clone());
    assert_eq!(dest("usr/bin/").as_deref(), Some("target/release/sipguard"));
    assert_eq!(dest("etc/sipguard/sipguard.toml").as_deref(), Some("config.example.toml"));
    assert_eq!(dest("usr/share/man/man1/").as_deref(), Some("target/generated/man/*.1"));
    // Every source outside target/ is in the repository; the generated ones are what
    // `generate` writes (build-deb.sh generates into target/generated/{man,completions}).
    let (_m, man) = generate("man");
    let (_c, comp) = generate("completions");
    for (src, _) in &assets {
        if let Some(name) = src.strip_prefix("target/generated/completions/") {
            assert!(comp.join(name).is_file(), "{src}");
        } else if src.starts_with("target/generated/man/") {
            assert!(!files(&man).is_empty());
        } else if !src.starts_with("target/") {
            let pattern = root().join(src);
            let found = if src.contains('*') {
                let dir = pattern.parent().unwrap_or(root());
                let ext = src.rsplit('.').next().unwrap_or("");
                files(dir).iter().any(|f| f.ends_with(&format!(".{ext}")))
            } else {
                pattern.is_file()
            };
            assert!(found, "asset {src} not in the repository");
        }
    }
    let script = read("contrib/debian/build-deb.sh");
    assert!(script.contains("generate man target/generated/man"), "{script}");
    assert!(script.contains("generate completions target/generated/completions"), "{script}");
    // The maintainer scripts exist, are executable and leave room for the systemd snippets.
    let scripts = deb["maintainer-scripts"].as_str().unwrap_or("");
    for s in ["postinst", "postrm"] {
        let path = root().join(scripts).join(s);
        let body = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(body.contains("#DEBHELPER#"), "{s}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode()).unwrap_or(0);
        assert!(mode & 0o111 != 0, "{s} not executable");
        let out = run(Command::new("sh").arg("-n").arg(&path));
        assert!(out.status.success(), "{s}: {}", text(&out));
    }
    let postinst = read(&format!("{scripts}postinst"));
    assert!(postinst.contains("adduser --system --group --home /var/lib/sipguard"), "{postinst}");
    assert!(postinst.contains("/var/log/sipguard"), "{postinst}");
}

/// build-deb.sh takes `--pgo` alone (the profile-guided build, from bench/pgo.sh's target
/// directory) and refuses anything else before it builds anything.
#[test]
fn build_deb_takes_pgo_and_refuses_other_arguments() {
    let script = root().join("contrib/debian/build-deb.sh");
    for args in [&["--release"][..], &["--pgo", "--release"], &["", "--pgo"]] {
        let out = run(Command::new("bash").arg(&script).args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("usage:") && text(&out).contains("[--pgo]"), "{}", text(&out));
    }
    let body = read("contrib/debian/build-deb.sh");
    assert!(body.contains("bench/pgo.sh --if-stale") && body.contains("CARGO_TARGET_DIR"), "{body}");
    // The binary pgo.sh prints sits at release/sipguard under the target directory cargo deb
    // is given.
    let pgo = read("bench/pgo.sh");
    assert!(pgo.contains("--target-dir \"$use\"") && pgo.contains("bin=$use/release/sipguard"), "{pgo}");
}

/// The fingerprint `bench/pgo.sh --if-stale` compares: the same for the same tree and
/// compiler, another for other compiler flags (a binary built with other flags is stale).
#[test]
fn the_production_build_fingerprint_is_stable_and_covers_the_flags() {
    let fingerprint = |rustflags: Option<&str>| {
        let mut cmd = Command::new("bash");
        cmd.arg(root().join("bench/pgo.sh")).arg("--fingerprint").env_remove("RUSTFLAGS");
        if let Some(f) = rustflags {
            cmd.env("RUSTFLAGS", f);
        }
        let out = run(&mut cmd);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let a = fingerprint(None);
    assert!(a.len() == 64 && a.bytes().all(|c| c.is_ascii_hexdigit()), "{a:?}");
    assert_eq!(fingerprint(None), a);
    assert_ne!(fingerprint(Some("-Ctarget-cpu=native")), a);
}

#[test]
fn the_unit_is_hardened_and_matches_the_package() {
    let deb = deb_metadata();
    let units = &deb["systemd-units"];
    let dir = units["unit-scripts"].as_str().unwrap_or("");
    let name = units["unit-name"].as_str().unwrap_or("");
    let unit_rel = format!("{dir}{name}.service");
    let unit = read(&unit_rel);
    let has = |line: &str| unit.lines().any(|l| l.trim() == line);
    for line in [
        "ExecStartPre=/usr/bin/sipguard check-config /etc/sipguard/sipguard.toml",
        "ExecStart=/usr/bin/sipguard --config /etc/sipguard/sipguard.toml",
        "User=sipguard",
        "Group=sipguard",
        "StateDirectory=sipguard",
        "LogsDirectory=sipguard",
        "RestartPreventExitStatus=2",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
    ] {
        assert!(has(line), "{unit_rel} lacks `{line}`");
    }
    // systemd accepts it, with the binary where the package puts it (here: the one built).
    if Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let copy = tmp.path().join("sipguard.service");
        std::fs::write(&copy, unit.replace("/usr/bin/sipguard", BIN)).unwrap_or_else(|e| panic!("{e}"));
        let out = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
        assert!(out.status.success() && out.stderr.is_empty(), "systemd-analyze verify: {}", text(&out));
    } else {
        eprintln!("SKIP: systemd-analyze not found: the unit was not verified");
    }
}

#[test]
fn the_shipped_config_passes_check_config_alone() {
    // As installed: /etc/sipguard/sipguard.toml with nothing beside it.
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let conf = tmp.path().join("sipguard.toml");
    std::fs::copy(root().join("config.example.toml"), &conf).unwrap_or_else(|e| panic!("{e}"));
    let out = run(Command::new(BIN).arg("check-config").arg(&conf));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
