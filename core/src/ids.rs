//! Identifiers: events, connections, requests, storage operations.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// A 16-byte event id (a UUID). Given by the producer, it is the dedup key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId(pub Uuid);

impl EventId {
    /// The id from its 16 bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        EventId(Uuid::from_bytes(b))
    }
    /// The 16 bytes of the id.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
    /// A version-4 UUID built from 16 bytes of the engine's seeded generator.
    pub fn from_random(b: [u8; 16]) -> Self {
        EventId(uuid::Builder::from_random_bytes(b).into_uuid())
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for EventId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(EventId(Uuid::parse_str(s)?))
    }
}

/// A client connection, numbered by the driver. Replies and deliveries are addressed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnId(pub u64);

/// A request on a connection, numbered by the driver; its reply repeats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReqId(pub u64);

/// A storage operation, numbered by the core; its completion repeats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub u64);

/// A replay session, numbered by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplayId(pub u64);

/// A subscription's durable numeric id, assigned by the core at creation and kept by the store.
/// Storage writes about a subscription carry it, so a late write for a deleted subscription
/// never lands on a new one of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SubId(pub u64);
