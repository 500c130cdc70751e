//! Busy polling (the `busy_polling` node setting, off by default; HAProxy's `busy-polling`).
//!
//! A worker that runs out of work normally blocks in `epoll_wait`. On a virtual machine that
//! idles the virtual CPU, and the next packet has to wake it through the hypervisor: an
//! inter-processor interrupt and a VM exit paid by the CPU that sends the packet, then a
//! reschedule of the halted virtual CPU (this development VM does no halt polling:
//! `guest_halt_poll_ns = 0`). With busy polling each worker runs a task that yields forever
//! while traffic flows, so that the worker's idle moments become zero-timeout `epoll_wait`
//! calls and the CPU never halts. It parks itself after [`IDLE_WINDOW`] without a request,
//! so an idle gateway does not burn CPU, and the next request wakes it.
//!
//! The cost is CPU: a worker that sees a request at least every [`IDLE_WINDOW`] keeps its
//! core fully busy. The benefit is latency and throughput where waking an idle CPU is dear
//! (see `docs/performance.md`).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A spinner parks after this long without a request on its worker.
pub const IDLE_WINDOW: Duration = Duration::from_micros(200);

thread_local! {
    /// Requests started on this thread (wrapping).
    static STARTED: Cell<u64> = const { Cell::new(0) };
}

/// Spinners currently parked.
static PARKED: AtomicUsize = AtomicUsize::new(0);
static WAKE: Notify = Notify::const_new();

/// Marks a request start on this thread: keeps its spinner spinning and wakes a parked one.
/// A thread-local increment and one shared load that is only written when spinners park or
/// wake, so it costs nothing measurable when busy polling is off.
#[inline]
pub fn activity() {
    STARTED.with(|c| c.set(c.get().wrapping_add(1)));
    if PARKED.load(Relaxed) != 0 {
        WAKE.notify_one();
    }
}

fn started() -> u64 {
    STARTED.with(Cell::get)
}

/// Starts one spinner per runtime worker. Call from inside the proxy's runtime.
pub fn start() {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    for _ in 0..workers.max(1) {
        tokio::spawn(spin(IDLE_WINDOW));
    }
}

/// Yields to the scheduler until `idle` passes without a request on the thread it runs on,
/// then waits for the next request anywhere. A yielded task is deferred by tokio, and a
/// scheduler with only deferred tasks polls its I/O driver with a zero timeout instead of
/// blocking: that is the busy poll.
async fn spin(idle: Duration) {
    let mut seen = started();
    let mut since = Instant::now();
    loop {
        tokio::task::yield_now().await;
        let now = started();
        if now != seen {
            seen = now;
            since = Instant::now();
            continue;
        }
        if since.elapsed() >= idle {
            PARKED.fetch_add(1, Relaxed);
            // A request between the increment and this await leaves a permit: no lost wakeup.
            WAKE.notified().await;
            PARKED.fetch_sub(1, Relaxed);
            seen = started();
            since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked() -> usize {
        PARKED.load(Relaxed)
    }

    /// Yields (letting the spinner run) until `cond` holds, for at most `limit`.
    async fn within(limit: Duration, cond: impl Fn() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if cond() {
                return true;
            }
            tokio::task::yield_now().await;
        }
        cond()
    }

    // Other tests in this binary may start requests (and so wake the spinner) at any moment;
    // every check below is "eventually", which such wakeups cannot break.
    #[tokio::test(flavor = "current_thread")]
    async fn spinner_parks_when_idle_and_wakes_on_a_request() {
        // A window long enough that the OS descheduling this thread cannot look like idleness.
        let spinner = tokio::spawn(spin(Duration::from_millis(50)));
        // No requests: it spins for the window, then parks.
        assert!(within(Duration::from_secs(5), || parked() == 1).await);
        // A request wakes it; it spins again.
        activity();
        assert!(within(Duration::from_secs(5), || parked() == 0).await);
        // Requests closer together than the window keep it spinning (never parked).
        let end = Instant::now() + Duration::from_millis(200);
        while Instant::now() < end {
            activity();
            tokio::task::yield_now().await;
            assert_eq!(parked(), 0, "parked while requests kept coming");
        }
        // And once they stop it parks again.
        assert!(within(Duration::from_secs(5), || parked() == 1).await);
        spinner.abort();
    }
}
