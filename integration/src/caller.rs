//! Who is calling: the fake tells callers apart by the access key id in the
//! SigV4 `Authorization` header (`Credential=<key>/<date>/<region>/<service>/
//! aws4_request`), as IAM does, and answers each call as the identity seeded
//! for that key. Signatures are not checked.

use std::ops::{Deref, DerefMut};
use std::sync::MutexGuard;

use axum::http::HeaderMap;

use crate::world::{Identity, SharedWorld, World};

/// The access key id a request was signed with, if it was signed.
pub(crate) fn access_key_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let credential = value.split("Credential=").nth(1)?;
    let key = credential.split('/').next()?.trim();
    (!key.is_empty()).then(|| key.to_owned())
}

/// The locked world with `identity` set to the caller of one request; the
/// default identity comes back when the guard is dropped, so every reader
/// of `world.identity` (denial messages, the event log, session owners)
/// sees the caller without being told.
pub(crate) struct CallerWorld<'a> {
    guard: MutexGuard<'a, World>,
    default: Option<Identity>,
}

impl<'a> CallerWorld<'a> {
    pub(crate) fn lock(world: &'a SharedWorld, access_key: Option<&str>) -> CallerWorld<'a> {
        let mut guard = world.lock().unwrap_or_else(|e| e.into_inner());
        let seeded = access_key.and_then(|key| guard.identities.get(key).cloned());
        let default = seeded.map(|caller| std::mem::replace(&mut guard.identity, caller));
        CallerWorld { guard, default }
    }
}

impl Deref for CallerWorld<'_> {
    type Target = World;
    fn deref(&self) -> &World {
        &self.guard
    }
}

impl DerefMut for CallerWorld<'_> {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.guard
    }
}

impl Drop for CallerWorld<'_> {
    fn drop(&mut self) {
        if let Some(default) = self.default.take() {
            self.guard.identity = default;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn the_key_picks_the_identity_for_the_lock_only() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDBOB/20261201/eu-west-1/ssm/aws4_request, \
             SignedHeaders=host, Signature=abc"
                .parse()
                .unwrap(),
        );
        assert_eq!(access_key_id(&headers).as_deref(), Some("AKIDBOB"));
        assert_eq!(access_key_id(&HeaderMap::new()), None);

        let bob = Identity {
            arn: "arn:aws:sts::123456789012:assumed-role/Developer/bob".into(),
            user_id: "AROAEXAMPLEDEVELOPER:bob".into(),
            ..Identity::default()
        };
        let world: SharedWorld = Arc::new(Mutex::new(World::default()));
        world
            .lock()
            .unwrap()
            .identities
            .insert("AKIDBOB".into(), bob.clone());
        assert_eq!(CallerWorld::lock(&world, Some("AKIDBOB")).identity, bob);
        assert_eq!(world.lock().unwrap().identity, Identity::default());
        assert_eq!(
            CallerWorld::lock(&world, Some("testing")).identity,
            Identity::default()
        );
    }
}
