//! `BUNDLE.sig`: an SSHSIG signature (what `ssh-keygen -Y sign -n ferry` writes) over the exact bytes of
//! `BUNDLE.sha256`, so that the far side can check a bundle with ssh-keygen and sha256sum alone.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};
use zeroize::Zeroizing;

use super::allowed_signers::{AllowedSigners, NotAllowed};
use super::TrustError;

/// The SSHSIG namespace ferry signs in: a signature made for git or for file signing cannot pass as ferry's.
pub const NAMESPACE: &str = "ferry";
/// ssh-keygen's own default, so ferry's signatures look like the ones admins already make.
const HASH: HashAlg = HashAlg::Sha512;

/// A decrypted private key, ready to sign; never printed.
#[derive(Clone)]
pub struct SigningKey {
    key: Arc<PrivateKey>,
    path: PathBuf,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.path.display())
    }
}

/// Far more than any OpenSSH private key.
const MAX_KEY_FILE: u64 = 64 << 10;

impl SigningKey {
    /// Reads an OpenSSH private key, asking `passphrase` for the key's passphrase when it is encrypted
    /// (the front end knows where one comes from: a terminal, the environment), and proves it can sign
    /// before any work is done.
    pub fn load(
        path: &Path,
        passphrase: &dyn Fn(&Path) -> Result<Zeroizing<String>, TrustError>,
    ) -> Result<SigningKey, TrustError> {
        let text = Zeroizing::new(crate::io::read_side_text(path, MAX_KEY_FILE).map_err(
            |source| TrustError::Read {
                path: path.to_path_buf(),
                source,
            },
        )?);
        let bad_key = |reason: String| TrustError::Key {
            path: path.to_path_buf(),
            reason,
        };
        let unreadable = |e: ssh_key::Error| {
            bad_key(format!(
                "not an OpenSSH private key ferry can read ({e}){}",
                if matches!(e, ssh_key::Error::Encoding(_)) {
                    // The ssh-key crate misreads a P-256 secret whose first byte is zero.
                    "; if it is an ECDSA key, make another (one in 256 cannot be read) or an ed25519 one"
                } else {
                    ""
                }
            ))
        };
        let mut key =
            PrivateKey::from_openssh(text.as_bytes()).map_err(
                |e| match PublicKey::from_openssh(text.trim()) {
                    Ok(public) => bad_key(public_not_private(path, &public)),
                    Err(_) => unreadable(e),
                },
            )?;
        if key.is_encrypted() {
            let passphrase = passphrase(path)?;
            key = key.decrypt(passphrase.as_bytes()).map_err(|e| match e {
                ssh_key::Error::Crypto => bad_key("the passphrase is wrong".into()),
                other => unreadable(other),
            })?;
        }
        let signing = SigningKey {
            key: Arc::new(key),
            path: path.to_path_buf(),
        };
        signing.sign(b"").map_err(|e| {
            bad_key(format!(
                "cannot sign with a {} key ({e}); use an ed25519 or ecdsa key (ssh-keygen -t ed25519)",
                signing.key.algorithm()
            ))
        })?;
        Ok(signing)
    }

    /// The PEM text of `ssh-keygen -Y sign -n ferry` over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<String, ssh_key::Error> {
        self.key
            .sign(NAMESPACE, HASH, message)?
            .to_pem(LineEnding::LF)
    }
}

impl crate::tarball::Signer for SigningKey {
    fn signature(&self, checksum_file: &[u8]) -> std::io::Result<String> {
        self.sign(checksum_file).map_err(std::io::Error::other)
    }

    fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }
}

/// What `--sign` says when given the `.pub` half of a key pair.
fn public_not_private(path: &Path, public: &PublicKey) -> String {
    let private = path
        .to_str()
        .and_then(|p| p.strip_suffix(".pub"))
        .map(Path::new)
        .filter(|p| p.is_file());
    format!(
        "it is a public key ({} {}); signing needs the private key{}",
        public.algorithm(),
        public.fingerprint(HashAlg::Sha256),
        private.map_or_else(
            || " (the file ssh-keygen wrote without .pub)".to_string(),
            |p| format!(": --sign {}", p.display())
        )
    )
}

/// The armored signature as ssh-keygen reads it: up to its footer. What follows the footer is ignored,
/// as ssh-keygen ignores it (a signature file someone appended a note to still verifies there).
fn armored(signature: &[u8]) -> &[u8] {
    const FOOTER: &[u8] = b"\n-----END SSH SIGNATURE-----";
    match signature.windows(FOOTER.len()).position(|w| w == FOOTER) {
        Some(at) => &signature[..at + FOOTER.len()],
        None => signature,
    }
}

/// Who signed, when the signature is good.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Signed {
    /// The principals of the `allowed_signers` line that holds the key.
    pub signer: String,
    /// `ssh-ed25519 SHA256:…`.
    pub key: String,
}

