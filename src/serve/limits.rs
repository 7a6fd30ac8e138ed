//! The bounds `ferry serve` keeps so that slow, stalled or hostile clients cannot hold it: one place, so
//! that the README can state them as the code has them.

use std::time::Duration;

/// A connection with no request under way for this long is closed (HTTP/1 keep-alive and HTTP/2 alike),
/// and so is one whose request headers take longer to arrive.
pub const IDLE: Duration = Duration::from_secs(30);

/// A connection with a response under way that writes less than `STALL_BYTES` in this long is closed, and
/// so is one with a response of which the client took nothing (an HTTP/2 stream without flow-control
/// window) in as long; either frees the transfer slots it held. A paused VM or a cut link holds nothing
/// for longer.
pub const STALL: Duration = Duration::from_secs(30);
/// What a response must move in `STALL` (about 2 kB/s): a reader that stopped reading still lets a
/// trickle through when TCP probes its closed window, which must not count as progress.
pub const STALL_BYTES: u64 = 64 << 10;

/// The TLS handshake must be done within this.
pub const HANDSHAKE: Duration = Duration::from_secs(10);

/// A connection asked to close (idle, or at shutdown) that is still open after this is dropped.
pub const CLOSING: Duration = Duration::from_secs(10);

/// Connections one client address may hold at once; more are closed as they come. A node opens a few
/// (containerd over HTTP/1 one per parallel download, over HTTP/2 one in all).
pub const CONNECTIONS_PER_ADDRESS: usize = 64;

/// Requests one HTTP/2 connection may have open at once (its `SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const STREAMS_PER_CONNECTION: u32 = 32;

/// HTTP/2 connections are pinged this often, and closed when a ping is not answered within as long.
pub const PING: Duration = Duration::from_secs(20);

/// The share of `--max-transfers` one client address may hold at once: a quarter, at least one. A node
/// downloads three layers at a time (containerd's and docker's default), skopeo six.
pub fn transfers_per_address(max_transfers: usize) -> usize {
    (max_transfers / 4).max(1)
}

/// Password checks (bcrypt, tens of milliseconds of CPU each) run at once; more wait their turn.
pub fn password_checks() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Failed logins one address may make before it must wait; each further failure doubles the wait, from
/// one second up to `LOGIN_WAIT_MAX`. A success, or `LOGIN_FORGET` without failure, starts over.
pub const FREE_LOGIN_FAILURES: u32 = 5;
pub const LOGIN_WAIT_MAX: Duration = Duration::from_secs(60);
pub const LOGIN_FORGET: Duration = Duration::from_secs(600);
