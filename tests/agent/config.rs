//! Configuration validation: one invalid fixture per rule, each with the exact message
//! an operator sees; and unknown keys injected into every table of the shipped example.

use coexistd::config::Config;

const POOLS: &str = r#"
[[pools]]
name = "ocs"
role = "legacy"
fqdn = "ocspool.contoso.com"

[[pools]]
name = "lync"
role = "new"
fqdn = "lyncpool.contoso.com"
"#;

fn with_pools(rest: &str) -> String {
    format!("{POOLS}{rest}")
}

/// (rule, file text, exact error)
/// The message for an unknown kind: every kind the build knows, in list order.
fn every_kind_message() -> &'static str {
    let kinds: Vec<String> = coexistd::kinds::Kind::ALL.iter().map(|k| format!("`{}`", k.as_str())).collect();
    let msg = format!("t.toml:13:8: unknown variant `icmp`, expected one of {}", kinds.join(", "));
    Box::leak(msg.into_boxed_str())
}

fn fixtures() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "unknown top-level key",
            "colour = 1\n".into(),
            "t.toml:1:1: unknown field `colour`, expected one of `agent`, `dns`, `tls`, `pools`, `users`, `report`, `checks`",
        ),
        (
            "unknown key in [agent]",
            "[agent]\nlisten = \"127.0.0.1:9797\"\nintervall = \"30s\"\n".into(),
            "t.toml:3:1: unknown field `intervall`, expected one of `listen`, `interval`, `timeout`, `labels`, `concurrency`, `shard`, `endpoint_memory_mib`",
        ),
        (
            "endpoint memory of nothing",
            "[agent]\nendpoint_memory_mib = 0\n".into(),
            "t.toml:2:23: agent.endpoint_memory_mib: 0 is not between 1 and 4096",
        ),
        (
            "report: availability beyond 1",
            "[report]\nmin_availability = 99.9\n".into(),
            "t.toml:2:20: report.min_availability: 99.9 is not an availability between 0 and 1 (0.999 = 99.9 %)",
        ),
        (
            "report: an unknown pool",
            "[report]\nmin_availability_by_pool = { lync = 0.99 }\n".into(),
            "t.toml:2:37: report.min_availability_by_pool: unknown pool \"lync\"",
        ),
        (
            "report: a kind without a matrix",
            "[report]\nmin_interop_availability_by_kind = { tls = 0.99 }\n".into(),
            "t.toml:2:44: report.min_interop_availability_by_kind: \"tls\" has no matrix (one of sip_im, sip_presence, sip_call, sip_group_im)",
        ),
        (
            "report: an unknown key",
            "[report]\nmin_uptime = 0.99\n".into(),
            "t.toml:2:1: unknown field `min_uptime`, expected one of `min_availability`, `min_availability_by_role`, `min_availability_by_pool`, `min_interop_availability`, `min_interop_availability_by_kind`, `signin_stable_days`, `min_cert_days`, `max_data_gap`",
        ),
        (
            "TOML syntax",
            "[agent\n".into(),
            "t.toml:1:7: unclosed table, expected `]`",
        ),
        (
            "bad duration",
            "[agent]\ninterval = \"30 parsecs\"\n".into(),
            "t.toml:2:12: invalid duration \"30 parsecs\": unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations) (write e.g. \"30s\" or \"2m\")",
        ),
        (
            "timeout not shorter than interval",
            "[agent]\ninterval = \"5s\"\ntimeout = \"5s\"\n".into(),
            "t.toml:3:11: agent.timeout: must be shorter than agent.interval (5s >= 5s)",
        ),
        (
            "bad listen address",
            "[agent]\nlisten = \"localhost\"\n".into(),
            "t.toml:2:10: agent.listen: \"localhost\" is not an address:port (e.g. \"127.0.0.1:9797\")",
        ),
        (
            "bad label name",
            "[agent]\nlabels = { \"bad-name\" = \"x\" }\n".into(),
            "t.toml:2:12: agent.labels: \"bad-name\" is not a valid Prometheus label name",
        ),
        (
            "label name used by the agent",
            "[agent]\nlabels = { pool = \"x\" }\n".into(),
            "t.toml:2:12: agent.labels: \"pool\" is used by coexistd itself",
        ),
        (
            "bad shard",
            "[agent]\nshard = \"4/3\"\n".into(),
            "t.toml:2:9: agent.shard: \"4/3\" is not \"K/N\" with 1 <= K <= N",
        ),
        (
            "bad DNS server",
            "[dns]\nservers = [\"dns.contoso.com\"]\n".into(),
            "t.toml:2:12: dns.servers: \"dns.contoso.com\" is not an IP address or address:port",
        ),
        (
            "client cert without key",
            "[tls]\nclient_cert = \"probe.pem\"\n".into(),
            "t.toml:2:15: tls: client_cert and client_key must be given together",
        ),
        (
            "bad role",
            "[[pools]]\nname = \"a\"\nrole = \"old\"\nfqdn = \"a.contoso.com\"\n".into(),
            "t.toml:3:8: unknown variant `old`, expected `legacy` or `new`",
        ),
        (
            "duplicate pool name",
            "[[pools]]\nname = \"a\"\nrole = \"legacy\"\nfqdn = \"a.contoso.com\"\n[[pools]]\nname = \"a\"\nrole = \"new\"\nfqdn = \"b.contoso.com\"\n".into(),
            "t.toml:6:8: pools[1].name: duplicate pool name \"a\"",
        ),
        (
            "bad pool FQDN",
            "[[pools]]\nname = \"a\"\nrole = \"legacy\"\nfqdn = \"pool..contoso.com\"\n".into(),
            "t.toml:4:8: pools[0].fqdn: \"pool..contoso.com\" is not a valid host name",
        ),
        (
            "duplicate check name",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"tcp\"\nport = 1\n[[checks]]\nname = \"c\"\nkind = \"tcp\"\nport = 2\n"),
            "t.toml:16:8: checks[1].name: duplicate check name \"c\"",
        ),
        (
            "check names an unknown pool",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"tcp\"\nport = 1\npools = [\"ocs\", \"skype\"]\n"),
            "t.toml:15:17: checks[0].pools: unknown pool \"skype\"",
        ),
        (
            "check timeout not shorter than its interval",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"tcp\"\nport = 1\ninterval = \"10s\"\ntimeout = \"10s\"\n"),
            "t.toml:16:11: checks[0].timeout: must be shorter than the interval (10s >= 10s)",
        ),
        (
            "unknown kind",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"icmp\"\n"),
            // Every kind, in the order of the check_kinds! list: a new kind needs no
            // edit here.
            every_kind_message(),
        ),
        (
            "port out of range",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"tcp\"\nport = 70000\n"),
            "t.toml:14:8: invalid value: integer `70000`, expected u16",
        ),
        (
            "port zero",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"tcp\"\nport = 0\n"),
            "t.toml:14:8: checks[0].port: must be 1-65535",
        ),
        (
            "tcp check without port",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"tcp\"\n"),
            "t.toml:12:8: checks[0].port: required for kind \"tcp\"",
        ),
        (
            "pool-less tcp check without host",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"tcp\"\nport = 1\npools = []\n"),
            "t.toml:12:8: checks[0].host: required when the check runs without a pool (pools = [])",
        ),
        (
            "dns check without record",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"dns\"\ntype = \"A\"\n"),
            "t.toml:12:8: checks[0].record: required for kind \"dns\"",
        ),
        (
            "dns check with an unsupported type",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"dns\"\nrecord = \"{fqdn}\"\ntype = \"MX\"\n"),
            "t.toml:15:8: checks[0].type: \"MX\" is not one of A, AAAA, CNAME, SRV, TXT",
        ),
        (
            "dns check with a malformed SRV expectation",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"dns\"\npools = []\nrecord = \"_sip._tls.contoso.com\"\ntype = \"SRV\"\nexpect = [\"sip.contoso.com:443\"]\n"),
            "t.toml:17:10: checks[0].expect: \"sip.contoso.com:443\" is not an SRV answer \"priority weight port target.\"",
        ),
        (
            "expect and expect_contains together",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"dns\"\nrecord = \"{fqdn}\"\nexpect = [\"10.0.0.1\"]\nexpect_contains = [\"10.0.0.1\"]\n"),
            "t.toml:15:10: checks[0].expect: give either expect or expect_contains, not both",
        ),
        (
            "{fqdn} in a pool-less check",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"dns\"\npools = []\nrecord = \"{fqdn}\"\n"),
            "t.toml:15:10: checks[0].record: uses {fqdn} but the check runs without a pool (pools = [])",
        ),
        (
            "key of another kind",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"tcp\"\nport = 1\nrecord = \"x.contoso.com\"\n"),
            "t.toml:15:10: checks[0].record: not a key of kind \"tcp\" (its keys: host, port, each_address)",
        ),
        (
            "bad TLS version on a pool",
            "[[pools]]\nname = \"a\"\nrole = \"legacy\"\nfqdn = \"a.contoso.com\"\ntls_min_version = \"1\"\n".into(),
            "t.toml:5:19: pools[0].tls_min_version: \"1\" is not one of \"1.0\", \"1.1\", \"1.2\", \"1.3\"",
        ),
        (
            "bad TLS version on a check",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"tls\"\nport = 5061\ntls_min_version = \"SSLv3\"\n"),
            "t.toml:15:19: checks[0].tls_min_version: \"SSLv3\" is not one of \"1.0\", \"1.1\", \"1.2\", \"1.3\"",
        ),
        (
            "http check without url or path",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"http\"\n"),
            "t.toml:12:8: checks[0].url: required for kind \"http\" (or path)",
        ),
        (
            "http check with a plain-http URL",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"http\"\nurl = \"http://{fqdn}/\"\n"),
            "t.toml:14:7: checks[0].url: \"http://ocspool.contoso.com/\" is not probed: only https:// URLs are",
        ),
        (
            "http status out of range",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"http\"\npath = \"/\"\nexpect_status = [200, 999]\n"),
            "t.toml:15:17: checks[0].expect_status: 999 is not an HTTP status code",
        ),
        (
            "dns key on a tls check",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"tls\"\nport = 5061\nexpect = [\"x\"]\n"),
            "t.toml:15:10: checks[0].expect: not a key of kind \"tls\" (its keys: host, port, tls_min_version, tls_skip_verify, min_days_valid, each_address, forbid_sha1)",
        ),
        (
            "sip check with an unknown transport",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"sip\"\ntransport = \"sctp\"\n"),
            "t.toml:14:13: checks[0].transport: \"sctp\" is not one of udp, tcp, tls",
        ),
        (
            "sip check expecting a provisional status",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"sip\"\nexpect_status = [100, 200]\n"),
            "t.toml:14:17: checks[0].expect_status: 100 is not a final SIP status code",
        ),
        (
            "sip check with a bad user part",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"sip\"\nuser = \"ping@contoso.com\"\n"),
            "t.toml:14:8: checks[0].user: \"ping@contoso.com\" is not a SIP user part",
        ),
        (
            "expect_pool names an unknown pool",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"dns\"\npools = []\nrecord = \"_sip._tls.contoso.com\"\ntype = \"SRV\"\nexpect_pool = \"skype\"\n"),
            "t.toml:17:15: checks[0].expect_pool: unknown pool \"skype\"",
        ),
        (
            "expect_pool with expect",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"dns\"\npools = []\nrecord = \"x.contoso.com\"\nexpect = [\"10.0.0.1\"]\nexpect_pool = \"ocs\"\n"),
            "t.toml:17:15: checks[0].expect_pool: give either expect_pool or expect/expect_contains",
        ),
        (
            "bad member name",
            "[[pools]]\nname = \"a\"\nrole = \"new\"\nfqdn = \"a.contoso.com\"\nmembers = [\"fe 1\"]\n".into(),
            "t.toml:5:12: pools[0].members: \"fe 1\" is not a valid host name",
        ),
        (
            "each_address on a dns check",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"dns\"\nrecord = \"{fqdn}\"\neach_address = true\n"),
            "t.toml:15:16: checks[0].each_address: not a key of kind \"dns\" (its keys: record, type, expect, expect_contains, expect_pool)",
        ),
        (
            "bad host",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"tcp\"\nport = 1\nhost = \"exa mple.com\"\n"),
            "t.toml:15:8: checks[0].host: \"exa mple.com\" is not a valid host name",
        ),
        (
            "a constant label named like one coexistd sets",
            "[agent]\nlabels = { server = \"x\" }\n".into(),
            "t.toml:2:12: agent.labels: \"server\" is used by coexistd itself",
        ),
        (
            "a constant label named like a certificate label",
            "[agent]\nlabels = { fingerprint_sha256 = \"x\" }\n".into(),
            "t.toml:2:12: agent.labels: \"fingerprint_sha256\" is used by coexistd itself",
        ),
        (
            "a date as a label value",
            "[agent]\nlabels = { site = 2024-05-01 }\n".into(),
            "t.toml:2:19: agent.labels: a value must be a string (quote dates and numbers: site = \"2024-05-01\"), not a table or date",
        ),
        (
            "a blank label value",
            "[agent]\nlabels = { site = \" \" }\n".into(),
            "t.toml:2:12: agent.labels: the value of \"site\" must not be empty or blank",
        ),
        (
            "a pool listed twice",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"tcp\"\nport = 1\npools = [\"ocs\", \"ocs\"]\n"),
            "t.toml:15:17: checks[0].pools: \"ocs\" is listed twice",
        ),
        (
            "url with port 99999",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"http\"\nurl = \"https://lyncweb.contoso.com:99999/x\"\n"),
            "t.toml:14:7: checks[0].url: \"https://lyncweb.contoso.com:99999/x\": port 99999 is not 1-65535",
        ),
        (
            "url with port 0",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"http\"\nurl = \"https://lyncweb.contoso.com:0/x\"\n"),
            "t.toml:14:7: checks[0].url: \"https://lyncweb.contoso.com:0/x\": port 0 is not 1-65535",
        ),
        (
            "path with CR/LF",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"http\"\npath = \"/a\\r\\nX-Injected: 1\"\n"),
            "t.toml:14:8: checks[0].path: \"/a\\r\\nX-Injected: 1\" contains '\\r': encode it (e.g. %20 for a space)",
        ),
        (
            "path with a space",
            with_pools("[[checks]]\nname = \"c\"\nkind = \"http\"\npath = \"/a b\"\n"),
            "t.toml:14:8: checks[0].path: \"/a b\" contains ' ': encode it (e.g. %20 for a space)",
        ),
        (
            "a DNS server on port 0",
            "[dns]\nservers = [\"10.0.0.10:0\"]\n".into(),
            "t.toml:2:12: dns.servers: \"10.0.0.10:0\" has port 0",
        ),
        (
            "a multicast DNS server",
            "[dns]\nservers = [\"224.0.0.251\"]\n".into(),
            "t.toml:2:12: dns.servers: \"224.0.0.251\" is not a unicast address (unspecified, multicast or broadcast)",
        ),
        (
            "the broadcast address as DNS server",
            "[dns]\nservers = [\"255.255.255.255\"]\n".into(),
            "t.toml:2:12: dns.servers: \"255.255.255.255\" is not a unicast address (unspecified, multicast or broadcast)",
        ),
        (
            "the unspecified address as DNS server",
            "[dns]\nservers = [\"[::]:53\"]\n".into(),
            "t.toml:2:12: dns.servers: \"[::]:53\" is not a unicast address (unspecified, multicast or broadcast)",
        ),
        (
            "a blank check name",
            with_pools("[[checks]]\nname = \"   \"\nkind = \"tcp\"\nport = 1\n"),
            "t.toml:12:8: checks[0].name: must not be empty or blank",
        ),
        (
            "a check name with a control character",
            with_pools("[[checks]]\nname = \"sip\\u001b[31m\"\nkind = \"tcp\"\nport = 1\n"),
            "t.toml:12:8: checks[0].name: must not contain control characters",
        ),
        (
            "a pool name with a newline",
            "[[pools]]\nname = \"ocs\\n\"\nrole = \"legacy\"\nfqdn = \"ocs.contoso.com\"\n".into(),
            "t.toml:2:8: pools[0].name: must not contain control characters",
        ),
        (
            "ca_file that is a device",
            "[tls]\nca_file = \"/dev/zero\"\n".into(),
            "t.toml:2:11: tls.ca_file: /dev/zero: not a regular file",
        ),
        (
            "ca_file that is a directory",
            "[tls]\nca_file = \"/etc\"\n".into(),
            "t.toml:2:11: tls.ca_file: /etc: not a regular file",
        ),
        (
            "ca_file that does not exist",
            "[tls]\nca_file = \"/nonexistent/ca.pem\"\n".into(),
            "t.toml:2:11: tls.ca_file: /nonexistent/ca.pem: No such file or directory (os error 2)",
        ),
        (
            "a date where an address belongs",
            "[agent]\nlisten = 1979-05-27T07:32:00Z\n".into(),
            "t.toml:2:10: a date or time is not allowed here (quote it if it is meant as text)",
        ),
        (
            "a date for the labels table",
            "[agent]\nlabels = 1979-05-27T07:32:00Z\n".into(),
            "t.toml:2:10: a date or time is not allowed here (quote it if it is meant as text)",
        ),
        (
            "user on an unknown pool",
            with_pools("[[users]]\nname = \"a\"\nuri = \"sip:a@contoso.com\"\npool = \"skype\"\npassword_env = \"PATH\"\n"),
            "t.toml:14:8: users[0].pool: unknown pool \"skype\"",
        ),
        (
            "user URI without a user part",
            with_pools("[[users]]\nname = \"a\"\nuri = \"sip:contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\n"),
            "t.toml:13:7: users[0].uri: \"sip:contoso.com\" has no user part (sip:user@domain)",
        ),
        (
            "user name twice",
            with_pools("[[users]]\nname = \"alice\"\nuri = \"sip:alice@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\n[[users]]\nname = \"alice\"\nuri = \"sip:alice2@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\n"),
            "t.toml:17:8: users[1].name: duplicate user name \"alice\"",
        ),
        (
            "digest without a password",
            with_pools("[[users]]\nname = \"a\"\nuri = \"sip:a@contoso.com\"\npool = \"ocs\"\n"),
            "t.toml:12:8: users[0]: auth = \"digest\" needs password_file or password_env",
        ),
        (
            "password file and env both",
            with_pools("[[users]]\nname = \"a\"\nuri = \"sip:a@contoso.com\"\npool = \"ocs\"\npassword_file = \"/etc/hostname\"\npassword_env = \"PATH\"\n"),
            "t.toml:15:17: users[0].password_file: give password_file or password_env, not both",
        ),
        (
            "password env not set",
            with_pools("[[users]]\nname = \"a\"\nuri = \"sip:a@contoso.com\"\npool = \"ocs\"\npassword_env = \"COEXISTD_SURELY_UNSET\"\n"),
            "t.toml:15:16: users[0].password_env: COEXISTD_SURELY_UNSET is not set (or empty) in the agent's environment",
        ),
        (
            "unknown auth",
            with_pools("[[users]]\nname = \"a\"\nuri = \"sip:a@contoso.com\"\npool = \"ocs\"\nauth = \"kerberos\"\n"),
            "t.toml:15:8: users[0].auth: \"kerberos\" is not one of digest, ntlm, none",
        ),
        (
            "ntlm without a password",
            with_pools("[[users]]\nname = \"a\"\nuri = \"sip:a@contoso.com\"\npool = \"ocs\"\nauth = \"ntlm\"\nusername = \"CONTOSO\\\\a\"\n"),
            "t.toml:12:8: users[0]: auth = \"ntlm\" needs password_file or password_env",
        ),
        (
            "a domain for a digest user",
            with_pools("[[users]]\nname = \"a\"\nuri = \"sip:a@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\ndomain = \"CONTOSO\"\n"),
            "t.toml:16:10: users[0].domain: only auth = \"ntlm\" has a domain",
        ),
        (
            "a domain twice",
            with_pools("[[users]]\nname = \"a\"\nuri = \"sip:a@contoso.com\"\npool = \"ocs\"\nauth = \"ntlm\"\npassword_env = \"PATH\"\nusername = \"CONTOSO\\\\a\"\ndomain = \"FABRIKAM\"\n"),
            "t.toml:18:10: users[0].domain: the username names its domain already (DOMAIN\\user): give one",
        ),
        (
            "ntlm with a Digest key",
            with_pools("[[users]]\nname = \"a\"\nuri = \"sip:a@contoso.com\"\npool = \"ocs\"\nauth = \"ntlm\"\npassword_env = \"PATH\"\nallow_md5 = true\n"),
            "t.toml:17:13: users[0]: auth = \"ntlm\" answers NTLM challenges only (realm, allow_md5, min_algorithm are Digest's)",
        ),
        (
            "a minimum Digest algorithm that is no minimum",
            with_pools("[[users]]\nname = \"a\"\nuri = \"sip:a@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\nmin_algorithm = \"MD5\"\n"),
            "t.toml:16:17: users[0].min_algorithm: \"MD5\" is not one of SHA-256, SHA-512-256 (MD5: allow_md5)",
        ),
        (
            "a minimum Digest algorithm with MD5 allowed",
            with_pools("[[users]]\nname = \"a\"\nuri = \"sip:a@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\nallow_md5 = true\nmin_algorithm = \"SHA-512-256\"\n"),
            "t.toml:17:17: users[0].min_algorithm: with allow_md5 = true MD5 is answered anyway: set one of the two",
        ),
        (
            "a redirect host that is no host",
            with_pools("[[users]]\nname = \"a\"\nuri = \"sip:a@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\nredirect_hosts = [\"dir ector\"]\n"),
            "t.toml:16:19: users[0].redirect_hosts: \"dir ector\" is not a valid host name",
        ),
        (
            "pools on a per-user kind",
            with_pools("[[users]]\nname = \"alice\"\nuri = \"sip:alice@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\n[[checks]]\nname = \"r\"\nkind = \"sip_register\"\npools = [\"ocs\"]\n"),
            "t.toml:19:9: checks[0].pools: kind \"sip_register\" runs as test users, in their pools; use users",
        ),
        (
            "unknown user",
            with_pools("[[users]]\nname = \"alice\"\nuri = \"sip:alice@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\n[[checks]]\nname = \"r\"\nkind = \"sip_register\"\nusers = [\"bob\"]\n"),
            "t.toml:19:10: checks[0].users: unknown user \"bob\"",
        ),
        (
            "no users to run as",
            with_pools("[[checks]]\nname = \"r\"\nkind = \"sip_register\"\n"),
            "t.toml:12:8: checks[0].users: no test user to run as (add [[users]])",
        ),
        (
            "a user's port 0",
            with_pools("[[users]]\nname = \"alice\"\nuri = \"sip:alice@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\nport = 0\n"),
            "t.toml:16:8: users[0].port: must be 1-65535",
        ),
        (
            "pools on a per-pair kind",
            with_pools("[[users]]\nname = \"alice\"\nuri = \"sip:alice@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\n[[checks]]\nname = \"im\"\nkind = \"sip_im\"\npools = [\"ocs\"]\n"),
            "t.toml:19:9: checks[0].pools: kind \"sip_im\" runs as test users, in their pools; use from and to",
        ),
        (
            "sip_im with one user",
            with_pools("[[users]]\nname = \"alice\"\nuri = \"sip:alice@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\n[[checks]]\nname = \"im\"\nkind = \"sip_im\"\n"),
            "t.toml:17:8: checks[0].to: no pair of two different test users (from and to name the same one)",
        ),
        (
            "sip_im unknown sender",
            with_pools("[[users]]\nname = \"alice\"\nuri = \"sip:alice@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\n[[checks]]\nname = \"im\"\nkind = \"sip_im\"\nfrom = [\"bob\"]\n"),
            "t.toml:19:9: checks[0].from: unknown user \"bob\"",
        ),
        (
            "sip_im unknown method",
            with_pools("[[users]]\nname = \"alice\"\nuri = \"sip:alice@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\n[[users]]\nname = \"bob\"\nuri = \"sip:bob@contoso.com\"\npool = \"ocs\"\npassword_env = \"PATH\"\n[[checks]]\nname = \"im\"\nkind = \"sip_im\"\nmethod = \"SUBSCRIBE\"\n"),
            "t.toml:24:10: checks[0].method: \"SUBSCRIBE\" is not one of \"MESSAGE\", \"INVITE\", \"OPTIONS\"",
        ),
    ]
}

