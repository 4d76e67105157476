//! SIP messages on the wire, without sockets: the requests the user agent sends
//! (OPTIONS, REGISTER and a test user's requests: RFC 3261 §8.1.1, §10.2), the responses
//! an endpoint answers with (§8.2.6), URIs and parameters (a redirect's `Contact`, tags),
//! and one bounded parser for requests and responses alike.
//!
//! The parser takes bytes and says: a complete message (and how many bytes it used),
//! more bytes needed, or malformed. It never reads past [`MAX_MESSAGE`] bytes, so a peer
//! cannot make the probe buffer without bound; header names in compact form (`v`, `i`,
//! `l`, `f`, `t`, `m`, …) are expanded and folded header lines are joined.

use std::fmt::Write;

/// Upper bound of one SIP message, headers and body (64 KiB).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The RFC 3261 magic cookie every branch starts with.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// Transport named in the Via header and the Request-URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// `UDP`, `TCP`, `TLS` as in `Via: SIP/2.0/TLS`.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// `udp`, `tcp`, `tls` as in `;transport=`.
    /// `udp`, `tcp` or `tls`, any case.
    pub fn parse(s: &str) -> Option<Transport> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => None,
        }
    }

    /// The default SIP port of the transport: 5061 for TLS, 5060 otherwise.
    pub fn default_port(self) -> u16 {
        if self == Transport::Tls {
            5061
        } else {
            5060
        }
    }

    /// `udp`, `tcp`, `tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// The identity of one client transaction: what a response must echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Via branch, `z9hG4bK…`.
    pub branch: String,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method (`OPTIONS`, `REGISTER`, …).
    pub method: &'static str,
}

impl Transaction {
    /// The next transaction of the same dialog or registration: a new branch, the same
    /// Call-ID, the next CSeq number.
    pub fn next(&self, method: &'static str) -> Transaction {
        Transaction {
            branch: format!("{BRANCH_COOKIE}{}", token(16)),
            call_id: self.call_id.clone(),
            cseq: self.cseq.saturating_add(1),
            method,
        }
    }
}

/// Everything a REGISTER request is built from.
#[derive(Debug, Clone)]
pub struct RegisterParams<'a> {
    /// Transport of the Via header and the Contact.
    pub transport: Transport,
    /// The address of record's user part.
    pub user: &'a str,
    /// The domain: Request-URI, From and To.
    pub domain: &'a str,
    /// `host:port` of the local socket: Via sent-by and Contact.
    pub sent_by: &'a str,
    /// The transaction's identifiers.
    pub tx: &'a Transaction,
    /// From tag.
    pub from_tag: &'a str,
    /// Seconds asked for; 0 removes the binding.
    pub expires: u32,
    /// `(header name, value)` answering a challenge: `Authorization` or
    /// `Proxy-Authorization`.
    pub credentials: Option<(&'a str, &'a str)>,
}

/// Builds the REGISTER request bytes (RFC 3261 §10.2).
pub fn register_request(p: &RegisterParams<'_>) -> Vec<u8> {
    let transport_param = match p.transport {
        Transport::Udp => String::new(),
        t => format!(";transport={}", t.as_str()),
    };
    let mut s = String::with_capacity(768);
    let _ = write!(s, "REGISTER sip:{} SIP/2.0\r\n", p.domain);
    let _ =
        write!(s, "Via: SIP/2.0/{} {};branch={};rport\r\n", p.transport.via_token(), p.sent_by, p.tx.branch);
    s.push_str("Max-Forwards: 70\r\n");
    let _ = write!(s, "From: <sip:{}@{}>;tag={}\r\n", p.user, p.domain, p.from_tag);
    let _ = write!(s, "To: <sip:{}@{}>\r\n", p.user, p.domain);
    let _ = write!(s, "Call-ID: {}\r\n", p.tx.call_id);
    let _ = write!(s, "CSeq: {} REGISTER\r\n", p.tx.cseq);
    let _ = write!(s, "Contact: <sip:{}@{}{transport_param}>\r\n", p.user, p.sent_by);
    let _ = write!(s, "Expires: {}\r\n", p.expires);
    if let Some((name, value)) = p.credentials {
        let _ = write!(s, "{name}: {value}\r\n");
    }
    s.push_str(concat!("User-Agent: coexistd/", env!("CARGO_PKG_VERSION"), "\r\n"));
    s.push_str("Content-Length: 0\r\n\r\n");
    s.into_bytes()
}

