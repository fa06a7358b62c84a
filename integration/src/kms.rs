//! The fake KMS: `GenerateDataKey` and `Decrypt` in the AWS JSON 1.1 protocol
//! (`POST /`, `X-Amz-Target: TrentService.<Operation>`), for the fake's own
//! seeded keys, in the shapes aws-sdk-kms parses. Enough for Session
//! Manager's KMS encryption: the client asks for a data key, the agent
//! decrypts its ciphertext with the same encryption context.
//!
//! A ciphertext blob here is `key id length ‖ key id ‖ nonce ‖ AES-GCM(data key)`
//! under a random per-key master key, with the encryption context as
//! associated data: a wrong context or another key's blob fails as on KMS.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;

use crate::server::AppState;
use crate::ssm::{check_action, input, recorded, ApiError, ApiResult, Event};
use crate::world::World;

/// The customer managed keys of the account.
#[derive(Clone, Default)]
pub struct Keys {
    /// Seeded name (key id or `alias/…`) → master key.
    keys: BTreeMap<String, [u8; 32]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

/// Why a Decrypt failed, in KMS's error codes.
#[derive(Debug, PartialEq, Eq)]
pub enum DecryptError {
    NotFound(String),
    InvalidCiphertext,
    IncorrectKey,
}

impl Keys {
    pub fn new(names: &[String]) -> Keys {
        let keys = names
            .iter()
            .map(|name| {
                let mut master = [0u8; 32];
                rand::rng().fill_bytes(&mut master);
                (name.clone(), master)
            })
            .collect();
        Keys { keys }
    }

    /// The seeded name a `KeyId` (id, key ARN, alias, alias ARN) refers to.
    fn resolve(&self, key_id: &str) -> Option<&str> {
        let short = key_id
            .strip_prefix("arn:")
            .and_then(|arn| arn.split(':').nth(4))
            .map(|resource| resource.strip_prefix("key/").unwrap_or(resource))
            .unwrap_or(key_id);
        self.keys
            .keys()
            .find(|name| name.as_str() == short)
            .map(String::as_str)
    }

    /// A fresh data key of `bytes` bytes: (ciphertext blob, plaintext).
    pub fn generate(
        &self,
        key_id: &str,
        bytes: usize,
        context: &BTreeMap<String, String>,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let name = self.resolve(key_id)?;
        let mut plaintext = vec![0u8; bytes];
        rand::rng().fill_bytes(&mut plaintext);
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher(&self.keys[name])
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad(context),
                },
            )
            .expect("AES-GCM encrypts a data key");
        let mut blob = vec![u8::try_from(name.len()).unwrap_or(u8::MAX)];
        blob.extend_from_slice(name.as_bytes());
        blob.extend_from_slice(&nonce);
        blob.extend(sealed);
        Some((blob, plaintext))
    }

    /// The plaintext of a blob from [`generate`](Self::generate), checked
    /// against `key_id` (when given) and the encryption context.
    pub fn decrypt(
        &self,
        blob: &[u8],
        key_id: Option<&str>,
        context: &BTreeMap<String, String>,
    ) -> Result<Vec<u8>, DecryptError> {
        let (&len, rest) = blob.split_first().ok_or(DecryptError::InvalidCiphertext)?;
        let len = usize::from(len);
        if rest.len() < len + 12 {
            return Err(DecryptError::InvalidCiphertext);
        }
        let name =
            std::str::from_utf8(&rest[..len]).map_err(|_| DecryptError::InvalidCiphertext)?;
        let master = self.keys.get(name).ok_or(DecryptError::InvalidCiphertext)?;
        if let Some(key_id) = key_id {
            match self.resolve(key_id) {
                None => return Err(DecryptError::NotFound(key_id.to_owned())),
                Some(other) if other != name => return Err(DecryptError::IncorrectKey),
                Some(_) => {}
            }
        }
        let nonce: [u8; 12] = rest[len..len + 12].try_into().expect("12 bytes");
        cipher(master)
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &rest[len + 12..],
                    aad: &aad(context),
                },
            )
            .map_err(|_| DecryptError::InvalidCiphertext)
    }
}

fn cipher(master: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new_from_slice(master).expect("a 32-byte key")
}

/// The context as associated data: its pairs in key order.
fn aad(context: &BTreeMap<String, String>) -> Vec<u8> {
    serde_json::to_vec(context).expect("a string map serialises")
}

