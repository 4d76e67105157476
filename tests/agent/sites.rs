//! Topology sites: pools grouped by `site`, `coexist_site_up` from their pools, and
//! `coexist_site_administrable` from the checks of the administration path
//! (`purpose = "admin"`), which do not count in their pool's UP/DOWN. Real TCP
//! listeners on loopback stand for a Front End's SIP port and an administration port;
//! closing the administration one makes the site not administrable while its pool stays
//! UP, in the metrics, the status JSON, `check` and the page.

use crate::common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::{sample, Agent};

#[test]
fn an_administration_check_failing_makes_its_site_not_administrable_and_leaves_its_pool_up() {
    let sip = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let (sip_port, admin_port) = (sip.local_addr().unwrap().port(), admin.local_addr().unwrap().port());
    let config = format!(
        r#"[agent]
listen = "{{listen}}"
interval = "1s"
timeout = "500ms"
labels = {{ site = "agent-hq" }}
[[pools]]
name = "ocs2007r2"
role = "legacy"
fqdn = "ocspool.contoso.test"
site = "Moscow"
[[pools]]
name = "lync2013"
role = "new"
fqdn = "lyncpool.contoso.test"
site = "Moscow"
[[checks]]
name = "sip-port"
kind = "tcp"
host = "127.0.0.1"
port = {sip_port}
[[checks]]
name = "ocspowershell-port"
kind = "tcp"
purpose = "admin"
pools = ["lync2013"]
host = "127.0.0.1"
port = {admin_port}
"#
    );
    let agent = Agent::start(&config);
    let site = [("topology_site", "Moscow")];
    let m = agent.wait_metrics(Duration::from_secs(10), |m| {
        sample(m, "coexist_site_administrable", &site) == Some(1.0)
    });
    assert_eq!(sample(&m, "coexist_site_up", &site), Some(1.0), "{m}");
    assert_eq!(
        sample(&m, "coexist_pool_site_info", &[("pool", "lync2013"), ("topology_site", "Moscow")]),
        Some(1.0)
    );
    // The agent's own site label keeps its meaning beside the topology site.
    assert!(m.contains("coexist_site_up{site=\"agent-hq\",topology_site=\"Moscow\"} 1"), "{m}");
    assert_eq!(
        sample(&m, "coexist_probe_success", &[("check", "ocspowershell-port"), ("purpose", "admin")]),
        Some(1.0)
    );

    // The administration port stops answering: not administrable, the pool stays UP.
    drop(admin);
    let m = agent.wait_metrics(Duration::from_secs(10), |m| {
        sample(m, "coexist_site_administrable", &site) == Some(0.0)
    });
    assert_eq!(sample(&m, "coexist_pool_up", &[("pool", "lync2013")]), Some(1.0), "{m}");
    assert_eq!(sample(&m, "coexist_site_up", &site), Some(1.0), "{m}");
    let (_, status) = agent.get("/api/v1/status");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let s = &v["sites"][0];
    assert_eq!(
        (s["name"].as_str(), s["up"].as_bool(), s["administrable"].as_bool()),
        (Some("Moscow"), Some(true), Some(false))
    );
    let failure = s["failures"][0].as_str().unwrap();
    assert!(
        failure.starts_with("ocspowershell-port lync2013 127.0.0.1:") && failure.contains(": refused ("),
        "{failure}"
    );
    let (_, page) = agent.get("/");
    let sites_at = page.find("<h2>Sites</h2>").expect("a Sites section");
    assert!(sites_at < page.find("<h2>Pools</h2>").unwrap(), "Sites come first");
    assert!(
        page.contains("NOT ADMINISTRABLE") && page.contains("ocspowershell-port lync2013"),
        "the page names the check"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_coexistd"))
        .args(["check", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(
            "site Moscow (pools ocs2007r2, lync2013): UP - NOT ADMINISTRABLE: ocspowershell-port lync2013"
        ),
        "{table}"
    );
    drop(sip);
}

#[test]
fn purpose_admin_is_refused_where_it_has_no_site_or_pool_to_count_in() {
    let bad = [
        ("[[checks]]\nname = \"x\"\nkind = \"tcp\"\nhost = \"h\"\nport = 1\npools = []\npurpose = \"admin\"\n", "pools = [] has none"),
        (
            "[[checks]]\nname = \"x\"\nkind = \"tcp\"\nport = 1\npurpose = \"operator\"\n",
            "checks[0].purpose: \"operator\" is not \"service\" (the default) or \"admin\"",
        ),
    ];
    // A pool without a site: the check would count nowhere.
    let text = "[[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"p.test\"\n\
                [[checks]]\nname = \"x\"\nkind = \"tcp\"\nport = 1\npurpose = \"admin\"\n";
    let err = coexistd::config::Config::parse(text, "t").unwrap_err().to_string();
    assert!(err.contains("pool \"p\" has no site"), "{err}");
    for (check, want) in bad {
        let text =
            format!("[[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"p.test\"\nsite = \"Kazan\"\n{check}");
        let err = coexistd::config::Config::parse(&text, "t").unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn sign_in_and_expect_auth_are_refused_where_they_would_do_harm_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("admin.pass");
    std::fs::write(&pw, "x").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let head = format!(
        "[[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"p.test\"\nsite = \"Kazan\"\n\
         [[users]]\nname = \"admin\"\nuri = \"sip:admin@p.test\"\npool = \"p\"\nauth = \"ntlm\"\n\
         username = \"CONTOSO\\\\admin\"\npassword_file = \"{}\"\n",
        pw.display()
    );
    let check =
        |keys: &str| format!("{head}[[checks]]\nname = \"cp\"\nkind = \"http\"\npath = \"/Cscp\"\n{keys}");
    for (keys, want) in [
        // Every 30 s a wrong password would lock the account out.
        ("sign_in_as = \"admin\"\n", "runs at most every 10 minutes"),
        ("sign_in_as = \"admin\"\ninterval = \"10m\"\ntls_skip_verify = true\n", "not with tls_skip_verify"),
        ("sign_in_as = \"nobody\"\ninterval = \"10m\"\n", "no [[users]] entry is named \"nobody\""),
        ("expect_auth = [\"NTLM\"]\n", "add 401 (or 407) to expect_status"),
    ] {
        let err = coexistd::config::Config::parse(&check(keys), "t").unwrap_err().to_string();
        assert!(err.contains(want), "{keys}: {err}");
    }
    assert!(
        coexistd::config::Config::parse(&check("sign_in_as = \"admin\"\ninterval = \"10m\"\n"), "t").is_ok()
    );
}

#[test]
fn an_account_for_sign_in_only_is_left_out_of_the_sip_checks() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("u.pass");
    std::fs::write(&pw, "x").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let user = |name: &str, extra: &str| {
        format!(
            "[[users]]\nname = \"{name}\"\nuri = \"sip:{name}@p.test\"\npool = \"p\"\nauth = \"ntlm\"\n\
             password_file = \"{}\"\n{extra}",
            pw.display()
        )
    };
    let text = |check: &str| {
        format!(
            "[[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"p.test\"\nsite = \"Kazan\"\n{}{}{}\
             [[checks]]\nname = \"cp\"\nkind = \"http\"\npath = \"/Cscp\"\nsign_in_as = \"admin\"\n\
             interval = \"10m\"\npurpose = \"admin\"\n{check}",
            user("alice", ""),
            user("bob", ""),
            user("admin", "sip = false\n"),
        )
    };
    let c =
        coexistd::config::Config::parse(&text("[[checks]]\nname = \"reg\"\nkind = \"sip_register\"\n"), "t")
            .unwrap();
    let registering: Vec<&str> =
        c.instances.iter().filter(|i| i.check == "reg").map(|i| i.target.as_str()).collect();
    assert_eq!(registering, ["sip:alice@p.test", "sip:bob@p.test"], "the admin account is not registered");
    let im = coexistd::config::Config::parse(&text("[[checks]]\nname = \"im\"\nkind = \"sip_im\"\n"), "t")
        .unwrap();
    assert_eq!(im.instances.iter().filter(|i| i.check == "im").count(), 2, "alice and bob, both ways");
    let named = text("[[checks]]\nname = \"reg\"\nkind = \"sip_register\"\nusers = [\"admin\"]\n");
    let err = coexistd::config::Config::parse(&named, "t").unwrap_err().to_string();
    assert!(err.contains("\"admin\" has sip = false"), "{err}");
}
