//! Test images that look like the real ones, put into a registry by an independent path (the registry's
//! HTTP API spoken directly, never ferry's own push): multi-platform Docker manifest lists and OCI indexes,
//! a base layer shared by every image of a platform, gzip layers whose content compresses about 2:1.
//! Also docker-save tarballs like the ones a vendor ships in its release package.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub const PLATFORMS: [&str; 4] = ["linux/amd64", "linux/arm64", "linux/ppc64le", "linux/s390x"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    DockerList,
    OciIndex,
    DockerSingle,
}

/// What a test needs to know about a seeded image.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// The digest of the list/index (or of the single manifest).
    pub top_digest: String,
    /// (platform, manifest digest) per platform.
    pub manifests: Vec<(String, String)>,
}

impl Seeded {
    pub fn manifest_for(&self, platform: &str) -> &str {
        &self
            .manifests
            .iter()
            .find(|(p, _)| p == platform)
            .unwrap_or_else(|| panic!("{platform} not seeded"))
            .1
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Deterministic bytes: half pseudo-random, half zeros, so gzip halves them, like real binaries.
fn payload(seed: &str, size: usize) -> Vec<u8> {
    let mut state =
        u64::from_le_bytes(Sha256::digest(seed.as_bytes())[..8].try_into().unwrap()) | 1;
    let mut bytes = Vec::with_capacity(size);
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
        bytes.extend_from_slice(&[0; 8]);
    }
    bytes.truncate(size);
    bytes
}

/// An uncompressed layer tar holding one file.
pub fn layer_tar(seed: &str, size: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let content = payload(seed, size);
    let mut header = tar::Header::new_ustar();
    header
        .set_path(format!("data/{}", seed.replace('/', "_")))
        .unwrap();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    builder.append(&header, content.as_slice()).unwrap();
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A config whose history carries `history_bytes` more, as a long Dockerfile's does.
fn config(platform: &str, diff_ids: &[String], history_bytes: usize) -> Vec<u8> {
    let mut parts = platform.split('/');
    let (os, architecture, variant) = (parts.next().unwrap(), parts.next().unwrap(), parts.next());
    let mut config = json!({
        "architecture": architecture,
        "os": os,
        "config": {"Cmd": ["/data"], "Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "ferry test base"}, {"created_by": "ferry test app"}],
    });
    if history_bytes > 0 {
        let step = "RUN echo a build step that makes the history long ".repeat(20);
        let steps = history_bytes.div_ceil(step.len() + 40);
        let history = config["history"].as_array_mut().unwrap();
        history.extend(
            (0..steps).map(|i| json!({"created_by": format!("{step}{i}"), "empty_layer": true})),
        );
    }
    if let Some(variant) = variant {
        config["variant"] = json!(variant);
    }
    serde_json::to_vec(&config).unwrap()
}

/// A minimal HTTP/1.1 exchange with a plain-HTTP registry; returns (status, headers, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    // A registry on a machine loaded by parallel tests now and then answers 5xx; seeding is not what
    // the tests test, so such an answer is tried again (every request here may be repeated).
    for _ in 0..5 {
        let answer = request(addr, method, path, &[("Content-Type", content_type)], body);
        if answer.0 < 500 {
            return answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    request(addr, method, path, &[("Content-Type", content_type)], body)
}

/// One HTTP/1.1 exchange with any request headers; returns (status, headers, body).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let headers = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, headers, response[split + 4..].to_vec())
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

pub fn push_blob(addr: &str, repository: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let (status, headers, _) = http(
        addr,
        "POST",
        &format!("/v2/{repository}/blobs/uploads/"),
        "application/octet-stream",
        b"",
    );
    assert_eq!(status, 202, "upload start: {headers}");
    let location = header(&headers, "Location").expect("a Location");
    let path = location
        .find("/v2/")
        .map(|at| &location[at..])
        .expect("a /v2/ path");
    let separator = if path.contains('?') { '&' } else { '?' };
    let (status, headers, _) = http(
        addr,
        "PUT",
        &format!("{path}{separator}digest={digest}"),
        "application/octet-stream",
        bytes,
    );
    assert_eq!(status, 201, "upload finish: {headers}");
    digest
}

pub fn push_manifest(
    addr: &str,
    repository: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> String {
    let (status, headers, body) = http(
        addr,
        "PUT",
        &format!("/v2/{repository}/manifests/{reference}"),
        media_type,
        bytes,
    );
    assert_eq!(
        status,
        201,
        "manifest put: {headers} {}",
        String::from_utf8_lossy(&body)
    );
    sha256(bytes)
}

/// Pushes one single-platform image (config + shared base layer + own layer); returns its manifest bytes.
fn push_platform(
    addr: &str,
    repository: &str,
    name: &str,
    platform: &str,
    size: usize,
    oci: bool,
    history_bytes: usize,
) -> Vec<u8> {
    let base = layer_tar(&format!("base-{platform}"), size / 2);
    let own = layer_tar(&format!("{name}-{platform}"), size / 2);
    let (base_gz, own_gz) = (gzip(&base), gzip(&own));
    let config = config(platform, &[sha256(&base), sha256(&own)], history_bytes);
    let (config_type, layer_type, manifest_type) = if oci {
        (
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            OCI_MANIFEST,
        )
    } else {
        (
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            DOCKER_MANIFEST,
        )
    };
    let descriptor = |media_type: &str, bytes: &[u8]| json!({"mediaType": media_type, "size": bytes.len(), "digest": push_blob(addr, repository, bytes)});
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": descriptor(config_type, &config),
        "layers": [descriptor(layer_type, &base_gz), descriptor(layer_type, &own_gz)],
    });
    serde_json::to_vec_pretty(&manifest).unwrap()
}

/// Pushes `repository:tag` in `format`, one manifest per platform, `size` uncompressed bytes each.
pub fn push_image(
    addr: &str,
    repository: &str,
    tag: &str,
    format: Format,
    platforms: &[&str],
    size: usize,
) -> Seeded {
    push_image_as(addr, repository, tag, repository, format, platforms, size)
}

/// [`push_image`] whose own layer is made of `name` (the repository's other tags share it only if they
/// are pushed under the same name): a release's images of new versions, all new but the base layer.
pub fn push_image_as(
    addr: &str,
    repository: &str,
    tag: &str,
    name: &str,
    format: Format,
    platforms: &[&str],
    size: usize,
) -> Seeded {
    let oci = format == Format::OciIndex;
    let manifest_type = if oci { OCI_MANIFEST } else { DOCKER_MANIFEST };
    let mut manifests = Vec::new();
    let mut entries = Vec::new();
    for platform in platforms {
        let bytes = push_platform(addr, repository, name, platform, size, oci, 0);
        let digest = sha256(&bytes);
        if format == Format::DockerSingle {
            push_manifest(addr, repository, tag, manifest_type, &bytes);
            return Seeded {
                top_digest: digest.clone(),
                manifests: vec![(platform.to_string(), digest)],
            };
        }
        push_manifest(addr, repository, &digest, manifest_type, &bytes);
        let mut parts = platform.split('/');
        let mut platform_json =
            json!({"os": parts.next().unwrap(), "architecture": parts.next().unwrap()});
        if let Some(variant) = parts.next() {
            platform_json["variant"] = json!(variant);
        }
        entries.push(json!({"mediaType": manifest_type, "size": bytes.len(), "digest": digest, "platform": platform_json}));
        manifests.push((platform.to_string(), digest));
    }
    let list_type = if oci { OCI_INDEX } else { DOCKER_LIST };
    let list = serde_json::to_vec_pretty(
        &json!({"schemaVersion": 2, "mediaType": list_type, "manifests": entries}),
    )
    .unwrap();
    let top_digest = push_manifest(addr, repository, tag, list_type, &list);
    Seeded {
        top_digest,
        manifests,
    }
}

/// Pushes a single-platform linux/amd64 `repository:tag` whose config is about `config_bytes` long.
pub fn push_image_with_long_history(
    addr: &str,
    repository: &str,
    tag: &str,
    config_bytes: usize,
) -> String {
    let bytes = push_platform(
        addr,
        repository,
        repository,
        "linux/amd64",
        50_000,
        false,
        config_bytes,
    );
    push_manifest(addr, repository, tag, DOCKER_MANIFEST, &bytes)
}

/// The 7 public images of Huawei CSI 4.8.0 for Kubernetes 1.20+, under their upstream repository paths
/// (so `--mirror registry.k8s.io=ADDR` finds them). Most are Docker lists; csi-attacher is an OCI index.
pub fn seed_csi_480(addr: &str, size: usize) -> Vec<(String, Seeded)> {
    let images = [
        ("sig-storage/livenessprobe", "v2.12.0"),
        ("sig-storage/csi-resizer", "v1.9.0"),
        ("sig-storage/csi-node-driver-registrar", "v2.9.0"),
        ("sig-storage/csi-snapshotter", "v6.3.0"),
        ("sig-storage/snapshot-controller", "v6.3.0"),
        ("sig-storage/csi-provisioner", "v3.6.0"),
        ("sig-storage/csi-attacher", "v4.4.0"),
    ];
    images
        .iter()
        .map(|(repository, tag)| {
            let format = if repository.ends_with("csi-attacher") {
                Format::OciIndex
            } else {
                Format::DockerList
            };
            let seeded = push_image(addr, repository, tag, format, &PLATFORMS, size);
            (format!("registry.k8s.io/{repository}:{tag}"), seeded)
        })
        .collect()
}

/// The vendor's 4 images of Huawei CSI 4.8.0, as docker-save tarballs in `dir`.
pub const VENDOR_480: [&str; 4] = [
    "storage-backend-controller:4.8.0",
    "storage-backend-sidecar:4.8.0",
    "huawei-csi:4.8.0",
    "huawei-csi-extender:4.8.0",
];

/// Writes a docker-save archive (legacy layout: `<id>/layer.tar`, `<config hex>.json`) for `name_tag`, as
/// `docker save` of Docker 20 writes and vendors ship; returns the config digest (docker's image ID).
pub fn vendor_tarball(path: &Path, name_tag: &str, size: usize) -> String {
    vendor_tarball_for(path, name_tag, size, "linux/amd64")
}

/// [`vendor_tarball`] of the vendor's package for `platform`: other layers, its platform in the config.
pub fn vendor_tarball_for(path: &Path, name_tag: &str, size: usize, platform: &str) -> String {
    let of = |seed: String| match platform {
        "linux/amd64" => seed,
        _ => format!("{seed}-{platform}"),
    };
    let layers = [
        layer_tar(&of("vendor-base".into()), size / 2),
        layer_tar(&of(format!("vendor-{name_tag}")), size / 2),
    ];
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = config(platform, &diff_ids, 0);
    let config_digest = sha256(&config);
    let config_name = format!("{}.json", &config_digest[7..]);
    let layer_names: Vec<String> = diff_ids
        .iter()
        .map(|d| format!("{}/layer.tar", &d[7..]))
        .collect();
    let manifest = serde_json::to_vec(
        &json!([{"Config": config_name, "RepoTags": [name_tag], "Layers": layer_names}]),
    )
    .unwrap();
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).unwrap();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, bytes).unwrap();
    };
    for (name, layer) in layer_names.iter().zip(&layers) {
        add(name, layer);
    }
    add(&config_name, &config);
    add("manifest.json", &manifest);
    builder.into_inner().unwrap().sync_all().unwrap();
    config_digest
}

