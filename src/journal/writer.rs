//! The journal's writer: one dedicated thread, the only code that touches
//! the journal's files after recovery. The queue actor hands it a job per
//! turn and never waits for it; the thread writes each job with one
//! `write`, syncs if the policy asks, and only then releases the job's
//! answers, which is what makes an answer mean "recorded".
//!
//! Jobs that queue up while a write or sync runs are written together
//! (group commit): one `write` and one `fdatasync` for all of them. A job
//! no answer waits on is written and not synced: the next answer's sync
//! covers it, as does the sync before a segment is rotated or deleted.
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
    io::{self, ErrorKind, Write as _},
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

/// What the writer needs of a segment file. A seam, so that tests can make
/// writes and syncs fail the way a dying disk does.
pub(crate) trait SegmentFile: Send {
    /// Writes all of `bytes` at the end.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;
}

impl SegmentFile for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.set_len(len)
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

/// The segment the writer starts on.
pub(crate) struct OpenSegment {
    /// Its sequence number.
    pub(crate) seq: u64,
    /// The file, positioned at its end.
    pub(crate) file: Box<dyn SegmentFile>,
    /// Its length: whole frames only.
    pub(crate) len: u64,
}

/// Starts the writer thread on `segment` of `dir`. It stops when the last
/// sender is dropped (after writing what it was sent), or on a fatal
/// error, when it cancels `fatal`.
pub(crate) fn spawn(
    dir: PathBuf,
    segment: OpenSegment,
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
        seq: segment.seq,
        len: segment.len,
        file: segment.file,
        unsynced: false,
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
    file: Box<dyn SegmentFile>,
    /// Bytes in the current segment that are whole frames.
    len: u64,
    /// Bytes were written since the last sync.
    unsynced: bool,
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
                    // Files change only between writes, and only once what
                    // came first is as durable as the policy asks: a new
                    // segment's sync would not cover the old one's tail, and
                    // a deleted segment's tasks were carried forward just
                    // before.
                    Job::Rotate { seq } => {
                        self.commit(&mut bytes, &mut replies)?;
                        self.sync()?;
                        self.rotate(seq)?;
                    }
                    Job::Delete { seq } => {
                        self.commit(&mut bytes, &mut replies)?;
                        self.sync()?;
                        self.delete(seq)?;
                    }
                }
                next = rx.try_recv().ok();
            }
            self.commit(&mut bytes, &mut replies)?;
        }
        // A graceful stop leaves nothing unsynced.
        self.sync()
    }

    /// Writes `bytes`, then, if answers wait on them, syncs (as the policy
    /// says) and runs the replies.
    fn commit(&mut self, bytes: &mut Vec<u8>, replies: &mut Vec<Reply>) -> Result<(), String> {
        if !bytes.is_empty() {
            self.write(bytes)?;
            self.unsynced = true;
            self.writes.increment(1);
            self.written.increment(bytes.len() as u64);
            self.status
                .bytes_written
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            bytes.clear();
        }
        if !replies.is_empty() {
            self.sync()?;
        }
        for reply in replies.drain(..) {
            reply();
        }
        Ok(())
    }

    /// Under the `fsync` policy, `fdatasync` of what was written since the
    /// last one. Records no answer waits on (a delivery, a forgetting) are
    /// synced by the next answer's sync, which covers the whole file, or
    /// before the file changes: at most one sync per answered batch, not
    /// one per record.
    fn sync(&mut self) -> Result<(), String> {
        if self.sync == SyncPolicy::Fsync && self.unsynced {
            let started = tokio::time::Instant::now();
            self.file
                .sync_data()
                .map_err(|e| format!("fdatasync of segment {} failed: {e}", self.seq))?;
            crate::metrics::JOURNAL_FSYNC_SECONDS.record(started.elapsed());
        }
        self.unsynced = false;
        Ok(())
    }

    /// One `write` of whole frames; on a full disk the file is cut back to
    /// its last whole frame and the write tried again until space returns.
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        loop {
            match self.file.append(bytes) {
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
                        .truncate(self.len)
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
        self.file = Box::new(file);
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

    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("contact-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A segment file whose disk fails on cue: `append` fails with "no
    /// space" while `full_for` is above zero (counting down), `sync_data`
    /// fails with an I/O error if `sync_fails`.
    struct Faulty {
        file: File,
        full_for: Arc<AtomicUsize>,
        sync_fails: bool,
        syncs: Arc<AtomicUsize>,
        truncated_to: Arc<Mutex<Vec<u64>>>,
    }

    impl SegmentFile for Faulty {
        fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
            let full = self
                .full_for
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if full.is_ok() {
                // Half a frame reaches the file, as on a disk that fills up.
                self.file.write_all(&bytes[..bytes.len() / 2])?;
                return Err(ErrorKind::StorageFull.into());
            }
            self.file.write_all(bytes)
        }

        fn sync_data(&self) -> io::Result<()> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            if self.sync_fails {
                return Err(io::Error::other("injected EIO"));
            }
            self.file.sync_data()
        }

        fn truncate(&self, len: u64) -> io::Result<()> {
            self.truncated_to.lock().unwrap().push(len);
            self.file.set_len(len)
        }
    }

    struct Running {
        tx: mpsc::Sender<Job>,
        status: Arc<WriterStatus>,
        thread: std::thread::JoinHandle<()>,
        fatal: CancellationToken,
    }

    fn start(dir: &std::path::Path, file: Box<dyn SegmentFile>, sync: SyncPolicy) -> Running {
        let fatal = CancellationToken::new();
        let segment = OpenSegment {
            seq: 1,
            file,
            len: segment::HEADER_LEN as u64,
        };
        let (tx, status, thread) = spawn(dir.to_owned(), segment, sync, fatal.clone()).unwrap();
        Running {
            tx,
            status,
            thread,
            fatal,
        }
    }

    /// Sends one record; the receiver hears once its answer is released.
    fn append(tx: &mpsc::Sender<Job>, record: &[u8]) -> mpsc::Receiver<()> {
        let (done_tx, done_rx) = mpsc::channel();
        let mut bytes = Vec::new();
        segment::frame(record, &mut bytes);
        tx.send(Job::Append {
            bytes,
            replies: vec![Box::new(move || done_tx.send(()).unwrap())],
        })
        .unwrap();
        done_rx
    }

    fn faulty(dir: &std::path::Path, full_for: usize, sync_fails: bool) -> Faulty {
        let (file, _) = create_segment(dir, 1, SyncPolicy::Write).unwrap();
        Faulty {
            file,
            full_for: Arc::new(AtomicUsize::new(full_for)),
            sync_fails,
            syncs: Arc::default(),
            truncated_to: Arc::default(),
        }
    }

    /// The writer stopped on a fatal error: the server's token is
    /// cancelled, the failure kept, and the answer waiting on it dropped,
    /// never released as recorded.
    fn assert_fatal(running: Running, answer: &mpsc::Receiver<()>, failure_says: &str) {
        running.thread.join().unwrap();
        assert!(running.fatal.is_cancelled());
        let failure = running.status.failure.lock().unwrap().clone().unwrap();
        assert!(failure.contains(failure_says), "{failure}");
        assert!(answer.recv().is_err(), "the answer was dropped, not sent");
    }

    /// Answers are released only after their batch is written, in order,
    /// and the bytes are whole frames on disk.
    #[test]
    fn answers_wait_for_their_write() {
        let dir = temp_dir("ok");
        let (file, _) = create_segment(&dir, 1, SyncPolicy::Fsync).unwrap();
        let running = start(&dir, Box::new(file), SyncPolicy::Fsync);
        let answer = append(&running.tx, b"record");
        answer.recv_timeout(Duration::from_secs(10)).unwrap();
        drop(running.tx);
        running.thread.join().unwrap();
        assert!(!running.fatal.is_cancelled());
        let bytes = std::fs::read(segment::path(&dir, 1)).unwrap();
        let frame_len = bytes.len() - segment::HEADER_LEN;
        assert_eq!(
            running.status.bytes_written.load(Ordering::Relaxed),
            frame_len as u64
        );
        assert_eq!(segment::read_frames(&bytes).0, vec![&b"record"[..]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Under `fsync`, records no answer waits on are written and not
    /// synced; the next answer syncs them with its own, and a rotation
    /// syncs the old segment's tail first.
    #[test]
    fn only_answers_and_file_changes_wait_for_a_sync() {
        let dir = temp_dir("syncs");
        let file = faulty(&dir, 0, false);
        let syncs = file.syncs.clone();
        let running = start(&dir, Box::new(file), SyncPolicy::Fsync);
        let mut bytes = Vec::new();
        segment::frame(b"delivered", &mut bytes);
        let unanswered = bytes.len() as u64;
        running
            .tx
            .send(Job::Append {
                bytes,
                replies: Vec::new(),
            })
            .unwrap();
        let written = || running.status.bytes_written.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while written() < unanswered {
            assert!(tokio::time::Instant::now() < deadline, "never written");
            std::thread::yield_now();
        }
        assert_eq!(syncs.load(Ordering::SeqCst), 0);
        append(&running.tx, b"submitted")
            .recv_timeout(Duration::from_secs(10))
            .unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
        let mut tail = Vec::new();
        segment::frame(b"forgotten", &mut tail);
        running
            .tx
            .send(Job::Append {
                bytes: tail,
                replies: Vec::new(),
            })
            .unwrap();
        running.tx.send(Job::Rotate { seq: 2 }).unwrap();
        drop(running.tx);
        running.thread.join().unwrap();
        assert!(!running.fatal.is_cancelled());
        assert_eq!(syncs.load(Ordering::SeqCst), 2, "the tail synced once");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A write the file refuses (here: a segment opened read-only) is fatal.
    #[test]
    fn a_failed_write_is_fatal_and_releases_nothing() {
        let dir = temp_dir("fail");
        drop(create_segment(&dir, 1, SyncPolicy::Write).unwrap());
        let read_only = File::open(segment::path(&dir, 1)).unwrap();
        let running = start(&dir, Box::new(read_only), SyncPolicy::Write);
        let answer = append(&running.tx, b"lost");
        assert_fatal(running, &answer, "write to segment 1 failed");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A failed `fdatasync` is fatal even though the write went through:
    /// the page cache can no longer be trusted to reach the disk.
    #[test]
    fn a_failed_fdatasync_is_fatal_and_releases_nothing() {
        let dir = temp_dir("fsync");
        let running = start(&dir, Box::new(faulty(&dir, 0, true)), SyncPolicy::Fsync);
        let answer = append(&running.tx, b"written, never synced");
        assert_fatal(
            running,
            &answer,
            "fdatasync of segment 1 failed: injected EIO",
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Under the `write` policy nothing is synced, so a disk whose syncs
    /// fail does not stop it: its promise is the kernel, not the platter.
    #[test]
    fn the_write_policy_does_not_sync() {
        let dir = temp_dir("nosync");
        let running = start(&dir, Box::new(faulty(&dir, 0, true)), SyncPolicy::Write);
        let answer = append(&running.tx, b"in the page cache");
        answer.recv_timeout(Duration::from_secs(10)).unwrap();
        drop(running.tx);
        running.thread.join().unwrap();
        assert!(!running.fatal.is_cancelled());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A new segment that cannot be created (its directory is gone) is
    /// fatal, and the records meant for it are never answered.
    #[test]
    fn a_failed_rotation_is_fatal_and_releases_nothing() {
        let dir = temp_dir("rotate");
        let (file, _) = create_segment(&dir, 1, SyncPolicy::Write).unwrap();
        let running = start(&dir, Box::new(file), SyncPolicy::Write);
        append(&running.tx, b"first")
            .recv_timeout(Duration::from_secs(10))
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        running.tx.send(Job::Rotate { seq: 2 }).unwrap();
        let answer = append(&running.tx, b"for segment 2");
        assert_fatal(running, &answer, "creating segment 2 failed");
    }

    /// A full disk holds the answer (and says so, for the queue to refuse
    /// new work) while it retries; the half-written frame is cut back each
    /// time, and once space returns the record is written whole and
    /// answered.
    #[test]
    fn a_full_disk_holds_the_answer_until_space_returns() {
        let dir = temp_dir("full");
        let file = faulty(&dir, 3, false);
        let truncated_to = file.truncated_to.clone();
        let running = start(&dir, Box::new(file), SyncPolicy::Fsync);
        let answer = append(&running.tx, b"waits for space");
        answer.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(!running.status.disk_full.load(Ordering::Relaxed));
        let header = segment::HEADER_LEN as u64;
        assert_eq!(*truncated_to.lock().unwrap(), vec![header; 3]);
        drop(running.tx);
        running.thread.join().unwrap();
        assert!(!running.fatal.is_cancelled());
        let bytes = std::fs::read(segment::path(&dir, 1)).unwrap();
        let (frames, end) = segment::read_frames(&bytes);
        assert_eq!(frames, vec![&b"waits for space"[..]]);
        assert_eq!(end, Ok(bytes.len()), "no torn frame left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
