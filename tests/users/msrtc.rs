//! `sip_presence` in Microsoft's dialect against the demo lab's two pools (run in this
//! process; their presence servers speak what OCS 2007 R2 and Lync 2013 pools do, as
//! `src/lab/presence.rs` describes): beth, homed on the new pool, publishes her note
//! with a category publication (`SERVICE`); alice, on the legacy pool, watches with a
//! batched SUBSCRIBE to her own URI, is told to `resubscribe` at the new pool's
//! `poolFqdn`, subscribes there through her own connection, and sees the note.
//! `coexistd check`, starting afresh, publishes with versions the pool has passed:
//! `409`, the current versions read from the fault, published again.

use crate::common;

use std::time::Duration;

use coexistd::lab::Lab;
use common::{sample, Agent};

/// The lab's configuration with `check` as its only check (`{listen}` left for the
/// agent's address).
fn config(lab: &Lab, check: &str) -> String {
    // invariant: a literal address, replaced by the agent's own below.
    let full = lab.config_text("127.0.0.1:1".parse().unwrap()).replace("127.0.0.1:1", "{listen}");
    let head = full.split("[[checks]]").next().unwrap().replace("interval = \"10s\"", "interval = \"3s\"");
    let users = full.split("# Test users").nth(1).unwrap().split("# Each registers").next().unwrap();
    format!("{head}# Test users{users}{check}")
}

#[test]
fn presence_in_microsofts_dialect_resubscribes_to_the_contacts_pool_and_recovers_stale_versions() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lab = rt.block_on(Lab::start()).expect("the lab's addresses (is `coexistd demo` running?)");
    let check =
        "[[checks]]\nname = \"presence\"\nkind = \"sip_presence\"\nfrom = [\"beth\"]\nto = [\"alice\"]\n";
    let text = config(&lab, check);
    assert!(text.contains("presence = \"msrtc\""), "the lab's pools speak Microsoft's dialect");
    let target = [("check", "presence"), ("user", "beth"), ("target", "sip:alice@contoso.test")];
    let passed = |m: &str| sample(m, "coexist_probe_success", &target) == Some(1.0);

    let mut first = Agent::start(&text);
    let m = first.wait_metrics(Duration::from_secs(15), passed);
    assert!(sample(&m, "coexist_presence_delivery_seconds", &target).is_some_and(|d| d > 0.0 && d < 1.0));
    // A first run as it goes on the wire: the batched SUBSCRIBE to alice's own URI and,
    // after the legacy pool's resubscribe naming the new pool's poolFqdn (a NOTIFY,
    // which the trace does not show), the SUBSCRIBE there.
    // `coexistd check` registers the users afresh: its trace has the whole exchange. The
    // agent stops first (its publications must not race the check's).
    first.child.kill().unwrap();
    let _ = first.child.wait();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coexistd"))
        .args(["check", "--trace", "presence", "--config"])
        .arg(&first.config)
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for needle in [
        "SUBSCRIBE sip:alice@contoso.test SIP/2.0",
        "Require: adhoclist, categoryList",
        "Content-Type: application/msrtc-adrl-categorylist+xml",
        "SUBSCRIBE sip:lyncpool.contoso.test SIP/2.0",
        "SERVICE sip:beth@contoso.test SIP/2.0",
        "Content-Type: application/msrtc-category-publish+xml",
    ] {
        assert!(trace.contains(needle), "{needle:?} not in the trace:\n{trace}");
    }
    // That check knew no versions while the pool had moved past 0 (the agent's runs):
    // 409, the current versions read from the fault, published again, passed.
    assert!(trace.contains("received 409 SERVICE"), "{trace}");
    assert!(out.status.success(), "{trace}");
    drop(lab);
}
