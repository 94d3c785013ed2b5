//! The finishing of the OpenAPI document: what the handlers' annotations cannot say by
//! themselves. Security follows the tokens this server was started with (none, write only, or
//! read and write); every `/api` operation documents the errors any of them can answer (a bad
//! path, query or body, a refused token, a busy engine); path parameters carry the patterns of
//! the names they hold; a reset's body is a `oneOf` of its two forms.

use crate::Tokens;
use tributary_auth::Access;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, Ref, RefOr, ResponseBuilder, Schema, security::SecurityRequirement,
};

/// The pattern of stream and subscription names (SPEC 1), anchored.
const NAME_PATTERN: &str = r"^[a-z0-9][a-z0-9._-]{0,127}$";
/// Consumer ids: 1 to 256 bytes of printable ASCII without spaces.
const CONSUMER_PATTERN: &str = r"^[!-~]{1,256}$";

impl utoipa::PartialSchema for crate::api::ResetOffset {
    fn schema() -> RefOr<Schema> {
        let form = |field: &str, description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    field,
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::UInt64,
                        )))
                        .minimum(Some(0))
                        .description(Some(description)),
                )
                .required(field)
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        OneOfBuilder::new()
            .description(Some(
                "Where to move: exactly one of `offset` and `timestamp`.",
            ))
            .item(form(
                "offset",
                "The offset to read next, in every partition (at most the stream's last \
                 offset + 1).",
            ))
            .item(form(
                "timestamp",
                "The first event at or after this time (Unix ms).",
            ))
            .into()
    }
}

impl utoipa::ToSchema for crate::api::ResetOffset {}

/// Finishes the document for a server with these tokens.
pub(crate) struct Finish<'a> {
    pub tokens: &'a Tokens,
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .into()
}

/// Documents `status` on `op` unless its annotation already does.
fn answer(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error_response(description));
}

/// The pattern and lengths of a path parameter, by its name.
fn path_schema(name: &str) -> Option<ObjectBuilder> {
    let s = ObjectBuilder::new().schema_type(Type::String);
    match name {
        "name" | "id" => Some(
            s.pattern(Some(NAME_PATTERN))
                .min_length(Some(1))
                .max_length(Some(128)),
        ),
        "consumer" => Some(
            s.pattern(Some(CONSUMER_PATTERN))
                .min_length(Some(1))
                .max_length(Some(256)),
        ),
        "event_type" => Some(s.min_length(Some(1)).max_length(Some(256))),
        _ => None,
    }
}

impl utoipa::Modify for Finish<'_> {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if self.tokens.enabled() {
            openapi
                .components
                .get_or_insert_with(Default::default)
                .add_security_scheme(
                    "bearer",
                    SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
                );
        }
        let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api") {
                continue;
            }
            let ops = [
                (&mut item.get, Access::Read),
                (&mut item.post, Access::Write),
                (&mut item.put, Access::Write),
                (&mut item.delete, Access::Write),
                (&mut item.patch, Access::Write),
            ];
            for (op, access) in ops {
                let Some(op) = op.as_mut() else { continue };
                // A token is needed exactly when a request without one is refused.
                if self.tokens.check(None, access).is_err() {
                    op.security = Some(vec![bearer.clone()]);
                    answer(op, "401", "No valid token");
                    if access == Access::Write && self.tokens.read.is_some() {
                        answer(op, "403", "The read-only token cannot change anything");
                    }
                } else {
                    op.security = None;
                }
                let mut takes_input = op.request_body.is_some();
                for p in op.parameters.iter_mut().flatten() {
                    takes_input = true;
                    if p.parameter_in == ParameterIn::Path
                        && let Some(schema) = path_schema(&p.name)
                    {
                        p.schema = Some(schema.into());
                    }
                }
                if op.request_body.is_some() {
                    answer(
                        op,
                        "413",
                        "The body is over the size limit (BODY_TOO_LARGE)",
                    );
                }
                if access == Access::Write {
                    answer(
                        op,
                        "429",
                        "A stream or queue is full (STREAM_FULL, RESOURCE_EXHAUSTED); try again",
                    );
                }
                if takes_input {
                    answer(
                        op,
                        "400",
                        "Bad input: a path parameter, query or body that cannot be read \
                         (INVALID_PATH, INVALID_QUERY, MALFORMED_JSON, BAD_BODY) or a value \
                         the engine refuses (INVALID_INPUT, OFFSET_OUT_OF_RANGE)",
                    );
                }
                answer(
                    op,
                    "503",
                    "The engine is busy or unavailable (BUSY, UNAVAILABLE); try again",
                );
            }
        }
    }
}

