//! `kind = "sip_register"`: a test user registers as a client does, then unregisters.
//!
//! The REGISTER goes to the user's planned pool (its FQDN, port 5061 for TLS and 5060
//! otherwise, or `port`) over the user's transport, through the user agent's one
//! registration routine ([`crate::ua::registration`]: challenges answered under the
//! authentication policy, one redirect followed where the redirect policy allows, the
//! binding checked). After the `200` the binding is removed (`Expires: 0`).
//!
//! The pool whose FQDN or members name the registrar that accepted (or whose addresses
//! it has) is where the user is homed now: `points_to`, exported as
//! `coexist_user_home{user,home_pool}`; when that is not the planned pool the check
//! fails with `wrong_home`.
//!
//! One instance per test user (`users`, default: every `[[users]]` entry); its pool
//! labels are the user's planned pool and its `target` is the user's address of record.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, FailureReason, Measure, Outcome, Phase, ProbeContext};
use crate::model::pool::Pool;
use crate::model::users::User;
use crate::net::tls::TlsOptions;
use crate::ua::registration::{self, OwnConnections, Plan};

/// Seconds asked for by the REGISTER (the binding is removed right after).
const EXPIRES: u32 = 60;

/// The keys of `kind = "sip_register"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipRegisterKeys {
    /// The test users (`[[users]]` names) to register; default: every one.
    pub users: Option<Spanned<Vec<Spanned<String>>>>,
    /// The registrar's port (default: the user's `port`).
    pub port: Option<Spanned<u16>>,
    /// Lowest TLS version (overrides the pool's).
    pub tls_min_version: Option<Spanned<String>>,
    /// Record the chain but do not verify it.
    pub tls_skip_verify: Option<Spanned<bool>>,
}

/// A sip_register check of one user.
#[derive(Debug, Clone, PartialEq)]
pub struct SipRegisterSpec {
    /// The test user.
    pub user: User,
    /// The planned pool's FQDN: where the REGISTER goes first.
    pub registrar: String,
    /// Its port.
    pub port: u16,
    /// TLS options (TLS transport).
    pub opts: TlsOptions,
    /// Every pool (to say where the user is homed).
    pub pools: Vec<Pool>,
    /// The instance's timeout.
    pub budget: Duration,
}

impl CheckKind for SipRegisterSpec {
    type Keys = SipRegisterKeys;
    const MEASURES: &'static [&'static Measure] = &[&crate::ua::credentials::CLOCK_SKEW];

    /// The target label is the user's address of record.
    fn build(keys: &SipRegisterKeys, cx: &BuildCx<'_>) -> Result<(SipRegisterSpec, String), BuildError> {
        let user =
            cx.user.ok_or_else(|| cx.err(cx.name_span.clone(), "users: sip_register runs as test users"))?;
        let pool =
            cx.pool.ok_or_else(|| cx.err(cx.name_span.clone(), "users: the user's pool is unknown"))?;
        let port = match &keys.port {
            Some(_) => cx.port(keys.port.as_ref())?,
            None => user.port,
        };
        let opts = cx.tls_options(&super::TlsKeys {
            tls_min_version: keys.tls_min_version.as_ref(),
            tls_skip_verify: keys.tls_skip_verify.as_ref(),
            min_days_valid: None,
        })?;
        let spec = SipRegisterSpec {
            user: user.clone(),
            registrar: pool.fqdn.clone(),
            port,
            opts,
            pools: cx.pools.to_vec(),
            budget: cx.timeout,
        };
        Ok((spec, user.aor.uri()))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn users(keys: &SipRegisterKeys) -> Option<super::UserSelection<'_>> {
        Some(super::UserSelection(keys.users.as_ref()))
    }

    fn expect_pool(&self) -> Option<&str> {
        Some(&self.user.pool)
    }

    fn homed_user(&self) -> Option<&str> {
        Some(&self.user.name)
    }
}

/// Runs a sip_register probe.
pub async fn probe(spec: &SipRegisterSpec, cx: &ProbeContext) -> Outcome {
    let deadline = Instant::now() + spec.budget.saturating_sub(spec.budget / 50 + Duration::from_millis(5));
    let mut phases = Vec::with_capacity(4);
    let plan = Plan {
        user: &spec.user,
        host: &spec.registrar,
        port: spec.port,
        pools: &spec.pools,
        expires: EXPIRES,
        deadline,
    };
    let t = Instant::now();
    let mut own = OwnConnections { opts: &spec.opts, cx };
    let mut skew = None;
    let registered = registration::register(&mut own, &plan, cx, &mut phases, &mut skew).await;
    let with_skew = |mut o: Outcome, skew: Option<f64>| {
        if let Some(s) = skew {
            o.set(&crate::ua::credentials::CLOCK_SKEW, s);
        }
        o
    };
    let mut reg = match registered {
        Ok(r) => r,
        Err(f) => return with_skew(Outcome::failed(f, phases), skew),
    };
    // Remove the binding: the test user must not stay registered here.
    let unregistered = registration::again(&spec.user, &mut reg.conn, &mut reg.binding, 0, deadline).await;
    // The removal's challenge, if any, shows the registrar's clock last.
    let skew = reg.binding.creds.skew().or(skew);
    phases.push((Phase::Request, t.elapsed()));
    let host = &reg.binding.host;
    let home = registration::home_of(&spec.pools, host, cx).await;
    let mut o = match unregistered {
        Err(f) => Outcome::fail(
            f.reason,
            format!("registered, but removing the binding failed: {}", f.detail),
            phases,
        ),
        Ok(_) if home != spec.user.pool => Outcome::fail(
            FailureReason::WrongHome,
            format!(
                "{} registered on pool {home} (registrar {host}{}), planned {}",
                spec.user.name,
                reg.binding.redirected.as_ref().map(|_| ", after a redirect").unwrap_or(""),
                spec.user.pool
            ),
            phases,
        ),
        Ok(_) => Outcome::pass(phases),
    };
    o.points_to = Some(home);
    with_skew(o, skew)
}
