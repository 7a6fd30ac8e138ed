//! Optional basic auth from an htpasswd file of bcrypt entries (`htpasswd -B`), as Distribution takes.
//! bcrypt costs tens of milliseconds on purpose; a node pulling an image sends dozens of requests with
//! the same credentials, so a pair that verified once is remembered (as its SHA-256, never the password).
//! Guessing is made slow and uninformative: an unknown user costs the same bcrypt as a known one, checks
//! run a few at a time, and an address that keeps failing must wait longer and longer between tries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use super::error::ServeError;
use super::limits;

/// Addresses with a failure on record; the ones whose failures are forgotten are dropped above this many.
const REMEMBERED: usize = 4096;

#[derive(Debug)]
pub struct Htpasswd {
    hashes: HashMap<String, String>,
    /// Checked for users the file does not know, at the cost its own entries have: the answer takes as
    /// long, so user names cannot be found by timing.
    stand_in: String,
    /// User → SHA-256 of the password that last verified.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    checks: Semaphore,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

/// What a request's credentials earn it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Refused,
    /// Too many failures from this address: no check until this has passed.
    Wait(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// How long after the last failure the address must wait: nothing for the first few, then doubling.
    fn wait(&self) -> Duration {
        match self.count.checked_sub(limits::FREE_LOGIN_FAILURES + 1) {
            None => Duration::ZERO,
            Some(doublings) => {
                Duration::from_secs(1u64 << doublings.min(16)).min(limits::LOGIN_WAIT_MAX)
            }
        }
    }

    fn forgotten(&self, now: Instant) -> bool {
        now.duration_since(self.last) >= limits::LOGIN_FORGET
    }
}

/// Far more than any htpasswd file (a bcrypt entry is about 70 bytes).
const MAX_HTPASSWD: u64 = 1 << 20;

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Htpasswd, ServeError> {
        let bad = |line: usize, reason: &str| ServeError::Htpasswd {
            path: path.to_path_buf(),
            reason: format!("line {line}: {reason}"),
        };
        let text =
            crate::io::read_side_text(path, MAX_HTPASSWD).map_err(|e| ServeError::Htpasswd {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let mut hashes = HashMap::new();
        let mut costs: HashMap<u32, usize> = HashMap::new();
        for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| bad(number, "not USER:HASH"))?;
            let cost = ["$2a$", "$2b$", "$2y$"]
                .iter()
                .find_map(|prefix| hash.strip_prefix(prefix))
                .and_then(|rest| rest.get(..2)?.parse::<u32>().ok())
                .ok_or_else(|| {
                    bad(
                        number,
                        &format!("the entry of '{user}' is not bcrypt (make it with htpasswd -B)"),
                    )
                })?;
            *costs.entry(cost).or_default() += 1;
            hashes.insert(user.to_string(), hash.to_string());
        }
        // The cost most entries have (the highest of equals): what a guess at a user name costs.
        let Some((cost, _)) = costs.into_iter().max_by_key(|&(cost, n)| (n, cost)) else {
            return Err(ServeError::Htpasswd {
                path: path.to_path_buf(),
                reason: "no entries".into(),
            });
        };
        let stand_in = bcrypt::hash(fastrand::u64(..).to_string(), cost).map_err(|e| {
            ServeError::Htpasswd {
                path: path.to_path_buf(),
                reason: format!("bcrypt cost {cost}: {e}"),
            }
        })?;
        Ok(Htpasswd {
            hashes,
            stand_in,
            verified: Mutex::new(HashMap::new()),
            checks: Semaphore::new(limits::password_checks()),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Whether an `Authorization` header value, from `address`, carries a user and password the file
    /// accepts. A request without credentials is refused without counting as a failure: clients first ask
    /// without, to learn that they must.
    pub async fn check(&self, header: Option<&str>, address: IpAddr) -> Verdict {
        let Some(header) = header else {
            return Verdict::Refused;
        };
        // Even the right password waits out a back-off, or the remembered pairs would answer guesses fast.
        if let Some(wait) = self.waiting(address) {
            return Verdict::Wait(wait);
        }
        let Some((user, password)) = basic_credentials(header) else {
            self.failed(address);
            return Verdict::Refused;
        };
        let fingerprint: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        if self.verified.lock().expect("not poisoned").get(&user) == Some(&fingerprint) {
            self.succeeded(address);
            return Verdict::Allowed;
        }
        // Counted before the check, so that many guesses at once are stopped as soon as the first few.
        self.failed(address);
        let known = self.hashes.get(&user);
        let hash = known.unwrap_or(&self.stand_in).clone();
        let verdict = {
            let _turn = self.checks.acquire().await.expect("never closed");
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
                .await
                .is_ok_and(|verdict| verdict.unwrap_or(false))
        };
        if !(verdict && known.is_some()) {
            return Verdict::Refused;
        }
        self.succeeded(address);
        self.verified
            .lock()
            .expect("not poisoned")
            .insert(user, fingerprint);
        Verdict::Allowed
    }

    fn waiting(&self, address: IpAddr) -> Option<Duration> {
        let failures = *self.failures.lock().expect("not poisoned").get(&address)?;
        let left = failures.wait().checked_sub(failures.last.elapsed())?;
        (!left.is_zero()).then_some(left)
    }

    fn failed(&self, address: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("not poisoned");
        if failures.len() >= REMEMBERED {
            failures.retain(|_, f| !f.forgotten(now));
        }
        let entry = failures.entry(address).or_insert(Failures {
            count: 0,
            last: now,
        });
        if entry.forgotten(now) {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
    }

    fn succeeded(&self, address: IpAddr) {
        self.failures.lock().expect("not poisoned").remove(&address);
    }
}

fn basic_credentials(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    fn file(cost: u32) -> (tempfile::TempDir, Htpasswd) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("s3cret", cost).unwrap();
        std::fs::write(&path, format!("node:{hash}\n")).unwrap();
        let file = Htpasswd::load(&path).unwrap();
        (dir, file)
    }

    #[tokio::test]
    async fn only_the_right_password_is_let_in() {
        let (dir, file) = file(4);
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        let check = |user: &'static str, password: &'static str| {
            let header = header(user, password);
            let file = &file;
            async move { file.check(Some(&header), here).await }
        };
        assert_eq!(check("node", "s3cret").await, Verdict::Allowed);
        assert_eq!(
            check("node", "s3cret").await,
            Verdict::Allowed,
            "remembered"
        );
        assert_eq!(check("node", "wrong").await, Verdict::Refused);
        assert_eq!(check("other", "s3cret").await, Verdict::Refused);
        assert_eq!(file.check(None, here).await, Verdict::Refused);

        let path = dir.path().join("htpasswd");
        std::fs::write(&path, "node:{SHA}abc\n").unwrap();
        let refused = Htpasswd::load(&path).unwrap_err().to_string();
        assert!(
            refused
                .contains("line 1: the entry of 'node' is not bcrypt (make it with htpasswd -B)"),
            "{refused}"
        );
    }

    /// A guess at an unknown user takes as long as a wrong password for a known one (before, 0.14 ms
    /// against 59 ms), so the answer's time does not tell which users exist.
    #[tokio::test]
    async fn unknown_users_cost_a_bcrypt_too() {
        let (_dir, file) = file(9);
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        // Each from an address of its own: no back-off in the way.
        for round in 0..5u8 {
            for (user, times) in [("node", &mut known), ("nobody", &mut unknown)] {
                let from = IpAddr::from([10, 1, round, u8::from(user == "node")]);
                let started = Instant::now();
                let verdict = file.check(Some(&header(user, "guess")), from).await;
                times.push(started.elapsed());
                assert_eq!(verdict, Verdict::Refused);
            }
        }
        known.sort();
        unknown.sort();
        let (known, unknown) = (known[2], unknown[2]);
        assert!(
            unknown * 2 > known,
            "median: unknown user {unknown:?}, known user {known:?}"
        );
    }

    /// A flood of guesses from one address is stopped after a few; the same address waits even with the
    /// right password, and another address is not held up.
    #[tokio::test]
    async fn failing_addresses_back_off() {
        let (_dir, file) = file(4);
        let flood: IpAddr = "10.0.0.9".parse().unwrap();
        let mut verdicts = Vec::new();
        for _ in 0..20 {
            verdicts.push(file.check(Some(&header("node", "guess")), flood).await);
        }
        let checked = verdicts.iter().filter(|v| **v == Verdict::Refused).count();
        assert_eq!(
            checked,
            limits::FREE_LOGIN_FAILURES as usize + 1,
            "{verdicts:?}"
        );
        assert!(
            matches!(verdicts.last(), Some(Verdict::Wait(_))),
            "{verdicts:?}"
        );
        let Verdict::Wait(wait) = file.check(Some(&header("node", "s3cret")), flood).await else {
            panic!("the flooding address must wait, whatever it sends");
        };
        assert!(
            wait <= Duration::from_secs(1) && !wait.is_zero(),
            "{wait:?}"
        );
        assert_eq!(
            file.check(Some(&header("node", "s3cret")), "10.0.0.1".parse().unwrap())
                .await,
            Verdict::Allowed
        );
    }
}
