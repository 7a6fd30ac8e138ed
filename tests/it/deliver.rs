//! The air-gapped side: `ferry push` into a TLS + basic-auth Distribution registry, read back with skopeo;
//! `ferry load` into real containerd, dockerd and podman.

use std::process::Command;

use crate::bundle::{expected_names, Csi480};
use crate::ferry::{command, ferry, run, Run};
use crate::services::{require, Containerd, Dockerd, Podman, Registry};

/// The manifest digest of `image` as an independent client (skopeo) reads it from the registry.
pub fn skopeo_digest(registry: &Registry, image: &str) -> String {
    let output = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .args(
            registry
                .skopeo_args("src")
                .iter()
                .map(|a| a.replace("--src-", "--")),
        )
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo inspect {image}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&output.stdout))
    )
}

/// `ferry load BUNDLE --runtime RUNTIME --address ADDRESS`, as a user at a node runs it.
pub fn load(bundle: &str, runtime: &str, address: &str) -> Run {
    ferry(&["load", bundle, "--runtime", runtime, "--address", address])
}

/// `ferry load BUNDLE --runtime podman` into the storage of `podman`.
pub fn load_into_podman(bundle: &str, podman: &Podman) -> Run {
    run(command()
        .args(["load", bundle, "--runtime", "podman"])
        .env("CONTAINERS_STORAGE_CONF", podman.storage_conf()))
}

/// `ferry push BUNDLE --to TO EXTRA...` into `private` (TLS and basic auth), trusting its CA and holding
/// its credentials.
pub fn push_into(private: &Registry, bundle: &str, to: &str, extra: &[&str]) -> Command {
    let mut command = command();
    command
        .args(["push", bundle, "--to", to, "--ca-cert"])
        .arg(private.ca_cert())
        .args(extra)
        .env("DOCKER_CONFIG", private.docker_config());
    command
}

#[test]
fn push_480_into_a_tls_auth_registry_keeps_upstream_digests() {
    let Some(csi) = Csi480::start() else { return };
    let Some(private) = require(Registry::tls_with_auth("ferry", "s3cret-Pa55")) else {
        return;
    };
    let cache = csi.work.path().join("cache");
    csi.bundle(cache.to_str().unwrap(), "csi.tar", &[])
        .success();
    let bundle = csi.work.path().join("csi.tar");
    let to = format!("{}/csi", private.addr());
    let values = csi.work.path().join("values.yaml");
    let push = || {
        push_into(
            &private,
            bundle.to_str().unwrap(),
            &to,
            &["--helm-values", values.to_str().unwrap()],
        )
    };
    let first = run(&mut push()).success();
    assert_eq!(first.stdout().lines().count(), 11, "{}", first.stdout());
    assert!(
        first.stderr().contains("mounted") && !first.stderr().contains("mounted 0,"),
        "shared layers are mounted: {}",
        first.stderr()
    );
    for (upstream, seeded) in &csi.seeded {
        let pushed = upstream.replace("registry.k8s.io", &to);
        assert_eq!(
            skopeo_digest(&private, &pushed),
            seeded.manifest_for("linux/amd64"),
            "{pushed} keeps its upstream digest"
        );
    }
    let listed = run(command().args(["inspect", bundle.to_str().unwrap(), "--json"]))
        .success()
        .json();
    for image in listed["images"].as_array().unwrap() {
        let name = image["name"].as_str().unwrap();
        if let Some(vendor) = name.strip_prefix("docker.io/library/") {
            assert_eq!(
                skopeo_digest(&private, &format!("{to}/{vendor}")),
                image["manifest"].as_str().unwrap()
            );
        }
    }
    let again = run(&mut push()).success();
    assert!(
        again.stderr().contains("uploaded 0 B in 0 blob(s)"),
        "the second push uploads nothing: {}",
        again.stderr()
    );
    for text in [
        first.stdout(),
        first.stderr(),
        again.stderr(),
        std::fs::read_to_string(&values).unwrap(),
    ] {
        assert!(
            !text.contains(private.password()),
            "the password never appears"
        );
    }
    let values = std::fs::read_to_string(&values).unwrap();
    assert!(values.contains("images:\n"), "{values}");
    assert!(
        values.contains(&format!(
            "  \"huaweiCSIService\": \"{to}/huawei-csi:4.8.0\""
        )),
        "{values}"
    );
    assert!(
        values.contains(&format!(
            "    \"attacher\": \"{to}/sig-storage/csi-attacher:v4.4.0\""
        )),
        "{values}"
    );

    let anonymous = run(push().env("DOCKER_CONFIG", csi.work.path())).fails_with(1);
    assert!(
        anonymous.stderr().contains(private.addr()),
        "{}",
        anonymous.stderr()
    );
}

