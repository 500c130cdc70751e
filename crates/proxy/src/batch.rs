//! Write batching (the `batch_writes` node setting, on by default).
//!
//! An event loop that writes each request to the upstream, and each response to its client,
//! the moment it is ready spreads its writes over the whole pass through the ready
//! connections: a few microseconds apart, each one a wakeup for a peer that has just gone
//! back to sleep. With batching, the first write of an upstream request and of a response
//! waits for the end of the current pass (a `yield_now`, which tokio defers until after its
//! next poll of the I/O driver; that poll may bring more requests into the same pass), so
//! the writes of one pass leave back to back and each peer wakes once for several of them.
//! This is what nginx's loop gets for free when it is saturated, and what Redis does on
//! purpose (it writes replies in `beforeSleep`). No write waits for a timer or for another
//! request's I/O: only for the tasks already ready in the same pass.
//!
//! Only while more than one client connection is open on the worker: with a single one
//! (HTTP/1 requests on a connection come one after another) there is nothing to batch with,
//! and the extra poll would only add latency (measured: ~15 µs per request at one
//! connection on the development VM). The count is per thread, so no cache line is shared
//! between workers; a connection that closes on another worker than it opened on (work
//! stealing) is taken off the count it was added to.
//!
//! Measured in `docs/performance.md` (session 13).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

static ENABLED: AtomicBool = AtomicBool::new(true);

thread_local! {
    /// Client connections opened on this thread and still open. One counter per thread,
    /// made once and never freed (threads that serve connections live as long as the
    /// runtime), so that a connection can take itself off it from any thread.
    static OPEN: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
}

/// Turns batching on or off for this process (from the node settings, at start).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Relaxed);
}

/// Counts a client connection as open on the thread it opened on, while alive.
pub struct Open(&'static AtomicUsize);

impl Open {
    /// Starts counting.
    pub fn new() -> Open {
        let counter = OPEN.with(|c| *c);
        counter.fetch_add(1, Relaxed);
        Open(counter)
    }
}

impl Default for Open {
    fn default() -> Self {
        Open::new()
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Would a write now be worth holding to the end of the pass? Only with batching on and
/// more than one client connection open on this thread.
#[inline]
fn worth_waiting() -> bool {
    ENABLED.load(Relaxed) && OPEN.with(|c| c.load(Relaxed)) > 1
}

/// Awaited before the first write of an upstream request or of a response: returns at once
/// when batching is off or this thread has a single client connection, else after the rest
/// of the current scheduler pass.
#[inline]
pub async fn before_write() {
    if worth_waiting() {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_only_with_other_connections_open() {
        set_enabled(true);
        let a = Open::new();
        // One connection: written at once.
        assert!(!worth_waiting());
        let b = Open::new();
        assert!(worth_waiting());
        set_enabled(false);
        assert!(!worth_waiting());
        set_enabled(true);
        drop(b);
        assert!(!worth_waiting());
        let c = Open::new();
        // A connection that closes on another thread leaves this one's count.
        std::thread::spawn(move || drop(c)).join().unwrap();
        assert!(!worth_waiting());
        drop(a);
    }
}
