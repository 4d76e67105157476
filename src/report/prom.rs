//! A client of Prometheus' HTTP API (`/api/v1/query`, `/api/v1/query_range`), enough
//! for the report: POSTed form queries over HTTP or HTTPS, the HTTP client
//! configuration file Prometheus' own tools read (`--http.config.file`: `basic_auth`,
//! `authorization`, `tls_config`), range queries cut into pieces Prometheus accepts
//! (at most 10,000 points per series each), every answer bounded in size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::net::tls::{TlsClient, TlsConfig, TlsOptions, TlsVersion};

/// The largest answer read (a month of a few hundred series is a few MiB).
pub const MAX_ANSWER: usize = 256 << 20;
/// Points per series in one range query (Prometheus refuses more than 11,000; smaller
/// pieces keep each answer, and the memory to read it, small: a day of minutes).
pub const MAX_POINTS: u64 = 1_440;
/// The most memory one query's series may take once read (series × steps × the size
/// of a step's value): a query past it is an error naming it, not an exhausted host.
pub const MAX_SERIES_BYTES: usize = 512 << 20;
/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the report could not read Prometheus.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The URL, the HTTP configuration file, or a file it names.
    #[error("{0}")]
    Setup(String),
    /// Connecting, TLS, HTTP.
    #[error("Prometheus at {url}: {message}")]
    Transport {
        /// The server's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Prometheus answered with an error (a bad query, a limit).
    #[error("Prometheus refused {query:?}: {message}")]
    Query {
        /// The PromQL.
        query: String,
        /// Its error.
        message: String,
    },
}