/// The key ARN KMS reports for a seeded name.
pub fn key_arn(world: &World, name: &str) -> String {
    format!(
        "arn:aws:kms:{}:{}:{name}",
        world.region,
        world.identity.account,
        name = if name.starts_with("alias/") {
            name.to_owned()
        } else {
            format!("key/{name}")
        }
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateInput {
    key_id: String,
    number_of_bytes: Option<usize>,
    key_spec: Option<String>,
    #[serde(default)]
    encryption_context: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptInput {
    ciphertext_blob: String,
    key_id: Option<String>,
    #[serde(default)]
    encryption_context: BTreeMap<String, String>,
}

/// Answers one `TrentService.<operation>` call.
pub(crate) fn handle(state: &AppState, operation: &str, body: &[u8]) -> ApiResult {
    let mut world = state.world.lock().unwrap();
    match operation {
        "GenerateDataKey" => {
            let req: GenerateInput = input(body)?;
            let arn = key_arn(&world, &req.key_id);
            let result = generate(&world, &req);
            recorded(&mut world, "kms:GenerateDataKey", Event::on(&arn), result)
        }
        "Decrypt" => {
            let req: DecryptInput = input(body)?;
            let result = decrypt(&world, &req);
            recorded(&mut world, "kms:Decrypt", Event::default(), result)
        }
        other => Err(ApiError::new(
            "UnsupportedOperationException",
            format!("the fake KMS does not implement {other}"),
        )),
    }
}

fn generate(world: &World, req: &GenerateInput) -> ApiResult {
    let Some(name) = world.kms.resolve(&req.key_id).map(str::to_owned) else {
        return Err(not_found(world, &req.key_id));
    };
    check_action(world, "kms:GenerateDataKey", &key_arn(world, &name))?;
    let bytes = match (req.number_of_bytes, req.key_spec.as_deref()) {
        (Some(n), None) if (1..=1024).contains(&n) => n,
        (None, Some("AES_256")) => 32,
        (None, Some("AES_128")) => 16,
        _ => {
            return Err(ApiError::validation(
                "Please specify either number of bytes or key spec.",
            ))
        }
    };
    let (blob, plaintext) = world
        .kms
        .generate(&name, bytes, &req.encryption_context)
        .expect("the key resolved");
    Ok(json!({
        "CiphertextBlob": BASE64.encode(blob),
        "Plaintext": BASE64.encode(plaintext),
        "KeyId": key_arn(world, &name),
    }))
}

fn decrypt(world: &World, req: &DecryptInput) -> ApiResult {
    let blob = BASE64
        .decode(&req.ciphertext_blob)
        .map_err(|_| ApiError::new("InvalidCiphertextException", ""))?;
    let plaintext = world
        .kms
        .decrypt(&blob, req.key_id.as_deref(), &req.encryption_context)
        .map_err(|e| decrypt_error(world, e))?;
    let name = std::str::from_utf8(&blob[1..=usize::from(blob[0])]).unwrap_or_default();
    check_action(world, "kms:Decrypt", &key_arn(world, name))?;
    Ok(json!({
        "KeyId": key_arn(world, name),
        "Plaintext": BASE64.encode(plaintext),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

fn not_found(world: &World, key_id: &str) -> ApiError {
    ApiError::new(
        "NotFoundException",
        format!("Key '{}' does not exist", key_arn(world, key_id)),
    )
}

/// KMS's error for a failed Decrypt.
pub fn decrypt_error(world: &World, error: DecryptError) -> ApiError {
    match error {
        DecryptError::NotFound(key) => not_found(world, &key),
        DecryptError::InvalidCiphertext => ApiError::new("InvalidCiphertextException", ""),
        DecryptError::IncorrectKey => ApiError::new(
            "IncorrectKeyException",
            "The key ID in the request does not identify a CMK that can perform this operation.",
        ),
    }
}

/// An error as the Go SDK prints it, for the agent's messages.
pub fn error_text(error: &ApiError) -> String {
    format!("{}: {}", error.code, error.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(session: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("aws:ssm:SessionId".to_owned(), session.to_owned()),
            ("aws:ssm:TargetId".to_owned(), "mi-1".to_owned()),
        ])
    }

    #[test]
    fn data_keys_decrypt_only_with_their_key_and_context() {
        let keys = Keys::new(&["alias/ssm".to_owned(), "k2".to_owned()]);
        let (blob, plain) = keys
            .generate("arn:aws:kms:us-east-1:1:alias/ssm", 64, &context("s1"))
            .unwrap();
        assert_eq!(plain.len(), 64);
        assert_eq!(
            keys.decrypt(&blob, Some("alias/ssm"), &context("s1")),
            Ok(plain)
        );
        assert_eq!(
            keys.decrypt(&blob, None, &context("s2")),
            Err(DecryptError::InvalidCiphertext)
        );
        assert_eq!(
            keys.decrypt(
                &blob,
                Some("arn:aws:kms:us-east-1:1:key/k2"),
                &context("s1")
            ),
            Err(DecryptError::IncorrectKey)
        );
        assert!(keys.generate("alias/other", 64, &context("s1")).is_none());
    }
}
