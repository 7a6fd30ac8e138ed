//! `ferry push` and `pull` against a registry shaped like Harbor: real CNCF Distribution with its own
//! `auth: token`, in front of which these tests run a token service that signs JWTs with a key the registry
//! trusts. The service can issue short-lived tokens, refuse a wrong password, grant only pull, and run on a
//! clock ahead of this machine's; it records every token request, and the registry logs every request.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::json;

use crate::bundle::Csi480;
use crate::faults::{fast_retries, header_value, read_request, Fault, FaultProxy, Rule};
use crate::ferry::{command, ferry, run, Run};
use crate::pull::pull_image;
use crate::services::{require, Registry, TOKEN_ISSUER, TOKEN_SERVICE};

const PASSWORD: &str = "Harbor12345";

/// What the token service grants, and how it tells time.
#[derive(Clone)]
struct Policy {
    /// How long the registry accepts a token (its `exp`, which Distribution checks with 60 s of leeway).
    lifetime: Duration,
    /// What the service tells the client in `expires_in`.
    expires_in: u64,
    /// How far the service's (and registry's) clock is ahead of this machine's, for `iat`/`issued_at`.
    clock_ahead: Duration,
    /// The first token for each set of scopes has expired by the time it reaches the registry (as with a
    /// strict registry and a client whose clock is behind); later ones live `lifetime`.
    first_token_expired: bool,
    /// The first this many token requests are answered 429 with `Retry-After: 1`, as a rate-limited
    /// token service (Docker Hub's) answers.
    rate_limited_first: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lifetime: Duration::from_secs(300),
            expires_in: 300,
            clock_ahead: Duration::ZERO,
            first_token_expired: false,
            rate_limited_first: 0,
        }
    }
}

/// One request the token service answered.
#[derive(Debug, Clone)]
struct Asked {
    /// The user the client authenticated as, `None` for anonymous.
    user: Option<String>,
    scopes: Vec<String>,
    /// Whether the credentials were accepted.
    accepted: bool,
    when: std::time::Instant,
}

struct TokenService {
    addr: String,
    asked: Arc<Mutex<Vec<Asked>>>,
    stop: Arc<AtomicBool>,
    dir: tempfile::TempDir,
}

impl TokenService {
    /// Users `ferry` (pull and push) and `reader` (pull only), both with [`PASSWORD`].
    fn start(policy: Policy) -> TokenService {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("signer.key"), dir.path().join("signer.pem"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=ferry test token signer", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        let x5c = base64::engine::general_purpose::STANDARD.encode(&der.stdout);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (stopping, recorded) = (stop.clone(), asked.clone());
        std::thread::spawn(move || {
            let signer = Signer { key, x5c };
            for connection in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = connection else { continue };
                let _ = answer(client, &signer, &policy, &recorded);
            }
        });
        TokenService {
            addr,
            asked,
            stop,
            dir,
        }
    }

    fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    fn certificate(&self) -> PathBuf {
        self.dir.path().join("signer.pem")
    }

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

struct Signer {
    key: PathBuf,
    x5c: String,
}

impl Signer {
    /// A compact JWT, RS256, with the signer's certificate in `x5c` (what Distribution checks against its
    /// `rootcertbundle`).
    fn sign(&self, claims: &serde_json::Value) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut openssl = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        openssl
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let signature = openssl.wait_with_output().unwrap().stdout;
        format!("{input}.{}", b64(&signature))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Answers one `GET /token?service=..&scope=..` the way Distribution's and Harbor's token services do.
fn answer(
    client: TcpStream,
    signer: &Signer,
    policy: &Policy,
    asked: &Mutex<Vec<Asked>>,
) -> std::io::Result<()> {
    let Some(request) = read_request(&mut BufReader::new(client.try_clone()?))? else {
        return Ok(());
    };
    let authorization = header_value(&request.headers, "authorization");
    let url = reqwest::Url::parse(&format!("http://token{}", request.path)).unwrap();
    let scopes: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .collect();
    let credentials = authorization
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    let user = credentials.as_ref().map(|(u, _)| u.clone());
    let accepted = credentials
        .as_ref()
        .is_none_or(|(u, p)| ["ferry", "reader"].contains(&u.as_str()) && p == PASSWORD);
    let (serial, first_for_scopes) = {
        let mut asked = asked.lock().unwrap();
        let first = !asked.iter().any(|a| a.scopes == scopes);
        asked.push(Asked {
            user: user.clone(),
            scopes: scopes.clone(),
            accepted,
            when: std::time::Instant::now(),
        });
        (asked.len(), first)
    };
    let mut client = client;
    if serial <= policy.rate_limited_first {
        return respond(
            &mut client,
            "429 Too Many Requests",
            "Retry-After: 1\r\n",
            &json!({"details": "too many token requests"}).to_string(),
        );
    }
    if !accepted {
        return respond(
            &mut client,
            "401 Unauthorized",
            "",
            &json!({"details": "incorrect username or password"}).to_string(),
        );
    }
    // Anonymous users get nothing; `reader` only pull; `ferry` what it asks for.
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let granted: Vec<&str> = actions
                .split(',')
                .filter(|a| match user.as_deref() {
                    Some("ferry") => true,
                    Some("reader") => *a == "pull",
                    _ => false,
                })
                .collect();
            Some(json!({"type": kind, "name": name, "actions": granted}))
        })
        .collect();
    let now = unix_now();
    // Distribution accepts a token until 60 s after `exp` (whole seconds): this makes it refuse the token
    // `lifetime` (to a second more) after it was issued, or at once.
    let exp = if policy.first_token_expired && first_for_scopes {
        now - 61
    } else {
        now + 1 + policy.lifetime.as_secs() - 60
    };
    let claims = json!({
        "iss": TOKEN_ISSUER,
        "sub": user.clone().unwrap_or_default(),
        "aud": TOKEN_SERVICE,
        "exp": exp,
        "nbf": now - 1,
        "iat": now + policy.clock_ahead.as_secs(),
        "jti": format!("ferry-test-{serial}"),
        "access": access,
    });
    let token = signer.sign(&claims);
    let issued_at = humantime_rfc3339(now + policy.clock_ahead.as_secs());
    respond(
        &mut client,
        "200 OK",
        "",
        &json!({"token": token, "access_token": token, "expires_in": policy.expires_in, "issued_at": issued_at})
            .to_string(),
    )
}

