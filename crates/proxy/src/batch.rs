//! Write batching (the `batch_writes` node setting, on by default).
//!
//! An event loop that writes each request to the upstream, and each response to its client,
//! the moment it is ready spreads its writes over the whole pass through the ready
//! connections: a few microseconds apart, each one a wakeup for a peer that has just gone
//! back to sleep. With batching, while other requests are in flight on the same worker, the
//! first write of an upstream request and of a response waits for the end of the current
//! pass (a `yield_now`, which tokio defers until after its next poll of the I/O driver), so
//! the writes of one pass leave back to back and each peer wakes once for several of them.
//! This is what nginx's loop gets for free when it is saturated, and what Redis does on
//! purpose (it writes replies in `beforeSleep`). No request waits for a timer or for another
//! request's I/O: only for the tasks already ready in the same pass.
//!
//! Alone on its worker a request is written at once: with nothing to batch with, the yield
//! would only add an event poll. The count is per thread, so that it costs no shared atomic:
//! exact with one worker (the current-thread runtime); with several, a task that moves
//! between threads makes it approximate, which only changes whether a write waits.
//!
//! Measured in `docs/performance.md` (session 13).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

static ENABLED: AtomicBool = AtomicBool::new(true);

thread_local! {
    /// Requests between their start and their response head on this thread (it may go
    /// negative on a thread that finishes requests another thread started).
    static ACTIVE: Cell<isize> = const { Cell::new(0) };
}

/// Turns batching on or off for this process (from the node settings, at start).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Relaxed);
}

/// Counts a request as active on this thread while alive: from the start of its handling
/// until its response head is ready to be written.
pub struct Active(());

impl Active {
    /// Starts counting.
    #[inline]
    pub fn enter() -> Active {
        ACTIVE.with(|c| c.set(c.get() + 1));
        Active(())
    }
}

impl Drop for Active {
    #[inline]
    fn drop(&mut self) {
        ACTIVE.with(|c| c.set(c.get() - 1));
    }
}

/// Would a write now be worth holding to the end of the pass? `own` says whether the caller's
/// request is itself still counted as active.
#[inline]
fn worth_waiting(own: bool) -> bool {
    ENABLED.load(Relaxed) && ACTIVE.with(Cell::get) > isize::from(own)
}

/// Awaited before the first write of an upstream request (`own = true`: its request is
/// active) or of a response (`own = false`): returns at once when batching is off or no other
/// request is active on this thread, else after the rest of the current scheduler pass.
#[inline]
pub async fn before_write(own: bool) {
    if worth_waiting(own) {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_only_with_other_requests_active() {
        set_enabled(true);
        assert!(!worth_waiting(false));
        let a = Active::enter();
        // Alone: its upstream write goes at once; a response written now has company.
        assert!(!worth_waiting(true));
        assert!(worth_waiting(false));
        let b = Active::enter();
        assert!(worth_waiting(true));
        set_enabled(false);
        assert!(!worth_waiting(true));
        set_enabled(true);
        drop(b);
        drop(a);
        assert!(!worth_waiting(false));
    }
}
