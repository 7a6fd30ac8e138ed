//! `ferry serve`: a 4.8.0 bundle as a registry, pulled by real clients: containerd through the printed
//! `hosts.toml` (by the upstream names, as kubelet's pulls go), docker and podman by the served names,
//! podman by the upstream names through the printed CRI-O `registries.conf`, skopeo copying everything.

mod hostile;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use self::hostile::{
    closed_within, exchange, h2_get, h2_start, http1_get, plain_from, run_within, tls_from, Stream,
};
use crate::bundle::{expected_names, Csi480};
use crate::ferry::{command, run, Run};
use crate::seed::{push_image, request, Format};
use crate::services::{make_certificates, require, Containerd, Dockerd, Podman, Registry};

/// What `ferry serve` allows a response to make no progress, and a connection to send no request.
const STALL: Duration = Duration::from_secs(30);
/// The chunk a blob is read, checked and sent in.
const CHUNK: usize = 256 << 10;

/// `ferry serve` as a child process on a free loopback port, stopped with SIGTERM when dropped.
pub struct Served {
    child: Child,
    pub addr: String,
    log: PathBuf,
}

impl Served {
    pub fn start(args: &[&str], log: PathBuf) -> Served {
        Served::start_with(command(), args, log)
    }

    /// `ferry serve` run by `ferry` (a static binary, or one under qemu-user).
    pub fn start_with(mut ferry: Command, args: &[&str], log: PathBuf) -> Served {
        let mut child = ferry
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--log-level", "debug"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_else(|| {
            let _ = child.wait();
            panic!(
                "ferry serve did not start:\n{}",
                std::fs::read_to_string(&log).unwrap()
            )
        });
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|url| url.split_once("://"))
            .map(|(_, addr)| addr.to_string())
            .unwrap_or_else(|| panic!("unexpected first line: {first}"));
        Served { child, addr, log }
    }

    /// SIGTERM, then the exit status and the log; a server that does not stop in 15 s fails the test.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        terminate(&mut self.child)
            .map(|status| (status, std::fs::read_to_string(&self.log).unwrap()))
            .expect("ferry serve stops within 15 s of SIGTERM")
    }

    /// The most memory the server has held, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmHWM:")
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
        request(&self.addr, "GET", path, headers, b"")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child);
    }
}

fn terminate(child: &mut Child) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
    )
}

fn sha256_file(path: &Path) -> String {
    digest_of(&std::fs::read(path).unwrap())
}

/// The name ferry push gives an upstream image, without a host.
fn served_name(upstream: &str) -> String {
    upstream
        .strip_prefix("docker.io/library/")
        .or_else(|| upstream.strip_prefix("registry.k8s.io/"))
        .unwrap()
        .to_string()
}

/// Each image of the bundle (upstream name → manifest digest), as `ferry inspect` lists it.
fn bundle_digests(bundle: &Path) -> Vec<(String, String)> {
    crate::multiarch::inspected(bundle)
        .into_iter()
        .map(|(name, _, manifest)| (name, manifest))
        .collect()
}

fn csi_bundle(csi: &Csi480) -> PathBuf {
    let cache = csi.work.path().join("cache");
    csi.bundle(cache.to_str().unwrap(), "csi.tar", &[])
        .success();
    csi.work.path().join("csi.tar")
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").args(args).output().unwrap()
}

/// `ferry serve BUNDLE --listen 0.0.0.0:5000 --advertise ADVERTISED --print-config RUNTIME`.
fn print_config(bundle: &Path, advertised: &str, runtime: &str) -> Run {
    run(command().args([
        "serve",
        bundle.to_str().unwrap(),
        "--listen",
        "0.0.0.0:5000",
        "--advertise",
        advertised,
        "--print-config",
        runtime,
    ]))
}

/// The exact containerd configuration an operator pastes for `served`, run as printed into `hosts`.
pub fn containerd_hosts(bundle: &Path, served: &Served, hosts: &Path) {
    let script = run(command().args([
        "serve",
        bundle.to_str().unwrap(),
        "--listen",
        &served.addr,
        "--print-config",
        "containerd",
    ]))
    .success()
    .stdout();
    let applied = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("CONTAINERD_CERTS_D", hosts)
        .output()
        .unwrap();
    assert!(applied.status.success(), "{}", text(&applied));
}

/// Runs `command` (`what`, for messages), which must succeed within `limit`.
fn succeeds_within(command: &mut Command, what: &str, limit: Duration) {
    let done = run_within(command, limit)
        .unwrap_or_else(|| panic!("{what} did not finish within {limit:?}"));
    assert!(done.status.success(), "{what}: {}", text(&done));
}

/// `ctr images pull` of each of `images` through `hosts`, each within `limit`; how long all took.
fn ctr_pull(containerd: &Containerd, hosts: &Path, images: &[&str], limit: Duration) -> Duration {
    let started = Instant::now();
    for image in images {
        succeeds_within(
            Command::new("ctr")
                .arg("--address")
                .arg(containerd.socket())
                .args(["-n", "k8s.io", "images", "pull", "--hosts-dir"])
                .arg(hosts)
                .arg(image),
            &format!("ctr pull {image}"),
            limit,
        );
    }
    started.elapsed()
}

/// `skopeo copy` of `image` into a fresh directory, within 120 s; how long it took.
fn skopeo_copy(source_args: &[&str], image: &str, out: &Path) -> Duration {
    let _ = std::fs::remove_dir_all(out);
    let started = Instant::now();
    succeeds_within(
        Command::new("skopeo")
            .arg("copy")
            .args(source_args)
            .arg(image)
            .arg(format!("dir:{}", out.display())),
        &format!("skopeo copy {image}"),
        Duration::from_secs(120),
    );
    started.elapsed()
}

