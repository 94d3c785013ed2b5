//! The core's errors as gRPC statuses: a code from the error's class, the error's text as the
//! message, and a `google.rpc.ErrorInfo` detail (plus `BadRequest` for bad input).

use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tributary_core::{Error, ErrorClass, InvalidInput};

/// The `domain` of every `ErrorInfo` this service sends.
pub const ERROR_DOMAIN: &str = "tributary";

/// The gRPC code for an error class.
pub(crate) fn code_of(class: ErrorClass) -> Code {
    match class {
        ErrorClass::InvalidArgument => Code::InvalidArgument,
        ErrorClass::NotFound => Code::NotFound,
        ErrorClass::AlreadyExists => Code::AlreadyExists,
        ErrorClass::FailedPrecondition => Code::FailedPrecondition,
        ErrorClass::ResourceExhausted => Code::ResourceExhausted,
        ErrorClass::OutOfRange => Code::OutOfRange,
        ErrorClass::Unavailable => Code::Unavailable,
    }
}

fn metadata_of(e: &Error) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    match e {
        Error::StreamNotFound(s) | Error::StreamExists(s) => put("stream", s.to_string()),
        Error::SubscriptionNotFound {
            stream,
            subscription,
        }
        | Error::SubscriptionExists {
            stream,
            subscription,
        } => {
            put("stream", stream.to_string());
            put("subscription", subscription.to_string());
        }
        Error::NotAttached(c)
        | Error::AlreadyAttached(c)
        | Error::ConsumerAttached(c)
        | Error::ConsumerRemoving(c) => put("consumer", c.to_string()),
        Error::ConsumerNotFound {
            stream,
            subscription,
            consumer,
        } => {
            put("stream", stream.to_string());
            put("subscription", subscription.to_string());
            put("consumer", consumer.to_string());
        }
        Error::WrongExpectedOffset {
            partition,
            expected,
            actual,
        } => {
            put("partition", partition.to_string());
            put("expected", expected.to_string());
            put("actual", actual.to_string());
        }
        Error::StreamFull { stream, limit } => {
            put("stream", stream.to_string());
            put("limit", limit.clone());
        }
        Error::Busy { what, limit } => {
            put("what", what.to_string());
            put("limit", limit.to_string());
        }
        Error::Truncated { first_available } => put("first_available", first_available.to_string()),
        Error::FailedPrecondition { stream, .. } => put("stream", stream.to_string()),
        Error::StaleGeneration {
            consumer,
            given,
            current,
        } => {
            put("consumer", consumer.to_string());
            put("given", given.to_string());
            put("current", current.to_string());
        }
        Error::SchemaIncompatible {
            event_type,
            version,
            field,
            ..
        } => {
            put("event_type", event_type.clone());
            put("version", version.to_string());
            put("field", field.clone());
        }
        Error::SchemaVersionConflict {
            event_type,
            version,
            ..
        } => {
            put("event_type", event_type.clone());
            put("version", version.to_string());
        }
        Error::NotAssigned {
            consumer,
            partition,
            generation,
        } => {
            put("consumer", consumer.to_string());
            put("partition", partition.to_string());
            put("generation", generation.to_string());
        }
        Error::NotHolder {
            consumer,
            partition,
            offset,
            holder,
        } => {
            put("consumer", consumer.to_string());
            put("partition", partition.to_string());
            put("offset", offset.to_string());
            put("holder", holder.to_string());
        }
        Error::Invalid(_) | Error::Unavailable(_) | Error::ReplayNotFound(_) => {}
    }
    m
}

/// The field a bad input names.
fn field_of(i: &InvalidInput) -> &'static str {
    match i {
        InvalidInput::Length { field, .. }
        | InvalidInput::Pattern { field, .. }
        | InvalidInput::Range { field, .. }
        | InvalidInput::Conflict { field, .. } => field,
    }
}