#[test]
fn every_invalid_fixture_gives_its_exact_message() {
    let mut failures = Vec::new();
    for (rule, text, want) in fixtures() {
        match Config::parse(&text, "t.toml") {
            Ok(_) => failures.push(format!("{rule}: accepted")),
            Err(e) if e.to_string() == want => {}
            Err(e) => failures.push(format!("{rule}:\n   got: {e}\n  want: {want}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn example_text() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/coexistd.example.toml")).unwrap()
}

#[test]
fn the_example_config_is_valid() {
    let c = Config::parse(&example_text(), "example").expect("example config must parse");
    assert_eq!(c.pools.len(), 2);
    assert_eq!(c.pools[0].role.as_str(), "legacy");
    // per pool: 2 tls + 1 sip + 1 dns + 1 http x 2 pools = 10; restricted to one pool: 4;
    // pool-less: 9.
    assert_eq!(c.instances.len(), 23);
    let srv = c.instances.iter().find(|i| i.check == "sipinternaltls-srv").unwrap();
    assert!(srv.pool.is_none());
    assert_eq!(srv.target, "_sipinternaltls._tcp.contoso.com");
    let tls = c.instances.iter().find(|i| i.check == "sip-tls" && i.pool_name() == "ocs2007r2").unwrap();
    assert_eq!(tls.target, "ocspool.contoso.com:5061");
    match &tls.spec {
        coexistd::kinds::CheckSpec::Tls(t) => {
            assert_eq!(
                t.opts.min_version,
                coexistd::net::tls::TlsVersion::V1_0,
                "the pool's tls_min_version applies"
            );
            assert_eq!(t.opts.min_days_valid, Some(14));
        }
        other => panic!("{other:?}"),
    }
    let meet = c.instances.iter().find(|i| i.check == "meet-url").unwrap();
    assert_eq!(meet.interval, std::time::Duration::from_secs(60));
}

#[test]
fn an_unknown_key_in_any_table_of_the_example_is_rejected() {
    let text = example_text();
    let lines: Vec<&str> = text.lines().collect();
    let headers: Vec<usize> =
        lines.iter().enumerate().filter(|(_, l)| l.starts_with('[')).map(|(i, _)| i).collect();
    assert!(headers.len() >= 10, "the example has all its tables");
    for &h in &headers {
        let mut injected: Vec<&str> = lines.clone();
        injected.insert(h + 1, "bogus_key = 1");
        let err = Config::parse(&injected.join("\n"), "example").expect_err(lines[h]).to_string();
        let want_prefix = format!("example:{}:1: unknown field `bogus_key`", h + 2);
        assert!(err.starts_with(&want_prefix), "table {} at line {}: {err}", lines[h], h + 1);
    }
}

#[test]
fn pools_expand_checks_and_empty_pools_runs_once() {
    let c = Config::parse(
        &with_pools(
            "[[checks]]\nname = \"every\"\nkind = \"tcp\"\nport = 5061\n\
             [[checks]]\nname = \"one\"\nkind = \"tcp\"\nport = 443\npools = [\"lync\"]\n\
             [[checks]]\nname = \"none\"\nkind = \"tcp\"\nhost = \"edge.contoso.com\"\nport = 443\npools = []\n",
        ),
        "t",
    )
    .unwrap();
    let got: Vec<(String, String)> =
        c.instances.iter().map(|i| (i.check.clone(), i.pool_name().to_owned())).collect();
    let want = [("every", "ocs"), ("every", "lync"), ("one", "lync"), ("none", "")];
    assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
    assert_eq!(c.instances[3].target, "edge.contoso.com:443");
}

#[test]
fn shards_partition_the_instances() {
    let mut checks = String::new();
    for i in 0..40 {
        checks.push_str(&format!("[[checks]]\nname = \"c{i}\"\nkind = \"tcp\"\nport = {}\n", 1000 + i));
    }
    let all = Config::parse(&with_pools(&checks), "t").unwrap().instances.len();
    let mut seen = 0;
    for k in 1..=3 {
        let text = format!("[agent]\nshard = \"{k}/3\"\n{}", with_pools(&checks));
        let n = Config::parse(&text, "t").unwrap().instances.len();
        assert!(n > 0 && n < all, "shard {k}/3 has {n} of {all}");
        seen += n;
    }
    assert_eq!(seen, all);
}

#[test]
fn a_file_over_the_size_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("bundle.pem");
    std::fs::write(&big, vec![b'A'; (1 << 20) + 1]).unwrap();
    let text = format!("[tls]\nca_file = \"{}\"\n", big.display());
    let e = Config::parse(&text, "t.toml").unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "t.toml:2:11: tls.ca_file: {}: 1048577 bytes: larger than the 1048576-byte limit",
            big.display()
        )
    );
}

#[test]
fn an_ntlm_user_takes_its_domain_from_the_user_name_or_the_domain_key() {
    use coexistd::model::users::UserAuth;
    for (username, domain_key, want) in [
        ("username = \"CONTOSO\\\\alice\"\n", "", ("CONTOSO", "alice")),
        ("username = \"alice@contoso.com\"\n", "", ("", "alice@contoso.com")),
        ("", "domain = \"FABRIKAM\"\n", ("FABRIKAM", "alice")),
    ] {
        let text = with_pools(&format!(
            "[[users]]\nname = \"alice\"\nuri = \"sip:alice@contoso.com\"\npool = \"ocs\"\nauth = \"ntlm\"\npassword_env = \"PATH\"\n{username}{domain_key}"
        ));
        let config = Config::parse(&text, "t.toml").unwrap();
        match &config.users[0].auth {
            UserAuth::Ntlm { domain, username, password } => {
                assert_eq!((domain.as_str(), username.as_str()), want);
                assert_eq!(format!("{password:?}"), "Secret(***)");
            }
            other => panic!("{other:?}"),
        }
    }
}
