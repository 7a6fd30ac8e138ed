//! `ferry pull` against a real registry (CNCF Distribution), through injected faults, with TLS and auth.

use std::path::Path;
use std::process::Command;

use crate::faults::{fast_retries, Fault, FaultProxy, Rule};
use crate::ferry::{command, ferry, run, Run};
use crate::seed::{push_image, seed_csi_480, Format, Seeded, PLATFORMS};
use crate::seeded::registry_with_image;
use crate::services::{require, Registry};

/// Uncompressed bytes per test image: small enough to be fast, large enough for several TCP reads.
pub const TEST_IMAGE_SIZE: usize = 400_000;

pub fn blob_files(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache.join("ferry-v1/blobs/sha256")).map_or(Vec::new(), |d| {
        d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    })
}

fn partial_files(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("ferry-v1/partial")).map_or(0, |d| d.count())
}

/// `ferry pull --image IMAGE --cache-dir CACHE EXTRA...`, run as `command` is set up.
pub fn pull_image(command: &mut Command, image: &str, cache: &Path, extra: &[&str]) -> Run {
    run(command
        .args(["pull", "--image", image, "--cache-dir"])
        .arg(cache)
        .args(extra))
}

/// `ferry pull huawei-csi@4.8.0 --k8s 1.28 --skip-vendor` from `mirror`, with [`fast_retries`].
fn pull_480_command(mirror: &str, cache: &Path, extra: &[&str]) -> Command {
    let mut command = command();
    fast_retries(&mut command)
        .args(["pull", "huawei-csi@4.8.0", "--k8s", "1.28", "--skip-vendor"])
        .arg("--mirror")
        .arg(format!("registry.k8s.io={mirror}"))
        .arg("--cache-dir")
        .arg(cache)
        .args(extra);
    command
}

fn pull_480(mirror: &str, cache: &Path, extra: &[&str]) -> Run {
    run(&mut pull_480_command(mirror, cache, extra))
}

/// A plain registry holding `repository:tag` as a Docker manifest list for linux/amd64 and linux/arm64.
fn registry_with_two_platforms(
    repository: &str,
    tag: &str,
    size: usize,
) -> Option<(Registry, Seeded)> {
    registry_with_image(repository, tag, Format::DockerList, &PLATFORMS[..2], size)
}

/// A plain registry holding csi-attacher v4.4.0 as an OCI index of every platform.
fn registry_with_attacher() -> Option<(Registry, Seeded)> {
    registry_with_image(
        "sig-storage/csi-attacher",
        "v4.4.0",
        Format::OciIndex,
        &PLATFORMS,
        100_000,
    )
}

/// `ferry pull --image IMAGE --mirror registry.k8s.io=MIRROR --cache-dir CACHE EXTRA...`.
fn pull_mirrored(
    command: &mut Command,
    image: &str,
    mirror: &str,
    cache: &Path,
    extra: &[&str],
) -> Run {
    let mirror = format!("registry.k8s.io={mirror}");
    pull_image(
        command,
        image,
        cache,
        &[&["--mirror", &mirror], extra].concat(),
    )
}

/// Panics unless ferry printed the linux/amd64 manifest of `seeded`: the platform pulled when none is
/// asked for.
fn assert_printed_amd64(pulled: &Run, seeded: &Seeded) {
    assert!(
        pulled.stdout().contains(seeded.manifest_for("linux/amd64")),
        "{}",
        pulled.stdout()
    );
}

fn printed_digests(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, digest) = (words.next()?, words.next()?);
            digest
                .starts_with("sha256:")
                .then(|| (name.to_string(), digest.to_string()))
        })
        .collect()
}

