//! Snapshot files: a raft snapshot's payload (a [`Store::export_state`] image, several MB)
//! is kept in a plain file next to the database, never in redb.
//!
//! Why: redb has a single writer. A multi-MB blob written (and fsynced) in a redb write
//! transaction makes every raft log append, which needs its own durable write transaction,
//! wait behind it; with a 50 ms append RPC timeout that stalls replication. A file is written
//! without touching redb's writer at all; only a small record describing it (a
//! [`SnapshotFile`]) is committed in redb, afterwards, by the caller.
//!
//! Layout, for a database at `DIR/raft.redb`:
//!
//! * `DIR/raft.redb.snapshot-<generation>`: a complete, fsynced snapshot payload;
//! * `DIR/raft.redb.snapshot-<generation>.tmp`: one being written (never read).
//!
//! Each new snapshot gets a new generation (the current one + 1), so the file the committed
//! record points to is never overwritten: a crash at any point leaves the previous snapshot
//! readable. The record carries the payload's length and 64-bit FNV-1a checksum, so a torn or
//! otherwise damaged file is detected on read ([`Store::read_snapshot_file`]) instead of being
//! handed to a follower.
//!
//! [`Store::export_state`]: crate::Store::export_state

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

/// What a caller records (in redb) about a durable snapshot file: which one, and what it must
/// contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Names the file (`<db>.snapshot-<generation>`); each new snapshot uses a larger one.
    pub generation: u64,
    /// Payload length in bytes.
    pub len: u64,
    /// [`fnv1a64`] of the payload.
    pub checksum: u64,
}

/// 64-bit FNV-1a. Not cryptographic: it detects torn writes and bit rot, which is all a
/// snapshot file needs (its contents come from this node or its leader, not from a user).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The file is written and `fdatasync`ed in pieces of this size, so the filesystem never has
/// a large amount of dirty snapshot data to flush at once (a journal commit forced by the
/// raft log's own fsync could otherwise wait for all of it).
const SYNC_CHUNK: usize = 1 << 20;

const TMP_SUFFIX: &str = ".tmp";

fn snapshot_prefix(db: &Path) -> OsString {
    let mut name = db.file_name().map(OsString::from).unwrap_or_default();
    name.push(".snapshot-");
    name
}

fn parent_dir(db: &Path) -> &Path {
    match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename (or removal) in `dir` durable. Also used by the [`wal`](crate::wal) for
/// segment creation and removal.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    for chunk in data.chunks(SYNC_CHUNK) {
        f.write_all(chunk)?;
        f.sync_data()?;
    }
    f.sync_all()
}

impl Store {
    /// The database file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the snapshot file of `generation` lives: `<db path>.snapshot-<generation>`.
    pub fn snapshot_file_path(&self, generation: u64) -> PathBuf {
        let mut name = snapshot_prefix(&self.path);
        name.push(generation.to_string());
        self.path.with_file_name(name)
    }

