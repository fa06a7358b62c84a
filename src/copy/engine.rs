//! The copy itself: every file's ranges on one queue served by N workers,
//! each range verified (SHA-256 of the bytes as they landed against the
//! source's), a failed session's range put back for another worker, and each
//! file sealed (cut to size, whole-file SHA-256 on both sides, renamed into
//! place) once its ranges are done. Progress is kept in the state files.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::anyhow;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::{exit, Failure};

use super::fleet::{ConnectError, Fleet, Worker};
use super::plan::{self, Direction, Item, Plan};
use super::progress::Progress;
use super::remote;
use super::state::{State, StateFile};
use super::whole::{Follower, Mover};

/// Tries of one range (on any worker) before the copy fails.
const RANGE_ATTEMPTS: u32 = 5;
/// Failed connections in a row before a worker gives up (the others go on).
const WORKER_FAILURES: u32 = 4;
/// The suffix of a file being received.
pub const PART_SUFFIX: &str = ".sm-ssh-part";

/// How a copy runs.
pub struct Settings {
    pub sessions: u16,
    /// `--range-size`, else chosen per file.
    pub range_size: Option<u64>,
    /// The target as the user named it, for messages.
    pub host: String,
    pub instance_id: String,
    /// Where state files live.
    pub state_dir: PathBuf,
}

/// A worker's session being opened, started before the copy was planned.
pub type Early = JoinHandle<Result<Worker, ConnectError>>;

/// What a finished copy did.
pub struct Summary {
    pub files: usize,
    pub bytes: u64,
    /// Bytes moved by this run (resumed ranges are not moved again).
    pub moved: u64,
}

struct FileJob {
    item: Item,
    /// Where the receiving side writes until the file is sealed.
    part: String,
    range_size: u64,
    state: Mutex<State>,
    state_file: StateFile,
    /// Ranges not yet done.
    left: AtomicU64,
    /// Whether the hashes below were started (with the file's first range).
    begun: AtomicBool,
    /// The sending side's whole-file SHA-256, made while the ranges move.
    source_hash: Mutex<Option<JoinHandle<Option<String>>>>,
    /// The receiving side's, followed as ranges are done.
    follower: Mutex<Option<Follower>>,
}

impl FileJob {
    fn range(&self, index: u64) -> (u64, u64) {
        let offset = index * self.range_size;
        (
            offset,
            self.range_size
                .min(self.item.size - offset.min(self.item.size)),
        )
    }
}

#[derive(Clone, Copy, Debug)]
enum Job {
    Range {
        file: usize,
        index: u64,
        attempts: u32,
    },
    Seal {
        file: usize,
        attempts: u32,
    },
}

enum JobError {
    /// The session or SSH connection failed: retry elsewhere, on a new session.
    Transport(anyhow::Error),
    /// The bytes did not verify: retry.
    Mismatch(String),
    /// Stop the copy.
    Fatal(anyhow::Error),
}

struct Shared {
    direction: Direction,
    host: String,
    files: Vec<FileJob>,
    queue: Mutex<VecDeque<Job>>,
    /// Jobs not yet completed (ranges to move, files to seal).
    outstanding: AtomicUsize,
    notify: Notify,
    failure: Mutex<Option<anyhow::Error>>,
    last_error: Mutex<Option<anyhow::Error>>,
    progress: Arc<Progress>,
}

impl Shared {
    fn failed(&self) -> bool {
        self.failure.lock().expect("failure").is_some()
    }

    fn fail(&self, error: anyhow::Error) {
        self.failure.lock().expect("failure").get_or_insert(error);
        self.notify.notify_waiters();
    }

    fn push(&self, job: Job) {
        self.queue.lock().expect("queue").push_back(job);
        self.notify.notify_waiters();
    }

    /// Queues `job` before every other: a file whose ranges are all done is
    /// sealed next, so it is complete as soon as it can be and its
    /// follower's channel closes.
    fn push_first(&self, job: Job) {
        self.queue.lock().expect("queue").push_front(job);
        self.notify.notify_waiters();
    }