#[test]
fn push_refuses_a_damaged_bundle_and_dry_run_prints_the_mapping() {
    let Some(csi) = Csi480::start() else { return };
    let cache = csi.work.path().join("cache");
    csi.bundle(cache.to_str().unwrap(), "csi.tar", &[])
        .success();
    let bundle = csi.work.path().join("csi.tar");
    let dry = run(command().args([
        "push",
        bundle.to_str().unwrap(),
        "--to",
        "10.0.0.5:5000/csi",
        "--dry-run",
    ]))
    .success();
    assert!(
        dry.stdout().contains("registry.k8s.io/sig-storage/csi-provisioner:v3.6.0 -> 10.0.0.5:5000/csi/sig-storage/csi-provisioner:v3.6.0"),
        "{}",
        dry.stdout()
    );
    assert!(
        dry.stdout()
            .contains("docker.io/library/huawei-csi:4.8.0 -> 10.0.0.5:5000/csi/huawei-csi:4.8.0"),
        "{}",
        dry.stdout()
    );
    // --json prints JSON, and --helm-values writes the file a dry run promises.
    let values = csi.work.path().join("values.yaml");
    let json = run(command().args([
        "push",
        bundle.to_str().unwrap(),
        "--to",
        "10.0.0.5:5000/csi",
        "--dry-run",
        "--json",
        "--helm-values",
        values.to_str().unwrap(),
    ]))
    .success()
    .json();
    assert_eq!(json["dry_run"], true);
    let images = json["images"].as_array().unwrap();
    assert_eq!(images.len(), 11, "{json}");
    assert!(
        images
            .iter()
            .any(|i| i["source"] == "docker.io/library/huawei-csi:4.8.0"
                && i["target"] == "10.0.0.5:5000/csi/huawei-csi:4.8.0"),
        "{json}"
    );
    let values = std::fs::read_to_string(&values).unwrap();
    assert!(
        values.contains("10.0.0.5:5000/csi/sig-storage/csi-provisioner:v3.6.0"),
        "{values}"
    );
    let mut bytes = std::fs::read(&bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&bundle, bytes).unwrap();
    let refused = run(command().args([
        "push",
        bundle.to_str().unwrap(),
        "--to",
        "10.0.0.5:5000/csi",
    ]))
    .fails_with(1);
    assert!(refused.stderr().contains("damaged"), "{}", refused.stderr());
}

#[test]
fn load_into_containerd_docker_and_podman() {
    let Some(csi) = Csi480::start() else { return };
    let cache = csi.work.path().join("cache");
    csi.bundle(cache.to_str().unwrap(), "csi.tar", &["--split", "1M"])
        .success();
    let first_part = csi.work.path().join("csi.tar.part-000");
    let first_part = first_part.to_str().unwrap();

    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    let socket = containerd.socket().to_str().unwrap().to_string();
    let loaded = load(first_part, "containerd", &socket).success();
    assert_eq!(loaded.stdout().lines().count(), 11, "{}", loaded.stdout());
    assert_eq!(
        containerd.image_names(),
        expected_names(),
        "containerd's k8s.io namespace has every image"
    );
    for (upstream, seeded) in &csi.seeded {
        assert!(
            loaded.stdout().contains(&format!(
                "loaded {upstream}  {}",
                seeded.manifest_for("linux/amd64")
            )),
            "{}",
            loaded.stdout()
        );
    }

    let Some(dockerd) = require(Dockerd::start(&containerd)) else {
        return;
    };
    let docker_socket = dockerd.socket();
    load(first_part, "docker", &docker_socket).success();
    let images = dockerd.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(String::from_utf8_lossy(&images.stdout).lines().count(), 11);

    let Some(podman) = require(Podman::new()) else {
        return;
    };
    load_into_podman(first_part, &podman).success();
    assert_eq!(podman.image_names(), expected_names());

    // --address reaches a podman service: its storage gets the images, whatever this shell's podman uses.
    let Some(served) = require(Podman::new()) else {
        return;
    };
    let Some(service) = require(served.serve()) else {
        return;
    };
    load(first_part, "podman", service.socket.to_str().unwrap()).success();
    assert_eq!(served.image_names(), expected_names());
}