/// How many of `streams` the server has closed (checked all at once, 5 s each).
fn count_closed(streams: &mut [Stream]) -> usize {
    std::thread::scope(|scope| {
        let checks: Vec<_> = streams
            .iter_mut()
            .map(|stream| scope.spawn(move || closed_within(stream, Duration::from_secs(5))))
            .collect();
        checks
            .into_iter()
            .filter_map(|check| check.join().ok())
            .filter(|closed| *closed)
            .count()
    })
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn containerd_pulls_the_upstream_names_through_the_printed_hosts_toml_and_skopeo_copies_all() {
    let Some(csi) = Csi480::start() else { return };
    let bundle = csi_bundle(&csi);
    let digests = bundle_digests(&bundle);
    assert_eq!(digests.len(), 11);
    let served = Served::start(
        &[bundle.to_str().unwrap()],
        csi.work.path().join("serve.log"),
    );

    let hosts = csi.work.path().join("certs.d");
    containerd_hosts(&bundle, &served, &hosts);
    let listed: BTreeSet<String> = std::fs::read_dir(&hosts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from(["docker.io".to_string(), "registry.k8s.io".to_string()])
    );

    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    for (name, _) in &digests {
        let pulled = containerd.ctr(&[
            "images",
            "pull",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            name,
        ]);
        assert!(
            pulled.status.success(),
            "ctr pull {name}: {}",
            text(&pulled)
        );
    }
    let listed = String::from_utf8_lossy(&containerd.ctr(&["images", "ls"]).stdout).into_owned();
    for (name, digest) in &digests {
        let line = listed
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("containerd has {name}:\n{listed}"));
        assert!(line.contains(digest.as_str()), "{line}");
    }
    for (upstream, seeded) in &csi.seeded {
        assert!(
            digests.contains(&(
                upstream.clone(),
                seeded.manifest_for("linux/amd64").to_string()
            )),
            "{upstream} is served with its upstream digest"
        );
    }
    assert_eq!(
        digests
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<BTreeSet<_>>(),
        expected_names()
    );

    // skopeo by the served names: the upstream digests, and every image copied out whole.
    for (number, (name, digest)) in digests.iter().enumerate() {
        let source = format!("docker://{}/{}", served.addr, served_name(name));
        let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &source]);
        assert!(raw.status.success(), "{}", text(&raw));
        assert_eq!(digest_of(&raw.stdout), *digest);
        let inspected = skopeo(&["inspect", "--tls-verify=false", &source]);
        assert!(
            String::from_utf8_lossy(&inspected.stdout)
                .contains(&format!("\"Digest\": \"{digest}\"")),
            "{}",
            text(&inspected)
        );
        let out = csi.work.path().join(format!("copy-{number}"));
        let copied = skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &source,
            &format!("dir:{}", out.display()),
        ]);
        assert!(copied.status.success(), "{}", text(&copied));
    }
    let (status, log) = served.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("stopped after"), "{log}");
    assert!(
        log.contains(
            "HEAD /v2/sig-storage/csi-provisioner/manifests/v3.6.0?ns=registry.k8s.io -> 200"
        ),
        "containerd asked as a mirror, with ns=, and the debug log shows it:\n{log}"
    );
}

#[test]
fn docker_and_podman_pull_by_the_served_names_and_through_the_printed_mirror_configs() {
    let Some(csi) = Csi480::start() else { return };
    let bundle = csi_bundle(&csi);
    let digests = bundle_digests(&bundle);
    let served = Served::start(
        &[bundle.to_str().unwrap()],
        csi.work.path().join("serve.log"),
    );
    let print = |runtime: &str| {
        let printed = print_config(&bundle, &served.addr, runtime).success();
        let file = csi.work.path().join(format!("{runtime}.conf"));
        std::fs::write(&file, printed.stdout()).unwrap();
        (file, printed.stderr())
    };

    let (daemon_json, notes) = print("docker");
    assert!(
        notes.contains(&format!(
            "docker pull {}/sig-storage/csi-provisioner:v3.6.0",
            served.addr
        )),
        "{notes}"
    );
    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    let Some(dockerd) = require(Dockerd::start_with(
        &containerd,
        &["--config-file", daemon_json.to_str().unwrap()],
    )) else {
        return;
    };
    for (name, digest) in &digests {
        // Docker Hub images through the mirror of daemon.json, by their upstream names; the others by
        // the served names.
        let pull = match name.strip_prefix("docker.io/library/") {
            Some(short) => short.to_string(),
            None => format!("{}/{}", served.addr, served_name(name)),
        };
        let pulled = dockerd.docker(&["pull", &pull]);
        assert!(
            pulled.status.success(),
            "docker pull {pull}: {}",
            text(&pulled)
        );
        assert!(
            String::from_utf8_lossy(&pulled.stdout).contains(&format!("Digest: {digest}")),
            "docker pull {pull}: {}",
            text(&pulled)
        );
    }

    let Some(podman) = require(Podman::new()) else {
        return;
    };
    for (name, digest) in &digests {
        let pull = format!("{}/{}", served.addr, served_name(name));
        let pulled = podman.podman(&["pull", "--tls-verify=false", &pull]);
        assert!(
            pulled.status.success(),
            "podman pull {pull}: {}",
            text(&pulled)
        );
        let inspected = podman.podman(&["inspect", "--format", "{{.Digest}}", &pull]);
        assert_eq!(String::from_utf8_lossy(&inspected.stdout).trim(), digest);
    }
    // CRI-O's registries.conf, read by the same library in podman: the upstream names, from the mirror.
    let (registries_conf, _) = print("cri-o");
    let Some(fresh) = require(Podman::new()) else {
        return;
    };
    for (name, digest) in &digests {
        let pulled = Command::new("podman")
            .env("CONTAINERS_STORAGE_CONF", fresh.storage_conf())
            .env("CONTAINERS_REGISTRIES_CONF", &registries_conf)
            .args(["pull", name])
            .output()
            .unwrap();
        assert!(
            pulled.status.success(),
            "podman pull {name}: {}",
            text(&pulled)
        );
        let inspected = fresh.podman(&["inspect", "--format", "{{.Digest}}", name]);
        assert_eq!(String::from_utf8_lossy(&inspected.stdout).trim(), digest);
    }
    let (_, log) = served.stop();
    assert!(
        log.contains("HEAD /v2/library/huawei-csi/manifests/4.8.0 -> 200"),
        "docker asked its mirror for a Docker Hub image:\n{log}"
    );
    assert!(
        log.contains("/v2/registry.k8s.io/sig-storage/csi-provisioner/manifests/v3.6.0 -> 200"),
        "podman asked the CRI-O mirror under the registry's name:\n{log}"
    );
}

