//! Validated names: streams, subscriptions, consumers.

use crate::error::InvalidInput;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Longest stream or subscription name, in bytes (SPEC 1: `[a-z0-9][a-z0-9._-]{0,127}`).
pub const MAX_NAME_LEN: usize = 128;
/// Suffix of a stream's dead letter stream.
pub const DLQ_SUFFIX: &str = ".dlq";
/// Longest name of a stream that can have a dead letter stream (its `.dlq` name must be valid).
pub const MAX_DLQ_SOURCE_NAME_LEN: usize = MAX_NAME_LEN - DLQ_SUFFIX.len();
/// Longest consumer id, in bytes.
pub const MAX_CONSUMER_ID_LEN: usize = 256;

/// The pattern of stream and subscription names.
pub const NAME_PATTERN: &str = "[a-z0-9][a-z0-9._-]{0,127}";

fn check_name(field: &'static str, s: &str) -> Result<(), InvalidInput> {
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME_LEN {
        return Err(InvalidInput::Length {
            field,
            len: bytes.len(),
            min: 1,
            max: MAX_NAME_LEN,
        });
    }
    let first_ok = bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit();
    let rest_ok = bytes[1..]
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if !first_ok || !rest_ok {
        return Err(InvalidInput::Pattern {
            field,
            pattern: NAME_PATTERN,
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(Arc<str>);

        impl $ty {
            /// Validates and wraps a name.
            pub fn new(s: &str) -> Result<Self, InvalidInput> {
                check_name($field, s)?;
                Ok($ty(Arc::from(s)))
            }
            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = InvalidInput;
            fn try_from(s: String) -> Result<Self, InvalidInput> {
                $ty::new(&s)
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0.to_string()
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A stream name: `[a-z0-9][a-z0-9._-]{0,127}`.
    StreamName,
    "stream"
);
name_type!(
    /// A subscription name, with the same rule as stream names.
    SubscriptionName,
    "subscription"
);

impl StreamName {
    /// The name of this stream's dead letter stream, `<stream>.dlq`, if that name is valid.
    pub fn dlq(&self) -> Option<StreamName> {
        StreamName::new(&format!("{}{}", self.0, DLQ_SUFFIX)).ok()
    }
    /// Whether this is a dead letter stream (its name ends in `.dlq`).
    pub fn is_dlq(&self) -> bool {
        self.0.ends_with(DLQ_SUFFIX)
    }
}

/// A consumer id: 1 to 256 bytes of printable ASCII without spaces.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConsumerId(Arc<str>);

impl ConsumerId {
    /// Validates and wraps a consumer id.
    pub fn new(s: &str) -> Result<Self, InvalidInput> {
        let len = s.len();
        if len == 0 || len > MAX_CONSUMER_ID_LEN {
            return Err(InvalidInput::Length {
                field: "consumer",
                len,
                min: 1,
                max: MAX_CONSUMER_ID_LEN,
            });
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidInput::Pattern {
                field: "consumer",
                pattern: "printable ASCII, no spaces",
            });
        }
        Ok(ConsumerId(Arc::from(s)))
    }
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ConsumerId {
    type Error = InvalidInput;
    fn try_from(s: String) -> Result<Self, InvalidInput> {
        ConsumerId::new(&s)
    }
}

impl From<ConsumerId> for String {
    fn from(n: ConsumerId) -> String {
        n.0.to_string()
    }
}

impl fmt::Debug for ConsumerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ConsumerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_the_pattern() {
        assert!(StreamName::new("orders").is_ok());
        assert!(StreamName::new("0rders.v1_eu-west").is_ok());
        assert!(StreamName::new(&"a".repeat(128)).is_ok());
        assert!(matches!(
            StreamName::new(""),
            Err(InvalidInput::Length {
                field: "stream",
                max: 128,
                ..
            })
        ));
        assert!(matches!(
            StreamName::new(&"a".repeat(129)),
            Err(InvalidInput::Length { len: 129, .. })
        ));
        for bad in ["Orders", "-x", ".x", "a b", "a/b", "é"] {
            assert!(
                matches!(
                    StreamName::new(bad),
                    Err(InvalidInput::Pattern {
                        field: "stream",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn dlq_names() {
        let s = StreamName::new("orders").unwrap();
        assert_eq!(s.dlq().unwrap().as_str(), "orders.dlq");
        assert!(s.dlq().unwrap().is_dlq());
        assert!(StreamName::new(&"a".repeat(125)).unwrap().dlq().is_none());
        assert!(StreamName::new(&"a".repeat(124)).unwrap().dlq().is_some());
    }

    #[test]
    fn consumer_ids() {
        assert!(ConsumerId::new("worker-1@host").is_ok());
        assert!(ConsumerId::new("").is_err());
        assert!(ConsumerId::new("a b").is_err());
        assert!(ConsumerId::new(&"x".repeat(257)).is_err());
    }
}
