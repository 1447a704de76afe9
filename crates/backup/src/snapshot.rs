//! Checking a snapshot as `etcdutl snapshot restore` does before it trusts one: etcd's Snapshot
//! RPC streams the bbolt database followed by the sha256 of everything before it (etcd
//! server/etcdserver/api/v3rpc/maintenance.go, "send the sha256 of the snapshot at the end");
//! etcdutl decides a file has that hash when its size modulo 512 is 32 and compares it
//! (etcdutl/snapshot/v3_snapshot.go, `hasChecksum`/`saveDB`). Talos' EtcdSnapshot passes that
//! stream through unchanged (internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go).

use sha2::{Digest, Sha256};

use crate::error::BackupError;

/// Length of the trailing sha256.
pub const HASH_LEN: usize = 32;

/// bbolt's magic number, in each meta page (`0xED0CDAED`, little-endian on disk).
const BOLT_MAGIC: u32 = 0xED0C_DAED;

/// A snapshot that passed [`check`].
#[derive(Debug, Clone)]
pub struct CheckedSnapshot {
    /// Size in bytes, hash included.
    pub size: u64,
    /// The trailing sha256, hex.
    pub sha256: String,
}

/// Checks size, the trailing sha256 and the bbolt magic of the first meta page.
///
/// # Errors
/// [`BackupError::TooSmall`], [`BackupError::NoHash`], [`BackupError::HashMismatch`],
/// [`BackupError::NotBolt`].
pub fn check(snapshot: &[u8]) -> Result<CheckedSnapshot, BackupError> {
    // Two meta pages of at least 512 bytes each, plus the hash.
    if snapshot.len() < 1024 + HASH_LEN {
        return Err(BackupError::TooSmall(snapshot.len()));
    }
    if snapshot.len() % 512 != HASH_LEN {
        return Err(BackupError::NoHash(snapshot.len()));
    }
    let (db, hash) = snapshot.split_at(snapshot.len() - HASH_LEN);
    if Sha256::digest(db).as_slice() != hash {
        return Err(BackupError::HashMismatch);
    }
    // Page header: id u64, flags u16, count u16, overflow u32 = 16 bytes; then the meta, whose
    // first field is the magic u32.
    let magic = u32::from_le_bytes([db[16], db[17], db[18], db[19]]);
    if magic != BOLT_MAGIC {
        return Err(BackupError::NotBolt);
    }
    Ok(CheckedSnapshot {
        size: snapshot.len() as u64,
        sha256: hex(hash),
    })
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_db(pages: usize) -> Vec<u8> {
        let mut db = vec![0u8; 4096 * pages];
        db[16..20].copy_from_slice(&BOLT_MAGIC.to_le_bytes());
        let h = Sha256::digest(&db);
        db.extend_from_slice(&h);
        db
    }

    #[test]
    fn a_hashed_bolt_file_passes() {
        let s = fake_db(4);
        let c = check(&s).unwrap();
        assert_eq!(c.size, s.len() as u64);
        assert_eq!(c.sha256.len(), 64);
    }

    #[test]
    fn truncated_damaged_and_foreign_files_fail() {
        let s = fake_db(4);
        assert!(matches!(
            check(&s[..s.len() - 1]),
            Err(BackupError::NoHash(_))
        ));
        assert!(matches!(check(&s[..100]), Err(BackupError::TooSmall(100))));
        let mut bad = s.clone();
        bad[5000] ^= 1;
        assert!(matches!(check(&bad), Err(BackupError::HashMismatch)));
        let mut foreign = vec![0u8; 4096 * 4];
        let h = Sha256::digest(&foreign);
        foreign.extend_from_slice(&h);
        assert!(matches!(check(&foreign), Err(BackupError::NotBolt)));
    }
}
