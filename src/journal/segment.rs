//! The on-disk format: a journal is a directory of segment files, named by
//! their sequence number (`00000000000000000001.journal`), each a header
//! and then frames, one per record.
//!
//! ```text
//! header:  "CONTACTJ" (8 bytes) | version u32 LE (1) | reserved u32 LE (0)
//! frame:   length u32 LE | CRC-32 (IEEE) of the record u32 LE | record (protobuf)
//! ```
//!
//! A frame cut short at the end of the newest segment is what a crash in
//! the middle of a write leaves: reading stops there and the tail is cut
//! off. A frame that fails its checksum anywhere else is damage, and
//! reading stops with an error naming the file and the offset.

use std::path::{Path, PathBuf};

/// The first bytes of every segment.
pub(crate) const MAGIC: &[u8; 8] = b"CONTACTJ";
/// The format version this build writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Bytes before the first frame.
pub(crate) const HEADER_LEN: usize = 16;
/// Bytes before each record.
pub(crate) const FRAME_HEADER_LEN: usize = 8;
/// The largest record a frame may carry; a longer length is damage, not a
/// record (the largest real one is a task at the message limit).
pub(crate) const MAX_RECORD_LEN: usize = 256 * 1024 * 1024;

/// A segment's header.
pub(crate) fn header() -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// Appends one framed record to `out`.
pub(crate) fn frame(record: &[u8], out: &mut Vec<u8>) {
    // Records are bounded by the message limit, far below 4 GiB.
    let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
    out.extend_from_slice(record);
}

/// The file of segment `seq` in `dir`.
pub(crate) fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.journal"))
}

/// The sequence number of a segment file's name, if it is one.
pub(crate) fn seq_of(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".journal")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Why a segment could not be read to its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Damage {
    /// The header is not a journal header of this version.
    Header(String),
    /// A frame is incomplete: the file ends inside it.
    Torn,
    /// A complete frame whose record fails its checksum or is too long.
    Corrupt(String),
}

/// The records of a segment, and where reading stopped: `Ok(end)` when
/// every byte was a whole frame, `Err((offset, damage))` at the first frame
/// that was not.
pub(crate) type Frames<'a> = (Vec<&'a [u8]>, Result<usize, (usize, Damage)>);

/// The records of one segment's bytes, in order, and where reading stopped.
pub(crate) fn read_frames(bytes: &[u8]) -> Frames<'_> {
    let mut records = Vec::new();
    if bytes.len() < HEADER_LEN {
        let damage = if MAGIC.starts_with(&bytes[..bytes.len().min(8)]) {
            Damage::Torn
        } else {
            Damage::Header("not a journal segment".into())
        };
        return (records, Err((0, damage)));
    }
    if &bytes[..8] != MAGIC {
        return (
            records,
            Err((0, Damage::Header("not a journal segment".into()))),
        );
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return (
            records,
            Err((
                0,
                Damage::Header(format!(
                    "format version {version}; this build reads version {VERSION}"
                )),
            )),
        );
    }
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < FRAME_HEADER_LEN {
            return (records, Err((at, Damage::Torn)));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD_LEN {
            return (
                records,
                Err((at, Damage::Corrupt(format!("a frame claims {len} bytes")))),
            );
        }
        let Some(record) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            return (records, Err((at, Damage::Torn)));
        };
        if crc32fast::hash(record) != crc {
            return (
                records,
                Err((at, Damage::Corrupt("checksum mismatch".into()))),
            );
        }
        records.push(record);
        at += FRAME_HEADER_LEN + len;
    }
    (records, Ok(at))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn segment(records: &[&[u8]]) -> Vec<u8> {
        let mut bytes = header().to_vec();
        for record in records {
            frame(record, &mut bytes);
        }
        bytes
    }

    /// The format, byte for byte: a header, then length, CRC and record.
    #[test]
    fn the_format_is_pinned() {
        let bytes = segment(&[b"abc"]);
        let mut expected = b"CONTACTJ".to_vec();
        expected.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[3, 0, 0, 0]);
        // CRC-32 (IEEE) of "abc".
        expected.extend_from_slice(&0x3524_41c2_u32.to_le_bytes());
        expected.extend_from_slice(b"abc");
        assert_eq!(bytes, expected);
        let (records, end) = read_frames(&bytes);
        assert_eq!((records, end), (vec![&b"abc"[..]], Ok(bytes.len())));
    }

    /// Cutting the last frame at any byte is a torn tail after the whole
    /// frames before it, never a corrupt one.
    #[test]
    fn a_cut_at_any_byte_of_the_last_frame_is_torn() {
        let bytes = segment(&[b"first", b"second record"]);
        let last = bytes.len() - (FRAME_HEADER_LEN + 13);
        for cut in last + 1..bytes.len() {
            let (records, end) = read_frames(&bytes[..cut]);
            assert_eq!(records, vec![&b"first"[..]], "cut at {cut}");
            assert_eq!(end, Err((last, Damage::Torn)), "cut at {cut}");
        }
        let (records, end) = read_frames(&bytes[..last]);
        assert_eq!((records.len(), end), (1, Ok(last)));
    }

    /// A flipped bit in a record is corruption at that frame's offset.
    #[test]
    fn a_flipped_bit_is_corruption_at_its_frame() {
        let mut bytes = segment(&[b"first", b"second", b"third"]);
        let second = HEADER_LEN + FRAME_HEADER_LEN + 5;
        bytes[second + FRAME_HEADER_LEN + 2] ^= 0x10;
        let (records, end) = read_frames(&bytes);
        assert_eq!(records, vec![&b"first"[..]]);
        assert_eq!(
            end,
            Err((second, Damage::Corrupt("checksum mismatch".into())))
        );
    }

    /// A file that is not a segment, or of another version, says so.
    #[test]
    fn headers_are_checked() {
        assert!(matches!(
            read_frames(b"hello, world, this is text"),
            (_, Err((0, Damage::Header(_))))
        ));
        let mut other = segment(&[]);
        other[8] = 9;
        let (_, end) = read_frames(&other);
        assert!(matches!(end, Err((0, Damage::Header(why))) if why.contains("version 9")));
        assert_eq!(read_frames(&header()[..5]).1, Err((0, Damage::Torn)));
    }

    /// Segment names sort by number and are recognised only when exact.
    #[test]
    fn segment_names() {
        let name = path(Path::new("d"), 42);
        assert_eq!(name, Path::new("d/00000000000000000042.journal"));
        assert_eq!(seq_of("00000000000000000042.journal"), Some(42));
        assert_eq!(seq_of("42.journal"), None);
        assert_eq!(seq_of("00000000000000000042.journal.damaged"), None);
    }

    /// Random bytes never panic the reader.
    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..2000 {
            let mut bytes = if round % 2 == 0 {
                segment(&[b"a", b"bb"])
            } else {
                Vec::new()
            };
            let extra = rng.usize(0..64);
            bytes.extend((0..extra).map(|_| rng.u8(..)));
            if !bytes.is_empty() && round % 3 == 0 {
                let i = rng.usize(..bytes.len());
                bytes[i] = rng.u8(..);
            }
            let _ = read_frames(&bytes);
        }
    }
}