#[test]
fn pull_survives_503s_cuts_and_429_then_a_warm_cache_downloads_nothing() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    let seeded = seed_csi_480(registry.addr(), TEST_IMAGE_SIZE);
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![
            Rule::new("/blobs/", Fault::Status { status: 503 }, 3),
            Rule::new("/manifests/", Fault::Status { status: 503 }, 1),
            Rule::new(
                "/blobs/",
                Fault::TooManyRequests {
                    retry_after_secs: 1,
                },
                1,
            ),
            Rule::new(
                "/blobs/",
                Fault::CutBody {
                    after_bytes: 50_000,
                },
                2,
            ),
        ],
    );
    let cache = tempfile::tempdir().unwrap();
    let first = pull_480(proxy.addr(), cache.path(), &["--jobs", "4"]).success();

    let printed = printed_digests(&first.stdout());
    assert_eq!(printed.len(), 7, "{}", first.stdout());
    assert_eq!(
        first.stdout().matches("skipped (--skip-vendor)").count(),
        4,
        "{}",
        first.stdout()
    );
    for (upstream, image) in &seeded {
        let expected = image.manifest_for("linux/amd64");
        assert!(
            printed.contains(&(upstream.clone(), expected.to_string())),
            "{upstream} {expected} in {printed:?}"
        );
    }
    let seen = proxy.seen();
    assert!(
        seen.iter().any(|s| s.status == 503) && seen.iter().any(|s| s.status == 429),
        "faults fired: {seen:?}"
    );
    let resumed: Vec<_> = seen
        .iter()
        .filter(|s| {
            s.range
                .as_deref()
                .is_some_and(|r| r.starts_with("bytes=") && !r.starts_with("bytes=0-"))
        })
        .collect();
    assert!(
        !resumed.is_empty(),
        "a cut download resumes with a Range request: {seen:?}"
    );
    assert!(
        first.stderr().contains("retry"),
        "retries are reported: {}",
        first.stderr()
    );
    assert_eq!(partial_files(cache.path()), 0);

    let blobs_before = blob_files(cache.path());
    let again = pull_480(proxy.addr(), cache.path(), &[]).success();
    assert!(
        again.stderr().contains("nothing downloaded"),
        "{}",
        again.stderr()
    );
    assert_eq!(printed_digests(&again.stdout()), printed);
    let blob_gets_second_run = proxy.seen().len() - seen.len();
    assert!(
        proxy.seen()[seen.len()..]
            .iter()
            .all(|s| !s.path.contains("/blobs/")),
        "the warm run fetched no blob ({blob_gets_second_run} requests, all manifests)"
    );
    assert_eq!(blob_files(cache.path()), blobs_before);
}

#[test]
fn a_corrupted_blob_fails_naming_its_digest_and_is_never_cached() {
    let Some((registry, seeded)) = registry_with_image(
        "sig-storage/livenessprobe",
        "v2.12.0",
        Format::DockerList,
        &PLATFORMS,
        TEST_IMAGE_SIZE,
    ) else {
        return;
    };
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Rule::new(
            "/blobs/",
            Fault::FlipByte { offset: 1000 },
            usize::MAX,
        )],
    );
    let cache = tempfile::tempdir().unwrap();
    let run = pull_mirrored(
        fast_retries(&mut command()),
        "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
        proxy.addr(),
        cache.path(),
        &["-q"],
    )
    .fails_with(1);
    // Every layer is corrupted; each is named, none is cached, no partial is kept to resume from.
    let stderr = run.stderr();
    let mut lines = stderr.lines();
    assert_eq!(lines.next(), Some("error: 2 fetches failed:"), "{stderr}");
    for line in lines {
        let named = line
            .strip_prefix("  cannot fetch blob sha256:")
            .unwrap_or_else(|| panic!("{stderr}"))[..64]
            .to_string();
        let expected = format!(
            "  cannot fetch blob sha256:{named} of registry.k8s.io/sig-storage/livenessprobe:v2.12.0 from {}, \
             after 6 attempts: blob sha256:{named} does not match its digest: received ",
            proxy.addr()
        );
        assert!(line.starts_with(&expected), "{stderr}");
        assert!(
            !blob_files(cache.path()).contains(&named),
            "the corrupted blob is not in the cache"
        );
    }
    assert_eq!(
        partial_files(cache.path()),
        0,
        "no corrupted partial kept to resume from"
    );
    assert!(
        seeded.manifests.len() == PLATFORMS.len(),
        "the image was seeded for every platform"
    );
}

