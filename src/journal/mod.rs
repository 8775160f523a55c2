//! Durable storage: an append-only journal of the queue actor's decisions,
//! from which the queue rebuilds itself at start, so nothing accepted is
//! lost to `kill -9`, a restart or (with `storage.sync = "fsync"`) a power
//! cut.
//!
//! The queue actor decides; the journal records. During a turn the actor
//! adds a record per decision ([`Journal::record`]) and hands every answer
//! that depends on them to [`Journal::reply`]; at the end of the turn
//! [`Journal::flush`] gives the batch to the writer thread (`writer.rs`),
//! which writes it with one `write` (and one `fdatasync` under `fsync`) and
//! only then releases the answers: group commit, and the actor never waits
//! on the disk. In memory mode the journal records nothing and answers go
//! at once.
//!
//! Files: `segment.rs` is the format, `record.rs` the records, `writer.rs`
//! the only code that writes, `recovery.rs` the replay at start. Compaction
//! is decided here: each live task is anchored by its full record in one
//! segment; the oldest segment is deleted once no live task is anchored in
//! it, and when the journal outgrows twice the live data the queue carries
//! the tasks anchored in the oldest segment forward (rewrites their full
//! records), so disk use follows the live tasks.
//!
//! One server per directory: a `LOCK` file is held locked for the life of
//! the process.
//!
//! The seam for other stores (a replicated log, later) is [`Backend`]:
//! append a batch and run its answers once durable, rotate, delete. The
//! queue only ever talks to [`Journal`].

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering, mpsc},
    thread::JoinHandle,
};

use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub(crate) mod record;
mod recovery;
mod segment;
mod writer;

pub(crate) use recovery::{Recovered, RecoveredTask};
pub(crate) use writer::Reply;
use writer::{Job, WriterStatus};

/// When an answer that depends on a record may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Once the record has reached the kernel (`write`): survives a crash
    /// or `kill -9` of the server, not a power cut or a kernel crash.
    Write,
    /// Once the record is on the disk (`fdatasync`): survives a power cut.
    Fsync,
}

/// Why the journal could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The directory or a file could not be used.
    #[error("journal {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another server holds the directory.
    #[error(
        "journal {0} is in use by another contact-server (its LOCK file is locked); one server \
         per storage.dir"
    )]
    Locked(PathBuf),
    /// A segment is damaged before its end.
    #[error(
        "journal segment {path} is damaged at byte {offset}: {what}. The server will not start \
         on a damaged journal. To start without that segment, move it aside (for example \
         `mv {path} {path}.damaged`): the tasks it records are then lost, later records about \
         them are skipped, and every other segment is kept. Keep the moved file for \
         inspection."
    )]
    Damaged {
        /// The segment.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}

impl JournalError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        JournalError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Where journal work goes: the writer thread, or (later) another log.
pub(crate) trait Backend: Send + std::fmt::Debug {
    /// Queues work, in order.
    fn send(&mut self, job: Job);
    /// True while the store cannot take new records (a full disk).
    fn refusing_work(&self) -> bool;
    /// Waits until everything sent is written; the store's failure, if any.
    fn close(self: Box<Self>) -> Result<(), String>;
}

#[derive(Debug)]
struct FileBackend {
    tx: Option<mpsc::Sender<Job>>,
    status: Arc<WriterStatus>,
    thread: Option<JoinHandle<()>>,
    /// Held for the life of the journal: its lock keeps other servers out.
    _lock: File,
}

impl Backend for FileBackend {
    fn send(&mut self, job: Job) {
        // A stopped writer has cancelled the server's fatal token; the job's
        // answers are dropped with it, which their callers see as UNAVAILABLE.
        if let Some(tx) = &self.tx {
            let _ = tx.send(job);
        }
    }

    fn refusing_work(&self) -> bool {
        self.status.disk_full.load(Ordering::Relaxed)
    }

    fn close(mut self: Box<Self>) -> Result<(), String> {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        match self.status.failure.lock() {
            Ok(failure) => failure.clone().map_or(Ok(()), Err),
            Err(_) => Err("the journal writer panicked".into()),
        }
    }
}

/// One segment, as compaction sees it.
#[derive(Debug)]
struct Segment {
    seq: u64,
    /// Bytes in it (written or on their way).
    bytes: u64,
    /// Live tasks whose full record is in it.
    anchors: u64,
}

/// The queue's side of the journal: the batch being built this turn, the
/// answers waiting on it, and what compaction needs to know.
#[derive(Debug)]
pub(crate) struct Journal {
    durable: Option<Durable>,
}

struct Durable {
    backend: Box<dyn Backend>,
    batch: Vec<u8>,
    replies: Vec<Reply>,
    scratch: Vec<u8>,
    segments: VecDeque<Segment>,
    segment_bytes: u64,
    /// Bytes of the full records of live tasks, roughly: what the journal
    /// would be right after a compaction.
    live_bytes: u64,
    live_tasks: u64,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("backend", &self.backend)
            .field("batch", &self.batch.len())
            .field("replies", &self.replies.len())
            .field("segments", &self.segments)
            .field("live_bytes", &self.live_bytes)
            .finish_non_exhaustive()
    }
}