/// The HTTP client configuration file (`--http.config.file`), Prometheus' format. No
/// `Debug`: it holds credentials.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConfigFile {
    basic_auth: Option<BasicAuth>,
    authorization: Option<Authorization>,
    tls_config: Option<TlsSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuth {
    username: String,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Authorization {
    #[serde(rename = "type")]
    kind: Option<String>,
    credentials: Option<String>,
    credentials_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// Where Prometheus is and how to reach it.
pub struct Prometheus {
    url: String,
    https: bool,
    host: String,
    port: u16,
    prefix: String,
    authorization: Option<String>,
    tls: Option<(TlsClient, String, bool)>,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The Authorization header is a credential: never printed.
        f.debug_struct("Prometheus").field("url", &self.url).finish_non_exhaustive()
    }
}

fn secret_file(path: &Path, what: &str) -> Result<String, PromError> {
    let bytes = crate::net::tls::read_config_file(path)
        .map_err(|m| PromError::Setup(format!("{what}: {}: {m}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| PromError::Setup(format!("{what}: {}: not UTF-8 text", path.display())))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

impl Prometheus {
    /// `url` is Prometheus' address (`http://host:9090`, a path prefix allowed);
    /// `http_config` its client configuration file.
    pub fn new(url: &str, http_config: Option<&Path>) -> Result<Prometheus, PromError> {
        let setup = |m: String| PromError::Setup(m);
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(setup(format!("--prometheus {url:?}: not an http:// or https:// URL")));
        };
        let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(p) if p > 0 => (h.trim_start_matches('[').trim_end_matches(']').to_owned(), p),
                _ => return Err(setup(format!("--prometheus {url:?}: {p:?} is not a port"))),
            },
            _ => (
                authority.trim_start_matches('[').trim_end_matches(']').to_owned(),
                if https { 443 } else { 80 },
            ),
        };
        if host.is_empty() || authority.contains('@') {
            return Err(setup(format!(
                "--prometheus {url:?}: no host (credentials go in --http.config.file, not the URL)"
            )));
        }
        let file: HttpConfigFile = match http_config {
            None => HttpConfigFile::default(),
            Some(p) => {
                let bytes = crate::net::tls::read_config_file(p)
                    .map_err(|m| setup(format!("--http.config.file {}: {m}", p.display())))?;
                serde_yaml_ng::from_slice(&bytes)
                    .map_err(|e| setup(format!("--http.config.file {}: {e}", p.display())))?
            }
        };
        let authorization = match (&file.basic_auth, &file.authorization) {
            (Some(_), Some(_)) => {
                return Err(setup("--http.config.file: basic_auth and authorization are exclusive".into()))
            }
            (Some(b), None) => {
                let password = match (&b.password, &b.password_file) {
                    (Some(p), None) => p.clone(),
                    (None, Some(f)) => secret_file(f, "basic_auth.password_file")?,
                    (None, None) => String::new(),
                    (Some(_), Some(_)) => {
                        return Err(setup(
                            "--http.config.file: basic_auth: password and password_file are exclusive".into(),
                        ))
                    }
                };
                let token = openssl::base64::encode_block(format!("{}:{password}", b.username).as_bytes());
                Some(format!("Basic {token}"))
            }
            (None, Some(a)) => {
                let credentials = match (&a.credentials, &a.credentials_file) {
                    (Some(c), None) => c.clone(),
                    (None, Some(f)) => secret_file(f, "authorization.credentials_file")?,
                    _ => {
                        return Err(setup(
                            "--http.config.file: authorization needs credentials or credentials_file".into(),
                        ))
                    }
                };
                Some(format!("{} {credentials}", a.kind.as_deref().unwrap_or("Bearer")))
            }
            (None, None) => None,
        };
        if authorization.is_some() && !https {
            tracing::warn!(
                url,
                "credentials for Prometheus over plain http: anyone on the path can read them"
            );
        }
        let tls_section = file.tls_config.unwrap_or_default();
        let tls = if https {
            let cfg = TlsConfig {
                ca_file: tls_section.ca_file.clone(),
                client_cert: tls_section.cert_file.clone(),
                client_key: tls_section.key_file.clone(),
            };
            let client =
                TlsClient::new(&cfg).map_err(|e| setup(format!("--http.config.file: tls_config: {e}")))?;
            let name = tls_section.server_name.clone().unwrap_or_else(|| host.clone());
            Some((client, name, tls_section.insecure_skip_verify))
        } else {
            None
        };
        let prefix = prefix.trim_end_matches('/');
        Ok(Prometheus {
            url: url.to_owned(),
            https,
            host,
            port,
            prefix: if prefix.is_empty() { String::new() } else { format!("/{prefix}") },
            authorization,
            tls,
        })
    }

    fn transport(&self, message: impl std::fmt::Display) -> PromError {
        PromError::Transport { url: self.url.clone(), message: message.to_string() }
    }

    /// POSTs `form` to `/api/v1/{endpoint}`; the `data` of a successful answer.
    async fn call(&self, endpoint: &str, form: &[(&str, String)], query: &str) -> Result<Data, PromError> {
        let started = std::time::Instant::now();
        let data = self.call_once(endpoint, form, query).await;
        tracing::debug!(endpoint, query, seconds = started.elapsed().as_secs_f64(), "Prometheus query");
        data
    }

    async fn call_once(
        &self,
        endpoint: &str,
        form: &[(&str, String)],
        query: &str,
    ) -> Result<Data, PromError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.transport(format!("connect: {e}")))?;
        let body = form.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect::<Vec<_>>().join("&");
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let host_header = if (self.https && self.port == 443) || (!self.https && self.port == 80) {
            host
        } else {
            format!("{host}:{}", self.port)
        };
        let mut req = hyper::Request::post(format!("{}/api/v1/{endpoint}", self.prefix))
            .header(hyper::header::HOST, host_header)
            .header(hyper::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(hyper::header::USER_AGENT, concat!("coexistd-report/", env!("CARGO_PKG_VERSION")));
        if let Some(a) = &self.authorization {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| self.transport(e))?;
        let (status, bytes) = match &self.tls {
            Some((client, name, skip)) => {
                let opts =
                    TlsOptions { min_version: TlsVersion::V1_2, skip_verify: *skip, min_days_valid: None };
                let (stream, _) = client
                    .handshake(tcp, name, &opts)
                    .await
                    .map_err(|f| self.transport(format!("TLS: {}", f.detail)))?;
                self.exchange(stream, req).await?
            }
            None => self.exchange(tcp, req).await?,
        };
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| {
            self.transport(format!(
                "HTTP {status}: not a Prometheus API answer ({e}); is the URL Prometheus'?"
            ))
        })?;
        match (answer.status.as_str(), answer.data) {
            ("success", Some(d)) => Ok(d),
            _ => Err(PromError::Query {
                query: query.to_owned(),
                message: format!(
                    "{}: {}",
                    answer.error_type.unwrap_or_else(|| format!("HTTP {status}")),
                    answer.error.unwrap_or_default()
                ),
            }),
        }
    }

    async fn exchange<S>(
        &self,
        stream: S,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<(u16, Bytes), PromError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let work = async {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| self.transport(e))?;
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = sender.send_request(req).await.map_err(|e| self.transport(e))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER).collect().await.map_err(|e| {
                self.transport(format!("reading the answer (at most {} MiB): {e}", MAX_ANSWER >> 20))
            })?;
            conn.abort();
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(QUERY_TIMEOUT, work)
            .await
            .map_err(|_| self.transport(format!("no answer within {} s", QUERY_TIMEOUT.as_secs())))?
    }

    /// An instant query at the end of the second before `time` (unix seconds): each
    /// series' labels and value.
    pub async fn instant(&self, query: &str, time: i64) -> Result<Vec<(Labels, f64)>, PromError> {
        // 1 ms before `time`, as a range query's points (see [`Prometheus::range`]).
        let form = [("query", query.to_owned()), ("time", format!("{}.999", time - 1))];
        match self.call("query", &form, query).await? {
            Data::Vector(v) => {
                Ok(v.into_iter().filter_map(|s| Some((s.metric, parse_value(&s.value.1)?))).collect())
            }
            Data::Scalar(_) => Ok(Vec::new()),
            Data::Matrix(_) => {
                Err(PromError::Query { query: query.into(), message: "a range vector".into() })
            }
        }
    }

    /// A range query on the grid of `n` steps of `step` seconds from `from`: each
    /// series' labels and its value for every step (`None` where it has none).
    ///
    /// Step `i` (0-based) is `[from + i × step, from + (i+1) × step)`: the query is
    /// evaluated 1 ms before each step's end, so a selector `[{step}s]` sees exactly
    /// the step's samples whether Prometheus closes the range's start (2.x) or opens it
    /// (3.x). Asked in pieces of at most [`MAX_POINTS`] points.
    pub async fn range(
        &self,
        query: &str,
        from: i64,
        step: i64,
        n: usize,
    ) -> Result<Vec<(Labels, Vec<Option<f64>>)>, PromError> {
        self.range_map(query, from, step, n, None, Some).await
    }

    /// [`Prometheus::range`] keeping each point as `keep` makes it (`missing` where a
    /// series has no point): a month of minutes of many series as one byte each.
    pub async fn range_map<T: Clone>(
        &self,
        query: &str,
        from: i64,
        step: i64,
        n: usize,
        missing: T,
        keep: impl Fn(f64) -> T,
    ) -> Result<Vec<(Labels, Vec<T>)>, PromError> {
        let mut series: BTreeMap<Labels, Vec<T>> = BTreeMap::new();
        let at = |k: usize| format!("{}.999", from + step * k as i64 - 1);
        // Pieces of at most MAX_POINTS points, and at least four pieces when there are
        // four points or more: Prometheus evaluates each query on one core, so pieces
        // asked for together use them all.
        let size = (MAX_POINTS as usize).min(n.div_ceil(CONCURRENT)).max(1);
        let pieces: Vec<(usize, usize)> =
            (0..n.div_ceil(size)).map(|i| (i * size + 1, ((i + 1) * size).min(n))).collect();
        for group in pieces.chunks(CONCURRENT) {
            let forms: Vec<[(&str, String); 4]> = group
                .iter()
                .map(|(k, last)| {
                    [
                        ("query", query.to_owned()),
                        ("start", at(*k)),
                        ("end", at(*last)),
                        ("step", step.to_string()),
                    ]
                })
                .collect();
            let answers =
                futures_util::future::join_all(forms.iter().map(|f| self.call("query_range", f, query)))
                    .await;
            for answer in answers {
                let Data::Matrix(m) = answer? else {
                    return Err(PromError::Query {
                        query: query.into(),
                        message: "not a range answer".into(),
                    });
                };
                self.merge(query, n, from, step, m, &mut series, &missing, &keep)?;
            }
        }
        Ok(series.into_iter().collect())
    }

    /// Adds a range answer's points to `series` (see [`Prometheus::range_map`]).
    #[allow(clippy::too_many_arguments)]
    fn merge<T: Clone>(
        &self,
        query: &str,
        n: usize,
        from: i64,
        step: i64,
        m: Vec<RangeSeries>,
        series: &mut BTreeMap<Labels, Vec<T>>,
        missing: &T,
        keep: &impl Fn(f64) -> T,
    ) -> Result<(), PromError> {
        {
            for s in m {
                if !series.contains_key(&s.metric)
                    && (series.len() + 1) * n * std::mem::size_of::<T>() > MAX_SERIES_BYTES
                {
                    return Err(PromError::Query {
                        query: query.to_owned(),
                        message: format!(
                            "more than {} series over {n} steps: past what one report reads (a longer --step, or fewer label values)",
                            series.len()
                        ),
                    });
                }
                let values = series.entry(s.metric).or_insert_with(|| vec![missing.clone(); n]);
                for (t, v) in s.values {
                    let offset = (t + 0.001 - from as f64) / step as f64;
                    let i = offset.round() as i64;
                    if (offset - i as f64).abs() < 1e-3 && (1..=n as i64).contains(&i) {
                        if let Some(x) = parse_value(&v) {
                            values[i as usize - 1] = keep(x);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Range queries asked for at once.
const CONCURRENT: usize = 4;

/// A series' labels.
pub type Labels = BTreeMap<String, String>;

fn parse_value(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|x| x.is_finite())
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Sample>),
    Matrix(Vec<RangeSeries>),
    Scalar(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct Sample {
    metric: Labels,
    value: (f64, String),
}

#[derive(Debug, Deserialize)]
struct RangeSeries {
    metric: Labels,
    values: Vec<(f64, String)>,
}

/// `application/x-www-form-urlencoded` of a value.
fn form_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3 / 2);
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_answers() {
        let p = Prometheus::new("http://127.0.0.1:9090/prom/", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.host.as_str(), p.port, p.prefix.as_str(), p.https),
            ("127.0.0.1", 9090, "/prom", false)
        );
        let p = Prometheus::new("http://[::1]:9090", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.host.as_str(), p.port), ("::1", 9090));
        for bad in ["ftp://x", "http://user:pw@host:9090", "http://host:0", "http://host:x", "http://"] {
            assert!(Prometheus::new(bad, None).is_err(), "{bad}");
        }
        assert_eq!(
            form_encode("max by (pool) (x{a=\"b\"}[60s])"),
            "max+by+%28pool%29+%28x%7Ba%3D%22b%22%7D%5B60s%5D%29"
        );
        let a: Answer = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"pool":"p"},"values":[[60,"1"],[120,"0"]]}]}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(a.data, Some(Data::Matrix(ref m)) if m[0].values.len() == 2));
        let e: Answer =
            serde_json::from_str(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.error.as_deref(), Some("parse error"));
    }
}