#[test]
fn platform_selection_and_missing_platforms() {
    let Some((registry, listed)) = registry_with_attacher() else {
        return;
    };
    let single = push_image(
        registry.addr(),
        "k8scsi/csi-attacher",
        "v1.2.1",
        Format::DockerSingle,
        &["linux/amd64"],
        100_000,
    );
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().to_str().unwrap();
    let k8s = format!("registry.k8s.io={}", registry.addr());
    let quay = format!("quay.io={}", registry.addr());
    let pull = |image: &str, platform: &str| {
        ferry(&[
            "pull",
            "--image",
            image,
            "--platform",
            platform,
            "--mirror",
            &k8s,
            "--mirror",
            &quay,
            "--cache-dir",
            cache,
            "-q",
        ])
    };
    for platform in ["linux/arm64", "linux/s390x", "linux/amd64"] {
        let out = pull("registry.k8s.io/sig-storage/csi-attacher:v4.4.0", platform)
            .success()
            .stdout();
        assert!(
            out.contains(listed.manifest_for(platform)),
            "{platform}: {out}"
        );
    }
    let missing = pull(
        "registry.k8s.io/sig-storage/csi-attacher:v4.4.0",
        "linux/arm/v7",
    )
    .fails_with(1)
    .stderr();
    assert!(missing.contains("no manifest for platform linux/arm/v7; it has: linux/amd64, linux/arm64, linux/ppc64le, linux/s390x"), "{missing}");
    let out = pull("quay.io/k8scsi/csi-attacher:v1.2.1", "linux/amd64")
        .success()
        .stdout();
    assert!(out.contains(&single.top_digest), "{out}");
    let wrong = pull("quay.io/k8scsi/csi-attacher:v1.2.1", "linux/arm64")
        .fails_with(1)
        .stderr();
    assert_eq!(
        wrong.lines().last(),
        Some("error: quay.io/k8scsi/csi-attacher:v1.2.1 is linux/amd64 only, but linux/arm64 was asked for"),
        "{wrong}"
    );
}

#[test]
fn digest_pinned_references_are_checked() {
    let Some((registry, seeded)) =
        registry_with_two_platforms("sig-storage/csi-resizer", "v1.9.0", 100_000)
    else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let pinned = format!(
        "registry.k8s.io/sig-storage/csi-resizer:v1.9.0@{}",
        seeded.top_digest
    );
    let ok = pull_mirrored(
        &mut command(),
        &pinned,
        registry.addr(),
        cache.path(),
        &["-q"],
    )
    .success();
    assert_printed_amd64(&ok, &seeded);
    let wrong = format!(
        "registry.k8s.io/sig-storage/csi-resizer:v1.9.0@sha256:{}",
        "0".repeat(64)
    );
    let run = pull_mirrored(
        &mut command(),
        &wrong,
        registry.addr(),
        cache.path(),
        &["-q"],
    )
    .fails_with(1);
    assert!(
        run.stderr().starts_with(&format!(
            "error: cannot fetch the manifest of {wrong} from "
        )),
        "{}",
        run.stderr()
    );
    // A registry that answers a pinned request with other bytes is caught by the pin itself.
    let lying = FaultProxy::start(
        registry.addr(),
        vec![Rule::new(
            "/manifests/sha256:",
            Fault::FlipByte { offset: 10 },
            usize::MAX,
        )],
    );
    let lied = pull_mirrored(
        fast_retries(&mut command()),
        &pinned,
        lying.addr(),
        tempfile::tempdir().unwrap().path(),
        &["-q"],
    )
    .fails_with(1)
    .stderr();
    let (first, causes) = lied.split_once('\n').unwrap_or((&lied, ""));
    assert!(
        first.starts_with(&format!(
            "error: cannot fetch the manifest of {pinned} from "
        )),
        "{lied}"
    );
    assert!(
        causes.contains(&seeded.top_digest) && causes.contains("digest"),
        "the cause names the pinned digest it does not match: {lied}"
    );
}

#[test]
fn frozen_k8s_gcr_io_is_fetched_from_registry_k8s_io_and_said() {
    let Some((registry, seeded)) =
        registry_with_two_platforms("sig-storage/livenessprobe", "v2.5.0", 100_000)
    else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let run = pull_mirrored(
        &mut command(),
        "k8s.gcr.io/sig-storage/livenessprobe:v2.5.0",
        registry.addr(),
        cache.path(),
        &[],
    )
    .success();
    assert!(
        run.stdout()
            .starts_with("k8s.gcr.io/sig-storage/livenessprobe:v2.5.0  "),
        "keeps its upstream name: {}",
        run.stdout()
    );
    assert_printed_amd64(&run, &seeded);
    assert!(
        run.stderr().contains("k8s.gcr.io is frozen"),
        "{}",
        run.stderr()
    );
}