/// A bundle of two images with the same path and tag from two registries (registry.k8s.io and quay.io),
/// fetched through one local registry under two prefixes, with both manifest digests.
struct TwoRegistries {
    registry: Registry,
    work: tempfile::TempDir,
    bundle: PathBuf,
    k8s: String,
    quay: String,
}

impl TwoRegistries {
    fn bundle(size: usize) -> Option<TwoRegistries> {
        let registry = require(Registry::plain())?;
        let work = tempfile::tempdir().unwrap();
        let addr = registry.addr();
        let amd64 = ["linux/amd64"];
        let k8s = push_image(
            addr,
            "k8s/sig-storage/tool",
            "v1",
            Format::DockerSingle,
            &amd64,
            size,
        );
        let quay = push_image(
            addr,
            "quay/sig-storage/tool",
            "v1",
            Format::DockerSingle,
            &amd64,
            size + 1000,
        );
        let bundle = work.path().join("two.tar");
        let two = TwoRegistries {
            registry,
            work,
            bundle,
            k8s: k8s.top_digest,
            quay: quay.top_digest,
        };
        two.build(&two.bundle);
        Some(two)
    }

    /// Bundles both images as the registry has them now into `path`, with a cache of its own.
    fn build(&self, path: &Path) {
        let addr = self.registry.addr();
        let cache = path.with_extension("cache");
        run(command().args([
            "bundle",
            "--image",
            "registry.k8s.io/sig-storage/tool:v1",
            "--image",
            "quay.io/sig-storage/tool:v1",
            "--mirror",
            &format!("registry.k8s.io={addr}/k8s"),
            "--mirror",
            &format!("quay.io={addr}/quay"),
            "--cache-dir",
            cache.to_str().unwrap(),
            "-o",
            path.to_str().unwrap(),
            "-q",
        ]))
        .success();
    }

    fn serve(&self, extra: &[&str]) -> Served {
        self.serve_as("serve.log", extra)
    }

    /// A server logging into `log` in the work directory (for tests that run several).
    fn serve_as(&self, log: &str, extra: &[&str]) -> Served {
        let mut args = vec![self.bundle.to_str().unwrap()];
        args.extend_from_slice(extra);
        Served::start(&args, self.work.path().join(log))
    }

    /// The path of `name` in the work directory, as an argument.
    fn file(&self, name: &str) -> String {
        self.work.path().join(name).display().to_string()
    }

    /// A CA and a certificate for 127.0.0.1 in the work directory (`server.pem`, `server.key`,
    /// `skopeo-certs/`); the CA's path.
    fn certificates(&self) -> PathBuf {
        make_certificates(self.work.path()).unwrap()
    }

    /// An htpasswd file of user `node`, password `pa55-Word`, at bcrypt `cost`: the arguments that serve
    /// it over TLS with the certificate [`Self::certificates`] made.
    fn tls_with_htpasswd(&self, cost: &str) -> [String; 6] {
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", "-C", cost, "node", "pa55-Word"])
            .output()
            .unwrap();
        assert!(htpasswd.status.success(), "{}", text(&htpasswd));
        std::fs::write(self.work.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        [
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
            "--htpasswd",
            "htpasswd",
        ]
        .map(|arg| {
            if arg.starts_with("--") {
                arg.to_string()
            } else {
                self.file(arg)
            }
        })
    }

    const IMAGES: [&'static str; 2] = [
        "registry.k8s.io/sig-storage/tool:v1",
        "quay.io/sig-storage/tool:v1",
    ];

    /// The path of quay.io's image's larger layer, and the layer's bytes.
    fn layer(&self, served: &Served) -> (String, Vec<u8>) {
        let (_, _, manifest) = served.get("/v2/sig-storage/tool/manifests/v1?ns=quay.io", &[]);
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let layer = manifest["layers"][1]["digest"].as_str().unwrap();
        let path = format!("/v2/quay.io/sig-storage/tool/blobs/{layer}");
        let (status, _, bytes) = served.get(&path, &[]);
        assert_eq!(status, 200);
        (path, bytes)
    }
}

fn error_code(body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("an error body: {}", String::from_utf8_lossy(body)));
    format!(
        "{} {}",
        json["errors"][0]["code"].as_str().unwrap(),
        json["errors"][0]["message"].as_str().unwrap()
    )
}

