//! A fake [`SnapshotSink`] that keeps what it is given in memory, or fails as told (an S3 that
//! answers 500), and the bytes the fake cluster hands out as an etcd snapshot: a bbolt-shaped
//! file ending with etcd's sha256, so the sink's checks are the real ones.

use std::sync::Mutex;

use sha2::{Digest, Sha256};
use vixen_model::backup::BeforeRisky;

use crate::ports::{BoxFuture, SnapshotSink, SnapshotSource};

/// Four 4 KiB pages with bbolt's magic in the first meta page, the raft index in the data, and
/// the trailing sha256 etcd appends.
pub fn snapshot_bytes(raft_index: u64) -> Vec<u8> {
    let mut db = vec![0u8; 4096 * 4];
    db[16..20].copy_from_slice(&0xED0C_DAEDu32.to_le_bytes());
    db[8192..8200].copy_from_slice(&raft_index.to_le_bytes());
    let h = Sha256::digest(&db);
    db.extend_from_slice(&h);
    db
}

/// The raft index [`snapshot_bytes`] wrote (what a restore brings back).
pub fn raft_index_of(snapshot: &[u8]) -> Option<u64> {
    let b: [u8; 8] = snapshot.get(8192..8200)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// A sink in memory.
#[derive(Debug)]
pub struct FakeSink {
    /// Its policy.
    pub policy: BeforeRisky,
    /// When set, every save fails with this message.
    pub fail: Mutex<Option<String>>,
    /// What was saved: (key, source, size).
    pub saved: Mutex<Vec<(String, SnapshotSource, usize)>>,
}

impl FakeSink {
    /// A sink with `policy` that succeeds.
    pub fn new(policy: BeforeRisky) -> Self {
        Self {
            policy,
            fail: Mutex::new(None),
            saved: Mutex::new(Vec::new()),
        }
    }

    /// Makes every save fail with `message`.
    pub fn failing(self, message: &str) -> Self {
        *self.fail.lock().expect("fake sink") = Some(message.into());
        self
    }

    /// What was saved.
    pub fn saved(&self) -> Vec<(String, SnapshotSource, usize)> {
        self.saved.lock().expect("fake sink").clone()
    }
}

impl SnapshotSink for FakeSink {
    fn policy(&self) -> BeforeRisky {
        self.policy
    }

    fn save<'a>(
        &'a self,
        snapshot: Vec<u8>,
        source: SnapshotSource,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            if let Some(m) = self.fail.lock().expect("fake sink").clone() {
                return Err(m);
            }
            let (db, hash) = snapshot.split_at(snapshot.len().saturating_sub(32));
            if Sha256::digest(db).as_slice() != hash {
                return Err("the snapshot's sha256 does not match its content".into());
            }
            let mut saved = self.saved.lock().expect("fake sink");
            let key = format!("snap-{}", saved.len() + 1);
            saved.push((key.clone(), source, snapshot.len()));
            Ok(key)
        })
    }
}