#[test]
fn tls_registry_with_docker_config_credentials_and_ca_cert() {
    let Some((_plain, private, image, seeded)) = private_registry_with_image() else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let ca = private.ca_cert().to_str().unwrap().to_string();
    let anonymous = pull_image(
        command().env("DOCKER_CONFIG", cache.path().join("none")),
        &image,
        cache.path(),
        &["--ca-cert", &ca],
    )
    .fails_with(1);
    assert!(
        anonymous.stderr().to_lowercase().contains("auth"),
        "{}",
        anonymous.stderr()
    );

    let authed = pull_image(
        command().env("DOCKER_CONFIG", private.docker_config()),
        &image,
        cache.path(),
        &["--ca-cert", &ca],
    )
    .success();
    assert_printed_amd64(&authed, &seeded);
    for text in [authed.stdout(), authed.stderr(), anonymous.stderr()] {
        assert!(
            !text.contains(private.password()),
            "the password never appears"
        );
    }

    let untrusted = pull_image(
        command().env("DOCKER_CONFIG", private.docker_config()),
        &image,
        cache.path(),
        &[],
    )
    .fails_with(1);
    assert!(
        untrusted.stderr().contains(private.addr()),
        "names the registry: {}",
        untrusted.stderr()
    );
}

#[test]
fn two_processes_share_one_cache_safely() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    seed_csi_480(registry.addr(), TEST_IMAGE_SIZE);
    let cache = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            pull_480_command(registry.addr(), cache.path(), &["-q"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert!(outputs.iter().all(|o| o.status.success()), "{outputs:?}");
    assert_eq!(outputs[0].stdout, outputs[1].stdout);
    let warm = pull_480(registry.addr(), cache.path(), &[]).success();
    assert!(
        warm.stderr().contains("nothing downloaded"),
        "a complete, valid cache: {}",
        warm.stderr()
    );
}

#[test]
fn vendor_images_need_a_source() {
    let run = ferry(&["pull", "huawei-csi@4.8.0", "--k8s", "1.28"]).fails_with(2);
    let stderr = run.stderr();
    for name in [
        "storage-backend-controller:4.8.0",
        "storage-backend-sidecar:4.8.0",
        "huawei-csi:4.8.0",
        "huawei-csi-extender:4.8.0",
    ] {
        assert!(stderr.contains(name), "{stderr}");
    }
    assert!(
        stderr.contains("--vendor-dir")
            && stderr.contains("--vendor-registry")
            && stderr.contains("--skip-vendor"),
        "{stderr}"
    );
}

/// A TLS + htpasswd registry holding one multi-platform image, copied there with skopeo (an independent
/// client) keeping its digests; returns (the plain source registry, the private one, the image, its digests).
fn private_registry_with_image() -> Option<(Registry, Registry, String, Seeded)> {
    let plain = require(Registry::plain())?;
    let private = require(Registry::tls_with_auth("ferry", "s3cret-Pa55"))?;
    let seeded = push_image(
        plain.addr(),
        "csi/livenessprobe",
        "v2.12.0",
        Format::DockerList,
        &PLATFORMS[..2],
        80_000,
    );
    let copy = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
        ])
        .args(private.skopeo_args("dest"))
        .arg(format!(
            "docker://{}/csi/livenessprobe:v2.12.0",
            plain.addr()
        ))
        .arg(format!(
            "docker://{}/csi/livenessprobe:v2.12.0",
            private.addr()
        ))
        .output()
        .expect("skopeo runs");
    assert!(
        copy.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let image = format!("{}/csi/livenessprobe:v2.12.0", private.addr());
    Some((plain, private, image, seeded))
}

/// A certs.d directory ferry is given for one test. Dropping it removes every directory it had to create
/// (`/etc/docker/certs.d` itself on a machine without docker), even when the test fails.
struct CertsDir {
    path: std::path::PathBuf,
    created: Option<std::path::PathBuf>,
}

impl CertsDir {
    fn create(path: std::path::PathBuf) -> std::io::Result<CertsDir> {
        let created = path
            .ancestors()
            .take_while(|dir| !dir.exists())
            .last()
            .map(Path::to_path_buf);
        let dir = CertsDir { path, created };
        std::fs::create_dir_all(&dir.path)?;
        Ok(dir)
    }
}

impl Drop for CertsDir {
    fn drop(&mut self) {
        if let Some(created) = &self.created {
            let _ = std::fs::remove_dir_all(created);
        }
    }
}

