//! Optional basic auth from an htpasswd file of bcrypt entries (`htpasswd -B`), as Distribution takes.
//! bcrypt costs tens of milliseconds on purpose; a node pulling an image sends dozens of requests with
//! the same credentials, so a pair that verified once is remembered (as its SHA-256, never the password).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::ServeError;

#[derive(Debug)]
pub struct Htpasswd {
    hashes: HashMap<String, String>,
    /// User → SHA-256 of the password that last verified.
    verified: Mutex<HashMap<String, [u8; 32]>>,
}

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Htpasswd, ServeError> {
        let bad = |line: usize, reason: &str| ServeError::Htpasswd {
            path: path.to_path_buf(),
            reason: format!("line {line}: {reason}"),
        };
        let text = std::fs::read_to_string(path).map_err(|e| ServeError::Htpasswd {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut hashes = HashMap::new();
        for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| bad(number, "not USER:HASH"))?;
            if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                return Err(bad(
                    number,
                    &format!("the entry of '{user}' is not bcrypt (make it with htpasswd -B)"),
                ));
            }
            hashes.insert(user.to_string(), hash.to_string());
        }
        if hashes.is_empty() {
            return Err(ServeError::Htpasswd {
                path: path.to_path_buf(),
                reason: "no entries".into(),
            });
        }
        Ok(Htpasswd {
            hashes,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Whether an `Authorization` header value carries a user and password the file accepts.
    pub async fn allows(&self, header: Option<&str>) -> bool {
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return false;
        };
        let Some(hash) = self.hashes.get(&user).cloned() else {
            return false;
        };
        let fingerprint: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        if self.verified.lock().expect("not poisoned").get(&user) == Some(&fingerprint) {
            return true;
        }
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|verdict| verdict.unwrap_or(false));
        if ok {
            self.verified
                .lock()
                .expect("not poisoned")
                .insert(user, fingerprint);
        }
        ok
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

    #[tokio::test]
    async fn only_the_right_password_is_let_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&path, format!("node:{hash}\n")).unwrap();
        let file = Htpasswd::load(&path).unwrap();
        let header = |user: &str, password: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        };
        assert!(file.allows(Some(&header("node", "s3cret"))).await);
        assert!(
            file.allows(Some(&header("node", "s3cret"))).await,
            "remembered"
        );
        assert!(!file.allows(Some(&header("node", "wrong"))).await);
        assert!(!file.allows(Some(&header("other", "s3cret"))).await);
        assert!(!file.allows(None).await);

        std::fs::write(&path, "node:{SHA}abc\n").unwrap();
        let refused = Htpasswd::load(&path).unwrap_err().to_string();
        assert!(
            refused
                .contains("line 1: the entry of 'node' is not bcrypt (make it with htpasswd -B)"),
            "{refused}"
        );
    }
}
