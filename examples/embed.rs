//! The screening engine inside another Rust program (a SIP server of its own, a dialer):
//! build it from a sipguard config, screen each new call before placing it, and give the
//! charge back for a call that could not be placed.
//!
//! ```text
//! cargo run --example embed -- path/to/sipguard.toml +12125550100 +13125550199 [SOURCE_IP] [ACCOUNT]
//! ```
//!
//! Without arguments it writes a small config to a temp dir (account `acme`, owning
//! +12125550100, one DNC entry, two calls a day) and screens a few calls against it.
use sipguard::engine::{CallFacts, Engine};
use std::time::SystemTime;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [config, caller, callee, rest @ ..] = args.as_slice() {
        let engine = Engine::from_config_file(config.as_ref())?;
        let facts = CallFacts {
            source_ip: rest.first().map_or("127.0.0.1", String::as_str).parse()?,
            account: rest.get(1).cloned(),
            caller: caller.clone(),
            callee: callee.clone(),
            call_id: format!("embed-{}", std::process::id()),
            ..CallFacts::default()
        };
        let d = engine.dry_run(&facts, SystemTime::now());
        println!("{}", describe(&d));
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("sipguard-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("owned.csv"), "account,number\nacme,+12125550100\n")?;
    std::fs::write(dir.join("dnc.txt"), "+13125550111\n")?;
    let config = dir.join("sipguard.toml");
    std::fs::write(
        &config,
        "[screening]\ncaller_id_numbers = \"owned.csv\"\n[screening.quota]\nper_day = 2\n\
         [[account]]\nid = \"acme\"\nsources = [\"192.0.2.0/24\"]\n\
         [[dnc.list]]\nname = \"national\"\npath = \"dnc.txt\"\n",
    )?;
    let engine = Engine::from_config_file(&config)?;
    let now = SystemTime::now();
    let call = |callee: &str, n: u32| CallFacts {
        source_ip: "192.0.2.7".parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
        caller: "+12125550100".into(),
        callee: callee.into(),
        call_id: format!("call-{n}"),
        ..CallFacts::default()
    };
    println!("dry run:        {}", describe(&engine.dry_run(&call("+13125550199", 0), now)));
    println!("DNC callee:     {}", describe(&engine.screen(&call("+13125550111", 1), now)));
    let first = engine.screen(&call("+13125550199", 2), now);
    println!("first call:     {}", describe(&first));
    println!("second call:    {}", describe(&engine.screen(&call("+13125550198", 3), now)));
    println!("third call:     {}", describe(&engine.screen(&call("+13125550197", 4), now)));
    // The first call's trunk was down: it was never placed, so it gives its place back.
    engine.release(&first);
    println!("after release:  {}", describe(&engine.screen(&call("+13125550197", 5), now)));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn describe(d: &sipguard::screen::Decision) -> String {
    let account = d.account.as_deref().unwrap_or("-");
    match (d.reject(), d.rule) {
        (Some((code, reason)), rule) => {
            format!("reject {code} {reason} (rule {}, account {account})", rule.map_or("-", |r| r.name()))
        }
        (None, Some(rule)) if d.would_reject => format!("pass, report mode: {} would reject", rule.name()),
        (None, _) => format!("pass (account {account})"),
    }
}