#[test]
fn certs_d_ca_files_are_trusted_like_dockers_and_podmans() {
    let Some((_plain, private, image, seeded)) = private_registry_with_image() else {
        return;
    };
    for base in ["/etc/docker/certs.d", "/etc/containers/certs.d"] {
        let cache = tempfile::tempdir().unwrap();
        let pull = || {
            pull_image(
                command().env("DOCKER_CONFIG", private.docker_config()),
                &image,
                cache.path(),
                &["-q"],
            )
        };
        let untrusted = pull().fails_with(1);
        assert!(
            untrusted.stderr().contains(private.addr()),
            "{}",
            untrusted.stderr()
        );
        let dir = CertsDir::create(Path::new(base).join(private.addr()))
            .map_err(|e| format!("cannot write {base} (run as root): {e}"));
        let Some(dir) = require(dir) else {
            return;
        };
        std::fs::copy(private.ca_cert(), dir.path.join("ca.crt")).unwrap();
        let trusted = pull().success();
        assert!(
            trusted
                .stdout()
                .contains(seeded.manifest_for("linux/amd64")),
            "{base}: {}",
            trusted.stdout()
        );
        drop(dir);
        assert!(
            !Path::new(base).join(private.addr()).exists(),
            "{base} was left behind"
        );
    }
}

#[test]
fn credentials_from_podman_auth_json_and_from_a_credential_helper() {
    let Some((_plain, private, image, seeded)) = private_registry_with_image() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let ca = private.ca_cert().to_str().unwrap().to_string();
    let cache = work.path().join("cache");
    let args = ["--ca-cert", &ca, "-q"];
    let empty_docker_config = work.path().join("no-docker-config");

    let auth_json = private.docker_config().join("config.json");
    let podman = pull_image(
        command()
            .env("REGISTRY_AUTH_FILE", &auth_json)
            .env("DOCKER_CONFIG", &empty_docker_config),
        &image,
        &cache,
        &args,
    )
    .success();
    assert_printed_amd64(&podman, &seeded);

    // A credential helper on PATH, answering as docker-credential-* helpers do.
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-ferrytest");
    std::fs::write(&helper, format!("#!/bin/sh\nread host\necho '{{\"ServerURL\":\"'$host'\",\"Username\":\"ferry\",\"Secret\":\"{}\"}}'\n", private.password())).unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = work.path().join("helper-config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.json"),
        format!(
            "{{\"credHelpers\": {{\"{}\": \"ferrytest\"}}}}",
            private.addr()
        ),
    )
    .unwrap();
    std::fs::remove_dir_all(&cache).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let helped = pull_image(
        command().env("DOCKER_CONFIG", &config).env("PATH", path),
        &image,
        &cache,
        &args,
    )
    .success();
    assert_printed_amd64(&helped, &seeded);
    for text in [podman.stderr(), helped.stderr(), helped.stdout()] {
        assert!(!text.contains(private.password()));
    }
}

#[test]
fn vendor_images_from_a_vendor_registry() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    seed_csi_480(registry.addr(), 100_000);
    let vendor = tempfile::tempdir().unwrap();
    crate::seed::vendor_dir_480(vendor.path(), 100_000);
    for name_tag in crate::seed::VENDOR_480 {
        let tarball = vendor
            .path()
            .join(format!("{}.tar", name_tag.replace(':', "-")));
        let copy = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("docker-archive:{}", tarball.display()))
            .arg(format!("docker://{}/huawei/{name_tag}", registry.addr()))
            .output()
            .expect("skopeo runs");
        assert!(
            copy.status.success(),
            "{}",
            String::from_utf8_lossy(&copy.stderr)
        );
    }
    let cache = tempfile::tempdir().unwrap();
    let mirror = format!("registry.k8s.io={}", registry.addr());
    let vendor_registry = format!("{}/huawei", registry.addr());
    let run = ferry(&[
        "pull",
        "huawei-csi@4.8.0",
        "--k8s",
        "1.28",
        "--mirror",
        &mirror,
        "--vendor-registry",
        &vendor_registry,
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "-q",
    ])
    .success();
    let printed = printed_digests(&run.stdout());
    assert_eq!(printed.len(), 11, "{}", run.stdout());
    assert!(
        printed
            .iter()
            .any(|(name, _)| name == "docker.io/library/huawei-csi:4.8.0"),
        "upstream names kept: {printed:?}"
    );
}

