//! The proxy's secret: the key of our branch MACs, Record-Route proofs and map hashing.
//! Generated on first start (32 random bytes, hex, mode 0600) and kept, so branches and
//! dialog proofs issued before a restart still verify after it. `[server] secret` replaces
//! it, so that the nodes of a cluster accept each other's.

use crate::sip::branch::Key;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const FILE: &str = "secret";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a secret written by sipguard (expected 64 hex digits)")]
    Malformed { path: PathBuf },
    #[error("{path}: readable by others (mode {mode:o}); chmod 600 it")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("no random source: {0}")]
    Random(getrandom::Error),
}

/// Where the key comes from: the configured shared secret, else the state file.
pub fn key(configured: Option<&str>, state_dir: &Path) -> Result<Key, SecretError> {
    match configured {
        Some(s) => Ok(Key::derive(s.as_bytes())),
        None => load_or_create(state_dir).map(|b| Key::derive(&b)),
    }
}

/// Read `dir/secret`, or create it when absent.
pub fn load_or_create(dir: &Path) -> Result<Vec<u8>, SecretError> {
    let path = dir.join(FILE);
    let io = |source| SecretError::Io { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SecretError::Exposed { path, mode });
            }
            let text = text.trim();
            if text.len() != 64 || !text.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(SecretError::Malformed { path });
            }
            Ok(text.as_bytes().to_vec())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            super::ensure_dir(dir).map_err(|source| SecretError::Io { path: dir.to_path_buf(), source })?;
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw).map_err(SecretError::Random)?;
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            super::write_atomic(&path, format!("{hex}\n").as_bytes(), 0o600).map_err(io)?;
            tracing::info!(path = %path.display(), "generated a new secret");
            Ok(hex.into_bytes())
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let a = load_or_create(&state).unwrap();
        let path = state.join(FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create(&state).unwrap(), a, "kept across starts");
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), a, "random per installation");
        assert_eq!(key(Some("shared"), &state).unwrap(), key(Some("shared"), other.path()).unwrap());
        assert_ne!(key(None, &state).unwrap(), key(None, other.path()).unwrap());
    }

    #[test]
    fn refuses_bad_or_exposed_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, "not hex\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(SecretError::Malformed { .. })));
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(SecretError::Exposed { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_create(dir.path()).is_ok());
    }
}