    fn done(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.notify.notify_waiters();
        }
    }

    async fn next(&self) -> Option<Job> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.failed() || self.outstanding.load(Ordering::Acquire) == 0 {
                return None;
            }
            if let Some(job) = self.queue.lock().expect("queue").pop_front() {
                return Some(job);
            }
            notified.await;
        }
    }

    fn note(&self, message: String) {
        self.progress.note(&message);
    }
}

/// A planned copy made ready on the far side: directories made, and the
/// ranges an earlier run completed that still verify taken off the list.
pub struct Prepared {
    direction: Direction,
    files: Vec<FileJob>,
    jobs: Vec<Job>,
    /// Bytes already copied by an earlier run.
    skipped: u64,
    /// What to tell the user about resumed files.
    notes: Vec<String>,
}

impl Prepared {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.item.size).sum()
    }
}

/// Makes `plan` ready with the worker that planned it. Everything it does
/// can be done again, on another session, if this one is lost.
pub async fn prepare(first: &Worker, plan: Plan, settings: &Settings) -> anyhow::Result<Prepared> {
    make_dirs(first, &plan, &settings.host).await?;
    let mut prepared = Prepared {
        direction: plan.direction,
        files: Vec::new(),
        jobs: Vec::new(),
        skipped: 0,
        notes: Vec::new(),
    };
    for (i, item) in plan.items.into_iter().enumerate() {
        let file = prepare_file(first, plan.direction, item, settings).await?;
        let ranges = plan::range_count(file.item.size, file.range_size);
        let done = file.state.lock().expect("state").done.clone();
        for index in (0..ranges).filter(|k| !done.contains_key(k)) {
            prepared.jobs.push(Job::Range {
                file: i,
                index,
                attempts: 0,
            });
        }
        prepared.skipped += done.keys().map(|&k| file.range(k).1).sum::<u64>();
        if !done.is_empty() {
            prepared.notes.push(format!(
                "sm-ssh: resuming {}: {} of {ranges} ranges already copied and verified",
                file.item.local.display(),
                done.len()
            ));
        }
        file.left
            .store(ranges - done.len() as u64, Ordering::Release);
        if ranges == done.len() as u64 {
            prepared.jobs.push(Job::Seal {
                file: i,
                attempts: 0,
            });
        }
        prepared.files.push(file);
    }
    Ok(prepared)
}

/// Copies everything `prepared` holds; `first` is the worker that prepared
/// it, `early` the sessions opened meanwhile (those the copy does not need
/// are closed).
pub async fn run(
    fleet: Arc<Fleet>,
    first: Worker,
    early: Vec<Early>,
    prepared: Prepared,
    settings: &Settings,
    progress: Arc<Progress>,
) -> anyhow::Result<Summary> {
    let total_bytes = prepared.total_bytes();
    let Prepared {
        direction,
        files,
        jobs,
        skipped,
        notes,
    } = prepared;
    progress.skip(skipped);
    for note in notes {
        progress.note(&note);
    }
    let shared = Arc::new(Shared {
        direction,
        host: settings.host.clone(),
        outstanding: AtomicUsize::new(
            jobs.iter()
                .filter(|j| matches!(j, Job::Range { .. }))
                .count()
                + files.len(),
        ),
        files,
        queue: Mutex::new(jobs.into()),
        notify: Notify::new(),
        failure: Mutex::default(),
        last_error: Mutex::default(),
        progress: progress.clone(),
    });
    let mut workers = tokio::task::JoinSet::new();
    workers.spawn(work(shared.clone(), fleet.clone(), Some(first), None));
    let ranges_left = shared.queue.lock().expect("queue").len();
    let mut early = early.into_iter();
    for _ in 1..usize::from(settings.sessions).min(ranges_left.max(1)) {
        workers.spawn(work(shared.clone(), fleet.clone(), None, early.next()));
    }
    for surplus in early {
        workers.spawn(close_when_open(fleet.clone(), surplus));
    }
    while workers.join_next().await.is_some() {}
    if let Some(error) = shared.failure.lock().expect("failure").take() {
        return Err(error);
    }
    if shared.outstanding.load(Ordering::Acquire) > 0 {
        let last = shared.last_error.lock().expect("last error").take();
        return Err(anyhow!(
            "every session to {} failed; the copy is incomplete (run the same command again to resume){}",
            settings.host,
            last.map(|e| format!(": {}", crate::error::describe(&e, None).1))
                .unwrap_or_default()
        ));
    }
    Ok(Summary {
        files: shared.files.len(),
        bytes: total_bytes,
        moved: progress.moved(),
    })
}

