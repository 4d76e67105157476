//! Structure-aware fuzzing of everything that reads bytes or text from outside: the SIP
//! parser and transaction matcher, the DNS reply matcher, the certificate summariser and
//! the configuration loader. The generators build *almost* valid input — boundary
//! numbers, repeated and missing fields, compact forms, CR/LF variants, NUL bytes,
//! truncation at every offset — because that is where parsers break; random bytes alone
//! rarely get past the first line.
//!
//! `cargo test` runs a bounded number of cases (`COEXISTD_FUZZ_CASES`, default 500 per
//! property) with the seed in `PROPTEST_RNG_SEED` (fixed in CI by `scripts/test.sh`);
//! `scripts/fuzz.sh DURATION` runs them longer with random seeds.

use coexistd::net::dns::{match_reply, Reply};
use coexistd::sip::message::{self, bounded_decimal, parse, Parsed, MAX_MESSAGE};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{rdata::A, DNSClass, Name, RData, Record, RecordType};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("COEXISTD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(500)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() }
}

/// Numbers a hostile or broken peer sends.
fn boundary_number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("1".to_owned()),
        Just("255".to_owned()),
        Just("256".to_owned()),
        Just("65535".to_owned()),
        Just("65536".to_owned()),
        Just(u32::MAX.to_string()),
        Just((u64::from(u32::MAX) + 1).to_string()),
        Just(i64::MAX.to_string()),
        Just(u64::MAX.to_string()),
        Just("18446744073709551616".to_owned()),
        Just(i64::MIN.to_string()),
        Just("-1".to_owned()),
        Just("+5".to_owned()),
        Just(" 7".to_owned()),
        Just("0x10".to_owned()),
        Just("1e3".to_owned()),
        Just("".to_owned()),
        Just("9".repeat(10_000)),
        Just(format!("{}1", "0".repeat(5_000))),
        (0u64..100_000).prop_map(|n| n.to_string()),
    ]
}

const NUMERIC: &[&str] =
    &["Content-Length", "l", "CSeq", "Expires", "Max-Forwards", "Retry-After", "Min-Expires"];
const TEXTUAL: &[&str] = &["Via", "v", "Call-ID", "i", "From", "f", "To", "t", "Server", "X-Junk", ""];

fn header() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        (prop::sample::select(NUMERIC), boundary_number(), "[ A-Z]{0,8}").prop_map(|(n, v, tail)| {
            let v = if n == "CSeq" { format!("{v} OPTIONS{tail}") } else { v };
            (n.to_owned(), v)
        }),
        (prop::sample::select(TEXTUAL), "[ -~]{0,60}").prop_map(|(n, v)| (n.to_owned(), v)),
        // Our own transaction's fields, so the matcher sees near-misses.
        Just(("Via".to_owned(), "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKfuzz".to_owned())),
        Just(("Call-ID".to_owned(), "fuzz@coexistd".to_owned())),
        Just(("CSeq".to_owned(), "1 OPTIONS".to_owned())),
    ]
}

fn start_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("SIP/2.0 200 OK".to_owned()),
        boundary_number().prop_map(|c| format!("SIP/2.0 {c} Whatever")),
        Just("OPTIONS sip:alice@contoso.com SIP/2.0".to_owned()),
        Just("SIP/2.0".to_owned()),
        "[ -~]{0,30}",
    ]
}

/// A SIP-shaped message: start line, headers, line ending, body, NULs.
fn sip_message() -> impl Strategy<Value = Vec<u8>> {
    (
        start_line(),
        prop::collection::vec(header(), 0..12),
        prop::sample::select(&["\r\n", "\n", "\r", "\r\n\r\n"][..]),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(
            (any::<prop::sample::Index>(), prop::sample::select(&[0u8, b'\r', b'\n', b':', b' '][..])),
            0..3,
        ),
    )
        .prop_map(|(start, headers, eol, body, inserts)| {
            let mut text = start;
            for (n, v) in headers {
                text.push_str(eol);
                text.push_str(&n);
                text.push_str(": ");
                text.push_str(&v);
            }
            text.push_str("\r\n\r\n");
            let mut b = text.into_bytes();
            b.extend_from_slice(&body);
            for (at, byte) in inserts {
                let i = at.index(b.len() + 1);
                b.insert(i, byte);
            }
            b
        })
}

