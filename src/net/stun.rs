//! STUN (RFC 5389) on the wire: the Binding request a client sends to learn its
//! reflexive transport address, and the parts of the answer a monitor checks — the
//! transaction ID, the class (success or error), `XOR-MAPPED-ADDRESS` (or the older
//! `MAPPED-ADDRESS`), `ERROR-CODE`, `SOFTWARE`, and `FINGERPRINT` when present. RFC 5389
//! STUN and TURN servers answer it on UDP and TCP 3478.
//!
//! Wire layer: no I/O; a response is parsed only within its declared length, every
//! attribute bounded by it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The magic cookie of every RFC 5389 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Header length.
pub const HEADER: usize = 20;
/// The longest response read (a Binding response is about 100 bytes).
pub const MAX_RESPONSE: usize = 2048;

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
const MAPPED_ADDRESS: u16 = 0x0001;
const ERROR_CODE: u16 = 0x0009;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const SOFTWARE: u16 = 0x8022;
const FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// A Binding request with transaction ID `tid` and no attributes.
pub fn binding_request(tid: &[u8; 12]) -> [u8; HEADER] {
    let mut b = [0u8; HEADER];
    b[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    b[8..20].copy_from_slice(tid);
    b
}

/// The length of the whole message whose header starts `buf` (a stream's framing),
/// once 20 bytes are there.
pub fn message_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= HEADER).then(|| HEADER + usize::from(u16::from_be_bytes([buf[2], buf[3]])))
}

/// What a Binding response said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Success: the reflexive address, and the server's `SOFTWARE`, if any.
    Mapped(SocketAddr, Option<String>),
    /// An error response: its code and reason phrase.
    Error(u16, String),
}

/// Why a response is not a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Not STUN, or cut short.
    #[error("not a STUN message: {0}")]
    Malformed(&'static str),
    /// Another transaction's.
    #[error("a response to another transaction")]
    OtherTransaction,
    /// A success without an address in it.
    #[error("a Binding success without a mapped address")]
    NoAddress,
    /// `FINGERPRINT` present and wrong.
    #[error("FINGERPRINT does not match the message")]
    Fingerprint,
}

/// An answer that is not a usable Binding success: `stun_malformed`, so that `?` turns it into a probe step's failure.
impl From<StunError> for crate::failure::Failure {
    fn from(e: StunError) -> crate::failure::Failure {
        crate::failure::Failure::new(crate::failure::FailureReason::StunMalformed, e.to_string())
    }
}

/// Parses a Binding response to transaction `tid`.
pub fn parse_response(msg: &[u8], tid: &[u8; 12]) -> Result<Answer, StunError> {
    if msg.len() < HEADER {
        return Err(StunError::Malformed("shorter than a header"));
    }
    let kind = u16::from_be_bytes([msg[0], msg[1]]);
    if kind & 0xC000 != 0 {
        return Err(StunError::Malformed("the first two bits are not zero"));
    }
    let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    if u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]) != MAGIC_COOKIE {
        return Err(StunError::Malformed("no magic cookie"));
    }
    if len % 4 != 0 || msg.len() < HEADER + len {
        return Err(StunError::Malformed("the length does not fit the message"));
    }
    if &msg[8..20] != tid {
        return Err(StunError::OtherTransaction);
    }
    if kind != BINDING_SUCCESS && kind != BINDING_ERROR {
        return Err(StunError::Malformed("not a Binding response"));
    }
    let body = &msg[HEADER..HEADER + len];
    let (mut xor_mapped, mut mapped, mut software, mut error) = (None, None, None, None);
    let mut at = 0;
    while at + 4 <= body.len() {
        let t = u16::from_be_bytes([body[at], body[at + 1]]);
        let l = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let start = at + 4;
        let Some(v) = body.get(start..start + l) else {
            return Err(StunError::Malformed("an attribute runs past the message"));
        };
        match t {
            XOR_MAPPED_ADDRESS => xor_mapped = address(v, Some(&msg[4..20])),
            MAPPED_ADDRESS => mapped = address(v, None),
            SOFTWARE => software = Some(String::from_utf8_lossy(v).trim_end().chars().take(128).collect()),
            ERROR_CODE if v.len() >= 4 => {
                let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
                let phrase: String = String::from_utf8_lossy(&v[4..]).chars().take(128).collect();
                error = Some((code, phrase));
            }
            FINGERPRINT if v.len() == 4 => {
                // CRC-32 of the message up to this attribute, with the length field as
                // sent, XOR 0x5354554E (RFC 5389 §15.5).
                let want = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                let crc = crc32fast::hash(&msg[..HEADER + at]) ^ FINGERPRINT_XOR;
                if crc != want {
                    return Err(StunError::Fingerprint);
                }
            }
            _ => {}
        }
        at = start + l.div_ceil(4) * 4;
    }
    if kind == BINDING_ERROR {
        let (code, phrase) = error.unwrap_or((0, "no ERROR-CODE".to_owned()));
        return Ok(Answer::Error(code, phrase));
    }
    xor_mapped.or(mapped).map(|a| Answer::Mapped(a, software)).ok_or(StunError::NoAddress)
}

