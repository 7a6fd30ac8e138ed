//! Trust on arrival: a bundle rewritten consistently by whoever holds the stick passes `verify`, and must
//! be refused by `--trust` (signature) and by `--lock`, each on its own; ssh-keygen and sha256sum agree
//! with ferry on every signature.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use std::time::Duration;

use crate::ferry::{command, ferry, mkfifo, run, run_within, Run};
use crate::seed::{layer_tar, push_image, vendor_tarball, Format, PLATFORMS};
use crate::services::{require, Containerd, Registry};

const SIZE: usize = 60_000;
const CATALOG: &str = r#"
catalog = "trust-test"
release = "1.0.0"
title = "Two registry images and one of the vendor's"
min_kubernetes = "1.20"

[[services]]
name = "controller"
short = "controller"

[[images]]
container = "resizer"
image = "registry.k8s.io/sig-storage/csi-resizer:v1.9.0"
kubernetes = "v1.20+"
kubernetes_range = { min = "1.20" }
services = ["controller"]
source = "registry"

[[images]]
container = "liveness-probe"
image = "registry.k8s.io/sig-storage/livenessprobe:v2.12.0"
kubernetes = "v1.20+"
kubernetes_range = { min = "1.20" }
services = ["controller"]
source = "registry"

[[images]]
container = "huawei-csi-driver"
image = "huawei-csi:4.8.0"
kubernetes = "v1.20+"
kubernetes_range = { min = "1.20" }
services = ["controller"]
source = "vendor"
"#;
const RESIZER: &str = "registry.k8s.io/sig-storage/csi-resizer:v1.9.0";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A mirror with the release's registry images, the vendor's tarball, keys and an allowed_signers file.
struct Site {
    registry: Registry,
    work: tempfile::TempDir,
    /// The vendor image's config digest (docker's image ID).
    vendor_config: String,
}

