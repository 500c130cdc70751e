//! One timer per connection, re-armed only when it fires before the deadline that applies
//! now. Deadlines mostly move later (the next request's timeout starts after the last one),
//! so a request costs no timer registration: the timer stays registered for the earliest
//! deadline and, when it fires early, is moved to the current one.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// See the module docs.
#[derive(Default)]
pub(crate) struct ConnTimer {
    deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
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
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
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
