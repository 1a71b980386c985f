//! Promotion proofs: an admin's Ed25519 signature over "site S is the primary at epoch N".
//!
//! Admins hold the private key (a PKCS#8 file, hex); every site's configuration holds only
//! the public key, so a site can check a proof but not make one — a compromised site cannot
//! raise anyone's epoch. The signed message is domain-separated and canonical:
//! `"geo-agent promotion v1\0" ‖ site_id ‖ "\0" ‖ epoch (8 bytes, big-endian)`; the epoch
//! has a fixed length at the end, so no two (site, epoch) pairs share a message.
//! Everything here is pure: no I/O but reading and writing the key file.

use std::io::Write;
use std::path::Path;

use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::settings::ProofCheck;
use crate::types::Promotion;

/// Separates promotion signatures from anything else the key could ever sign.
pub const DOMAIN: &[u8] = b"geo-agent promotion v1\0";
/// Length of an Ed25519 public key and of a signature, in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;

/// Why a proof does not prove anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the signature has {0} bytes, not {SIGNATURE_LEN}")]
    Malformed(usize),
    #[error("the signature of site {site_id}'s promotion to epoch {epoch} is not the admins' (forged, or signed with another key)")]
    BadSignature { site_id: String, epoch: u64 },
}

/// The bytes a promotion of `site_id` to `epoch` signs.
pub fn message(site_id: &str, epoch: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + site_id.len() + 9);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(site_id.as_bytes());
    m.push(0);
    m.extend_from_slice(&epoch.to_be_bytes());
    m
}

/// The admins' public key, as every site's configuration holds it (64 hex digits).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl PublicKey {
    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let text = text.trim();
        let raw = hex::decode(text).map_err(|e| {
            format!(
                "the promotion public key must be {} hex digits: {e}",
                PUBLIC_KEY_LEN * 2
            )
        })?;
        let key = <[u8; PUBLIC_KEY_LEN]>::try_from(raw.as_slice()).map_err(|_| {
            format!(
                "the promotion public key must be {} hex digits, not {}",
                PUBLIC_KEY_LEN * 2,
                text.len()
            )
        })?;
        Ok(PublicKey(key))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Checks that an admin signed `proof` (whatever site and epoch it names: the caller
    /// compares those with what it is asked to believe).
    pub fn verify(&self, proof: &Promotion) -> Result<(), ProofError> {
        if proof.signature.len() != SIGNATURE_LEN {
            return Err(ProofError::Malformed(proof.signature.len()));
        }
        UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(&message(&proof.site_id, proof.epoch), &proof.signature)
            .map_err(|_| ProofError::BadSignature {
                site_id: proof.site_id.clone(),
                epoch: proof.epoch,
            })
    }
}

impl ProofCheck for PublicKey {
    fn check(&self, proof: &Promotion) -> Result<(), String> {
        self.verify(proof).map_err(|e| e.to_string())
    }
}

/// The admins' private key: signs promotions.
pub struct PrivateKey(Ed25519KeyPair);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(public {})", self.public_key().to_hex())
    }
}

impl PrivateKey {
    /// A new key pair, with its PKCS#8 document (what the key file holds).
    pub fn generate() -> Result<(PrivateKey, Vec<u8>), String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| "cannot generate a key: no system randomness".to_string())?;
        let key = PrivateKey::from_pkcs8(pkcs8.as_ref())?;
        Ok((key, pkcs8.as_ref().to_vec()))
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<PrivateKey, String> {
        Ed25519KeyPair::from_pkcs8(der)
            .map(PrivateKey)
            .map_err(|e| format!("not an Ed25519 PKCS#8 private key: {e}"))
    }

    /// The key file's text: the PKCS#8 document in hex.
    pub fn parse(text: &str) -> Result<PrivateKey, String> {
        let der = hex::decode(text.trim())
            .map_err(|e| format!("a promotion key file holds hex digits: {e}"))?;
        PrivateKey::from_pkcs8(&der)
    }

    pub fn public_key(&self) -> PublicKey {
        let mut key = [0; PUBLIC_KEY_LEN];
        key.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(key)
    }

    /// The proof that an admin promoted `site_id` to `epoch`.
    pub fn sign(&self, site_id: &str, epoch: u64) -> Promotion {
        Promotion {
            site_id: site_id.to_string(),
            epoch,
            signature: self.0.sign(&message(site_id, epoch)).as_ref().to_vec(),
        }
    }
}

