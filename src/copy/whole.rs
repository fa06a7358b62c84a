//! The whole-file SHA-256 of the receiving side, made while the copy runs.
//! A follower hashes each range once it and every range before it are done,
//! so sealing a file waits for its last range only instead of reading the
//! whole file again. Uploads follow on the far side (one exec channel whose
//! `dd` reads the ranges the follower names, piped into one `sha256sum`),
//! downloads here. A follower that cannot go on (its session died, a read
//! failed) gives no hash, and the seal hashes the whole file as before.
//! The far side's follower then also moves the part into place when told
//! the hashes agreed, so that sealing an upload starts no command.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::fleet::{ChannelPlace, Worker};
use super::remote;
use crate::ssh_client::Pipe;

/// Hashes a file's ranges in order as they are reported done.
pub struct Follower {
    done: mpsc::UnboundedSender<u64>,
    hash: JoinHandle<Option<Whole>>,
}

/// A follower's result: the digest, and for a far-side follower, its
/// channel, which moves the part into place.
pub struct Whole {
    pub digest: String,
    pub mover: Option<Mover>,
}

/// The far side's follower once it has given its digest; it waits to be
/// told whether to move the part into place.
pub struct Mover {
    pipe: Pipe,
    _place: ChannelPlace,
}

impl Mover {
    /// The hashes agreed: moves the part over its destination. False when
    /// that was not confirmed; the caller then runs [`remote::rename`],
    /// which says why.
    pub async fn seal(mut self) -> bool {
        let sealed = async {
            self.pipe.send(b"seal\n".to_vec()).await?;
            self.pipe.line(100).await
        };
        let sealed = sealed.await;
        self.pipe.close().await;
        matches!(sealed.as_deref(), Ok("sealed"))
    }

    /// Ends the follower, leaving the part where it is.
    pub async fn abandon(self) {
        self.pipe.close().await;
    }
}

/// Where the ranges are hashed.
enum Sink {
    /// Our part file.
    Local { path: PathBuf, hash: Sha256 },
    /// The far side's follower command ([`remote::follow_ranges`]).
    Remote(Mover),
}

impl Follower {
    /// Follows `path` here; `ranges` are each range's offset and length.
    pub fn local(path: PathBuf, ranges: Vec<(u64, u64)>) -> Follower {
        Follower::spawn(
            ranges,
            Sink::Local {
                path,
                hash: Sha256::new(),
            },
        )
    }

    /// Follows `part` on the far side, over `worker`'s connection; once
    /// sealed it is moved over `dest`, cut to `size`, with `mode`.
    pub async fn remote(
        worker: &Worker,
        part: &str,
        range_size: u64,
        ranges: Vec<(u64, u64)>,
        (dest, size, mode): (&str, u64, u32),
    ) -> anyhow::Result<Follower> {
        let place = worker
            .hold_channel()
            .context("this session holds as many whole-file hashes as it may")?;
        let script = remote::follow_ranges(part, range_size, dest, size, mode);
        let pipe = worker.pipe(&script).await?;
        Ok(Follower::spawn(
            ranges,
            Sink::Remote(Mover {
                pipe,
                _place: place,
            }),
        ))
    }

    fn spawn(ranges: Vec<(u64, u64)>, sink: Sink) -> Follower {
        let (done, reports) = mpsc::unbounded_channel();
        Follower {
            done,
            hash: tokio::spawn(follow(reports, ranges, sink)),
        }
    }

    /// Range `index` is done and verified; it is never written again.
    pub fn range_done(&self, index: u64) {
        let _ = self.done.send(index);
    }

    /// The digest of every range in order, once all were reported, or
    /// `None` when the follower could not follow.
    pub async fn finish(self) -> Option<Whole> {
        drop(self.done);
        self.hash.await.ok().flatten()
    }
}

