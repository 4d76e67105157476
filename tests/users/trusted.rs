//! A trusted server (a Lync trusted application pool) signing in with its certificate
//! alone: `auth = "none"` and `[tls] client_cert`, against a real Kamailio that
//! requires a client certificate from the lab's CA and, like a Lync pool for a trusted
//! application, registers the peer whose certificate names the trusted application's
//! FQDN without a challenge, and challenges everyone else.

use crate::common;

use std::time::Duration;

use coexistd::lab::pki::Leaf;
use common::two_pools::TwoPools;
use common::{sample, Agent, Kamailio};

const ZONE: &str = "ocspool A 127.0.53.1\nlyncpool A 127.0.53.2\n";
/// The trusted application's FQDN, as the topology defines it.
const TRUSTED: &str = "trustedapp.contoso.test";
const TARGET: &str = "sip:watcher@contoso.test";

/// The agent's configuration presenting a client certificate for `cn`.
fn config(lab: &TwoPools, cn: &str, tls_port: u16) -> String {
    let issued = lab.ca.issue(&Leaf { cn, sans: &[cn], client: true, ..Leaf::default() }).unwrap();
    let (cert, key) = issued.write(lab.path(), cn, &[]).unwrap();
    let head = lab.config_head().replace(
        "[tls]\n",
        &format!("[tls]\nclient_cert = \"{}\"\nclient_key = \"{}\"\n", cert.display(), key.display()),
    );
    head + &format!(
        r#"[[users]]
name = "watcher"
uri = "{TARGET}"
pool = "lync2013"
auth = "none"
[[checks]]
name = "register"
kind = "sip_register"
port = {tls_port}
"#
    )
}

#[test]
fn a_trusted_server_registers_on_its_certificate_and_another_certificate_is_challenged() {
    let lab = TwoPools::new("Contoso Trusted Root", ZONE);
    let prelude = "loadmodule \"tm.so\"\nloadmodule \"pv.so\"\nloadmodule \"textops.so\"\nloadmodule \"usrloc.so\"\n\
                   loadmodule \"registrar.so\"\nloadmodule \"auth.so\"\nmodparam(\"usrloc\", \"db_mode\", 0)\n";
    let routes = format!(
        "request_route {{\n\
           if (is_method(\"REGISTER\")) {{\n\
             if ($pr == \"tls\" && $tls_peer_verified == 1 && $tls_peer_subject_cn == \"{TRUSTED}\") {{\n\
               if (!save(\"location\")) {{ sl_reply_error(); }}\n\
               exit;\n\
             }}\n\
             auth_challenge(\"$fd\", \"1\");\n\
             exit;\n\
           }}\n\
           sl_send_reply(\"404\", \"Not Found\");\n\
         }}\n"
    );
    let mut tls = lab.tls(1);
    tls.require_client_cert = true;
    let _pool =
        Kamailio::start_custom("127.0.53.2", lab.port, lab.tls_port, Some(tls), "RTC/5.0", prelude, &routes);

    let trusted = Agent::start(&config(&lab, TRUSTED, lab.tls_port));
    let other = Agent::start(&config(&lab, "probe.contoso.test", lab.tls_port));
    let ok = |m: &str| sample(m, "coexist_probe_success", &[("target", TARGET)]) == Some(1.0);
    let m = trusted.wait_metrics(Duration::from_secs(15), ok);
    assert_eq!(sample(&m, "coexist_user_home", &[("user", "watcher"), ("home_pool", "lync2013")]), Some(1.0));

    let challenged = |m: &str| {
        sample(m, "coexist_probe_failures_total", &[("target", TARGET), ("reason", "auth_failed")])
            .is_some_and(|n| n >= 1.0)
    };
    let m = other.wait_metrics(Duration::from_secs(15), challenged);
    assert!(!ok(&m), "{m}");
    let (_, status) = other.get("/api/v1/status");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let detail = v["instances"].as_array().unwrap().iter().find(|i| i["target"] == TARGET).unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains("challenged, but auth = \"none\""), "{detail}");
}