/// Checks `signature` (the text of `BUNDLE.sig`) over `checksum` (the bytes of `BUNDLE.sha256`): well
/// formed, in ferry's namespace, cryptographically valid, and made by a key `allowed` lets sign for ferry
/// now. The reason of a refusal is the first of these that fails.
pub fn check(
    signature_file: &Path,
    signature: &[u8],
    checksum_file: &Path,
    checksum: &[u8],
    allowed: &AllowedSigners,
    now: i64,
) -> Result<Signed, String> {
    let signature = SshSig::from_pem(armored(signature))
        .map_err(|e| format!("{} is not an SSH signature ({e})", signature_file.display()))?;
    if signature.namespace() != NAMESPACE {
        return Err(format!(
            "{} was made for namespace {:?}, not \"{NAMESPACE}\"",
            signature_file.display(),
            signature.namespace()
        ));
    }
    let public = PublicKey::new(signature.public_key().clone(), "");
    let key = format!(
        "{} {}",
        public.algorithm(),
        public.fingerprint(HashAlg::Sha256)
    );
    // Without the algorithm compiled in, verification fails like a forgery would; say which it is.
    if !matches!(
        public.algorithm(),
        Algorithm::Ed25519
            | Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256
            }
    ) {
        return Err(format!(
            "made by {key}, a key type ferry does not check (ssh-ed25519 and ecdsa-sha2-nistp256 only)"
        ));
    }
    public
        .verify(NAMESPACE, checksum, &signature)
        .map_err(|_| {
            format!(
                "{} does not match {} (made by {key}): the checksum file was changed after signing",
                signature_file.display(),
                checksum_file.display()
            )
        })?;
    let signer = allowed
        .allows(signature.public_key(), NAMESPACE, now)
        .map_err(|why| {
            let file = allowed.path.display();
            // A line that could not be read may have been meant for this key.
            let passed_over: String = allowed
                .passed_over
                .iter()
                .map(|(line, reason)| format!("; {file}, line {line} was passed over: {reason}"))
                .collect();
            let why = match why {
                NotAllowed::Unknown => format!("made by {key}, a key {file} does not hold"),
                NotAllowed::OnlyCertAuthority => {
                    format!("made by {key}, which {file} trusts only as a certificate authority")
                }
                NotAllowed::Namespace => format!(
                    "made by {key}, which {file} does not allow for namespace \"{NAMESPACE}\""
                ),
                NotAllowed::Expired => format!(
                    "made by {key}, which {file} allows only outside this time (valid-after/valid-before)"
                ),
            };
            format!("{why}{passed_over}")
        })?;
    Ok(Signed {
        signer: signer.principals.clone(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tarball::Signer;

    /// A key made by `ssh-keygen -t ed25519` for these tests only.
    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBN12JqxLvVOWhqOHoN7MnliedJNIZkkSQcAXOx5nJHoQAAAJC80BifvNAY
nwAAAAtzc2gtZWQyNTUxOQAAACBN12JqxLvVOWhqOHoN7MnliedJNIZkkSQcAXOx5nJHoQ
AAAEAocAmvscS3ylS3i295J/QNn49cpfiBCST1uzf2XkWlO03XYmrEu9U5aGo4eg3syeWJ
50k0hmSRJBwBc7HmckehAAAACXVuaXQgdGVzdAECAwQ=
-----END OPENSSH PRIVATE KEY-----
";
    const PUBLIC: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3XYmrEu9U5aGo4eg3syeWJ50k0hmSRJBwBc7Hmckeh";
    const SUMS: &[u8] = b"0123abcd  b.tar\n";

    fn check_with(signature: &str, message: &[u8], allowed: &str) -> Result<Signed, String> {
        let allowed = AllowedSigners::parse(Path::new("allowed"), allowed).unwrap();
        check(
            Path::new("b.tar.sig"),
            signature.as_bytes(),
            Path::new("b.tar.sha256"),
            message,
            &allowed,
            1_700_000_000,
        )
    }

    #[test]
    fn each_reason_for_a_refusal_is_named() {
        let key = SigningKey {
            key: Arc::new(PrivateKey::from_openssh(KEY).unwrap()),
            path: "k".into(),
        };
        let signature = key.sign(SUMS).unwrap();
        let fingerprint = key.fingerprint();
        let trusted = format!("ops@example.com namespaces=\"ferry\" {PUBLIC}\n");
        assert_eq!(
            check_with(&signature, SUMS, &trusted),
            Ok(Signed {
                signer: "ops@example.com".into(),
                key: format!("ssh-ed25519 {fingerprint}"),
            })
        );
        assert_eq!(
            check_with(&signature, b"0123abce  b.tar\n", &trusted).unwrap_err(),
            format!("b.tar.sig does not match b.tar.sha256 (made by ssh-ed25519 {fingerprint}): the checksum file was changed after signing")
        );
        assert_eq!(
            check_with(&signature, SUMS, "").unwrap_err(),
            format!("made by ssh-ed25519 {fingerprint}, a key allowed does not hold")
        );
        assert_eq!(
            check_with(&signature, SUMS, &format!("ops@example.com namespaces=\"git\" {PUBLIC}")).unwrap_err(),
            format!("made by ssh-ed25519 {fingerprint}, which allowed does not allow for namespace \"ferry\"")
        );
        let git = key
            .key
            .sign("git", HASH, SUMS)
            .unwrap()
            .to_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(
            check_with(&git, SUMS, &trusted).unwrap_err(),
            "b.tar.sig was made for namespace \"git\", not \"ferry\""
        );
        assert_eq!(
            check_with(
                &format!("{signature}a note appended\n\0\x1b"),
                SUMS,
                &trusted
            ),
            check_with(&signature, SUMS, &trusted),
            "what follows the footer is ignored, as ssh-keygen ignores it"
        );
        assert!(check_with("not a signature", SUMS, &trusted)
            .unwrap_err()
            .starts_with("b.tar.sig is not an SSH signature ("));
        assert_eq!(format!("{key:?}"), "SigningKey(k)", "never the key itself");
    }
}