/// `issued_at` as RFC 3339, from Unix seconds (days-from-civil, so no date crate is needed).
fn humantime_rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// An answer with `headers` (`Name: value\r\n` lines) besides the usual ones.
fn respond(client: &mut TcpStream, status: &str, headers: &str, body: &str) -> std::io::Result<()> {
    write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A token service and the registry that trusts it.
struct Harbor {
    tokens: TokenService,
    registry: Registry,
    config: tempfile::TempDir,
}

impl Harbor {
    fn start(policy: Policy) -> Option<Harbor> {
        let tokens = TokenService::start(policy);
        let registry = require(Registry::token_auth(&tokens.realm(), &tokens.certificate()))?;
        Some(Harbor {
            tokens,
            registry,
            config: tempfile::tempdir().unwrap(),
        })
    }

    fn addr(&self) -> &str {
        self.registry.addr()
    }

    /// A DOCKER_CONFIG whose credential helper answers `user`/`password` for the registry and counts how
    /// often it ran (in `helper-runs`).
    fn docker_config(&self, user: &str, password: &str) -> PathBuf {
        self.docker_config_for(self.addr(), user, password)
    }

    /// The same, for the registry as reached at `host` (through a front).
    fn docker_config_for(&self, host: &str, user: &str, password: &str) -> PathBuf {
        let dir = self
            .config
            .path()
            .join(format!("{user}-{password}-{}", host.replace(':', "-")));
        std::fs::create_dir_all(&dir).unwrap();
        let helper = dir.join("docker-credential-ferrytest");
        let runs = dir.join("helper-runs");
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\necho run >> '{}'\ncat > /dev/null\necho '{{\"Username\": \"{user}\", \"Secret\": \"{password}\"}}'\n",
                runs.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(
            dir.join("config.json"),
            json!({"credHelpers": {host: "ferrytest"}}).to_string(),
        )
        .unwrap();
        dir
    }

    /// Runs ferry with `config` as DOCKER_CONFIG and its credential helper on PATH.
    fn ferry(&self, config: &Path, args: &[&str]) -> Run {
        run(self.command(config).args(args))
    }

    /// The ferry command, with `config` as DOCKER_CONFIG and its credential helper on PATH.
    fn command(&self, config: &Path) -> Command {
        let path = format!(
            "{}:{}",
            config.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut ferry = command();
        ferry.env("DOCKER_CONFIG", config).env("PATH", path);
        ferry
    }

    /// `ferry push BUNDLE --to TO EXTRA...` as the user of `config`.
    fn push(&self, config: &Path, bundle: &Path, to: &str, extra: &[&str]) -> Run {
        let mut args = vec!["push", bundle.to_str().unwrap(), "--to", to];
        args.extend_from_slice(extra);
        self.ferry(config, &args)
    }

    /// Pulls seeded image `which` back from where a push `--to` put it; checks its upstream digest.
    fn pull_back(&self, config: &Path, csi: &Csi480, which: usize, to: &str) {
        let (upstream, seeded) = &csi.seeded[which];
        let image = upstream.replace("registry.k8s.io", to);
        let cache = tempfile::tempdir().unwrap();
        let pulled = pull_image(&mut self.command(config), &image, cache.path(), &["-q"]).success();
        assert!(
            pulled.stdout().contains(seeded.manifest_for("linux/amd64")),
            "{}",
            pulled.stdout()
        );
    }

    /// Requests the registry answered with `status`, whose method is `method` and URI contains `uri`, from
    /// its access log (`"HEAD /v2/... HTTP/1.1" 401 ...`).
    fn logged(&self, method: &str, uri: &str, status: u16) -> usize {
        self.registry
            .log()
            .lines()
            .filter_map(|l| {
                l.split_once(&format!("\"{method} "))?
                    .1
                    .split_once(" HTTP/1.1\" ")
            })
            .filter(|(path, rest)| path.contains(uri) && rest.starts_with(&format!("{status} ")))
            .count()
    }

    /// Requests the registry refused because their token had expired (or was otherwise invalid).
    fn expired_tokens(&self) -> usize {
        self.registry
            .log()
            .matches("error authorizing context: invalid token")
            .count()
    }
}

fn helper_runs(config: &Path) -> usize {
    std::fs::read_to_string(config.join("helper-runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// The 4.8.0 bundle (built from a plain registry and vendor tarballs), and a Harbor-shaped registry.
fn bundle_and_harbor(policy: Policy) -> Option<(Csi480, PathBuf, Harbor)> {
    let csi = Csi480::start()?;
    let cache = csi.work.path().join("cache");
    csi.bundle(cache.to_str().unwrap(), "csi.tar", &[])
        .success();
    let bundle = csi.work.path().join("csi.tar");
    let harbor = Harbor::start(policy)?;
    Some((csi, bundle, harbor))
}

/// The summary line of a push.
fn summary(run: &Run) -> String {
    run.stderr()
        .lines()
        .find(|l| l.contains("pushed "))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn a_clean_push_mounts_shared_layers_and_asks_for_the_source_scope() {
    let Some((_csi, bundle, harbor)) = bundle_and_harbor(Policy::default()) else {
        return;
    };
    let config = harbor.docker_config("ferry", PASSWORD);
    let to = format!("{}/csi", harbor.addr());
    let pushed = harbor.push(&config, &bundle, &to, &[]).success();
    assert_eq!(pushed.stdout().lines().count(), 11, "{}", pushed.stdout());
    let mounts = harbor.logged("POST", "mount=", 201);
    assert!(mounts > 0, "{}", summary(&pushed));
    assert!(
        summary(&pushed).ends_with(&format!("mounted {mounts}, 0 already present")),
        "the registry's log counts the mounts ferry reports: {}",
        summary(&pushed)
    );
    assert_eq!(
        harbor.logged("POST", "mount=", 202),
        0,
        "no mount was declined"
    );
    let mount_scopes = harbor
        .tokens
        .asked()
        .into_iter()
        .filter(|a| a.scopes.len() == 2)
        .count();
    assert!(
        mount_scopes > 0,
        "mount tokens carry the target's push and the source's pull scope: {:?}",
        harbor.tokens.asked()
    );
    assert_eq!(helper_runs(&config), 1, "the credential helper runs once");
    for text in [pushed.stdout(), pushed.stderr()] {
        assert!(!text.contains(PASSWORD), "the password never appears");
    }
}

#[test]
fn tokens_that_expire_mid_push_and_mid_pull_are_renewed_once() {
    // Every first token for a set of scopes reaches the registry expired, though the service said it
    // lives 600 s: what a client meets whose clock is behind a strict registry's.
    let Some((csi, bundle, harbor)) = bundle_and_harbor(Policy {
        expires_in: 600,
        clock_ahead: Duration::from_secs(15),
        first_token_expired: true,
        ..Policy::default()
    }) else {
        return;
    };
    let config = harbor.docker_config("ferry", PASSWORD);
    let to = format!("{}/csi", harbor.addr());
    let pushed = harbor.push(&config, &bundle, &to, &[]).success();
    assert_eq!(pushed.stdout().lines().count(), 11, "{}", pushed.stderr());
    let scope_sets = |asked: &[Asked]| {
        let mut sets: Vec<Vec<String>> = asked.iter().map(|a| a.scopes.clone()).collect();
        sets.sort();
        sets.dedup();
        sets.len()
    };
    let pushes = harbor.tokens.asked();
    assert_eq!(
        harbor.expired_tokens(),
        scope_sets(&pushes),
        "each expired token was refused once and replaced"
    );
    assert_eq!(
        pushes.len(),
        2 * scope_sets(&pushes),
        "one fresh token per expired one, no storm"
    );

    // A pull meets the same: its manifest request is refused first, then served.
    harbor.pull_back(&config, &csi, 0, &to);
    assert_eq!(harbor.expired_tokens(), scope_sets(&harbor.tokens.asked()));
}

#[test]
fn a_401_in_the_middle_of_an_upload_sends_that_chunk_again() {
    let Some((csi, bundle, harbor)) = bundle_and_harbor(Policy::default()) else {
        return;
    };
    // The registry refuses a chunk as if its token had just expired, as it says in its challenge.
    let challenge = format!(
        "Www-Authenticate: Bearer realm=\"{}\",service=\"{TOKEN_SERVICE}\",error=\"invalid_token\"\r\n",
        harbor.tokens.realm()
    );
    let front = FaultProxy::start(
        harbor.addr(),
        vec![Rule::new(
            "/blobs/uploads/",
            Fault::Refuse {
                method: "PATCH",
                status: 401,
                headers: challenge,
                body: r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            },
            1,
        )],
    );
    let config = harbor.docker_config_for(front.addr(), "ferry", PASSWORD);
    let to = format!("{}/csi", front.addr());
    let pushed = harbor.push(&config, &bundle, &to, &["-j", "1"]).success();
    assert!(!pushed.stderr().contains("retry"), "{}", pushed.stderr());
    let patches: Vec<_> = front
        .seen()
        .into_iter()
        .filter(|s| s.method == "PATCH")
        .collect();
    let refused: Vec<_> = patches.iter().filter(|s| s.status == 401).collect();
    assert_eq!(refused.len(), 1);
    assert!(
        patches
            .iter()
            .any(|s| s.path == refused[0].path && s.status == 202),
        "the refused chunk was sent again to the same upload session: {}",
        refused[0].path
    );
    harbor.pull_back(&config, &csi, 2, &to);
}

#[test]
fn a_declined_mount_uploads_into_the_session_the_registry_opened() {
    let Some((_csi, bundle, harbor)) = bundle_and_harbor(Policy::default()) else {
        return;
    };
    let front = FaultProxy::start(
        harbor.addr(),
        vec![Rule::new(
            "/blobs/uploads/",
            Fault::DeclineMount,
            usize::MAX,
        )],
    );
    let config = harbor.docker_config_for(front.addr(), "ferry", PASSWORD);
    let to = format!("{}/csi", front.addr());
    let pushed = harbor.push(&config, &bundle, &to, &[]).success();
    assert!(
        summary(&pushed).contains(", mounted 0, "),
        "{}",
        summary(&pushed)
    );
    assert!(
        harbor.tokens.asked().iter().any(|a| a.scopes.len() == 2),
        "ferry asked for mounts"
    );
    // Every session the registry opened, the declined mounts' included, ended in a committed blob.
    assert_eq!(
        harbor.logged("POST", "/blobs/uploads/", 202),
        harbor.logged("PUT", "/blobs/uploads/", 201),
        "no upload session is left open"
    );
    assert_eq!(
        harbor.logged("POST", "/blobs/uploads/", 202),
        pushed_blobs(&pushed),
        "a declined mount's session is used, not a new one opened beside it"
    );
}

/// How many blobs a push says it uploaded.
fn pushed_blobs(run: &Run) -> usize {
    summary(run)
        .split(" in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", summary(run)))
}

#[test]
fn a_skewed_clock_with_short_tokens_never_sends_an_expired_one() {
    // Tokens live 3 s and say so, issued by a service whose clock is 15 s ahead of this machine's: a
    // client that compared `issued_at` + `expires_in` with its own clock would keep them 15 s too long.
    let Some((_csi, bundle, harbor)) = bundle_and_harbor(Policy {
        lifetime: Duration::from_secs(3),
        expires_in: 3,
        clock_ahead: Duration::from_secs(15),
        ..Policy::default()
    }) else {
        return;
    };
    let config = harbor.docker_config("ferry", PASSWORD);
    let to = format!("{}/csi", harbor.addr());
    harbor.push(&config, &bundle, &to, &["-j", "1"]).success();
    assert_eq!(harbor.expired_tokens(), 0, "no expired token was sent");
}

/// The `caused by` lines of a failed run, and whether it retried anything.
fn causes(run: &Run) -> Vec<String> {
    run.stderr()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("caused by: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_missing_project_fails_at_once_in_the_registrys_words() {
    let Some((_csi, bundle, harbor)) = bundle_and_harbor(Policy::default()) else {
        return;
    };
    // Harbor's front answers for a project that does not exist before the registry sees the request:
    // 404 NOT_FOUND on some versions, 403 DENIED on others.
    let shapes = [
        (
            404,
            r#"{"errors":[{"code":"NOT_FOUND","message":"project nosuchproject not found"}]}"#,
            "has no project 'nosuchproject' for nosuchproject/{repo} (HTTP 404, NOT_FOUND: project nosuchproject not found); create it (in Harbor: Projects, New project) or push under another --to prefix",
        ),
        (
            403,
            r#"{"errors":[{"code":"DENIED","message":"unauthorized to access repository: nosuchproject/csi-attacher, action: push"}]}"#,
            "refused push on nosuchproject/{repo} to 'ferry' (HTTP 403, DENIED: unauthorized to access repository: nosuchproject/csi-attacher, action: push); use an account with push rights on it, and check that the project 'nosuchproject' exists",
        ),
    ];
    for (status, body, expected) in shapes {
        let front = FaultProxy::start(
            harbor.addr(),
            vec![Rule::new(
                "/v2/nosuchproject/",
                Fault::Refuse {
                    method: "",
                    status,
                    headers: String::new(),
                    body,
                },
                usize::MAX,
            )],
        );
        let config = harbor.docker_config_for(front.addr(), "ferry", PASSWORD);
        let to = format!("{}/nosuchproject", front.addr());
        let started = std::time::Instant::now();
        let failed = harbor.push(&config, &bundle, &to, &[]).fails_with(1);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a refusal is final"
        );
        assert!(!failed.stderr().contains("retry"), "{}", failed.stderr());
        let first = failed
            .stderr()
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap()
            .to_string();
        let repo = first
            .split(&format!("{to}/"))
            .nth(1)
            .and_then(|r| r.split(':').next())
            .unwrap_or_default()
            .to_string();
        assert!(
            first.starts_with("error: cannot push ") && !repo.is_empty(),
            "names the image and the target: {first}"
        );
        assert_eq!(
            causes(&failed),
            vec![format!(
                "{} {}",
                front.addr(),
                expected.replace("{repo}", &repo)
            )],
            "{}",
            failed.stderr()
        );
    }
}

#[test]
fn pull_only_rights_refuse_the_push_and_allow_the_pull() {
    let Some((csi, bundle, harbor)) = bundle_and_harbor(Policy::default()) else {
        return;
    };
    let to = format!("{}/csi", harbor.addr());
    let writer = harbor.docker_config("ferry", PASSWORD);
    harbor.push(&writer, &bundle, &to, &["-q"]).success();
    let reader = harbor.docker_config("reader", PASSWORD);
    let refused = harbor
        .push(&reader, &bundle, &format!("{to}2"), &[])
        .fails_with(1);
    assert!(!refused.stderr().contains("retry"), "{}", refused.stderr());
    let cause = causes(&refused).join("\n");
    let repo = cause
        .split("refused push on ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default();
    assert_eq!(
        cause,
        format!(
            "{} refused push on {repo} to 'reader' (HTTP 401, UNAUTHORIZED: authentication required); use an account with push rights on it, and check that the project 'csi2' exists",
            harbor.addr()
        )
    );
    harbor.pull_back(&reader, &csi, 1, &to);

    // A repository that does not exist is said to be missing, not unauthorized.
    let cache = tempfile::tempdir().unwrap();
    let missing = harbor
        .ferry(
            &reader,
            &[
                "pull",
                "--image",
                &format!("{to}/no/such-image:v1"),
                "--cache-dir",
                cache.path().to_str().unwrap(),
                "-q",
            ],
        )
        .fails_with(1);
    assert_eq!(
        causes(&missing),
        vec![format!(
            "{} does not have what was asked for in csi/no/such-image (HTTP 404, MANIFEST_UNKNOWN: manifest unknown); check the image's name and tag, and any --mirror prefix",
            harbor.addr()
        )]
    );
}

#[test]
fn a_wrong_password_is_tried_once_and_no_credentials_are_named() {
    let Some((_csi, bundle, harbor)) = bundle_and_harbor(Policy::default()) else {
        return;
    };
    let to = format!("{}/csi", harbor.addr());
    let wrong = harbor.docker_config("ferry", "wrong-password");
    let refused = harbor
        .push(&wrong, &bundle, &to, &["-j", "8"])
        .fails_with(1);
    let tries = |tokens: &TokenService| {
        tokens
            .asked()
            .iter()
            .filter(|a| a.user.as_deref() == Some("ferry") && !a.accepted)
            .count()
    };
    assert_eq!(tries(&harbor.tokens), 1, "the password was tried once");
    assert_eq!(helper_runs(&wrong), 1, "the credential helper ran once");
    assert_eq!(
        causes(&refused),
        vec![format!(
            "{} refused the credentials of 'ferry' for {} (HTTP 401, incorrect username or password); ferry tried them once and not again, so as not to lock the account: correct them with `docker login {}`",
            harbor.tokens.addr,
            harbor.addr(),
            harbor.addr()
        )]
    );
    assert!(!refused.stderr().contains("wrong-password"));

    // A pull with many parallel requests, too.
    let pull = harbor.ferry(
        &wrong,
        &[
            "pull",
            "--image",
            &format!("{to}/sig-storage/csi-attacher:v4.4.0"),
            "--image",
            &format!("{to}/sig-storage/csi-resizer:v1.9.0"),
            "--cache-dir",
            harbor.config.path().join("c").to_str().unwrap(),
            "-j",
            "8",
        ],
    );
    let pull = pull.fails_with(1);
    assert_eq!(tries(&harbor.tokens), 2, "once more for the second run");
    assert_eq!(causes(&pull), causes(&refused), "{}", pull.stderr());

    let none = harbor.config.path().join("no-credentials");
    std::fs::create_dir_all(&none).unwrap();
    let anonymous = harbor.push(&none, &bundle, &to, &[]).fails_with(1);
    assert_eq!(
        causes(&anonymous),
        vec![format!(
            "{0} wants a login and ferry has no credentials for it (HTTP 401, UNAUTHORIZED: authentication required); log in with `docker login {0}` (ferry reads DOCKER_CONFIG/config.json with its credential helpers, and REGISTRY_AUTH_FILE)",
            harbor.addr()
        )]
    );
}

#[test]
fn push_to_refuses_a_name_that_is_not_a_registry_host_before_reading_the_bundle() {
    for (to, why) in [
        (
            "myregistry/csi",
            "'myregistry' is not a registry host: a name without a '.' or a ':' (other than localhost) is a Docker Hub namespace; write the host with its domain or port, e.g. myregistry.local or myregistry:5000",
        ),
        ("bad host!/x", "'bad host!' is not a registry HOST[:PORT]"),
    ] {
        let refused = ferry(&["push", "/nonexistent/bundle.tar", "--to", to]).fails_with(2);
        assert!(
            refused.stderr().starts_with(&format!(
                "error: invalid value '{to}' for '--to <HOST[:PORT][/PREFIX]>': {why}\n"
            )),
            "{}",
            refused.stderr()
        );
        assert!(!refused.stderr().contains("nonexistent"));
    }
}

#[test]
fn a_blob_the_registry_serves_short_is_named_as_such() {
    use crate::seed::{push_blob, push_manifest, DOCKER_MANIFEST};
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = push_blob(registry.addr(), "short/image", config);
    let layer = vec![7u8; 1000];
    let layer_digest = push_blob(registry.addr(), "short/image", &layer);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 5000, "digest": layer_digest}],
    });
    push_manifest(
        registry.addr(),
        "short/image",
        "v1",
        DOCKER_MANIFEST,
        manifest.to_string().as_bytes(),
    );
    let cache = tempfile::tempdir().unwrap();
    let image = format!("{}/short/image:v1", registry.addr());
    let failed = pull_image(&mut command(), &image, cache.path(), &[]).fails_with(1);
    // Its first answer is taken as a cut download; asked for the rest, the registry says it has no more.
    let stderr = failed.stderr();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("retry ") || l.starts_with("error: "))
        .collect();
    assert_eq!(
        lines,
        [
            format!("retry 1 for blob {layer_digest} of {image}: the answer ended after 1000 of 5000 bytes"),
            format!(
                "error: cannot fetch blob {layer_digest} of {image} from {}, after 2 attempts",
                registry.addr()
            )
        ],
        "{stderr}"
    );
    assert_eq!(
        causes(&failed),
        vec!["the registry serves this blob as 1000 bytes, but the manifest says 5000: its copy is damaged or the manifest is wrong; ask the registry's operator to push the image again".to_string()]
    );
}

#[test]
fn a_wrong_password_at_a_basic_auth_registry_is_tried_once() {
    let Some(registry) = require(Registry::tls_with_auth("ferry", PASSWORD)) else {
        return;
    };
    let config = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("ferry:wrong-password");
    std::fs::write(
        config.path().join("config.json"),
        json!({"auths": {registry.addr(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let images: Vec<String> = (0..6)
        .map(|i| format!("{}/csi/image-{i}:v1", registry.addr()))
        .collect();
    let mut args = vec![
        "pull",
        "-j",
        "8",
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ];
    let ca_cert = registry.ca_cert().to_str().unwrap().to_string();
    args.extend(["--ca-cert", &ca_cert]);
    for image in &images {
        args.extend(["--image", image]);
    }
    let failed = run(command().args(&args).env("DOCKER_CONFIG", config.path())).fails_with(1);
    // Distribution logs no difference between a wrong password and none, so count answers: the https
    // probe, at most each image's first (anonymous) request, and one check of the password; a client that
    // sent the password with every request would add one 401 per image.
    let refused = registry.log().matches(" HTTP/1.1\" 401 ").count();
    assert!(
        (3..=images.len() + 2).contains(&refused),
        "the password was tried once ({refused} answers 401): {}",
        registry.log()
    );
    assert_eq!(
        causes(&failed),
        vec![format!(
            "{0} refused the credentials of 'ferry' for {0} (HTTP 401, UNAUTHORIZED: authentication required); ferry tried them once and not again, so as not to lock the account: correct them with `docker login {0}`",
            registry.addr()
        )]
    );
}

/// A rate-limited token service's 429 says when to come back, as a registry's own 429 does: ferry waits
/// that long, and says that it was the token service.
#[test]
fn a_token_services_429_is_waited_out_as_its_retry_after_says() {
    let Some(harbor) = Harbor::start(Policy {
        rate_limited_first: 1,
        ..Policy::default()
    }) else {
        return;
    };
    let config = harbor.docker_config("ferry", PASSWORD);
    let cache = tempfile::tempdir().unwrap();
    let image = format!("{}/csi/no-such-image:v1", harbor.addr());
    let failed = pull_image(
        fast_retries(&mut harbor.command(&config)),
        &image,
        cache.path(),
        &[],
    )
    .fails_with(1);
    assert_eq!(
        failed.stderr(),
        format!(
            "retry 1 for manifest of {image}: the token service {} answered HTTP 429, too many token \
             requests (retry after 1 s)\nerror: cannot fetch the manifest of {image} from {1}, after 2 \
             attempts\n  caused by: {1} does not have what was asked for in csi/no-such-image (HTTP 404, \
             MANIFEST_UNKNOWN: manifest unknown); check the image's name and tag, and any --mirror prefix\n",
            harbor.tokens.addr,
            harbor.addr()
        )
    );
    let asked = harbor.tokens.asked();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked[1].when - asked[0].when >= Duration::from_secs(1),
        "the second token request waited out the Retry-After: {asked:?}"
    );
}

/// Only a 2xx from the API root says that basic credentials are accepted: an answer that says nothing
/// (a 503) is retried, and never reported as a refusal of a repository to a user it did not accept.
#[test]
fn a_basic_auth_check_answered_with_an_error_accepts_nothing() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    // A front that asks for basic auth on every manifest, and whose credential check is unavailable.
    let front = FaultProxy::start(
        registry.addr(),
        vec![
            Rule::new(
                "/manifests/",
                Fault::Refuse {
                    method: "",
                    status: 401,
                    headers: "WWW-Authenticate: Basic realm=\"front\"\r\n".into(),
                    body: r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                },
                usize::MAX,
            ),
            Rule::new("/v2/", Fault::Status { status: 503 }, usize::MAX),
        ],
    );
    let config = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("ferry:{PASSWORD}"));
    std::fs::write(
        config.path().join("config.json"),
        json!({"auths": {front.addr(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let image = format!("{}/csi/image:v1", front.addr());
    let failed = pull_image(
        fast_retries(&mut command()).env("DOCKER_CONFIG", config.path()),
        &image,
        cache.path(),
        &["-q"],
    )
    .fails_with(1);
    assert_eq!(
        failed.stderr(),
        format!(
            "error: cannot fetch the manifest of {image} from {}, after 6 attempts\n  caused by: the \
             registry, asked whether it accepts the credentials of 'ferry' (GET /v2/), answered HTTP 503, \
             UNAVAILABLE: injected 503\n",
            front.addr()
        )
    );
    // The scheme probe, then one check per attempt: a check that said nothing is made again.
    let checks = front.seen().iter().filter(|s| s.path == "/v2/").count();
    assert_eq!(checks, 1 + 6, "{:?}", front.seen());
}