/// Creates the directories of a `-r` copy on the receiving side.
async fn make_dirs(worker: &Worker, plan: &Plan, host: &str) -> anyhow::Result<()> {
    match plan.direction {
        Direction::Upload => {
            // Keep each command line well under what sshd accepts.
            let mut batch: Vec<&str> = Vec::new();
            let mut length = 0;
            for dir in &plan.dirs {
                batch.push(dir);
                length += dir.len() + 3;
                if length > 32 << 10 {
                    worker
                        .check(&remote::mkdirs(batch.drain(..)), host, dir)
                        .await?;
                    length = 0;
                }
            }
            if let Some(last) = batch.last().copied() {
                worker.check(&remote::mkdirs(batch), host, last).await?;
            }
        }
        Direction::Download => {
            for dir in &plan.dirs {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Failure::new(exit::FAILURE, format!("{dir}: {e}")))?;
            }
        }
    }
    Ok(())
}

/// A file's job, with the ranges an earlier run completed that still verify.
async fn prepare_file(
    worker: &Worker,
    direction: Direction,
    item: Item,
    settings: &Settings,
) -> anyhow::Result<FileJob> {
    let state_file = StateFile::new(&settings.state_dir, direction, &settings.instance_id, &item);
    let part = match direction {
        Direction::Upload => format!("{}{PART_SUFFIX}", item.remote),
        Direction::Download => format!("{}{PART_SUFFIX}", item.local.display()),
    };
    let mut state = state_file.load(&item).unwrap_or_else(|| State {
        size: item.size,
        mtime: item.mtime,
        range_size: settings
            .range_size
            .unwrap_or_else(|| plan::range_size(item.size, settings.sessions.into())),
        done: Default::default(),
    });
    if !state.done.is_empty() {
        let indexes: Vec<u64> = state.done.keys().copied().collect();
        let found = match direction {
            Direction::Upload => {
                let out = worker
                    .check(
                        &remote::hash_ranges(&part, state.range_size, &indexes),
                        &settings.host,
                        &part,
                    )
                    .await
                    .unwrap_or_default();
                out.lines().map(remote::digest).collect::<Vec<_>>()
            }
            Direction::Download => {
                let (path, size) = (PathBuf::from(&part), state.range_size);
                let indexes = indexes.clone();
                tokio::task::spawn_blocking(move || local_range_hashes(&path, size, &indexes))
                    .await?
            }
        };
        let still: Vec<u64> = indexes
            .iter()
            .zip(found.iter().map(Some).chain(std::iter::repeat(None)))
            .filter(|(k, hash)| hash.and_then(Option::as_ref) == state.done.get(k))
            .map(|(k, _)| *k)
            .collect();
        state.done.retain(|k, _| still.contains(k));
    }
    let range_size = state.range_size;
    Ok(FileJob {
        item,
        part,
        range_size,
        state: Mutex::new(state),
        state_file,
        left: AtomicU64::new(0),
        begun: AtomicBool::new(false),
        source_hash: Mutex::default(),
        follower: Mutex::default(),
    })
}

