//! Typed refusals. Every refusal names what is wrong and, where there is one, the limit.
//! A refused request changes nothing.

use crate::names::{ConsumerId, StreamName, SubscriptionName};
use thiserror::Error;

/// Bad input: a field out of its limits or of the wrong form.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidInput {
    /// A field's length is outside `min..=max` (bytes, or entries for collections).
    #[error("{field}: length {len} is outside {min}..={max}")]
    Length {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The shortest allowed.
        min: usize,
        /// The longest allowed.
        max: usize,
    },
    /// A field does not match its pattern.
    #[error("{field}: does not match {pattern}")]
    Pattern {
        /// The field.
        field: &'static str,
        /// What it must look like.
        pattern: &'static str,
    },
    /// A number is outside its range.
    #[error("{field}: {value} is outside {min}..={max}")]
    Range {
        /// The field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The smallest allowed.
        min: u64,
        /// The largest allowed.
        max: u64,
    },
    /// A combination of fields that cannot hold.
    #[error("{field}: {reason}")]
    Conflict {
        /// The field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

/// Why the core refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// Bad input; nothing changed.
    #[error("invalid input: {0}")]
    Invalid(#[from] InvalidInput),
    /// The stream does not exist.
    #[error("stream {0} not found")]
    StreamNotFound(StreamName),
    /// A stream of that name exists (or is being created or deleted).
    #[error("stream {0} already exists")]
    StreamExists(StreamName),
    /// The subscription does not exist.
    #[error("subscription {subscription} on stream {stream} not found")]
    SubscriptionNotFound {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
    },
    /// A subscription of that name exists on the stream.
    #[error("subscription {subscription} on stream {stream} already exists")]
    SubscriptionExists {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
    },
    /// The consumer is not attached on this connection.
    #[error("consumer {0} is not attached to this subscription on this connection")]
    NotAttached(ConsumerId),
    /// The consumer is attached on another connection.
    #[error("consumer {0} is already attached")]
    AlreadyAttached(ConsumerId),
    /// Optimistic concurrency failed; nothing was written.
    #[error("partition {partition}: expected offset {expected}, actual {actual}")]
    WrongExpectedOffset {
        /// The partition.
        partition: u32,
        /// The offset the request expected its first event to get.
        expected: u64,
        /// The offset it would have got.
        actual: u64,
    },
    /// An ephemeral stream is full and its overflow policy is `reject`.
    #[error("stream {stream} is full ({limit})")]
    StreamFull {
        /// The stream.
        stream: StreamName,
        /// Which limit was hit, e.g. "max_events 1000".
        limit: String,
    },
    /// A bounded collection of the core is at capacity; try again later.
    #[error("busy: {what} is at its limit of {limit}")]
    Busy {
        /// What is full.
        what: &'static str,
        /// Its limit.
        limit: u64,
    },
    /// The offsets asked for were removed (retention or overflow).
    #[error("truncated: the first available offset is {first_available}")]
    Truncated {
        /// The lowest offset still readable.
        first_available: u64,
    },
    /// The storage failed; nothing was written (or, for reads, nothing read).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// No such replay on this connection.
    #[error("replay {0:?} not found")]
    ReplayNotFound(crate::ids::ReplayId),
    /// ConsumerGroup: the commit carries another generation than the group's (a member that
    /// lost its partitions cannot move their offsets); nothing changed.
    #[error(
        "consumer {consumer}: generation {given} is stale, the group is at generation {current}"
    )]
    StaleGeneration {
        /// The member.
        consumer: ConsumerId,
        /// The generation the request carried.
        given: u64,
        /// The group's generation.
        current: u64,
    },
    /// ConsumerGroup: the partition is not the member's in the current generation; nothing
    /// changed.
    #[error(
        "partition {partition} is not assigned to consumer {consumer} in generation {generation}"
    )]
    NotAssigned {
        /// The member.
        consumer: ConsumerId,
        /// The partition.
        partition: u32,
        /// The group's generation.
        generation: u64,
    },
    /// A nack or term named an event that is in flight to another consumer of the
    /// subscription (exclusive mode): only the consumer it was delivered to may nack or term
    /// it. Nothing changed.
    #[error(
        "consumer {consumer} cannot settle partition {partition} offset {offset}: it is in flight to consumer {holder}"
    )]
    NotHolder {
        /// The consumer that asked.
        consumer: ConsumerId,
        /// The partition.
        partition: u32,
        /// The offset.
        offset: u64,
        /// The consumer the event is in flight to.
        holder: ConsumerId,
    },
    /// A schema version is not compatible with the version before (SPEC 7); nothing changed.
    #[error("schema {event_type} v{version}: field {field:?}: {reason}")]
    SchemaIncompatible {
        /// The event type.
        event_type: String,
        /// The version refused.
        version: u32,
        /// The field that breaks (empty when the upcaster itself failed).
        field: String,
        /// Why.
        reason: String,
    },
    /// A schema version that does not fit the registry as it stands (SPEC 7): not the latest
    /// plus one, or registered already with another schema or upcaster; nothing changed.
    #[error("schema {event_type} v{version}: {reason}")]
    SchemaVersionConflict {
        /// The event type.
        event_type: String,
        /// The version refused.
        version: u32,
        /// Why, e.g. "the next version is 4".
        reason: String,
    },
    /// A broadcast or read receipt subscription has no position for this consumer.
    #[error(
        "subscription {subscription} on stream {stream} has no position for consumer {consumer}"
    )]
    ConsumerNotFound {
        /// The stream.
        stream: StreamName,
        /// The subscription.
        subscription: SubscriptionName,
        /// The consumer.
        consumer: ConsumerId,
    },
    /// The consumer is attached: its position cannot be removed under it; nothing changed.
    #[error("consumer {0} is attached: detach it before removing its position")]
    ConsumerAttached(ConsumerId),
    /// The consumer's position is being removed; attach (or remove) again once it is gone.
    #[error("the position of consumer {0} is being removed; try again once it is gone")]
    ConsumerRemoving(ConsumerId),
    /// The stream is in a state that does not allow the request (e.g. being deleted).
    #[error("stream {stream}: {reason}")]
    FailedPrecondition {
        /// The stream.
        stream: StreamName,
        /// Why.
        reason: &'static str,
    },
}