#[test]
fn http_proxy_from_the_environment_is_used() {
    let Some((registry, seeded)) = registry_with_image(
        "sig-storage/csi-resizer",
        "v1.9.0",
        Format::DockerList,
        &PLATFORMS[..1],
        50_000,
    ) else {
        return;
    };
    // The proxy forwards absolute-form requests to the registry, which accepts them: a forward proxy.
    let proxy = FaultProxy::start(registry.addr(), Vec::new());
    let cache = tempfile::tempdir().unwrap();
    let image = format!("{}/sig-storage/csi-resizer:v1.9.0", registry.addr());
    let run = pull_image(
        command()
            .env("HTTP_PROXY", format!("http://{}", proxy.addr()))
            .env("http_proxy", format!("http://{}", proxy.addr()))
            .env_remove("NO_PROXY")
            .env_remove("no_proxy"),
        &image,
        cache.path(),
        &["--insecure-registry", registry.addr(), "-q"],
    )
    .success();
    assert_printed_amd64(&run, &seeded);
    assert!(
        proxy.seen().iter().any(|s| s.path.contains("/blobs/")),
        "requests went through the proxy: {:?}",
        proxy.seen()
    );
}

/// A `--mirror` key that matches no image, and no registry any catalog uses, is most likely a typo that
/// would send the fetch upstream.
#[test]
fn a_mirror_that_matches_no_image_is_warned_about() {
    let Some((registry, _)) = registry_with_image(
        "sig-storage/livenessprobe",
        "v2.12.0",
        Format::DockerSingle,
        &["linux/amd64"],
        50_000,
    ) else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    // A site's standing mirrors for registries the catalogs use (quay.io, k8s.gcr.io) are no typos,
    // even when these images need none of them; only the misspelt one is warned about.
    let run = ferry(&[
        "pull",
        "--image",
        "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
        "--mirror",
        &format!("registry.k8s.io={}", registry.addr()),
        "--mirror",
        "quay.io=127.0.0.1:9/quay",
        "--mirror",
        "k8s.gcr.io=127.0.0.1:9/k8s",
        "--mirror",
        "regisry.k8s.io=127.0.0.1:9/k8s",
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "-q",
    ])
    .success();
    assert_eq!(
        run.stderr(),
        "warning: --mirror regisry.k8s.io=127.0.0.1:9/k8s matches no image to fetch (they come from \
         registry.k8s.io); is 'regisry.k8s.io' misspelled?\n"
    );
}

/// A multi-platform image is resolved from one fetch of its index, however many platforms are asked
/// for: registries that count manifest GETs (Docker Hub's rate limit) count one per image, plus one per
/// platform's manifest the cache does not hold. A warm cache asks for the tag alone; a manifest changed
/// in the cache is fetched again, not believed.
#[test]
fn a_multi_platform_image_fetches_its_index_once_and_cached_manifests_not_again() {
    let Some((registry, listed)) = registry_with_attacher() else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let platforms = ["linux/amd64", "linux/arm64", "linux/s390x"];
    // The manifest paths one pull asks for, each pull through a proxy of its own.
    let manifest_gets = || {
        let proxy = FaultProxy::start(registry.addr(), Vec::new());
        let out = pull_mirrored(
            &mut command(),
            "registry.k8s.io/sig-storage/csi-attacher:v4.4.0",
            proxy.addr(),
            cache.path(),
            &["--platform", &platforms.join(","), "-q"],
        )
        .success()
        .stdout();
        for platform in platforms {
            assert!(
                out.contains(listed.manifest_for(platform)),
                "{platform}: {out}"
            );
        }
        let gets: Vec<String> = proxy
            .seen()
            .into_iter()
            .filter(|s| s.method == "GET" && s.path.contains("/manifests/"))
            .map(|s| s.path)
            .collect();
        gets
    };
    let by_tag = "/v2/sig-storage/csi-attacher/manifests/v4.4.0".to_string();
    let cold = manifest_gets();
    assert_eq!(cold[0], by_tag, "{cold:?}");
    assert_eq!(cold.len(), 1 + 3, "{cold:?}");

    assert_eq!(manifest_gets(), std::slice::from_ref(&by_tag));

    let arm64 = listed.manifest_for("linux/arm64");
    let stored = cache
        .path()
        .join("ferry-v1/blobs/sha256")
        .join(arm64.trim_start_matches("sha256:"));
    let mut changed = std::fs::read(&stored).unwrap();
    *changed.last_mut().unwrap() = b' ';
    std::fs::write(&stored, changed).unwrap();
    assert_eq!(
        manifest_gets(),
        [
            by_tag.clone(),
            format!("/v2/sig-storage/csi-attacher/manifests/{arm64}")
        ]
    );
    assert_eq!(manifest_gets(), [by_tag], "the damaged copy was replaced");
}

