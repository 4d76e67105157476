//! NTLM as a client (MS-NLMP), in the connectionless mode that MS-SIPAE uses for SIP:
//! no NEGOTIATE message, the server's CHALLENGE comes in a `401`/`407`, the client's
//! AUTHENTICATE (NTLMv2, extended session security, key exchange) answers it, and from
//! then on every message is signed with a MAC keyed by the exchanged session key, the
//! RC4 state re-keyed per message from its sequence number (MS-NLMP §3.4.3, datagram
//! mode). The server side (verifying an AUTHENTICATE, signing as the server) is here
//! too, for the lab's pools and the tests.
//!
//! Wire layer: no I/O. The password, its NT hash and the session keys never print
//! ([`Keys`] and [`crate::sip::auth::Secret`] have no readable `Debug`).

use hmac::{Hmac, Mac};
use md4::Md4;
use md5::{Digest, Md5};
use rc4::{KeyInit, Rc4, StreamCipher};

type HmacMd5 = Hmac<Md5>;

/// Negotiate flags (MS-NLMP §2.2.2.5).
pub mod flags {
    /// Unicode strings.
    pub const UNICODE: u32 = 0x0000_0001;
    /// OEM strings.
    pub const OEM: u32 = 0x0000_0002;
    /// The server returns its target name.
    pub const REQUEST_TARGET: u32 = 0x0000_0004;
    /// Message integrity (signatures).
    pub const SIGN: u32 = 0x0000_0010;
    /// Message confidentiality.
    pub const SEAL: u32 = 0x0000_0020;
    /// Connectionless (datagram) mode.
    pub const DATAGRAM: u32 = 0x0000_0040;
    /// NTLM v1 session security (not used with NTLMv2).
    pub const LM_KEY: u32 = 0x0000_0080;
    /// NTLM authentication.
    pub const NTLM: u32 = 0x0000_0200;
    /// A signature even without SIGN negotiated.
    pub const ALWAYS_SIGN: u32 = 0x0000_8000;
    /// Target is a domain.
    pub const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
    /// Target is a server.
    pub const TARGET_TYPE_SERVER: u32 = 0x0002_0000;
    /// Extended session security (NTLM2 session security keys and MACs).
    pub const EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
    /// Identify-level token (a server acting for the client cannot impersonate it).
    pub const IDENTIFY: u32 = 0x0010_0000;
    /// Target information in the CHALLENGE.
    pub const TARGET_INFO: u32 = 0x0080_0000;
    /// The Version field is present.
    pub const VERSION: u32 = 0x0200_0000;
    /// 128-bit session keys.
    pub const N128: u32 = 0x2000_0000;
    /// The client sends an encrypted random session key.
    pub const KEY_EXCH: u32 = 0x4000_0000;
    /// 56-bit keys.
    pub const N56: u32 = 0x8000_0000;
}

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

/// Why an NTLM message cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NtlmError {
    /// Not an NTLMSSP message of the expected type, or truncated.
    #[error("malformed NTLM {0} message: {1}")]
    Malformed(&'static str, &'static str),
    /// The server does not offer what MS-SIPAE needs.
    #[error("the server's NTLM challenge lacks {0}")]
    Unsupported(&'static str),
    /// The AUTHENTICATE message does not prove the password (server side).
    #[error("the NTLMv2 response does not match the password")]
    BadResponse,
}

/// The CHALLENGE message's parts a client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeMsg {
    /// Negotiate flags the server chose.
    pub flags: u32,
    /// The server challenge.
    pub server_challenge: [u8; 8],
    /// Target information (AV pairs), echoed in the NTLMv2 response.
    pub target_info: Vec<u8>,
}

