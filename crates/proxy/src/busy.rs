//! Busy polling (the `busy_polling` node setting, off by default; HAProxy's `busy-polling`).
//!
//! A worker that runs out of work normally blocks in `epoll_wait`. On a virtual machine that
//! idles the virtual CPU, and the next packet has to wake it through the hypervisor: an
//! inter-processor interrupt and a VM exit paid by the CPU that sends the packet, then a
//! reschedule of the halted virtual CPU (this development VM does no halt polling:
//! `guest_halt_poll_ns = 0`). With busy polling each worker runs a task that yields forever
//! while traffic flows, so that the worker's idle moments become zero-timeout `epoll_wait`
//! calls and the CPU never halts. It parks itself after `busy_polling_window` (200 µs by
//! default) without a request, so an idle gateway does not burn CPU, and the next request
//! wakes it.
//!
//! The cost is CPU: a worker that sees a request start at least once per window keeps
//! its core fully busy. The benefit is latency and throughput where waking an idle CPU is dear
//! (see `docs/performance.md`). Only request starts count as traffic: a worker whose requests
//! start further apart (one connection to a slow upstream) parks between them.
//!
//! Only the single-threaded scheduler (`workers = 1`) can do this: in tokio's multi-threaded
//! one the I/O driver is shared, a parked worker holds it in a blocking `epoll_wait`, and a
//! spinning worker's zero-timeout poll finds it taken and polls nothing. Settings validation
//! refuses `busy_polling` with more than one worker.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

thread_local! {
    /// Requests started on this thread (wrapping).
    static STARTED: Cell<u64> = const { Cell::new(0) };
}

/// Spinners parked and not yet claimed by a waking request.
static PARKED: AtomicUsize = AtomicUsize::new(0);
static WAKE: Notify = Notify::const_new();

/// Marks a request start on this thread: keeps its spinner spinning and wakes a parked one.
/// A thread-local increment and one shared load that is only written when spinners park or
/// wake, so it costs nothing measurable when busy polling is off.
#[inline]
pub fn activity() {
    STARTED.with(|c| c.set(c.get().wrapping_add(1)));
    // Claim one parked spinner before waking it, so that the requests that follow, before it
    // runs, do not store extra wakeups that would cut its next park short.
    if PARKED.load(Relaxed) != 0
        && PARKED
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
    {
        WAKE.notify_one();
    }
}

fn started() -> u64 {
    STARTED.with(Cell::get)
}

/// Starts the spinner, parking after `idle` without a request. Call from inside the proxy's
/// (single-threaded) runtime.
pub fn start(idle: Duration) {
    tokio::spawn(spin(idle));
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
            // The request that claims this spinner (decrementing PARKED) wakes it; one that
            // comes between the increment and this await leaves a permit: no lost wakeup.
            WAKE.notified().await;
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

    /// CPU time this thread has used, in clock ticks (10 ms each on Linux).
    fn thread_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// CPU ticks this thread uses while a task sleeps for `wall`, starting a request every
    /// 10 ms when `requests` is set.
    async fn ticks_while_sleeping(wall: Duration, requests: bool) -> u64 {
        let before = thread_ticks();
        let end = Instant::now() + wall;
        while Instant::now() < end {
            if requests {
                activity();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        thread_ticks() - before
    }

    // One test for the whole life cycle: the counters are process-wide. Other tests in this
    // binary may start requests (waking the spinner) at any moment; the checks that could be
    // disturbed by that are "eventually" checks.
    #[tokio::test(flavor = "current_thread")]
    async fn spinner_busy_polls_while_requests_come_and_parks_when_idle() {
        let base = parked();
        // A window long enough that the OS descheduling this thread cannot look like idleness.
        let spinner = tokio::spawn(spin(Duration::from_millis(50)));
        // Requests every 10 ms (within the window): the thread polls instead of sleeping,
        // so it is busy although its only other task sleeps; the timers still fire.
        let busy = ticks_while_sleeping(Duration::from_millis(400), true).await;
        assert!(busy >= 8, "spinning thread used only {busy} of 40 ticks");
        // No requests: after the window it parks, and the thread sleeps again.
        assert!(within(Duration::from_secs(5), || parked() == base + 1).await);
        let idle = ticks_while_sleeping(Duration::from_millis(400), false).await;
        assert!(idle <= 5, "parked spinner's thread used {idle} ticks");
        // A request claims and wakes it.
        activity();
        assert_eq!(parked(), base);
        // Requests closer together than the window keep it from parking.
        let end = Instant::now() + Duration::from_millis(200);
        while Instant::now() < end {
            activity();
            tokio::task::yield_now().await;
            assert_eq!(parked(), base, "parked while requests kept coming");
        }
        // And once they stop it parks again.
        assert!(within(Duration::from_secs(5), || parked() == base + 1).await);
        spinner.abort();
        activity();
    }
}