/// `ferry pull -q --image IMAGE` into an empty cache, which must fail (exit 1) at once: in less time than
/// the pauses between attempts would take.
fn pull_fails_at_once(command: &mut Command, image: &str) -> Run {
    let cache = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let failed = pull_image(command, image, cache.path(), &["-q"]).fails_with(1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "not retried: {:?}\n{}",
        started.elapsed(),
        failed.stderr()
    );
    failed
}

/// Pulls an image from `private` (a TLS registry) with `command`, which must fail at once, its whole
/// message the refusal of the registry's certificate for `cause`, the two ways to trust a CA named.
fn assert_certificate_refused(private: &Registry, command: &mut Command, cause: &str) {
    let image = format!("{}/csi/livenessprobe:v2.12.0", private.addr());
    let refused = pull_fails_at_once(
        command.env("DOCKER_CONFIG", private.docker_config()),
        &image,
    );
    let addr = private.addr();
    assert_eq!(
        refused.stderr(),
        format!(
            "error: cannot fetch the manifest of {image} from {addr}\n  caused by: {addr} presented a TLS \
             certificate that ferry does not accept ({cause}); if it comes from a private CA, give that CA \
             with --ca-cert FILE, or put it in /etc/docker/certs.d/{addr}/ca.crt or \
             /etc/containers/certs.d/{addr}/ca.crt\n"
        )
    );
}

/// A TLS registry whose CA this machine does not trust: one attempt, no plain-HTTP fallback (which made
/// it "answer HTTP 400"), and the two ways to trust it named.
#[test]
fn an_untrusted_certificate_is_final_and_names_the_ways_to_trust_it() {
    let Some(private) = require(Registry::tls_with_auth("ferry", "s3cret-Pa55")) else {
        return;
    };
    assert_certificate_refused(
        &private,
        &mut command(),
        "invalid peer certificate: UnknownIssuer",
    );
}

/// A machine without CA certificates (a minimal image; here SSL_CERT_FILE and SSL_CERT_DIR name nothing)
/// pulls from a plain-HTTP loopback registry, which needs none; a TLS registry is refused at once, naming
/// why and the way out.
#[test]
fn without_ca_certificates_plain_http_pulls_and_tls_is_refused_at_once() {
    let Some((plain, _)) = registry_with_attacher() else {
        return;
    };
    let Some(private) = require(Registry::tls_with_auth("ferry", "s3cret-Pa55")) else {
        return;
    };
    let no_roots = || {
        let mut command = command();
        command
            .env("SSL_CERT_FILE", "/nonexistent/ca.pem")
            .env("SSL_CERT_DIR", "/nonexistent");
        command
    };
    let cache = tempfile::tempdir().unwrap();
    pull_mirrored(
        &mut no_roots(),
        "registry.k8s.io/sig-storage/csi-attacher:v4.4.0",
        plain.addr(),
        cache.path(),
        &["-q"],
    )
    .success();
    assert_certificate_refused(
        &private,
        &mut no_roots(),
        "there are no CA certificates to check it against: unexpected error: No CA certificates were \
         loaded from the system",
    );
}

/// A registry name that no resolver knows does not become known in the next 14 s of retries.
#[test]
fn a_host_name_that_does_not_resolve_is_not_retried() {
    let failed = pull_fails_at_once(&mut command(), "registry.invalid/csi/livenessprobe:v2.12.0");
    assert_eq!(
        failed.stderr(),
        "error: cannot fetch the manifest of registry.invalid/csi/livenessprobe:v2.12.0 from \
         registry.invalid\n  caused by: the host name registry.invalid does not resolve (failed to lookup \
         address information: Name or service not known); check its spelling in the image reference or \
         --mirror, and this machine's DNS\n"
    );
}

