//! The entry point of the gRPC fuzz target (`fuzz/`): a request message's bytes decoded with
//! prost, then converted into the core's command as the service converts it. Kept thin on
//! purpose, so that it follows `convert.rs` when the protocol changes: one arm per request
//! message, each calling the conversion its RPC calls.

use crate::convert::{
    consumer_id, new_event_from_pb, positions, replay, reset_target, schema_registration,
    stream_config, stream_name, subscription_config, subscription_name,
};
use crate::pb;
use crate::status::invalid;
use prost::Message;
use tonic::Status;
use tributary_core::{Command, Config, SubscriptionConfig};

/// The request messages the fuzz target decodes, chosen by the input's first byte.
pub const REQUESTS: &[&str] = &[
    "PublishRequest",
    "CreateStreamRequest",
    "SubscriptionConfig",
    "OpenSubscription",
    "ReplayRequest",
    "RegisterSchemaRequest",
    "ResetOffsetRequest",
    "ReadRequest",
    "SettleRequest",
];

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, Status> {
    // What `ServerCodec` answers for a message that is not valid protobuf.
    M::decode(bytes).map_err(|e| invalid("request", format!("not a valid message: {e}")))
}

/// Decodes `bytes` as the request message `REQUESTS[kind % REQUESTS.len()]` and converts it
/// as its RPC does, up to the command handed to the engine (returned when there is one). A
/// refusal is a `Status`, as the client would receive it.
pub fn decode_and_convert(kind: u8, bytes: &[u8]) -> Result<Option<Command>, Status> {
    let config = Config::default();
    let core_err = |e: tributary_core::InvalidInput| crate::error_to_status(&e.into());
    match usize::from(kind) % REQUESTS.len() {
        0 => {
            let r: pb::PublishRequest = decode(bytes)?;
            let stream = stream_name(&r.stream)?;
            let events = r
                .events
                .into_iter()
                .map(|e| new_event_from_pb(e, None))
                .collect::<Result<Vec<_>, _>>()?;
            tributary_core::validate_batch(&events, &config).map_err(core_err)?;
            Ok(Some(Command::Append(tributary_core::AppendRequest {
                stream,
                events,
                expected_offset: r.expected_offset,
            })))
        }
        1 => {
            let c = stream_config(decode(bytes)?)?;
            c.validate(&config).map_err(core_err)?;
            Ok(Some(Command::CreateStream(c)))
        }
        2 => {
            let c: SubscriptionConfig = subscription_config(decode(bytes)?)?;
            c.validate().map_err(core_err)?;
            Ok(Some(Command::CreateSubscription(c)))
        }
        3 => {
            let o: pb::OpenSubscription = decode(bytes)?;
            stream_name(&o.stream)?;
            subscription_name(&o.subscription)?;
            consumer_id(&o.consumer)?;
            match o.create {
                Some(mut c) => {
                    c.stream.clone_from(&o.stream);
                    c.name.clone_from(&o.subscription);
                    let c = subscription_config(c)?;
                    c.validate().map_err(core_err)?;
                    Ok(Some(Command::CreateSubscription(c)))
                }
                None => Ok(None),
            }
        }
        4 => {
            let r: pb::ReplayRequest = decode(bytes)?;
            let stream = stream_name(&r.stream)?;
            let (from, options) = replay(&r)?;
            Ok(Some(Command::Replay {
                stream,
                from,
                options,
            }))
        }
        5 => Ok(Some(Command::RegisterSchema(schema_registration(decode(
            bytes,
        )?)?))),
        6 => {
            let r: pb::ResetOffsetRequest = decode(bytes)?;
            let to = reset_target(r.to)?;
            let consumer = if r.consumer.is_empty() {
                None
            } else {
                Some(consumer_id(&r.consumer)?)
            };
            Ok(Some(Command::ResetSubscription {
                stream: stream_name(&r.stream)?,
                subscription: subscription_name(&r.subscription)?,
                consumer,
                to,
            }))
        }
        7 => {
            let r: pb::ReadRequest = decode(bytes)?;
            Ok(Some(Command::Read {
                stream: stream_name(&r.stream)?,
                partition: r.partition,
                from: r.from,
                max: r.max.unwrap_or(crate::service::DEFAULT_READ_MAX),
            }))
        }
        _ => {
            // The settle commands carrying positions; the rest needs a live session.
            use pb::settle_request::Kind;
            let r: pb::SettleRequest = decode(bytes)?;
            match r.kind {
                Some(Kind::Ack(pb::Ack { positions: p }))
                | Some(Kind::Nack(pb::Nack { positions: p, .. }))
                | Some(Kind::Term(pb::Term { positions: p, .. })) => {
                    positions(p)?;
                }
                Some(_) => {}
                None => return Err(invalid("kind", "a command is needed")),
            }
            Ok(None)
        }
    }
}
