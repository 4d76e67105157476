//! Benchmark of `/metrics` encoding alone (not a test): a store of N instances, each
//! with a recorded outcome, encoded repeatedly in-process.
//!
//! `cargo run --release --example bench_metrics -- [instances=10000] [rounds=20]`

use std::time::{Duration, Instant, SystemTime};

use coexistd::config::Config;
use coexistd::kinds::{FailureReason, Outcome, Phase};
use coexistd::run::results::Store;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(10_000, |s| s.parse().expect("instances"));
    let rounds: usize = args.next().map_or(20, |s| s.parse().expect("rounds"));
    let pools = n / 20;
    let mut t = String::from("[agent]\nlabels = { site = \"bench\" }\n");
    for p in 0..pools {
        t.push_str(&format!(
            "[[pools]]\nname = \"pool{p}\"\nrole = \"new\"\nfqdn = \"pool{p}.bench.test\"\n"
        ));
    }
    for c in 0..20 {
        t.push_str(&format!("[[checks]]\nname = \"check{c}\"\nkind = \"tcp\"\nport = {}\n", 5000 + c));
    }
    let store = Store::new(Config::parse(&t, "bench").unwrap());
    let g = store.current();
    for (i, slot) in g.slots.iter().enumerate() {
        let phases =
            vec![(Phase::Resolve, Duration::from_micros(300)), (Phase::Connect, Duration::from_micros(80))];
        let o = if i % 10 == 0 {
            Outcome::fail(FailureReason::Refused, "connect: refused", phases)
        } else {
            Outcome::pass(phases)
        };
        slot.record(o, Duration::from_micros(400), SystemTime::now());
    }
    let mut times = Vec::new();
    let mut len = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        // As the server does: chunks are handed on and dropped once written.
        len = 0;
        coexistd::output::metrics::encode_chunks(&store, false, |chunk| {
            len += chunk.len();
            true
        })
        .unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "{} instances: /metrics encode median {:.1} ms, min {:.1} ms, {:.1} MiB",
        g.slots.len(),
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        len as f64 / 1048576.0
    );
}