#[test]
fn serve_keeps_registries_apart_serves_ranges_and_refuses_writes_and_damage() {
    let Some(two) = TwoRegistries::bundle(300_000) else {
        return;
    };
    let (bundle, k8s, quay, work) = (&two.bundle, &two.k8s, &two.quay, &two.work);
    let before = sha256_file(bundle);
    let served = two.serve(&[]);

    let (status, headers, body) = served.get("/v2/", &[]);
    assert_eq!(status, 200);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("docker-distribution-api-version: registry/2.0"),
        "{headers}"
    );
    assert_eq!(body, b"{}");

    // Two registries' images with one path: ns= or the registry-prefixed path tells them apart.
    let (status, _, body) = served.get("/v2/sig-storage/tool/manifests/v1", &[]);
    assert_eq!(status, 404);
    assert_eq!(
        error_code(&body),
        "MANIFEST_UNKNOWN sig-storage/tool:v1 is ambiguous: it may be quay.io/sig-storage/tool:v1 or registry.k8s.io/sig-storage/tool:v1; ask with ?ns=REGISTRY or as REGISTRY/sig-storage/tool"
    );
    for (path, digest) in [
        ("/v2/sig-storage/tool/manifests/v1?ns=registry.k8s.io", k8s),
        ("/v2/sig-storage/tool/manifests/v1?ns=quay.io", quay),
        ("/v2/quay.io/sig-storage/tool/manifests/v1", quay),
    ] {
        let (status, headers, body) = served.get(path, &[]);
        assert_eq!(status, 200, "{path}");
        assert_eq!(digest_of(&body), *digest, "{path}");
        assert!(
            headers.contains(&format!("docker-content-digest: {digest}")),
            "{headers}"
        );
        assert!(
            headers.contains("content-type: application/vnd.docker.distribution.manifest.v2+json"),
            "{headers}"
        );
    }
    let (status, _, body) = served.get("/v2/sig-storage/tool/manifests/v1?ns=docker.io", &[]);
    assert_eq!(
        (status, error_code(&body)),
        (
            404,
            "NAME_UNKNOWN repository sig-storage/tool of docker.io is not in the bundle(s)"
                .to_string()
        )
    );
    let (_, _, body) = served.get("/v2/_catalog", &[]);
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"repositories":["sig-storage/tool"]}"#
    );
    let (_, _, body) = served.get("/v2/sig-storage/tool/tags/list?ns=quay.io", &[]);
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"name":"sig-storage/tool","tags":["v1"]}"#
    );

    // A layer whole, and a range of it.
    let (path, whole) = two.layer(&served);
    let layer = path.rsplit('/').next().unwrap();
    assert_eq!(digest_of(&whole), layer);
    let (status, headers, part) = served.get(&path, &[("Range", "bytes=1000-1999")]);
    assert_eq!(status, 206);
    assert_eq!(part, whole[1000..2000]);
    assert!(
        headers.contains(&format!("content-range: bytes 1000-1999/{}", whole.len())),
        "{headers}"
    );
    // Past the end, asking for nothing, backwards, several, another unit or a signed number: 416 with
    // the blob's size, and what to ask instead.
    for asked in [
        format!("bytes={}-", whole.len()),
        "bytes=-0".into(),
        "bytes=500-0".into(),
        "bytes=0-1,5-6".into(),
        "items=0-1".into(),
        "bytes=+1-2".into(),
    ] {
        let (status, headers, body) = served.get(&path, &[("Range", &asked)]);
        assert_eq!(status, 416, "{asked}");
        assert!(
            headers.contains(&format!("content-range: bytes */{}", whole.len())),
            "{asked}: {headers}"
        );
        assert_eq!(
            error_code(&body),
            format!(
                "UNSUPPORTED Range {asked} is not one byte range within blob {layer} ({} bytes): \
                 ask bytes=A-B, bytes=A- or bytes=-N",
                whole.len()
            )
        );
    }
    let (status, _, part) = served.get(&path, &[("Range", "bytes=-1000")]);
    assert_eq!((status, &part[..]), (206, &whole[whole.len() - 1000..]));

    // Referrers: an image index, empty as the bundle has none; a digest that is not one is a 400.
    let (status, headers, body) = served.get(
        &format!("/v2/sig-storage/tool/referrers/{quay}?ns=quay.io"),
        &[],
    );
    assert_eq!(status, 200);
    assert!(
        headers.contains("content-type: application/vnd.oci.image.index.v1+json"),
        "{headers}"
    );
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
    );
    let (status, _, body) = served.get("/v2/sig-storage/tool/referrers/latest?ns=quay.io", &[]);
    assert_eq!(
        (status, error_code(&body)),
        (
            400,
            "DIGEST_INVALID latest is not a sha256 digest".to_string()
        )
    );

    // HTTP/1.1 requires a Host header.
    let mut stream = std::net::TcpStream::connect(&served.addr).unwrap();
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.ends_with(r#"{"errors":[{"code":"UNSUPPORTED","message":"an HTTP/1.1 request must carry a Host header"}]}"#),
        "{answer}"
    );
    let (status, _, body) = served.get("/v2/sig-storage/tool/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000?ns=quay.io", &[]);
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));

    // Every write is refused with the protocol's error, and the bundle is untouched.
    for (method, path) in [
        ("PUT", "/v2/sig-storage/tool/manifests/v2"),
        ("POST", "/v2/sig-storage/tool/blobs/uploads/"),
        ("PATCH", "/v2/sig-storage/tool/blobs/uploads/1"),
        ("DELETE", &format!("/v2/sig-storage/tool/manifests/{quay}")),
    ] {
        let (status, _, body) = request(&served.addr, method, path, &[], b"{}");
        assert_eq!(status, 405, "{method} {path}");
        assert_eq!(error_code(&body), format!("UNSUPPORTED ferry serve is read-only: {method} is refused, and the bundles are never written"));
    }
    let copied = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("dir:{}", work.path().display()),
        &format!("docker://{}/sig-storage/other:v1", served.addr),
    ]);
    assert!(!copied.status.success());
    let (status, log) = served.stop();
    assert!(status.success(), "SIGTERM stops it cleanly:\n{log}");
    assert!(log.contains("refused"), "{log}");
    assert_eq!(sha256_file(bundle), before, "the bundle is untouched");

    // The same bundle twice is served once; a tag that two bundles give different images is refused.
    let served = two.serve(&[bundle.to_str().unwrap()]);
    let (status, _, _) = served.get("/v2/sig-storage/tool/manifests/v1?ns=quay.io", &[]);
    assert_eq!(status, 200);
    drop(served);
    push_image(
        two.registry.addr(),
        "k8s/sig-storage/tool",
        "v1",
        Format::DockerSingle,
        &["linux/amd64"],
        200_000,
    );
    let retagged = work.path().join("retagged.tar");
    two.build(&retagged);
    let refused = run(command().args([
        "serve",
        bundle.to_str().unwrap(),
        retagged.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]))
    .fails_with(2);
    assert!(
        refused.stderr().contains(&format!(
            "registry.k8s.io/sig-storage/tool:v1 is {k8s} in one bundle and sha256:"
        )) && refused
            .stderr()
            .contains("retagged.tar: serve them from two servers"),
        "{}",
        refused.stderr()
    );

    // --print-config needs an address nodes can reach.
    let unreachable = run(command().args([
        "serve",
        bundle.to_str().unwrap(),
        "--listen",
        "0.0.0.0:5000",
        "--print-config",
        "containerd",
    ]))
    .fails_with(2);
    assert!(unreachable.stderr().contains("--print-config needs the address nodes reach this server at: --listen 0.0.0.0:5000 names none; add --advertise HOST[:PORT]"), "{}", unreachable.stderr());

    // --advertise is HOST[:PORT] and nothing else: no command reaches the printed root script, no quote
    // the TOML or JSON.
    for (runtime, advertised) in [
        ("containerd", "10.0.0.5\nrm -rf /"),
        ("cri-o", "registry\"\ninsecure = true"),
        ("docker", "10.0.0.5:5000\", \"x"),
    ] {
        let refused = print_config(bundle, advertised, runtime).fails_with(2);
        assert_eq!(refused.stdout(), "", "nothing is printed");
        assert!(
            refused.stderr().contains(&format!(
                "for '--advertise <HOST[:PORT]>': {} is not HOST[:PORT]: HOST is a DNS name, an IPv4 \
                 address or an IPv6 address ([bracketed] with a port), PORT a number from 1 to 65535",
                advertised.escape_debug()
            )),
            "{}",
            refused.stderr()
        );
    }

    // A gzipped bundle cannot be read in place; a damaged one is refused, naming the damage.
    let gzipped = work.path().join("two.tar.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -c {} > {}",
            bundle.display(),
            gzipped.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let refused = run(command().args([
        "serve",
        gzipped.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]))
    .fails_with(2);
    assert!(refused.stderr().contains("two.tar.gz is gzipped; serve reads blobs in place from an uncompressed bundle: gunzip it first"), "{}", refused.stderr());
    let mut bytes = std::fs::read(bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(bundle, bytes).unwrap();
    std::fs::remove_file(work.path().join("two.tar.sha256")).unwrap();
    let refused =
        run(command().args(["serve", bundle.to_str().unwrap(), "--listen", "127.0.0.1:0"]))
            .fails_with(1);
    assert!(refused.stdout().contains("BAD "), "{}", refused.stdout());
    assert!(
        refused
            .stderr()
            .contains("two.tar is damaged or incomplete"),
        "{}",
        refused.stderr()
    );
}

#[test]
fn serve_over_tls_with_basic_auth() {
    let Some(two) = TwoRegistries::bundle(100_000) else {
        return;
    };
    let work = &two.work;
    let at = |name: &str| work.path().join(name).display().to_string();
    make_certificates(work.path()).unwrap();
    let tls = two.tls_with_htpasswd("5");
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let served = two.serve(&tls);
    let image = format!("docker://{}/quay.io/sig-storage/tool:v1", served.addr);
    let cert_dir = format!("--cert-dir={}", at("skopeo-certs"));
    let inspected = skopeo(&[
        "inspect",
        "--raw",
        &cert_dir,
        "--creds",
        "node:pa55-Word",
        &image,
    ]);
    assert!(inspected.status.success(), "{}", text(&inspected));
    assert_eq!(digest_of(&inspected.stdout), two.quay);
    let copied = skopeo(&[
        "copy",
        "--src-cert-dir",
        &at("skopeo-certs"),
        "--src-creds",
        "node:pa55-Word",
        &image,
        &format!("dir:{}", at("copy")),
    ]);
    assert!(copied.status.success(), "{}", text(&copied));
    let stranger = skopeo(&[
        "inspect",
        "--raw",
        &cert_dir,
        "--creds",
        "node:wrong",
        &image,
    ]);
    assert!(!stranger.status.success());
    assert!(
        text(&stranger).contains("unauthorized") || text(&stranger).contains("401"),
        "{}",
        text(&stranger)
    );
    let untrusted = skopeo(&["inspect", "--raw", "--creds", "node:pa55-Word", &image]);
    assert!(
        text(&untrusted).contains("certificate"),
        "{}",
        text(&untrusted)
    );
    let config = run(command()
        .args([
            "serve",
            two.bundle.to_str().unwrap(),
            "--listen",
            &served.addr,
        ])
        .args(tls)
        .args(["--print-config", "containerd"]))
    .success()
    .stdout();
    assert!(
        config.contains(&format!("[host.\"https://{}\"]", served.addr)),
        "{config}"
    );
    assert!(config.contains("Authorization"), "{config}");

    drop(served);

    // Without TLS, the passwords travel in clear: said at start.
    let plain = two.serve(&["--htpasswd", &at("htpasswd")]);
    let (status, _, _) = plain.get("/v2/", &[]);
    assert_eq!(status, 401);
    let (_, log) = plain.stop();
    assert!(
        log.contains(
            "--htpasswd without TLS: passwords travel in clear, readable by anyone on the network \
             path; serve HTTPS with --tls-cert and --tls-key"
        ),
        "{log}"
    );
}

#[test]
fn many_parallel_clients_get_whole_images_while_memory_stays_flat() {
    // About 12 MB compressed each: a few copies are more than all the memory the server may use.
    let Some(two) = TwoRegistries::bundle(24_000_000) else {
        return;
    };
    let (k8s, quay, work) = (&two.k8s, &two.quay, &two.work);
    let served = two.serve(&["--max-transfers", "4"]);
    let clients = 8;
    let rounds = 2;
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let addr = served.addr.clone();
            let dir = work.path().to_path_buf();
            std::thread::spawn(move || {
                (0..rounds)
                    .flat_map(|round| [("registry.k8s.io", round), ("quay.io", round)])
                    .map(|(registry, round)| {
                        let out = dir.join(format!("client-{client}-{registry}-{round}"));
                        let copied = skopeo(&[
                            "copy",
                            "--src-tls-verify=false",
                            &format!("docker://{addr}/{registry}/sig-storage/tool:v1"),
                            &format!("dir:{}", out.display()),
                        ]);
                        assert!(copied.status.success(), "{}", text(&copied));
                        let manifest = std::fs::read(out.join("manifest.json")).unwrap();
                        let size: u64 = std::fs::read_dir(&out)
                            .unwrap()
                            .map(|e| e.unwrap().metadata().unwrap().len())
                            .sum();
                        std::fs::remove_dir_all(&out).unwrap();
                        (registry, digest_of(&manifest), size)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut copied_bytes = 0;
    for thread in threads {
        for (registry, digest, size) in thread.join().unwrap() {
            let expected = if registry == "quay.io" { quay } else { k8s };
            assert_eq!(&digest, expected, "{registry}");
            copied_bytes += size;
        }
    }
    let peak = served.peak_rss_kib() << 10;
    let (status, log) = served.stop();
    assert!(status.success(), "{log}");
    eprintln!(
        "ferry serve: peak RSS {} MiB while {clients} clients copied {} MB",
        peak >> 20,
        copied_bytes / 1_000_000
    );
    assert!(copied_bytes > 300_000_000, "{copied_bytes}");
    assert!(
        peak < 64 << 20,
        "ferry serve peaked at {} MiB while sending {} MB",
        peak >> 20,
        copied_bytes / 1_000_000
    );
}

/// Issue 20, items 2 and 3: readers that stop reading (48 over HTTP/1 from one address; one HTTP/2
/// connection over TLS with 32 streams from another) and 100 HTTP/2 connections that send nothing, from
/// a third, hold only their address's share: containerd and skopeo pull as if they were not there, `/v2/`
/// answers at once, and after the stall and idle limits the server has closed them. (Before: the readers
/// took every slot and froze every request for as long as they stayed connected.)
#[test]
fn real_clients_pull_while_stalled_readers_and_idle_connections_hold_on() {
    let Some(two) = TwoRegistries::bundle(24_000_000) else {
        return;
    };
    let ca = two.certificates();
    let plain = two.serve_as("plain.log", &[]);
    let tls = two.serve_as(
        "tls.log",
        &[
            "--tls-cert",
            &two.file("server.pem"),
            "--tls-key",
            &two.file("server.key"),
        ],
    );
    let (layer, _) = two.layer(&plain);
    // containerd is ready before the hostile clients come.
    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    let hosts = two.work.path().join("certs.d");
    containerd_hosts(&two.bundle, &plain, &hosts);
    let started = Instant::now();
    let mut readers: Vec<Stream> = (0..48)
        .map(|_| {
            let mut reader = plain_from("127.0.0.2", &plain.addr);
            http1_get(&mut reader, &plain.addr, &layer, &[]);
            reader
        })
        .collect();
    let mut multiplexed = vec![tls_from("127.0.0.3", &tls.addr, &ca, b"h2").unwrap()];
    h2_start(&mut multiplexed[0]);
    for stream in 0..32 {
        h2_get(&mut multiplexed[0], 1 + 2 * stream, &tls.addr, &layer, &[]);
    }
    let mut idle = Vec::new();
    let mut turned_away = 0;
    for _ in 0..100 {
        match tls_from("127.0.0.4", &tls.addr, &ca, b"h2") {
            Ok(mut connection) => {
                h2_start(&mut connection);
                idle.push(connection);
            }
            Err(_) => turned_away += 1,
        }
    }
    assert_eq!(
        (idle.len(), turned_away),
        (64, 36),
        "one address holds at most 64 connections"
    );
    std::thread::sleep(Duration::from_secs(1));

    let pulled = ctr_pull(&containerd, &hosts, &TwoRegistries::IMAGES, STALL * 3);
    let copied = skopeo_copy(
        &["--src-cert-dir", &two.file("skopeo-certs")],
        &format!("docker://{}/quay.io/sig-storage/tool:v1", tls.addr),
        &two.work.path().join("copy"),
    );
    eprintln!(
        "while 48 HTTP/1 readers, 32 stalled HTTP/2 streams and 100 idle HTTP/2 connections held on: \
         containerd pulled 2 images ({} MB) in {:.1} s, skopeo copied one over TLS in {:.1} s",
        two_images_mb(&two),
        pulled.as_secs_f64(),
        copied.as_secs_f64()
    );
    assert!(
        started.elapsed() < STALL,
        "the pulls ended after the stall limit, when the readers could have been closed \
         (containerd {pulled:?}, skopeo {copied:?})"
    );
    let answered = |stream: Stream, addr: &str, path: &str| {
        exchange(stream, addr, path, &[], Duration::from_secs(5)).map(|(status, _, _)| status)
    };
    for path in ["/v2/", "/v2/sig-storage/tool/manifests/v1?ns=quay.io"] {
        assert_eq!(
            answered(plain_from("127.0.0.1", &plain.addr), &plain.addr, path),
            Some(200),
            "{path} over HTTP/1"
        );
        let over_tls = tls_from("127.0.0.1", &tls.addr, &ca, b"http/1.1").unwrap();
        assert_eq!(
            answered(over_tls, &tls.addr, path),
            Some(200),
            "{path} over TLS"
        );
    }

    // The limits have passed: stalled readers (those that got a body) and idle connections are closed.
    std::thread::sleep(
        (started + STALL + Duration::from_secs(16)).saturating_duration_since(Instant::now()),
    );
    let closed_readers = count_closed(&mut readers);
    assert!(
        closed_readers >= 8,
        "{closed_readers} of the 48 stalled HTTP/1 readers closed; their address's 8 slots were held"
    );
    assert_eq!(
        count_closed(&mut multiplexed),
        1,
        "the stalled HTTP/2 connection is closed"
    );
    assert_eq!(
        count_closed(&mut idle),
        64,
        "idle HTTP/2 connections are closed"
    );
    let (_, log) = plain.stop();
    assert!(
        log.contains("took nothing of a response for 30 s: connection closed"),
        "{log}"
    );
    let (_, log) = tls.stop();
    assert!(
        log.contains("127.0.0.3:") && log.contains(", 36 over the per-address bound"),
        "{log}"
    );
}

fn two_images_mb(two: &TwoRegistries) -> u64 {
    std::fs::metadata(&two.bundle).unwrap().len() / 1_000_000
}

/// Issue 20, item 2: readers from four addresses take every slot of `--max-transfers 4` and stop
/// reading. Manifests are still answered at once (they take no slot); containerd's blob requests wait
/// until the stall limit closes the readers, then complete. (Before: they waited for as long as the
/// readers stayed connected.)
#[test]
fn stalled_readers_on_every_slot_are_cut_at_the_stall_limit() {
    let Some(two) = TwoRegistries::bundle(24_000_000) else {
        return;
    };
    let served = two.serve(&["--max-transfers", "4"]);
    let (layer, _) = two.layer(&served);
    let mut readers: Vec<Stream> = (10..14)
        .map(|n| {
            let mut reader = plain_from(&format!("127.0.0.{n}"), &served.addr);
            http1_get(&mut reader, &served.addr, &layer, &[]);
            reader
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let manifest = exchange(
        plain_from("127.0.0.1", &served.addr),
        &served.addr,
        "/v2/sig-storage/tool/manifests/v1?ns=quay.io",
        &[],
        Duration::from_secs(5),
    );
    assert_eq!(
        manifest.map(|(status, _, _)| status),
        Some(200),
        "a manifest takes no slot"
    );
    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    let hosts = two.work.path().join("certs.d");
    containerd_hosts(&two.bundle, &served, &hosts);
    let pulled = ctr_pull(&containerd, &hosts, &TwoRegistries::IMAGES, STALL * 3);
    eprintln!(
        "with every slot held by a stalled reader, containerd pulled 2 images in {:.1} s",
        pulled.as_secs_f64()
    );
    assert!(
        pulled > STALL / 2,
        "the readers held the slots until the stall limit ({pulled:?})"
    );
    let closed = count_closed(&mut readers);
    let (_, log) = served.stop();
    assert_eq!(closed, 4, "{log}");
    assert_eq!(
        log.matches("took nothing of a response for 30 s: connection closed")
            .count(),
        4,
        "{log}"
    );
    assert!(log.contains("connections closed: 4 stalled"), "{log}");
}

/// Issue 20, item 4: 16 clients on one address guess passwords as fast as they can while skopeo copies
/// with the right one. After a few failures the address waits (429 with Retry-After, no bcrypt), so the
/// guesses checked stay a handful (before: 632 a second), and the copy is not held up.
#[test]
fn password_guesses_are_slowed_per_address_while_the_right_password_pulls() {
    let Some(two) = TwoRegistries::bundle(24_000_000) else {
        return;
    };
    let (work, ca, at) = (two.work.path(), two.certificates(), |name| two.file(name));
    // A cost that makes bcrypt take tens of milliseconds, as in production.
    let tls = two.tls_with_htpasswd("10");
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let served = two.serve(&tls);
    let image = format!("docker://{}/quay.io/sig-storage/tool:v1", served.addr);
    let cert_dir = at("skopeo-certs");
    let source = ["--src-cert-dir", &cert_dir, "--src-creds", "node:pa55-Word"];
    let alone = skopeo_copy(&source, &image, &work.join("alone"));

    let flooding = AtomicBool::new(true);
    let answers = Mutex::new(Vec::new());
    let flood_started = Instant::now();
    let under_flood = std::thread::scope(|scope| {
        for guesser in 0..16 {
            let (flooding, answers, served, ca) = (&flooding, &answers, &served, &ca);
            scope.spawn(move || {
                let mut guess = 0;
                while flooding.load(Ordering::Relaxed) {
                    guess += 1;
                    let Ok(stream) = tls_from("127.0.0.5", &served.addr, ca, b"http/1.1") else {
                        continue;
                    };
                    let password = format!("guess-{guesser}-{guess}");
                    let authorization = basic("node", &password);
                    if let Some(answer) = exchange(
                        stream,
                        &served.addr,
                        "/v2/",
                        &[("Authorization", &authorization)],
                        Duration::from_secs(30),
                    ) {
                        answers.lock().unwrap().push(answer);
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        let copied = skopeo_copy(&source, &image, &work.join("flooded"));
        std::thread::sleep(
            (flood_started + Duration::from_secs(12)).saturating_duration_since(Instant::now()),
        );
        flooding.store(false, Ordering::Relaxed);
        copied
    });
    let flood_time = flood_started.elapsed();
    let answers = answers.into_inner().unwrap();
    let checked = answers
        .iter()
        .filter(|(status, _, _)| *status == 401)
        .count();
    let waited: Vec<_> = answers
        .iter()
        .filter(|(status, _, _)| *status == 429)
        .collect();
    eprintln!(
        "skopeo copied in {:.1} s alone and {:.1} s under a flood of {} guesses in {:.1} s ({checked} checked, {} told to wait)",
        alone.as_secs_f64(),
        under_flood.as_secs_f64(),
        answers.len(),
        flood_time.as_secs_f64(),
        waited.len()
    );
    assert!(
        checked <= 24,
        "{checked} guesses were checked in {flood_time:?}: the address should have been made to wait"
    );
    let (_, head, body) = waited
        .first()
        .expect("the flooding address is told to wait");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    let refusal = error_code(body);
    assert!(
        refusal.starts_with("TOOMANYREQUESTS too many failed logins from 127.0.0.5: try again in ")
            && refusal.ends_with(" s"),
        "{refusal}"
    );
}

/// Issue 20, item 10: the bundle file is changed after start. What was served before is checked chunk by
/// chunk: a range inside the changed chunk sends nothing of it, a whole blob stops right before it, and
/// a blob first asked for after the change is refused. (Before: a range sent the altered bytes.)
#[test]
fn a_bundle_changed_after_start_never_sends_altered_bytes() {
    let Some(two) = TwoRegistries::bundle(8_000_000) else {
        return;
    };
    let served = two.serve(&[]);
    let (path, whole) = two.layer(&served);
    assert!(whole.len() > 4 * CHUNK, "{} bytes", whole.len());
    let bundle = std::fs::read(&two.bundle).unwrap();
    let offset_of = |bytes: &[u8]| {
        bundle
            .windows(4096)
            .position(|window| window == &bytes[..4096])
            .unwrap() as u64
    };
    let layer_at = offset_of(&whole);
    let (_, _, manifest) = served.get("/v2/sig-storage/tool/manifests/v1?ns=registry.k8s.io", &[]);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let other = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let other_path = format!("/v2/registry.k8s.io/sig-storage/tool/blobs/{other}");
    // The other layer, from the registry: the server is not asked for it before the change.
    let (_, _, other_bytes) = request(
        two.registry.addr(),
        "GET",
        &format!("/v2/k8s/sig-storage/tool/blobs/{other}"),
        &[],
        b"",
    );
    let other_at = offset_of(&other_bytes);

    // One byte of each layer's fourth chunk changes, in place: the server holds the same file open.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&two.bundle)
        .unwrap();
    for at in [layer_at, other_at] {
        let spot = at + 3 * CHUNK as u64 + 10;
        let mut byte = [0u8];
        std::fs::File::open(&two.bundle)
            .unwrap()
            .read_exact_at(&mut byte, spot)
            .unwrap();
        file.write_all_at(&[byte[0] ^ 0x55], spot).unwrap();
    }

    let get = |path: &str, range: Option<String>| {
        let headers: Vec<(&str, &str)> = range.iter().map(|r| ("Range", r.as_str())).collect();
        exchange(
            plain_from("127.0.0.1", &served.addr),
            &served.addr,
            path,
            &headers,
            Duration::from_secs(10),
        )
        .unwrap()
    };
    let inside = (3 * CHUNK + 100, 3 * CHUNK + 1099);
    // The answer's head may or may not have left before the transfer is cut; no byte of the body has.
    let (status, _, body) = get(&path, Some(format!("bytes={}-{}", inside.0, inside.1)));
    assert!(status == 206 || status == 0, "{status}");
    assert!(
        body.is_empty(),
        "{} bytes of the changed chunk were sent",
        body.len()
    );
    // The whole blob stops before the changed chunk (what hyper had not yet written of the chunks before
    // it may be lost with the connection): only intact bytes.
    let (status, _, body) = get(&path, None);
    assert_eq!(status, 200);
    assert!(
        body.len() <= 3 * CHUNK && body == whole[..body.len()],
        "{} bytes, of which the first altered is at {:?}",
        body.len(),
        body.iter().zip(&whole).position(|(a, b)| a != b)
    );
    let (status, _, body) = get(&path, Some("bytes=1000-1999".into()));
    assert_eq!((status, &body[..]), (206, &whole[1000..2000]));
    let (status, _, body) = get(&other_path, Some("bytes=0-99".into()));
    assert_eq!(
        (status, error_code(&body)),
        (
            500,
            format!(
                "BLOB_UNKNOWN blob {other} changed in its bundle since it was verified: not served"
            )
        )
    );
    let (_, log) = served.stop();
    let cut = format!(
        "changed since it was verified (bytes {}..{}); transfer cut before them",
        3 * CHUNK,
        4 * CHUNK
    );
    assert!(log.contains(&cut), "{log}");
}
