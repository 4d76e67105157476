//! `sip_presence` against two real Kamailio pools from Debian's packages
//! (`kamailio-presence-modules`: `presence` and `presence_xml`, subscriptions and
//! presentities in memory), each the registrar and presence server of the users homed
//! on it, relaying SUBSCRIBEs and MESSAGEs for users homed on the other pool there and
//! the NOTIFYs back along the Record-Route set. The pools grant subscriptions 30 s at
//! most: the probes must keep them alive past that. Two users per pool, one over TLS and one over UDP, as in `interop.rs`.
//! The new pool stops relaying presence (SUBSCRIBE and NOTIFY) to and from the legacy
//! pool while IM keeps flowing: exactly the cross-pool presence cells go down.

use crate::common;

use std::time::Duration;

use common::two_pools::{TwoPools, POOLS};
use common::{sample, Agent, Kamailio, KamailioTls};

const OCS_IP: &str = "127.0.55.1";
const LYNC_IP: &str = "127.0.55.2";
const ZONE: &str = "ocspool A 127.0.55.1\nlyncpool A 127.0.55.2\n";
/// (user, home, password): alice and adam on the legacy pool, bob and beth on the new.
const USERS: [(&str, &str, &str); 4] = [
    ("alice", "ocs", "alice-Pres-Secret-19c2"),
    ("adam", "ocs", "adam-Pres-Secret-5a0e"),
    ("bob", "lync", "bob-Pres-Secret-e7d1"),
    ("beth", "lync", "beth-Pres-Secret-0b93"),
];

