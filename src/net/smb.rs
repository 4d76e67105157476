//! SMB2 NEGOTIATE (MS-SMB2 §2.2.3, §2.2.4) on the wire: the request a client opens an
//! SMB session with (over TCP 445, each message behind a 4-byte Direct TCP transport
//! header), offering dialects 2.0.2, 2.1, 3.0 and 3.0.2, and the parts of the response
//! a monitor reads — the status, the dialect chosen, whether signing is required. Lync
//! Server's Central Management Store replication copies configuration to every server
//! over SMB.
//!
//! Wire layer: no I/O; a response is read only within its length.

/// The dialects offered, lowest first.
pub const DIALECTS: [u16; 4] = [0x0202, 0x0210, 0x0300, 0x0302];
/// The longest response read.
pub const MAX_RESPONSE: usize = 64 * 1024;

const SMB2_MAGIC: &[u8; 4] = b"\xfeSMB";
const HEADER: usize = 64;

/// A dialect revision as written (`3.0.2`).
pub fn dialect_name(d: u16) -> String {
    match d {
        0x0202 => "2.0.2".into(),
        0x0210 => "2.1".into(),
        0x0300 => "3.0".into(),
        0x0302 => "3.0.2".into(),
        0x0311 => "3.1.1".into(),
        other => format!("0x{other:04x}"),
    }
}

/// The dialect revision named `name` (`2.0.2`, `2.1`, `3.0`, `3.0.2`).
pub fn dialect_of(name: &str) -> Option<u16> {
    DIALECTS.iter().copied().find(|d| dialect_name(*d) == name)
}

/// A NEGOTIATE request with `client_guid`, behind its transport header.
pub fn negotiate_request(client_guid: &[u8; 16]) -> Vec<u8> {
    let mut m = Vec::with_capacity(4 + HEADER + 36 + 8);
    m.extend_from_slice(SMB2_MAGIC);
    m.extend_from_slice(&64u16.to_le_bytes()); // StructureSize
    m.extend_from_slice(&0u16.to_le_bytes()); // CreditCharge
    m.extend_from_slice(&0u32.to_le_bytes()); // Status
    m.extend_from_slice(&0u16.to_le_bytes()); // Command: NEGOTIATE
    m.extend_from_slice(&1u16.to_le_bytes()); // CreditRequest
    m.extend_from_slice(&0u32.to_le_bytes()); // Flags
    m.extend_from_slice(&0u32.to_le_bytes()); // NextCommand
    m.extend_from_slice(&0u64.to_le_bytes()); // MessageId
    m.extend_from_slice(&0u32.to_le_bytes()); // Reserved (ProcessId)
    m.extend_from_slice(&0u32.to_le_bytes()); // TreeId
    m.extend_from_slice(&0u64.to_le_bytes()); // SessionId
    m.extend_from_slice(&[0u8; 16]); // Signature
    m.extend_from_slice(&36u16.to_le_bytes()); // StructureSize
    m.extend_from_slice(&(DIALECTS.len() as u16).to_le_bytes());
    m.extend_from_slice(&1u16.to_le_bytes()); // SecurityMode: signing enabled
    m.extend_from_slice(&0u16.to_le_bytes()); // Reserved
    m.extend_from_slice(&0u32.to_le_bytes()); // Capabilities
    m.extend_from_slice(client_guid);
    m.extend_from_slice(&0u64.to_le_bytes()); // ClientStartTime
    for d in DIALECTS {
        m.extend_from_slice(&d.to_le_bytes());
    }
    let mut out = (m.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&m);
    out
}

/// The length of the message whose transport header starts `buf`, header included.
pub fn message_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 4).then(|| 4 + (u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize))
}

/// What a NEGOTIATE response said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The dialect revision chosen.
    pub dialect: u16,
    /// The server requires signing.
    pub signing_required: bool,
}

/// Why a response is not a NEGOTIATE response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmbError {
    /// Not SMB2, or cut short.
    #[error("not an SMB2 NEGOTIATE response: {0}")]
    Malformed(&'static str),
    /// An error status.
    #[error("NEGOTIATE answered with status 0x{0:08x}")]
    Status(u32),
}

/// An answer that is not a NEGOTIATE response: `smb_malformed`, so that `?` turns it into a probe step's failure.
impl From<SmbError> for crate::failure::Failure {
    fn from(e: SmbError) -> crate::failure::Failure {
        crate::failure::Failure::new(crate::failure::FailureReason::SmbMalformed, e.to_string())
    }
}

