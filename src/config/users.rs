//! `[[users]]`: the test users, their secrets read and checked, and the selection of
//! users a per-user or per-pair check names.

use super::build::check_name;
use super::*;

/// Validates `[[users]]` and reads their secrets.
pub(super) fn build_users(
    raw: &[RawUser],
    pools: &[Pool],
    src: &Source<'_>,
) -> Result<Vec<User>, ConfigError> {
    let mut users: Vec<User> = Vec::new();
    for (i, ru) in raw.iter().enumerate() {
        let p = format!("users[{i}]");
        if let Some(pw) = &ru.password {
            return Err(src.err(
                pw.span(),
                &format!(
                    "{p}.password: a password is not written in the configuration (configurations get \
                     pasted into tickets); put it in a file named by password_file (mode 600) or in \
                     the environment variable named by password_env"
                ),
            ));
        }
        let name = ru.name.get_ref();
        check_name(name).map_err(|m| src.err(ru.name.span(), &format!("{p}.name: {m}")))?;
        if users.iter().any(|u| &u.name == name) {
            return Err(src.err(ru.name.span(), &format!("{p}.name: duplicate user name {name:?}")));
        }
        let aor =
            Aor::parse(ru.uri.get_ref()).map_err(|m| src.err(ru.uri.span(), &format!("{p}.uri: {m}")))?;
        if users.iter().any(|u| u.aor == aor) {
            return Err(src.err(ru.uri.span(), &format!("{p}.uri: {} is another user's too", aor.uri())));
        }
        if !pools.iter().any(|x| &x.name == ru.pool.get_ref()) {
            return Err(src.err(ru.pool.span(), &format!("{p}.pool: unknown pool {:?}", ru.pool.get_ref())));
        }
        let transport = match &ru.transport {
            None => crate::sip::message::Transport::Tls,
            Some(t) => crate::sip::message::Transport::parse(t.get_ref()).ok_or_else(|| {
                src.err(t.span(), &format!("{p}.transport: {:?} is not one of udp, tcp, tls", t.get_ref()))
            })?,
        };
        let auth_kind = ru.auth.as_ref().map_or("digest", |a| a.get_ref().as_str());
        if let (Some(d), false) = (&ru.domain, auth_kind == "ntlm") {
            return Err(src.err(d.span(), &format!("{p}.domain: only auth = \"ntlm\" has a domain")));
        }
        let auth = match auth_kind {
            "digest" => {
                let password = read_password(ru, &p, src, "digest")?;
                let username = ru.username.as_ref().map_or_else(|| aor.user.clone(), |u| u.get_ref().clone());
                let realm = match &ru.realm {
                    Some(r) if r.get_ref().is_empty() || r.get_ref().contains(['"', '\\']) => {
                        return Err(src.err(r.span(), &format!("{p}.realm: {:?} is not a realm", r.get_ref())))
                    }
                    r => r.as_ref().map(|r| r.get_ref().clone()),
                };
                let allow_md5 = ru.allow_md5.as_ref().is_some_and(|a| *a.get_ref());
                let min_algorithm = match &ru.min_algorithm {
                    None => crate::sip::auth::Algorithm::Sha256,
                    Some(m) => match crate::sip::auth::parse_algorithm(m.get_ref()) {
                        Some((a, false)) if a != crate::sip::auth::Algorithm::Md5 => a,
                        _ => {
                            return Err(src.err(
                                m.span(),
                                &format!(
                                "{p}.min_algorithm: {:?} is not one of SHA-256, SHA-512-256 (MD5: allow_md5)",
                                m.get_ref()
                            ),
                            ))
                        }
                    },
                };
                if let (Some(m), true) = (&ru.min_algorithm, allow_md5) {
                    return Err(src.err(
                        m.span(),
                        &format!("{p}.min_algorithm: with allow_md5 = true MD5 is answered anyway: set one of the two"),
                    ));
                }
                UserAuth::Digest {
                    username,
                    password: crate::sip::auth::Secret::new(password),
                    realm,
                    allow_md5,
                    min_algorithm,
                }
            }
            "ntlm" => {
                if let Some(k) = digest_only(ru) {
                    return Err(src.err(
                        k,
                        &format!("{p}: auth = \"ntlm\" answers NTLM challenges only (realm, allow_md5, min_algorithm are Digest's)"),
                    ));
                }
                let password = read_password(ru, &p, src, "ntlm")?;
                let given = ru.username.as_ref().map_or_else(|| aor.user.clone(), |u| u.get_ref().clone());
                // DOMAIN\user, or a user principal name (user@dns.domain) with no domain.
                let (domain, username) = match given.split_once('\\') {
                    Some((d, u)) => (d.to_owned(), u.to_owned()),
                    None => (String::new(), given),
                };
                let domain = match &ru.domain {
                    Some(d) if given_has_domain(&ru.username) => {
                        return Err(src.err(
                            d.span(),
                            &format!(
                                "{p}.domain: the username names its domain already (DOMAIN\\user): give one"
                            ),
                        ))
                    }
                    Some(d) => d.get_ref().clone(),
                    None => domain,
                };
                if username.is_empty() {
                    let span = ru.username.as_ref().map_or_else(|| ru.name.span(), |u| u.span());
                    return Err(src.err(span, &format!("{p}.username: no user name")));
                }
                UserAuth::Ntlm { domain, username, password: crate::sip::auth::Secret::new(password) }
            }
            "none" => {
                if let Some(f) =
                    ru.password_file.as_ref().map(|f| f.span()).or(ru.password_env.as_ref().map(|e| e.span()))
                {
                    return Err(src.err(f, &format!("{p}: auth = \"none\" uses no password")));
                }
                if let Some(k) = digest_only(ru) {
                    return Err(src.err(
                        k,
                        &format!(
                            "{p}: auth = \"none\" answers no challenge (realm, allow_md5, min_algorithm)"
                        ),
                    ));
                }
                UserAuth::None
            }
            other => {
                let span = ru.auth.as_ref().map_or(0..0, |a| a.span());
                return Err(src.err(span, &format!("{p}.auth: {other:?} is not one of digest, ntlm, none")));
            }
        };
        let port = match &ru.port {
            Some(v) if *v.get_ref() == 0 => {
                return Err(src.err(v.span(), &format!("{p}.port: must be 1-65535")))
            }
            Some(v) => *v.get_ref(),
            None => transport.default_port(),
        };
        let sip = ru.sip.as_ref().is_none_or(|s| *s.get_ref());
        let mut redirect_hosts = Vec::new();
        for h in ru.redirect_hosts.iter().flatten() {
            let host = h.get_ref().trim_start_matches('[').trim_end_matches(']');
            match host.parse::<std::net::IpAddr>() {
                // Written as the address prints (2001:db8::1, not 2001:DB8:0::1).
                Ok(ip) => redirect_hosts.push(ip.to_string()),
                Err(_) => {
                    crate::model::pool::check_hostname(host)
                        .map_err(|m| src.err(h.span(), &format!("{p}.redirect_hosts: {m}")))?;
                    redirect_hosts.push(host.trim_end_matches('.').to_ascii_lowercase());
                }
            }
        }
        users.push(User {
            name: name.clone(),
            aor,
            pool: ru.pool.get_ref().clone(),
            auth,
            transport,
            port,
            sip,
            redirect_hosts,
        });
    }
    Ok(users)
}