/// What a caller may do about an error: used by transports to pick a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Bad input (gRPC INVALID_ARGUMENT, HTTP 400).
    InvalidArgument,
    /// Not found (NOT_FOUND, 404).
    NotFound,
    /// Already exists (ALREADY_EXISTS, 409).
    AlreadyExists,
    /// A precondition failed (FAILED_PRECONDITION, 409/412).
    FailedPrecondition,
    /// A limit was reached; retry later (RESOURCE_EXHAUSTED, 429).
    ResourceExhausted,
    /// Out of range (OUT_OF_RANGE, 416).
    OutOfRange,
    /// The store is away (UNAVAILABLE, 503).
    Unavailable,
}

impl Error {
    /// The error's stable name in upper snake case (`STREAM_NOT_FOUND`): the `reason` of a
    /// gRPC `ErrorInfo` and the `error` of an HTTP error body.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "INVALID_INPUT",
            Error::StreamNotFound(_) => "STREAM_NOT_FOUND",
            Error::StreamExists(_) => "STREAM_EXISTS",
            Error::SubscriptionNotFound { .. } => "SUBSCRIPTION_NOT_FOUND",
            Error::SubscriptionExists { .. } => "SUBSCRIPTION_EXISTS",
            Error::NotAttached(_) => "NOT_ATTACHED",
            Error::AlreadyAttached(_) => "ALREADY_ATTACHED",
            Error::WrongExpectedOffset { .. } => "WRONG_EXPECTED_OFFSET",
            Error::StreamFull { .. } => "STREAM_FULL",
            Error::Busy { .. } => "BUSY",
            Error::Truncated { .. } => "TRUNCATED",
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::ReplayNotFound(_) => "REPLAY_NOT_FOUND",
            Error::FailedPrecondition { .. } => "FAILED_PRECONDITION",
            Error::StaleGeneration { .. } => "STALE_GENERATION",
            Error::NotAssigned { .. } => "NOT_ASSIGNED",
            Error::NotHolder { .. } => "NOT_HOLDER",
            Error::SchemaIncompatible { .. } => "SCHEMA_INCOMPATIBLE",
            Error::SchemaVersionConflict { .. } => "SCHEMA_VERSION_CONFLICT",
            Error::ConsumerNotFound { .. } => "CONSUMER_NOT_FOUND",
            Error::ConsumerAttached(_) => "CONSUMER_ATTACHED",
            Error::ConsumerRemoving(_) => "CONSUMER_REMOVING",
        }
    }

    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Invalid(_) => ErrorClass::InvalidArgument,
            Error::StreamNotFound(_)
            | Error::SubscriptionNotFound { .. }
            | Error::NotAttached(_)
            | Error::ConsumerNotFound { .. }
            | Error::ReplayNotFound(_) => ErrorClass::NotFound,
            Error::StreamExists(_)
            | Error::SubscriptionExists { .. }
            | Error::AlreadyAttached(_) => ErrorClass::AlreadyExists,
            Error::WrongExpectedOffset { .. }
            | Error::FailedPrecondition { .. }
            | Error::StaleGeneration { .. }
            | Error::NotAssigned { .. }
            | Error::NotHolder { .. }
            | Error::ConsumerAttached(_)
            | Error::SchemaIncompatible { .. }
            | Error::SchemaVersionConflict { .. } => ErrorClass::FailedPrecondition,
            Error::StreamFull { .. } | Error::Busy { .. } => ErrorClass::ResourceExhausted,
            Error::Truncated { .. } => ErrorClass::OutOfRange,
            Error::Unavailable(_) | Error::ConsumerRemoving(_) => ErrorClass::Unavailable,
        }
    }
}
