//! DNC engine at scale (driven by bench/dnc_scale.sh):
//!   dnc_scale gen N OUT SEED      N random US numbers, one `+1...` a line, unsorted
//!   dnc_scale build SNAP INPUT    `sipguard dnc build --out SNAP INPUT`
//!   dnc_scale serve SNAP N SEED LOOKUPS
//!       load the snapshot as the proxy does, report time to serving and resident memory,
//!       then time `Dnc::check` on the first members of `gen N SEED` (hits) and on random
//!       numbers of the same space (mostly misses). Prints one JSON line.
//!   dnc_scale vers SNAP N SEED LOOKUPS
//!       the same numbers and probes in `vers_vecs::EliasFanoVec`, for comparison.
use sipguard::config::dnc::{DncConfig, ListConfig};
use sipguard::dnc_cli::{DncCommand, run};
use sipguard::screen::dnc::Dnc;
use std::io::Write;
use std::time::Instant;

/// splitmix64, so `serve` can regenerate the members `gen` wrote.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// +1 NPA NXX XXXX with NPA and NXX in 200-999: the space the FTC registry lives in.
    fn us_number(&mut self) -> u64 {
        let r = self.next();
        let npa = 200 + r % 800;
        let nxx = 200 + (r >> 16) % 800;
        let line = (r >> 32) % 10_000;
        10_000_000_000 + npa * 10_000_000 + nxx * 10_000 + line
    }
}

