//! `coexistd demo --faults`: the lab plays a compressed migration day on a loop — one
//! fault at a time, each held for a while and then repaired, so that a newcomer sees
//! what every kind of failure looks like on the page, in the metrics, in
//! `check --trace`, in `/api/v1/events` and (with the shipped rules) in Alertmanager.

use std::sync::atomic::{AtomicU8, Ordering};

/// One fault the lab can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The new pool's second Front End (127.0.20.2) stops answering SIP.
    FrontEndSilent,
    /// `_sipinternaltls._tcp` is rolled back to the legacy pool.
    SignInRolledBack,
    /// The legacy pool's certificate is replaced by one expiring in 5 days.
    CertExpiring,
    /// alice is moved to the new pool (the plan still homes her on the legacy one).
    UserMoved,
    /// Requests from the new pool to the legacy one are lost (one way).
    RouteOneWay,
    /// The legacy pool's certificate falls back to a SHA-1 signed one.
    LegacySha1,
}

impl Fault {
    /// Every fault, in the order they are played.
    pub const ALL: [Fault; 6] = [
        Fault::FrontEndSilent,
        Fault::SignInRolledBack,
        Fault::CertExpiring,
        Fault::UserMoved,
        Fault::RouteOneWay,
        Fault::LegacySha1,
    ];

    /// What happens, as announced ("now: …").
    pub fn announcement(self) -> &'static str {
        match self {
            Fault::FrontEndSilent => "fe2 of lync2013 (127.0.20.2) stops answering SIP",
            Fault::SignInRolledBack => "_sipinternaltls._tcp.contoso.test is rolled back to the legacy pool",
            Fault::CertExpiring => "the legacy pool's certificate is replaced by one expiring in 5 days",
            Fault::UserMoved => "alice is moved to lync2013 while the plan still homes her on ocs2007r2",
            Fault::RouteOneWay => "requests from lync2013 to ocs2007r2 are lost (the route breaks one way)",
            Fault::LegacySha1 => "the legacy pool's certificate falls back to a SHA-1 signed one",
        }
    }

    /// The check that shows it and the reason it fails with.
    pub fn shows_as(self) -> (&'static str, &'static str) {
        match self {
            Fault::FrontEndSilent => ("sip-options-tls", "timeout"),
            Fault::SignInRolledBack => ("sipinternaltls-srv", "dns_wrong_pool"),
            Fault::CertExpiring => ("sip-tls", "cert_expiring"),
            Fault::UserMoved => ("register", "wrong_home"),
            Fault::RouteOneWay => ("im", "timeout"),
            Fault::LegacySha1 => ("legacy-cert-signature", "cert_weak_signature"),
        }
    }

    fn code(self) -> u8 {
        Fault::ALL.iter().position(|f| *f == self).map_or(0, |i| i as u8 + 1)
    }
}

/// The fault being played now, shared with the lab's listeners.
#[derive(Debug, Default)]
pub struct Faults(AtomicU8);

impl Faults {
    /// The fault played now.
    pub fn active(&self) -> Option<Fault> {
        let c = self.0.load(Ordering::Relaxed);
        (c > 0).then(|| Fault::ALL.get(usize::from(c) - 1).copied()).flatten()
    }

    /// Whether `f` is being played.
    pub fn is(&self, f: Fault) -> bool {
        self.active() == Some(f)
    }

    /// Plays `f` (or nothing).
    pub fn set(&self, f: Option<Fault>) {
        self.0.store(f.map_or(0, Fault::code), Ordering::Relaxed);
    }
}
