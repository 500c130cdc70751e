//! One timer per connection, re-armed only when it fires before the deadline that applies
//! now. Deadlines mostly move later (the next request's timeout starts after the last one),
//! so a request costs no timer registration: the timer stays registered for the earliest
//! deadline and, when it fires early, is moved to the current one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// See the module docs.
#[derive(Default)]
pub(crate) struct ConnTimer {
    deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The waker the sleep was last polled (pending) with: while it has neither fired nor
    /// been reset, it will wake that task, and polling it again for the same task (as every
    /// read on a connection does) only repeats the registration.
    waker: Option<Waker>,
}

impl ConnTimer {
    /// Starts the next wait from the next [`ConnTimer::expired`] call.
    pub(crate) fn clear(&mut self) {
        self.deadline = None;
    }

    /// True when `after` has passed since the first call after [`ConnTimer::clear`];
    /// otherwise makes sure the task wakes by then.
    pub(crate) fn expired(&mut self, after: Duration, cx: &mut Context<'_>) -> bool {
        let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + after);
        self.passed(deadline, cx)
    }

    /// True when `deadline` has passed; otherwise makes sure the task wakes by then.
    pub(crate) fn passed(&mut self, deadline: Instant, cx: &mut Context<'_>) -> bool {
        if let (Some(sleep), Some(waker)) = (&self.sleep, &self.waker) {
            if sleep.deadline() <= deadline && !sleep.is_elapsed() && waker.will_wake(cx.waker()) {
                return false;
            }
        }
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    self.waker = Some(cx.waker().clone());
                }
                return false;
            }
            if Instant::now() >= deadline {
                return true;
            }
            // Fired for an earlier deadline: wait for this one.
            sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;
    use std::time::Duration;

    use super::ConnTimer;

    async fn wait(mut t: ConnTimer, after: Duration) -> ConnTimer {
        poll_fn(|cx| {
            if t.expired(after, cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        t
    }

    #[tokio::test]
    async fn a_timer_wakes_the_task_that_polled_it_last() {
        // Task A arms the timer for 50 ms and hands it on (a pooled upstream connection moves
        // between client tasks like this).
        let mut t = tokio::spawn(async move {
            let mut t = ConnTimer::default();
            poll_fn(|cx| {
                assert!(!t.expired(Duration::from_millis(50), cx));
                Poll::Ready(())
            })
            .await;
            t
        })
        .await
        .expect("task A");
        t.clear();
        // Task B waits 100 ms: the armed sleep fires earlier, but it holds A's waker, so B
        // must register its own or never be woken.
        let start = tokio::time::Instant::now();
        let b = tokio::spawn(wait(t, Duration::from_millis(100)));
        let mut t = tokio::time::timeout(Duration::from_secs(5), b)
            .await
            .expect("task B was woken")
            .expect("task B");
        t.clear();
        assert!(start.elapsed() >= Duration::from_millis(100));
        // The same task waiting again (the skip path) is still woken at its deadline.
        let start = tokio::time::Instant::now();
        let mut t =
            tokio::time::timeout(Duration::from_secs(5), wait(t, Duration::from_millis(30)))
                .await
                .expect("woken again");
        assert!(start.elapsed() >= Duration::from_millis(30));
        // Without clear() the deadline stays where it was: expired at once.
        poll_fn(|cx| {
            assert!(t.expired(Duration::from_secs(60), cx));
            Poll::Ready(())
        })
        .await;
    }
}
