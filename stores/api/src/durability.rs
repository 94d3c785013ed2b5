//! When a commit the store answered is durable: the fsync policy of both SQL stores.

use std::str::FromStr;

/// When an acknowledged commit is durable. The default, [`Durability::Full`], answers a write
/// only once it is on disk (fsync'd); [`Durability::Normal`] answers once the database has the
/// commit and leaves the fsync to the database's background writer, as NATS JetStream (no
/// fsync at all by default) and Kafka (fsync left to the OS) do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync before every answer: an acknowledged write survives a crash of the process, of
    /// the database server and of the machine (SQLite `synchronous = FULL`, PostgreSQL
    /// `synchronous_commit = on`).
    #[default]
    Full,
    /// The fsync is left to the database (SQLite `synchronous = NORMAL` in WAL: at
    /// checkpoints; PostgreSQL `synchronous_commit = off`: by the WAL writer, within
    /// 3 x `wal_writer_delay`, 600 ms by default). A crash of Tributary loses nothing
    /// acknowledged; a crash of the machine (or of the PostgreSQL server) may lose the last
    /// acknowledged writes, never corrupting what remains.
    Normal,
}

/// A durability name that is neither `full` nor `normal`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "durability {0:?}: expected `full` (fsync before every answer) or `normal` (fsync left to the database)"
)]
pub struct BadDurability(pub String);

impl FromStr for Durability {
    type Err = BadDurability;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            _ => Err(BadDurability(s.to_string())),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Full => "full",
            Durability::Normal => "normal",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for d in [Durability::Full, Durability::Normal] {
            assert_eq!(d.to_string().parse(), Ok(d));
        }
        assert_eq!(Durability::default(), Durability::Full);
        let e = "fast".parse::<Durability>().unwrap_err();
        assert!(e.to_string().contains("\"fast\"") && e.to_string().contains("`full`"));
    }
}
