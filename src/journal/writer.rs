//! The journal's writer: one dedicated thread, the only code that touches
//! the journal's files after recovery. The queue actor hands it a job per
//! turn and never waits for it; the thread writes each job with one
//! `write`, syncs if the policy asks, and only then releases the job's
//! answers, which is what makes an answer mean "recorded".
//!
//! Jobs that queue up while a write or sync runs are written together
//! (group commit): one `write` and one `fdatasync` for all of them.
//!
//! Failures: a full disk holds the job and retries it (the queue refuses
//! new work meanwhile, through [`WriterStatus::disk_full`]) until space
//! returns; the file is cut back to its last whole frame first, so no torn
//! frame is ever left in the middle. Any other write error, and any failed
//! sync, is fatal: after a failed `fsync` the page cache cannot be trusted
//! (PostgreSQL's "fsyncgate"), so the thread stops, the answers it holds
//! are dropped (their callers see UNAVAILABLE), and the server stops with
//! an error so that its supervisor restarts it into recovery.

use std::{
    fs::{File, OpenOptions},
    io::{ErrorKind, Write as _},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::{SyncPolicy, segment};

/// Something to run once a job's records are as durable as the policy asks.
pub(crate) type Reply = Box<dyn FnOnce() + Send>;

/// How long a write waits before trying again on a full disk.
const DISK_FULL_RETRY: Duration = Duration::from_millis(100);

/// Work for the writer, in the order the queue decided it.
pub(crate) enum Job {
    /// Append these framed records, then run the replies.
    Append {
        /// Whole frames.
        bytes: Vec<u8>,
        /// Answers that depend on them (and on everything before).
        replies: Vec<Reply>,
    },
    /// Start writing to a new segment.
    Rotate {
        /// Its sequence number.
        seq: u64,
    },
    /// Delete a segment nothing live is left in.
    Delete {
        /// Its sequence number.
        seq: u64,
    },
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Append { bytes, replies } => f
                .debug_struct("Append")
                .field("bytes", &bytes.len())
                .field("replies", &replies.len())
                .finish(),
            Job::Rotate { seq } => f.debug_struct("Rotate").field("seq", seq).finish(),
            Job::Delete { seq } => f.debug_struct("Delete").field("seq", seq).finish(),
        }
    }
}

/// What the writer shows the rest of the server.
#[derive(Debug, Default)]
pub(crate) struct WriterStatus {
    /// A write is waiting for disk space: refuse new work.
    pub(crate) disk_full: AtomicBool,
    /// Bytes written since start.
    pub(crate) bytes_written: AtomicU64,
    /// Why the writer stopped, once it has.
    pub(crate) failure: Mutex<Option<String>>,
}

/// Starts the writer thread on the open segment `seq` of `dir`. It stops
/// when the last sender is dropped (after writing what it was sent), or on
/// a fatal error, when it cancels `fatal`.
pub(crate) fn spawn(
    dir: PathBuf,
    seq: u64,
    file: File,
    sync: SyncPolicy,
    fatal: CancellationToken,
) -> std::io::Result<(
    mpsc::Sender<Job>,
    Arc<WriterStatus>,
    std::thread::JoinHandle<()>,
)> {
    let (tx, rx) = mpsc::channel();
    let status = Arc::new(WriterStatus::default());
    let mut writer = Writer {
        dir,
        seq,
        len: file.metadata()?.len(),
        file,
        sync,
        status: status.clone(),
        writes: metrics::counter!(crate::metrics::JOURNAL_WRITES),
        written: metrics::counter!(crate::metrics::JOURNAL_WRITTEN_BYTES),
    };
    let thread = std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || {
            if let Err(failure) = writer.run(&rx) {
                error!(%failure, "journal writer stopped; the server stops too");
                if let Ok(mut slot) = writer.status.failure.lock() {
                    *slot = Some(failure);
                }
                fatal.cancel();
            }
        })?;
    Ok((tx, status, thread))
}

struct Writer {
    dir: PathBuf,
    seq: u64,
    file: File,
    /// Bytes in the current segment that are whole frames.
    len: u64,
    sync: SyncPolicy,
    status: Arc<WriterStatus>,
    writes: metrics::Counter,
    written: metrics::Counter,
}

