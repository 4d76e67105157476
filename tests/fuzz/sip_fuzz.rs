//! Property tests of the SIP parser: any bytes, and valid responses with random
//! damage, must never panic, never claim more bytes than given, and never accept a
//! message larger than the 64 KiB cap. (A coverage-guided fuzzer is not needed for a
//! parser this size; these run thousands of cases on every test run.)

use coexistd::sip::message::{parse, Parsed, MAX_MESSAGE};
use proptest::prelude::*;

const VALID: &[u8] = b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1\r\ni: c@x\r\nCSeq: 1 OPTIONS\r\nServer: x\r\nl: 3\r\n\r\nabc";

fn check(bytes: &[u8]) {
    for stream in [true, false] {
        if let Ok(Parsed::Complete(m, used)) = parse(bytes, stream) {
            assert!(used <= bytes.len());
            assert!(m.body.len() <= MAX_MESSAGE);
            let _ = (m.status(), m.top_via_branch(), m.cseq(), m.software());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes);
    }

    #[test]
    fn damaged_responses(flips in proptest::collection::vec((0..VALID.len(), any::<u8>()), 1..8), cut in 0..VALID.len() + 1) {
        let mut b = VALID.to_vec();
        for (i, v) in flips {
            b[i] = v;
        }
        b.truncate(cut);
        check(&b);
    }

    #[test]
    fn sip_shaped_text(lines in proptest::collection::vec("[ -~]{0,40}", 0..20), len in 0usize..200_000) {
        let text = format!("SIP/2.0 200 OK\r\n{}\r\nContent-Length: {len}\r\n\r\n", lines.join("\r\n"));
        check(text.as_bytes());
    }
}