fn field(msg: &[u8], at: usize, what: &'static str) -> Result<Vec<u8>, NtlmError> {
    let hdr = msg.get(at..at + 8).ok_or(NtlmError::Malformed(what, "truncated header"))?;
    let len = usize::from(u16::from_le_bytes([hdr[0], hdr[1]]));
    let off = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
    if len == 0 {
        return Ok(Vec::new());
    }
    msg.get(off..off.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or(NtlmError::Malformed(what, "field outside the message"))
}

impl ChallengeMsg {
    /// Parses a CHALLENGE message (MS-NLMP §2.2.1.2).
    pub fn parse(msg: &[u8]) -> Result<ChallengeMsg, NtlmError> {
        if msg.len() < 48 || &msg[..8] != SIGNATURE || msg[8..12] != 2u32.to_le_bytes() {
            return Err(NtlmError::Malformed("CHALLENGE", "no NTLMSSP type 2 header"));
        }
        let flags = u32::from_le_bytes([msg[20], msg[21], msg[22], msg[23]]);
        let mut server_challenge = [0u8; 8];
        server_challenge.copy_from_slice(&msg[24..32]);
        let target_info =
            if flags & flags::TARGET_INFO != 0 { field(msg, 40, "CHALLENGE")? } else { Vec::new() };
        Ok(ChallengeMsg { flags, server_challenge, target_info })
    }

    /// Builds a CHALLENGE message (the lab's server side).
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload_at = 56u32;
        let mut m = Vec::with_capacity(64 + self.target_info.len());
        m.extend_from_slice(SIGNATURE);
        m.extend_from_slice(&2u32.to_le_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&payload_at.to_le_bytes());
        m.extend_from_slice(&self.flags.to_le_bytes());
        m.extend_from_slice(&self.server_challenge);
        m.extend_from_slice(&[0u8; 8]);
        let n = self.target_info.len() as u16;
        m.extend_from_slice(&n.to_le_bytes());
        m.extend_from_slice(&n.to_le_bytes());
        m.extend_from_slice(&payload_at.to_le_bytes());
        m.extend_from_slice(&[6, 1, 0xb1, 0x1d, 0, 0, 0, 15]);
        m.extend_from_slice(&self.target_info);
        m
    }
}

/// UTF-16LE of `s`.
pub fn unicode(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    // invariant: HMAC accepts keys of any length.
    let mut m = <HmacMd5 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn rc4(key: &[u8], data: &mut [u8]) {
    // invariant: RC4 keys here are 16 bytes (session keys, MD5 outputs).
    let mut c = Rc4::<rc4::consts::U16>::new_from_slice(key).expect("a 16-byte RC4 key");
    c.apply_keystream(data);
}

/// NTOWFv2 (MS-NLMP §3.3.2): HMAC_MD5(MD4(UNICODE(password)), UNICODE(UPPER(user) ∥ domain)).
pub fn ntowfv2(password: &str, user: &str, domain: &str) -> [u8; 16] {
    let nt_hash: [u8; 16] = Md4::digest(unicode(password)).into();
    hmac_md5(&nt_hash, &[&unicode(&user.to_uppercase()), &unicode(domain)])
}

/// The NTLMv2 responses and the session base key (MS-NLMP §3.3.2).
#[derive(Clone, PartialEq, Eq)]
pub struct V2Response {
    /// LmChallengeResponse (LMv2; zeros when the target info carries a timestamp).
    pub lm: Vec<u8>,
    /// NtChallengeResponse: NTProofStr ∥ temp.
    pub nt: Vec<u8>,
    /// SessionBaseKey (the key exchange key of NTLMv2).
    pub session_base_key: [u8; 16],
}

impl std::fmt::Debug for V2Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("V2Response(***)")
    }
}

/// Computes the NTLMv2 responses of `response_key` (NTOWFv2) to `server_challenge`
/// with the client's challenge, time (FILETIME) and the server's target info.
pub fn ntlmv2_response(
    response_key: &[u8; 16],
    server_challenge: &[u8; 8],
    client_challenge: &[u8; 8],
    time: u64,
    target_info: &[u8],
) -> V2Response {
    let mut temp = Vec::with_capacity(28 + target_info.len() + 4);
    temp.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
    temp.extend_from_slice(&time.to_le_bytes());
    temp.extend_from_slice(client_challenge);
    temp.extend_from_slice(&[0; 4]);
    temp.extend_from_slice(target_info);
    temp.extend_from_slice(&[0; 4]);
    let proof = hmac_md5(response_key, &[server_challenge, &temp]);
    let mut nt = proof.to_vec();
    nt.extend_from_slice(&temp);
    let mut lm = hmac_md5(response_key, &[server_challenge, client_challenge]).to_vec();
    lm.extend_from_slice(client_challenge);
    if av_timestamp(target_info).is_some() {
        lm = vec![0; 24];
    }
    V2Response { lm, nt, session_base_key: hmac_md5(response_key, &[&proof]) }
}

