//! DCE/RPC connection-oriented `bind` (C706 §12.6, MS-RPCE §2.2.2) to the endpoint
//! mapper (`e1af8308-5d1f-11c9-91a4-08002b14a0fa` version 3.0, NDR transfer syntax) on
//! TCP 135, and its `bind_ack`: the first step of every DCOM and RPC call — user moves,
//! OCS 2007 R2 administration over WMI, Central Management Store tooling.
//!
//! Wire layer: no I/O; a response read only within its `frag_length`.

/// PDU types.
const BIND: u8 = 11;
const BIND_ACK: u8 = 12;
const BIND_NAK: u8 = 13;
/// The endpoint mapper interface and the NDR transfer syntax (little-endian UUIDs as on
/// the wire).
const EPM: [u8; 16] =
    [0x08, 0x83, 0xaf, 0xe1, 0x1f, 0x5d, 0xc9, 0x11, 0x91, 0xa4, 0x08, 0x00, 0x2b, 0x14, 0xa0, 0xfa];
const NDR: [u8; 16] =
    [0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60];
/// Fragments read, at most.
pub const MAX_RESPONSE: usize = 8 * 1024;

/// A `bind` to the endpoint mapper with `call_id`.
pub fn epm_bind(call_id: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(56);
    body.extend_from_slice(&4280u16.to_le_bytes()); // max_xmit_frag
    body.extend_from_slice(&4280u16.to_le_bytes()); // max_recv_frag
    body.extend_from_slice(&0u32.to_le_bytes()); // assoc_group_id
    body.extend_from_slice(&[1, 0, 0, 0]); // one context, padding
    body.extend_from_slice(&0u16.to_le_bytes()); // p_cont_id
    body.extend_from_slice(&[1, 0]); // one transfer syntax, reserved
    body.extend_from_slice(&EPM);
    body.extend_from_slice(&3u16.to_le_bytes()); // version 3.0
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&NDR);
    body.extend_from_slice(&2u32.to_le_bytes()); // NDR version 2
    let frag = (16 + body.len()) as u16;
    let mut pdu = vec![5, 0, BIND, 0x03, 0x10, 0, 0, 0];
    pdu.extend_from_slice(&frag.to_le_bytes());
    pdu.extend_from_slice(&0u16.to_le_bytes()); // auth_length
    pdu.extend_from_slice(&call_id.to_le_bytes());
    pdu.extend_from_slice(&body);
    pdu
}

/// The length of the PDU whose header starts `buf`.
pub fn pdu_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 10).then(|| usize::from(u16::from_le_bytes([buf[8], buf[9]])))
}

/// What the endpoint mapper answered to the bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// `bind_ack` accepting the context; the secondary address it names (`135`).
    Accepted(String),
    /// `bind_nak` (its reject reason), or a `bind_ack` rejecting the context (its
    /// result and reason).
    Rejected(String),
}

/// Why a response is not a bind answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// Not DCE/RPC v5, or cut short.
    #[error("not a DCE/RPC bind answer: {0}")]
    Malformed(&'static str),
}

/// An answer that is not a bind answer: `rpc_malformed`, so that `?` turns it into a probe step's failure.
impl From<RpcError> for crate::failure::Failure {
    fn from(e: RpcError) -> crate::failure::Failure {
        crate::failure::Failure::new(crate::failure::FailureReason::RpcMalformed, e.to_string())
    }
}

