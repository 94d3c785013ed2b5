//! The server's protobuf codec: tonic's prost codec, except that a request that is not valid
//! protobuf is bad input (`INVALID_ARGUMENT`, reason `MALFORMED_MESSAGE`, a `BadRequest`
//! naming the field where decoding failed) instead of tonic's `INTERNAL`. The generated server
//! uses it (see `build.rs`); the generated client keeps tonic's codec.

use crate::status::bad_input;
use prost::Message;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

/// The codec of the generated server: encodes `T` (responses), decodes `U` (requests).
#[derive(Debug, Clone)]
pub struct ServerCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ServerCodec<T, U> {
    fn default() -> Self {
        ServerCodec(PhantomData)
    }
}

impl<T, U> Codec for ServerCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ServerDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ServerDecoder(PhantomData)
    }
}

/// Decodes a request `U`; malformed protobuf is `INVALID_ARGUMENT` with details.
#[derive(Debug, Clone)]
pub struct ServerDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ServerDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| malformed::<U>(&e))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// The status of a request of type `U` that failed to decode with `e`.
fn malformed<U>(e: &prost::DecodeError) -> Status {
    let text = e.to_string();
    let field = field_path(&text).unwrap_or_else(|| {
        let t = std::any::type_name::<U>();
        t.rsplit("::").next().unwrap_or(t).to_string()
    });
    bad_input(
        "MALFORMED_MESSAGE",
        &field,
        format!("the request is not valid protobuf: {text}"),
    )
}

/// The field where decoding failed, outermost first (`events.payload`), from prost's text
/// (`failed to decode Protobuf message: NewEvent.payload: PublishRequest.events: buffer
/// underflow`, innermost first); `None` when the text names no field.
fn field_path(text: &str) -> Option<String> {
    let rest = text.strip_prefix("failed to decode Protobuf message: ")?;
    let is_ident = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut fields = Vec::new();
    for segment in rest.split(": ") {
        match segment.split_once('.') {
            Some((message, field)) if is_ident(message) && is_ident(field) => fields.push(field),
            _ => break,
        }
    }
    if fields.is_empty() {
        return None;
    }
    fields.reverse();
    Some(fields.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use tonic::Code;
    use tonic_types::StatusExt;

    #[test]
    fn a_truncated_nested_field_is_named_outermost_first() {
        // PublishRequest.events (2), one NewEvent whose payload (field 9, bytes) claims 9
        // bytes and has 1.
        let bytes = [0x12u8, 0x03, 0x4a, 0x09, 0x01];
        let e = pb::PublishRequest::decode(&bytes[..]).expect_err("malformed");
        let s = malformed::<pb::PublishRequest>(&e);
        assert_eq!(s.code(), Code::InvalidArgument);
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "MALFORMED_MESSAGE");
        let bad = s.get_details_bad_request().expect("bad request");
        assert_eq!(bad.field_violations[0].field, "events.payload");
    }

    #[test]
    fn a_top_level_failure_names_the_message() {
        let e = pb::PublishRequest::decode(&[0x0au8, 0xff][..]).expect_err("malformed");
        let s = malformed::<pb::PublishRequest>(&e);
        let bad = s.get_details_bad_request().expect("bad request");
        assert!(
            ["stream", "PublishRequest"].contains(&bad.field_violations[0].field.as_str()),
            "{bad:?}"
        );
    }
}