/// A pool: registrar and presence server for the users homed here, relaying requests
/// for the others' to the other pool (presence only while `cfg=>presence` is "on").
fn pool(name: &str, port: u16, tls_port: u16, tls: KamailioTls<'_>) -> Kamailio {
    let mut init = String::new();
    for (u, home, pw) in USERS {
        init.push_str(&format!("  $sht(users=>{u}) = \"{pw}\";\n  $sht(homes=>{u}) = \"{home}\";\n"));
    }
    let ip = if name == "ocs" { OCS_IP } else { LYNC_IP };
    let other_ip = if name == "ocs" { LYNC_IP } else { OCS_IP };
    let prelude = format!(
        "loadmodule \"tm.so\"\nloadmodule \"pv.so\"\nloadmodule \"textops.so\"\nloadmodule \"siputils.so\"\n\
         loadmodule \"rr.so\"\nloadmodule \"usrloc.so\"\nloadmodule \"registrar.so\"\nloadmodule \"auth.so\"\n\
         loadmodule \"htable.so\"\nloadmodule \"ctl.so\"\nloadmodule \"presence.so\"\nloadmodule \"presence_xml.so\"\n\
         modparam(\"usrloc\", \"db_mode\", 0)\n\
         modparam(\"registrar\", \"max_expires\", 60)\n\
         modparam(\"presence\", \"subs_db_mode\", 0)\nmodparam(\"presence\", \"publ_cache\", 2)\n\
         modparam(\"presence\", \"max_expires\", 30)\n\
         modparam(\"presence\", \"server_address\", \"sip:{ip}:{port}\")\n\
         modparam(\"presence_xml\", \"force_active\", 1)\n\
         modparam(\"htable\", \"htable\", \"users=>size=4;\")\n\
         modparam(\"htable\", \"htable\", \"homes=>size=4;\")\n\
         modparam(\"htable\", \"htable\", \"cfg=>size=2;\")\n\
         modparam(\"ctl\", \"binrpc\", \"unix:{{dir}}/ctl.sock\")\n\
         modparam(\"auth\", \"algorithm\", \"SHA-256\")\n\
         event_route[htable:mod-init] {{\n{init}  $sht(cfg=>presence) = \"on\";\n}}\n"
    );
    let routes = format!(
        "request_route {{\n\
           if (has_totag()) {{\n\
             if (loose_route()) {{\n\
               if (is_method(\"SUBSCRIBE|NOTIFY\") && $sht(cfg=>presence) == \"off\"\n\
                   && ($si == \"{other_ip}\" || $du =~ \"{other_ip}\" || $ru =~ \"{other_ip}\")) {{\n\
                 sl_send_reply(\"503\", \"Presence Relay Off\");\n\
                 exit;\n\
               }}\n\
               t_relay();\n\
               exit;\n\
             }}\n\
             if (is_method(\"SUBSCRIBE\")) {{\n\
               if ($si == \"{other_ip}\" && $sht(cfg=>presence) == \"off\") {{\n\
                 sl_send_reply(\"503\", \"Presence Relay Off\");\n\
                 exit;\n\
               }}\n\
               handle_subscribe();\n\
               exit;\n\
             }}\n\
             if (is_method(\"ACK\")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}\n\
             sl_send_reply(\"404\", \"Not Here\");\n\
             exit;\n\
           }}\n\
           if (is_method(\"ACK\")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}\n\
           if (is_method(\"REGISTER\")) {{\n\
             $var(home) = $sht(homes=>$tU);\n\
             if ($var(home) != \"{name}\") {{\n\
               append_to_reply(\"Contact: <sip:$var(home)pool.contoso.test:{tls_port};transport=tls>\\r\\n\");\n\
               sl_send_reply(\"301\", \"Redirect request to Home Server\");\n\
               exit;\n\
             }}\n\
             if (!pv_auth_check(\"$fd\", \"$sht(users=>$fU)\", \"0\", \"1\")) {{\n\
               auth_challenge(\"$fd\", \"1\");\n\
               exit;\n\
             }}\n\
             if (!save(\"location\")) {{ sl_reply_error(); }}\n\
             exit;\n\
           }}\n\
           if ($si != \"{other_ip}\") {{\n\
             if (!pv_auth_check(\"$fd\", \"$sht(users=>$fU)\", \"0\", \"1\")) {{\n\
               auth_challenge(\"$fd\", \"1\");\n\
               exit;\n\
             }}\n\
             consume_credentials();\n\
           }}\n\
           $var(home) = $sht(homes=>$rU);\n\
           if ($var(home) == $null) {{ sl_send_reply(\"404\", \"Not Found\"); exit; }}\n\
           if ($si == \"{other_ip}\" && is_method(\"SUBSCRIBE\") && $sht(cfg=>presence) == \"off\") {{\n\
             sl_send_reply(\"503\", \"Presence Relay Off\");\n\
             exit;\n\
           }}\n\
           if ($var(home) == \"{name}\") {{\n\
             if (is_method(\"PUBLISH\")) {{ handle_publish(); exit; }}\n\
             if (is_method(\"SUBSCRIBE\")) {{ handle_subscribe(); exit; }}\n\
             if (!lookup(\"location\")) {{ sl_send_reply(\"480\", \"Temporarily Unavailable\"); exit; }}\n\
             record_route();\n\
             t_relay();\n\
             exit;\n\
           }}\n\
           if (is_method(\"SUBSCRIBE|PUBLISH\") && $sht(cfg=>presence) == \"off\") {{\n\
             sl_send_reply(\"503\", \"Presence Relay Off\");\n\
             exit;\n\
           }}\n\
           record_route();\n\
           $du = \"sip:{other_ip}:{port}\";\n\
           t_relay();\n\
         }}\n"
    );
    Kamailio::start_custom(ip, port, tls_port, Some(tls), &format!("pool {name}"), &prelude, &routes)
}

fn config(lab: &TwoPools) -> String {
    let mut users = String::new();
    for (i, (u, home, pw)) in USERS.iter().enumerate() {
        let f = lab.password_file(u, pw);
        let pool = if *home == "ocs" { POOLS[0] } else { POOLS[1] };
        let (transport, p) = if i % 2 == 0 { ("tls", lab.tls_port) } else { ("udp", lab.port) };
        users.push_str(&format!(
            "[[users]]\nname = \"{u}\"\nuri = \"sip:{u}@contoso.test\"\npool = \"{pool}\"\n\
             password_file = \"{}\"\ntransport = \"{transport}\"\nport = {p}\n",
            f.display()
        ));
    }
    lab.config_head()
        + &format!(
            "{users}\n[[checks]]\nname = \"im\"\nkind = \"sip_im\"\n\
             [[checks]]\nname = \"presence\"\nkind = \"sip_presence\"\n"
        )
}