/// The four vendor tarballs in `dir`, named like the package's files.
pub fn vendor_dir_480(dir: &Path, size: usize) {
    vendor_dir_480_for(dir, size, "linux/amd64");
}

/// The four vendor tarballs of the package for `platform`: the same file names in every package, so
/// only their configs say which is which.
pub fn vendor_dir_480_for(dir: &Path, size: usize, platform: &str) {
    for name_tag in VENDOR_480 {
        vendor_tarball_for(
            &dir.join(format!("{}.tar", name_tag.replace(':', "-"))),
            name_tag,
            size,
            platform,
        );
    }
}

/// Pushes `repository:tag` as buildkit does with attestations: an OCI index of one manifest per platform
/// and, for the first platform, an attestation manifest (platform unknown/unknown, an in-toto layer)
/// that refers to it. `manifests` holds it as "unknown/unknown".
pub fn push_image_with_attestation(
    addr: &str,
    repository: &str,
    tag: &str,
    platforms: &[&str],
    size: usize,
) -> Seeded {
    let mut manifests = Vec::new();
    let mut entries = Vec::new();
    for platform in platforms {
        let bytes = push_platform(addr, repository, repository, platform, size, true, 0);
        let digest = push_manifest(addr, repository, &sha256(&bytes), OCI_MANIFEST, &bytes);
        let (os, architecture) = platform.split_once('/').unwrap();
        entries.push(json!({"mediaType": OCI_MANIFEST, "size": bytes.len(), "digest": digest, "platform": {"os": os, "architecture": architecture}}));
        manifests.push((platform.to_string(), digest));
    }
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{"name": repository, "digest": {"sha256": &manifests[0].1[7..]}}],
        "predicate": {"spdxVersion": "SPDX-2.3", "name": "sbom"},
    }))
    .unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&statement)]},
    }))
    .unwrap();
    let descriptor = |media_type: &str, bytes: &[u8]| json!({"mediaType": media_type, "size": bytes.len(), "digest": push_blob(addr, repository, bytes)});
    let mut layer = descriptor("application/vnd.in-toto+json", &statement);
    layer["annotations"] = json!({"in-toto.io/predicate-type": "https://spdx.dev/Document"});
    let attestation = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [layer],
    }))
    .unwrap();
    let digest = push_manifest(
        addr,
        repository,
        &sha256(&attestation),
        OCI_MANIFEST,
        &attestation,
    );
    entries.push(json!({
        "mediaType": OCI_MANIFEST,
        "size": attestation.len(),
        "digest": digest,
        "platform": {"os": "unknown", "architecture": "unknown"},
        "annotations": {
            "vnd.docker.reference.digest": manifests[0].1,
            "vnd.docker.reference.type": "attestation-manifest",
        },
    }));
    manifests.push(("unknown/unknown".to_string(), digest));
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
    )
    .unwrap();
    Seeded {
        top_digest: push_manifest(addr, repository, tag, OCI_INDEX, &index),
        manifests,
    }
}
