//! Producer ids for idempotent producers. Ids are handed out from blocks whose upper bound is
//! persisted before the first id of the block is used, so an id is never given twice, even
//! after a crash (the rest of a block is skipped after a restart, as Kafka does).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const BLOCK_SIZE: i64 = 1000;

#[derive(Debug)]
pub struct ProducerIdAllocator {
    path: PathBuf,
    next: i64,
    block_end: i64,
}

impl ProducerIdAllocator {
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join("producer-id-block");
        let next = match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} does not hold a producer id", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            next,
            block_end: next,
        })
    }

    pub fn next_id(&mut self) -> io::Result<i64> {
        if self.next == self.block_end {
            let end = self.next + BLOCK_SIZE;
            write_atomically(&self.path, end.to_string().as_bytes())?;
            self.block_end = end;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }
}

/// Writes `contents` to `path` through a synced temporary file and a rename, so a crash leaves
/// either the old or the new contents.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = ProducerIdAllocator::open(dir.path()).unwrap();
        assert_eq!(first.next_id().unwrap(), 0);
        assert_eq!(first.next_id().unwrap(), 1);
        drop(first);
        let mut second = ProducerIdAllocator::open(dir.path()).unwrap();
        assert_eq!(second.next_id().unwrap(), BLOCK_SIZE);
    }
}