#[test]
fn load_without_a_runtime_says_what_to_do() {
    let Some(csi) = Csi480::start() else { return };
    csi.bundle(
        csi.work.path().join("cache").to_str().unwrap(),
        "csi.tar",
        &[],
    )
    .success();
    let bundle = csi.work.path().join("csi.tar");
    let failed = load(
        bundle.to_str().unwrap(),
        "containerd",
        "/nonexistent/containerd.sock",
    )
    .fails_with(1);
    assert!(
        failed
            .stderr()
            .contains("ctr --address /nonexistent/containerd.sock -n k8s.io images import"),
        "{}",
        failed.stderr()
    );
}

/// A loader that says a lot before it reads its input (as `ctr` does on a terminal, or any tool in a verbose
/// mood) must not deadlock against ferry writing the bundle to it.
#[test]
fn load_feeds_a_chatty_loader_without_deadlock() {
    use crate::seed::PLATFORMS;
    use crate::seeded::registry_with_livenessprobe;
    let Some((registry, _)) = registry_with_livenessprobe(&PLATFORMS[..1], 400_000) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("b.tar");
    let cache = work.path().join("cache");
    run(&mut crate::output::bundle(
        registry.addr(),
        &cache,
        bundle.as_os_str(),
        &[],
    ))
    .success();
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let ctr = bin.join("ctr");
    std::fs::write(
        &ctr,
        "#!/bin/sh\nhead -c 1000000 /dev/zero | tr '\\0' x >&2\ncat > /dev/null\necho imported\n",
    )
    .unwrap();
    std::fs::set_permissions(&ctr, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = command()
        .args([
            "load",
            bundle.to_str().unwrap(),
            "--runtime",
            "containerd",
            "--address",
            "/nonexistent.sock",
        ])
        .env("PATH", path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("ferry load is stuck feeding a loader that writes before it reads");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(child.wait().unwrap().success());
}

/// What a forgery swapped in after verify needs: the genuine bundle (signed, and pinned by a lock), and a
/// bundle of the same image name with other content.
struct Forgery {
    work: tempfile::TempDir,
    _registry: Registry,
    genuine: std::path::PathBuf,
    forged: std::path::PathBuf,
}

impl Forgery {
    fn make() -> Option<Forgery> {
        use crate::seed::{push_image, Format};
        let registry = require(Registry::plain())?;
        let work = tempfile::tempdir().unwrap();
        let key = work.path().join("builder");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "builder", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success(), "ssh-keygen");
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        std::fs::write(
            work.path().join("allowed_signers"),
            format!("builder namespaces=\"ferry\" {public}"),
        )
        .unwrap();
        let mirror = format!("registry.k8s.io={}", registry.addr());
        let bundle = |name: &str, extra: &[&str]| {
            let path = work.path().join(name);
            run(command()
                .args([
                    "bundle",
                    "--image",
                    "registry.k8s.io/app/server:1",
                    "--mirror",
                ])
                .arg(&mirror)
                .arg("--cache-dir")
                .arg(work.path().join("cache"))
                .arg("-o")
                .arg(&path)
                .arg("-q")
                .args(extra))
            .success();
            path
        };
        let seed = |size| {
            push_image(
                registry.addr(),
                "app/server",
                "1",
                Format::DockerSingle,
                &["linux/amd64"],
                size,
            )
        };
        seed(400_000);
        let genuine = bundle(
            "genuine.tar",
            &[
                "--sign",
                key.to_str().unwrap(),
                "--lock",
                work.path().join("lock").to_str().unwrap(),
            ],
        );
        // The same name, pushed again with other layers: what the attacker's file holds.
        seed(400_016);
        let forged = bundle("forged.tar", &[]);
        Some(Forgery {
            work,
            _registry: registry,
            genuine,
            forged,
        })
    }

    fn arg(&self, name: &str) -> String {
        self.work.path().join(name).display().to_string()
    }

    /// Every digest the forged bundle has and the genuine one lacks: what must never reach a runtime.
    fn forged_blobs(&self) -> Vec<String> {
        let genuine = blob_entries(&std::fs::read(&self.genuine).unwrap());
        blob_entries(&std::fs::read(&self.forged).unwrap())
            .into_iter()
            .filter(|(name, ..)| !genuine.iter().any(|(n, ..)| n == name))
            .map(|(name, ..)| name.replace("blobs/sha256/", "sha256:"))
            .collect()
    }

    /// `ferry load` of the genuine bundle with `args`, which finds the forgery in its place once verify
    /// and the trust checks have passed; and the error ferry must give, the feed to `tool` being cut at
    /// the first blob that now reads differently.
    fn load_swapped(&self, args: &[&str], env: &[(&str, &str)], tool: &str) -> (Run, String) {
        let genuine = std::fs::read(&self.genuine).unwrap();
        let bundle = self.genuine.display().to_string();
        let mut load = command();
        load.args(["load", &bundle])
            .args(args)
            .envs(env.iter().copied());
        let run = held_at_first_stderr_line(load, || {
            let swap = self.work.path().join("swap.tmp");
            std::fs::copy(&self.forged, &swap).unwrap();
            std::fs::rename(&swap, &self.genuine).unwrap();
        });
        std::fs::write(&self.genuine, &genuine).unwrap();
        let forged = std::fs::read(&self.forged).unwrap();
        let mut blobs = blob_entries(&genuine);
        blobs.sort_by_key(|&(_, offset, _)| offset);
        let (name, offset, size) = blobs
            .into_iter()
            .find(|(name, offset, size)| {
                forged
                    .get(*offset as usize..(offset + size) as usize)
                    .is_none_or(|bytes| {
                        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
                            != name["blobs/sha256/".len()..]
                    })
            })
            .expect("the forgery differs in some blob");
        let now = forged
            .get(offset as usize..(offset + size) as usize)
            .expect("the forgery is no shorter");
        let expected = format!(
            "error: {bundle} no longer reads as it did when verified: {name} (at byte {offset} of {bundle}) now \
             hashes to sha256:{}; the feed to {tool} was cut inside that entry, before any index or manifest, and \
             {tool} refused it: nothing was loaded. Verify the bundle again, and load it from local disk if it is \
             on a shared folder or a removable device",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(now))
        );
        (run, expected)
    }
}