/// Parses a NEGOTIATE response (transport header included).
pub fn parse_negotiate_response(msg: &[u8]) -> Result<Negotiated, SmbError> {
    let len = message_len(msg).ok_or(SmbError::Malformed("shorter than its transport header"))?;
    let m = msg.get(4..len).ok_or(SmbError::Malformed("shorter than its transport header says"))?;
    if m.len() < HEADER + 6 {
        return Err(SmbError::Malformed("shorter than a header and a response"));
    }
    if &m[..4] != SMB2_MAGIC {
        return Err(SmbError::Malformed(if &m[..4] == b"\xffSMB" {
            "an SMB1 answer"
        } else {
            "no SMB2 magic"
        }));
    }
    let status = u32::from_le_bytes([m[8], m[9], m[10], m[11]]);
    let command = u16::from_le_bytes([m[12], m[13]]);
    if command != 0 {
        return Err(SmbError::Malformed("not a NEGOTIATE"));
    }
    if status != 0 {
        return Err(SmbError::Status(status));
    }
    let b = &m[HEADER..];
    if u16::from_le_bytes([b[0], b[1]]) != 65 {
        return Err(SmbError::Malformed("a NEGOTIATE response's size is not 65"));
    }
    let security_mode = u16::from_le_bytes([b[2], b[3]]);
    let dialect = u16::from_le_bytes([b[4], b[5]]);
    if !DIALECTS.contains(&dialect) {
        return Err(SmbError::Malformed("a dialect that was not offered"));
    }
    Ok(Negotiated { dialect, signing_required: security_mode & 0x02 != 0 })
}

/// The dialects a NEGOTIATE request offers (transport header included); `None` when it
/// is not one.
pub fn offered_dialects(msg: &[u8]) -> Option<Vec<u16>> {
    let len = message_len(msg)?;
    let m = msg.get(4..len)?;
    if m.len() < HEADER + 36 || &m[..4] != SMB2_MAGIC || u16::from_le_bytes([m[12], m[13]]) != 0 {
        return None;
    }
    let b = &m[HEADER..];
    let count = usize::from(u16::from_le_bytes([b[2], b[3]]));
    let list = b.get(36..36 + 2 * count)?;
    Some(list.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
}

/// A NEGOTIATE response (a responder's side: the demo lab's) with `status`, the
/// `security_mode` (1: signing enabled, 3: required) and `dialect`, behind its
/// transport header; no security buffer.
pub fn negotiate_response(status: u32, security_mode: u16, dialect: u16) -> Vec<u8> {
    let mut m = SMB2_MAGIC.to_vec();
    m.extend_from_slice(&64u16.to_le_bytes()); // StructureSize
    m.extend_from_slice(&0u16.to_le_bytes()); // CreditCharge
    m.extend_from_slice(&status.to_le_bytes());
    m.extend_from_slice(&0u16.to_le_bytes()); // Command: NEGOTIATE
    m.extend_from_slice(&1u16.to_le_bytes()); // CreditResponse
    m.extend_from_slice(&1u32.to_le_bytes()); // Flags: SERVER_TO_REDIR
    m.extend_from_slice(&[0u8; 4 + 8 + 4 + 4 + 8 + 16]); // NextCommand … Signature
    m.extend_from_slice(&65u16.to_le_bytes()); // StructureSize
    m.extend_from_slice(&security_mode.to_le_bytes());
    m.extend_from_slice(&dialect.to_le_bytes());
    m.extend_from_slice(&0u16.to_le_bytes()); // NegotiateContextCount
    m.extend_from_slice(&[0x5a; 16]); // ServerGuid
    m.extend_from_slice(&0u32.to_le_bytes()); // Capabilities
    for _ in 0..3 {
        m.extend_from_slice(&(8u32 << 20).to_le_bytes()); // MaxTransact/Read/WriteSize
    }
    m.extend_from_slice(&[0u8; 16]); // SystemTime, ServerStartTime
    m.extend_from_slice(&128u16.to_le_bytes()); // SecurityBufferOffset
    m.extend_from_slice(&0u16.to_le_bytes()); // SecurityBufferLength
    m.extend_from_slice(&0u32.to_le_bytes()); // NegotiateContextOffset
    let mut out = (m.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&m);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_laid_out_as_ms_smb2_says() {
        let r = negotiate_request(&[0x11; 16]);
        assert_eq!(message_len(&r), Some(r.len()));
        assert_eq!(&r[4..8], b"\xfeSMB");
        // Dialects at the end, after the 36-byte request body.
        assert_eq!(r.len(), 4 + 64 + 36 + 8);
        assert_eq!(&r[r.len() - 8..], &[0x02, 0x02, 0x10, 0x02, 0x00, 0x03, 0x02, 0x03]);
        assert_eq!(offered_dialects(&r), Some(DIALECTS.to_vec()));
        assert_eq!(negotiate_response(0, 1, 0x0302).len(), 4 + 64 + 64);
    }

    #[test]
    fn responses_read_back_and_hostile_ones_are_refused() {
        assert_eq!(
            parse_negotiate_response(&negotiate_response(0, 3, 0x0302)),
            Ok(Negotiated { dialect: 0x0302, signing_required: true })
        );
        assert_eq!(
            parse_negotiate_response(&negotiate_response(0xC000_0022, 1, 0)),
            Err(SmbError::Status(0xC000_0022))
        );
        assert!(
            parse_negotiate_response(&negotiate_response(0, 1, 0x0311)).is_err(),
            "a dialect not offered"
        );
        let r = negotiate_response(0, 1, 0x0210);
        assert!(parse_negotiate_response(&r[..40]).is_err());
        let mut smb1 = r.clone();
        smb1[4] = 0xff;
        assert_eq!(parse_negotiate_response(&smb1), Err(SmbError::Malformed("an SMB1 answer")));
        assert_eq!(dialect_of("2.1"), Some(0x0210));
        assert_eq!(dialect_name(0x0311), "3.1.1");
    }
}