impl Writer {
    fn run(&mut self, rx: &mpsc::Receiver<Job>) -> Result<(), String> {
        let mut bytes = Vec::new();
        let mut replies = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            // Take every job already waiting: one write, one sync for all.
            while let Some(job) = next.take() {
                match job {
                    Job::Append {
                        bytes: more,
                        replies: waiting,
                    } => {
                        if bytes.is_empty() {
                            bytes = more;
                        } else {
                            bytes.extend_from_slice(&more);
                        }
                        replies.extend(waiting);
                    }
                    // Files change only between writes: flush what came first.
                    Job::Rotate { seq } => {
                        self.commit(&mut bytes, &mut replies)?;
                        self.rotate(seq)?;
                    }
                    Job::Delete { seq } => {
                        self.commit(&mut bytes, &mut replies)?;
                        self.delete(seq)?;
                    }
                }
                next = rx.try_recv().ok();
            }
            self.commit(&mut bytes, &mut replies)?;
        }
        Ok(())
    }

    /// Writes and syncs `bytes`, then runs the replies waiting on them.
    fn commit(&mut self, bytes: &mut Vec<u8>, replies: &mut Vec<Reply>) -> Result<(), String> {
        if !bytes.is_empty() {
            self.write(bytes)?;
            if self.sync == SyncPolicy::Fsync {
                let started = tokio::time::Instant::now();
                self.file
                    .sync_data()
                    .map_err(|e| format!("fdatasync of segment {} failed: {e}", self.seq))?;
                crate::metrics::JOURNAL_FSYNC_SECONDS.record(started.elapsed());
            }
            self.writes.increment(1);
            self.written.increment(bytes.len() as u64);
            self.status
                .bytes_written
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            bytes.clear();
        }
        for reply in replies.drain(..) {
            reply();
        }
        Ok(())
    }

    /// One `write` of whole frames; on a full disk the file is cut back to
    /// its last whole frame and the write tried again until space returns.
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        loop {
            match self.file.write_all(bytes) {
                Ok(()) => {
                    self.len += bytes.len() as u64;
                    if self.status.disk_full.swap(false, Ordering::Relaxed) {
                        warn!("journal: disk space is back; taking new work again");
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::StorageFull => {
                    if !self.status.disk_full.swap(true, Ordering::Relaxed) {
                        warn!("journal: disk full; refusing new work until space returns");
                    }
                    self.file
                        .set_len(self.len)
                        .map_err(|e| format!("cutting back segment {} failed: {e}", self.seq))?;
                    std::thread::sleep(DISK_FULL_RETRY);
                }
                Err(e) => return Err(format!("write to segment {} failed: {e}", self.seq)),
            }
        }
    }

    fn rotate(&mut self, seq: u64) -> Result<(), String> {
        let (file, len) = create_segment(&self.dir, seq, self.sync)
            .map_err(|e| format!("creating segment {seq} failed: {e}"))?;
        self.file = file;
        self.seq = seq;
        self.len = len;
        Ok(())
    }

    /// Deletes a segment nothing live is anchored in. A segment left behind
    /// while newer ones go could bring back tasks whose forgetting those
    /// held, so a failed delete is fatal (a restart replays every segment
    /// still there, consistently); under `fsync` the directory is synced so
    /// a power cut cannot undo an older delete and keep a newer one.
    fn delete(&self, seq: u64) -> Result<(), String> {
        let path = segment::path(&self.dir, seq);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(format!("deleting compacted segment {seq} failed: {e}")),
        }
        if self.sync == SyncPolicy::Fsync {
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| format!("syncing the journal directory failed: {e}"))?;
        }
        Ok(())
    }
}

/// Creates segment `seq` with its header (synced, with its directory entry,
/// under the fsync policy); the open file and its length.
pub(crate) fn create_segment(
    dir: &std::path::Path,
    seq: u64,
    sync: SyncPolicy,
) -> std::io::Result<(File, u64)> {
    let path = segment::path(dir, seq);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    file.write_all(&segment::header())?;
    if sync == SyncPolicy::Fsync {
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
    }
    Ok((file, segment::HEADER_LEN as u64))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("contact-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Answers are released only after their batch is written, in order,
    /// and the bytes are whole frames on disk.
    #[test]
    fn answers_wait_for_their_write() {
        let dir = temp_dir("ok");
        let (file, _) = create_segment(&dir, 1, SyncPolicy::Fsync).unwrap();
        let fatal = CancellationToken::new();
        let (tx, status, thread) =
            spawn(dir.clone(), 1, file, SyncPolicy::Fsync, fatal.clone()).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mut frames = Vec::new();
        segment::frame(b"record", &mut frames);
        let len = frames.len() as u64;
        tx.send(Job::Append {
            bytes: frames,
            replies: vec![Box::new(move || done_tx.send(()).unwrap())],
        })
        .unwrap();
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        drop(tx);
        thread.join().unwrap();
        assert!(!fatal.is_cancelled());
        assert_eq!(status.bytes_written.load(Ordering::Relaxed), len);
        let bytes = std::fs::read(segment::path(&dir, 1)).unwrap();
        assert_eq!(segment::read_frames(&bytes).0, vec![&b"record"[..]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A write that fails (here: a segment the writer cannot write to) is
    /// fatal: the server's token is cancelled, the failure is kept, and
    /// the answers waiting on it are dropped, never released as recorded.
    #[test]
    fn a_failed_write_is_fatal_and_releases_nothing() {
        let dir = temp_dir("fail");
        drop(create_segment(&dir, 1, SyncPolicy::Write).unwrap());
        let read_only = File::open(segment::path(&dir, 1)).unwrap();
        let fatal = CancellationToken::new();
        let (tx, status, thread) =
            spawn(dir.clone(), 1, read_only, SyncPolicy::Write, fatal.clone()).unwrap();
        let (answer_tx, answer_rx) = std::sync::mpsc::channel::<()>();
        let mut frames = Vec::new();
        segment::frame(b"lost", &mut frames);
        tx.send(Job::Append {
            bytes: frames,
            replies: vec![Box::new(move || answer_tx.send(()).unwrap())],
        })
        .unwrap();
        thread.join().unwrap();
        assert!(fatal.is_cancelled());
        let failure = status.failure.lock().unwrap().clone().unwrap();
        assert!(failure.contains("write to segment 1 failed"), "{failure}");
        assert!(
            answer_rx.recv().is_err(),
            "the answer was dropped, not sent"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
