//! TLS: which CA certificates to trust (the system's roots, `--ca-cert` files, and the per-registry
//! `ca.crt` files docker and podman users already keep in `/etc/docker/certs.d/HOST/` and
//! `/etc/containers/certs.d/HOST/`), and what a failed handshake says: a certificate this machine does
//! not trust (final, and the way out named).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_platform_verifier::Verifier;

const CERTS_D: &[&str] = &["/etc/docker/certs.d", "/etc/containers/certs.d"];

#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read CA certificate {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error(
        "{path} holds a CERTIFICATE block that is no certificate (its bytes are not X.509 DER)"
    )]
    NotACertificate { path: PathBuf },
}

/// Far more than any CA bundle (the system's whole bundle is about 200 kB).
const MAX_PEM_FILE: u64 = 4 << 20;

/// A PEM file's bytes, kept with its path for error messages.
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

/// Reads the explicit CA files, then every `*.crt` in the certs.d directories of `hosts`.
pub fn trusted_certificates<'a>(
    explicit: &[PathBuf],
    hosts: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<PemFile>, CaFileError> {
    let mut paths: Vec<PathBuf> = explicit.to_vec();
    for host in hosts {
        for base in CERTS_D {
            paths.extend(crt_files(&Path::new(base).join(host)));
        }
    }
    paths
        .into_iter()
        .map(|path| {
            let pem = crate::io::read_side_file(&path, MAX_PEM_FILE).map_err(|source| {
                CaFileError::Read {
                    path: path.clone(),
                    source,
                }
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(CaFileError::NoCertificate { path });
            }
            Ok(PemFile { path, pem })
        })
        .collect()
}

/// The certificates a registry's chain must lead to: the system's roots, and the CA files given. The
/// system's (hundreds of files, about 10 ms to read) are read at the first handshake, or by
/// [`SystemRoots::load`] ahead of it: a run that speaks only plain HTTP (a loopback mirror) never reads
/// them, nor needs a machine that has any.
#[derive(Debug)]
pub struct SystemRoots {
    extra: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<Verifier, rustls::Error>>,
}

impl SystemRoots {
    pub fn new(files: &[PemFile]) -> Result<SystemRoots, CaFileError> {
        let mut extra = Vec::new();
        for file in files {
            for certificate in CertificateDer::pem_slice_iter(&file.pem) {
                let certificate = certificate.map_err(|_| CaFileError::NoCertificate {
                    path: file.path.clone(),
                })?;
                // Parsed now, so that a bad file is named at once, not blamed on a server at the first
                // handshake (where only the system's roots are left to fail).
                rustls::RootCertStore::empty()
                    .add(certificate.clone())
                    .map_err(|_| CaFileError::NotACertificate {
                        path: file.path.clone(),
                    })?;
                extra.push(certificate);
            }
        }
        // The provider reqwest would choose: the process's default, else aws-lc-rs.
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        Ok(SystemRoots {
            extra,
            provider,
            verifier: OnceLock::new(),
        })
    }

    /// Reads the system's roots now, unless they have been; a failure is the first handshake's to report.
    pub fn load(&self) {
        let _ = self.verifier();
    }

    /// The verifier, or why the certificates to check against cannot be had (none on this machine): a
    /// certificate that cannot be checked is not accepted, which no retry changes.
    fn verifier(&self) -> Result<&Verifier, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                Verifier::new_with_extra_roots(self.extra.clone(), self.provider.clone()).map_err(
                    |cause| {
                        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                            rustls::OtherError(Arc::new(NoRoots(cause))),
                        ))
                    },
                )
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// TLS 1.2 and 1.3, HTTP/1.1, the certificates checked against these roots.
    pub fn client_config(self: &Arc<Self>) -> rustls::ClientConfig {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the crypto provider speaks TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

#[derive(Debug, thiserror::Error)]
#[error("there are no CA certificates to check it against: {0}")]
struct NoRoots(rustls::Error);

/// The platform verifier's checks, its roots read when the first certificate is to be checked; the
/// handshake's signatures are checked as it checks them, with the provider's algorithms.
impl ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
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

/// A registry (or its token service) whose certificate this machine refuses: no retry changes that.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{host} presented a TLS certificate that ferry does not accept ({}); if it comes from a private \
     CA, give that CA with --ca-cert FILE, or put it in {}",
    reason(cause),
    CERTS_D.iter().map(|dir| format!("{dir}/{host}/ca.crt")).collect::<Vec<_>>().join(" or ")
)]
pub struct Untrusted {
    pub host: String,
    pub cause: rustls::Error,
}

/// Why a certificate was refused, in words (rustls shows a cause of its own kind, [`NoRoots`], as Rust).
fn reason(cause: &rustls::Error) -> String {
    match cause {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            match other.0.downcast_ref::<NoRoots>() {
                Some(no_roots) => no_roots.to_string(),
                None => cause.to_string(),
            }
        }
        _ => cause.to_string(),
    }
}

/// The TLS failure among the causes of an HTTP client's error, if there is one.
pub fn handshake_failure<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    causes(error).find_map(|cause| cause.downcast_ref::<rustls::Error>())
}

/// `error` and its causes. TLS and name-lookup errors reach the HTTP client inside `io::Error`s, whose
/// `source()` passes over the error they wrap, so each `io::Error` is opened here.
pub fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |current| {
        match current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => current.source(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA file whose PEM armour holds no certificate is named when the client is set up, before any
    /// server is contacted.
    #[test]
    fn a_ca_file_that_holds_no_parsable_certificate_is_named_at_once() {
        let file = PemFile {
            path: "/etc/docker/certs.d/r.local/ca.crt".into(),
            pem: b"-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n".to_vec(),
        };
        let refused = SystemRoots::new(&[file]).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "/etc/docker/certs.d/r.local/ca.crt holds a CERTIFICATE block that is no certificate (its \
             bytes are not X.509 DER)"
        );
    }

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
    fn a_tls_failure_is_found_inside_the_io_error_that_carries_it() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let carried = std::io::Error::new(std::io::ErrorKind::InvalidData, refused.clone());
        assert_eq!(handshake_failure(&carried), Some(&refused));
        assert_eq!(
            Untrusted {
                host: "harbor.local".into(),
                cause: refused
            }
            .to_string(),
            "harbor.local presented a TLS certificate that ferry does not accept (invalid peer certificate: \
             UnknownIssuer); if it comes from a private CA, give that CA with --ca-cert FILE, or put it in \
             /etc/docker/certs.d/harbor.local/ca.crt or /etc/containers/certs.d/harbor.local/ca.crt"
        );
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = trusted_certificates(std::slice::from_ref(&path), [])
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!("{} holds no PEM certificate", path.display())
        );
        let missing = trusted_certificates(&[dir.path().join("absent.pem")], [])
            .err()
            .unwrap();
        assert!(matches!(missing, CaFileError::Read { .. }));
    }
}