/// The `MsvAvTimestamp` of a target info, if any.
pub fn av_timestamp(target_info: &[u8]) -> Option<u64> {
    let mut at = 0;
    while let Some(h) = target_info.get(at..at + 4) {
        let id = u16::from_le_bytes([h[0], h[1]]);
        let len = usize::from(u16::from_le_bytes([h[2], h[3]]));
        let value = target_info.get(at + 4..at + 4 + len)?;
        match id {
            0 => return None,
            7 if len == 8 => return Some(u64::from_le_bytes(value.try_into().ok()?)),
            _ => at += 4 + len,
        }
    }
    None
}

/// The session keys of one security association: signing and sealing, each direction.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    /// Client-to-server signing key.
    pub client_sign: [u8; 16],
    /// Client-to-server sealing key.
    pub client_seal: [u8; 16],
    /// Server-to-client signing key.
    pub server_sign: [u8; 16],
    /// Server-to-client sealing key.
    pub server_seal: [u8; 16],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(***)")
    }
}

impl Keys {
    /// SIGNKEY and SEALKEY of `exported` (the exported session key) with extended
    /// session security and 128-bit keys (MS-NLMP §3.4.5.2, §3.4.5.3).
    pub fn derive(exported: &[u8; 16]) -> Keys {
        let k = |magic: &[u8]| md5(&[exported, magic]);
        Keys {
            client_sign: k(b"session key to client-to-server signing key magic constant\0"),
            client_seal: k(b"session key to client-to-server sealing key magic constant\0"),
            server_sign: k(b"session key to server-to-client signing key magic constant\0"),
            server_seal: k(b"session key to server-to-client sealing key magic constant\0"),
        }
    }
}

/// The MAC of `message` with sequence number `seq` (MS-NLMP §3.4.4.2, extended
/// session security with key exchange): version 1, the first 8 bytes of
/// HMAC_MD5(sign_key, seq ∥ message) encrypted with RC4, the sequence number. In
/// datagram mode the RC4 state starts afresh for every message, keyed with
/// MD5(seal_key ∥ seq) (§3.4.3).
pub fn mac_datagram(sign_key: &[u8; 16], seal_key: &[u8; 16], seq: u32, message: &[u8]) -> [u8; 16] {
    let seq_bytes = seq.to_le_bytes();
    let mut checksum = [0u8; 8];
    checksum.copy_from_slice(&hmac_md5(sign_key, &[&seq_bytes, message])[..8]);
    let per_message = md5(&[seal_key, &seq_bytes]);
    rc4(&per_message, &mut checksum);
    let mut sig = [0u8; 16];
    sig[..4].copy_from_slice(&1u32.to_le_bytes());
    sig[4..12].copy_from_slice(&checksum);
    sig[12..].copy_from_slice(&seq_bytes);
    sig
}

/// What the client sends and keeps after answering a CHALLENGE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The AUTHENTICATE message.
    pub message: Vec<u8>,
    /// The association's keys.
    pub keys: Keys,
}

/// The client's inputs that are random or clock-dependent, fixed by tests.
#[derive(Debug, Clone, Copy)]
pub struct Nonces {
    /// ClientChallenge.
    pub client_challenge: [u8; 8],
    /// The exported session key (sent encrypted under the key exchange key).
    pub session_key: [u8; 16],
    /// FILETIME of the response (the target info's timestamp when it has one).
    pub time: u64,
}

