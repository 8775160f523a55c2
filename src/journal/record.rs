//! What the journal records: one protobuf message per decision of the queue
//! actor. Protobuf keeps the records self-describing and lets them grow:
//! a field added later is skipped by an older reader and defaults to zero
//! for a newer one. Field numbers are part of the on-disk format and never
//! change; tests in `segment.rs` pin the bytes.
//!
//! A task is anchored by its full [`TaskRecord`] (written at submission,
//! and again when compaction carries it forward); the small records after
//! it change one part of its state. Replay applies them in order, so the
//! last word on a task wins, and a record for a task whose anchor is gone
//! (forgotten, or compacted away) is skipped.

/// One journal record.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Record {
    /// What happened.
    #[prost(oneof = "Event", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub(crate) event: Option<Event>,
}

/// The kinds of record. A record lives only while it is encoded or
/// replayed, so the size of its largest kind costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Event {
    /// A task's whole state: at submission, or carried forward.
    #[prost(message, tag = "1")]
    Task(TaskRecord),
    /// A delivery to a worker.
    #[prost(message, tag = "2")]
    Delivered(Delivered),
    /// The task is in line again (retry, hand-back, requeue, undone lease).
    #[prost(message, tag = "3")]
    Pending(Pending),
    /// The task finished: done, dead-lettered or cancelled.
    #[prost(message, tag = "4")]
    Finished(Finished),
    /// The task is forgotten: nothing about it is kept any more.
    #[prost(message, tag = "5")]
    Forgotten(Forgotten),
    /// A worker id tasks may target.
    #[prost(message, tag = "6")]
    ClientKnown(Client),
    /// A worker id no task may target any more.
    #[prost(message, tag = "7")]
    ClientForgotten(Client),
    /// A broadcast was opened.
    #[prost(message, tag = "8")]
    BroadcastOpened(Broadcast),
}

/// Where a task is in its life, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum State {
    /// Waiting in line (maybe delayed).
    Pending = 0,
    /// Pushed to a worker.
    Delivered = 1,
    /// Acknowledged as done.
    Done = 2,
    /// Dead-lettered.
    DeadLettered = 3,
    /// Cancelled.
    Cancelled = 4,
}

/// A task's whole state.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TaskRecord {
    /// The task id (16 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) id: Vec<u8>,
    /// Its queue, when it has one.
    #[prost(string, tag = "2")]
    pub(crate) queue: String,
    /// The worker it is for, when it is targeted.
    #[prost(string, tag = "3")]
    pub(crate) target_client: String,
    /// Its text.
    #[prost(string, tag = "4")]
    pub(crate) text: String,
    /// Its payload.
    #[prost(bytes = "bytes", tag = "5")]
    pub(crate) payload: bytes::Bytes,
    /// Its priority.
    #[prost(sint32, tag = "6")]
    pub(crate) priority: i32,
    /// The lease of each delivery, in ms.
    #[prost(uint32, tag = "7")]
    pub(crate) lease_ms: u32,
    /// When it last became due (wall ms): the order within its priority.
    #[prost(uint64, tag = "8")]
    pub(crate) due_unix_ms: u64,
    /// Not before this time (wall ms); 0: not delayed.
    #[prost(uint64, tag = "9")]
    pub(crate) not_before_unix_ms: u64,
    /// Dead-lettered as expired if not started by then (wall ms); 0: no TTL.
    #[prost(uint64, tag = "10")]
    pub(crate) ttl_deadline_unix_ms: u64,
    /// Its idempotency key, if any.
    #[prost(string, tag = "11")]
    pub(crate) idempotency_key: String,
    /// When the key's window ends (wall ms).
    #[prost(uint64, tag = "12")]
    pub(crate) key_expires_unix_ms: u64,
    /// The task's fingerprint, to tell a retry from another task.
    #[prost(fixed64, tag = "13")]
    pub(crate) fingerprint: u64,
    /// The broadcast it is a copy of (16 bytes), if any.
    #[prost(bytes = "vec", tag = "14")]
    pub(crate) broadcast: Vec<u8>,
    /// Where it is in its life.
    #[prost(enumeration = "State", tag = "15")]
    pub(crate) state: i32,
    /// Deliveries so far.
    #[prost(uint32, tag = "16")]
    pub(crate) attempts: u32,
    /// The worker of its last delivery.
    #[prost(string, tag = "17")]
    pub(crate) worker: String,
    /// The session of its current delivery (16 bytes), while delivered.
    #[prost(bytes = "vec", tag = "18")]
    pub(crate) session: Vec<u8>,
    /// Its result, once finished.
    #[prost(message, optional, tag = "19")]
    pub(crate) result: Option<Outcome>,
}

/// A delivery to a worker.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Delivered {
    /// The task id.
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) id: Vec<u8>,
    /// The attempt this delivery is.
    #[prost(uint32, tag = "2")]
    pub(crate) attempt: u32,
    /// The worker.
    #[prost(string, tag = "3")]
    pub(crate) worker: String,
    /// Its session (16 bytes).
    #[prost(bytes = "vec", tag = "4")]
    pub(crate) session: Vec<u8>,
}

/// The task is in line again.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Pending {
    /// The task id.
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) id: Vec<u8>,
    /// Deliveries counted so far (0 after a requeue).
    #[prost(uint32, tag = "2")]
    pub(crate) attempts: u32,
    /// When it became due (wall ms), its order in line.
    #[prost(uint64, tag = "3")]
    pub(crate) due_unix_ms: u64,
    /// Not before this time (wall ms); 0: at once.
    #[prost(uint64, tag = "4")]
    pub(crate) not_before_unix_ms: u64,
}