async fn close_when_open(fleet: Arc<Fleet>, early: Early) {
    if let Ok(Ok(worker)) = early.await {
        fleet.close(worker).await;
    }
}

/// One worker: takes jobs until none are left, reconnecting when its
/// session fails; its first session may be one opened `early`.
async fn work(
    shared: Arc<Shared>,
    fleet: Arc<Fleet>,
    mut worker: Option<Worker>,
    mut early: Option<Early>,
) {
    let mut failures = 0;
    while !shared.failed() {
        let current = match worker.take() {
            Some(current) => current,
            None => {
                if shared.outstanding.load(Ordering::Acquire) == 0 {
                    break;
                }
                let connected = match early.take() {
                    Some(pending) => pending.await.unwrap_or_else(|e| {
                        Err(ConnectError {
                            error: anyhow!("a session's setup stopped: {e}"),
                            fatal: false,
                        })
                    }),
                    None => fleet.connect().await,
                };
                match connected {
                    Ok(fresh) => {
                        failures = 0;
                        tracing::debug!(session = fresh.session_id(), "worker connected");
                        fresh
                    }
                    Err(error) if error.fatal => {
                        shared.fail(error.error);
                        break;
                    }
                    Err(error) => {
                        failures += 1;
                        tracing::info!(error = %format!("{:#}", error.error), failures, "a session could not be opened");
                        *shared.last_error.lock().expect("last error") = Some(error.error);
                        if failures >= WORKER_FAILURES {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(250 << failures)).await;
                        continue;
                    }
                }
            }
        };
        let Some(job) = shared.next().await else {
            worker = Some(current);
            break;
        };
        tracing::debug!(session = current.session_id(), ?job, "job started");
        match run_job(&shared, &current, job).await {
            Ok(()) => {
                tracing::debug!(session = current.session_id(), ?job, "job done");
                complete(&shared, job);
                worker = Some(current);
            }
            Err(JobError::Fatal(error)) => {
                shared.fail(error);
                worker = Some(current);
                break;
            }
            Err(JobError::Mismatch(why)) => {
                retry(&shared, job, anyhow!(why));
                worker = Some(current);
            }
            Err(JobError::Transport(error)) => {
                shared.note(format!(
                    "sm-ssh: session {} failed ({}); its work goes to another session",
                    current.session_id(),
                    crate::error::describe(&error, None).1
                ));
                retry(&shared, job, error);
                fleet.close(current).await;
            }
        }
    }
    if let Some(current) = worker {
        fleet.close(current).await;
    }
    if let Some(pending) = early {
        close_when_open(fleet, pending).await;
    }
}

/// Puts `job` back on the queue, or fails the copy after too many tries.
fn retry(shared: &Shared, job: Job, error: anyhow::Error) {
    let again = match job {
        Job::Range {
            file,
            index,
            attempts,
        } => Job::Range {
            file,
            index,
            attempts: attempts + 1,
        },
        Job::Seal { file, attempts } => Job::Seal {
            file,
            attempts: attempts + 1,
        },
    };
    let (Job::Range { attempts, file, .. } | Job::Seal { attempts, file }) = again;
    if attempts >= RANGE_ATTEMPTS {
        shared.fail(error.context(format!(
            "copying {} failed {attempts} times (run the same command again to resume)",
            shared.files[file].item.local.display()
        )));
    } else {
        shared.push(again);
    }
}

fn complete(shared: &Shared, job: Job) {
    if let Job::Range { file, .. } = job {
        if shared.files[file].left.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.push_first(Job::Seal { file, attempts: 0 });
        }
    }
    shared.done();
}

async fn run_job(shared: &Shared, worker: &Worker, job: Job) -> Result<(), JobError> {
    if let Job::Range { file, .. } = job {
        begin(shared, worker, &shared.files[file]).await;
    }
    match (job, shared.direction) {
        (Job::Range { file, index, .. }, Direction::Upload) => {
            upload_range(shared, worker, &shared.files[file], index).await
        }
        (Job::Range { file, index, .. }, Direction::Download) => {
            download_range(shared, worker, &shared.files[file], index).await
        }
        (Job::Seal { file, .. }, direction) => {
            seal(shared, worker, &shared.files[file], direction).await
        }
    }
}