impl Nonces {
    /// Fresh random values and the current time; `None` when the system's random
    /// source fails (never a predictable session key).
    pub fn fresh() -> Option<Nonces> {
        let mut b = [0u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).ok()?;
        let mut client_challenge = [0u8; 8];
        client_challenge.copy_from_slice(&b[..8]);
        let mut session_key = [0u8; 16];
        session_key.copy_from_slice(&b[8..]);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() / 100) as u64;
        Some(Nonces { client_challenge, session_key, time: unix + 116_444_736_000_000_000 })
    }
}

/// The flags a pool offers in its CHALLENGE (as OCS 2007 R2 does, 0xE29882F3 less the
/// OEM and LM-key bits): what the lab's pools and the tests' registrars send.
pub const SERVER_FLAGS: u32 = flags::UNICODE
    | flags::REQUEST_TARGET
    | flags::SIGN
    | flags::DATAGRAM
    | flags::NTLM
    | flags::ALWAYS_SIGN
    | flags::TARGET_TYPE_DOMAIN
    | flags::EXTENDED_SESSIONSECURITY
    | flags::IDENTIFY
    | flags::TARGET_INFO
    | flags::VERSION
    | flags::N128
    | flags::KEY_EXCH
    | flags::N56;

/// The flags the client asks for in connectionless mode (MS-SIPAE §3.2.5.1.2 with
/// MS-NLMP §3.1.5.2): the server's choice intersected with these.
pub const CLIENT_FLAGS: u32 = flags::UNICODE
    | flags::SIGN
    | flags::DATAGRAM
    | flags::NTLM
    | flags::ALWAYS_SIGN
    | flags::EXTENDED_SESSIONSECURITY
    | flags::IDENTIFY
    | flags::TARGET_INFO
    | flags::VERSION
    | flags::N128
    | flags::KEY_EXCH
    | flags::N56;

/// The NEGOTIATE message (MS-NLMP §2.2.1.1) a connection-oriented client (HTTP, RFC
/// 4559) opens with: Unicode, NTLM, extended session security, 128-bit keys, key
/// exchange, no domain or workstation named.
pub fn negotiate_message() -> Vec<u8> {
    let f = flags::UNICODE
        | flags::OEM
        | flags::REQUEST_TARGET
        | flags::NTLM
        | flags::ALWAYS_SIGN
        | flags::EXTENDED_SESSIONSECURITY
        | flags::N128
        | flags::KEY_EXCH
        | flags::N56;
    let mut m = b"NTLMSSP\0".to_vec();
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&f.to_le_bytes());
    // DomainNameFields, WorkstationFields: empty, their offsets at the end.
    for _ in 0..2 {
        m.extend_from_slice(&0u16.to_le_bytes());
        m.extend_from_slice(&0u16.to_le_bytes());
        m.extend_from_slice(&32u32.to_le_bytes());
    }
    m
}

/// Answers `challenge` as `user` of `domain` (workstation `workstation`) with NTLMv2:
/// the AUTHENTICATE message and the association's keys. Connectionless (MS-SIPAE).
pub fn authenticate(
    challenge: &ChallengeMsg,
    user: &str,
    domain: &str,
    password: &str,
    workstation: &str,
    nonces: &Nonces,
) -> Result<Authenticated, NtlmError> {
    authenticate_as(challenge, user, domain, password, workstation, nonces, true)
}

/// [`authenticate`] in connection-oriented mode (HTTP after a NEGOTIATE message): the
/// challenge need not offer DATAGRAM or signing, and the answer does not ask for them.
pub fn authenticate_connection(
    challenge: &ChallengeMsg,
    user: &str,
    domain: &str,
    password: &str,
    workstation: &str,
    nonces: &Nonces,
) -> Result<Authenticated, NtlmError> {
    authenticate_as(challenge, user, domain, password, workstation, nonces, false)
}

