//! The two-pool lab of the test-user tests: one SIP domain (`contoso.test`) served by a
//! legacy pool (`ocspool.contoso.test`, pool `ocs2007r2`) and a new one
//! (`lyncpool.contoso.test`, pool `lync2013`) on two loopback addresses, a Knot zone
//! for their names, a CA with a certificate per pool name, and one UDP/TCP port and one
//! TLS port used on both addresses. The Kamailio configurations stay with each test:
//! they are what the test is about.

use std::path::{Path, PathBuf};

use coexistd::lab::pki::{self, Ca, KeyKind, Leaf};
use openssl::hash::MessageDigest;

use super::{free_port, KamailioTls, Knot};

/// The pool names in the agent's configuration, legacy first.
pub const POOLS: [&str; 2] = ["ocs2007r2", "lync2013"];
/// The pools' FQDNs, in the order of [`POOLS`].
pub const FQDNS: [&str; 2] = ["ocspool.contoso.test", "lyncpool.contoso.test"];

pub struct TwoPools {
    pub knot: Knot,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    /// The CA (client certificates of trusted servers are issued from it too).
    pub ca: Ca,
    certs: Vec<(PathBuf, PathBuf)>,
    /// UDP and TCP on both pools.
    pub port: u16,
    /// TLS on both pools.
    pub tls_port: u16,
}

impl TwoPools {
    /// The lab with `zone` (records of `contoso.test`, at least `ocspool` and
    /// `lyncpool`) and a CA called `ca_name`.
    pub fn new(ca_name: &str, zone: &str) -> TwoPools {
        let knot = Knot::start("contoso.test", zone);
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(ca_name, KeyKind::Rsa2048, MessageDigest::sha256()).unwrap();
        let ca_file = pki::write_ca(dir.path(), "ca", &ca).unwrap();
        let certs = FQDNS
            .iter()
            .map(|n| {
                ca.issue(&Leaf { cn: n, sans: &[n], ..Leaf::default() })
                    .unwrap()
                    .write(dir.path(), n, &[])
                    .unwrap()
            })
            .collect();
        let port = free_port();
        let tls_port = loop {
            let p = free_port();
            if p != port {
                break p;
            }
        };
        TwoPools { knot, dir, ca_file, ca, certs, port, tls_port }
    }

    /// TLS settings of pool `i` (0 legacy, 1 new): its certificate, TLS 1.2 and up.
    pub fn tls(&self, i: usize) -> KamailioTls<'_> {
        KamailioTls {
            cert: &self.certs[i].0,
            key: &self.certs[i].1,
            ca: &self.ca_file,
            method: "TLSv1.2+",
            require_client_cert: false,
        }
    }

    /// Where the lab keeps its files.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `password` to a file only its owner reads; its path.
    pub fn password_file(&self, user: &str, password: &str) -> PathBuf {
        let f = self.path().join(format!("{user}.pass"));
        std::fs::write(&f, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        f
    }

    /// The agent's configuration up to its users and checks: probes every second, the
    /// lab's DNS and CA, the two pools.
    pub fn config_head(&self) -> String {
        format!(
            r#"[agent]
listen = "{{listen}}"
interval = "1s"
timeout = "900ms"
labels = {{ site = "lab" }}
[dns]
servers = ["{dns}"]
[tls]
ca_file = "{ca}"
[[pools]]
name = "{legacy}"
role = "legacy"
fqdn = "{legacy_fqdn}"
[[pools]]
name = "{new}"
role = "new"
fqdn = "{new_fqdn}"
"#,
            dns = self.knot.addr,
            ca = self.ca_file.display(),
            legacy = POOLS[0],
            legacy_fqdn = FQDNS[0],
            new = POOLS[1],
            new_fqdn = FQDNS[1],
        )
    }
}