/// Everything a test user's request (MESSAGE, INVITE, ACK, BYE, OPTIONS) is built from.
#[derive(Debug, Clone)]
pub struct RequestParams<'a> {
    /// The Request-URI.
    pub uri: &'a str,
    /// Transport of the Via header and the Contact.
    pub transport: Transport,
    /// `host:port` of the local socket: Via sent-by and Contact.
    pub sent_by: &'a str,
    /// The transaction's identifiers (its method is the request's).
    pub tx: &'a Transaction,
    /// The sender's address of record and From tag.
    pub from: (&'a str, &'a str),
    /// The recipient's address of record and To tag (in a dialog).
    pub to: (&'a str, Option<&'a str>),
    /// The Contact's user part (INVITE), none for requests outside a dialog.
    pub contact_user: Option<&'a str>,
    /// Route headers (a dialog's route set), in order.
    pub route: &'a [String],
    /// `(header name, value)` answering a challenge.
    pub credentials: Option<(&'a str, &'a str)>,
    /// Further header lines, each ending in CRLF (`Event`, `Expires`, `Accept`, …).
    pub extra: &'a str,
    /// `(Content-Type, body)`.
    pub body: Option<(&'a str, &'a [u8])>,
}

/// Builds a request (RFC 3261 §8.1.1).
pub fn request(p: &RequestParams<'_>) -> Vec<u8> {
    let mut s = String::with_capacity(768);
    let _ = write!(s, "{} {} SIP/2.0\r\n", p.tx.method, p.uri);
    let _ =
        write!(s, "Via: SIP/2.0/{} {};branch={};rport\r\n", p.transport.via_token(), p.sent_by, p.tx.branch);
    s.push_str("Max-Forwards: 70\r\n");
    for r in p.route {
        let _ = write!(s, "Route: {r}\r\n");
    }
    let _ = write!(s, "From: <{}>;tag={}\r\n", p.from.0, p.from.1);
    match p.to.1 {
        Some(tag) => {
            let _ = write!(s, "To: <{}>;tag={tag}\r\n", p.to.0);
        }
        None => {
            let _ = write!(s, "To: <{}>\r\n", p.to.0);
        }
    }
    let _ = write!(s, "Call-ID: {}\r\n", p.tx.call_id);
    let _ = write!(s, "CSeq: {} {}\r\n", p.tx.cseq, p.tx.method);
    if let Some(user) = p.contact_user {
        let _ = write!(s, "Contact: <sip:{user}@{}{}>\r\n", p.sent_by, transport_param(p.transport));
    }
    if let Some((name, value)) = p.credentials {
        let _ = write!(s, "{name}: {value}\r\n");
    }
    s.push_str(p.extra);
    s.push_str(concat!("User-Agent: coexistd/", env!("CARGO_PKG_VERSION"), "\r\n"));
    let body = p.body.map_or(&[][..], |(_, b)| b);
    if let Some((ct, _)) = p.body {
        let _ = write!(s, "Content-Type: {ct}\r\n");
    }
    let _ = write!(s, "Content-Length: {}\r\n\r\n", body.len());
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

/// `;transport=…` for a Contact or Request-URI (none for UDP).
pub fn transport_param(t: Transport) -> String {
    match t {
        Transport::Udp => String::new(),
        t => format!(";transport={}", t.as_str()),
    }
}

/// A user agent's response to `req` (RFC 3261 §8.2.6): Via, From, Call-ID and CSeq
/// echoed, `to_tag` added to To when it has none, Record-Route echoed on a 2xx to
/// INVITE, then `extra` header lines (each ending in CRLF) and the body.
pub fn reply(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: &str,
    extra: &str,
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let invite_ok = (200..300).contains(&code)
        && matches!(&req.start, StartLine::Request { method, .. } if method == "INVITE");
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for (name, value) in &req.headers {
        match name.as_str() {
            "via" => {
                let _ = write!(s, "Via: {value}\r\n");
            }
            "record-route" if invite_ok => {
                let _ = write!(s, "Record-Route: {value}\r\n");
            }
            "from" => {
                let _ = write!(s, "From: {value}\r\n");
            }
            "call-id" => {
                let _ = write!(s, "Call-ID: {value}\r\n");
            }
            "cseq" => {
                let _ = write!(s, "CSeq: {value}\r\n");
            }
            "to" if param(value, "tag").is_none() => {
                let _ = write!(s, "To: {value};tag={to_tag}\r\n");
            }
            "to" => {
                let _ = write!(s, "To: {value}\r\n");
            }
            _ => {}
        }
    }
    s.push_str(extra);
    s.push_str(concat!("Server: coexistd/", env!("CARGO_PKG_VERSION"), "\r\n"));
    let b = body.map_or(&[][..], |(_, b)| b);
    if let Some((ct, _)) = body {
        let _ = write!(s, "Content-Type: {ct}\r\n");
    }
    let _ = write!(s, "Content-Length: {}\r\n\r\n", b.len());
    let mut out = s.into_bytes();
    out.extend_from_slice(b);
    out
}

/// A parsed message back to bytes (a proxy forwarding it): the start line, the headers
/// in order under their long lower-case names (names are case-insensitive), the body.
pub fn serialize(m: &Message) -> Vec<u8> {
    let mut s = match &m.start {
        StartLine::Request { method, uri } => format!("{method} {uri} SIP/2.0\r\n"),
        StartLine::Response { code, reason } => format!("SIP/2.0 {code} {reason}\r\n"),
    };
    for (name, value) in &m.headers {
        let _ = write!(s, "{name}: {value}\r\n");
    }
    s.push_str("\r\n");
    let mut out = s.into_bytes();
    out.extend_from_slice(&m.body);
    out
}

/// The `tag` parameter of a From or To value.
pub fn tag_of(value: &str) -> Option<&str> {
    param(value, "tag")
}

/// The URI inside a name-addr (`"Bob" <sip:bob@x>;tag=1` → `sip:bob@x`), or the
/// addr-spec up to its parameters.
pub fn addr_uri(value: &str) -> &str {
    let v = value.trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.split(';').next().unwrap_or(v).trim(),
    }
}

