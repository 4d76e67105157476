//! What every request passes before its route ([`guard`]): basic auth, the configured
//! response headers, caps on request headers and body.
//!
//! Basic auth checks bcrypt hashes on the blocking pool, at most two at a time; a
//! verified `(user, password)` is remembered for [`AUTH_CACHE_TTL`] (at most
//! [`AUTH_CACHE_MAX`] entries, keyed by a SHA-256 of user, password and hash, never the
//! password itself), so a scrape every 15 s does not pay a bcrypt round each time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};

use super::port::{MAX_BODY, MAX_HEADERS};

/// How long a verified basic-auth credential is remembered.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most credentials remembered at once.
pub const AUTH_CACHE_MAX: usize = 256;

/// What [`guard`] needs: the authenticator and the extra response headers.
pub type GuardState = (Auth, Arc<Vec<(HeaderName, HeaderValue)>>);

/// A bcrypt hash (cost 10) of a random string, checked for unknown users.
const DUMMY_HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

/// Basic authentication against `users`, with the cache described in the module doc.
#[derive(Clone)]
pub struct Auth {
    users: Arc<BTreeMap<String, String>>,
    cache: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
    bcrypt: Arc<tokio::sync::Semaphore>,
}

impl Auth {
    /// An authenticator for `users` (empty: everyone is let in).
    pub fn new(users: Arc<BTreeMap<String, String>>) -> Auth {
        Auth {
            users,
            cache: Arc::new(Mutex::new(HashMap::new())),
            bcrypt: Arc::new(tokio::sync::Semaphore::new(2)),
        }
    }

    /// Whether any user is configured.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether the request's `Authorization` header names a user and its password.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        if !self.enabled() {
            return true;
        }
        let Some((user, password)) = authorization.and_then(parse_basic) else { return false };
        // An unknown user costs a bcrypt round too, so timing does not tell which
        // user names exist.
        let (known, hash) = match self.users.get(&user) {
            Some(h) => (true, h.clone()),
            None => (false, DUMMY_HASH.to_owned()),
        };
        let key: [u8; 32] = {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            for part in [user.as_bytes(), password.as_bytes(), hash.as_bytes()] {
                ctx.update(&(part.len() as u64).to_be_bytes());
                ctx.update(part);
            }
            ctx.finish().as_ref().try_into().unwrap_or([0; 32])
        };
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.get(&key).is_some_and(|t| t.elapsed() < AUTH_CACHE_TTL) {
                return true;
            }
        }
        let Ok(_permit) = self.bcrypt.acquire().await else { return false };
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false)
            && known;
        if ok {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= AUTH_CACHE_MAX {
                cache.retain(|_, t| t.elapsed() < AUTH_CACHE_TTL);
                if cache.len() >= AUTH_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, Instant::now());
        }
        ok
    }
}

fn parse_basic(v: &HeaderValue) -> Option<(String, String)> {
    use base64_lite::decode;
    let s = v.to_str().ok()?;
    let (scheme, b64) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = decode(b64.trim())?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Base64 (RFC 4648, standard alphabet, padding optional) for the Authorization header.
mod base64_lite {
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        let s = s.trim_end_matches('=');
        if s.len() > 4096 {
            return None;
        }
        let mut out = Vec::with_capacity(s.len() * 3 / 4);
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in s.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        Some(out)
    }
}

/// The middleware every request passes: basic auth (401 with a challenge), the
/// configured response headers, and a cap on request bodies.
pub async fn guard(
    axum::extract::State((auth, headers)): axum::extract::State<GuardState>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY as u64);
    let header_bytes: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    let mut resp = if too_big {
        (StatusCode::PAYLOAD_TOO_LARGE, "Request body too large.\n").into_response()
    } else if header_bytes > MAX_HEADERS {
        (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "Request headers too large.\n").into_response()
    } else if !auth.check(req.headers().get(header::AUTHORIZATION)).await {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"coexistd\", charset=\"UTF-8\"")],
            "Unauthorized\n",
        )
            .into_response()
    } else {
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, Body::new(http_body_util::Limited::new(body, MAX_BODY)));
        next.run(req).await
    };
    for (name, value) in headers.iter() {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}