async fn follow(
    mut reports: mpsc::UnboundedReceiver<u64>,
    ranges: Vec<(u64, u64)>,
    mut sink: Sink,
) -> Option<Whole> {
    let count = ranges.len() as u64;
    let mut waiting = BTreeSet::new();
    let mut next = 0;
    let mut ok = true;
    while let Some(index) = reports.recv().await {
        waiting.insert(index);
        while ok && next < count && waiting.remove(&next) {
            ok = sink.take(next, ranges[next as usize]).await;
            next += 1;
        }
    }
    if !ok || next != count {
        tracing::debug!(next, count, "the whole-file hash could not follow the copy");
        if let Sink::Remote(mover) = sink {
            mover.abandon().await;
        }
        return None;
    }
    sink.digest().await
}

impl Sink {
    /// Hashes range `index`; false when it could not.
    async fn take(&mut self, index: u64, (offset, len): (u64, u64)) -> bool {
        match self {
            Sink::Local { path, hash } => {
                let (path, mut taken) = (path.clone(), std::mem::take(hash));
                let read = tokio::task::spawn_blocking(move || {
                    let done = hash_span(&path, offset, len, &mut taken);
                    (taken, done)
                })
                .await;
                match read {
                    Ok((taken, Ok(()))) => {
                        *hash = taken;
                        true
                    }
                    Ok((_, Err(error))) => {
                        tracing::debug!(%error, "cannot read the part back to hash it");
                        false
                    }
                    Err(_) => false,
                }
            }
            Sink::Remote(mover) => {
                let line = format!("{index}\n").into_bytes();
                mover.pipe.send(line).await.is_ok()
            }
        }
    }

    async fn digest(self) -> Option<Whole> {
        match self {
            Sink::Local { hash, .. } => Some(Whole {
                digest: super::engine::hex(hash),
                mover: None,
            }),
            Sink::Remote(mut mover) => {
                let line = async {
                    mover.pipe.send(b"end\n".to_vec()).await?;
                    mover.pipe.line(200).await
                };
                match line.await.map(|line| remote::digest(&line)) {
                    Ok(Some(digest)) => Some(Whole {
                        digest,
                        mover: Some(mover),
                    }),
                    outcome => {
                        if let Err(error) = outcome {
                            tracing::debug!(error = %format!("{error:#}"), "the far side's whole-file hash was lost");
                        }
                        mover.abandon().await;
                        None
                    }
                }
            }
        }
    }
}

/// Adds `len` bytes of `path` from `offset` to `hash`.
fn hash_span(
    path: &std::path::Path,
    offset: u64,
    len: u64,
    hash: &mut Sha256,
) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let seen = super::engine::hash_from(file.take(len), hash)?;
    if seen != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{seen} of {len} bytes at offset {offset}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(len: usize, range: u64) -> (tempfile::TempDir, PathBuf, Vec<u8>, Vec<(u64, u64)>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        let data: Vec<u8> = (0..len as u32).map(|i| (i * 31 % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let ranges = (0..(len as u64).div_ceil(range))
            .map(|k| (k * range, range.min(len as u64 - k * range)))
            .collect();
        (dir, path, data, ranges)
    }

    fn sha(data: &[u8]) -> String {
        super::super::engine::hex(Sha256::new_with_prefix(data))
    }

    #[tokio::test]
    async fn ranges_done_in_any_order_hash_as_the_whole_file() {
        let (_dir, path, data, ranges) = setup(10_007, 1000);
        let follower = Follower::local(path, ranges);
        for index in [3, 0, 10, 1, 2, 9, 4, 8, 5, 7, 6] {
            follower.range_done(index);
        }
        assert_eq!(follower.finish().await.map(|w| w.digest), Some(sha(&data)));
    }

    #[tokio::test]
    async fn a_range_never_done_gives_no_hash() {
        let (_dir, path, _, ranges) = setup(5000, 1000);
        let follower = Follower::local(path, ranges);
        for index in [0, 1, 3, 4] {
            follower.range_done(index);
        }
        assert!(follower.finish().await.is_none());
    }

    #[tokio::test]
    async fn a_part_shorter_than_its_ranges_gives_no_hash() {
        let (_dir, path, _, ranges) = setup(5000, 1000);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4500)
            .unwrap();
        let follower = Follower::local(path, ranges);
        for index in 0..5 {
            follower.range_done(index);
        }
        assert!(follower.finish().await.is_none());
    }
}