/// With a file's first range, starts the whole-file hashes its seal needs,
/// so that they are made while the ranges move: the source's, and a
/// follower of the receiving side's. Files of one range are left out: their
/// seal costs no more than this would.
async fn begin(shared: &Shared, worker: &Worker, file: &FileJob) {
    let count = plan::range_count(file.item.size, file.range_size);
    if count < 2 || file.begun.swap(true, Ordering::AcqRel) {
        return;
    }
    let ranges = (0..count).map(|k| file.range(k)).collect();
    let (source, follower) = match shared.direction {
        Direction::Upload => {
            let path = file.item.local.clone();
            let source = tokio::task::spawn_blocking(move || sized_hash(&path, None).ok());
            let item = &file.item;
            let dest = (item.remote.as_str(), item.size, item.mode);
            let follower =
                Follower::remote(worker, &file.part, file.range_size, ranges, dest).await;
            let follower = follower
                .inspect_err(|e| tracing::debug!(error = %format!("{e:#}"), "cannot follow the far side's hash"))
                .ok();
            (source, follower)
        }
        Direction::Download => {
            let (_, closed) = tokio::sync::mpsc::channel(1);
            let source = match worker.hold_channel() {
                Some(place) => {
                    let script = remote::hash_file(&file.item.remote);
                    let started = worker.start(&script, closed).await;
                    tokio::spawn(async move {
                        let _place = place;
                        match started.ok()?.await {
                            Ok((0, out)) => remote::digest(&String::from_utf8_lossy(&out)),
                            _ => None,
                        }
                    })
                }
                None => tokio::spawn(async { None }),
            };
            let follower = Follower::local(PathBuf::from(&file.part), ranges);
            (source, Some(follower))
        }
    };
    *file.source_hash.lock().expect("source hash") = Some(source);
    if let Some(follower) = follower {
        // Under the state's lock, so no range done meanwhile is missed.
        let state = file.state.lock().expect("state");
        for &index in state.done.keys() {
            follower.range_done(index);
        }
        *file.follower.lock().expect("follower") = Some(follower);
    }
}

fn fatal(message: String) -> JobError {
    JobError::Fatal(Failure::new(exit::FAILURE, message).into())
}