/// CPU time of this process (user + system), from /proc: on a shared machine wall time
/// also counts the time other processes held the CPU.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = after_comm.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `) state`.
    let ticks = fields.get(10).copied().unwrap_or(0.0) + fields.get(11).copied().unwrap_or(0.0);
    ticks / 100.0
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "gen" => {
            let (n, seed): (u64, u64) = (arg(1).parse()?, arg(3).parse()?);
            let mut out = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(arg(2))?);
            let mut rng = Rng(seed);
            for _ in 0..n {
                writeln!(out, "+{}", rng.us_number())?;
            }
            out.flush()?;
        }
        "build" => {
            let cmd = DncCommand::Build {
                out: arg(1).into(),
                country: None,
                strict: false,
                deltas: None,
                inputs: vec![arg(2).into()],
            };
            std::process::exit(run(cmd)?);
        }
        "serve" => {
            let (members, seed, lookups): (u64, u64, u64) = (arg(2).parse()?, arg(3).parse()?, arg(4).parse()?);
            let rss_before = rss_kib("VmRSS:");
            let start = Instant::now();
            let cfg = DncConfig {
                lists: vec![ListConfig {
                    name: "national".into(),
                    path: arg(1).into(),
                    response: "dnc".into(),
                    accounts: None,
                    deltas: None,
                    strict: false,
                    consent_applies: true,
                }],
                ..DncConfig::default()
            };
            let dnc = Dnc::load(&cfg)?;
            let serving = start.elapsed();
            let rss = rss_kib("VmRSS:");
            let s = dnc.summary().remove(0);
            // Hits: the first members gen wrote (regenerated from the seed).
            let mut rng = Rng(seed);
            let hits: Vec<u64> = (0..lookups.min(members)).map(|_| rng.us_number()).collect();
            let mut rng = Rng(seed ^ 0x5555);
            let randoms: Vec<u64> = (0..lookups).map(|_| rng.us_number()).collect();
            let time = |probes: &[u64]| {
                let (t, cpu) = (Instant::now(), cpu_seconds());
                let found = probes.iter().filter(|&&n| dnc.check(n, "acct0001", None).is_some()).count();
                let per = |x: f64| x * 1e9 / probes.len().max(1) as f64;
                (found, per(t.elapsed().as_secs_f64()), per(cpu_seconds() - cpu))
            };
            let (hit_found, hit_ns, hit_cpu_ns) = time(&hits);
            let (rand_found, rand_ns, rand_cpu_ns) = time(&randoms);
            println!(
                "{{\"numbers\": {}, \"snapshot_bytes\": {}, \"bytes_per_number\": {:.3}, \"time_to_serving_s\": {:.3}, \
                 \"rss_before_load_mib\": {:.1}, \"rss_serving_mib\": {:.1}, \"hit_probes\": {}, \"hits_found\": {hit_found}, \
                 \"hit_ns_per_lookup\": {hit_ns:.0}, \"hit_cpu_ns_per_lookup\": {hit_cpu_ns:.0}, \"random_probes\": {}, \"random_found\": {rand_found}, \
                 \"random_ns_per_lookup\": {rand_ns:.0}, \"random_cpu_ns_per_lookup\": {rand_cpu_ns:.0}, \"lookups_per_s_random\": {:.0}, \"lookups_per_cpu_s_random\": {:.0}, \"load_avg\": \"{}\"}}",
                s.count,
                s.bytes,
                s.bytes as f64 / s.count.max(1) as f64,
                serving.as_secs_f64(),
                rss_before as f64 / 1024.0,
                rss as f64 / 1024.0,
                hits.len(),
                randoms.len(),
                1e9 / rand_ns,
                1e9 / rand_cpu_ns,
                std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
            );
            anyhow::ensure!(hit_found == hits.len(), "a member was not found");
        }
        "vers" => {
            let (members, seed, lookups): (u64, u64, u64) = (arg(2).parse()?, arg(3).parse()?, arg(4).parse()?);
            let snap = sipguard::screen::dnc::snapshot::Snapshot::open(std::path::Path::new(&arg(1)))
                .map_err(anyhow::Error::msg)?;
            let values: Vec<u64> = snap.set().iter().collect();
            // sipguard's set on the same random probes, without the `Dnc::check` wrapper.
            let mut rng = Rng(seed ^ 0x5555);
            let randoms: Vec<u64> = (0..lookups).map(|_| rng.us_number()).collect();
            let cpu = cpu_seconds();
            let set = snap.set();
            let set_found = randoms.iter().filter(|&&n| set.contains(n)).count();
            let set_cpu_ns = (cpu_seconds() - cpu) * 1e9 / lookups.max(1) as f64;
            drop(snap);
            let t = Instant::now();
            let ef = vers_vecs::EliasFanoVec::from_slice(&values);
            let build = t.elapsed();
            drop(values);
            let mut rng = Rng(seed);
            let hits: Vec<u64> = (0..lookups.min(members)).map(|_| rng.us_number()).collect();
            let time = |probes: &[u64]| {
                let (t, cpu) = (Instant::now(), cpu_seconds());
                let found = probes.iter().filter(|&&n| ef.predecessor(n) == Some(n)).count();
                let per = |x: f64| x * 1e9 / probes.len().max(1) as f64;
                (found, per(t.elapsed().as_secs_f64()), per(cpu_seconds() - cpu))
            };
            let (hit_found, hit_ns, hit_cpu_ns) = time(&hits);
            let (rand_found, rand_ns, rand_cpu_ns) = time(&randoms);
            println!(
                "{{\"vers_vecs_numbers\": {}, \"heap_bytes\": {}, \"bytes_per_number\": {:.3}, \"build_s\": {:.1}, \
                 \"hits_found\": {hit_found}, \"hit_ns_per_lookup\": {hit_ns:.0}, \"hit_cpu_ns_per_lookup\": {hit_cpu_ns:.0}, \"random_found\": {rand_found}, \
                 \"random_ns_per_lookup\": {rand_ns:.0}, \"random_cpu_ns_per_lookup\": {rand_cpu_ns:.0}, \"sipguard_set_found\": {set_found}, \"sipguard_set_cpu_ns_per_lookup\": {set_cpu_ns:.0}}}",
                ef.len(),
                ef.heap_size(),
                ef.heap_size() as f64 / ef.len().max(1) as f64,
                build.as_secs_f64()
            );
        }
        _ => anyhow::bail!("usage: dnc_scale gen N OUT SEED | build SNAP INPUT | serve SNAP N SEED LOOKUPS"),
    }
    Ok(())
}
