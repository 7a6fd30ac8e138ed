//! What a connection is doing, so that one that does nothing is closed. Idle: no request under way for
//! `limits::IDLE`. Stalled: a response is under way and the connection wrote less than
//! `limits::STALL_BYTES` in `limits::STALL` (a client that stopped reading), or one response's body handed
//! a chunk on and was not asked for the next in `STALL` (an HTTP/2 stream the client gives no window,
//! while others move). A body waiting on the disk is the server's time, not the client's.

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::limits;

/// Why a connection should close.
#[derive(Debug, PartialEq, Eq)]
pub enum Trouble {
    Idle,
    Stalled,
}

/// One connection's requests, response bodies and writes.
pub struct Activity {
    state: Mutex<State>,
}

struct State {
    /// Requests being answered, their bodies included until dropped.
    under_way: usize,
    /// When the last request started or ended.
    last: Instant,
    bodies: Vec<Weak<Clock>>,
    /// Bytes written to the connection, and when they last passed `mark` by `STALL_BYTES` (or a request
    /// started).
    written: u64,
    mark: u64,
    moved: Instant,
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
        state.last = Instant::now();
    }
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        let now = Instant::now();
        Arc::new(Activity {
            state: Mutex::new(State {
                under_way: 0,
                last: now,
                bodies: Vec::new(),
                written: 0,
                mark: 0,
                moved: now,
            }),
        })
    }

    /// Marks a request as started; the guard ends it. Its response gets `STALL` from here to move.
    pub fn start(self: &Arc<Self>) -> UnderWay {
        let mut state = self.state.lock().expect("not poisoned");
        let now = Instant::now();
        state.under_way += 1;
        state.last = now;
        state.mark = state.written;
        state.moved = now;
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

    fn wrote(&self, bytes: usize) {
        let mut state = self.state.lock().expect("not poisoned");
        state.written += bytes as u64;
        if state.written - state.mark >= limits::STALL_BYTES {
            state.mark = state.written;
            state.moved = Instant::now();
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
        let mut deadlines = Vec::new();
        if !state.bodies.is_empty() {
            deadlines.push((state.moved + limits::STALL, Trouble::Stalled));
        }
        for body in state.bodies.iter().filter_map(Weak::upgrade) {
            if let Some(handed) = *body.handed.lock().expect("not poisoned") {
                deadlines.push((handed + limits::STALL, Trouble::Stalled));
            }
        }
        if state.under_way == 0 {
            deadlines.push((state.last + limits::IDLE, Trouble::Idle));
        }
        let mut next = now + limits::STALL.min(limits::IDLE);
        for (deadline, trouble) in deadlines {
            if deadline <= now {
                return Ok(trouble);
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

/// A connection's socket, counting what is written to it for its [`Activity`].
pub struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, activity: &Arc<Activity>) -> Counted<S> {
        Counted {
            inner,
            activity: activity.clone(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.activity.wrote(n);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            self.activity.wrote(n);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_only_with_nothing_under_way() {
        let activity = Activity::new();
        let start = Instant::now();
        assert_eq!(activity.check(start + limits::IDLE * 2), Ok(Trouble::Idle));
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

    /// A body that handed a chunk on and was not asked for another within the limit stalls its connection,
    /// however much the connection writes for other responses.
    #[tokio::test]
    async fn a_body_not_asked_for_more_stalls() {
        let activity = Activity::new();
        let mut body = activity.watch(Body::from("a chunk"), activity.start());
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(frame.is_some());
        let handed = Instant::now();
        assert!(activity.check(handed).is_err());
        activity.wrote(1 << 20);
        assert_eq!(
            activity.check(handed + limits::STALL * 2),
            Ok(Trouble::Stalled)
        );
        drop(body);
        assert!(activity.check(Instant::now()).is_err(), "gone, not stalled");
    }

    /// A response under way on a connection that writes only a trickle stalls it; one that moves does not.
    #[test]
    fn a_trickle_is_no_progress() {
        let activity = Activity::new();
        let _body = activity.watch(Body::from("x"), activity.start());
        let started = Instant::now();
        for _ in 0..10 {
            activity.wrote(1000);
        }
        assert_eq!(
            activity.check(started + limits::STALL + limits::STALL / 10),
            Ok(Trouble::Stalled)
        );
        activity.wrote(limits::STALL_BYTES as usize);
        let moved = Instant::now();
        assert!(activity.check(moved).is_err());
        assert_eq!(activity.check(moved + limits::STALL), Ok(Trouble::Stalled));
    }
}
