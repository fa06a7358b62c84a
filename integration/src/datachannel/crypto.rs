//! The agent's half of KMS session encryption (agent `session/crypto/blockcipher.go`):
//! the data key the client made, decrypted by KMS with the session's
//! context, split so that the agent seals with the first 32 bytes and opens
//! with the last 32; payloads are `nonce(12) ‖ AES-256-GCM ciphertext ‖ tag`.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

pub(crate) struct BlockCipher {
    seal: Aes256Gcm,
    open: Aes256Gcm,
}

impl BlockCipher {
    /// `plaintext` is KMS's 64-byte answer. With `wrong_key` (a fault) the
    /// agent seals with a random key instead, so nothing it sends decrypts.
    pub(crate) fn new(plaintext: &[u8], wrong_key: bool) -> Option<BlockCipher> {
        if plaintext.len() != 64 {
            return None;
        }
        let mut seal_key = plaintext[..32].to_vec();
        if wrong_key {
            rand::rng().fill_bytes(&mut seal_key);
        }
        Some(BlockCipher {
            seal: Aes256Gcm::new_from_slice(&seal_key).ok()?,
            open: Aes256Gcm::new_from_slice(&plaintext[32..]).ok()?,
        })
    }

    pub(crate) fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let mut wire = nonce.to_vec();
        wire.extend(
            self.seal
                .encrypt(&Nonce::from(nonce), plain)
                .expect("AES-GCM encrypts"),
        );
        wire
    }

    pub(crate) fn decrypt(&self, wire: &[u8]) -> Option<Vec<u8>> {
        let nonce: [u8; 12] = wire.get(..12)?.try_into().ok()?;
        self.open.decrypt(&Nonce::from(nonce), &wire[12..]).ok()
    }
}