/// Each blob entry of a bundle: its name, where its data starts, and its size.
fn blob_entries(tar: &[u8]) -> Vec<(String, u64, u64)> {
    crate::verify::tar_entries(tar)
        .into_iter()
        .filter(|(name, ..)| name.starts_with("blobs/"))
        .map(|(name, _, data, size)| (name, data, size))
        .collect()
}

/// Runs `ferry` with its stderr a pipe filled to capacity beforehand, so that it stops at its first line
/// there, runs `meanwhile`, then lets it go on. `load` writes that line (the trust verdicts) once verify
/// and the trust checks are done, and before it feeds the loader: the moment a file on a shared folder
/// or a device can change under it.
fn held_at_first_stderr_line(mut ferry: Command, meanwhile: impl FnOnce()) -> Run {
    use std::io::{Read, Write};
    #[cfg(target_arch = "x86_64")]
    const WRITE_TO_STDERR: &str = "1 0x2 ";
    #[cfg(target_arch = "aarch64")]
    const WRITE_TO_STDERR: &str = "64 0x2 ";
    let (mut reader, mut writer) = std::io::pipe().unwrap();
    let capacity = rustix::pipe::fcntl_getpipe_size(&writer).unwrap();
    writer.write_all(&vec![b'.'; capacity]).unwrap();
    let mut child = ferry
        .stdout(std::process::Stdio::piped())
        .stderr(writer)
        .spawn()
        .unwrap();
    drop(ferry);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let syscall = format!("/proc/{}/syscall", child.id());
    while !std::fs::read_to_string(&syscall).is_ok_and(|s| s.starts_with(WRITE_TO_STDERR)) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ferry ended before it wrote to stderr"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "ferry never wrote to stderr"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    meanwhile();
    let draining = std::thread::spawn(move || {
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        all.split_off(capacity)
    });
    let mut output = child.wait_with_output().unwrap();
    output.stderr = draining.join().unwrap();
    Run { output }
}