fn cell(m: &str, kind: &str, from: &str, to: &str) -> Option<f64> {
    sample(m, "coexist_interop_up", &[("kind", kind), ("from_pool", from), ("to_pool", to)])
}

fn all_up(m: &str, kind: &str) -> bool {
    POOLS.iter().all(|f| POOLS.iter().all(|t| cell(m, kind, f, t) == Some(1.0)))
}

#[test]
fn presence_published_on_one_pool_is_seen_on_the_other_and_a_broken_presence_relay_shows() {
    let lab = TwoPools::new("Contoso Presence Root", ZONE);
    let (port, tls_port) = (lab.port, lab.tls_port);
    let ocs = pool("ocs", port, tls_port, lab.tls(0));
    let lync = pool("lync", port, tls_port, lab.tls(1));
    let agent = Agent::start(&config(&lab));

    // 1. Every pair sees the other's presence, both directions, over TLS and UDP.
    let m = agent.wait_metrics(Duration::from_secs(30), |m| all_up(m, "sip_presence") && all_up(m, "sip_im"));
    for (from, to) in [("alice", "beth"), ("bob", "adam"), ("adam", "alice"), ("beth", "bob")] {
        let target = format!("sip:{to}@contoso.test");
        let d = sample(
            &m,
            "coexist_presence_delivery_seconds",
            &[("check", "presence"), ("user", from), ("target", target.as_str())],
        );
        assert!(d.is_some_and(|d| d > 0.0 && d < 0.9), "{from} -> {to}: {d:?}\n{}", ocs.log());
    }
    // Runs go on passing past the 30 s the pools grant: the subscriptions are refreshed.
    std::thread::sleep(Duration::from_secs(35));
    let m = agent.wait_metrics(Duration::from_secs(5), |m| all_up(m, "sip_presence"));
    let pairs = m
        .lines()
        .filter(|l| l.starts_with("coexist_probe_success{") && l.contains("kind=\"sip_presence\""))
        .count();
    assert_eq!(pairs, 12, "{m}");

    // 2. The new pool stops relaying presence to and from the legacy pool: exactly the
    //    cross-pool presence cells go down; IM and presence within a pool stay up.
    lync.kamcmd(&["htable.sets", "cfg", "presence", "off"]);
    let m = agent.wait_metrics(Duration::from_secs(20), |m| {
        cell(m, "sip_presence", POOLS[0], POOLS[1]) == Some(0.0)
            && cell(m, "sip_presence", POOLS[1], POOLS[0]) == Some(0.0)
    });
    assert_eq!(cell(&m, "sip_presence", POOLS[0], POOLS[0]), Some(1.0), "{m}");
    assert_eq!(cell(&m, "sip_presence", POOLS[1], POOLS[1]), Some(1.0), "{m}");
    assert!(all_up(&m, "sip_im"), "IM is unaffected: {m}");
    assert_eq!(
        sample(
            &m,
            "coexist_interop_untested",
            &[("kind", "sip_presence"), ("from_pool", POOLS[0]), ("to_pool", POOLS[1])]
        ),
        Some(0.0)
    );
    let (_, status) = agent.get("/api/v1/status");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let cross = v["interop"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "sip_presence" && c["from_pool"] == POOLS[0] && c["to_pool"] == POOLS[1])
        .unwrap()
        .clone();
    assert_eq!(cross["state"], "down", "{cross}");
    let failures = cross["failures"].to_string();
    assert!(failures.contains("503") || failures.contains("not_delivered"), "{failures}");

    // 3. Relaying again: the subscriptions are set up anew and every cell recovers.
    lync.kamcmd(&["htable.sets", "cfg", "presence", "on"]);
    agent.wait_metrics(Duration::from_secs(30), |m| all_up(m, "sip_presence") && all_up(m, "sip_im"));
    drop((ocs, lync));
}