/// What utoipa's types cannot hold, added to the JSON document: the rules between fields of
/// one body (JSON Schema `if`/`then`), so that a request the document allows is one the
/// engine takes, as far as the request alone decides it.
pub(crate) fn cross_field_rules(doc: &mut serde_json::Value) {
    use serde_json::json;
    unsigned_bounds(doc);
    let schemas = &mut doc["components"]["schemas"];
    if let Some(create) = schemas.get_mut("CreateStream") {
        // A dead letter stream's own name may be 4 bytes longer than a stream's, whose
        // `<stream>.dlq` must be a valid name.
        create["properties"]["name"]["pattern"] =
            json!(r"^(?:[a-z0-9][a-z0-9._-]{0,123}|[a-z0-9][a-z0-9._-]{0,123}\.dlq)$");
        create["allOf"] = json!([
            {
                "description": "An ephemeral stream has one partition and no retention.",
                "if": {"required": ["ephemeral"], "properties": {"ephemeral": {"type": "object"}}},
                "then": {"properties": {
                    "partitions": {"enum": [null, 1]},
                    "retention": {"type": "null"}
                }}
            },
            {
                "description": "A dead letter stream (<stream>.dlq) is persistent, with one partition.",
                "if": {"required": ["name"], "properties": {"name": {"pattern": r"\.dlq$"}}},
                "then": {"properties": {
                    "partitions": {"enum": [null, 1]},
                    "ephemeral": {"type": "null"}
                }}
            },
            {
                "description": "An exactly-once stream needs a dedup window above 0.",
                "if": {"required": ["delivery"], "properties": {"delivery": {"const": "exactly_once"}}},
                "then": {"properties": {"dedup_window_ms": {"type": ["integer", "null"], "minimum": 1}}}
            }
        ]);
    }
    // Rules refuse fields they do not have (serde's `deny_unknown_fields`, which utoipa does
    // not carry over to the variants of a tagged enum).
    if let Some(forms) = schemas["RuleView"]["oneOf"].as_array_mut() {
        for form in forms {
            form["additionalProperties"] = json!(false);
        }
    }
    if let Some(register) = schemas.get_mut("RegisterSchema") {
        register["allOf"] = json!([{
            "description": "Version 1 has nothing to upcast from: no rules.",
            "if": {"required": ["version"], "properties": {"version": {"const": 1}}},
            "then": {"properties": {"rules": {"maxItems": 0}}}
        }]);
        register["properties"]["schema"]["description"] = json!(
            "Its JSON Schema: an object, at most the server's max_schema_bytes (256 KiB) as JSON."
        );
    }
}

/// Gives every unsigned integer its largest value (`uint64` is no format JSON Schema knows, so
/// a client would not know that a larger number is refused).
fn unsigned_bounds(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(o) => {
            // utoipa spells them `u-int64`; the usual spelling (as in OpenAPI's format
            // registry) is `uint64`.
            let bounds = match o.get("format").and_then(Value::as_str) {
                Some("u-int64" | "uint64") => Some(("uint64", Value::from(u64::MAX))),
                Some("u-int32" | "uint32") => Some(("uint32", Value::from(u32::MAX))),
                Some("u-int16" | "uint16") => Some(("uint16", Value::from(u16::MAX))),
                Some("u-int8" | "uint8") => Some(("uint8", Value::from(u8::MAX))),
                _ => None,
            };
            if let Some((format, max)) = bounds {
                o.insert("format".into(), Value::from(format));
                o.entry("maximum").or_insert(max);
            }
            o.values_mut().for_each(unsigned_bounds);
        }
        Value::Array(a) => a.iter_mut().for_each(unsigned_bounds),
        _ => {}
    }
}
