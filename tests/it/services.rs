//! Real services for the integration tests, started on loopback with their own state directories and
//! stopped when dropped: CNCF Distribution (plain, and TLS + htpasswd), containerd, dockerd, podman.
//!
//! One policy for a service that cannot start: the test fails. A developer without the packages may opt
//! out with `FERRY_ALLOW_SKIP=1`; each test skipped that way is then listed in `$FERRY_SKIP_LOG`, which the
//! README's test command prints at the end, so that a green run never hides what it did not test.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Returns the service; panics when it cannot start, unless `FERRY_ALLOW_SKIP=1`, which records the skip
/// and returns `None`.
pub fn require<T>(service: Result<T, String>) -> Option<T> {
    let why = match service {
        Ok(service) => return Some(service),
        Err(why) => why,
    };
    if std::env::var("FERRY_ALLOW_SKIP").as_deref() != Ok("1") {
        panic!("a service this test needs cannot start: {why}\n(FERRY_ALLOW_SKIP=1 skips such tests, and lists them)");
    }
    record_skip(&why);
    None
}

/// Says on stderr, and in the list tests/run-all.sh shows at the end (FERRY_SKIP_LOG), that the running
/// test did not run, and why.
pub fn record_skip(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    eprintln!("SKIPPED {test}: {why}");
    if let Ok(log) = std::env::var("FERRY_SKIP_LOG") {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot write the skip log {log}: {e}"));
        writeln!(file, "{test}: {why}").unwrap();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn have(binary: &str) -> Result<(), String> {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {binary}"))
        .output()
        .map_err(|e| e.to_string())?;
    if found.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{binary} is not installed (run .ci/install-deps.sh)"
        ))
    }
}