/// The user part of a SIP URI, if any.
pub fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri.strip_prefix("sip:").or_else(|| uri.strip_prefix("sips:"))?;
    let (user, _) = rest.split_once('@')?;
    Some(user.split(';').next().unwrap_or(user))
}

/// Where a SIP URI (as in a `Contact` of a 3xx) sends a client: host, port (if given)
/// and transport (if given). `<…>`, display names, a user part and header parameters
/// are skipped.
pub fn uri_target(value: &str) -> Option<(String, Option<u16>, Option<Transport>)> {
    let v = value.trim();
    let v = match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.split(';').next().unwrap_or(v),
    };
    let (scheme_tls, rest) =
        if let Some(r) = v.strip_prefix("sips:") { (true, r) } else { (false, v.strip_prefix("sip:")?) };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let (hostport, params) = rest.split_once(';').unwrap_or((rest, ""));
    let hostport = hostport.split('?').next().unwrap_or(hostport);
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        let (h, after) = r.split_once(']')?;
        (h.to_owned(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    if host.is_empty()
        || host.len() > 253
        || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return None;
    }
    let port = match port {
        Some(p) => Some(u16::try_from(bounded_decimal(p, 65_535)?).ok().filter(|p| *p > 0)?),
        None => None,
    };
    let transport = params.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("transport") {
            return None;
        }
        match v.trim().to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => None,
        }
    });
    Some((host, port, if scheme_tls { Some(Transport::Tls) } else { transport }))
}

/// Everything an OPTIONS request is built from.
#[derive(Debug, Clone)]
pub struct OptionsParams<'a> {
    /// Transport of the Via header.
    pub transport: Transport,
    /// Host of the Request-URI and To (the pool FQDN).
    pub host: &'a str,
    /// Port of the Request-URI.
    pub port: u16,
    /// Optional user part of the Request-URI and To.
    pub user: Option<&'a str>,
    /// `host:port` of the local socket, the Via sent-by.
    pub sent_by: &'a str,
    /// The transaction's identifiers.
    pub tx: &'a Transaction,
    /// From tag.
    pub from_tag: &'a str,
}