impl Site {
    fn start() -> Option<Site> {
        let registry = require(Registry::plain())?;
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(work.path().join("vendor")).unwrap();
        let vendor_config = vendor_tarball(
            &work.path().join("vendor/huawei-csi-4.8.0.tar"),
            "huawei-csi:4.8.0",
            SIZE,
        );
        let site = Site {
            registry,
            work,
            vendor_config,
        };
        site.push_resizer(SIZE);
        push_image(
            site.registry.addr(),
            "sig-storage/livenessprobe",
            "v2.12.0",
            Format::OciIndex,
            &PLATFORMS[..2],
            SIZE,
        );
        std::fs::write(site.path("catalog.toml"), CATALOG).unwrap();
        site.keygen("builder", "ed25519", "");
        site.keygen("intruder", "ed25519", "");
        let allowed = format!(
            "# who may sign bundles\nbuild@example.com namespaces=\"ferry\" {}",
            std::fs::read_to_string(site.path("builder.pub")).unwrap()
        );
        std::fs::write(site.path("allowed_signers"), allowed).unwrap();
        Some(site)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// (Re)tags csi-resizer: another size is other content, so other digests.
    fn push_resizer(&self, size: usize) -> String {
        push_image(
            self.registry.addr(),
            "sig-storage/csi-resizer",
            "v1.9.0",
            Format::DockerList,
            &PLATFORMS[..2],
            size,
        )
        .manifest_for("linux/amd64")
        .to_string()
    }

    fn keygen(&self, name: &str, kind: &str, passphrase: &str) {
        keygen(&self.path(name), kind, passphrase);
    }

    /// `SHA256:…` of a key, as ssh-keygen prints it.
    fn fingerprint(&self, key: &str) -> String {
        fingerprint(&self.path(&format!("{key}.pub")))
    }

    fn bundle_command(&self, output: &str, extra: &[&str]) -> Command {
        let mut command = command();
        command
            .args(["bundle", "trust-test@1.0.0", "--k8s", "1.28", "-q"])
            .args(["--catalog-file", &self.arg("catalog.toml")])
            .args([
                "--mirror",
                &format!("registry.k8s.io={}", self.registry.addr()),
            ])
            .args(["--vendor-dir", &self.arg("vendor")])
            .args(["--cache-dir", &self.arg("cache")])
            .args(["-o", &self.arg(output)])
            .args(extra);
        command
    }

    fn bundle(&self, output: &str, extra: &[&str]) -> Run {
        run(&mut self.bundle_command(output, extra))
    }

    fn verify(&self, bundle: &str, extra: &[&str]) -> Run {
        let mut args = vec!["verify".to_string(), self.arg(bundle)];
        args.extend(extra.iter().map(|s| s.to_string()));
        ferry(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// What an admin without ferry runs: ssh-keygen for the signature, sha256sum for the bundle.
    fn by_hand(&self, bundle: &str) -> bool {
        let signature = self.ssh_keygen_verifies(bundle, "allowed_signers");
        let sums = Command::new("sha256sum")
            .args(["-c", &format!("{bundle}.sha256")])
            .current_dir(self.work.path())
            .output()
            .unwrap();
        signature && sums.status.success()
    }

    /// `ssh-keygen -Y verify` of the bundle's signature against the `allowed` file, as the README shows.
    fn ssh_keygen_verifies(&self, bundle: &str, allowed: &str) -> bool {
        let checksum = std::fs::File::open(self.path(&format!("{bundle}.sha256"))).unwrap();
        Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f", &self.arg(allowed)])
            .args(["-I", "build@example.com", "-n", "ferry", "-s"])
            .arg(self.path(&format!("{bundle}.sig")))
            .stdin(checksum)
            .output()
            .unwrap()
            .status
            .success()
    }
}

/// `ssh-keygen -t KIND` writes the key pair `path` and `path.pub`.
fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let name = path.file_name().unwrap().to_str().unwrap();
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-C", name, "-N", passphrase, "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen {name}");
}

/// `SHA256:…` of a public key, as ssh-keygen prints it.
fn fingerprint(public: &Path) -> String {
    let listed = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(public)
        .output()
        .unwrap();
    String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// How a forger changes an image.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Forgery {
    /// One more layer, and the config's diff_ids extended to name it: caught only by a signature or a lock.
    ExtraLayer,
    /// The last layer replaced, the config left alone: caught by `--deep`, and so by a lock.
    SwappedLayer,
}

/// Rewrites a bundle the way someone holding the stick can: `image` changed as `forgery` says, and every
/// document that names it (its config, its manifest, index.json, manifest.json, ferry.json, the index's
/// pins) and the `.sha256` rewritten to agree. Plain `ferry verify` calls the result intact.
fn forge(bundle: &Path, image: &str, forgery: Forgery) {
    let mut archive = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    let mut entries: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut order = Vec::new();
    let mut mtime = 0;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        mtime = entry.header().mtime().unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        order.push(name.clone());
        entries.insert(name, bytes);
    }
    let document = |entries: &BTreeMap<String, Vec<u8>>, name: &str| -> Value {
        serde_json::from_slice(&entries[name]).unwrap()
    };
    let blob = |digest: &str| format!("blobs/sha256/{}", &digest[7..]);
    let pretty = |value: &Value| {
        let mut bytes = serde_json::to_vec_pretty(value).unwrap();
        bytes.push(b'\n');
        bytes
    };
    let mut index = document(&entries, "index.json");
    let position = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .position(|d| d["annotations"]["io.containerd.image.name"] == image)
        .unwrap();
    let old_manifest = index["manifests"][position]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest = document(&entries, &blob(&old_manifest));
    let old_config = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config = document(&entries, &blob(&old_config));

    let payload = layer_tar("a payload nobody built", 4096);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&payload).unwrap();
    let layer = gz.finish().unwrap();
    let layers = manifest["layers"].as_array_mut().unwrap();
    let added =
        json!({"mediaType": layers[0]["mediaType"], "digest": sha256(&layer), "size": layer.len()});
    let mut dropped = vec![old_manifest.clone()];
    let config_bytes = if forgery == Forgery::ExtraLayer {
        layers.push(added);
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(json!(sha256(&payload)));
        dropped.push(old_config);
        serde_json::to_vec(&config).unwrap()
    } else {
        let last = layers.pop().unwrap();
        dropped.push(last["digest"].as_str().unwrap().to_string());
        layers.push(added);
        entries[&blob(&old_config)].clone()
    };
    manifest["config"]["digest"] = json!(sha256(&config_bytes));
    manifest["config"]["size"] = json!(config_bytes.len());
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let new_manifest = sha256(&manifest_bytes);
    let size: u64 = manifest_bytes.len() as u64
        + config_bytes.len() as u64
        + manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum::<u64>();

    index["manifests"][position]["digest"] = json!(new_manifest);
    index["manifests"][position]["size"] = json!(manifest_bytes.len());
    let mut docker = document(&entries, "manifest.json");
    let entry = &mut docker[position];
    entry["Config"] = json!(blob(&sha256(&config_bytes)));
    let listed_layers = entry["Layers"].as_array_mut().unwrap();
    if forgery == Forgery::SwappedLayer {
        listed_layers.pop();
    }
    listed_layers.push(json!(blob(&sha256(&layer))));
    let mut metadata = document(&entries, "ferry.json");
    let listed = &mut metadata["images"][position];
    listed["manifest"]["digest"] = json!(new_manifest);
    listed["manifest"]["size"] = json!(manifest_bytes.len());
    listed["config"] = json!(sha256(&config_bytes));
    listed["layers"] = json!(manifest["layers"].as_array().unwrap().len());
    listed["size"] = json!(size);

    for old in &dropped {
        entries.remove(&blob(old));
    }
    for bytes in [layer, config_bytes, manifest_bytes] {
        entries.insert(blob(&sha256(&bytes)), bytes);
    }
    let metadata = pretty(&metadata);
    let docker = pretty(&docker);
    index["annotations"]["io.github.ferry.metadata.digest"] = json!(sha256(&metadata));
    index["annotations"]["io.github.ferry.docker-manifest.digest"] = json!(sha256(&docker));
    entries.insert("ferry.json".into(), metadata);
    entries.insert("manifest.json".into(), docker);
    entries.insert("index.json".into(), pretty(&index));

