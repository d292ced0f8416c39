//! Sparse offset and time indexes of a segment: append-only files mirrored in memory.
//!
//! Both are derived data: when a file is missing, torn or inconsistent the segment rebuilds it from
//! its `.log` file, so they are never fsynced ahead of the log and never trusted blindly.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub(crate) trait IndexEntry: Copy {
    const SIZE: usize;
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Self;
    /// Whether `self` may follow `prev` in a well-formed index.
    fn follows(&self, prev: &Self) -> bool;
}

/// `<baseOffset>.index` entry: offset relative to the segment base of a batch's first offset, and
/// the byte position of that batch in the `.log` file. 8 bytes: u32 BE, u32 BE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;

    fn encode(&self) -> Vec<u8> {
        let mut v = self.rel_offset.to_be_bytes().to_vec();
        v.extend_from_slice(&self.position.to_be_bytes());
        v
    }

    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            rel_offset: u32::from_be_bytes(b[0..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
        }
    }

    fn follows(&self, prev: &Self) -> bool {
        self.rel_offset > prev.rel_offset && self.position > prev.position
    }
}

/// `<baseOffset>.timeindex` entry: the largest timestamp seen in the segment up to and including
/// the batch whose last offset (relative) is `rel_offset`. 12 bytes: i64 BE, u32 BE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;

    fn encode(&self) -> Vec<u8> {
        let mut v = self.timestamp.to_be_bytes().to_vec();
        v.extend_from_slice(&self.rel_offset.to_be_bytes());
        v
    }

    fn decode(b: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_be_bytes(b[0..8].try_into().expect("8 bytes")),
            rel_offset: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
        }
    }

    fn follows(&self, prev: &Self) -> bool {
        self.timestamp > prev.timestamp && self.rel_offset >= prev.rel_offset
    }
}

pub(crate) struct IndexFile<E: IndexEntry> {
    file: File,
    entries: Vec<E>,
}

impl<E: IndexEntry> IndexFile<E> {
    /// Opens (creating if missing) the file and loads its entries, with whether they are
    /// well-formed: a torn or unordered file must be rebuilt by the caller.
    pub fn open(path: &Path) -> io::Result<(IndexFile<E>, bool)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw)?;
        let mut entries: Vec<E> = Vec::with_capacity(raw.len() / E::SIZE);
        let mut valid = raw.len() % E::SIZE == 0;
        for chunk in raw.chunks_exact(E::SIZE) {
            let e = E::decode(chunk);
            if let Some(prev) = entries.last() {
                if !e.follows(prev) {
                    valid = false;
                    break;
                }
            }
            entries.push(e);
        }
        Ok((IndexFile { file, entries }, valid))
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    pub fn append(&mut self, entry: E) -> io::Result<()> {
        let at = (self.entries.len() * E::SIZE) as u64;
        self.file.write_all_at(&entry.encode(), at)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Keeps the first `n` entries.
    pub fn truncate(&mut self, n: usize) -> io::Result<()> {
        if n < self.entries.len() {
            self.entries.truncate(n);
            self.file.set_len((n * E::SIZE) as u64)?;
        }
        Ok(())
    }

    pub fn reset(&mut self) -> io::Result<()> {
        self.entries.clear();
        self.file.set_len(0)
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl IndexFile<OffsetEntry> {
    /// The last entry whose relative offset is <= `rel_offset`.
    pub fn lookup(&self, rel_offset: u32) -> Option<OffsetEntry> {
        let n = self.entries.partition_point(|e| e.rel_offset <= rel_offset);
        n.checked_sub(1).map(|i| self.entries[i])
    }
}

impl IndexFile<TimeEntry> {
    /// The last entry whose timestamp is < `timestamp`: every record up to its offset is older
    /// than `timestamp`, so a search for `timestamp` can start after it.
    pub fn lookup_before(&self, timestamp: i64) -> Option<TimeEntry> {
        let n = self.entries.partition_point(|e| e.timestamp < timestamp);
        n.checked_sub(1).map(|i| self.entries[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_reload_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let (mut idx, valid) = IndexFile::<OffsetEntry>::open(&path).unwrap();
        assert!(valid);
        for i in 1..=3u32 {
            idx.append(OffsetEntry {
                rel_offset: i * 10,
                position: i * 100,
            })
            .unwrap();
        }
        drop(idx);
        let (idx, valid) = IndexFile::<OffsetEntry>::open(&path).unwrap();
        assert!(valid);
        assert_eq!(idx.entries().len(), 3);
        assert_eq!(idx.lookup(5), None);
        assert_eq!(idx.lookup(10).unwrap().position, 100);
        assert_eq!(idx.lookup(29).unwrap().position, 200);
        assert_eq!(idx.lookup(1000).unwrap().position, 300);
    }

    #[test]
    fn torn_or_unordered_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.timeindex");
        std::fs::write(&path, [0u8; 13]).unwrap();
        assert!(!IndexFile::<TimeEntry>::open(&path).unwrap().1);
        let mut bytes = TimeEntry {
            timestamp: 5,
            rel_offset: 1,
        }
        .encode();
        bytes.extend(
            TimeEntry {
                timestamp: 5,
                rel_offset: 2,
            }
            .encode(),
        );
        std::fs::write(&path, bytes).unwrap();
        assert!(!IndexFile::<TimeEntry>::open(&path).unwrap().1);
    }

    #[test]
    fn time_lookup_is_strict() {
        let dir = tempfile::tempdir().unwrap();
        let (mut idx, _) = IndexFile::<TimeEntry>::open(&dir.path().join("t")).unwrap();
        idx.append(TimeEntry {
            timestamp: 10,
            rel_offset: 0,
        })
        .unwrap();
        idx.append(TimeEntry {
            timestamp: 20,
            rel_offset: 5,
        })
        .unwrap();
        assert_eq!(idx.lookup_before(10), None);
        assert_eq!(idx.lookup_before(11).unwrap().rel_offset, 0);
        assert_eq!(idx.lookup_before(21).unwrap().rel_offset, 5);
        idx.truncate(1).unwrap();
        assert_eq!(idx.entries().len(), 1);
        idx.reset().unwrap();
        assert!(idx.last().is_none());
    }
}