/// Parses the answer to [`epm_bind`] with `call_id`.
pub fn parse_bind_answer(pdu: &[u8], call_id: u32) -> Result<Bound, RpcError> {
    let len = pdu_len(pdu).ok_or(RpcError::Malformed("shorter than a header"))?;
    let p = pdu
        .get(..len)
        .filter(|p| p.len() >= 16)
        .ok_or(RpcError::Malformed("shorter than its frag_length"))?;
    if p[0] != 5 || p[1] != 0 {
        return Err(RpcError::Malformed("not version 5.0"));
    }
    if p[4] & 0xf0 != 0x10 {
        return Err(RpcError::Malformed("not little-endian"));
    }
    if u32::from_le_bytes([p[12], p[13], p[14], p[15]]) != call_id {
        return Err(RpcError::Malformed("another call's answer"));
    }
    match p[2] {
        BIND_NAK => {
            let reason = p.get(16..18).map_or(0, |r| u16::from_le_bytes([r[0], r[1]]));
            Ok(Bound::Rejected(format!("bind_nak, reject reason {reason}")))
        }
        BIND_ACK => {
            let mut at = 24;
            let sec = usize::from(u16::from_le_bytes([
                *p.get(at).ok_or(RpcError::Malformed("cut short"))?,
                *p.get(at + 1).ok_or(RpcError::Malformed("cut short"))?,
            ]));
            let addr = p.get(at + 2..at + 2 + sec).ok_or(RpcError::Malformed("cut short"))?;
            let addr = String::from_utf8_lossy(addr).trim_end_matches('\0').to_owned();
            at = (at + 2 + sec + 3) & !3;
            let n = *p.get(at).ok_or(RpcError::Malformed("no results"))?;
            if n == 0 {
                return Err(RpcError::Malformed("no results"));
            }
            let r = p.get(at + 4..at + 8).ok_or(RpcError::Malformed("cut short"))?;
            let (result, reason) = (u16::from_le_bytes([r[0], r[1]]), u16::from_le_bytes([r[2], r[3]]));
            if result == 0 {
                Ok(Bound::Accepted(addr))
            } else {
                Ok(Bound::Rejected(format!(
                    "bind_ack rejecting the context: result {result}, reason {reason}"
                )))
            }
        }
        _ => Err(RpcError::Malformed("not a bind_ack or bind_nak")),
    }
}

/// The endpoint mapper's `bind_ack` to a bind with `call_id` (a responder's side: the
/// demo lab's): the context accepted with NDR (`result` 0) or rejected with `result`
/// (2: provider rejection), the secondary address `135`.
pub fn bind_ack(call_id: u32, result: u16) -> Vec<u8> {
    let mut p = vec![5, 0, BIND_ACK, 0x03, 0x10, 0, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(&call_id.to_le_bytes());
    p.extend_from_slice(&4280u16.to_le_bytes()); // max_xmit_frag
    p.extend_from_slice(&4280u16.to_le_bytes()); // max_recv_frag
    p.extend_from_slice(&0x0001_2345u32.to_le_bytes()); // assoc_group_id
    p.extend_from_slice(&4u16.to_le_bytes());
    p.extend_from_slice(b"135\0");
    p.extend_from_slice(&[0, 0]); // to a 4-byte boundary
    p.extend_from_slice(&[1, 0, 0, 0]); // one result
    p.extend_from_slice(&result.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes()); // reason
    p.extend_from_slice(&NDR);
    p.extend_from_slice(&2u32.to_le_bytes());
    let len = p.len() as u16;
    p[8..10].copy_from_slice(&len.to_le_bytes());
    p
}

/// Whether `pdu` is a `bind` (PDU type 11); its call id.
pub fn bind_call_id(pdu: &[u8]) -> Option<u32> {
    (pdu.len() >= 16 && pdu[0] == 5 && pdu[2] == BIND)
        .then(|| u32::from_le_bytes([pdu[12], pdu[13], pdu[14], pdu[15]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The UUIDs laid out as MS-RPCE's examples show them on the wire
    /// (`e1af8308-5d1f-11c9-91a4-08002b14a0fa`, little-endian first three fields).
    #[test]
    fn the_bind_carries_the_endpoint_mapper_and_ndr() {
        let b = epm_bind(7);
        assert_eq!(pdu_len(&b), Some(b.len()));
        assert_eq!(b.len(), 72);
        assert_eq!(bind_call_id(&b), Some(7));
        assert_eq!(&b[0..4], &[5, 0, 11, 3]);
        assert_eq!(&b[32..36], &[0x08, 0x83, 0xaf, 0xe1]);
        assert_eq!(&b[52..56], &[0x04, 0x5d, 0x88, 0x8a]);
    }

    #[test]
    fn acks_naks_and_hostile_answers() {
        assert_eq!(parse_bind_answer(&bind_ack(7, 0), 7), Ok(Bound::Accepted("135".into())));
        assert!(matches!(parse_bind_answer(&bind_ack(7, 2), 7), Ok(Bound::Rejected(_))));
        assert!(parse_bind_answer(&bind_ack(8, 0), 7).is_err());
        let a = bind_ack(7, 0);
        assert!(parse_bind_answer(&a[..30], 7).is_err());
        let mut nak = vec![5, 0, BIND_NAK, 3, 0x10, 0, 0, 0, 18, 0, 0, 0];
        nak.extend_from_slice(&7u32.to_le_bytes());
        nak.extend_from_slice(&[4, 0]);
        assert_eq!(parse_bind_answer(&nak, 7), Ok(Bound::Rejected("bind_nak, reject reason 4".into())));
    }
}