    let documents: Vec<String> = order
        .into_iter()
        .filter(|n| !n.starts_with("blobs/"))
        .collect();
    let blobs: Vec<String> = entries
        .keys()
        .filter(|n| n.starts_with("blobs/"))
        .cloned()
        .collect();
    let mut builder = tar::Builder::new(Vec::new());
    for name in documents.iter().chain(&blobs) {
        let bytes = &entries[name];
        // The headers ferry's own writer gives every entry: only the signature tells the forgery apart.
        ::ferry::tarball::append(
            &mut builder,
            name,
            bytes.len() as u64,
            &mut bytes.as_slice(),
            mtime,
        )
        .unwrap();
    }
    let forged = builder.into_inner().unwrap();
    std::fs::write(bundle, &forged).unwrap();
    let name = bundle.file_name().unwrap().to_str().unwrap();
    std::fs::write(
        format!("{}.sha256", bundle.display()),
        format!("{}  {name}\n", &sha256(&forged)[7..]),
    )
    .unwrap();
}

/// `ssh-keygen -Y sign` over the bundle's `.sha256`, as someone with `key` can; the result replaces `.sig`.
fn sign_by_hand(site: &Site, bundle: &str, key: &str) {
    let checksum = site.path(&format!("{bundle}.sha256"));
    let status = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "ferry", "-f", &site.arg(key)])
        .arg(&checksum)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen -Y sign");
    std::fs::rename(
        format!("{}.sig", checksum.display()),
        site.path(&format!("{bundle}.sig")),
    )
    .unwrap();
}

fn copy_bundle(site: &Site, from: &str, to: &str) {
    for suffix in ["", ".sha256", ".sig"] {
        std::fs::copy(
            site.path(&format!("{from}{suffix}")),
            site.path(&format!("{to}{suffix}")),
        )
        .unwrap();
    }
    // The .sha256 names the file it checks.
    let sums = std::fs::read_to_string(site.path(&format!("{to}.sha256"))).unwrap();
    std::fs::write(site.path(&format!("{to}.sha256")), sums.replace(from, to)).unwrap();
}