/// How to open the journal.
#[derive(Clone, Debug)]
pub(crate) struct JournalOptions {
    /// The directory.
    pub(crate) dir: PathBuf,
    /// When answers may go.
    pub(crate) sync: SyncPolicy,
    /// Start a new segment past this size.
    pub(crate) segment_bytes: u64,
}

impl Journal {
    /// No journal: memory mode. Answers go at once.
    pub(crate) fn memory() -> Self {
        Self { durable: None }
    }

    /// Opens (creating if needed) the journal in `options.dir`, replays it,
    /// and starts the writer on a new segment. A fatal write error later
    /// cancels `fatal`.
    pub(crate) fn open(
        options: &JournalOptions,
        fatal: CancellationToken,
    ) -> Result<(Self, Recovered), JournalError> {
        let dir = &options.dir;
        std::fs::create_dir_all(dir).map_err(|e| JournalError::io(dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| JournalError::io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(JournalError::Locked(dir.clone()));
        }
        let recovered = recovery::recover(dir)?;
        let next = recovered.segments.last().map_or(1, |(seq, _)| seq + 1);
        let (file, len) = writer::create_segment(dir, next, options.sync)
            .map_err(|e| JournalError::io(&segment::path(dir, next), e))?;
        let start = writer::OpenSegment {
            seq: next,
            file: Box::new(file),
            len,
        };
        let (tx, status, thread) = writer::spawn(dir.clone(), start, options.sync, fatal)
            .map_err(|e| JournalError::io(dir, e))?;
        let mut segments: VecDeque<Segment> = recovered
            .segments
            .iter()
            .map(|&(seq, bytes)| Segment {
                seq,
                bytes,
                anchors: 0,
            })
            .collect();
        segments.push_back(Segment {
            seq: next,
            bytes: len,
            anchors: 0,
        });
        for task in &recovered.tasks {
            if let Some(segment) = segments.iter_mut().find(|s| s.seq == task.anchor) {
                segment.anchors += 1;
            }
        }
        let live_bytes = recovered
            .tasks
            .iter()
            .map(|t| t.record.encoded_len() as u64 + 8)
            .sum();
        info!(
            dir = %dir.display(),
            tasks = recovered.tasks.len(),
            records = recovered.records,
            segments = recovered.segments.len(),
            "journal recovered"
        );
        let durable = Durable {
            backend: Box::new(FileBackend {
                tx: Some(tx),
                status,
                thread: Some(thread),
                _lock: lock,
            }),
            batch: Vec::new(),
            replies: Vec::new(),
            scratch: Vec::new(),
            segments,
            segment_bytes: options.segment_bytes,
            live_bytes,
            live_tasks: recovered.tasks.len() as u64,
        };
        Ok((
            Self {
                durable: Some(durable),
            },
            recovered,
        ))
    }

    /// True when records are kept (journal mode).
    pub(crate) fn is_durable(&self) -> bool {
        self.durable.is_some()
    }

    /// True while the store cannot take new work (a full disk).
    pub(crate) fn refusing_work(&self) -> bool {
        self.durable
            .as_ref()
            .is_some_and(|d| d.backend.refusing_work())
    }

    /// Adds a record to this turn's batch. A task's full record anchors it
    /// in the newest segment: the answer is that segment, to keep with the
    /// task (0 in memory mode).
    pub(crate) fn record(&mut self, event: record::Event) -> u64 {
        let Some(durable) = &mut self.durable else {
            return 0;
        };
        let anchors = matches!(event, record::Event::Task(_));
        let record = record::Record { event: Some(event) };
        durable.scratch.clear();
        // Encoding into a Vec cannot run out of room.
        let _ = record.encode(&mut durable.scratch);
        segment::frame(&durable.scratch, &mut durable.batch);
        let Some(active) = durable.segments.back_mut() else {
            return 0;
        };
        if anchors {
            active.anchors += 1;
            durable.live_tasks += 1;
            durable.live_bytes += durable.scratch.len() as u64 + 8;
        }
        active.seq
    }

    /// Adds a record that `encode` writes itself (one of the small ones
    /// `record.rs` encodes without building it).
    pub(crate) fn record_encoded(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let Some(durable) = &mut self.durable else {
            return;
        };
        durable.scratch.clear();
        encode(&mut durable.scratch);
        segment::frame(&durable.scratch, &mut durable.batch);
    }

    /// A task anchored in segment `anchor` is forgotten, or anchored anew.
    pub(crate) fn unanchor(&mut self, anchor: u64) {
        let Some(durable) = &mut self.durable else {
            return;
        };
        if let Some(segment) = durable.segments.iter_mut().find(|s| s.seq == anchor) {
            segment.anchors = segment.anchors.saturating_sub(1);
        }
        if let Some(average) = durable.live_bytes.checked_div(durable.live_tasks) {
            durable.live_bytes = durable.live_bytes.saturating_sub(average);
            durable.live_tasks -= 1;
        }
    }

    /// Every live task anchored in segment `seq` has been carried forward:
    /// whatever its count still says (tasks the queue dropped while
    /// restoring, or could not read back) anchors nothing, so it may go.
    pub(crate) fn carried_forward(&mut self, seq: u64) {
        if let Some(segment) = self
            .durable
            .as_mut()
            .and_then(|d| d.segments.iter_mut().find(|s| s.seq == seq))
        {
            segment.anchors = 0;
        }
    }

    /// Runs `reply` once everything recorded so far is durable (at once in
    /// memory mode).
    pub(crate) fn reply(&mut self, reply: impl FnOnce() + Send + 'static) {
        match &mut self.durable {
            None => reply(),
            Some(durable) => durable.replies.push(Box::new(reply)),
        }
    }

    /// Ends the turn: hands the batch and its answers to the writer,
    /// deletes segments nothing live is anchored in, and starts a new
    /// segment when the newest is full. The answer is the segment whose
    /// live tasks the queue should carry forward now, if the journal has
    /// grown past twice its live data.
    pub(crate) fn flush(&mut self) -> Option<u64> {
        let durable = self.durable.as_mut()?;
        if !durable.batch.is_empty() || !durable.replies.is_empty() {
            let bytes = std::mem::take(&mut durable.batch);
            if let Some(active) = durable.segments.back_mut() {
                active.bytes += bytes.len() as u64;
            }
            let replies = std::mem::take(&mut durable.replies);
            durable.backend.send(Job::Append { bytes, replies });
        }
        // Oldest first, and never the one being written.
        while durable.segments.len() > 1 && durable.segments.front().is_some_and(|s| s.anchors == 0)
        {
            if let Some(segment) = durable.segments.pop_front() {
                durable.backend.send(Job::Delete { seq: segment.seq });
            }
        }
        if let Some(active) = durable.segments.back()
            && active.bytes >= durable.segment_bytes
        {
            let seq = active.seq + 1;
            durable.backend.send(Job::Rotate { seq });
            durable.segments.push_back(Segment {
                seq,
                bytes: segment::HEADER_LEN as u64,
                anchors: 0,
            });
        }
        let total: u64 = durable.segments.iter().map(|s| s.bytes).sum();
        let oldest = durable.segments.front()?;
        (durable.segments.len() > 2 && total > 2 * durable.live_bytes + 2 * durable.segment_bytes)
            .then_some(oldest.seq)
    }

    /// Bytes of journal on disk (written or on their way), and segments.
    pub(crate) fn disk_usage(&self) -> (u64, usize) {
        self.durable.as_ref().map_or((0, 0), |d| {
            (d.segments.iter().map(|s| s.bytes).sum(), d.segments.len())
        })
    }

    /// Writes what is left and waits for the writer to finish: the
    /// store's failure, if it had one.
    pub(crate) fn close(self) -> Result<(), String> {
        let Some(mut durable) = self.durable else {
            return Ok(());
        };
        if !durable.batch.is_empty() || !durable.replies.is_empty() {
            let bytes = std::mem::take(&mut durable.batch);
            let replies = std::mem::take(&mut durable.replies);
            durable.backend.send(Job::Append { bytes, replies });
        }
        durable.backend.close()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::journal::record::{Event, TaskRecord};

    fn task(n: u8) -> Event {
        Event::Task(TaskRecord {
            id: vec![n; 16],
            text: "x".repeat(100),
            ..Default::default()
        })
    }

    fn segments(dir: &Path) -> Vec<u64> {
        recovery::segment_files(dir)
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect()
    }

    /// Segments rotate past their size; a live task in the oldest segment
    /// keeps it (and those after it) on disk until the journal outgrows
    /// twice its live data, when compaction asks for that task to be
    /// carried forward; then the old segments go, and the carried task
    /// reads back after a reopen.
    #[test]
    fn segments_rotate_compact_and_recover() {
        let dir = std::env::temp_dir().join(format!("contact-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = JournalOptions {
            dir: dir.clone(),
            sync: SyncPolicy::Write,
            segment_bytes: 300,
        };
        let (mut journal, recovered) = Journal::open(&options, CancellationToken::new()).unwrap();
        assert!(recovered.tasks.is_empty());
        let kept = journal.record(task(0));
        assert_eq!(kept, 1);
        let mut asked = None;
        for n in 1..40 {
            let anchor = journal.record(task(n));
            // Every other task is forgotten as soon as it is written.
            journal.unanchor(anchor);
            journal.reply(|| {});
            if let Some(oldest) = journal.flush() {
                asked = Some(oldest);
                break;
            }
        }
        assert_eq!(asked, Some(1), "compaction asks for the oldest segment");
        assert!(
            journal.disk_usage().1 > 2,
            "the live task held the segments"
        );
        // Carried forward, as the queue does: anchored anew, the old one gone.
        let carried = journal.record(task(0));
        journal.unanchor(kept);
        assert!(carried > kept);
        let _ = journal.flush();
        journal.close().unwrap();
        let on_disk = segments(&dir);
        assert!(on_disk.iter().all(|&seq| seq >= carried), "{on_disk:?}");
        let (journal, recovered) = Journal::open(&options, CancellationToken::new()).unwrap();
        assert!(recovered.tasks.iter().any(|t| t.record.id == vec![0u8; 16]));
        journal.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
