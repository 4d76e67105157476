//! `sip_group_im` against the two Kamailio pools of `interop.rs`, the new pool also the
//! IM conference server of `conf.contoso.test` (Kamailio's `imc`, rooms in `db_text`),
//! the legacy pool relaying the conference's requests there: every ordered pair of the
//! four users meets in its own room (`#create`, `#join`, each answered with the user's
//! credentials) and the sender's message reaches the receiver as the conference's own
//! MESSAGE, whichever pool each is homed on; then the legacy pool stops relaying to the
//! new one, and every pair with a user homed on the legacy pool fails (its messages and
//! its joins no longer reach the conference) while the new pool's own cell stays UP.

use crate::common;
use crate::interop::{config, imc_tables, pool, pool_with};

use std::time::Duration;

use common::two_pools::{TwoPools, POOLS};
use common::{sample, Agent};

const ZONE: &str = "ocspool A 127.0.52.1\nlyncpool A 127.0.52.2\n";

fn cell(m: &str, from: &str, to: &str) -> Option<f64> {
    sample(m, "coexist_interop_up", &[("kind", "sip_group_im"), ("from_pool", from), ("to_pool", to)])
}

#[test]
fn pairs_meet_in_a_conference_room_on_the_new_pool_whichever_pool_they_are_homed_on() {
    let lab = TwoPools::new("Contoso Conference Root", ZONE);
    let (port, tls_port) = (lab.port, lab.tls_port);
    let db = imc_tables(lab.path());
    let ocs = pool("ocs", port, tls_port, lab.tls(0));
    let _lync = pool_with("lync", port, tls_port, lab.tls(1), Some(&db));
    let full = config(&lab);
    let text = full[..full.find("\n[[checks]]").unwrap()].to_owned()
        + "\n[[checks]]\nname = \"group\"\nkind = \"sip_group_im\"\nconference = \"conf.contoso.test\"\n\
           interval = \"2s\"\ntimeout = \"1500ms\"\n";
    let agent = Agent::start(&text);
    let all_up = |m: &str| POOLS.iter().all(|f| POOLS.iter().all(|t| cell(m, f, t) == Some(1.0)));
    let m = agent.wait_metrics(Duration::from_secs(30), all_up);
    let d = sample(
        &m,
        "coexist_group_im_delivery_seconds",
        &[("check", "group"), ("user", "alice"), ("target", "sip:bob@contoso.test")],
    );
    assert!(d.is_some_and(|d| d > 0.0 && d < 1.0), "{d:?}");

    // The legacy pool stops relaying: its users' messages never reach the conference.
    ocs.kamcmd(&["htable.sets", "cfg", "relay", "off"]);
    let _ = ocs;
    let m = agent.wait_metrics(Duration::from_secs(20), |m| {
        cell(m, POOLS[0], POOLS[0]) == Some(0.0)
            && cell(m, POOLS[0], POOLS[1]) == Some(0.0)
            && cell(m, POOLS[1], POOLS[0]) == Some(0.0)
    });
    assert_eq!(cell(&m, POOLS[1], POOLS[1]), Some(1.0), "{m}");
}
