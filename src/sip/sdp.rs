//! Session descriptions the test users' endpoints offer and answer (RFC 4566, RFC 3264):
//! a call's audio (PCMU, PCMA, telephone events, as a desk phone offers them) and an IM
//! session's `m=message` (as Lync and OCS clients offer one). No media flows through
//! them: the ports are not listened on.
//!
//! Wire layer: no I/O.

use super::message;

/// The audio codecs a call offers and an endpoint answers with: (payload type, name).
pub const AUDIO_CODECS: [(u8, &str); 2] = [(0, "PCMU/8000"), (8, "PCMA/8000")];

/// A call's SDP offer from `sent_by` (RFC 3264, as a desk phone makes one: PCMU, PCMA and
/// telephone events); no media flows through it (the port is not listened on).
pub fn audio_offer(sent_by: &str) -> Vec<u8> {
    audio_sdp(sent_by, &[0, 8])
}

/// The answer an endpoint makes to `offer`: the first of [`AUDIO_CODECS`] the offer
/// has; `None` when it has none.
pub fn audio_answer(offer: &[u8], sent_by: &str) -> Option<Vec<u8>> {
    let pt = common_codec(offer)?;
    Some(audio_sdp(sent_by, &[pt]))
}

/// The first of [`AUDIO_CODECS`] that the `m=audio` line of `sdp` lists.
pub fn common_codec(sdp: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(sdp).ok()?;
    let m = text.lines().find_map(|l| l.trim_end().strip_prefix("m=audio "))?;
    let listed: Vec<&str> = m.split_whitespace().skip(2).collect();
    AUDIO_CODECS.iter().map(|(pt, _)| *pt).find(|pt| listed.contains(&pt.to_string().as_str()))
}

fn audio_sdp(sent_by: &str, pts: &[u8]) -> Vec<u8> {
    let host = sent_by.rsplit_once(':').map_or(sent_by, |(h, _)| h).trim_matches(['[', ']']);
    let family = if host.contains(':') { "IP6" } else { "IP4" };
    let session = message::token(8).bytes().fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    let list: Vec<String> = pts.iter().map(u8::to_string).collect();
    let mut s = format!(
        "v=0\r\no=- {session} {session} IN {family} {host}\r\ns=coexistd call\r\nc=IN {family} {host}\r\nt=0 0\r\n\
         m=audio 49170 RTP/AVP {} 101\r\n",
        list.join(" ")
    );
    for pt in pts {
        if let Some((_, name)) = AUDIO_CODECS.iter().find(|(p, _)| p == pt) {
            s.push_str(&format!("a=rtpmap:{pt} {name}\r\n"));
        }
    }
    s.push_str("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n");
    s.into_bytes()
}

/// The session description of an IM session (RFC 4975-style, as Lync and OCS clients
/// offer for instant messaging): no media flows through it here.
pub fn im_sdp(sent_by: &str) -> Vec<u8> {
    let host = sent_by.rsplit_once(':').map_or(sent_by, |(h, _)| h).trim_matches(['[', ']']);
    let family = if host.contains(':') { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=- 0 0 IN {family} {host}\r\ns=session\r\nc=IN {family} {host}\r\nt=0 0\r\n\
         m=message 5060 sip null\r\na=accept-types:text/plain\r\n"
    )
    .into_bytes()
}
