//! Sealing the shared token: whoever can read Redis must not get a usable
//! token. AES-256-GCM with a key derived (HKDF-SHA256) from the client
//! secret, which every replica has and Redis never sees; a fresh random
//! nonce for every write; the key name and generation as associated data,
//! so that a sealed token cannot be moved to another key or generation.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// Changing the derivation changes this label, so that replicas of two
/// versions never misread each other's tokens (they fail to open instead).
const SALT: &[u8] = b"fitbit-proxy shared token v1";

/// The sealing key of one client id.
pub(crate) struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

impl Sealer {
    /// The key for `client_id`, derived from its `client_secret`.
    pub(crate) fn new(client_id: &str, client_secret: &str) -> Sealer {
        let prk = Salt::new(HKDF_SHA256, SALT).extract(client_secret.as_bytes());
        let info = [client_id.as_bytes()];
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Sealer {
            key: LessSafeKey::new(UnboundKey::from(okm)),
            rng: SystemRandom::new(),
        }
    }

    /// `nonce || ciphertext || tag`; `None` only if the system's random
    /// number generator fails.
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        sealed.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .ok()?;
        sealed.extend_from_slice(&body);
        Some(sealed)
    }

    /// The plaintext, or `None` when `sealed` was not sealed by this key
    /// with this `aad` (another secret, another key, tampered with).
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_tokens_open_only_with_the_same_secret_and_label() {
        let sealer = Sealer::new("23ABCD", "SECRET_CANARY_seal");
        let token = b"Bearer TOKEN_CANARY_seal";
        let a = sealer.seal(b"k:1", token).unwrap();
        let b = sealer.seal(b"k:1", token).unwrap();
        assert_ne!(a, b, "a fresh nonce for every write");
        for sealed in [&a, &b] {
            assert!(!sealed.windows(12).any(|w| w == b"TOKEN_CANARY"));
            assert_eq!(sealer.open(b"k:1", sealed).as_deref(), Some(&token[..]));
        }
        assert_eq!(sealer.open(b"k:2", &a), None, "another generation");
        let other_secret = Sealer::new("23ABCD", "another secret");
        assert_eq!(other_secret.open(b"k:1", &a), None);
        let other_client = Sealer::new("99ZZZZ", "SECRET_CANARY_seal");
        assert_eq!(other_client.open(b"k:1", &a), None);
        let mut tampered = a.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.open(b"k:1", &tampered), None);
        assert_eq!(sealer.open(b"k:1", &a[..5]), None);
        assert!(!format!("{sealer:?}").contains("SECRET"));
    }
}
