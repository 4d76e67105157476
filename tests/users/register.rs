//! `sip_register` against two real Kamailio registrars from Debian's packages acting as
//! the legacy and the new pool of one SIP domain: digest authentication with passwords
//! from `htable`, `registrar`/`usrloc` in memory, and a REGISTER for a user homed on the
//! other pool answered `301` with that pool in `Contact` (as Lync and OCS registrars
//! redirect). Over TLS and UDP. Homing and passwords are changed while the test runs
//! with `kamcmd`, as an operator moves users between pools.
//!
//! The legacy registrar challenges with Digest MD5 (Kamailio's default), the new one
//! with SHA-256: MD5 is answered only for a user that allows it. A registrar that
//! redirects a user to a host of no pool, over UDP from TLS, gets `policy_refused` and
//! not a single byte at that host (the password-leak reproduction: a `301` to
//! `127.0.99.3` over UDP, whose `401` asked for MD5 in realm `attacker.example`).

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::two_pools::TwoPools;
use common::{sample, Agent, Kamailio, KamailioTls};

const OCS_IP: &str = "127.0.51.1";
const LYNC_IP: &str = "127.0.51.2";
/// `rebind` resolves to the new pool's address but is no pool's name: a redirect to it
/// is refused (a name's addresses can change between the check and the connect).
const ZONE: &str = "ocspool A 127.0.51.1\nlyncpool A 127.0.51.2\nrebind A 127.0.51.2\n";
/// Test passwords: every output of the agent is searched for them.
const ALICE_PW: &str = "alice-Secret-7c1e";
const BOB_PW: &str = "bob-Secret-93fa";
const CAROL_PW: &str = "carol-Secret-0d2b";
const DAVE_PW: &str = "dave-Secret-55e1";
const ERIN_PW: &str = "erin-Secret-a9f0";
const FRANK_PW: &str = "frank-Secret-3b7d";
/// The host a hostile redirect names: no pool's.
const ATTACKER_IP: &str = "127.0.99.3";