fn authenticate_as(
    challenge: &ChallengeMsg,
    user: &str,
    domain: &str,
    password: &str,
    workstation: &str,
    nonces: &Nonces,
    datagram: bool,
) -> Result<Authenticated, NtlmError> {
    let need: &[(u32, &'static str)] = if datagram {
        &[
            (flags::DATAGRAM, "connectionless mode (NTLMSSP_NEGOTIATE_DATAGRAM)"),
            (flags::SIGN, "signing (NTLMSSP_NEGOTIATE_SIGN)"),
            (flags::EXTENDED_SESSIONSECURITY, "extended session security"),
            (flags::KEY_EXCH, "key exchange"),
            (flags::N128, "128-bit keys"),
        ]
    } else {
        &[(flags::EXTENDED_SESSIONSECURITY, "extended session security")]
    };
    if let Some((_, what)) = need.iter().find(|(f, _)| challenge.flags & f == 0) {
        return Err(NtlmError::Unsupported(what));
    }
    let key = ntowfv2(password, user, domain);
    let time = av_timestamp(&challenge.target_info).unwrap_or(nonces.time);
    let r = ntlmv2_response(
        &key,
        &challenge.server_challenge,
        &nonces.client_challenge,
        time,
        &challenge.target_info,
    );
    let mut encrypted = nonces.session_key;
    rc4(&r.session_base_key, &mut encrypted);
    // As pidgin-sipe and Office Communicator do: the server's flags within ours, the
    // target requested, 56-bit keys dropped when 128-bit ones are there.
    let mut negotiated = if datagram {
        challenge.flags & CLIENT_FLAGS
            | flags::UNICODE
            | flags::REQUEST_TARGET
            | flags::IDENTIFY
            | flags::DATAGRAM
    } else {
        challenge.flags & CLIENT_FLAGS & !(flags::DATAGRAM | flags::IDENTIFY)
            | flags::UNICODE
            | flags::REQUEST_TARGET
    };
    if negotiated & flags::N128 != 0 {
        negotiated &= !flags::N56;
    }
    let message = authenticate_message(&r, domain, user, workstation, &encrypted, negotiated);
    Ok(Authenticated { message, keys: Keys::derive(&nonces.session_key) })
}

/// Lays out an AUTHENTICATE message (MS-NLMP §2.2.1.3) with a Version and no MIC
/// (connectionless mode has no NEGOTIATE message for a MIC to cover), the payload in
/// the order Windows writes it: domain, user, workstation, LM and NT responses, key.
fn authenticate_message(
    r: &V2Response,
    domain: &str,
    user: &str,
    workstation: &str,
    key: &[u8],
    flags: u32,
) -> Vec<u8> {
    let (lm, nt, dom, usr, ws, k) =
        (r.lm.clone(), r.nt.clone(), unicode(domain), unicode(user), unicode(workstation), key.to_vec());
    let payload: [&Vec<u8>; 6] = [&dom, &usr, &ws, &lm, &nt, &k];
    let mut offsets = [0u32; 6];
    let mut at = 72u32;
    for (o, p) in offsets.iter_mut().zip(payload) {
        *o = at;
        at += p.len() as u32;
    }
    // Header order: LM, NT, domain, user, workstation, key.
    let fields = [
        (&lm, offsets[3]),
        (&nt, offsets[4]),
        (&dom, offsets[0]),
        (&usr, offsets[1]),
        (&ws, offsets[2]),
        (&k, offsets[5]),
    ];
    let mut m = Vec::with_capacity(at as usize);
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&3u32.to_le_bytes());
    for (p, off) in fields {
        let n = p.len() as u16;
        m.extend_from_slice(&n.to_le_bytes());
        m.extend_from_slice(&n.to_le_bytes());
        m.extend_from_slice(&off.to_le_bytes());
    }
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&VERSION);
    for p in payload {
        m.extend_from_slice(p);
    }
    m
}

/// The Version the client sends (6.1.7601, NTLM revision 15), as Lync 2010/2013
/// clients on Windows 7 do.
pub const VERSION: [u8; 8] = [6, 1, 0xb1, 0x1d, 0, 0, 0, 15];