/// A (XOR-)MAPPED-ADDRESS value; `xor`: the cookie and transaction ID to undo.
fn address(v: &[u8], xor: Option<&[u8]>) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let family = v[1];
    let mut port = u16::from_be_bytes([v[2], v[3]]);
    let key = xor.unwrap_or(&[0u8; 16]);
    if xor.is_some() {
        port ^= u16::from_be_bytes([key[0], key[1]]);
    }
    let ip = match (family, v.len()) {
        (0x01, 8) => {
            let mut a = [0u8; 4];
            for (i, b) in a.iter_mut().enumerate() {
                *b = v[4 + i] ^ key[i];
            }
            IpAddr::V4(Ipv4Addr::from(a))
        }
        (0x02, 20) => {
            let mut a = [0u8; 16];
            for (i, b) in a.iter_mut().enumerate() {
                *b = v[4 + i] ^ key[i];
            }
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// RFC 5769 §2.2, "Sample IPv4 Response": XOR-MAPPED-ADDRESS 192.0.2.1:32853,
    /// SOFTWARE "test vector", MESSAGE-INTEGRITY and a FINGERPRINT that must check.
    const RFC5769_IPV4: &str = "0101003c 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 20766563
        746f7220 00200008 0001a147 e112a643 00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
        80280004 c07d4c96";

    #[test]
    fn rfc_5769_sample_ipv4_response() {
        let msg = unhex(RFC5769_IPV4);
        let tid: [u8; 12] = msg[8..20].try_into().unwrap();
        assert_eq!(
            parse_response(&msg, &tid),
            Ok(Answer::Mapped("192.0.2.1:32853".parse().unwrap(), Some("test vector".into())))
        );
        // One bit changed anywhere before the FINGERPRINT is caught.
        let mut bad = msg.clone();
        bad[30] ^= 1;
        assert_eq!(parse_response(&bad, &tid), Err(StunError::Fingerprint));
        assert_eq!(parse_response(&msg, &[0; 12]), Err(StunError::OtherTransaction));
    }

    /// RFC 5769 §2.3, "Sample IPv6 Response": 2001:db8:1234:5678:11:2233:4455:6677 port
    /// 32853.
    #[test]
    fn rfc_5769_sample_ipv6_response() {
        let msg = unhex(
            "01010048 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 20766563 746f7220
             00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9 00080014 a382954e 4be67bf1
             1784c97c 8292c275 bfe3ed41 80280004 c8fb0b4c",
        );
        let tid: [u8; 12] = msg[8..20].try_into().unwrap();
        assert_eq!(
            parse_response(&msg, &tid),
            Ok(Answer::Mapped(
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap(),
                Some("test vector".into())
            ))
        );
    }

    #[test]
    fn an_error_response_and_hostile_lengths() {
        let tid = [7u8; 12];
        let mut e = vec![0x01, 0x11, 0, 20];
        e.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        e.extend_from_slice(&tid);
        e.extend_from_slice(&[0x00, 0x09, 0x00, 0x10, 0, 0, 4, 20]);
        e.extend_from_slice(b"Unauthorized");
        // Cut short, or an attribute longer than the message: malformed, no panic.
        assert_eq!(
            parse_response(&e[..e.len() - 4], &tid),
            Err(StunError::Malformed("the length does not fit the message"))
        );
        assert_eq!(parse_response(&e, &tid), Ok(Answer::Error(420, "Unauthorized".into())));
        let mut long = e.clone();
        long[23] = 0xff;
        assert!(parse_response(&long, &tid).is_err());
        assert_eq!(message_len(&binding_request(&tid)), Some(HEADER));
    }
}