/// A registrar for `pool`: users homed elsewhere get 301 to their home pool.
fn registrar(pool: &str, port: u16, tls_port: u16, attacker_port: u16, tls: KamailioTls<'_>) -> Kamailio {
    // The new pool speaks SHA-256; the legacy one Kamailio's default, MD5.
    let algorithm = if pool == "lync" { "modparam(\"auth\", \"algorithm\", \"SHA-256\")\n" } else { "" };
    let prelude = format!(
        "loadmodule \"tm.so\"\nloadmodule \"pv.so\"\nloadmodule \"textops.so\"\nloadmodule \"usrloc.so\"\n\
         loadmodule \"registrar.so\"\nloadmodule \"auth.so\"\nloadmodule \"htable.so\"\nloadmodule \"ctl.so\"\n\
         modparam(\"usrloc\", \"db_mode\", 0)\n\
         modparam(\"htable\", \"htable\", \"users=>size=4;\")\n\
         modparam(\"htable\", \"htable\", \"homes=>size=4;\")\n\
         modparam(\"htable\", \"htable\", \"routes=>size=4;\")\n\
         modparam(\"ctl\", \"binrpc\", \"unix:{{dir}}/ctl.sock\")\n{algorithm}\
         event_route[htable:mod-init] {{\n\
           $sht(users=>alice) = \"{ALICE_PW}\";\n  $sht(users=>bob) = \"{BOB_PW}\";\n  $sht(users=>carol) = \"{CAROL_PW}\";\n\
           $sht(users=>dave) = \"{DAVE_PW}\";\n  $sht(users=>erin) = \"{ERIN_PW}\";\n\
           $sht(homes=>alice) = \"ocs\";\n  $sht(homes=>bob) = \"lync\";\n  $sht(homes=>carol) = \"lync\";\n\
           $sht(homes=>dave) = \"ocs\";\n  $sht(homes=>erin) = \"evil\";\n  $sht(homes=>frank) = \"rebind\";\n\
           $sht(users=>frank) = \"{FRANK_PW}\";\n\
           $sht(routes=>rebind) = \"sip:rebind.contoso.test:{tls_port};transport=tls\";\n\
           $sht(routes=>evil) = \"sip:{ATTACKER_IP}:{attacker_port};transport=udp\";\n\
           $sht(routes=>ocs) = \"sip:ocspool.contoso.test:{tls_port};transport=tls\";\n\
           $sht(routes=>lync) = \"sip:lyncpool.contoso.test:{tls_port};transport=tls\";\n\
         }}\n"
    );
    let routes = format!(
        "request_route {{\n\
           if (is_method(\"REGISTER\")) {{\n\
             $var(home) = $sht(homes=>$tU);\n\
             if ($var(home) != \"{pool}\") {{\n\
               append_to_reply(\"Contact: <$sht(routes=>$var(home))>\\r\\n\");\n\
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
           sl_send_reply(\"404\", \"Not Found\");\n\
         }}\n"
    );
    let ip = if pool == "ocs" { OCS_IP } else { LYNC_IP };
    Kamailio::start_custom(ip, port, tls_port, Some(tls), &format!("registrar {pool}"), &prelude, &routes)
}

fn config(lab: &TwoPools, alice_pool: &str) -> String {
    for (name, pw) in
        [("alice", ALICE_PW), ("bob", BOB_PW), ("dave", DAVE_PW), ("erin", ERIN_PW), ("frank", FRANK_PW)]
    {
        lab.password_file(name, pw);
    }
    lab.config_head()
        + &format!(
            r#"[[users]]
name = "alice"
uri = "sip:alice@contoso.test"
pool = "{alice_pool}"
password_file = "{dir}/alice.pass"
allow_md5 = true
[[users]]
name = "bob"
uri = "sip:bob@contoso.test"
pool = "lync2013"
password_file = "{dir}/bob.pass"
[[users]]
name = "carol"
uri = "sip:carol@contoso.test"
pool = "lync2013"
transport = "udp"
password_env = "COEXISTD_TEST_CAROL_PASSWORD"
[[users]]
name = "dave"
uri = "sip:dave@contoso.test"
pool = "ocs2007r2"
password_file = "{dir}/dave.pass"
[[users]]
name = "erin"
uri = "sip:erin@contoso.test"
pool = "lync2013"
password_file = "{dir}/erin.pass"
[[users]]
name = "frank"
uri = "sip:frank@contoso.test"
pool = "lync2013"
password_file = "{dir}/frank.pass"
[[checks]]
name = "register"
kind = "sip_register"
"#,
            dir = lab.path().display(),
        )
}

#[test]
fn test_users_register_are_found_where_they_are_homed_and_move_between_pools() {
    let lab = TwoPools::new("Contoso Registrar Root", ZONE);
    let (port, tls_port) = (lab.port, lab.tls_port);
    // Where the hostile redirect points: a UDP socket that records what reaches it and
    // answers a REGISTER with an MD5 challenge of its own realm.
    let attacker = std::net::UdpSocket::bind((ATTACKER_IP, 0)).unwrap();
    let attacker_port = attacker.local_addr().unwrap().port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let received = received.clone();
        let attacker = attacker.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok((n, from)) = attacker.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                received.lock().unwrap().push(text.clone());
                let echo: String = text
                    .lines()
                    .filter(|l| {
                        ["Via:", "From:", "To:", "Call-ID:", "CSeq:"].iter().any(|h| l.starts_with(h))
                    })
                    .map(|l| format!("{l}\r\n"))
                    .collect();
                let reply = format!(
                    "SIP/2.0 401 Unauthorized\r\n{echo}WWW-Authenticate: Digest realm=\"attacker.example\", \
                     nonce=\"chosen-by-the-attacker\", algorithm=MD5\r\nContent-Length: 0\r\n\r\n"
                );
                let _ = attacker.send_to(reply.as_bytes(), from);
            }
        });
    }
    let ocs = registrar("ocs", port, tls_port, attacker_port, lab.tls(0));
    let lync = registrar("lync", port, tls_port, attacker_port, lab.tls(1));

    let text = config(&lab, "ocs2007r2")
        .replace("kind = \"sip_register\"\n", &format!("kind = \"sip_register\"\nport = {tls_port}\n"));
    // carol registers over UDP: its port is the UDP one.
    let text = text.replace(
        "[[checks]]\nname = \"register\"\nkind = \"sip_register\"\n",
        &format!(
            "[[checks]]\nname = \"register-udp\"\nkind = \"sip_register\"\nusers = [\"carol\"]\nport = {port}\n\
             [[checks]]\nname = \"register-policy\"\nkind = \"sip_register\"\nusers = [\"dave\", \"erin\", \"frank\"]\nport = {tls_port}\n\
             [[checks]]\nname = \"register\"\nkind = \"sip_register\"\nusers = [\"alice\", \"bob\"]\n"
        ),
    );
    let agent = Agent::start_env(&text, &[], &[("COEXISTD_TEST_CAROL_PASSWORD", CAROL_PW)]);
    let home = |m: &str, user: &str, pool: &str| {
        sample(m, "coexist_user_home", &[("user", user), ("home_pool", pool)]) == Some(1.0)
    };
    let ok = |m: &str, target: &str| sample(m, "coexist_probe_success", &[("target", target)]) == Some(1.0);
    let m = agent.wait_metrics(Duration::from_secs(15), |m| {
        ok(m, "sip:alice@contoso.test") && ok(m, "sip:bob@contoso.test") && ok(m, "sip:carol@contoso.test")
    });
    assert!(
        home(&m, "alice", "ocs2007r2") && home(&m, "bob", "lync2013") && home(&m, "carol", "lync2013"),
        "{m}"
    );
    let alice_labels = [
        ("target", "sip:alice@contoso.test"),
        ("pool", "ocs2007r2"),
        ("role", "legacy"),
        ("kind", "sip_register"),
    ];
    assert_eq!(sample(&m, "coexist_probe_success", &alice_labels), Some(1.0));

    // The policy: dave's registrar offers only MD5 and dave does not allow it; erin's
    // registrar redirects her to a host of no pool, over UDP. Both policy_refused, with
    // the reason in the detail; nothing ever reaches the attacker's host.
    let refused = |m: &str, target: &str| {
        sample(m, "coexist_probe_failures_total", &[("target", target), ("reason", "policy_refused")])
            .is_some_and(|n| n >= 1.0)
    };
    agent.wait_metrics(Duration::from_secs(15), |m| {
        refused(m, "sip:dave@contoso.test")
            && refused(m, "sip:erin@contoso.test")
            && refused(m, "sip:frank@contoso.test")
    });
    let (_, status) = agent.get("/api/v1/status");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let detail_of = |target: &str| {
        v["instances"].as_array().unwrap().iter().find(|i| i["target"] == target).unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let dave = detail_of("sip:dave@contoso.test");
    assert!(dave.contains("only MD5 offered") && dave.contains("allow_md5"), "{dave}");
    let erin = detail_of("sip:erin@contoso.test");
    assert!(erin.contains(ATTACKER_IP) && erin.contains("weaker transport"), "{erin}");
    let frank = detail_of("sip:frank@contoso.test");
    assert!(frank.contains("rebind.contoso.test") && frank.contains("no FQDN, member"), "{frank}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(received.lock().unwrap().is_empty(), "the redirect was followed: {:?}", received.lock().unwrap());

    // alice moves to the new pool (both registrars learn it): the legacy registrar
    // redirects her, she registers there; the plan still says legacy: wrong_home.
    for k in [&ocs, &lync] {
        k.kamcmd(&["htable.sets", "homes", "alice", "lync"]);
    }
    let m = agent.wait_metrics(Duration::from_secs(15), |m| home(m, "alice", "lync2013"));
    assert_eq!(sample(&m, "coexist_probe_success", &[("target", "sip:alice@contoso.test")]), Some(0.0));
    let (_, status) = agent.get("/api/v1/status");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let row = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["target"] == "sip:alice@contoso.test")
        .unwrap()
        .clone();
    assert_eq!(row["reason"], "wrong_home", "{row}");
    let detail = row["detail"].as_str().unwrap();
    eprintln!("alice re-homed: {detail}");
    assert!(
        detail.contains("lync2013")
            && detail.contains("after a redirect")
            && detail.contains("planned ocs2007r2"),
        "{detail}"
    );
    assert_eq!(row["points_to"], "lync2013");
    assert_eq!(row["expect_pool"], "ocs2007r2");
    assert!(!home(&m, "alice", "ocs2007r2"), "the old home is gone: {m}");

    // The plan follows (a reload): she passes again.
    std::fs::write(
        &agent.config,
        std::fs::read_to_string(&agent.config).unwrap().replace(
            "name = \"alice\"\nuri = \"sip:alice@contoso.test\"\npool = \"ocs2007r2\"",
            "name = \"alice\"\nuri = \"sip:alice@contoso.test\"\npool = \"lync2013\"",
        ),
    )
    .unwrap();
    assert!(Command::new("kill").args(["-HUP", &agent.child.id().to_string()]).status().unwrap().success());
    agent.wait_metrics(Duration::from_secs(15), |m| {
        sample(m, "coexist_probe_success", &[("target", "sip:alice@contoso.test"), ("pool", "lync2013")])
            == Some(1.0)
    });

    // bob's password changes on the registrar (ours is now wrong): auth_failed for bob
    // only.
    lync.kamcmd(&["htable.sets", "users", "bob", "changed-elsewhere"]);
    let m = agent.wait_metrics(Duration::from_secs(15), |m| {
        sample(
            m,
            "coexist_probe_failures_total",
            &[("target", "sip:bob@contoso.test"), ("reason", "auth_failed")],
        )
        .is_some_and(|n| n >= 1.0)
    });
    assert_eq!(sample(&m, "coexist_probe_success", &[("target", "sip:bob@contoso.test")]), Some(0.0));
    assert_eq!(sample(&m, "coexist_probe_success", &[("target", "sip:alice@contoso.test")]), Some(1.0));
    assert_eq!(sample(&m, "coexist_probe_success", &[("target", "sip:carol@contoso.test")]), Some(1.0));

    // No output of the agent carries a password.
    let (_, page) = agent.get("/");
    let (_, events) = agent.get("/api/v1/events");
    let (_, trace) = agent.get("/api/v1/trace?check=register");
    assert!(trace.contains("Authorization: Digest ***"), "the trace masks credentials:\n{trace}");
    eprintln!("{trace}");
    let mut agent = agent;
    let _ = agent.child.kill();
    let log = agent.stderr();
    for (what, text) in [
        ("metrics", &m),
        ("status", &status),
        ("page", &page),
        ("events", &events),
        ("trace", &trace),
        ("log", &log),
    ] {
        for pw in [ALICE_PW, BOB_PW, CAROL_PW, DAVE_PW, ERIN_PW, FRANK_PW] {
            assert!(!text.contains(pw), "{what} carries a password");
        }
    }
    drop((ocs, lync));
}

#[test]
fn an_inline_password_is_refused_naming_where_it_goes() {
    let text = "[[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"p.contoso.test\"\n\
                [[users]]\nname = \"a\"\nuri = \"sip:a@contoso.test\"\npool = \"p\"\npassword = \"hunter2\"\n";
    let e = coexistd::config::Config::parse(text, "t.toml").unwrap_err().to_string();
    assert!(
        e.starts_with("t.toml:9:12: users[0].password: a password is not written in the configuration"),
        "{e}"
    );
    assert!(e.contains("password_file") && e.contains("password_env") && !e.contains("hunter2"), "{e}");
}
