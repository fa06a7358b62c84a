//! KMS session encryption, the client's half (plugin `src/encryption/encrypter.go`,
//! agent `agent/session/crypto/blockcipher.go`): a 64-byte data key from
//! `kms:GenerateDataKey`, split in two AES-256-GCM keys, payloads sent as
//! `nonce(12) ‖ ciphertext ‖ tag(16)` with no associated data.
//!
//! The KMS call itself is the binary's (through `SessionControl::data_key`):
//! this module only holds the keys. Nothing here logs or prints key material.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

/// `NumberOfBytes` of the GenerateDataKey call: two 32-byte keys.
pub const DATA_KEY_BYTES: usize = 64;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The encryption context the agent decrypts the data key with
/// (`blockcipher.go` `UpdateEncryptionKey`).
pub fn encryption_context(session_id: &str, target_id: &str) -> [(&'static str, String); 2] {
    [
        ("aws:ssm:SessionId", session_id.to_owned()),
        ("aws:ssm:TargetId", target_id.to_owned()),
    ]
}

/// A GenerateDataKey answer. `Debug` hides the plaintext.
#[derive(Clone)]
pub struct DataKey {
    /// `CiphertextBlob`: sent to the agent as `KMSCipherTextKey`.
    pub ciphertext: Vec<u8>,
    /// `Plaintext`: [`DATA_KEY_BYTES`] bytes.
    pub plaintext: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("ciphertext_len", &self.ciphertext.len())
            .field("plaintext", &"<redacted>")
            .finish()
    }
}

/// Why the binary could not supply a data key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// No KMS client here: the handshake answers Unsupported (status 3).
    Unsupported(String),
    /// GenerateDataKey failed (denied, no such key…): answered Failed (status 2).
    Failed(String),
}

/// Why a payload could not be decrypted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the data key has {0} bytes, not 64")]
    KeyLength(usize),
    #[error("an encrypted payload of {0} bytes is shorter than its nonce and tag")]
    Short(usize),
    #[error("a payload does not decrypt with the session's data key")]
    Mismatch,
}

/// The two ciphers of one session, seen from the client.
pub struct SessionCipher {
    /// Client → agent: the second half of the data key.
    seal: Aes256Gcm,
    /// Agent → client: the first half.
    open: Aes256Gcm,
}

impl SessionCipher {
    /// The plugin's split: `plaintext[..32]` decrypts what the agent sends,
    /// `plaintext[32..]` encrypts what the client sends.
    pub fn client(key: &DataKey) -> Result<SessionCipher, CryptoError> {
        if key.plaintext.len() != DATA_KEY_BYTES {
            return Err(CryptoError::KeyLength(key.plaintext.len()));
        }
        let (agent_to_client, client_to_agent) = key.plaintext.split_at(DATA_KEY_BYTES / 2);
        let cipher =
            |k: &[u8]| Aes256Gcm::new_from_slice(k).map_err(|_| CryptoError::KeyLength(k.len()));
        Ok(SessionCipher {
            seal: cipher(client_to_agent)?,
            open: cipher(agent_to_client)?,
        })
    }

    /// Encrypts one payload with a fresh random nonce.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .seal
            .encrypt(&Nonce::from(nonce), plain)
            .expect("AES-GCM encrypts any payload under 64 GiB");
        let mut wire = Vec::with_capacity(NONCE_LEN + sealed.len());
        wire.extend_from_slice(&nonce);
        wire.extend_from_slice(&sealed);
        wire
    }

    /// Decrypts one payload from the agent.
    pub fn open(&self, wire: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if wire.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Short(wire.len()));
        }
        let (nonce, sealed) = wire.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce length");
        self.open
            .decrypt(&Nonce::from(nonce), sealed)
            .map_err(|_| CryptoError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DataKey {
        DataKey {
            ciphertext: vec![1, 2, 3],
            plaintext: (0..64).collect(),
        }
    }

    /// The agent's view: it seals with the first half and opens with the second.
    fn agent_seal(plain: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new_from_slice(&key().plaintext[..32]).unwrap();
        let nonce = [7u8; 12];
        let mut wire = nonce.to_vec();
        wire.extend(cipher.encrypt(&Nonce::from(nonce), plain).unwrap());
        wire
    }

    #[test]
    fn halves_are_split_as_the_plugin_does() {
        let cipher = SessionCipher::client(&key()).unwrap();
        assert_eq!(cipher.open(&agent_seal(b"ls\r")).unwrap(), b"ls\r");
        let sent = cipher.seal(b"hello");
        assert_eq!(sent.len(), 12 + 5 + 16);
        let agent_open = Aes256Gcm::new_from_slice(&key().plaintext[32..]).unwrap();
        let nonce: [u8; 12] = sent[..12].try_into().unwrap();
        assert_eq!(
            agent_open
                .decrypt(&Nonce::from(nonce), &sent[12..])
                .unwrap(),
            b"hello"
        );
    }

    #[test]
    fn tampering_and_wrong_keys_are_refused() {
        let cipher = SessionCipher::client(&key()).unwrap();
        let mut wire = agent_seal(b"secret");
        wire[14] ^= 1;
        assert_eq!(cipher.open(&wire), Err(CryptoError::Mismatch));
        assert_eq!(cipher.open(&[0; 10]), Err(CryptoError::Short(10)));
        let short = DataKey {
            ciphertext: vec![],
            plaintext: vec![0; 32],
        };
        assert!(matches!(
            SessionCipher::client(&short),
            Err(CryptoError::KeyLength(32))
        ));
        assert!(!format!("{:?}", key()).contains("0, 1, 2"));
    }
}
