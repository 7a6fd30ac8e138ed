//! Registry credentials from where users already keep them: docker's `config.json` (`auths`,
//! `credHelpers`, `credsStore` through `docker-credential-*`) and podman's `auth.json`.
//!
//! Secrets stay inside [`Secret`], whose `Debug` and `Display` print `***`; errors name the file or helper,
//! never the secret.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

/// A password or token that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value itself, only for handing to the HTTP client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read registry credentials file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry credentials file {path} is not valid JSON: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: the 'auth' entry for {registry} is not base64 of user:password")]
    BadAuthEntry { path: PathBuf, registry: String },
    #[error("credential helper docker-credential-{helper} failed for {registry}: {message}")]
    Helper {
        helper: String,
        registry: String,
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The credential files found on this machine, read once.
#[derive(Debug, Default)]
pub struct CredentialStore {
    files: Vec<(PathBuf, ConfigFile)>,
}

/// Far more than any credentials file.
const MAX_CONFIG_FILE: u64 = 4 << 20;

impl CredentialStore {
    /// Reads, in order of precedence: `$REGISTRY_AUTH_FILE`, podman's `$XDG_RUNTIME_DIR/containers/auth.json`,
    /// and docker's `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`). Missing files are skipped.
    pub fn from_environment() -> Result<CredentialStore, AuthError> {
        let mut candidates = Vec::new();
        if let Some(path) = std::env::var_os("REGISTRY_AUTH_FILE") {
            candidates.push(PathBuf::from(path));
        }
        if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
            candidates.push(Path::new(&runtime).join("containers/auth.json"));
        }
        match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) => candidates.push(Path::new(&dir).join("config.json")),
            None => {
                candidates.extend(dirs::home_dir().map(|home| home.join(".docker/config.json")))
            }
        }
        let mut files = Vec::new();
        for path in candidates {
            match crate::io::read_side_file(&path, MAX_CONFIG_FILE) {
                Ok(bytes) => {
                    let config: ConfigFile =
                        serde_json::from_slice(&bytes).map_err(|e| AuthError::Parse {
                            path: path.clone(),
                            message: e.to_string(),
                        })?;
                    files.push((path, config));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(AuthError::Read { path, source }),
            }
        }
        Ok(CredentialStore { files })
    }

    /// The credentials for `registry` (a host[:port] as contacted), or `None` for anonymous access.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>, AuthError> {
        for (path, config) in &self.files {
            if let Some(helper) = config
                .cred_helpers
                .iter()
                .find(|(key, _)| same_registry(key, registry))
                .map(|(_, h)| h)
            {
                return run_helper(helper, registry);
            }
            if let Some((key, entry)) = config
                .auths
                .iter()
                .find(|(key, _)| same_registry(key, registry))
            {
                if let Some(credentials) = decode_entry(path, key, entry)? {
                    return Ok(Some(credentials));
                }
            }
            if let Some(store) = &config.creds_store {
                if let Some(credentials) = run_helper(store, registry)? {
                    return Ok(Some(credentials));
                }
            }
        }
        Ok(None)
    }
}

/// Docker writes keys as `host`, `https://host`, `host/v2/` and, for Docker Hub, `https://index.docker.io/v1/`.
fn same_registry(key: &str, registry: &str) -> bool {
    let host = |s: &str| {
        let s = s
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let s = s.split('/').next().unwrap_or_default();
        match s {
            "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
            other => other.to_ascii_lowercase(),
        }
    };
    host(key) == host(registry)
}

fn decode_entry(
    path: &Path,
    registry: &str,
    entry: &AuthEntry,
) -> Result<Option<Credentials>, AuthError> {
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: username.clone(),
            password: Secret(password.clone()),
        }));
    }
    let Some(encoded) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let bad = || AuthError::BadAuthEntry {
        path: path.to_path_buf(),
        registry: registry.to_string(),
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some(Credentials {
        username: username.to_string(),
        password: Secret(password.to_string()),
    }))
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-NAME get` with the registry on stdin, as docker does.
fn run_helper(helper: &str, registry: &str) -> Result<Option<Credentials>, AuthError> {
    let fail = |message: String| AuthError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        message,
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(registry.as_bytes())
            .map_err(|e| fail(format!("cannot write to it: {e}")))?;
    }
    let output = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stdout);
        // Helpers answer "credentials not found in native keychain" for registries they do not know.
        if said.contains("not found") {
            return Ok(None);
        }
        return Err(fail(format!("exit status {}", output.status)));
    }
    let reply: HelperReply = serde_json::from_slice(&output.stdout)
        .map_err(|_| fail("its answer is not the expected JSON".into()))?;
    Ok(Some(Credentials {
        username: reply.username,
        password: Secret(reply.secret),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(json: &str) -> (tempfile::TempDir, CredentialStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        let config = serde_json::from_str(json).unwrap();
        (
            dir,
            CredentialStore {
                files: vec![(path, config)],
            },
        )
    }

    #[test]
    fn reads_base64_auth_entries_under_any_key_spelling() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let json = format!(
            r#"{{"auths": {{"https://127.0.0.1:5443/v2/": {{"auth": "{auth}"}}, "https://index.docker.io/v1/": {{"auth": "{auth}"}}}}}}"#
        );
        let (_dir, store) = store_with(&json);
        let found = store.lookup("127.0.0.1:5443").unwrap().unwrap();
        assert_eq!(found.username, "alice");
        assert_eq!(found.password.expose(), "s3cret");
        assert!(store.lookup("docker.io").unwrap().is_some());
        assert!(store.lookup("quay.io").unwrap().is_none());
    }

    #[test]
    fn secrets_never_print() {
        let credentials = Credentials {
            username: "alice".into(),
            password: Secret("s3cret".into()),
        };
        assert!(!format!("{credentials:?}").contains("s3cret"));
        assert_eq!(Secret("s3cret".into()).to_string(), "***");
    }

    #[test]
    fn a_missing_helper_is_a_clear_error() {
        let (_dir, store) = store_with(r#"{"credHelpers": {"quay.io": "ferry-test-absent"}}"#);
        let err = store.lookup("quay.io").unwrap_err().to_string();
        assert!(err.contains("docker-credential-ferry-test-absent"), "{err}");
    }
}