/// A bundle replaced after `--trust` and `--lock` passed (a shared folder, a device that answers a second
/// read differently) loads nothing into containerd, docker or podman: the feed is made from what verify
/// proved, each blob checked again on its way, and cut inside the first that reads differently, before
/// any index or manifest.
#[test]
fn a_bundle_swapped_after_verify_loads_nothing() {
    let Some(forgery) = Forgery::make() else {
        return;
    };
    let forged_blobs = forgery.forged_blobs();
    assert!(!forged_blobs.is_empty());
    let trust = forgery.arg("allowed_signers");
    let lock = forgery.arg("lock");
    // The trust verdict, the runtime ferry was told to use, then the refusal.
    let check = |(run, expected): (Run, String), verdict: &str, told: &str| {
        let run = run.fails_with(1);
        assert_eq!(
            run.stderr(),
            format!("{verdict}\nruntime: {told}\n{expected}\n")
        );
        assert_eq!(run.stdout(), "");
    };

    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    let socket = containerd.socket().to_str().unwrap().to_string();
    let signed = format!(
        "signature: good, signed by builder (ssh-ed25519 {})",
        String::from_utf8_lossy(
            &Command::new("ssh-keygen")
                .args(["-l", "-E", "sha256", "-f", &forgery.arg("builder.pub")])
                .output()
                .unwrap()
                .stdout
        )
        .split_whitespace()
        .nth(1)
        .unwrap()
    );
    check(
        forgery.load_swapped(
            &[
                "--trust",
                &trust,
                "--runtime",
                "containerd",
                "--address",
                &socket,
            ],
            &[],
            "ctr",
        ),
        &signed,
        &format!("containerd (--runtime containerd --address {socket})"),
    );
    let images = containerd.ctr(&["images", "ls", "-q"]);
    assert_eq!(String::from_utf8_lossy(&images.stdout), "", "no image");
    let content =
        String::from_utf8_lossy(&containerd.ctr(&["content", "ls", "-q"]).stdout).into_owned();
    for forged in &forged_blobs {
        assert!(
            !content.contains(forged.as_str()),
            "{forged} reached containerd: {content}"
        );
    }

    let Some(dockerd) = require(Dockerd::start(&containerd)) else {
        return;
    };
    check(
        forgery.load_swapped(
            &[
                "--lock",
                &lock,
                "--runtime",
                "docker",
                "--address",
                &dockerd.socket(),
            ],
            &[],
            "docker",
        ),
        &format!("lock: every image matches {lock} (1 images)"),
        &format!("docker (--runtime docker --address {})", dockerd.socket()),
    );
    let images = dockerd.docker(&["images", "-aq"]);
    assert_eq!(String::from_utf8_lossy(&images.stdout), "", "no image");

    let Some(podman) = require(Podman::new()) else {
        return;
    };
    // podman copies its input into a file under TMPDIR first; a cut feed must not leave it there.
    let tmp = forgery.work.path().join("podman-tmp");
    std::fs::create_dir(&tmp).unwrap();
    check(
        forgery.load_swapped(
            &["--trust", &trust, "--runtime", "podman"],
            &[
                (
                    "CONTAINERS_STORAGE_CONF",
                    podman.storage_conf().to_str().unwrap(),
                ),
                ("TMPDIR", tmp.to_str().unwrap()),
            ],
            "podman",
        ),
        &signed,
        "podman (--runtime podman)",
    );
    let images = podman.podman(&["images", "-aq"]);
    assert_eq!(String::from_utf8_lossy(&images.stdout), "", "no image");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "podman left its copy"
    );

    // The bundle as verified loads as ever.
    run(command()
        .args(["load", forgery.genuine.to_str().unwrap(), "--trust", &trust])
        .args(["--runtime", "containerd", "--address", &socket]))
    .success();
}

/// A layer that changes after verify (a device answering a second read differently) is not pushed: its
/// upload stops before its last chunk, whatever the registry would make of it.
#[test]
fn a_layer_changed_after_verify_is_not_pushed() {
    let Some(forgery) = Forgery::make() else {
        return;
    };
    let Some(private) = require(Registry::plain()) else {
        return;
    };
    let bundle = forgery.genuine.display().to_string();
    let genuine = std::fs::read(&forgery.genuine).unwrap();
    let (layer, offset, size) = blob_entries(&genuine)
        .into_iter()
        .max_by_key(|&(_, _, size)| size)
        .unwrap();
    let lock = forgery.arg("lock");
    let mut push = command();
    push.args(["push", &bundle, "-q", "--lock", &lock, "--to"])
        .arg(format!("{}/private", private.addr()));
    let pushed = held_at_first_stderr_line(push, || {
        let mut changed = genuine.clone();
        changed[offset as usize + size as usize / 2] ^= 1;
        // In place, as a device would: the open file reads the new bytes.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&forgery.genuine)
            .and_then(|mut file| std::io::Write::write_all(&mut file, &changed))
            .unwrap();
    })
    .fails_with(1);
    let changed = std::fs::read(&forgery.genuine).unwrap();
    let now = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        &changed[offset as usize..(offset + size) as usize],
    ));
    assert_eq!(
        pushed.stderr(),
        format!(
            "lock: every image matches {lock} (1 images)\nerror: {bundle} no longer reads as it did when \
             verified: {layer} (at byte {offset} of {bundle}) now hashes to sha256:{now}; its upload to \
             {}/private/app/server:1 was stopped before its last chunk, so the registry does not have it. \
             Verify the bundle again, and push it from local disk if it is on a shared folder or a removable \
             device\n",
            private.addr()
        )
    );
    let blob = layer.replace("blobs/sha256/", "sha256:");
    let path = format!("/v2/private/app/server/blobs/{blob}");
    let (status, _, _) = crate::seed::http(private.addr(), "HEAD", &path, "", &[]);
    assert_eq!(status, 404, "the registry has no such blob");
}