#[test]
fn a_consistent_forgery_of_a_signed_bundle_is_refused_and_ssh_keygen_agrees() {
    let Some(site) = Site::start() else { return };
    let built = site
        .bundle("good.tar", &["--sign", &site.arg("builder")])
        .success();
    let fingerprint = site.fingerprint("builder");
    assert!(
        built.stdout().contains(&format!(
            "  signed: {} ({fingerprint})",
            site.arg("good.tar.sig")
        )),
        "{}",
        built.stdout()
    );
    let trust = ["--trust", &site.arg("allowed_signers")];

    let good = site.verify("good.tar", &trust).success();
    assert!(
        good.stdout().contains(&format!(
            "signature: good, signed by build@example.com (ssh-ed25519 {fingerprint})\n"
        )),
        "{}",
        good.stdout()
    );
    assert!(
        site.by_hand("good.tar"),
        "ssh-keygen accepts what ferry signed"
    );
    let json = site
        .verify(
            "good.tar",
            &["--json", "--trust", &site.arg("allowed_signers")],
        )
        .success()
        .json();
    assert_eq!(
        json["trust"]["signature"],
        json!({"status": "good", "signer": "build@example.com", "key": format!("ssh-ed25519 {fingerprint}")})
    );

    // Split: the whole-bundle .sha256 is signed, and the parts are read through it.
    site.bundle(
        "split.tar",
        &["--sign", &site.arg("builder"), "--split", "100K"],
    )
    .success();
    site.verify("split.tar.part-000", &trust).success();
    let mut whole = Vec::new();
    for part in ["split.tar.part-000", "split.tar.part-001"] {
        whole.extend(std::fs::read(site.path(part)).unwrap());
    }
    std::fs::write(site.path("split.tar"), whole).unwrap();
    assert!(
        site.by_hand("split.tar"),
        "ssh-keygen and sha256sum on the rejoined parts"
    );

    // Signed by ssh-keygen itself with the trusted key: ferry accepts it too.
    copy_bundle(&site, "good.tar", "by-hand.tar");
    sign_by_hand(&site, "by-hand.tar", "builder");
    site.verify("by-hand.tar", &trust).success();
    assert!(site.by_hand("by-hand.tar"));

    // A trusted signature over a checksum file that names nothing proves nothing about the bundle.
    copy_bundle(&site, "good.tar", "vacuous.tar");
    std::fs::write(site.path("vacuous.tar.sha256"), "").unwrap();
    sign_by_hand(&site, "vacuous.tar", "builder");
    let vacuous = site.verify("vacuous.tar", &trust).fails_with(1);
    assert!(
        vacuous.stdout().contains(&format!(
            "signature: REFUSED: {} does not match the bundle, so a signature proves nothing\n",
            site.arg("vacuous.tar.sha256")
        )),
        "{}",
        vacuous.stdout()
    );
    assert!(!site.by_hand("vacuous.tar"), "sha256sum -c refuses it too");

    copy_bundle(&site, "good.tar", "forged.tar");
    forge(&site.path("forged.tar"), RESIZER, Forgery::ExtraLayer);
    let plain = site.verify("forged.tar", &[]).success();
    assert!(
        plain.stdout().contains("intact: 3 images"),
        "the forgery is consistent: {}",
        plain.stdout()
    );
    let refused = site.verify("forged.tar", &trust).fails_with(1);
    let checksum = site.arg("forged.tar.sha256");
    let reason = format!(
        "{} does not match {checksum} (made by ssh-ed25519 {fingerprint}): the checksum file was changed after signing",
        site.arg("forged.tar.sig")
    );
    assert!(
        refused
            .stdout()
            .contains(&format!("signature: REFUSED: {reason}\n")),
        "{}",
        refused.stdout()
    );
    assert!(
        refused.stderr().contains(&format!(
            "error: {} is not trusted: signature: {reason}",
            site.arg("forged.tar")
        )),
        "{}",
        refused.stderr()
    );
    assert!(!site.by_hand("forged.tar"), "ssh-keygen refuses it too");

    sign_by_hand(&site, "forged.tar", "intruder");
    let resigned = site.verify("forged.tar", &trust).fails_with(1);
    let intruder = site.fingerprint("intruder");
    assert!(
        resigned.stdout().contains(&format!(
            "signature: REFUSED: made by ssh-ed25519 {intruder}, a key {} does not hold\n",
            site.arg("allowed_signers")
        )),
        "{}",
        resigned.stdout()
    );
    assert!(!site.by_hand("forged.tar"), "ssh-keygen refuses it too");

    // No signature at all.
    std::fs::remove_file(site.path("forged.tar.sig")).unwrap();
    let unsigned = site.verify("forged.tar", &trust).fails_with(1);
    assert!(
        unsigned.stdout().contains(&format!(
            "signature: REFUSED: cannot read {}",
            site.arg("forged.tar.sig")
        )),
        "{}",
        unsigned.stdout()
    );

    // push and load refuse what verify refuses, with --trust or the machine default FERRY_TRUST.
    sign_by_hand(&site, "forged.tar", "intruder");
    for (args, env) in [
        (vec!["push", "--to", "127.0.0.1:1/x", "--dry-run"], true),
        (vec!["push", "--to", "127.0.0.1:1/x", "--dry-run"], false),
        (vec!["load", "--runtime", "containerd"], false),
    ] {
        let mut command = command();
        command.args(&args).arg(site.path("forged.tar"));
        if env {
            command.env("FERRY_TRUST", site.path("allowed_signers"));
        } else {
            command.args(trust);
        }
        let refused = run(&mut command).fails_with(1);
        assert!(
            refused.stderr().contains(&format!(
                "error: {} is not trusted: signature: made by ssh-ed25519 {intruder}",
                site.arg("forged.tar")
            )) && refused.stdout().is_empty(),
            "{args:?}: {}{}",
            refused.stdout(),
            refused.stderr()
        );
    }
    let pushed = run(command()
        .args(["push", "--to", "127.0.0.1:1/x", "--dry-run"])
        .arg(site.path("good.tar"))
        .env("FERRY_TRUST", site.path("allowed_signers")))
    .success();
    assert!(
        pushed.stdout().contains(&format!(
            "{RESIZER} -> 127.0.0.1:1/x/sig-storage/csi-resizer:v1.9.0"
        )),
        "{}",
        pushed.stdout()
    );
    assert!(
        pushed
            .stderr()
            .contains("signature: good, signed by build@example.com"),
        "{}",
        pushed.stderr()
    );

    // Into a real containerd, under the machine default: the forgery is refused, the real bundle loads.
    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    let socket = containerd.socket().to_str().unwrap().to_string();
    run(command()
        .args(["load", "--runtime", "containerd", "--address", &socket])
        .arg(site.path("forged.tar"))
        .env("FERRY_TRUST", site.path("allowed_signers")))
    .fails_with(1);
    let listed = containerd.ctr(&["images", "ls", "-q"]);
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(RESIZER),
        "nothing of the forgery reached containerd"
    );
    let loaded = run(command()
        .args(["load", "--runtime", "containerd", "--address", &socket])
        .arg(site.path("good.tar"))
        .env("FERRY_TRUST", site.path("allowed_signers")))
    .success();
    assert!(
        loaded.stdout().contains(&format!("loaded {RESIZER}")),
        "{}",
        loaded.stdout()
    );
    let listed = containerd.ctr(&["images", "ls", "-q"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(RESIZER),
        "containerd has it"
    );
}

