//! Shared-key encryption of gossip datagrams, as Serf's `encrypt`: AES-256-GCM with a keyring
//! whose primary key encrypts and whose every key is tried on decrypt, so keys can be rotated
//! (install the new key everywhere, make it primary everywhere, then remove the old one).

use aes_gcm::aead::{AeadInOut, Nonce, Tag};
use aes_gcm::{Aes256Gcm, KeyInit};

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Bytes encryption adds to a datagram.
pub const ENCRYPTION_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Serf allows 16; every key is tried on each received datagram, so keep the list short.
pub const MAX_KEYS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("a keyring needs at least one key")]
    Empty,
    #[error("a keyring holds at most {MAX_KEYS} keys")]
    TooManyKeys,
    #[error("the primary key cannot be removed; make another key primary first")]
    RemovePrimary,
    #[error("key is not in the keyring")]
    UnknownKey,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecryptError {
    #[error("encrypted datagram too short")]
    Truncated,
    #[error("no key in the keyring authenticates the datagram")]
    NoKeyMatched,
}

/// The keys in use; the first is the primary.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<([u8; KEY_LEN], Aes256Gcm)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Keyring")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Keyring {
    /// A keyring whose primary key is `primary`, with `others` accepted on decrypt.
    pub fn new(primary: [u8; KEY_LEN], others: &[[u8; KEY_LEN]]) -> Result<Self, KeyringError> {
        let mut ring = Self { keys: Vec::new() };
        ring.install(primary)?;
        for key in others {
            ring.install(*key)?;
        }
        Ok(ring)
    }

    fn cipher(key: &[u8; KEY_LEN]) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(key).expect("a 32-byte key is a valid AES-256 key")
    }

    /// Accepts `key` on decrypt; installing a key twice changes nothing.
    pub fn install(&mut self, key: [u8; KEY_LEN]) -> Result<(), KeyringError> {
        if self.keys.iter().any(|(k, _)| *k == key) {
            return Ok(());
        }
        if self.keys.len() == MAX_KEYS {
            return Err(KeyringError::TooManyKeys);
        }
        self.keys.push((key, Self::cipher(&key)));
        Ok(())
    }

    /// Encrypts with `key` from now on; it must be installed.
    pub fn use_key(&mut self, key: &[u8; KEY_LEN]) -> Result<(), KeyringError> {
        let at = self
            .keys
            .iter()
            .position(|(k, _)| k == key)
            .ok_or(KeyringError::UnknownKey)?;
        self.keys.swap(0, at);
        Ok(())
    }

    pub fn remove(&mut self, key: &[u8; KEY_LEN]) -> Result<(), KeyringError> {
        let at = self
            .keys
            .iter()
            .position(|(k, _)| k == key)
            .ok_or(KeyringError::UnknownKey)?;
        if at == 0 {
            return Err(KeyringError::RemovePrimary);
        }
        self.keys.remove(at);
        Ok(())
    }

    pub fn primary(&self) -> &[u8; KEY_LEN] {
        &self.keys[0].0
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Appends `nonce || ciphertext || tag` of `plain` to `out`, authenticating `header`.
    pub(crate) fn seal(
        &self,
        header: &[u8],
        nonce: [u8; NONCE_LEN],
        plain: &[u8],
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let nonce = Nonce::<Aes256Gcm>::from(nonce);
        let tag = self.keys[0]
            .1
            .encrypt_inout_detached(&nonce, header, out[start..].as_mut().into())
            .expect("a datagram is far below AES-GCM's length limits");
        out.extend_from_slice(tag.as_slice());
    }

    /// Decrypts `nonce || ciphertext || tag` with each key in turn.
    pub(crate) fn open(&self, header: &[u8], sealed: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if sealed.len() < ENCRYPTION_OVERHEAD {
            return Err(DecryptError::Truncated);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).expect("split at NONCE_LEN");
        let tag = Tag::<Aes256Gcm>::try_from(tag).expect("split at TAG_LEN");
        let mut plain = ciphertext.to_vec();
        for (_, cipher) in &self.keys {
            if cipher
                .decrypt_inout_detached(&nonce, header, plain.as_mut_slice().into(), &tag)
                .is_ok()
            {
                return Ok(plain);
            }
            // The AEAD trait does not promise an untouched buffer after a failed check, so
            // the next key starts again from the ciphertext.
            plain.copy_from_slice(ciphertext);
        }
        Err(DecryptError::NoKeyMatched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: [u8; KEY_LEN] = [1; KEY_LEN];
    const K2: [u8; KEY_LEN] = [2; KEY_LEN];

    fn sealed(ring: &Keyring, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        ring.seal(b"hdr", [7; NONCE_LEN], plain, &mut out);
        out
    }

    #[test]
    fn round_trip_with_any_installed_key() {
        let sender = Keyring::new(K2, &[]).unwrap();
        let receiver = Keyring::new(K1, &[K2]).unwrap();
        let data = sealed(&sender, b"hello");
        assert_eq!(data.len(), 5 + ENCRYPTION_OVERHEAD);
        assert_eq!(receiver.open(b"hdr", &data).unwrap(), b"hello");
    }

    #[test]
    fn wrong_key_tampering_and_truncation_fail_cleanly() {
        let sender = Keyring::new(K1, &[]).unwrap();
        let stranger = Keyring::new(K2, &[]).unwrap();
        let data = sealed(&sender, b"secret");
        assert_eq!(
            stranger.open(b"hdr", &data),
            Err(DecryptError::NoKeyMatched)
        );
        assert_eq!(
            sender.open(b"other", &data),
            Err(DecryptError::NoKeyMatched)
        );
        let mut flipped = data.clone();
        flipped[NONCE_LEN] ^= 1;
        assert_eq!(
            sender.open(b"hdr", &flipped),
            Err(DecryptError::NoKeyMatched)
        );
        for cut in 0..ENCRYPTION_OVERHEAD {
            assert_eq!(
                sender.open(b"hdr", &data[..cut]),
                Err(DecryptError::Truncated)
            );
        }
        assert!(sender.open(b"hdr", &data[..data.len() - 1]).is_err());
    }

    #[test]
    fn rotation_keeps_old_traffic_readable_until_removed() {
        let mut ring = Keyring::new(K1, &[]).unwrap();
        let old = sealed(&ring, b"old");
        ring.install(K2).unwrap();
        ring.use_key(&K2).unwrap();
        assert_eq!(ring.primary(), &K2);
        assert_eq!(ring.open(b"hdr", &old).unwrap(), b"old");
        assert_eq!(ring.remove(&K2), Err(KeyringError::RemovePrimary));
        ring.remove(&K1).unwrap();
        assert_eq!(ring.open(b"hdr", &old), Err(DecryptError::NoKeyMatched));
        assert_eq!(ring.use_key(&K1), Err(KeyringError::UnknownKey));
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn keyring_size_is_bounded() {
        let mut ring = Keyring::new([0; KEY_LEN], &[]).unwrap();
        for i in 1..MAX_KEYS {
            ring.install([i as u8; KEY_LEN]).unwrap();
        }
        assert_eq!(
            ring.install([0xff; KEY_LEN]),
            Err(KeyringError::TooManyKeys)
        );
        ring.install([0; KEY_LEN]).unwrap();
    }
}
