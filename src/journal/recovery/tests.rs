//! Replay of hand-written journals: the last word on a task wins, records
//! for unknown tasks are skipped, torn tails are cut, damage is named.

#![allow(clippy::unwrap_used)]

use prost::Message as _;

use super::*;
use crate::journal::{
    record::{Delivered, Finished, Forgotten, Pending},
    segment::{frame, header},
};

fn id(n: u8) -> Vec<u8> {
    vec![n; 16]
}

fn task(n: u8) -> Event {
    Event::Task(TaskRecord {
        id: id(n),
        queue: "q".into(),
        text: format!("task {n}"),
        ..Default::default()
    })
}

fn write_segment(dir: &Path, seq: u64, events: Vec<Event>) -> Vec<u8> {
    let mut bytes = header().to_vec();
    for event in events {
        frame(&Record { event: Some(event) }.encode_to_vec(), &mut bytes);
    }
    std::fs::write(segment::path(dir, seq), &bytes).unwrap();
    bytes
}

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("contact-recovery-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Later records change a task; forgotten tasks are gone; a record about
/// an unknown task is skipped; order across segments is kept.
#[test]
fn replay_applies_the_last_word() {
    let dir = dir("replay");
    write_segment(
        &dir,
        1,
        vec![
            task(1),
            task(2),
            Event::Delivered(Delivered {
                id: id(1),
                attempt: 1,
                worker: "w".into(),
                session: id(9),
            }),
        ],
    );
    write_segment(
        &dir,
        2,
        vec![
            Event::Pending(Pending {
                id: id(1),
                attempts: 1,
                due_unix_ms: 5,
                not_before_unix_ms: 0,
            }),
            Event::Finished(Finished {
                id: id(2),
                state: State::Done as i32,
                result: None,
            }),
            Event::Forgotten(Forgotten { id: id(2) }),
            Event::Delivered(Delivered {
                id: id(7),
                attempt: 1,
                worker: "w".into(),
                session: id(9),
            }),
            task(3),
        ],
    );
    let recovered = recover(&dir).unwrap();
    let ids: Vec<u8> = recovered.tasks.iter().map(|t| t.record.id[0]).collect();
    assert_eq!(ids, [1, 3]);
    let first = &recovered.tasks[0];
    assert_eq!(
        (first.record.state, first.record.attempts, first.anchor),
        (State::Pending as i32, 1, 1)
    );
    assert!(first.record.session.is_empty());
    assert_eq!(recovered.tasks[1].anchor, 2);
    assert_eq!(recovered.records, 8);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Truncating the newest segment at every byte of its last record keeps
/// everything before it, and cuts the file back to whole frames.
#[test]
fn torn_tails_are_cut_at_every_offset() {
    let dir = dir("torn");
    let full = write_segment(&dir, 1, vec![task(1), task(2)]);
    let last_len = Record {
        event: Some(task(2)),
    }
    .encode_to_vec()
    .len()
        + 8;
    let last_start = full.len() - last_len;
    for cut in last_start + 1..full.len() {
        std::fs::write(segment::path(&dir, 1), &full[..cut]).unwrap();
        let recovered = recover(&dir).unwrap();
        assert_eq!(recovered.tasks.len(), 1, "cut at {cut}");
        assert_eq!(
            std::fs::metadata(segment::path(&dir, 1)).unwrap().len(),
            last_start as u64,
            "cut at {cut}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A flipped bit before the end is damage: recovery refuses, naming the
/// file and the offset of the damaged frame.
#[test]
fn corruption_is_named() {
    let dir = dir("corrupt");
    let mut bytes = write_segment(&dir, 1, vec![task(1), task(2), task(3)]);
    let first_len = Record {
        event: Some(task(1)),
    }
    .encode_to_vec()
    .len()
        + 8;
    let second = segment::HEADER_LEN + first_len;
    bytes[second + 12] ^= 0x01;
    std::fs::write(segment::path(&dir, 1), &bytes).unwrap();
    write_segment(&dir, 2, vec![task(4)]);
    let err = recover(&dir).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("00000000000000000001.journal"), "{text}");
    assert!(text.contains(&format!("byte {second}")), "{text}");
    assert!(text.contains("mv "), "{text}");
    // A torn tail in an older segment is damage too: only the newest may be torn.
    std::fs::write(segment::path(&dir, 1), &bytes[..bytes.len() - 3]).unwrap();
    assert!(matches!(recover(&dir), Err(JournalError::Damaged { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Random bytes in a segment never panic recovery: it recovers or says why.
#[test]
fn random_bytes_never_panic_recovery() {
    let dir = dir("random");
    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..300 {
        let mut bytes = if round % 2 == 0 {
            let mut b = header().to_vec();
            frame(
                &Record {
                    event: Some(task(1)),
                }
                .encode_to_vec(),
                &mut b,
            );
            b
        } else {
            header().to_vec()
        };
        let len = rng.usize(0..200);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if round % 3 == 0 && len >= 8 {
            // A frame with a valid checksum around random record bytes.
            let body: Vec<u8> = junk.split_off(8);
            junk.clear();
            frame(&body, &mut junk);
        }
        bytes.extend(junk);
        std::fs::write(segment::path(&dir, 1), &bytes).unwrap();
        let _ = recover(&dir);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