#[test]
fn a_lock_pins_every_image_at_build_and_on_arrival() {
    let Some(site) = Site::start() else { return };
    let lock = site.arg("ferry.lock");
    let first = site.bundle("good.tar", &["--lock", &lock]).success();
    assert!(
        first
            .stdout()
            .contains(&format!("lock: wrote {lock} (3 images)")),
        "{}",
        first.stdout()
    );
    let text = std::fs::read_to_string(&lock).unwrap();
    let vendor_sha = sha256(&std::fs::read(site.path("vendor/huawei-csi-4.8.0.tar")).unwrap());
    let listed = run(command().args(["inspect", &site.arg("good.tar"), "--json"]))
        .success()
        .json();
    let digest_of = |name: &str| {
        listed["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()["manifest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        text.contains(&format!(
            "[[image]]\nname = \"{RESIZER}\"\nplatform = \"linux/amd64\"\nsource = \"registry\"\nmanifest = \"{}\"\n",
            digest_of(RESIZER)
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "[[image]]\nname = \"docker.io/library/huawei-csi:4.8.0\"\nplatform = \"linux/amd64\"\nsource = \"vendor\"\nconfig = \"{}\"\ntarball = \"huawei-csi-4.8.0.tar\"\ntarball_sha256 = \"{vendor_sha}\"\n",
            site.vendor_config
        )),
        "{text}"
    );
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("name = "))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted, so it diffs well");

    // A rebuild that resolves the same digests passes and leaves the lock alone.
    let again = site.bundle("again.tar", &["--lock", &lock]).success();
    assert!(
        again
            .stdout()
            .contains(&format!("lock: every image matches {lock} (3 images)")),
        "{}",
        again.stdout()
    );
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), text);

    // The mirror's tag moves to other content: the build fails naming the image, and writes nothing.
    let old = digest_of(RESIZER);
    let moved = site.push_resizer(SIZE * 2);
    assert_ne!(moved, old);
    let failed = site.bundle("moved.tar", &["--lock", &lock]).fails_with(1);
    assert!(
        failed.stderr().contains(&format!(
            "error: 1 image(s) moved since lock {lock} was written; nothing was written (rebuild with --update-lock to accept the new digests):\n  {RESIZER} (linux/amd64): manifest {old} in the lock, manifest {moved} now\n"
        )),
        "{}",
        failed.stderr()
    );
    assert!(!site.path("moved.tar").exists() && !site.path("moved.tar.sha256").exists());
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), text);
    site.bundle("moved.tar", &["--lock", &lock, "--update-lock"])
        .success();
    assert!(std::fs::read_to_string(&lock)
        .unwrap()
        .contains(&format!("manifest = \"{moved}\"")));
    std::fs::write(&lock, &text).unwrap();
    // The cache now notes what the tag names, so the rebuild is written ahead while the registry is
    // asked; the lock still refuses it, and what was written ahead is gone with it.
    std::fs::remove_file(site.path("moved.tar")).unwrap();
    std::fs::remove_file(site.path("moved.tar.sha256")).unwrap();
    let refused = site.bundle("moved.tar", &["--lock", &lock]).fails_with(1);
    assert_eq!(refused.stderr(), failed.stderr());
    let left: Vec<_> = std::fs::read_dir(site.path("."))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("moved.tar"))
        .collect();
    assert!(left.is_empty(), "nothing written ahead is left: {left:?}");

    // On arrival: the real bundle passes, a consistent forgery is refused by verify, push and load.
    let good = site.verify("good.tar", &["--lock", &lock]).success();
    assert!(
        good.stdout()
            .contains(&format!("lock: every image matches {lock} (3 images)\n")),
        "{}",
        good.stdout()
    );
    std::fs::copy(site.path("good.tar"), site.path("forged.tar")).unwrap();
    forge(&site.path("forged.tar"), RESIZER, Forgery::ExtraLayer);
    site.verify("forged.tar", &[]).success();
    let refused = site.verify("forged.tar", &["--lock", &lock]).fails_with(1);
    let forged = run(command().args(["inspect", &site.arg("forged.tar"), "--json"]))
        .success()
        .json()["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == RESIZER)
        .unwrap()["manifest"]
        .as_str()
        .unwrap()
        .to_string();
    let problem =
        format!("{RESIZER} (linux/amd64): the lock pins manifest {old}, the bundle holds {forged}");
    assert!(
        refused
            .stdout()
            .contains(&format!("lock: REFUSED by {lock}:\n  {problem}\n")),
        "{}",
        refused.stdout()
    );
    for args in [
        vec!["push", "--to", "127.0.0.1:1/x", "--dry-run"],
        vec!["load", "--runtime", "docker"],
    ] {
        let refused = run(command()
            .args(&args)
            .arg(site.path("forged.tar"))
            .args(["--lock", &lock]))
        .fails_with(1);
        assert!(
            refused.stderr().contains(&format!(
                "error: {} is not trusted: lock {lock}: {problem}",
                site.arg("forged.tar")
            )),
            "{args:?}: {}",
            refused.stderr()
        );
    }

    // A vendor image is pinned by config: a layer swapped under the same config passes plain verify, and
    // the lock has its layers checked against the config's diff_ids.
    std::fs::copy(site.path("good.tar"), site.path("vendor-forged.tar")).unwrap();
    forge(
        &site.path("vendor-forged.tar"),
        "docker.io/library/huawei-csi:4.8.0",
        Forgery::SwappedLayer,
    );
    site.verify("vendor-forged.tar", &[]).success();
    let refused = site
        .verify("vendor-forged.tar", &["--lock", &lock])
        .fails_with(1);
    assert!(
        refused
            .stdout()
            .contains("does not decompress to the diff_id its config records")
            && refused.stderr().contains(&format!(
                "error: {} is damaged or incomplete",
                site.arg("vendor-forged.tar")
            )),
        "{}{}",
        refused.stdout(),
        refused.stderr()
    );

    // A lock from another build: its images must all be in the bundle.
    let other = site.path("other.lock");
    std::fs::write(
        &other,
        text.replace("sig-storage/livenessprobe", "sig-storage/other"),
    )
    .unwrap();
    let missing = site
        .verify("good.tar", &["--lock", other.to_str().unwrap()])
        .fails_with(1);
    assert!(
        missing.stdout().contains(
            "  registry.k8s.io/sig-storage/livenessprobe:v2.12.0 (linux/amd64): in the bundle, not in the lock\n"
        ) && missing.stdout().contains(
            "  registry.k8s.io/sig-storage/other:v2.12.0 (linux/amd64): in the lock, not in the bundle\n"
        ),
        "{}",
        missing.stdout()
    );
}