fn tx() -> message::Transaction {
    message::Transaction {
        branch: "z9hG4bKfuzz".into(),
        call_id: "fuzz@coexistd".into(),
        cseq: 1,
        method: "OPTIONS",
    }
}

/// What must hold for any input: no panic; a complete message claims no more than the
/// input, keeps the size cap, and carries only numbers that are in range.
fn check_sip(bytes: &[u8]) {
    for stream in [true, false] {
        if let Ok(Parsed::Complete(m, used)) = parse(bytes, stream) {
            assert!(used <= bytes.len(), "claimed {used} of {}", bytes.len());
            assert!(m.body.len() <= MAX_MESSAGE);
            if let Some(cl) = m.header("content-length") {
                let n =
                    bounded_decimal(cl, MAX_MESSAGE as u64).expect("an accepted Content-Length is in range");
                assert_eq!(m.body.len() as u64, n, "the body is what Content-Length says");
            }
            let _ = (m.status(), m.top_via_branch(), m.cseq(), m.software(), m.answers(&tx()));
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sip_messages_at_every_truncation(msg in sip_message()) {
        // Every prefix (a stream delivers any of them); past 4 KiB, one in every
        // len/1024, to bound the quadratic cost of long messages.
        let step = if msg.len() <= 4096 { 1 } else { msg.len() / 1024 };
        for cut in (0..=msg.len()).step_by(step) {
            check_sip(&msg[..cut]);
        }
        check_sip(&msg);
    }

    #[test]
    fn dns_replies(
        same_id in any::<bool>(),
        qname in prop::sample::select(&["lyncpool.contoso.test.", "LyncPool.CONTOSO.test.", "other.contoso.test.", "lyncpool.contoso.test.evil."][..]),
        qtype in prop::sample::select(&[RecordType::A, RecordType::AAAA, RecordType::SRV][..]),
        chaos in any::<bool>(),
        questions in 0usize..3,
        answers in 0usize..4,
        counts in prop::option::of((any::<prop::sample::Index>(), prop::sample::select(&[0u16, 1, 2, 255, 65535][..]))),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let id = 0x4242u16;
        let name: Name = "lyncpool.contoso.test.".parse().unwrap();
        let mut m = Message::response(if same_id { id } else { id ^ 1 }, hickory_proto::op::OpCode::Query);
        let asked: Name = qname.parse().unwrap();
        for _ in 0..questions {
            let mut q = Query::query(asked.clone(), qtype);
            if chaos {
                q.set_query_class(DNSClass::CH);
            }
            m.add_query(q);
        }
        for _ in 0..answers {
            m.add_answer(Record::from_rdata(asked.clone(), 60, RData::A(A::new(127, 0, 20, 1))));
        }
        let mut bytes = m.to_vec().unwrap();
        if let Some((at, v)) = counts {
            // Overwrite one of the four section counts.
            let i = 4 + 2 * at.index(4);
            bytes[i..i + 2].copy_from_slice(&v.to_be_bytes());
        }
        let clean = flips.is_empty() && counts.is_none() && cut.is_none();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len() + 1));
        }
        let pending = vec![(id, RecordType::A, (), None)];
        match match_reply(&bytes, &name, &pending) {
            Reply::Ours(i, reply) => {
                prop_assert_eq!(i, 0);
                prop_assert_eq!(reply.metadata.id, id);
                prop_assert_eq!(reply.queries.len(), 1);
                let q = &reply.queries[0];
                prop_assert!(q.name().eq_ignore_root(&name));
                prop_assert_eq!(q.query_type(), RecordType::A);
                prop_assert_eq!(q.query_class(), DNSClass::IN);
            }
            Reply::NotOurs | Reply::Unparseable(_) => {
                if clean {
                    // An untouched reply is ours exactly when it answers our question.
                    let ours = same_id && questions == 1 && !chaos && qtype == RecordType::A
                        && (qname == "lyncpool.contoso.test." || qname == "LyncPool.CONTOSO.test.");
                    prop_assert!(!ours, "a matching reply was not taken");
                }
            }
        }
    }

    #[test]
    fn certificates(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut der = cert_der().to_vec();
        for (at, v) in flips {
            let i = at.index(der.len());
            der[i] = v;
        }
        if let Some(c) = cut {
            der.truncate(c.index(der.len() + 1));
        }
        let summaries = coexistd::net::tls::cert::summarize_der(&[rustls::pki_types::CertificateDer::from(der.clone())]);
        prop_assert!(summaries.len() <= 1);
        if let Ok(x) = openssl::x509::X509::from_der(&der) {
            let _ = coexistd::net::tls::cert::summarize(&x);
        }
    }

    #[test]
    fn configurations(
        edits in prop::collection::vec((any::<prop::sample::Index>(), config_edit()), 1..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut lines: Vec<String> = example().lines().map(str::to_owned).collect();
        for (at, edit) in edits {
            let i = at.index(lines.len());
            match edit {
                Edit::Value(v) => {
                    if let Some((k, _)) = lines[i].split_once(" = ") {
                        lines[i] = format!("{k} = {v}");
                    }
                }
                Edit::Duplicate => {
                    let l = lines[i].clone();
                    lines.insert(i, l);
                }
                Edit::Delete => {
                    lines.remove(i);
                }
                Edit::Insert(l) => lines.insert(i, l),
            }
        }
        let mut text = lines.join("\n");
        if let Some(c) = cut {
            let mut end = c.index(text.len() + 1);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        if let Err(e) = coexistd::config::Config::parse(&text, "fuzz.toml") {
            let msg = e.to_string();
            prop_assert!(!msg.contains("$__toml_private"), "internal name leaked: {}", msg);
            prop_assert!(msg.starts_with("fuzz.toml"), "the message names the file: {}", msg);
        }
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Value(String),
    Duplicate,
    Delete,
    Insert(String),
}

fn config_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        prop_oneof![
            Just("18446744073709551615".to_owned()),
            Just("-1".to_owned()),
            Just("0".to_owned()),
            Just("\"\"".to_owned()),
            Just("\"\\u0000\"".to_owned()),
            Just("\"\\r\\n\"".to_owned()),
            Just("1979-05-27T07:32:00Z".to_owned()),
            Just("{ a = 1 }".to_owned()),
            Just("[[1], \"x\"]".to_owned()),
            Just("\"99999999999999999999999999s\"".to_owned()),
            Just(format!("\"{}\"", "x".repeat(5000))),
            Just("\"{fqdn}{fqdn}\"".to_owned()),
            Just("\"https://[::1]:99999/\"".to_owned()),
            Just("true".to_owned()),
            Just("nan".to_owned()),
            "\"[ -~]{0,20}\"",
        ]
        .prop_map(Edit::Value),
        Just(Edit::Duplicate),
        Just(Edit::Delete),
        prop_oneof![
            Just("[[checks]]".to_owned()),
            Just("[[pools]]".to_owned()),
            Just("[agent]".to_owned()),
            Just("name = \"dup\"".to_owned()),
            Just("kind = \"sip\"".to_owned()),
            Just("pools = [\"ocs2007r2\", \"ocs2007r2\"]".to_owned()),
        ]
        .prop_map(Edit::Insert),
    ]
}

fn example() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/coexistd.example.toml")).unwrap()
    })
}

fn cert_der() -> &'static [u8] {
    static DER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DER.get_or_init(|| {
        use coexistd::lab::pki::{Ca, KeyKind, Leaf};
        let ca = Ca::new("Fuzz CA", KeyKind::P256, openssl::hash::MessageDigest::sha256()).unwrap();
        let leaf = ca
            .issue(&Leaf {
                cn: "lyncpool.contoso.test",
                sans: &["lyncpool.contoso.test", "10.0.0.1"],
                ..Leaf::default()
            })
            .unwrap();
        leaf.cert.to_der().unwrap()
    })
}
