//! One byte budget for what peers can make the agent hold: the registered endpoints'
//! stream buffers and the answers their server transactions keep for retransmissions.
//!
//! A bound per object is no bound: 1,000 endpoints × 1,024 kept answers × 64 KiB is
//! 64 GB. Every such allocation takes a [`Grant`] from one [`Budget`] first; a grant
//! refused means the caller drops what it wanted to keep (an answer is not kept, a
//! stream is closed and registered again) instead of growing.
//!
//! What it does not do: count the agent's own working memory (results, metrics,
//! probes' transient buffers), which the configuration bounds.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The default budget: 16 MiB for every endpoint together (`agent.endpoint_memory_mib`).
pub const DEFAULT_BYTES: usize = 16 * 1024 * 1024;

/// Bytes that may be held at once, and how many are.
#[derive(Debug)]
pub struct Budget {
    limit: AtomicUsize,
    used: AtomicUsize,
    refused: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Changes the limit (a reloaded configuration). Bytes held stay held; a lower
    /// limit refuses new grants until enough are given back.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Requests refused so far (for the log and tests).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|v| *v <= self.limit()) else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            match self.used.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// A grant of `n` bytes, or `None` when that would pass the limit.
    pub fn grant(self: &Arc<Self>, n: usize) -> Option<Grant> {
        self.take(n).then(|| Grant { budget: self.clone(), bytes: n })
    }

    /// An empty grant, to grow later.
    pub fn empty(self: &Arc<Self>) -> Grant {
        Grant { budget: self.clone(), bytes: 0 }
    }
}

/// Bytes taken from a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub struct Grant {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Grant {
    /// Bytes held by this grant.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Makes the grant `n` bytes: giving back is always possible, growing only within
    /// the budget (`false`, and the grant unchanged, when it is not).
    pub fn resize(&mut self, n: usize) -> bool {
        if n <= self.bytes {
            self.budget.give(self.bytes - n);
            self.bytes = n;
            return true;
        }
        if self.budget.take(n - self.bytes) {
            self.bytes = n;
            true
        } else {
            false
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_hold_the_total_under_the_limit_and_give_back_on_drop() {
        let b = Budget::new(100);
        let g1 = b.grant(60).unwrap();
        assert!(b.grant(41).is_none());
        assert_eq!(b.refused(), 1);
        let mut g2 = b.grant(40).unwrap();
        assert_eq!(b.used(), 100);
        assert!(!g2.resize(41));
        assert_eq!(g2.bytes(), 40);
        assert!(g2.resize(10));
        assert_eq!(b.used(), 70);
        drop(g1);
        assert_eq!(b.used(), 10);
        drop(g2);
        assert_eq!(b.used(), 0);
        let mut e = b.empty();
        assert!(e.resize(100));
        assert!(!e.resize(usize::MAX));
        drop(e);
        assert_eq!(b.used(), 0);
    }
}