#[test]
fn an_encrypted_key_signs_with_its_passphrase_from_the_environment() {
    let Some(site) = Site::start() else { return };
    let passphrase = "correct horse battery staple";
    site.keygen("locked", "ed25519", passphrase);
    std::fs::write(
        site.path("allowed_signers"),
        format!(
            "build@example.com namespaces=\"ferry\" {}",
            std::fs::read_to_string(site.path("locked.pub")).unwrap()
        ),
    )
    .unwrap();
    let key = site.arg("locked");

    let no_passphrase = run(site
        .bundle_command("b.tar", &["--sign", &key])
        .stdin(Stdio::null()))
    .fails_with(2);
    assert!(
        no_passphrase.stderr().contains(&format!(
            "error: signing key {key}: it is encrypted: set FERRY_SIGN_PASSPHRASE, or run on a terminal"
        )),
        "{}",
        no_passphrase.stderr()
    );
    let wrong = run(site
        .bundle_command("b.tar", &["--sign", &key])
        .env("FERRY_SIGN_PASSPHRASE", "wrong"))
    .fails_with(2);
    assert!(
        wrong.stderr().contains(&format!(
            "error: signing key {key}: the passphrase is wrong"
        )),
        "{}",
        wrong.stderr()
    );
    assert!(
        !site.path("b.tar").exists() && !site.path("cache").exists(),
        "a bad key fails before anything is fetched"
    );

    let signed = run(site
        .bundle_command("b.tar", &["--sign", &key])
        .env("FERRY_SIGN_PASSPHRASE", passphrase))
    .success();
    site.verify("b.tar", &["--trust", &site.arg("allowed_signers")])
        .success();
    assert!(site.by_hand("b.tar"), "ssh-keygen accepts it");
    let key_text = std::fs::read_to_string(&key).unwrap();
    let secret_line = key_text.lines().nth(1).unwrap();
    for (what, text) in [
        ("stdout", signed.stdout()),
        ("stderr", signed.stderr()),
        ("wrong-passphrase stderr", wrong.stderr()),
        (
            "signature",
            std::fs::read_to_string(site.path("b.tar.sig")).unwrap(),
        ),
    ] {
        assert!(
            !text.contains(passphrase) && !text.contains(secret_line),
            "{what} shows a secret"
        );
    }
    let bundle = std::fs::read(site.path("b.tar")).unwrap();
    assert!(
        !bundle
            .windows(passphrase.len())
            .any(|w| w == passphrase.as_bytes()),
        "the bundle holds no passphrase"
    );

    // An unsigned rebuild at the same path removes the signature it would contradict.
    site.bundle("b.tar", &[]).success();
    assert!(!site.path("b.tar.sig").exists());

    // ECDSA (nistp256) keys sign and verify too, and ssh-keygen agrees; RSA is refused before any work.
    // One P-256 key in 256 (a secret with a leading zero byte) cannot be read by the ssh-key crate;
    // ferry says so, and another key works.
    let mut signed = false;
    for _ in 0..8 {
        let _ = std::fs::remove_file(site.path("ecdsa"));
        let _ = std::fs::remove_file(site.path("ecdsa.pub"));
        site.keygen("ecdsa", "ecdsa", "");
        std::fs::write(
            site.path("allowed_signers"),
            format!(
                "build@example.com {}",
                std::fs::read_to_string(site.path("ecdsa.pub")).unwrap()
            ),
        )
        .unwrap();
        let attempt = site.bundle("e.tar", &["--sign", &site.arg("ecdsa")]);
        if attempt.code() == Some(0) {
            signed = true;
            break;
        }
        assert!(
            attempt.stderr().contains(
                "if it is an ECDSA key, make another (one in 256 cannot be read) or an ed25519 one"
            ),
            "{}",
            attempt.stderr()
        );
    }
    assert!(signed, "eight ECDSA keys in a row could not be read");
    let good = site
        .verify("e.tar", &["--trust", &site.arg("allowed_signers")])
        .success();
    assert!(
        good.stdout().contains(&format!(
            "signature: good, signed by build@example.com (ecdsa-sha2-nistp256 {})",
            site.fingerprint("ecdsa")
        )),
        "{}",
        good.stdout()
    );
    assert!(site.by_hand("e.tar"));
    site.keygen("rsa", "rsa", "");
    let rsa = site
        .bundle("r.tar", &["--sign", &site.arg("rsa")])
        .fails_with(2);
    assert!(
        rsa.stderr().contains(&format!(
            "error: signing key {}: cannot sign with a ssh-rsa key",
            site.arg("rsa")
        )),
        "{}",
        rsa.stderr()
    );
    sign_by_hand(&site, "e.tar", "rsa");
    let by_rsa = site
        .verify("e.tar", &["--trust", &site.arg("allowed_signers")])
        .fails_with(1);
    assert!(
        by_rsa.stdout().contains(&format!(
            "signature: REFUSED: made by ssh-rsa {}, a key type ferry does not check (ssh-ed25519 and ecdsa-sha2-nistp256 only)\n",
            site.fingerprint("rsa")
        )),
        "{}",
        by_rsa.stdout()
    );
}

