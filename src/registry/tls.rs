//! Which CA certificates to trust: the system's roots, `--ca-cert` files, and the per-registry
//! `ca.crt` files docker and podman users already keep in `/etc/docker/certs.d/HOST/` and
//! `/etc/containers/certs.d/HOST/`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::RegistryError;

const CERTS_D: &[&str] = &["/etc/docker/certs.d", "/etc/containers/certs.d"];

/// A PEM file's bytes, kept with its path for error messages.
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

/// Reads the explicit CA files, then every `*.crt` in the certs.d directories of `hosts`.
pub fn trusted_certificates<'a>(
    explicit: &[PathBuf],
    hosts: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<PemFile>, RegistryError> {
    let mut paths: Vec<PathBuf> = explicit.to_vec();
    for host in hosts {
        for base in CERTS_D {
            paths.extend(crt_files(&Path::new(base).join(host)));
        }
    }
    paths
        .into_iter()
        .map(|path| {
            let pem = std::fs::read(&path).map_err(|source| RegistryError::CaCert {
                path: path.clone(),
                source,
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(RegistryError::BadCaCert { path });
            }
            Ok(PemFile { path, pem })
        })
        .collect()
}

fn crt_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    files.sort();
    files
}

/// Docker's rule: registries on loopback may speak plain HTTP without being declared insecure.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:443",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry.k8s.io", "10.0.0.1:5000", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = trusted_certificates(std::slice::from_ref(&path), [])
            .err()
            .unwrap();
        assert!(err.to_string().contains("ca.pem"), "{err}");
        let missing = trusted_certificates(&[dir.path().join("absent.pem")], [])
            .err()
            .unwrap();
        assert!(matches!(missing, RegistryError::CaCert { .. }));
    }
}