pub(super) fn hex(hash: Sha256) -> String {
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

async fn upload_range(
    shared: &Shared,
    worker: &Worker,
    file: &FileJob,
    index: u64,
) -> Result<(), JobError> {
    let (offset, len) = file.range(index);
    let local = &file.item.local;
    let local_error = |e: std::io::Error| fatal(format!("{}: {e}", local.display()));
    let mut source = tokio::fs::File::open(local).await.map_err(local_error)?;
    source
        .seek(SeekFrom::Start(offset))
        .await
        .map_err(local_error)?;
    let tally = Arc::new(Tally::default());
    let reader = Counted {
        inner: source.take(len),
        tally: tally.clone(),
        progress: shared.progress.clone(),
    };
    let mut stdout = Vec::new();
    let last = index + 1 == plan::range_count(file.item.size, file.range_size);
    let script = remote::write_range(
        &file.part,
        file.range_size,
        index,
        last.then_some(file.item.size),
    );
    let outcome = worker.run(&script, reader, &mut stdout).await;
    let (moved, hash) = tally.take();
    shared.progress.take_back(moved);
    let outcome = outcome.map_err(JobError::Transport)?;
    if let Some(refusal) = outcome.refused(&shared.host, &file.part) {
        return Err(JobError::Fatal(refusal.into()));
    }
    if moved != len {
        return Err(fatal(format!(
            "{}: read {moved} of {len} bytes at offset {offset}; was the file changed or truncated?",
            local.display()
        )));
    }
    shared.progress.add(moved);
    verified(
        file,
        index,
        &hash,
        remote::digest(&String::from_utf8_lossy(&stdout)),
    )
}

async fn download_range(
    shared: &Shared,
    worker: &Worker,
    file: &FileJob,
    index: u64,
) -> Result<(), JobError> {
    let (offset, len) = file.range(index);
    let part = PathBuf::from(&file.part);
    let local_error = |e: std::io::Error| fatal(format!("{}: {e}", part.display()));
    let mut sink = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part)
        .await
        .map_err(local_error)?;
    sink.seek(SeekFrom::Start(offset))
        .await
        .map_err(local_error)?;
    let tally = Arc::new(Tally::default());
    let mut writer = Counted {
        inner: sink,
        tally: tally.clone(),
        progress: shared.progress.clone(),
    };
    let request = remote::range_request(&file.item.remote, file.range_size, file.item.size, index);
    let served = match request {
        Some(request) => worker.serve_range(request, len, &mut writer).await,
        None => None,
    };
    let (moved, hash) = tally.settle(&shared.progress).map_err(local_error)?;
    if let Some(theirs) = served {
        tracing::debug!(
            session = worker.session_id(),
            index,
            "range came from the range server"
        );
        shared.progress.add(moved);
        return verified(file, index, &hash, theirs);
    }
    writer
        .inner
        .seek(SeekFrom::Start(offset))
        .await
        .map_err(local_error)?;
    let script = remote::read_range(&file.item.remote, file.range_size, index);
    let outcome = worker.run(&script, tokio::io::empty(), &mut writer).await;
    let (moved, hash) = tally.settle(&shared.progress).map_err(local_error)?;
    let outcome = outcome.map_err(JobError::Transport)?;
    if let Some(refusal) = outcome.refused(&shared.host, &file.item.remote) {
        return Err(JobError::Fatal(refusal.into()));
    }
    if moved != len {
        return Err(JobError::Mismatch(format!(
            "{}:{}: got {moved} of {len} bytes at offset {offset}",
            shared.host, file.item.remote
        )));
    }
    shared.progress.add(moved);
    verified(file, index, &hash, remote::trailing_digest(&outcome.stderr))
}

/// Records range `index` as done when both sides' hashes agree.
fn verified(
    file: &FileJob,
    index: u64,
    ours: &str,
    theirs: Option<String>,
) -> Result<(), JobError> {
    if theirs.as_deref() != Some(ours) {
        return Err(JobError::Mismatch(format!(
            "range {index} of {} did not verify (SHA-256 {ours} here, {} there)",
            file.item.local.display(),
            theirs.as_deref().unwrap_or("none")
        )));
    }
    let mut state = file.state.lock().expect("state");
    state.done.insert(index, ours.to_owned());
    if let Some(follower) = &*file.follower.lock().expect("follower") {
        follower.range_done(index);
    }
    if let Err(error) = file.state_file.save(&state) {
        tracing::debug!(%error, "cannot save the copy's state; a resume would redo this range");
    }
    Ok(())
}

/// Compares the SHA-256 of both whole files (those made during the copy,
/// else hashed now), and renames the part, cut to size, into place.
async fn seal(
    shared: &Shared,
    worker: &Worker,
    file: &FileJob,
    direction: Direction,
) -> Result<(), JobError> {
    let item = &file.item;
    let mover = match followed(file, direction).await? {
        Followed::Same(mover) => mover,
        Followed::Unknown => {
            hash_whole(shared, worker, file, direction).await?;
            None
        }
    };
    match direction {
        Direction::Upload => {
            let moved = match mover {
                Some(mover) => mover.seal().await,
                None => false,
            };
            tracing::debug!(file = %item.local.display(), moved, "the follower sealed the part");
            if !moved {
                remote_digest(
                    shared,
                    worker,
                    remote::rename(&file.part, &item.remote, item.size, item.mode),
                    &item.remote,
                )
                .await?;
            }
        }
        Direction::Download => {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::Permissions::from_mode(item.mode);
            std::fs::set_permissions(&file.part, mode)
                .and_then(|()| std::fs::rename(&file.part, &item.local))
                .map_err(|e| fatal(format!("{}: {e}", item.local.display())))?
        }
    }
    file.state_file.remove();
    Ok(())
}

