//! Journals: the inputs of one engine, recorded so that an incident can be replayed.
//!
//! Any driver (the simulator, the executor) can record what it hands to
//! `Engine::handle_input`; the simulator replays a journal step by step and checks it with
//! the oracles that need only inputs and outputs (`tributary-simulation --journal FILE`).
//!
//! # Format (version 1)
//!
//! ```text
//! magic    4 bytes   "TRBJ"
//! version  u16 LE    1
//! header   u32 LE length, then postcard(JournalHeader { config, seed, start })
//! records  repeated: u32 LE length, then postcard((Now, Input))
//! ```
//!
//! One journal covers one engine's life, from `Engine::new(config, seed, start)` to its end
//! (a crash or shutdown); a restarted engine starts a new journal. Replaying several journals
//! of one node in order checks what holds across restarts too. A journal cut short (a crash
//! while writing) reads up to its last whole record; anything else malformed is a typed error.

use std::io::{self, Read, Write};
use thiserror::Error;
use tributary_core::{Config, Input, Now};

/// The first four bytes of every journal.
pub const MAGIC: [u8; 4] = *b"TRBJ";
/// The format version this module writes and reads.
pub const VERSION: u16 = 1;
/// Largest record or header accepted when reading (a guard against garbage lengths).
pub const MAX_RECORD_BYTES: u32 = 64 << 20;

/// How the engine of a journal was created.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JournalHeader {
    /// The engine's configuration.
    pub config: Config,
    /// The seed given to `Engine::new`.
    pub seed: u64,
    /// The `now` given to `Engine::new`.
    pub start: Now,
}

/// Why a journal could not be written or read.
#[derive(Debug, Error)]
pub enum JournalError {
    /// Reading or writing failed.
    #[error("journal i/o: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with `TRBJ`.
    #[error("not a journal (bad magic {0:?})")]
    BadMagic([u8; 4]),
    /// A version this build cannot read.
    #[error("journal version {0} is not supported (this build reads {VERSION})")]
    UnsupportedVersion(u16),
    /// A length over `MAX_RECORD_BYTES`.
    #[error("record {record}: length {len} is over the limit of {MAX_RECORD_BYTES} bytes")]
    TooLong {
        /// Record number (0 is the header).
        record: u64,
        /// The length read.
        len: u32,
    },
    /// A record that does not decode.
    #[error("record {record}: {source}")]
    Decode {
        /// Record number (0 is the header).
        record: u64,
        /// What postcard said.
        source: postcard::Error,
    },
    /// A value that does not encode.
    #[error("encoding a record: {0}")]
    Encode(postcard::Error),
}

/// Writes a journal.
#[derive(Debug)]
pub struct JournalWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    records: u64,
}

impl<W: Write> JournalWriter<W> {
    /// Starts a journal: writes the magic, the version and the header.
    pub fn new(mut out: W, header: &JournalHeader) -> Result<Self, JournalError> {
        out.write_all(&MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        let mut w = JournalWriter {
            out,
            buf: Vec::new(),
            records: 0,
        };
        w.frame(header)?;
        Ok(w)
    }

    /// Appends one input with the time it was handled at.
    pub fn record(&mut self, now: Now, input: &Input) -> Result<(), JournalError> {
        self.records += 1;
        self.frame(&(now, input))
    }

    fn frame<T: serde::Serialize>(&mut self, value: &T) -> Result<(), JournalError> {
        self.buf.clear();
        let bytes = postcard::to_extend(value, std::mem::take(&mut self.buf))
            .map_err(JournalError::Encode)?;
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&bytes)?;
        self.buf = bytes;
        Ok(())
    }

    /// The sink, e.g. to flush it between records.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes and returns the sink.
    pub fn finish(mut self) -> Result<W, JournalError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a journal, record by record.
#[derive(Debug)]
pub struct JournalReader<R: Read> {
    input: R,
    header: JournalHeader,
    records: u64,
}

impl<R: Read> JournalReader<R> {
    /// Opens a journal: checks the magic and the version and reads the header.
    pub fn new(mut input: R) -> Result<Self, JournalError> {
        let mut magic = [0u8; 4];
        input.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(JournalError::BadMagic(magic));
        }
        let mut v = [0u8; 2];
        input.read_exact(&mut v)?;
        let version = u16::from_le_bytes(v);
        if version != VERSION {
            return Err(JournalError::UnsupportedVersion(version));
        }
        let bytes = match read_frame(&mut input, 0)? {
            Some(b) => b,
            None => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
        };
        let header = postcard::from_bytes(&bytes)
            .map_err(|source| JournalError::Decode { record: 0, source })?;
        Ok(JournalReader {
            input,
            header,
            records: 0,
        })
    }