/// A registry host no URL can hold is bad input, refused when the reference is parsed.
#[test]
fn a_reference_whose_registry_is_no_host_is_refused_at_parse_time() {
    let refused = ferry(&["pull", "--image", "ba$d.io/a:1"]).fails_with(2);
    assert_eq!(
        refused.stderr(),
        "error: invalid value 'ba$d.io/a:1' for '--image <REF>': invalid image reference 'ba$d.io/a:1': \
         the registry must be HOST[:PORT]: a DNS name (letters, digits and inner '-', joined by '.') or an \
         [IPv6] address, then an optional port\n\nFor more information, try '--help'.\n"
    );
}

/// containerd refuses a manifest whose `Docker-Content-Digest` names another digest than its bytes have;
/// so does ferry, naming both.
#[test]
fn a_manifest_whose_digest_header_names_another_digest_is_refused() {
    let Some((registry, seeded)) =
        registry_with_two_platforms("sig-storage/livenessprobe", "v2.12.0", 50_000)
    else {
        return;
    };
    let other = seeded.manifest_for("linux/arm64").to_string();
    let lying = FaultProxy::start(
        registry.addr(),
        vec![Rule::new(
            "/manifests/v2.12.0",
            Fault::ReplaceHeader {
                name: "Docker-Content-Digest",
                value: other.clone(),
            },
            usize::MAX,
        )],
    );
    let cache = tempfile::tempdir().unwrap();
    let image = "registry.k8s.io/sig-storage/livenessprobe:v2.12.0";
    let refused = pull_mirrored(
        fast_retries(&mut command()),
        image,
        lying.addr(),
        cache.path(),
        &["-q"],
    )
    .fails_with(1);
    assert_eq!(
        refused.stderr(),
        format!(
            "error: cannot fetch the manifest of {image} from {}, after 6 attempts\n  caused by: the \
             registry sent a manifest whose digest is {}, but its Docker-Content-Digest header says {other}: \
             refused, as containerd refuses it\n",
            lying.addr(),
            seeded.top_digest
        )
    );
    assert!(blob_files(cache.path()).is_empty());
}

/// A blob answer that declares fewer bytes than the manifest says is a cut download, not a verdict: its
/// bytes are kept and the rest is asked for with a Range request.
#[test]
fn a_blob_declared_shorter_than_its_manifest_says_is_completed_with_a_range_request() {
    let Some((registry, seeded)) = registry_with_image(
        "sig-storage/csi-resizer",
        "v1.9.0",
        Format::DockerSingle,
        &["linux/amd64"],
        TEST_IMAGE_SIZE,
    ) else {
        return;
    };
    // 10 000 bytes short: more than a config has, so the first layer is the one cut.
    let short = FaultProxy::start(
        registry.addr(),
        vec![Rule::new("/blobs/", Fault::ShortLength { by: 10_000 }, 1)],
    );
    let cache = tempfile::tempdir().unwrap();
    let image = "registry.k8s.io/sig-storage/csi-resizer:v1.9.0";
    let pulled = pull_mirrored(
        fast_retries(&mut command()),
        image,
        short.addr(),
        cache.path(),
        &[],
    )
    .success();
    assert_eq!(pulled.stdout(), format!("{image}  {}\n", seeded.top_digest));
    let stderr = pulled.stderr();
    let retry = stderr
        .lines()
        .find(|line| line.starts_with("retry "))
        .unwrap_or_else(|| panic!("the short answer is retried: {stderr}"));
    let (digest, rest) = retry
        .strip_prefix("retry 1 for blob ")
        .and_then(|r| r.split_once(&format!(" of {image}: the answer ended after ")))
        .unwrap_or_else(|| panic!("{retry}"));
    let (received, expected) = rest
        .strip_suffix(" bytes")
        .and_then(|r| r.split_once(" of "))
        .map(|(r, e)| (r.parse::<u64>().unwrap(), e.parse::<u64>().unwrap()))
        .unwrap_or_else(|| panic!("{retry}"));
    assert_eq!(expected - received, 10_000, "{retry}");
    let seen = short.seen();
    assert!(
        seen.iter().any(|s| s.path.ends_with(digest)
            && s.range.as_deref() == Some(&format!("bytes={received}-"))
            && s.status == 206),
        "the rest was asked for with a Range request: {seen:?}"
    );
    assert!(blob_files(cache.path()).contains(&digest["sha256:".len()..].to_string()));
}