    /// Writes `data` as the snapshot file of `generation` and makes it durable: a temporary
    /// file, written and fsynced, renamed into place, then the directory fsynced. When this
    /// returns, the file survives a crash; until the caller commits the returned record, it is
    /// merely an orphan (see [`Store::remove_snapshot_files_except`]). Never touches redb.
    ///
    /// `generation` must not be the one the committed record points to (use a new one).
    pub fn write_snapshot_file(
        &self,
        generation: u64,
        data: &[u8],
    ) -> Result<SnapshotFile, StoreError> {
        let path = self.snapshot_file_path(generation);
        let mut tmp = path.clone().into_os_string();
        tmp.push(TMP_SUFFIX);
        let tmp = PathBuf::from(tmp);
        let checksum = fnv1a64(data);
        if let Err(e) = write_synced(&tmp, data) {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        fs::rename(&tmp, &path)?;
        sync_dir(parent_dir(&self.path))?;
        Ok(SnapshotFile {
            generation,
            len: data.len() as u64,
            checksum,
        })
    }

    /// Reads the snapshot file that `file` describes and checks its length and checksum. A
    /// missing, short, long or damaged file is [`StoreError::Corrupt`]; other IO failures are
    /// [`StoreError::Io`].
    pub fn read_snapshot_file(&self, file: &SnapshotFile) -> Result<Vec<u8>, StoreError> {
        let path = self.snapshot_file_path(file.generation);
        let corrupt = |what: String| StoreError::Corrupt(format!("{}: {what}", path.display()));
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(corrupt("snapshot file missing".into()))
            }
            Err(e) => return Err(e.into()),
        };
        let on_disk = f.metadata()?.len();
        if on_disk != file.len {
            return Err(corrupt(format!(
                "snapshot file has {on_disk} bytes, expected {}",
                file.len
            )));
        }
        let cap = usize::try_from(file.len).map_err(|_| corrupt("too large".into()))?;
        let mut data = Vec::with_capacity(cap);
        f.read_to_end(&mut data)?;
        if data.len() as u64 != file.len {
            return Err(corrupt(format!(
                "read {} bytes, expected {}",
                data.len(),
                file.len
            )));
        }
        let checksum = fnv1a64(&data);
        if checksum != file.checksum {
            return Err(corrupt(format!(
                "checksum {checksum:016x}, expected {:016x}",
                file.checksum
            )));
        }
        Ok(data)
    }

    /// Deletes every snapshot file (and leftover temporary file) of this store except the one
    /// of generation `keep`: earlier snapshots, and orphans of a crash between
    /// [`Store::write_snapshot_file`] and the commit of its record. Returns how many files it
    /// removed. Files whose names do not parse as ours are left alone.
    pub fn remove_snapshot_files_except(&self, keep: Option<u64>) -> Result<usize, StoreError> {
        let dir = parent_dir(&self.path);
        let prefix = snapshot_prefix(&self.path);
        let prefix = prefix.to_string_lossy();
        let mut removed = 0;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&*prefix)) else {
                continue;
            };
            let (gen, is_tmp) = match rest.strip_suffix(TMP_SUFFIX) {
                Some(g) => (g, true),
                None => (rest, false),
            };
            let Ok(gen) = gen.parse::<u64>() else {
                continue;
            };
            if is_tmp || Some(gen) != keep {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if removed > 0 {
            sync_dir(dir)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("weft.redb")).expect("open");
        (dir, store)
    }

    #[test]
    fn fnv1a64_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn snapshot_file_round_trip_and_damage_detection() {
        let (dir, s) = open();
        assert_eq!(s.path(), dir.path().join("weft.redb"));
        assert_eq!(
            s.snapshot_file_path(7),
            dir.path().join("weft.redb.snapshot-7")
        );
        // Bigger than one sync chunk, not a multiple of it.
        let data: Vec<u8> = (0..(SYNC_CHUNK * 2 + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        let f = s.write_snapshot_file(1, &data).unwrap();
        assert_eq!(f.len, data.len() as u64);
        assert_eq!(f.checksum, fnv1a64(&data));
        assert_eq!(s.read_snapshot_file(&f).unwrap(), data);
        assert!(
            !dir.path().join("weft.redb.snapshot-1.tmp").exists(),
            "temporary file renamed away"
        );

        let path = s.snapshot_file_path(1);
        let mut flipped = data.clone();
        flipped[SYNC_CHUNK + 5] ^= 0x40;
        fs::write(&path, &flipped).unwrap();
        assert!(matches!(
            s.read_snapshot_file(&f),
            Err(StoreError::Corrupt(_))
        ));
        fs::write(&path, &data[..data.len() - 1]).unwrap();
        assert!(matches!(
            s.read_snapshot_file(&f),
            Err(StoreError::Corrupt(_))
        ));
        fs::remove_file(&path).unwrap();
        assert!(matches!(
            s.read_snapshot_file(&f),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn remove_snapshot_files_except_keeps_only_the_current_one() {
        let (dir, s) = open();
        s.write_snapshot_file(1, b"one").unwrap();
        let two = s.write_snapshot_file(2, b"two").unwrap();
        s.write_snapshot_file(3, b"orphan").unwrap();
        fs::write(dir.path().join("weft.redb.snapshot-4.tmp"), b"torn").unwrap();
        fs::write(dir.path().join("weft.redb.snapshot-notes"), b"not ours").unwrap();
        fs::write(dir.path().join("other.redb.snapshot-1"), b"not ours").unwrap();

        assert_eq!(s.remove_snapshot_files_except(Some(2)).unwrap(), 3);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "other.redb.snapshot-1",
                "weft.redb",
                "weft.redb.snapshot-2",
                "weft.redb.snapshot-notes"
            ]
        );
        assert_eq!(s.read_snapshot_file(&two).unwrap(), b"two");
        assert_eq!(s.remove_snapshot_files_except(None).unwrap(), 1);
        assert!(!s.snapshot_file_path(2).exists());
    }
}
