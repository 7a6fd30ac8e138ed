//! What a connection is doing, so that one that does nothing is closed: idle (no request under way for
//! `limits::IDLE`) or stalled (a response of which the client took nothing for `limits::STALL`). Every
//! response body is watched: after it hands a chunk on, the next request for one must come within
//! `STALL`. A body waiting on the disk is the server's time, not the client's, and is not counted.

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::limits;

/// Why a connection should close.
#[derive(Debug, PartialEq, Eq)]
pub enum Trouble {
    Idle,
    Stalled,
}

/// One connection's requests and response bodies.
#[derive(Default)]
pub struct Activity {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Requests being answered, their bodies included until dropped.
    under_way: usize,
    /// When the last request started or ended; `None` before the first.
    last: Option<Instant>,
    bodies: Vec<Weak<Clock>>,
}

/// When a body last handed a chunk on, while the next one has not been asked for.
#[derive(Default)]
struct Clock {
    handed: Mutex<Option<Instant>>,
}

/// A request under way; dropped with its response body.
pub struct UnderWay {
    activity: Arc<Activity>,
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        let mut state = self.activity.state.lock().expect("not poisoned");
        state.under_way -= 1;
        state.last = Some(Instant::now());
    }
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        let activity = Arc::new(Activity::default());
        activity.state.lock().expect("not poisoned").last = Some(Instant::now());
        activity
    }

    /// Marks a request as started; the guard ends it.
    pub fn start(self: &Arc<Self>) -> UnderWay {
        let mut state = self.state.lock().expect("not poisoned");
        state.under_way += 1;
        state.last = Some(Instant::now());
        UnderWay {
            activity: self.clone(),
        }
    }

    /// `body`, watched; the request stays under way until it is dropped.
    pub fn watch(&self, body: Body, under_way: UnderWay) -> Watched {
        let clock = Arc::new(Clock::default());
        let mut state = self.state.lock().expect("not poisoned");
        state.bodies.retain(|body| body.strong_count() > 0);
        state.bodies.push(Arc::downgrade(&clock));
        Watched {
            body,
            clock,
            _under_way: under_way,
        }
    }

    /// Resolves when the connection has been idle or stalled too long.
    pub async fn trouble(&self) -> Trouble {
        loop {
            match self.check(Instant::now()) {
                Ok(trouble) => return trouble,
                Err(next) => tokio::time::sleep_until(next.into()).await,
            }
        }
    }

    /// The trouble now, or when to look again: the earliest moment one could arise (nothing that starts
    /// later can expire sooner than the limits from now).
    fn check(&self, now: Instant) -> Result<Trouble, Instant> {
        let mut state = self.state.lock().expect("not poisoned");
        state.bodies.retain(|body| body.strong_count() > 0);
        let mut next = now + limits::STALL.min(limits::IDLE);
        for body in state.bodies.iter().filter_map(Weak::upgrade) {
            if let Some(handed) = *body.handed.lock().expect("not poisoned") {
                let deadline = handed + limits::STALL;
                if deadline <= now {
                    return Ok(Trouble::Stalled);
                }
                next = next.min(deadline);
            }
        }
        if state.under_way == 0 {
            let deadline = state.last.unwrap_or(now) + limits::IDLE;
            if deadline <= now {
                return Ok(Trouble::Idle);
            }
            next = next.min(deadline);
        }
        Err(next)
    }
}

/// A response body whose progress its connection's [`Activity`] watches.
pub struct Watched {
    body: Body,
    clock: Arc<Clock>,
    _under_way: UnderWay,
}

impl HttpBody for Watched {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        // Asked for more: whatever was handed on has gone; from here, the time is the server's.
        *self.clock.handed.lock().expect("not poisoned") = None;
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = polled {
            *self.clock.handed.lock().expect("not poisoned") = Some(Instant::now());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_only_with_nothing_under_way() {
        let activity = Activity::new();
        let start = Instant::now();
        assert_eq!(
            activity.check(start + limits::IDLE + limits::IDLE),
            Ok(Trouble::Idle)
        );
        let request = activity.start();
        assert!(activity.check(Instant::now() + limits::IDLE * 3).is_err());
        drop(request);
        let after = Instant::now();
        assert!(
            activity.check(after).is_err(),
            "idle from the end of the last request"
        );
        assert_eq!(activity.check(after + limits::IDLE), Ok(Trouble::Idle));
    }

    /// A body that handed a chunk on and was not asked for another within the limit stalls its connection.
    #[tokio::test]
    async fn a_body_not_asked_for_more_stalls() {
        let activity = Activity::new();
        let mut body = activity.watch(Body::from("a chunk"), activity.start());
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(frame.is_some());
        let handed = Instant::now();
        assert!(activity.check(handed).is_err());
        assert_eq!(
            activity.check(handed + limits::STALL + limits::STALL),
            Ok(Trouble::Stalled)
        );
        drop(body);
        assert!(activity.check(Instant::now()).is_err(), "gone, not stalled");
    }
}