#[test]
fn unusable_anchors_are_bad_input() {
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_str().unwrap().to_string();
    std::fs::write(path("b.tar"), b"").unwrap();
    std::fs::write(path("allowed_signers"), "ops@example.com ssh-ed25519\n").unwrap();
    std::fs::write(path("ferry.lock"), "version = 1\n[[image]]\nname = 3\n").unwrap();
    for (args, message) in [
        (
            vec!["verify", &path("b.tar"), "--trust", &path("absent")],
            format!("error: cannot read {}\n", path("absent")),
        ),
        (
            vec![
                "push",
                &path("b.tar"),
                "--to",
                "r:5000",
                "--trust",
                &path("allowed_signers"),
            ],
            format!(
                "error: {}, line 1: the key type has no base64 key after it\n",
                path("allowed_signers")
            ),
        ),
        (
            vec!["load", &path("b.tar"), "--lock", &path("ferry.lock")],
            format!("error: lock {}: ", path("ferry.lock")),
        ),
        (
            vec![
                "bundle",
                "huawei-csi@4.8.0",
                "--all-k8s",
                "--lock",
                &path("l"),
            ],
            "error: the argument '--all-k8s' cannot be used with '--lock <FILE>'".to_string(),
        ),
        (
            vec!["bundle", "--image", "a.io/b:1", "--update-lock"],
            "error: the following required arguments were not provided:\n  --lock <FILE>"
                .to_string(),
        ),
        (
            vec!["bundle", "--image", "a.io/b:1", "--sign", &path("absent")],
            format!("error: cannot read {}\n", path("absent")),
        ),
    ] {
        let failed = ferry(&args).fails_with(2);
        assert!(
            failed.stderr().starts_with(&message),
            "{args:?}: {}",
            failed.stderr()
        );
    }
}

/// allowed_signers and `.sig` files that ssh-keygen reads one way and ferry read another (issue 20,
/// item 15): on each, ferry now agrees with the real `ssh-keygen -Y verify`, or refuses naming the line.
#[test]
fn allowed_signers_and_signatures_are_read_as_ssh_keygen_reads_them() {
    let Some(site) = Site::start() else { return };
    site.bundle("b.tar", &["--sign", &site.arg("builder")])
        .success();
    let builder = std::fs::read_to_string(site.path("builder.pub")).unwrap();
    let builder = builder.trim();
    let intruder = std::fs::read_to_string(site.path("intruder.pub")).unwrap();
    let fingerprint = site.fingerprint("builder");
    let good =
        format!("signature: good, signed by build@example.com (ssh-ed25519 {fingerprint})\n");
    let verify_with = |allowed: &str| {
        std::fs::write(site.path("allowed"), allowed).unwrap();
        run_within(
            command()
                .args(["verify", &site.arg("b.tar")])
                .args(["--trust", &site.arg("allowed")]),
            Duration::from_secs(60),
        )
    };

    // 200 `*` in a namespaces pattern took minutes: every `*` was tried at every position.
    let stars = "*".repeat(200);
    let accepted = verify_with(&format!(
        "build@example.com namespaces=\"{stars}\" {builder}\n"
    ))
    .success();
    assert!(accepted.stdout().contains(&good), "{}", accepted.stdout());
    assert!(site.ssh_keygen_verifies("b.tar", "allowed"));
    let refused = verify_with(&format!(
        "build@example.com namespaces=\"{stars}x\" {builder}\n"
    ))
    .fails_with(1);
    assert!(
        refused.stdout().contains(&format!(
            "signature: REFUSED: made by ssh-ed25519 {fingerprint}, which {} does not allow for \
             namespace \"ferry\"\n",
            site.arg("allowed")
        )),
        "{}",
        refused.stdout()
    );
    assert!(!site.ssh_keygen_verifies("b.tar", "allowed"));

    // A line that cannot be read is passed over, as ssh-keygen passes it over; a refusal names it.
    let broken = "other@example.com ssh-ed25519 AAAA";
    let accepted = verify_with(&format!("{broken}\nbuild@example.com {builder}\n")).success();
    assert!(accepted.stdout().contains(&good), "{}", accepted.stdout());
    assert!(site.ssh_keygen_verifies("b.tar", "allowed"));
    let refused = verify_with(&format!("{broken}\nbuild@example.com {intruder}")).fails_with(1);
    assert!(
        refused.stdout().contains(&format!(
            "signature: REFUSED: made by ssh-ed25519 {fingerprint}, a key {allowed} does not hold; \
             {allowed}, line 1 was passed over: the ssh-ed25519 key cannot be read (Base64 encoding \
             error: invalid Base64 length)\n",
            allowed = site.arg("allowed")
        )),
        "{}",
        refused.stdout()
    );
    assert!(!site.ssh_keygen_verifies("b.tar", "allowed"));

    // A UTF-8 byte order mark became part of the first principal; ssh-keygen reads it so too, and then
    // refuses build@example.com: ferry says why.
    let refused = verify_with(&format!("\u{feff}build@example.com {builder}\n")).fails_with(2);
    assert_eq!(
        refused.stderr(),
        format!(
            "error: {}, line 1: it starts with a UTF-8 byte order mark, which ssh-keygen reads as \
             part of the first principal: save the file without it\n",
            site.arg("allowed")
        )
    );
    assert!(!site.ssh_keygen_verifies("b.tar", "allowed"));

    // Data after the signature's footer is ignored by ssh-keygen, and now by ferry.
    let allowed = format!("build@example.com {builder}\n");
    let mut signature = std::fs::read(site.path("b.tar.sig")).unwrap();
    signature.extend_from_slice(b"signed on the build machine, 2026-09-01\n");
    std::fs::write(site.path("b.tar.sig"), &signature).unwrap();
    let accepted = verify_with(&allowed).success();
    assert!(accepted.stdout().contains(&good), "{}", accepted.stdout());
    assert!(site.ssh_keygen_verifies("b.tar", "allowed"));

    // A FIFO in place of the signature blocked verify forever.
    std::fs::remove_file(site.path("b.tar.sig")).unwrap();
    mkfifo(&site.path("b.tar.sig"));
    let refused = verify_with(&allowed).fails_with(1);
    assert!(
        refused.stdout().contains(&format!(
            "signature: REFUSED: cannot read {} (it is a FIFO (named pipe), not a regular file)\n",
            site.arg("b.tar.sig")
        )),
        "{}",
        refused.stdout()
    );
}