/// Runs `script` on the far side; its output's digest, if any. A refusal
/// about `path` stops the copy.
async fn remote_digest(
    shared: &Shared,
    worker: &Worker,
    script: String,
    path: &str,
) -> Result<Option<String>, JobError> {
    let mut out = Vec::new();
    let outcome = worker
        .run(&script, tokio::io::empty(), &mut out)
        .await
        .map_err(JobError::Transport)?;
    if let Some(refusal) = outcome.refused(&shared.host, path) {
        return Err(JobError::Fatal(refusal.into()));
    }
    Ok(remote::digest(&String::from_utf8_lossy(&out)))
}

/// What the whole-file hashes made during the copy tell.
enum Followed {
    /// Both sides agree; an upload's follower may move the part into place.
    Same(Option<Mover>),
    /// One is missing or they differ: the whole file must be hashed again.
    Unknown,
}

/// Compares the whole-file hashes made during the copy (a download's part
/// is cut to size and flushed first).
async fn followed(file: &FileJob, direction: Direction) -> Result<Followed, JobError> {
    let follower = file.follower.lock().expect("follower").take();
    let source = file.source_hash.lock().expect("source hash").take();
    let (Some(follower), Some(source)) = (follower, source) else {
        return Ok(Followed::Unknown);
    };
    let item = &file.item;
    let (receiving, sending) = match direction {
        // The last range's write cut the far side's part to size.
        Direction::Upload => tokio::join!(follower.finish(), source),
        Direction::Download => {
            let hashes = tokio::join!(follower.finish(), source);
            let (part, size) = (PathBuf::from(&file.part), item.size);
            tokio::task::spawn_blocking(move || cut_local(&part, size))
                .await
                .map_err(|e| JobError::Fatal(e.into()))?
                .map_err(|e| fatal(format!("{}: {e}", file.part)))?;
            hashes
        }
    };
    let (same, mover) = match (receiving, sending) {
        (Some(whole), Ok(Some(source))) => (whole.digest == source, whole.mover),
        (whole, _) => (false, whole.and_then(|w| w.mover)),
    };
    tracing::debug!(file = %item.local.display(), same, "whole-file hashes made during the copy");
    match (same, mover) {
        (true, mover) => Ok(Followed::Same(mover)),
        (false, Some(mover)) => {
            mover.abandon().await;
            Ok(Followed::Unknown)
        }
        (false, None) => Ok(Followed::Unknown),
    }
}

/// Hashes both whole files after the copy and compares them (the part is
/// cut to size first); a difference fails the copy and forgets its state.
async fn hash_whole(
    shared: &Shared,
    worker: &Worker,
    file: &FileJob,
    direction: Direction,
) -> Result<(), JobError> {
    let host = &shared.host;
    let item = &file.item;
    let (local_path, size) = match direction {
        Direction::Upload => (item.local.clone(), None),
        Direction::Download => (PathBuf::from(&file.part), Some(item.size)),
    };
    let local_hash = tokio::task::spawn_blocking(move || sized_hash(&local_path, size));
    let remote_hash = match direction {
        Direction::Upload => remote_digest(
            shared,
            worker,
            remote::seal(&file.part, item.size, item.mode),
            &file.part,
        ),
        Direction::Download => remote_digest(
            shared,
            worker,
            remote::hash_file(&item.remote),
            &item.remote,
        ),
    };
    let (local_hash, remote_hash) = tokio::join!(local_hash, remote_hash);
    let local_hash = local_hash
        .map_err(|e| JobError::Fatal(e.into()))?
        .map_err(|e| fatal(format!("{}: {e}", item.local.display())))?;
    let remote_hash = remote_hash?;
    if remote_hash.as_deref() != Some(local_hash.as_str()) {
        // The ranges verified yet the whole does not: start this file over next time.
        file.state_file.remove();
        return Err(fatal(format!(
            "{} and {host}:{} differ after the copy (SHA-256 {local_hash} here, {} there); \
             was the source changed while it was copied? Run the command again",
            item.local.display(),
            item.remote,
            remote_hash.as_deref().unwrap_or("none")
        )));
    }
    Ok(())
}