/// A background process, killed on drop, whose log is kept for error messages.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(command: &mut Command, log: PathBuf) -> Result<Daemon, String> {
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = command
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
        Ok(Daemon { child, log })
    }

    /// Polls `ready` for up to 30 s; on failure the error carries the end of the service's log.
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ready() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{what} exited ({status}): {}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "{what} did not become ready in 30 s: {}",
            self.log_tail()
        ))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Daemon {
    /// SIGTERM first, so dockerd and containerd unmount what they mounted; SIGKILL after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether something speaking HTTP listens at `addr` (a TLS server answers plain HTTP with a 400 too).
fn answers_http(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = [0u8; 5];
    stream.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"HTTP/"
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", command.get_program()))
}

/// CNCF Distribution on a free loopback port.
pub struct Registry {
    _daemon: Daemon,
    addr: String,
    tls: Option<Tls>,
    dir: TempDir,
}

/// The `service` and `issuer` a token registry expects in its tokens.
pub const TOKEN_SERVICE: &str = "ferry-test-registry";
pub const TOKEN_ISSUER: &str = "ferry-test-issuer";

enum Auth {
    None,
    Htpasswd(String, String),
    /// The registry configuration's `log` and `auth` sections.
    Token(String),
}

struct Tls {
    ca_cert: PathBuf,
    user: String,
    password: String,
}

impl Registry {
    /// Plain HTTP, no auth: what `--mirror` points at in most tests.
    pub fn plain() -> Result<Registry, String> {
        Registry::start(Auth::None)
    }

    /// TLS with a test CA and htpasswd basic auth: the private registry of an air-gapped site.
    pub fn tls_with_auth(user: &str, password: &str) -> Result<Registry, String> {
        Registry::start(Auth::Htpasswd(user.into(), password.into()))
    }

    /// Plain HTTP with Distribution's own `auth: token`: tokens from the service at `realm`, signed by the
    /// key of `certificate`. Logs every request (`log`), so tests can count what the registry did.
    pub fn token_auth(realm: &str, certificate: &Path) -> Result<Registry, String> {
        Registry::start(Auth::Token(format!(
            "log: {{level: info}}\nauth: {{token: {{realm: '{realm}', service: {TOKEN_SERVICE}, issuer: {TOKEN_ISSUER}, rootcertbundle: {}}}}}\n",
            certificate.display()
        )))
    }

    /// What the registry logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Starts on a free port; tries again on another if the port was taken meanwhile by a parallel test.
    fn start(auth: Auth) -> Result<Registry, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match Registry::start_once(&auth) {
                Ok(registry) => return Ok(registry),
                Err(why) => last = why,
            }
        }
        Err(last)
    }

    fn start_once(auth: &Auth) -> Result<Registry, String> {
        have("docker-registry")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let tls = match auth {
            Auth::Htpasswd(user, password) => {
                have("openssl")?;
                have("htpasswd")?;
                let ca_cert = make_certificates(dir.path())?;
                let htpasswd = run(Command::new("htpasswd").args(["-Bbn", user, password]));
                std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout)
                    .map_err(|e| e.to_string())?;
                config.push_str(&format!(
                    "  tls: {{certificate: {}, key: {}}}\nauth: {{htpasswd: {{realm: test, path: {}}}}}\n",
                    dir.path().join("server.pem").display(),
                    dir.path().join("server.key").display(),
                    dir.path().join("htpasswd").display()
                ));
                Some(Tls {
                    ca_cert,
                    user: user.clone(),
                    password: password.clone(),
                })
            }
            Auth::Token(config_tail) => {
                config = config.replace("log: {level: warn}\n", "") + config_tail;
                None
            }
            Auth::None => None,
        };
        std::fs::write(dir.path().join("config.yml"), config).map_err(|e| e.to_string())?;
        let mut daemon = Daemon::spawn(
            Command::new("docker-registry")
                .arg("serve")
                .arg(dir.path().join("config.yml")),
            dir.path().join("registry.log"),
        )?;
        let probe = addr.clone();
        daemon.wait_until("docker-registry", || answers_http(&probe))?;
        Ok(Registry {
            _daemon: daemon,
            addr,
            tls,
            dir,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn ca_cert(&self) -> &Path {
        &self.tls.as_ref().expect("a TLS registry").ca_cert
    }

    pub fn password(&self) -> &str {
        &self.tls.as_ref().expect("a TLS registry").password
    }

    /// A directory usable as `DOCKER_CONFIG`, whose config.json holds this registry's credentials.
    pub fn docker_config(&self) -> PathBuf {
        let tls = self.tls.as_ref().expect("a TLS registry");
        let dir = self.dir.path().join("docker-config");
        std::fs::create_dir_all(&dir).unwrap();
        let auth = base64_encode(format!("{}:{}", tls.user, tls.password).as_bytes());
        let json = serde_json::json!({"auths": {self.addr.clone(): {"auth": auth}}});
        std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
        dir
    }

    /// skopeo arguments that reach this registry (TLS trust and credentials, or plain HTTP).
    pub fn skopeo_args(&self, direction: &str) -> Vec<String> {
        match &self.tls {
            Some(tls) => vec![
                format!(
                    "--{direction}-cert-dir={}",
                    tls.ca_cert.parent().unwrap().join("skopeo-certs").display()
                ),
                format!("--{direction}-creds={}:{}", tls.user, tls.password),
            ],
            None => vec![format!("--{direction}-tls-verify=false")],
        }
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A CA and a server certificate for 127.0.0.1/localhost, made with the openssl CLI: `ca.pem`, `server.pem`,
/// `server.key`, and `skopeo-certs/ca.crt` in `dir`; returns the CA's path.
pub fn make_certificates(dir: &Path) -> Result<PathBuf, String> {
    let at = |name: &str| dir.join(name).display().to_string();
    let steps: Vec<Vec<String>> = vec![
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ferry test CA",
            "-keyout",
            &at("ca.key"),
            "-out",
            &at("ca.pem"),
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &at("server.key"),
            "-out",
            &at("server.csr"),
        ]
        .into_iter()
        .map(String::from)
        .collect(),
    ];
    for step in &steps {
        let output = run(Command::new("openssl").args(step));
        if !output.status.success() {
            return Err(format!(
                "openssl failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .map_err(|e| e.to_string())?;
    let sign = run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &at("server.csr"),
        "-CA",
        &at("ca.pem"),
        "-CAkey",
        &at("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &at("san.ext"),
        "-out",
        &at("server.pem"),
    ]));
    if !sign.status.success() {
        return Err(format!(
            "openssl x509 failed: {}",
            String::from_utf8_lossy(&sign.stderr)
        ));
    }
    let skopeo_certs = dir.join("skopeo-certs");
    std::fs::create_dir_all(&skopeo_certs).map_err(|e| e.to_string())?;
    std::fs::copy(dir.join("ca.pem"), skopeo_certs.join("ca.crt")).map_err(|e| e.to_string())?;
    Ok(dir.join("ca.pem"))
}

/// containerd with its own root, state and socket.
pub struct Containerd {
    _daemon: Daemon,
    socket: PathBuf,
    _dir: TempDir,
}

impl Containerd {
    pub fn start() -> Result<Containerd, String> {
        have("containerd")?;
        have("ctr")?;
        // Short paths: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("ctrd")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let socket = dir.path().join("c.sock");
        let config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\n[grpc]\n  address = \"{}\"\n",
            dir.path().join("root").display(),
            dir.path().join("state").display(),
            socket.display()
        );
        std::fs::write(dir.path().join("config.toml"), config).map_err(|e| e.to_string())?;
        let mut daemon = Daemon::spawn(
            Command::new("containerd")
                .arg("--config")
                .arg(dir.path().join("config.toml")),
            dir.path().join("containerd.log"),
        )?;
        let probe = socket.clone();
        daemon.wait_until("containerd", || {
            Command::new("ctr")
                .arg("--address")
                .arg(&probe)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        })?;
        Ok(Containerd {
            _daemon: daemon,
            socket,
            _dir: dir,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs `ctr --address SOCK -n k8s.io ARGS`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", "k8s.io"])
            .args(args))
    }

    /// `ctr images import --all-platforms FILE`, as a node's own tools load an image archive; panics with
    /// ctr's stderr unless it succeeds.
    pub fn import_all_platforms(&self, file: &str) {
        succeeded(self.ctr(&["images", "import", "--all-platforms", file]));
    }

    /// The names of the images in the k8s.io namespace; containerd also files each image under its
    /// config digest, which is left out.
    pub fn image_names(&self) -> BTreeSet<String> {
        String::from_utf8_lossy(&self.ctr(&["images", "ls", "-q"]).stdout)
            .lines()
            .filter(|name| !name.starts_with("sha256:"))
            .map(str::to_string)
            .collect()
    }
}

/// dockerd on its own socket, using the given containerd.
pub struct Dockerd {
    _daemon: Daemon,
    host: String,
    _dir: TempDir,
}

impl Dockerd {
    pub fn start(containerd: &Containerd) -> Result<Dockerd, String> {
        Dockerd::start_with(containerd, &[])
    }

    /// With extra dockerd arguments, such as `--config-file daemon.json`.
    pub fn start_with(containerd: &Containerd, extra: &[&str]) -> Result<Dockerd, String> {
        have("dockerd")?;
        have("docker")?;
        let dir = tempfile::Builder::new()
            .prefix("dkr")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let host = format!("unix://{}", dir.path().join("d.sock").display());
        let at = |name: &str| dir.path().join(name);
        let mut daemon = Daemon::spawn(
            Command::new("dockerd")
                .args([
                    "--iptables=false",
                    "--ip6tables=false",
                    "--bridge=none",
                    "--storage-driver=vfs",
                ])
                .arg("--data-root")
                .arg(at("root"))
                .arg("--exec-root")
                .arg(at("exec"))
                .arg("--pidfile")
                .arg(at("pid"))
                .arg("-H")
                .arg(&host)
                .arg("--containerd")
                .arg(containerd.socket())
                .args(extra),
            at("dockerd.log"),
        )?;
        let probe = host.clone();
        daemon.wait_until("dockerd", || {
            Command::new("docker")
                .env("DOCKER_HOST", &probe)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        })?;
        Ok(Dockerd {
            _daemon: daemon,
            host,
            _dir: dir,
        })
    }

    /// The socket path, for `--address`.
    pub fn socket(&self) -> String {
        self.host.trim_start_matches("unix://").to_string()
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        run(Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(args))
    }

    /// `REPOSITORY:TAG` of each image docker has.
    pub fn image_names(&self) -> BTreeSet<String> {
        repository_tags(&self.docker(&["images", "--format", REPOSITORY_TAG]))
    }
}

/// The `--format` of `docker images` and `podman images` that lists `REPOSITORY:TAG`, one a line.
const REPOSITORY_TAG: &str = "{{.Repository}}:{{.Tag}}";

fn succeeded(output: Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn repository_tags(listing: &Output) -> BTreeSet<String> {
    String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A podman API service, stopped on drop.
pub struct PodmanService {
    _daemon: Daemon,
    pub socket: PathBuf,
}

/// podman has no daemon; each instance gets its own storage.
pub struct Podman {
    dir: TempDir,
}

impl Podman {
    pub fn new() -> Result<Podman, String> {
        have("podman")?;
        let podman = Podman {
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
        };
        let check = podman.podman(&["images"]);
        if !check.status.success() {
            return Err(format!(
                "podman does not work here: {}",
                String::from_utf8_lossy(&check.stderr)
            ));
        }
        Ok(podman)
    }

    pub fn podman(&self, args: &[&str]) -> Output {
        run(Command::new("podman")
            .env("CONTAINERS_STORAGE_CONF", self.storage_conf())
            .args(args))
    }

    /// `podman load -i FILE`, podman reading an image archive itself; panics with podman's stderr unless
    /// it succeeds.
    pub fn load_file(&self, file: &str) {
        succeeded(self.podman(&["load", "-i", file]));
    }

    /// `REPOSITORY:TAG` of each image in this instance's storage.
    pub fn image_names(&self) -> BTreeSet<String> {
        repository_tags(&self.podman(&["images", "--format", REPOSITORY_TAG]))
    }

    /// `podman system service` on a socket of its own, over this instance's storage.
    pub fn serve(&self) -> Result<PodmanService, String> {
        let socket = self.dir.path().join("podman.sock");
        let mut daemon = Daemon::spawn(
            Command::new("podman")
                .env("CONTAINERS_STORAGE_CONF", self.storage_conf())
                .args(["system", "service", "--time=0"])
                .arg(format!("unix://{}", socket.display())),
            self.dir.path().join("service.log"),
        )?;
        daemon.wait_until("podman system service", || socket.exists())?;
        Ok(PodmanService {
            _daemon: daemon,
            socket,
        })
    }

    /// A storage.conf for this instance, for `CONTAINERS_STORAGE_CONF`: how ferry's own `podman load` finds it.
    pub fn storage_conf(&self) -> std::path::PathBuf {
        let path = self.dir.path().join("storage.conf");
        if !path.exists() {
            let conf = format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                self.dir.path().join("root").display(),
                self.dir.path().join("run").display()
            );
            std::fs::write(&path, conf).unwrap();
        }
        path
    }
}