/// The span of the first Digest-only key a user has, if any.
fn digest_only(ru: &RawUser) -> Option<std::ops::Range<usize>> {
    ru.realm
        .as_ref()
        .map(|r| r.span())
        .or(ru.allow_md5.as_ref().map(|a| a.span()))
        .or(ru.min_algorithm.as_ref().map(|m| m.span()))
}

/// The users a per-user check runs as: those named, or every one that is a SIP test
/// user (not `sip = false`). Naming a `sip = false` account is an error.
pub(super) fn select_users<'u>(
    sel: crate::kinds::UserSelection<'_>,
    users: &'u [User],
    path: &str,
    key: &str,
    name_span: std::ops::Range<usize>,
    src: &Source<'_>,
) -> Result<Vec<&'u User>, ConfigError> {
    let picked: Vec<&User> = match sel.0 {
        None => users.iter().filter(|u| u.sip).collect(),
        Some(list) => {
            let mut v: Vec<&User> = Vec::new();
            for n in list.get_ref() {
                let u = users.iter().find(|u| &u.name == n.get_ref()).ok_or_else(|| {
                    src.err(n.span(), &format!("{path}.{key}: unknown user {:?}", n.get_ref()))
                })?;
                if !u.sip {
                    return Err(src.err(
                        n.span(),
                        &format!(
                            "{path}.{key}: {:?} has sip = false (an account for sign_in_as, not a SIP test user)",
                            n.get_ref()
                        ),
                    ));
                }
                if v.iter().any(|x| x.name == u.name) {
                    return Err(
                        src.err(n.span(), &format!("{path}.{key}: {:?} is listed twice", n.get_ref()))
                    );
                }
                v.push(u);
            }
            v
        }
    };
    if picked.is_empty() {
        return Err(src.err(name_span, &format!("{path}.{key}: no test user to run as (add [[users]])")));
    }
    Ok(picked)
}

/// The password of a user that answers challenges: from `password_file` (its first
/// line) or the environment variable `password_env`, exactly one of them.
fn read_password(ru: &RawUser, p: &str, src: &Source<'_>, kind: &str) -> Result<String, ConfigError> {
    let password = match (&ru.password_file, &ru.password_env) {
        (Some(f), None) => {
            let path = f.get_ref();
            let bytes = crate::net::tls::read_config_file(path)
                .map_err(|m| src.err(f.span(), &format!("{p}.password_file: {}: {m}", path.display())))?;
            crate::net::tls::warn_if_readable_by_others(path);
            let text = String::from_utf8(bytes).map_err(|_| {
                src.err(f.span(), &format!("{p}.password_file: {}: not UTF-8 text", path.display()))
            })?;
            let pw = text.trim_end_matches(['\r', '\n']).to_owned();
            if pw.is_empty() {
                return Err(src.err(f.span(), &format!("{p}.password_file: {}: empty", path.display())));
            }
            pw
        }
        (None, Some(e)) => match std::env::var(e.get_ref()) {
            Ok(v) if !v.is_empty() => v,
            _ => {
                return Err(src.err(
                    e.span(),
                    &format!(
                        "{p}.password_env: {} is not set (or empty) in the agent's environment",
                        e.get_ref()
                    ),
                ))
            }
        },
        (Some(f), Some(_)) => {
            return Err(src
                .err(f.span(), &format!("{p}.password_file: give password_file or password_env, not both")))
        }
        (None, None) => {
            return Err(src
                .err(ru.name.span(), &format!("{p}: auth = \"{kind}\" needs password_file or password_env")))
        }
    };
    Ok(password)
}

/// Whether a `username` is written `DOMAIN\user`.
fn given_has_domain(username: &Option<toml::Spanned<String>>) -> bool {
    username.as_ref().is_some_and(|u| u.get_ref().contains('\\'))
}
