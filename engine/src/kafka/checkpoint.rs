//! Checkpoints in a directory shared by the replicas of a consumer group.
//!
//! Each replica writes one file, `<group>.<topic>.<replica>.json`, whole and
//! atomically (temporary file, fsync, rename, fsync of the directory), so a
//! reader sees the previous checkpoint or the next, never a mix. A file
//! holds the replica's partitions, its own counters and the length of its
//! window output at that moment. A partition's newest state is the entry
//! with the highest `seq` in any file, which is how a partition moves
//! between replicas.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use downbeat_operators::ForecastState;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::partition::PartitionCheckpoint;

/// Bumped when the format changes incompatibly; other versions are ignored.
const FORMAT_VERSION: u32 = 1;

/// One replica's checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaCheckpoint {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Wall clock when written, epoch ms.
    pub written_at_ms: i64,
    /// Bytes of `--emit-windows` output that reflect this checkpoint; after a
    /// crash the file is cut back to this length, and the windows after it
    /// are emitted again, identically.
    pub emitted_bytes: Option<u64>,
    /// The same for `--emit-sessions` output (absent in checkpoints of
    /// earlier versions).
    #[serde(default)]
    pub emitted_session_bytes: Option<u64>,
    /// This replica's counters (`name{labels}` to value), restored on restart.
    pub counters: BTreeMap<String, u64>,
    /// The partitions this replica held.
    pub partitions: Vec<PartitionCheckpoint>,
    /// What this replica's streams forecast has learnt (absent in
    /// checkpoints of earlier versions, or with no forecast).
    #[serde(default)]
    pub forecast: Option<ForecastState>,
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The directory or a file in it is not usable.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// The checkpoint directory of one (group, topic), from one replica's view.
pub struct CheckpointStore {
    dir: PathBuf,
    prefix: String,
    own_file: PathBuf,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    }
}

impl CheckpointStore {
    /// Open (creating) `dir` for `replica` in `group` reading `topic`.
    pub fn open(
        dir: &Path,
        group: &str,
        topic: &str,
        replica: &str,
    ) -> Result<Self, CheckpointError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let prefix = format!("{}.{}.", file_safe(group), file_safe(topic));
        let own_file = dir.join(format!("{prefix}{}.json", file_safe(replica)));
        Ok(Self {
            dir: dir.to_owned(),
            prefix,
            own_file,
        })
    }

    /// This replica's last checkpoint, if any.
    pub fn load_own(&self) -> Result<Option<ReplicaCheckpoint>, CheckpointError> {
        read(&self.own_file)
    }

    /// Write this replica's checkpoint atomically.
    pub fn save(&self, checkpoint: &ReplicaCheckpoint) -> Result<(), CheckpointError> {
        let tmp = self.own_file.with_extension("json.tmp");
        let bytes = serde_json::to_vec(checkpoint).expect("checkpoints serialize");
        let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(&bytes).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
        fs::rename(&tmp, &self.own_file).map_err(io_error(&self.own_file))?;
        // Make the rename itself durable.
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// The newest state of each partition across every replica's file.
    pub fn latest_partitions(&self) -> Result<BTreeMap<i32, PartitionCheckpoint>, CheckpointError> {
        let mut latest: BTreeMap<i32, PartitionCheckpoint> = BTreeMap::new();
        let entries = fs::read_dir(&self.dir).map_err(io_error(&self.dir))?;
        for entry in entries {
            let path = entry.map_err(io_error(&self.dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !(name.starts_with(&self.prefix) && name.ends_with(".json")) {
                continue;
            }
            let Some(checkpoint) = read(&path)? else {
                continue;
            };
            for partition in checkpoint.partitions {
                let newer = latest
                    .get(&partition.partition)
                    .is_none_or(|known| partition.seq > known.seq);
                if newer {
                    latest.insert(partition.partition, partition);
                }
            }
        }
        Ok(latest)
    }
}

/// Read one checkpoint file; a missing file, or one of another format
/// version, is `None` (and logged when unreadable).
fn read(path: &Path) -> Result<Option<ReplicaCheckpoint>, CheckpointError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    match serde_json::from_slice::<ReplicaCheckpoint>(&bytes) {
        Ok(checkpoint) if checkpoint.version == FORMAT_VERSION => Ok(Some(checkpoint)),
        Ok(checkpoint) => {
            tracing::warn!(path = %path.display(), version = checkpoint.version, "ignoring a checkpoint of another format version");
            Ok(None)
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring an unreadable checkpoint");
            Ok(None)
        }
    }
}

/// Keep names usable as one path component.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A new checkpoint value for `version`.
pub fn new_checkpoint(written_at_ms: i64) -> ReplicaCheckpoint {
    ReplicaCheckpoint {
        version: FORMAT_VERSION,
        written_at_ms,
        ..ReplicaCheckpoint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(partition: i32, seq: u64, next_offset: i64) -> PartitionCheckpoint {
        PartitionCheckpoint {
            partition,
            seq,
            next_offset,
            replay_from: next_offset,
            max_event_ms_before_replay: None,
            emitted_through_ms: 0,
            outliers: None,
            sessions: None,
        }
    }

    #[test]
    fn the_newest_state_of_a_partition_wins_across_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let a = CheckpointStore::open(dir.path(), "g", "t", "a").unwrap();
        let b = CheckpointStore::open(dir.path(), "g", "t", "b").unwrap();
        let other_topic = CheckpointStore::open(dir.path(), "g", "u", "a").unwrap();
        let mut cp = new_checkpoint(1);
        cp.partitions = vec![partition(0, 5, 100), partition(1, 2, 7)];
        a.save(&cp).unwrap();
        cp.partitions = vec![partition(0, 6, 150)];
        b.save(&cp).unwrap();
        cp.partitions = vec![partition(1, 99, 1)];
        other_topic.save(&cp).unwrap();
        let latest = a.latest_partitions().unwrap();
        assert_eq!(latest[&0].next_offset, 150);
        assert_eq!(latest[&1].next_offset, 7);
        assert_eq!(a.load_own().unwrap().unwrap().partitions.len(), 2);
    }

    #[test]
    fn a_corrupt_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let a = CheckpointStore::open(dir.path(), "g", "t", "a").unwrap();
        fs::write(dir.path().join("g.t.a.json"), b"{not json").unwrap();
        assert_eq!(a.load_own().unwrap(), None);
    }
}