/// A core error as a gRPC status with its details.
pub fn error_to_status(e: &Error) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(e.reason(), ERROR_DOMAIN, metadata_of(e));
    match e {
        Error::Invalid(i) => {
            details.add_bad_request_violation(field_of(i), i.to_string());
        }
        Error::SchemaIncompatible { field, reason, .. } => {
            details.add_bad_request_violation(field.clone(), reason.clone());
        }
        _ => {}
    }
    Status::with_error_details(code_of(e.class()), e.to_string(), details)
}

/// Bad input found by the transport itself (before the core saw the request).
pub(crate) fn invalid(field: &str, description: impl Into<String>) -> Status {
    bad_input("INVALID_INPUT", field, description)
}

/// `INVALID_ARGUMENT` with an `ErrorInfo` of this reason and a `BadRequest` naming `field`.
pub(crate) fn bad_input(reason: &str, field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    details.add_bad_request_violation(field, description.clone());
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid input: {field}: {description}"),
        details,
    )
}

/// A request message larger than the server takes: `RESOURCE_EXHAUSTED` (gRPC's code for a
/// message over the receiver's limit), reason `MESSAGE_TOO_LARGE` with `size` and `limit` in
/// the metadata, and a `BadRequest` on the request.
pub(crate) fn message_too_large(size: usize, limit: usize) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(
        "MESSAGE_TOO_LARGE",
        ERROR_DOMAIN,
        HashMap::from([
            ("size".to_string(), size.to_string()),
            ("limit".to_string(), limit.to_string()),
        ]),
    );
    let description = format!("a message of {size} bytes; the limit is {limit} bytes");
    details.add_bad_request_violation("request", description.clone());
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("request too large: {description}"),
        details,
    )
}

/// `status` with a new message and `extra` added to its `ErrorInfo` metadata, every other detail
/// kept (a `BadRequest` stays). A status without `ErrorInfo` gets one, reason `fallback`.
pub(crate) fn with_context(
    status: &Status,
    message: String,
    extra: &[(&str, String)],
    fallback: &str,
) -> Status {
    let mut details = status.get_error_details();
    let (reason, domain, mut metadata) = match details.error_info() {
        Some(i) => (i.reason.clone(), i.domain.clone(), i.metadata.clone()),
        None => (
            fallback.to_string(),
            ERROR_DOMAIN.to_string(),
            HashMap::new(),
        ),
    };
    for (k, v) in extra {
        metadata.insert((*k).to_string(), v.clone());
    }
    details.set_error_info(reason, domain, metadata);
    Status::with_error_details(status.code(), message, details)
}

/// An in-band error as the call status it stands for: the same code, message and details, so
/// that `tonic_types::StatusExt` reads its `ErrorInfo` and `BadRequest`.
pub fn status_of(e: &crate::pb::ErrorStatus) -> Status {
    Status::with_details(
        Code::from(e.code),
        e.message.clone(),
        prost::Message::encode_to_vec(e).into(),
    )
}

/// A session id the server does not know (never opened, or ended): `NOT_FOUND`, reason
/// `SESSION_NOT_FOUND`, the id in the metadata.
pub(crate) fn session_not_found(id: &str) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(
        "SESSION_NOT_FOUND",
        ERROR_DOMAIN,
        HashMap::from([("session_id".to_string(), id.to_string())]),
    );
    Status::with_error_details(Code::NotFound, format!("no open session {id:?}"), details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::StreamName;

    #[test]
    fn wrong_expected_offset_is_failed_precondition_with_its_numbers() {
        let s = error_to_status(&Error::WrongExpectedOffset {
            partition: 0,
            expected: 3,
            actual: 5,
        });
        assert_eq!(s.code(), Code::FailedPrecondition);
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "WRONG_EXPECTED_OFFSET");
        assert_eq!(info.metadata.get("actual").map(String::as_str), Some("5"));
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = StreamName::new("Bad Name").expect_err("refused");
        let s = error_to_status(&Error::Invalid(e));
        assert_eq!(s.code(), Code::InvalidArgument);
        let bad = s.get_details_bad_request().expect("bad request");
        assert_eq!(bad.field_violations.len(), 1);
        assert!(s.message().contains("does not match"), "{}", s.message());
    }
}