/// A task finished.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Finished {
    /// The task id.
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) id: Vec<u8>,
    /// Done, dead-lettered or cancelled.
    #[prost(enumeration = "State", tag = "2")]
    pub(crate) state: i32,
    /// What it produced, or why it failed.
    #[prost(message, optional, tag = "3")]
    pub(crate) result: Option<Outcome>,
}

/// A finished task's result, and why it was dead-lettered.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Outcome {
    /// The worker's text result.
    #[prost(string, tag = "1")]
    pub(crate) ret: String,
    /// The worker's binary result.
    #[prost(bytes = "bytes", tag = "2")]
    pub(crate) output: bytes::Bytes,
    /// The last error.
    #[prost(string, tag = "3")]
    pub(crate) error: String,
    /// Why it was dead-lettered ("" when it was not).
    #[prost(string, tag = "4")]
    pub(crate) dead_letter_reason: String,
    /// When it was dead-lettered (wall ms).
    #[prost(uint64, tag = "5")]
    pub(crate) dead_unix_ms: u64,
}

/// A task is forgotten.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Forgotten {
    /// The task id.
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) id: Vec<u8>,
}

/// A worker id.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Client {
    /// The id.
    #[prost(string, tag = "1")]
    pub(crate) id: String,
}

/// A broadcast id.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Broadcast {
    /// The id (16 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) id: Vec<u8>,
}

// === Encoding the small records without building them ===
//
// The queue writes a delivery, an ending and a forgetting for nearly every
// task; building their messages would allocate each id and name. These
// write the same bytes as `Record { event: Some(..) }.encode()` straight
// from borrowed values (tests below check them against the derived code).

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

fn len_field(tag: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }
}

fn varint_field(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

fn put_bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    if !bytes.is_empty() {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
}

fn put_varint(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(value, out);
    }
}

/// Starts the record's one event field (the oneof's `tag`) of `len` bytes.
fn put_event(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

/// A [`Delivered`] record.
pub(crate) fn encode_delivered(
    id: &[u8],
    attempt: u32,
    worker: &str,
    session: &[u8],
    out: &mut Vec<u8>,
) {
    let len = len_field(1, id.len())
        + varint_field(2, attempt.into())
        + len_field(3, worker.len())
        + len_field(4, session.len());
    put_event(2, len, out);
    put_bytes(1, id, out);
    put_varint(2, attempt.into(), out);
    put_bytes(3, worker.as_bytes(), out);
    put_bytes(4, session, out);
}

/// A [`Pending`] record.
pub(crate) fn encode_pending(
    id: &[u8],
    attempts: u32,
    due_unix_ms: u64,
    not_before_unix_ms: u64,
    out: &mut Vec<u8>,
) {
    let len = len_field(1, id.len())
        + varint_field(2, attempts.into())
        + varint_field(3, due_unix_ms)
        + varint_field(4, not_before_unix_ms);
    put_event(3, len, out);
    put_bytes(1, id, out);
    put_varint(2, attempts.into(), out);
    put_varint(3, due_unix_ms, out);
    put_varint(4, not_before_unix_ms, out);
}

/// A [`Finished`] record without a result.
pub(crate) fn encode_finished_plain(id: &[u8], state: State, out: &mut Vec<u8>) {
    let len = len_field(1, id.len()) + varint_field(2, state as u64);
    put_event(4, len, out);
    put_bytes(1, id, out);
    put_varint(2, state as u64, out);
}

/// A [`Forgotten`] record.
pub(crate) fn encode_forgotten(id: &[u8], out: &mut Vec<u8>) {
    put_event(5, len_field(1, id.len()), out);
    put_bytes(1, id, out);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prost::Message as _;

    use super::*;

    fn derived(event: Event) -> Vec<u8> {
        Record { event: Some(event) }.encode_to_vec()
    }

    /// The hand-written encodings are byte for byte the derived ones, zero
    /// fields (left out) included.
    #[test]
    fn hand_encodings_match_the_derived_ones() {
        let id = [7u8; 16];
        let session = [9u8; 16];
        for (attempt, worker) in [(1, "w"), (0, ""), (300, "a-long-worker-name")] {
            let mut out = Vec::new();
            encode_delivered(&id, attempt, worker, &session, &mut out);
            assert_eq!(
                out,
                derived(Event::Delivered(Delivered {
                    id: id.to_vec(),
                    attempt,
                    worker: worker.into(),
                    session: session.to_vec(),
                }))
            );
        }
        for (attempts, due, not_before) in [(0, 0, 0), (3, 1_700_000_000_000, 5), (1, 1, 0)] {
            let mut out = Vec::new();
            encode_pending(&id, attempts, due, not_before, &mut out);
            assert_eq!(
                out,
                derived(Event::Pending(Pending {
                    id: id.to_vec(),
                    attempts,
                    due_unix_ms: due,
                    not_before_unix_ms: not_before,
                }))
            );
        }
        for state in [State::Done, State::Cancelled, State::Pending] {
            let mut out = Vec::new();
            encode_finished_plain(&id, state, &mut out);
            assert_eq!(
                out,
                derived(Event::Finished(Finished {
                    id: id.to_vec(),
                    state: state as i32,
                    result: None,
                }))
            );
        }
        let mut out = Vec::new();
        encode_forgotten(&id, &mut out);
        assert_eq!(
            out,
            derived(Event::Forgotten(Forgotten { id: id.to_vec() }))
        );
    }
}
