//! `sip_call` against the two Kamailio pools of `interop.rs` (registrar, digest, `tm`,
//! `rr`, INVITEs for users homed on the other pool relayed there): every ordered pair of
//! the four users calls the other — INVITE with an audio offer, 407 answered, 180, 200,
//! ACK, BYE through both pools — and the set-up time and post-dial delay are exported;
//! then the new pool lets beth's phone ring without ever answering, and exactly the
//! calls to beth fail, `timeout` with "it rang (180) but nobody answered".

use crate::common;
use crate::interop::{config, pool};

use std::time::Duration;

use common::two_pools::{TwoPools, POOLS};
use common::{sample, Agent};

const ZONE: &str = "ocspool A 127.0.52.1\nlyncpool A 127.0.52.2\n";

fn calls(m: &str) -> Vec<(String, String, f64)> {
    m.lines()
        .filter(|l| l.starts_with("coexist_probe_success{") && l.contains("kind=\"sip_call\""))
        .map(|l| {
            let label = |k: &str| {
                let start = l.find(&format!(",{k}=\"")).map(|i| i + k.len() + 3).unwrap();
                l[start..].split('"').next().unwrap().to_owned()
            };
            (label("user"), label("target"), l.rsplit(' ').next().unwrap().parse().unwrap())
        })
        .collect()
}

#[test]
fn calls_are_set_up_both_ways_through_both_pools_and_an_unanswered_callee_shows() {
    let lab = TwoPools::new("Contoso Calls Root", ZONE);
    let (port, tls_port) = (lab.port, lab.tls_port);
    let _ocs = pool("ocs", port, tls_port, lab.tls(0));
    let lync = pool("lync", port, tls_port, lab.tls(1));
    let full = config(&lab);
    let text = full[..full.find("\n[[checks]]").unwrap()].to_owned()
        + "\n[[checks]]\nname = \"call\"\nkind = \"sip_call\"\ninterval = \"3s\"\ntimeout = \"2s\"\n";
    let agent = Agent::start(&text);
    let up = |m: &str| {
        POOLS.iter().all(|f| {
            POOLS.iter().all(|t| {
                sample(m, "coexist_interop_up", &[("kind", "sip_call"), ("from_pool", f), ("to_pool", t)])
                    == Some(1.0)
            })
        })
    };
    let m = agent.wait_metrics(Duration::from_secs(30), |m| up(m) && calls(m).len() == 12);
    assert!(calls(&m).iter().all(|c| c.2 == 1.0), "{m}");
    for (from, to) in [("alice", "bob"), ("bob", "alice"), ("adam", "beth"), ("beth", "adam")] {
        let target = format!("sip:{to}@contoso.test");
        let labels = [("check", "call"), ("user", from), ("target", target.as_str())];
        let setup = sample(&m, "coexist_call_setup_seconds", &labels);
        let pdd = sample(&m, "coexist_call_post_dial_delay_seconds", &labels);
        assert!(setup.is_some_and(|s| s > 0.0 && s < 1.0), "{from} -> {to}: {setup:?}");
        assert!(pdd.is_some_and(|p| p > 0.0 && p <= setup.unwrap()), "{from} -> {to}: {pdd:?}");
    }

    // beth's phone rings and nobody answers: the calls to her time out, saying so.
    lync.kamcmd(&["htable.sets", "cfg", "unanswered", "beth"]);
    let m = agent.wait_metrics(Duration::from_secs(20), |m| {
        calls(m).iter().filter(|c| c.2 == 0.0).count() == 3
            && calls(m).iter().all(|c| (c.2 == 0.0) == (c.1 == "sip:beth@contoso.test"))
    });
    let (_, status) = agent.get("/api/v1/status");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    for i in v["instances"].as_array().unwrap().iter().filter(|i| i["success"] == false) {
        assert_eq!(i["reason"], "timeout", "{i}");
        let detail = i["detail"].as_str().unwrap();
        assert!(detail.contains("it rang (180) but nobody answered"), "{detail}");
    }
    let cell = sample(
        &m,
        "coexist_interop_up",
        &[("kind", "sip_call"), ("from_pool", POOLS[0]), ("to_pool", POOLS[1])],
    );
    assert_eq!(cell, Some(0.0));
}
