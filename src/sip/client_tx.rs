//! The retransmission timers of a client transaction (RFC 3261 §17.1), without
//! sockets: every client transaction of the user agent — over a probe's own UDP
//! socket, or over a registered endpoint's link — asks this when to send again.
//!
//! - Non-INVITE over UDP (timer E): T1, doubling, capped at T2; after a provisional
//!   response at T2.
//! - INVITE over UDP (timer A): T1, doubling (capped at T2 here too: a probe's deadline
//!   is seconds); a provisional response stops retransmission (the server has it).
//! - Reliable transports (TCP, TLS): no retransmission.
//!
//! The transaction ends at its deadline (timers B/F are the caller's deadline).
//!
//! What it does not do: send, receive, or match responses.

use std::time::Duration;

use tokio::time::Instant;

/// RFC 3261 T1: the first retransmission interval.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2: the longest retransmission interval of a non-INVITE request.
pub const T2: Duration = Duration::from_secs(4);

/// When a client transaction sends its request again.
#[derive(Debug, Clone)]
pub struct Retransmit {
    interval: Duration,
    next: Instant,
    invite: bool,
    reliable: bool,
    provisional: bool,
    sends: u32,
}

impl Retransmit {
    /// The timers of a request first sent at `now`.
    pub fn new(now: Instant, invite: bool, reliable: bool) -> Retransmit {
        Retransmit { interval: T1, next: now + T1, invite, reliable, provisional: false, sends: 1 }
    }

    /// Whether the request is sent again at all (unreliable, and not an INVITE the
    /// server has acknowledged with a provisional response).
    fn active(&self) -> bool {
        !(self.reliable || (self.invite && self.provisional))
    }

    /// When to wake: the next retransmission, or the deadline.
    pub fn wake(&self, deadline: Instant) -> Instant {
        if self.active() {
            self.next.min(deadline)
        } else {
            deadline
        }
    }

    /// A provisional response arrived: the server has the request.
    pub fn provisional(&mut self) {
        self.provisional = true;
        self.interval = T2;
    }

    /// The wake-up came at `now`: whether to send the request again (and the timer is
    /// set for the next time).
    pub fn fire(&mut self, now: Instant) -> bool {
        if !self.active() || now < self.next {
            return false;
        }
        self.sends += 1;
        self.interval = (self.interval * 2).min(T2);
        self.next = now + self.interval;
        true
    }

    /// Transmissions so far.
    pub fn sends(&self) -> u32 {
        self.sends
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_e_doubles_to_t2_and_a_provisional_response_moves_it_to_t2() {
        let t0 = Instant::now();
        let mut r = Retransmit::new(t0, false, false);
        let far = t0 + Duration::from_secs(60);
        let mut at = Vec::new();
        while at.len() < 6 {
            let now = r.wake(far);
            if r.fire(now) {
                at.push((now - t0).as_millis());
            }
        }
        assert_eq!(at, vec![500, 1500, 3500, 7500, 11500, 15500]);
        assert_eq!(r.sends(), 7);
        let mut r = Retransmit::new(t0, false, false);
        r.provisional();
        let now = r.wake(far);
        assert!(r.fire(now));
        assert_eq!(r.wake(far) - now, T2);
    }

    #[test]
    fn an_invite_stops_after_a_provisional_response_and_streams_never_resend() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(5);
        let mut r = Retransmit::new(t0, true, false);
        assert!(r.fire(r.wake(deadline)));
        r.provisional();
        assert_eq!(r.wake(deadline), deadline);
        assert!(!r.fire(deadline));
        let mut r = Retransmit::new(t0, false, true);
        assert_eq!(r.wake(deadline), deadline);
        assert!(!r.fire(deadline));
        assert_eq!(r.sends(), 1);
        // Early wake-ups (a stray message) do not count as the timer.
        let mut r = Retransmit::new(t0, false, false);
        assert!(!r.fire(t0 + Duration::from_millis(10)));
    }
}