/// Anchors and keys that cannot be used are named before any bundle is read: a public key given to
/// --sign, an empty FERRY_TRUST, a lock that pins an image twice or has a TOML error, and FIFOs in
/// place of any of them (which blocked ferry forever). Issue 20, items 6 and 13; issue 21, items 10, 11.
#[test]
fn unusable_keys_and_anchors_are_named_before_any_work() {
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_str().unwrap().to_string();
    keygen(&work.path().join("key"), "ed25519", "");
    let fingerprint = fingerprint(&work.path().join("key.pub"));
    let public =
        ferry(&["bundle", "--image", "a.io/b:1", "--sign", &path("key.pub")]).fails_with(2);
    assert_eq!(
        public.stderr(),
        format!(
            "error: signing key {}: it is a public key (ssh-ed25519 {fingerprint}); signing needs the \
             private key: --sign {}\n",
            path("key.pub"),
            path("key")
        )
    );

    std::fs::write(path("b.tar"), b"").unwrap();
    let empty = run(command()
        .args(["verify", &path("b.tar")])
        .env("FERRY_TRUST", ""))
    .fails_with(2);
    assert_eq!(
        empty.stderr(),
        "error: FERRY_TRUST is set but empty: set it to an allowed_signers file (what --trust takes), \
         or unset it\n"
    );

    let pin = |name: &str, manifest: char| {
        format!(
            "[[image]]\nname = \"{name}\"\nplatform = \"linux/amd64\"\nsource = \"registry\"\n\
             manifest = \"sha256:{}\"\n",
            manifest.to_string().repeat(64)
        )
    };
    std::fs::write(
        path("twice.lock"),
        format!(
            "version = 1\n\n{}\n{}\n{}",
            pin("a.io/x:1", 'a'),
            pin("b.io/y:1", 'b'),
            pin("a.io/x:1", 'c')
        ),
    )
    .unwrap();
    let twice = ferry(&["verify", &path("b.tar"), "--lock", &path("twice.lock")]).fails_with(2);
    assert_eq!(
        twice.stderr(),
        format!(
            "error: lock {}: a.io/x:1 (linux/amd64) is pinned twice, on lines 3 and 15: keep one\n",
            path("twice.lock")
        )
    );
    std::fs::write(path("long.lock"), "x".repeat(800_000)).unwrap();
    let long = ferry(&["verify", &path("b.tar"), "--lock", &path("long.lock")]).fails_with(2);
    assert_eq!(
        long.stderr(),
        format!(
            "error: lock {}: line 1, column 800001: key with no value, expected `=` (at the end of \
             the line)\n",
            path("long.lock")
        )
    );

    mkfifo(&work.path().join("fifo"));
    let fifo = path("fifo");
    let blocked = format!(
        "error: cannot read {fifo}\n  caused by: it is a FIFO (named pipe), not a regular file\n"
    );
    for (args, trust_env) in [
        (vec!["verify", &path("b.tar"), "--trust", &fifo], None),
        (vec!["verify", &path("b.tar")], Some(&fifo)),
        (vec!["load", &path("b.tar"), "--lock", &fifo], None),
        (vec!["bundle", "--image", "a.io/b:1", "--sign", &fifo], None),
    ] {
        let mut command = command();
        command.args(&args);
        if let Some(value) = trust_env {
            command.env("FERRY_TRUST", value);
        }
        let refused = run_within(&mut command, Duration::from_secs(30)).fails_with(2);
        assert_eq!(refused.stderr(), blocked, "{args:?}");
    }
}
