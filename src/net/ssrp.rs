//! The SQL Server Resolution Protocol (MS-SQLR) on the wire: the `CLNT_UCAST_EX` request
//! (one byte, 0x03) a client sends to UDP 1434 to list a server's SQL instances, and the
//! `SVR_RESP` answer (0x05, the data's length as two bytes little-endian, then an MBCS
//! string: per instance `ServerName;…;InstanceName;…;IsClustered;…;Version;…` and its
//! transports such as `tcp;PORT`, instances separated by `;;`). Lync Server keeps each
//! server's local replica of the Central Management Store in the SQL Express instance
//! `RTCLOCAL` (and `LYNCLOCAL` for its own data), found through this browser.
//!
//! Wire layer: no I/O; the data read only within its declared length (at most 65,535
//! bytes), at most [`MAX_INSTANCES`] instances.

/// `CLNT_UCAST_EX` (MS-SQLR §2.2.2).
pub const CLNT_UCAST_EX: u8 = 0x03;
/// `SVR_RESP` (MS-SQLR §2.2.5).
const SVR_RESP: u8 = 0x05;
/// Instances read from one answer, at most.
pub const MAX_INSTANCES: usize = 256;

/// One SQL instance a browser lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `ServerName`.
    pub server: String,
    /// `InstanceName`.
    pub name: String,
    /// `Version`.
    pub version: String,
    /// The `tcp` transport's port, when it listens on TCP.
    pub tcp_port: Option<u16>,
}

/// Why an answer is not an instance list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrpError {
    /// Not an `SVR_RESP`, or cut short.
    #[error("not an SVR_RESP: {0}")]
    Malformed(&'static str),
}

/// An answer that is not an instance list: `ssrp_malformed`, so that `?` turns it into a probe step's failure.
impl From<SsrpError> for crate::failure::Failure {
    fn from(e: SsrpError) -> crate::failure::Failure {
        crate::failure::Failure::new(crate::failure::FailureReason::SsrpMalformed, e.to_string())
    }
}

/// The instances of an `SVR_RESP` to `CLNT_UCAST_EX`.
pub fn parse_svr_resp(b: &[u8]) -> Result<Vec<Instance>, SsrpError> {
    if b.len() < 3 || b[0] != SVR_RESP {
        return Err(SsrpError::Malformed("no SVR_RESP byte"));
    }
    let size = usize::from(u16::from_le_bytes([b[1], b[2]]));
    let data = b.get(3..3 + size).ok_or(SsrpError::Malformed("shorter than its RESP_SIZE"))?;
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    for part in text.split(";;").filter(|p| !p.trim().is_empty()).take(MAX_INSTANCES) {
        let tokens: Vec<&str> = part.split(';').collect();
        let value = |key: &str| {
            tokens.chunks(2).find(|kv| kv[0].eq_ignore_ascii_case(key)).and_then(|kv| kv.get(1)).copied()
        };
        let (Some(server), Some(name)) = (value("ServerName"), value("InstanceName")) else {
            return Err(SsrpError::Malformed("an instance without ServerName or InstanceName"));
        };
        out.push(Instance {
            server: server.to_owned(),
            name: name.to_owned(),
            version: value("Version").unwrap_or("").to_owned(),
            tcp_port: value("tcp").and_then(|p| p.parse().ok()),
        });
    }
    if out.is_empty() {
        return Err(SsrpError::Malformed("no instance"));
    }
    Ok(out)
}

/// An `SVR_RESP` listing `instances` of `server` (`(name, version, tcp port)`): what the
/// demo lab's Front Ends answer.
pub fn svr_resp(server: &str, instances: &[(&str, &str, u16)]) -> Vec<u8> {
    let data: Vec<String> = instances
        .iter()
        .map(|(name, version, port)| {
            format!("ServerName;{server};InstanceName;{name};IsClustered;No;Version;{version};tcp;{port};;")
        })
        .collect();
    let data = data.concat();
    let mut b = vec![SVR_RESP];
    b.extend_from_slice(&(data.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
    b.extend_from_slice(&data.as_bytes()[..data.len().min(usize::from(u16::MAX))]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SQL Server 2000 browser's answer as jTDS documents it (`MSSqlServerInfo`, a
    /// capture of a server with two instances, MSSQLSERVER and DOG): the byte layout of
    /// MS-SQLR §2.2.5 (0x05, the size little-endian, `;`-separated pairs, `;;` between
    /// instances).
    #[test]
    fn a_captured_answer_with_two_instances() {
        let data = "ServerName;BRINKLEY;InstanceName;MSSQLSERVER;IsClustered;No;Version;8.00.194;tcp;1433;\
                    np;\\\\BRINKLEY\\pipe\\sql\\query;;ServerName;BRINKLEY;InstanceName;DOG;IsClustered;No;\
                    Version;8.00.194;tcp;3546;np;\\\\BRINKLEY\\pipe\\MSSQL$DOG\\sql\\query;;";
        let mut b = vec![0x05];
        b.extend_from_slice(&(data.len() as u16).to_le_bytes());
        b.extend_from_slice(data.as_bytes());
        let got = parse_svr_resp(&b).unwrap();
        let names: Vec<(&str, Option<u16>)> = got.iter().map(|i| (i.name.as_str(), i.tcp_port)).collect();
        assert_eq!(names, [("MSSQLSERVER", Some(1433)), ("DOG", Some(3546))]);
        assert_eq!(got[0].server, "BRINKLEY");
        assert_eq!(got[1].version, "8.00.194");
    }

    #[test]
    fn the_lab_answer_reads_back_and_hostile_answers_are_malformed() {
        let b = svr_resp(
            "LYNCFE01",
            &[("RTCLOCAL", "11.0.2100.60", 49152), ("LYNCLOCAL", "11.0.2100.60", 49153)],
        );
        let got = parse_svr_resp(&b).unwrap();
        assert_eq!(got.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["RTCLOCAL", "LYNCLOCAL"]);
        for bad in [&b"\x04\x00\x00"[..], &b"\x05\xff\x00abc"[..], &b"\x05\x03\x00;;;"[..], &b""[..]] {
            assert!(parse_svr_resp(bad).is_err(), "{bad:?}");
        }
    }
}