/// SHA-256 of `path`; with `size`, the file is first cut (or extended) to it
/// and flushed to disk.
fn sized_hash(path: &Path, size: Option<u64>) -> std::io::Result<String> {
    if let Some(size) = size {
        cut_local(path, size)?;
    }
    let mut hash = Sha256::new();
    hash_from(std::fs::File::open(path)?, &mut hash)?;
    Ok(hex(hash))
}

/// Adds everything `reader` gives to `hash`; returns how many bytes that was.
pub(super) fn hash_from(mut reader: impl Read, hash: &mut Sha256) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        match reader.read(&mut buf)? {
            0 => return Ok(total),
            n => {
                hash.update(&buf[..n]);
                total += n as u64;
            }
        }
    }
}

/// Cuts (or extends) `path` to `size` and flushes it to disk.
fn cut_local(path: &Path, size: u64) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.set_len(size)?;
    file.sync_all()
}

/// SHA-256 of ranges of a local file (`None` where it cannot be read whole).
fn local_range_hashes(path: &Path, range_size: u64, indexes: &[u64]) -> Vec<Option<String>> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return vec![None; indexes.len()];
    };
    indexes
        .iter()
        .map(|&k| {
            file.seek(SeekFrom::Start(k * range_size)).ok()?;
            let mut hash = Sha256::new();
            hash_from((&mut file).take(range_size), &mut hash).ok()?;
            Some(hex(hash))
        })
        .collect()
}

/// Bytes and SHA-256 of what went through a [`Counted`] stream, and the
/// local error that stopped it, if any.
#[derive(Default)]
struct Tally {
    bytes: AtomicU64,
    hash: Mutex<Sha256>,
    error: Mutex<Option<std::io::Error>>,
}

impl Tally {
    fn record(&self, data: &[u8]) {
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.hash.lock().expect("hash").update(data);
    }

    fn take(&self) -> (u64, String) {
        let hash = std::mem::take(&mut *self.hash.lock().expect("hash"));
        (self.bytes.swap(0, Ordering::Relaxed), hex(hash))
    }

    /// Takes what went through, and its progress back until the range is
    /// verified; or the local error that stopped it.
    fn settle(&self, progress: &Progress) -> std::io::Result<(u64, String)> {
        let (moved, hash) = self.take();
        progress.take_back(moved);
        match self.error.lock().expect("error").take() {
            Some(error) => Err(error),
            None => Ok((moved, hash)),
        }
    }
}

/// A reader or writer that hashes, counts and reports progress.
struct Counted<T> {
    inner: T,
    tally: Arc<Tally>,
    progress: Arc<Progress>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            let data = &buf.filled()[before..];
            self.tally.record(data);
            self.progress.add(data.len() as u64);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        match &result {
            Poll::Ready(Ok(n)) => {
                self.tally.record(&buf[..*n]);
                self.progress.add(*n as u64);
            }
            Poll::Ready(Err(e)) => {
                *self.tally.error.lock().expect("error") =
                    Some(std::io::Error::new(e.kind(), e.to_string()));
            }
            Poll::Pending => {}
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Err(e)) = &result {
            *self.tally.error.lock().expect("error") =
                Some(std::io::Error::new(e.kind(), e.to_string()));
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