/// `host` with brackets when it is an IPv6 literal.
fn uri_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Builds the OPTIONS request bytes.
pub fn options_request(p: &OptionsParams<'_>) -> Vec<u8> {
    let host = uri_host(p.host);
    let user = p.user.map(|u| format!("{u}@")).unwrap_or_default();
    let transport_param = match p.transport {
        Transport::Udp => String::new(),
        t => format!(";transport={}", t.as_str()),
    };
    let sent_by_host = p.sent_by.rsplit_once(':').map_or(p.sent_by, |(h, _)| h);
    let mut s = String::with_capacity(512);
    let _ = write!(s, "OPTIONS sip:{user}{host}:{}{transport_param} SIP/2.0\r\n", p.port);
    let _ =
        write!(s, "Via: SIP/2.0/{} {};branch={};rport\r\n", p.transport.via_token(), p.sent_by, p.tx.branch);
    s.push_str("Max-Forwards: 70\r\n");
    let _ = write!(s, "From: <sip:coexistd@{sent_by_host}>;tag={}\r\n", p.from_tag);
    let _ = write!(s, "To: <sip:{user}{host}>\r\n");
    let _ = write!(s, "Call-ID: {}\r\n", p.tx.call_id);
    let _ = write!(s, "CSeq: {} OPTIONS\r\n", p.tx.cseq);
    let _ = write!(s, "Contact: <sip:coexistd@{}{transport_param}>\r\n", p.sent_by);
    s.push_str("Accept: application/sdp\r\n");
    s.push_str(concat!("User-Agent: coexistd/", env!("CARGO_PKG_VERSION"), "\r\n"));
    s.push_str("Content-Length: 0\r\n\r\n");
    s.into_bytes()
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`.
    Request {
        /// Method, e.g. `OPTIONS`.
        method: String,
        /// Request-URI.
        uri: String,
    },
    /// `SIP/2.0 code reason`.
    Response {
        /// Status code, 100-699.
        code: u16,
        /// Reason phrase (may be empty).
        reason: String,
    },
}

/// A parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request or status line.
    pub start: StartLine,
    /// Headers in order, names in their long lower-case form, folded lines joined.
    pub headers: Vec<(String, String)>,
    /// The body (Content-Length bytes).
    pub body: Vec<u8>,
}

impl Message {
    /// The first value of header `name` (long form, any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, comma-separated values split (for Via).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| split_commas(v))
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The `branch` parameter of the topmost Via.
    pub fn top_via_branch(&self) -> Option<&str> {
        let via = self.header_values("via").next()?;
        param(via, "branch")
    }

    /// The CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let mut it = self.header("cseq")?.split_whitespace();
        let n = bounded_decimal(it.next()?, u64::from(u32::MAX))?;
        Some((u32::try_from(n).ok()?, it.next()?))
    }

    /// Whether this is the response to transaction `tx` (branch, Call-ID, CSeq).
    pub fn answers(&self, tx: &Transaction) -> bool {
        self.status().is_some()
            && self.top_via_branch() == Some(tx.branch.as_str())
            && self.header("call-id").map(str::trim) == Some(tx.call_id.as_str())
            && self.cseq().is_some_and(|(n, m)| n == tx.cseq && m.eq_ignore_ascii_case(tx.method))
    }

    /// What the peer calls itself: `Server`, else `User-Agent`.
    pub fn software(&self) -> Option<&str> {
        self.header("server").or_else(|| self.header("user-agent"))
    }
}

/// Splits a header value at commas that are not inside quotes or angle brackets.
fn split_commas(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in v.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(v[start..].trim());
    out
}

/// The value of `;name=value` in a header value.
/// A `;name=value` parameter of a header value (after its first `;`).
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The long form of a compact header name (RFC 3261 §7.3.3 and RFC 3841, 4028, …).
fn long_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let long = match lower.as_str() {
        "v" => "via",
        "i" => "call-id",
        "l" => "content-length",
        "f" => "from",
        "t" => "to",
        "m" => "contact",
        "c" => "content-type",
        "e" => "content-encoding",
        "k" => "supported",
        "s" => "subject",
        "o" => "event",
        "u" => "allow-events",
        "r" => "refer-to",
        "x" => "session-expires",
        _ => return lower,
    };
    long.to_owned()
}

/// Why bytes are not a SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first line is neither a request line nor a SIP/2.0 status line.
    #[error("bad start line: {0:?}")]
    StartLine(String),
    /// A header line without a colon, or not text.
    #[error("bad header line: {0:?}")]
    Header(String),
    /// Content-Length missing on a stream, not a number, or past the limit.
    #[error("bad Content-Length: {0}")]
    ContentLength(String),
    /// A numeric header that is not a number or out of its range.
    #[error("bad {header} value: {value:?}")]
    Number {
        /// The header's (long) name.
        header: String,
        /// The value, cut at 40 characters.
        value: String,
    },
    /// Headers and body exceed [`MAX_MESSAGE`].
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// A datagram that ends before its headers do.
    #[error("datagram ends inside the headers")]
    Truncated,
}

/// A message that does not parse: `sip_malformed`, so that `?` turns it into a probe step's failure.
impl From<ParseError> for crate::failure::Failure {
    fn from(e: ParseError) -> crate::failure::Failure {
        crate::failure::Failure::new(crate::failure::FailureReason::SipMalformed, e.to_string())
    }
}

/// The outcome of feeding bytes to the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A message and the number of bytes it took.
    Complete(Message, usize),
    /// More bytes are needed.
    Incomplete,
}

/// Parses one message from the start of `buf`.
///
/// `stream` is true on TCP/TLS, where Content-Length frames the message and is
/// required (RFC 3261 §18.3); over UDP the datagram is the message and a missing
/// Content-Length means the rest of it.
pub fn parse(buf: &[u8], stream: bool) -> Result<Parsed, ParseError> {
    // Leading CRLFs are keep-alives (RFC 5626); skip them.
    let skip = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
    let buf = &buf[skip..];
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        // Keep-alives count too: endless CRLFs must not grow a caller's buffer.
        if skip + buf.len() > MAX_MESSAGE {
            return Err(ParseError::TooLarge);
        }
        // A datagram is the whole message: there is no more to wait for.
        return if stream || buf.is_empty() { Ok(Parsed::Incomplete) } else { Err(ParseError::Truncated) };
    };
    let head = parse_head(buf, head_end, stream)?;
    let body_start = head_end + 4;
    let end = match head.body_len {
        Some(n) => body_start + n,
        None => buf.len(),
    };
    if buf.len() < end {
        if !stream {
            return Err(ParseError::ContentLength(format!(
                "{} but the datagram has {} body bytes",
                end - body_start,
                buf.len().saturating_sub(body_start)
            )));
        }
        return Ok(Parsed::Incomplete);
    }
    Ok(Parsed::Complete(head.into_message(&buf[body_start..end]), skip + end))
}

/// A message's start line and headers, and its body length when Content-Length gives
/// it (a datagram without one: the rest of the datagram).
#[derive(Debug)]
pub(crate) struct Head {
    start: StartLine,
    headers: Vec<(String, String)>,
    /// Content-Length; `None` only for a datagram without one.
    pub(crate) body_len: Option<usize>,
}

impl Head {
    pub(crate) fn into_message(self, body: &[u8]) -> Message {
        Message { start: self.start, headers: self.headers, body: body.to_vec() }
    }
}

/// Parses the head of `buf` (which ends at `head_end`, the blank line's offset): start
/// line, headers, numbers, and the Content-Length, bounded so that head and body fit
/// in [`MAX_MESSAGE`].
pub(crate) fn parse_head(buf: &[u8], head_end: usize, stream: bool) -> Result<Head, ParseError> {
    if head_end > MAX_MESSAGE {
        return Err(ParseError::TooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| ParseError::Header("not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let start = start_line(first)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        // Control characters (a bare CR or LF, NUL, …) have no place in a header: one in
        // a challenge's nonce would be echoed into our Authorization header.
        if line.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(ParseError::Header(line.chars().take(80).collect()));
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            // Folding: the line continues the previous header's value.
            let Some(last) = headers.last_mut() else {
                return Err(ParseError::Header(line.chars().take(80).collect()));
            };
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let (name, value) =
            line.split_once(':').ok_or_else(|| ParseError::Header(line.chars().take(80).collect()))?;
        let name = name.trim_end();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ParseError::Header(line.chars().take(80).collect()));
        }
        headers.push((long_name(name), value.trim().to_owned()));
    }
    check_numbers(&headers)?;
    let body_start = head_end + 4;
    let mut lengths = headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.as_str());
    let length = lengths.next();
    if let Some(other) = lengths.find(|v| Some(*v) != length) {
        return Err(ParseError::ContentLength(format!(
            "two different values: {:?} and {:?}",
            length.unwrap_or(""),
            short(other)
        )));
    }
    let body_len = match length {
        // Bounded before any arithmetic: a peer's number never reaches an addition.
        Some(v) => match bounded_decimal(v, MAX_MESSAGE as u64) {
            Some(n) => Some(n as usize),
            None if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(ParseError::TooLarge)
            }
            None => return Err(ParseError::ContentLength(format!("{:?}", short(v)))),
        },
        None if stream => return Err(ParseError::ContentLength("missing on a stream transport".into())),
        None => None,
    };
    let end = body_start.checked_add(body_len.unwrap_or(buf.len().saturating_sub(body_start)));
    if end.is_none_or(|e| e > MAX_MESSAGE) {
        return Err(ParseError::TooLarge);
    }
    Ok(Head { start, headers, body_len })
}

fn start_line(line: &str) -> Result<StartLine, ParseError> {
    let bad = || ParseError::StartLine(line.chars().take(80).collect());
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code = match bounded_decimal(code, 699) {
            Some(c) if c >= 100 && code.len() == 3 => c as u16,
            _ => return Err(bad()),
        };
        return Ok(StartLine::Response { code, reason: reason.to_owned() });
    }
    let mut parts = line.splitn(3, ' ');
    let (method, uri, version) = (parts.next(), parts.next(), parts.next());
    match (method, uri, version) {
        (Some(m), Some(u), Some("SIP/2.0"))
            if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) && !u.is_empty() =>
        {
            Ok(StartLine::Request { method: m.to_owned(), uri: u.to_owned() })
        }
        _ => Err(bad()),
    }
}

/// A number from the wire: ASCII digits only (no sign, no blanks inside), at most
/// `max`. Every numeric field a peer sends goes through here before it is used, so a
/// hostile value (`18446744073709551615`, `-1`, `+5`, ten thousand digits) is a
/// malformed message, never an overflow.
pub fn bounded_decimal(v: &str, max: u64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    // Leading zeros are legal (1*DIGIT) and do not count towards the length.
    let digits = v.trim_start_matches('0');
    if digits.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (n <= max).then_some(n)
}

/// The numeric headers this parser knows and their largest value (RFC 3261 §20:
/// CSeq < 2^31 but servers send up to 2^32-1, Expires and Min-Expires 32-bit
/// delta-seconds, Max-Forwards 0-255, Retry-After's leading delta-seconds).
const NUMERIC_HEADERS: [(&str, u64); 5] = [
    ("expires", u32::MAX as u64),
    ("min-expires", u32::MAX as u64),
    ("max-forwards", 255),
    ("retry-after", u32::MAX as u64),
    ("cseq", u32::MAX as u64),
];

/// Every numeric header a peer sent is a bounded decimal: a value out of range or not a
/// number makes the message malformed here, so nothing later sees it.
fn check_numbers(headers: &[(String, String)]) -> Result<(), ParseError> {
    for (name, value) in headers {
        let Some((_, max)) = NUMERIC_HEADERS.iter().find(|(n, _)| n == name) else { continue };
        // CSeq is "number method", Retry-After "number [comment] *(;param)".
        let number = value.split([' ', '\t', ';', '(']).next().unwrap_or("");
        if bounded_decimal(number, *max).is_none() {
            return Err(ParseError::Number { header: name.clone(), value: short(value) });
        }
    }
    Ok(())
}

/// At most 40 characters of a peer's value, for error messages.
fn short(v: &str) -> String {
    v.chars().take(40).collect()
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A fresh random token of `n` hex digits (branch, tag, Call-ID).
pub fn token(n: usize) -> String {
    let mut bytes = vec![0u8; n.div_ceil(2)];
    // ring's system RNG: unpredictable identifiers, so stray or forged responses do not match.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes.iter_mut().enumerate().for_each(|(i, b)| *b = (t >> ((i % 16) * 8)) as u8);
    }
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(n);
    s
}

/// A new transaction with random identifiers.
pub fn new_transaction() -> Transaction {
    Transaction {
        branch: format!("{BRANCH_COOKIE}{}", token(16)),
        call_id: format!("{}@coexistd", token(24)),
        cseq: 1,
        method: "OPTIONS",
    }
}

/// Builds the response a lab responder sends to `req` (Via, From, To, Call-ID and CSeq
/// echoed, a tag added to To).
pub fn response_to(req: &Message, code: u16, reason: &str, server: &str) -> Vec<u8> {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for (name, value) in &req.headers {
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" => {
                let _ = write!(s, "{}: {value}\r\n", canonical(name));
            }
            "to" if !value.contains(";tag=") => {
                let _ = write!(s, "To: {value};tag={}\r\n", token(8));
            }
            "to" => {
                let _ = write!(s, "To: {value}\r\n");
            }
            _ => {}
        }
    }
    let _ = write!(
        s,
        "Server: {server}\r\nAllow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\nContent-Length: 0\r\n\r\n"
    );
    s.into_bytes()
}

fn canonical(name: &str) -> &'static str {
    match name {
        "via" => "Via",
        "from" => "From",
        "call-id" => "Call-ID",
        "cseq" => "CSeq",
        _ => "X",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_a_header_make_the_message_malformed() {
        for bad in ["a\nX-Injected: y", "a\rb", "a\0b", "a\x7fb"] {
            let text = format!(
                "SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"r\", nonce=\"{bad}\"\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            assert!(matches!(parse(text.as_bytes(), false), Err(ParseError::Header(_))), "{bad:?}");
        }
        let tab = "SIP/2.0 200 OK\r\nSubject: a\tb\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(parse(tab.as_bytes(), false), Ok(Parsed::Complete(..))));
    }

    fn tx() -> Transaction {
        Transaction {
            branch: "z9hG4bK1a2b3c".into(),
            call_id: "c0ffee@coexistd".into(),
            cseq: 1,
            method: "OPTIONS",
        }
    }

    #[test]
    fn options_request_is_rfc3261_shaped() {
        let t = tx();
        let req = options_request(&OptionsParams {
            transport: Transport::Tls,
            host: "lyncpool.contoso.com",
            port: 5061,
            user: None,
            sent_by: "10.0.0.5:50432",
            tx: &t,
            from_tag: "f00d",
        });
        let want = "OPTIONS sip:lyncpool.contoso.com:5061;transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS 10.0.0.5:50432;branch=z9hG4bK1a2b3c;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:coexistd@10.0.0.5>;tag=f00d\r\n\
To: <sip:lyncpool.contoso.com>\r\n\
Call-ID: c0ffee@coexistd\r\n\
CSeq: 1 OPTIONS\r\n\
Contact: <sip:coexistd@10.0.0.5:50432;transport=tls>\r\n\
Accept: application/sdp\r\n"
            .to_owned()
            + concat!("User-Agent: coexistd/", env!("CARGO_PKG_VERSION"), "\r\n")
            + "Content-Length: 0\r\n\r\n";
        assert_eq!(String::from_utf8(req).unwrap(), want);
    }

    #[test]
    fn udp_request_with_user_and_ipv6() {
        let t = tx();
        let req = options_request(&OptionsParams {
            transport: Transport::Udp,
            host: "2001:db8::1",
            port: 5060,
            user: Some("ping"),
            sent_by: "[2001:db8::5]:5070",
            tx: &t,
            from_tag: "x",
        });
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with(
            "OPTIONS sip:ping@[2001:db8::1]:5060 SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::5]:5070;branch="
        ));
        assert!(text.contains("From: <sip:coexistd@[2001:db8::5]>;tag=x\r\n"));
        assert!(text.contains("To: <sip:ping@[2001:db8::1]>\r\n"));
    }

    fn complete(bytes: &[u8], stream: bool) -> (Message, usize) {
        match parse(bytes, stream).unwrap() {
            Parsed::Complete(m, n) => (m, n),
            Parsed::Incomplete => panic!("incomplete"),
        }
    }

    const LYNC_200: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/TLS 10.0.0.5:50432;branch=z9hG4bK1a2b3c;rport=50432;received=10.0.0.5;ms-received-port=50432;ms-received-cid=1D3F00\r\n\
From: <sip:coexistd@10.0.0.5>;tag=f00d\r\n\
To: <sip:lyncpool.contoso.com>;tag=8A1B2C3D4E\r\n\
Call-ID: c0ffee@coexistd\r\n\
CSeq: 1 OPTIONS\r\n\
Allow: INVITE, BYE, ACK, CANCEL, INFO, UPDATE, REFER, NOTIFY, BENOTIFY, OPTIONS\r\n\
Supported: ms-dialog-route-set-update, timer\r\n\
Server: RTC/5.0\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn a_lync_200_matches_its_transaction() {
        let (m, n) = complete(LYNC_200, true);
        assert_eq!(n, LYNC_200.len());
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.software(), Some("RTC/5.0"));
        assert!(m.answers(&tx()));
        let mut other = tx();
        other.branch = "z9hG4bKdifferent".into();
        assert!(!m.answers(&other));
        other = tx();
        other.call_id = "other@x".into();
        assert!(!m.answers(&other));
        other = tx();
        other.cseq = 2;
        assert!(!m.answers(&other));
    }

    #[test]
    fn a_401_ntlm_challenge_and_ms_diagnostics() {
        let raw = b"SIP/2.0 401 Unauthorized\r\n\
Date: Thu, 26 Nov 2026 04:13:09 GMT\r\n\
WWW-Authenticate: NTLM realm=\"SIP Communications Service\", targetname=\"lyncfe1.contoso.com\", version=4\r\n\
WWW-Authenticate: Kerberos realm=\"SIP Communications Service\", targetname=\"sip/lyncfe1.contoso.com\", version=4\r\n\
From: <sip:coexistd@10.0.0.5>;tag=f00d\r\n\
To: <sip:lyncpool.contoso.com>;tag=ABC\r\n\
Call-ID: c0ffee@coexistd\r\n\
CSeq: 1 OPTIONS\r\n\
Via: SIP/2.0/TLS 10.0.0.5:50432;branch=z9hG4bK1a2b3c;ms-received-port=50432;ms-received-cid=1D3F00\r\n\
ms-diagnostics: 1000;reason=\"Final handshake failed\";source=\"lyncfe1.contoso.com\"\r\n\
Server: RTC/5.0\r\n\
Content-Length: 0\r\n\r\n";
        let (m, _) = complete(raw, true);
        assert_eq!(m.status(), Some(401));
        assert!(m.answers(&tx()));
        assert_eq!(m.header_values("www-authenticate").count(), 2 + 4, "comma-separated values are split");
        assert!(m.header("ms-diagnostics").unwrap().starts_with("1000;reason="));
    }

    #[test]
    fn a_403_and_a_503_with_ms_via_parameters() {
        let raw = b"SIP/2.0 503 Service Unavailable\r\n\
Via: SIP/2.0/TLS 10.0.0.5:50432;branch=z9hG4bK1a2b3c;ms-received-port=50432;ms-received-cid=AB00\r\n\
Via: SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bKouter\r\n\
From: <sip:coexistd@10.0.0.5>;tag=f00d\r\n\
To: <sip:lyncpool.contoso.com>;tag=1\r\n\
Call-ID: c0ffee@coexistd\r\n\
CSeq: 1 OPTIONS\r\n\
ms-diagnostics: 1008;reason=\"Unable to resolve DNS SRV record\"\r\n\
Content-Length: 0\r\n\r\n";
        let (m, _) = complete(raw, true);
        assert_eq!(m.status(), Some(503));
        assert_eq!(m.top_via_branch(), Some("z9hG4bK1a2b3c"));
        assert!(m.answers(&tx()));
        let raw403 = b"SIP/2.0 403 Forbidden\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1a2b3c\r\ni: c0ffee@coexistd\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";
        let (m, _) = complete(raw403, true);
        assert_eq!(m.status(), Some(403));
        assert!(m.answers(&tx()), "compact Via, Call-ID and Content-Length");
    }

    #[test]
    fn compact_forms_and_folding() {
        let raw = b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 10.0.0.5:5060\r\n ;branch=z9hG4bK1a2b3c\r\ni: c0ffee@coexistd\r\nf: <sip:a@b>;tag=1\r\nt: <sip:c@d>\r\nCSeq: 1\r\n\tOPTIONS\r\nl: 4\r\n\r\nbodyEXTRA";
        let (m, n) = complete(raw, true);
        assert_eq!(m.header("via"), Some("SIP/2.0/UDP 10.0.0.5:5060 ;branch=z9hG4bK1a2b3c"));
        assert_eq!(m.cseq(), Some((1, "OPTIONS")));
        assert_eq!(m.body, b"body");
        assert_eq!(n, raw.len() - 5, "the next message starts after the body");
        assert!(m.answers(&tx()));
    }

    #[test]
    fn incomplete_messages_ask_for_more() {
        assert_eq!(parse(&LYNC_200[..40], true).unwrap(), Parsed::Incomplete);
        assert_eq!(parse(&LYNC_200[..40], false), Err(ParseError::Truncated), "a datagram cut short");
        let with_body = b"SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\n12345";
        assert_eq!(parse(with_body, true).unwrap(), Parsed::Incomplete);
        assert!(matches!(parse(with_body, false), Err(ParseError::ContentLength(_))), "a datagram is whole");
        assert_eq!(parse(b"", true).unwrap(), Parsed::Incomplete);
    }

    #[test]
    fn malformed_messages_are_errors() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
            b"SIP/2.0 OK\r\nContent-Length: 0\r\n\r\n",
            b"SIP/2.0 99 Low\r\nContent-Length: 0\r\n\r\n",
            b"SIP/2.0 700 High\r\nContent-Length: 0\r\n\r\n",
            b"SIP/2.0 2000 OK\r\nContent-Length: 0\r\n\r\n",
            b"SIP/2.0 200 OK\r\nno colon here\r\n\r\n",
            b"SIP/2.0 200 OK\r\n continuation first\r\n\r\n",
            b"SIP/2.0 200 OK\r\nContent-Length: lots\r\n\r\n",
            b"SIP/2.0 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"\xff\xfe\x00garbage\r\n\r\n",
            b"options sip:x SIP/2.0\r\nl: 0\r\n\r\n",
        ] {
            assert!(parse(bad, true).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(parse(b"SIP/2.0 200 OK\r\n\r\n", true), Err(ParseError::ContentLength(_))));
        assert!(parse(b"SIP/2.0 200 OK\r\n\r\n", false).is_ok(), "over UDP Content-Length may be missing");
    }

    #[test]
    fn oversize_is_refused_before_it_is_buffered() {
        let mut big = b"SIP/2.0 200 OK\r\nX-Filler: ".to_vec();
        big.resize(MAX_MESSAGE + 10, b'a');
        assert_eq!(parse(&big, true), Err(ParseError::TooLarge), "a header that never ends");
        let huge_body = format!("SIP/2.0 200 OK\r\nContent-Length: {}\r\n\r\n", 10 * 1024 * 1024);
        assert_eq!(parse(huge_body.as_bytes(), true), Err(ParseError::TooLarge), "a 10 MB announced body");
    }

    #[test]
    fn requests_parse_and_responses_echo_them() {
        let t = tx();
        let req = options_request(&OptionsParams {
            transport: Transport::Udp,
            host: "ocspool.contoso.test",
            port: 5060,
            user: None,
            sent_by: "127.0.0.1:40000",
            tx: &t,
            from_tag: "f",
        });
        let (m, n) = complete(&req, false);
        assert_eq!(n, req.len());
        assert_eq!(
            m.start,
            StartLine::Request { method: "OPTIONS".into(), uri: "sip:ocspool.contoso.test:5060".into() }
        );
        let resp = response_to(&m, 200, "OK", "lab");
        let (r, _) = complete(&resp, true);
        assert!(r.answers(&t));
        assert!(r.header("to").unwrap().contains(";tag="));
        assert_eq!(r.software(), Some("lab"));
    }

    #[test]
    fn tokens_are_random_hex() {
        let a = token(16);
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, token(16));
        assert!(new_transaction().branch.starts_with(BRANCH_COOKIE));
    }
}
