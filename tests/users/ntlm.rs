//! The NTLM client (`coexistd::sip::ntlm`) against pyspnego, an NTLM implementation no
//! one here wrote (PyPI; `scripts/test.sh` installs it into `target/pyspnego-venv`):
//! random users, domains, passwords (non-ASCII included) and server challenges, with
//! and without a timestamp in the target info; pyspnego parses each AUTHENTICATE,
//! recomputes the NTLMv2 response from the password, decrypts the exchanged session
//! key, and recomputes every message signature in both directions
//! (`tests/peers/ntlm_check.py`). And as the initiator: pyspnego answers the CHALLENGE
//! the lab's pools issue, and their acceptor (`AuthenticateMsg::verify`) must prove the
//! password and agree on every key and signature (`tests/peers/ntlm_initiate.py`).

use std::io::Write;
use std::process::{Command, Stdio};

use coexistd::sip::ntlm::{self, flags, ChallengeMsg, Nonces};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b
}

/// AV pairs: NetBIOS domain and computer, DNS names, optionally a timestamp, EOL.
fn target_info(timestamp: Option<u64>) -> Vec<u8> {
    let mut t = Vec::new();
    let mut pair = |id: u16, v: &[u8]| {
        t.extend_from_slice(&id.to_le_bytes());
        t.extend_from_slice(&(v.len() as u16).to_le_bytes());
        t.extend_from_slice(v);
    };
    pair(2, &ntlm::unicode("CONTOSO"));
    pair(1, &ntlm::unicode("LYNCFE01"));
    pair(4, &ntlm::unicode("contoso.test"));
    pair(3, &ntlm::unicode("lyncfe01.contoso.test"));
    if let Some(ts) = timestamp {
        pair(7, &ts.to_le_bytes());
    }
    pair(0, &[]);
    t
}

fn python() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyspnego-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: scripts/test.sh creates it (python3 -m venv target/pyspnego-venv && target/pyspnego-venv/bin/pip install pyspnego)",
        p.display()
    );
    p
}

#[test]
fn pyspnego_agrees_with_every_authenticate_message_and_signature() {
    // What a pool offers, with sealing too (the client must not ask for it).
    let server_flags = ntlm::SERVER_FLAGS | flags::SEAL;
    let users = [
        ("alice", "CONTOSO", "alice-Secret-7c1e"),
        ("Bob.Smith", "contoso.test", "pässwörd €uro ✓"),
        ("carol", "", "x"),
    ];
    let mut cases = Vec::new();
    for (i, (user, domain, password)) in users.iter().enumerate() {
        let challenge = ChallengeMsg {
            flags: server_flags,
            server_challenge: random(),
            target_info: target_info((i % 2 == 0).then_some(133_000_000_000_000_000 + i as u64)),
        };
        let nonces = Nonces::fresh().unwrap();
        let a = ntlm::authenticate(&challenge, user, domain, password, "COEXISTD", &nonces).unwrap();
        let sign = |key: &[u8; 16], seal: &[u8; 16]| -> Vec<serde_json::Value> {
            [
                (0u32, "first"),
                (1, "<NTLM><1a2b3c4d><1><SIP Communications Service><lyncfe01.contoso.test>"),
                (4_000_000_007, ""),
            ]
            .iter()
            .map(|(seq, data)| {
                serde_json::json!({
                    "seq": seq,
                    "data": hex(data.as_bytes()),
                    "signature": hex(&ntlm::mac_datagram(key, seal, *seq, data.as_bytes())),
                })
            })
            .collect()
        };
        cases.push(serde_json::json!({
            "user": user,
            "domain": domain,
            "password": password,
            "challenge": hex(&challenge.to_bytes()),
            "authenticate": hex(&a.message),
            "session_key": hex(&nonces.session_key),
            "client_signatures": sign(&a.keys.client_sign, &a.keys.client_seal),
            "server_signatures": sign(&a.keys.server_sign, &a.keys.server_seal),
        }));
        // The server side here accepts what the client side built, and derives the
        // same keys; a wrong password is refused.
        let msg = ntlm::AuthenticateMsg::parse(&a.message).unwrap();
        assert_eq!(msg.verify(password, &challenge.server_challenge).unwrap(), a.keys);
        assert_eq!(msg.verify("wrong", &challenge.server_challenge), Err(ntlm::NtlmError::BadResponse));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ntlm_check.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(serde_json::to_string(&cases).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pyspnego disagrees:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.lines().filter(|l| l.ends_with(": ok")).count(), users.len(), "{text}");
}

#[test]
fn the_pools_acceptor_agrees_with_pyspnego_as_the_initiator() {
    // The CHALLENGE the lab's pools issue; pyspnego answers it and signs in datagram
    // mode; the acceptor here must prove the password, derive the same keys, and
    // check pyspnego's signatures (and pyspnego must check the pool's).
    let users = [
        ("alice", "CONTOSO", "alice-Secret-7c1e"),
        ("Bob.Smith", "contoso.test", "pässwörd €uro ✓"),
        ("carol", "", "x"),
    ];
    let data =
        "<NTLM><1a2b3c4d><100><SIP Communications Service><lyncfe01.contoso.test><abc@coexistd><1><MESSAGE>";
    let challenges: Vec<ChallengeMsg> = users
        .iter()
        .enumerate()
        .map(|(i, _)| ChallengeMsg {
            flags: ntlm::SERVER_FLAGS,
            server_challenge: random(),
            target_info: target_info((i % 2 == 1).then_some(133_000_000_000_000_000 + i as u64)),
        })
        .collect();
    let cases: Vec<serde_json::Value> = users
        .iter()
        .zip(&challenges)
        .map(|((user, domain, password), c)| {
            serde_json::json!({
                "user": user, "domain": domain, "password": password,
                "challenge": hex(&c.to_bytes()), "seq": ntlm_seq(), "data": hex(data.as_bytes()),
            })
        })
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ntlm_initiate.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(serde_json::to_string(&cases).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pyspnego: {}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answers.len(), users.len());
    for (((user, domain, password), c), a) in users.iter().zip(&challenges).zip(&answers) {
        let bytes: Vec<u8> = unhex(a["authenticate"].as_str().unwrap());
        let msg = ntlm::AuthenticateMsg::parse(&bytes).unwrap();
        assert_eq!((msg.user.as_str(), msg.domain.as_str()), (*user, *domain));
        let keys = msg.verify(password, &c.server_challenge).unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(msg.verify("wrong", &c.server_challenge), Err(ntlm::NtlmError::BadResponse), "{user}");
        for (sign, seal, field) in [
            (&keys.client_sign, &keys.client_seal, "client_signature"),
            (&keys.server_sign, &keys.server_seal, "server_signature"),
        ] {
            let ours = hex(&ntlm::mac_datagram(sign, seal, ntlm_seq(), data.as_bytes()));
            assert_eq!(ours, a[field].as_str().unwrap(), "{user}: {field}");
        }
    }
}

/// The sequence number MS-SIPAE signs with.
fn ntlm_seq() -> u32 {
    coexistd::sip::sipae::SEQUENCE
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}