/// Reads a private key file.
pub fn read_key_file(path: &Path) -> Result<PrivateKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the promotion key file {}: {e}", path.display()))?;
    PrivateKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a private key file that did not exist, readable by its owner only.
pub fn write_key_file(path: &Path, pkcs8: &[u8]) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    writeln!(file, "{}", hex::encode(pkcs8))
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> PrivateKey {
        PrivateKey::generate().unwrap().0
    }

    #[test]
    fn a_signed_promotion_verifies_with_the_public_key() {
        let k = key();
        let p = k.sign("s1", 2);
        assert_eq!(p.signature.len(), SIGNATURE_LEN);
        k.public_key().verify(&p).unwrap();
        let again = PublicKey::parse(&k.public_key().to_hex()).unwrap();
        again.verify(&p).unwrap();
    }

    #[test]
    fn a_proof_for_another_site_or_epoch_or_key_is_refused() {
        let k = key();
        let public = k.public_key();
        let p = k.sign("s1", 2);
        let other_site = Promotion {
            site_id: "s2".into(),
            ..p.clone()
        };
        let other_epoch = Promotion {
            epoch: 3,
            ..p.clone()
        };
        let other_key = key().sign("s1", 2);
        for bad in [other_site, other_epoch, other_key] {
            assert!(
                matches!(public.verify(&bad), Err(ProofError::BadSignature { .. })),
                "{bad:?}"
            );
        }
        let mut forged = p.clone();
        forged.signature[10] ^= 1;
        assert!(public.verify(&forged).is_err());
        let truncated = Promotion {
            signature: p.signature[..63].to_vec(),
            ..p.clone()
        };
        assert_eq!(public.verify(&truncated), Err(ProofError::Malformed(63)));
        let empty = Promotion {
            signature: Vec::new(),
            ..p
        };
        assert_eq!(public.verify(&empty), Err(ProofError::Malformed(0)));
    }

    #[test]
    fn messages_are_domain_separated_and_distinct() {
        let m = message("s1", 2);
        assert!(m.starts_with(DOMAIN));
        assert_ne!(message("s1", 2), message("s1", 3));
        assert_ne!(message("s1", 2), message("s12", 2));
        assert_eq!(&m[m.len() - 8..], &2u64.to_be_bytes());
    }

    #[test]
    fn malformed_public_keys_are_refused_with_the_reason() {
        assert!(PublicKey::parse("zz").unwrap_err().contains("hex digits"));
        assert!(PublicKey::parse("abcd").unwrap_err().contains("not 4"));
        assert!(PublicKey::parse(&"0".repeat(64)).is_ok());
    }

    #[test]
    fn a_key_file_round_trips_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let (k, der) = PrivateKey::generate().unwrap();
        write_key_file(&path, &der).unwrap();
        let read = read_key_file(&path).unwrap();
        assert_eq!(read.public_key(), k.public_key());
        assert!(write_key_file(&path, &der).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(PrivateKey::parse("00").is_err());
    }

    proptest! {
        #[test]
        fn no_bytes_make_verification_panic_or_pass(
            site in ".{0,40}",
            epoch in any::<u64>(),
            signature in proptest::collection::vec(any::<u8>(), 0..100),
            key in proptest::collection::vec(any::<u8>(), 32),
        ) {
            let public = PublicKey(key.try_into().unwrap());
            let proof = Promotion { site_id: site, epoch, signature };
            prop_assert!(public.verify(&proof).is_err());
            let _ = PrivateKey::parse(&hex::encode(&proof.signature));
            let _ = PublicKey::parse(&proof.site_id);
        }
    }
}