/// The parts of an AUTHENTICATE message a server checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticateMsg {
    /// Negotiate flags.
    pub flags: u32,
    /// LmChallengeResponse.
    pub lm: Vec<u8>,
    /// NtChallengeResponse.
    pub nt: Vec<u8>,
    /// Domain (UTF-16LE decoded).
    pub domain: String,
    /// User (UTF-16LE decoded).
    pub user: String,
    /// Workstation (UTF-16LE decoded).
    pub workstation: String,
    /// EncryptedRandomSessionKey.
    pub encrypted_key: Vec<u8>,
}

fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16_lossy(&units)
}

impl AuthenticateMsg {
    /// Parses an AUTHENTICATE message.
    pub fn parse(msg: &[u8]) -> Result<AuthenticateMsg, NtlmError> {
        if msg.len() < 64 || &msg[..8] != SIGNATURE || msg[8..12] != 3u32.to_le_bytes() {
            return Err(NtlmError::Malformed("AUTHENTICATE", "no NTLMSSP type 3 header"));
        }
        let f = |at| field(msg, at, "AUTHENTICATE");
        Ok(AuthenticateMsg {
            lm: f(12)?,
            nt: f(20)?,
            domain: utf16(&f(28)?),
            user: utf16(&f(36)?),
            workstation: utf16(&f(44)?),
            encrypted_key: f(52)?,
            flags: u32::from_le_bytes([msg[60], msg[61], msg[62], msg[63]]),
        })
    }

    /// Verifies the NTLMv2 response against `password` for the server challenge it
    /// answers; the association's keys when it proves the password.
    pub fn verify(&self, password: &str, server_challenge: &[u8; 8]) -> Result<Keys, NtlmError> {
        if self.nt.len() < 16 + 28 {
            return Err(NtlmError::Malformed("AUTHENTICATE", "NTLMv2 response too short"));
        }
        let key = ntowfv2(password, &self.user, &self.domain);
        let (proof, temp) = self.nt.split_at(16);
        let expected = hmac_md5(&key, &[server_challenge, temp]);
        if expected.as_slice() != proof {
            return Err(NtlmError::BadResponse);
        }
        let base = hmac_md5(&key, &[proof]);
        let exported: [u8; 16] = if self.flags & flags::KEY_EXCH != 0 {
            let mut k: [u8; 16] = self
                .encrypted_key
                .as_slice()
                .try_into()
                .map_err(|_| NtlmError::Malformed("AUTHENTICATE", "session key not 16 bytes"))?;
            rc4(&base, &mut k);
            k
        } else {
            base
        };
        Ok(Keys::derive(&exported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// MS-NLMP §4.2.1 and §4.2.4: User "User", UserDom "Domain", Passwd "Password",
    /// ServerChallenge 0123456789abcdef, ClientChallenge aaaaaaaaaaaaaaaa, Time 0,
    /// RandomSessionKey 55…55, AV pairs NetBIOS domain "Domain" and server "Server".
    const TARGET_INFO: &str = "02000c0044006f006d00610069006e00 01000c005300650072007600650072000000 0000";

    #[test]
    fn ms_nlmp_4_2_4_ntlmv2_values() {
        let key = ntowfv2("Password", "User", "Domain");
        assert_eq!(key.to_vec(), hex("0c868a403bfd7a93a3001ef22ef02e3f"), "NTOWFv2");
        let server = hex("0123456789abcdef").try_into().unwrap();
        let client = [0xaa; 8];
        let r = ntlmv2_response(&key, &server, &client, 0, &hex(TARGET_INFO));
        assert_eq!(r.lm, hex("86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa"), "LMv2 response");
        assert_eq!(r.nt[..16].to_vec(), hex("68cd0ab851e51c96aabc927bebef6a1c"), "NTProofStr");
        assert_eq!(r.session_base_key.to_vec(), hex("8de40ccadbc14a82f15cb0ad0de95ca3"), "SessionBaseKey");
        let mut k = [0x55u8; 16];
        rc4(&r.session_base_key, &mut k);
        assert_eq!(k.to_vec(), hex("c5dad2544fc9799094ce1ce90bc9d03e"), "EncryptedRandomSessionKey");
    }
}
