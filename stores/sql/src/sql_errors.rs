//! From sqlx errors to the core's storage outcomes, for every SQL store.

use crate::CodecError;
use sqlx::error::ErrorKind;
use tributary_core::{StorageError, StorageReply, StorageResult};

/// What a failure before the commit means: nothing was written.
pub fn failed(e: &sqlx::Error) -> StorageError {
    match e {
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::ForeignKeyViolation | ErrorKind::NotNullViolation => {
                StorageError::NotFound(db.to_string())
            }
            ErrorKind::UniqueViolation => StorageError::Conflict(db.to_string()),
            _ => StorageError::Unavailable(db.to_string()),
        },
        other => StorageError::Unavailable(other.to_string()),
    }
}

/// The outcome of a `COMMIT`: a database error means it was refused (nothing written); any
/// other failure (I/O, a closed connection) leaves it unknown.
pub fn committed(r: Result<(), sqlx::Error>) -> StorageResult {
    match r {
        Ok(()) => StorageResult::Ok(StorageReply::Done),
        Err(e @ sqlx::Error::Database(_)) => StorageResult::Err(failed(&e)),
        Err(_) => StorageResult::Unknown,
    }
}

/// A stored value that cannot be decoded.
pub fn codec(e: CodecError) -> StorageError {
    StorageError::Unavailable(format!("stored data cannot be decoded: {e}"))
}