    /// How the journal's engine was created.
    pub fn header(&self) -> &JournalHeader {
        &self.header
    }

    /// The next record, or `None` at the end (or after a last record cut short).
    pub fn next_record(&mut self) -> Result<Option<(Now, Input)>, JournalError> {
        let record = self.records + 1;
        let Some(bytes) = read_frame(&mut self.input, record)? else {
            return Ok(None);
        };
        self.records = record;
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|source| JournalError::Decode { record, source })
    }
}

/// Reads one length-prefixed frame; `None` at a clean or torn end.
fn read_frame<R: Read>(input: &mut R, record: u64) -> Result<Option<Vec<u8>>, JournalError> {
    let mut len = [0u8; 4];
    match read_full(input, &mut len)? {
        0 => return Ok(None),
        4 => {}
        _ => return Ok(None),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_RECORD_BYTES {
        return Err(JournalError::TooLong { record, len });
    }
    // Grown as the bytes arrive, not allocated from the length: a damaged length must not cost
    // `MAX_RECORD_BYTES` of memory when the journal ends a few bytes later.
    let mut bytes = Vec::new();
    input.take(u64::from(len)).read_to_end(&mut bytes)?;
    if bytes.len() < len as usize {
        return Ok(None);
    }
    Ok(Some(bytes))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<usize, JournalError> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// Reads a whole journal from bytes.
pub fn read_all(bytes: &[u8]) -> Result<(JournalHeader, Vec<(Now, Input)>), JournalError> {
    let mut r = JournalReader::new(bytes)?;
    let mut records = Vec::new();
    while let Some(rec) = r.next_record()? {
        records.push(rec);
    }
    Ok((r.header.clone(), records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::{ConnId, MonoNanos, UnixMillis};

    fn header() -> JournalHeader {
        JournalHeader {
            config: Config::default(),
            seed: 9,
            start: Now {
                mono: MonoNanos(1),
                wall: UnixMillis(2),
            },
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let mut w = JournalWriter::new(Vec::new(), &header()).unwrap();
        let now = Now {
            mono: MonoNanos(5),
            wall: UnixMillis(6),
        };
        w.record(now, &Input::Tick).unwrap();
        w.record(now, &Input::ConnClosed { conn: ConnId(3) })
            .unwrap();
        let bytes = w.finish().unwrap();
        let (h, recs) = read_all(&bytes).unwrap();
        assert_eq!(h, header());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].1, Input::ConnClosed { conn: ConnId(3) });
        // A torn last record is dropped, not an error.
        let (_, recs) = read_all(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(recs.len(), 1);
    }

    /// A reader that ends at once and records the largest buffer it was asked to fill.
    struct Probe<'a> {
        data: &'a [u8],
        largest: usize,
    }

    impl Read for Probe<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.largest = self.largest.max(buf.len());
            self.data.read(buf)
        }
    }

    /// Found while writing the fuzz target: a record whose length says 64 MiB, in a journal
    /// that ends right after it, used to allocate (and ask the reader to fill) 64 MiB first.
    #[test]
    fn a_damaged_length_does_not_allocate_what_it_says() {
        let mut bytes = JournalWriter::new(Vec::new(), &header())
            .unwrap()
            .finish()
            .unwrap();
        bytes.extend_from_slice(&MAX_RECORD_BYTES.to_le_bytes());
        bytes.extend_from_slice(b"abc");
        let mut probe = Probe {
            data: &bytes,
            largest: 0,
        };
        let mut r = JournalReader::new(&mut probe).unwrap();
        assert!(r.next_record().unwrap().is_none(), "a torn end");
        assert!(
            probe.largest < 1 << 20,
            "asked to fill {} bytes",
            probe.largest
        );
    }

    #[test]
    fn malformed_journals_are_typed_errors() {
        assert!(matches!(
            read_all(b"NOPE\x01\x00"),
            Err(JournalError::BadMagic(_))
        ));
        assert!(matches!(
            read_all(b"TRBJ\x09\x00"),
            Err(JournalError::UnsupportedVersion(9))
        ));
        let mut bytes = JournalWriter::new(Vec::new(), &header())
            .unwrap()
            .finish()
            .unwrap();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            read_all(&bytes),
            Err(JournalError::Decode { record: 1, .. })
        ));
    }
}
