//! Schemas and upcasting (SPEC 7): the registry of event types and their versions, JSON
//! Schemas (given, or generated from Rust types with `schemars`), upcasters (Rust functions or
//! declarative rules that deserialize from a configuration file), the compatibility check of a
//! new version, and hop-by-hop upcasting.
//!
//! Pure: no I/O. The engine owns one [`SchemaRegistry`].

use crate::error::{Error, InvalidInput};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// One declarative upcasting rule. Fields are top-level keys of the JSON object, or dotted
/// paths (`"address.city"`) into nested objects. In a configuration file:
/// `{ "op": "rename", "from": "name", "to": "full_name" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Rule {
    /// Moves `from` to `to` (replacing `to`), if `from` is there.
    Rename {
        /// The old field.
        from: String,
        /// The new field.
        to: String,
    },
    /// Sets `field` to `default` if it is missing.
    Add {
        /// The field.
        field: String,
        /// Its value when missing.
        default: Value,
    },
    /// Removes `field`.
    Remove {
        /// The field.
        field: String,
    },
    /// Sets `field` to `value`, always.
    Set {
        /// The field.
        field: String,
        /// Its value.
        value: Value,
    },
    /// Copies `from` to `to` (replacing `to`), if `from` is there.
    Copy {
        /// The source field.
        from: String,
        /// The target field.
        to: String,
    },
}

/// Serde for JSON values inside records that binary formats carry (journals use postcard,
/// which cannot decode `serde_json::Value` or internally tagged enums): as JSON text in a
/// binary format, as themselves in a human-readable one (TOML and JSON configuration files).
pub mod json_in_binary {
    use serde::de::{DeserializeOwned, Error as _};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes `v` (as JSON text when the format is binary).
    pub fn serialize<T: Serialize, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            v.serialize(s)
        } else {
            let text = serde_json::to_string(v).map_err(serde::ser::Error::custom)?;
            s.serialize_str(&text)
        }
    }

    /// Deserializes what `serialize` wrote.
    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        if d.is_human_readable() {
            T::deserialize(d)
        } else {
            let text = String::deserialize(d)?;
            serde_json::from_str(&text).map_err(D::Error::custom)
        }
    }
}

/// A Rust upcaster: turns a document of version k-1 into one of version k.
pub type UpcastFn = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// How version k > 1 is made from version k-1.
#[derive(Clone)]
pub enum Upcaster {
    /// Declarative rules, applied in order.
    Rules(Vec<Rule>),
    /// A Rust function (embedded use).
    Function(UpcastFn),
}

impl fmt::Debug for Upcaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upcaster::Rules(r) => f.debug_tuple("Rules").field(r).finish(),
            Upcaster::Function(_) => f.write_str("Function(..)"),
        }
    }
}

/// A version to register, as a client or a configuration file gives it (rules only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaRegistration {
    /// The event type.
    pub event_type: String,
    /// The version: the latest registered plus one (1 for a new type).
    pub version: u32,
    /// Its JSON Schema, if any.
    #[serde(default, with = "json_in_binary")]
    pub schema: Option<Value>,
    /// Version > 1: the rules that make it from the version before.
    #[serde(default, with = "json_in_binary")]
    pub rules: Vec<Rule>,
}

/// A registered version, as described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaVersionInfo {
    /// The version.
    pub version: u32,
    /// Its JSON Schema, if any.
    pub schema: Option<Value>,
    /// Its rules (empty for a function upcaster or version 1).
    pub rules: Vec<Rule>,
    /// Whether its upcaster is a Rust function.
    pub function: bool,
}

/// An event type and its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaInfo {
    /// The event type.
    pub event_type: String,
    /// Versions 1..=n.
    pub versions: Vec<SchemaVersionInfo>,
}

/// The JSON Schema of a Rust type, generated with `schemars`.
pub fn schema_of<T: schemars::JsonSchema>() -> Value {
    schemars::schema_for!(T).to_value()
}

#[derive(Debug, Clone)]
struct Version {
    schema: Option<Value>,
    upcaster: Option<Upcaster>,
    /// Restored from the store as a Rust function upcaster that the embedding code has not
    /// registered again since the restart: upcasting through it fails until it does.
    missing_fn: bool,
}

impl Version {
    /// What the store keeps of it.
    fn record(&self, event_type: &str, version: u32) -> SchemaRecord {
        SchemaRecord {
            event_type: event_type.to_string(),
            version,
            schema: self.schema.clone(),
            rules: match &self.upcaster {
                Some(Upcaster::Rules(r)) => r.clone(),
                _ => Vec::new(),
            },
            function: self.missing_fn || matches!(self.upcaster, Some(Upcaster::Function(_))),
        }
    }
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registered {
    /// A new version.
    New,
    /// The very same version was registered before: nothing changed (a Rust function
    /// restored from the store as missing is filled in).
    Again,
}

/// One registered version as the store keeps it (`StorageRequest::SaveSchemas`). A Rust
/// function upcaster cannot be stored: its version is kept with `function: true` and no
/// rules, and after a restart the embedding code registers the function again
/// (`Engine::register_schema_fn` with the same version and schema); until it does, upcasting
/// through that version fails (`x-upcast-error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaRecord {
    /// The event type.
    pub event_type: String,
    /// The version.
    pub version: u32,
    /// Its JSON Schema, if any.
    #[serde(with = "json_in_binary")]
    pub schema: Option<Value>,
    /// Its upcaster rules from the version before (empty for version 1 or a function).
    #[serde(with = "json_in_binary")]
    pub rules: Vec<Rule>,
    /// Whether its upcaster is a Rust function (not stored).
    pub function: bool,
}

/// Limits of a registry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_event_type_bytes: usize,
    pub(crate) max_types: usize,
    pub(crate) max_versions: usize,
    pub(crate) max_rules: usize,
    pub(crate) max_schema_bytes: usize,
}

/// Event types and their versions.
#[derive(Debug, Clone, Default)]
pub struct SchemaRegistry {
    types: BTreeMap<String, Vec<Version>>,
    /// PLANTED BUG switch (test-only): upcasting over two hops or more skips the first.
    #[cfg(feature = "planted-bugs")]
    pub(crate) skip_hop: bool,
}

/// What upcasting one payload gave.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Upcast {
    /// Nothing to do (already at the version, not JSON, or an unknown type).
    Unchanged,
    /// The payload at `version`.
    Done { payload: Vec<u8>, version: u32 },
    /// The event is newer than asked.
    Newer,
    /// Upcasting failed; the event goes unchanged.
    Failed(String),
}

impl SchemaRegistry {
    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The latest version of an event type (0: none).
    pub fn latest(&self, event_type: &str) -> u32 {
        self.types.get(event_type).map_or(0, |v| v.len() as u32)
    }

    /// Every type with its versions.
    pub fn describe(&self) -> Vec<SchemaInfo> {
        self.types
            .iter()
            .map(|(t, vs)| SchemaInfo {
                event_type: t.clone(),
                versions: vs
                    .iter()
                    .enumerate()
                    .map(|(i, v)| SchemaVersionInfo {
                        version: i as u32 + 1,
                        schema: v.schema.clone(),
                        rules: match &v.upcaster {
                            Some(Upcaster::Rules(r)) => r.clone(),
                            _ => Vec::new(),
                        },
                        function: v.missing_fn || matches!(v.upcaster, Some(Upcaster::Function(_))),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Registers `version` of `event_type`, refused unless it is the latest plus one and its
    /// upcaster turns a valid document of the version before into a valid one of this version
    /// (SPEC 7: every required field of the new schema is required in the old one or set by
    /// the upcaster; a Rust function is tried on a sample document of the old schema).
    pub(crate) fn register(
        &mut self,
        event_type: &str,
        version: u32,
        schema: Option<Value>,
        upcaster: Option<Upcaster>,
        limits: Limits,
    ) -> Result<Registered, Error> {
        if event_type.is_empty() || event_type.len() > limits.max_event_type_bytes {
            return Err(InvalidInput::Length {
                field: "event_type",
                len: event_type.len(),
                min: 1,
                max: limits.max_event_type_bytes,
            }
            .into());
        }
        let latest = self.latest(event_type);
        if version >= 1 && version <= latest {
            return self.register_again(event_type, version, schema, upcaster);
        }
        if version != latest + 1 {
            return Err(InvalidInput::Range {
                field: "version",
                value: version.into(),
                min: u64::from(latest) + 1,
                max: u64::from(latest) + 1,
            }
            .into());
        }
        if latest == 0 && self.types.len() >= limits.max_types {
            return Err(Error::Busy {
                what: "schema event types",
                limit: limits.max_types as u64,
            });
        }
        if version as usize > limits.max_versions {
            return Err(Error::Busy {
                what: "schema versions of an event type",
                limit: limits.max_versions as u64,
            });
        }
        if let Some(s) = &schema {
            let len = s.to_string().len();
            if len > limits.max_schema_bytes || !s.is_object() {
                return Err(InvalidInput::Length {
                    field: "schema (a JSON object)",
                    len,
                    min: 2,
                    max: limits.max_schema_bytes,
                }
                .into());
            }
        }
        if let Some(Upcaster::Rules(r)) = &upcaster
            && r.len() > limits.max_rules
        {
            return Err(InvalidInput::Length {
                field: "rules",
                len: r.len(),
                min: 0,
                max: limits.max_rules,
            }
            .into());
        }
        let upcaster = match (version, upcaster) {
            (1, Some(Upcaster::Rules(r))) if r.is_empty() => None,
            (1, Some(_)) => {
                return Err(InvalidInput::Conflict {
                    field: "rules",
                    reason: "version 1 has nothing to upcast from",
                }
                .into());
            }
            (_, None) => Some(Upcaster::Rules(Vec::new())),
            (_, u) => u,
        };
        if version > 1 {
            let prev = self
                .types
                .get(event_type)
                .and_then(|v| v.last())
                .and_then(|v| v.schema.clone());
            if let (Some(old), Some(new), Some(up)) = (&prev, &schema, &upcaster) {
                check_compatible(event_type, version, old, new, up)?;
            }
        }
        self.types
            .entry(event_type.to_string())
            .or_default()
            .push(Version {
                schema,
                upcaster,
                missing_fn: false,
            });
        Ok(Registered::New)
    }

    /// A version registered again: accepted, changing nothing, when it is the same (same
    /// schema and rules; or a Rust function again, which fills in one restored as missing).
    fn register_again(
        &mut self,
        event_type: &str,
        version: u32,
        schema: Option<Value>,
        upcaster: Option<Upcaster>,
    ) -> Result<Registered, Error> {
        let refused = || -> Result<Registered, Error> {
            Err(InvalidInput::Conflict {
                field: "version",
                reason: "already registered with another schema or upcaster",
            }
            .into())
        };
        let Some(v) = self
            .types
            .get_mut(event_type)
            .and_then(|vs| vs.get_mut(version as usize - 1))
        else {
            return refused();
        };
        if v.schema != schema {
            return refused();
        }
        let rules = |u: &Option<Upcaster>| match u {
            None => Some(Vec::new()),
            Some(Upcaster::Rules(r)) => Some(r.clone()),
            Some(Upcaster::Function(_)) => None,
        };
        match (&upcaster, v.missing_fn) {
            (Some(Upcaster::Function(_)), true) => {
                v.upcaster = upcaster;
                v.missing_fn = false;
                Ok(Registered::Again)
            }
            (Some(Upcaster::Function(_)), false)
                if matches!(v.upcaster, Some(Upcaster::Function(_))) =>
            {
                v.upcaster = upcaster;
                Ok(Registered::Again)
            }
            (_, false) if rules(&upcaster).is_some() && rules(&upcaster) == rules(&v.upcaster) => {
                Ok(Registered::Again)
            }
            _ => refused(),
        }
    }

    /// Restores a version the store kept (recovery), without checks: it passed them when it
    /// was registered. Refused (`false`) unless it is the next version of its type.
    pub(crate) fn restore(&mut self, r: &SchemaRecord) -> bool {
        if r.version != self.latest(&r.event_type) + 1 {
            return false;
        }
        let upcaster = (r.version > 1 && !r.function).then(|| Upcaster::Rules(r.rules.clone()));
        self.types
            .entry(r.event_type.clone())
            .or_default()
            .push(Version {
                schema: r.schema.clone(),
                upcaster,
                missing_fn: r.function && r.version > 1,
            });
        true
    }

    /// Whether version `version` of `event_type` is the one the store keeps as `r`.
    pub(crate) fn holds(&self, r: &SchemaRecord) -> bool {
        self.types
            .get(&r.event_type)
            .and_then(|vs| vs.get((r.version as usize).wrapping_sub(1)))
            .is_some_and(|v| v.record(&r.event_type, r.version) == *r)
    }

    /// The records of versions `from..=to` of an event type, for the store.
    pub(crate) fn records(&self, event_type: &str, from: u32, to: u32) -> Vec<SchemaRecord> {
        let Some(vs) = self.types.get(event_type) else {
            return Vec::new();
        };
        (from.max(1)..=to.min(vs.len() as u32))
            .map(|v| vs[v as usize - 1].record(event_type, v))
            .collect()
    }

    /// Event types with their latest version.
    pub(crate) fn latest_versions(&self) -> Vec<(String, u32)> {
        self.types
            .iter()
            .map(|(t, vs)| (t.clone(), vs.len() as u32))
            .collect()
    }

    /// Upcasts a JSON payload of `event_type` from version `from` to `to`, hop by hop.
    pub(crate) fn upcast(&self, event_type: &str, from: u32, to: u32, payload: &[u8]) -> Upcast {
        let Some(versions) = self.types.get(event_type) else {
            return Upcast::Unchanged;
        };
        if from > to {
            return Upcast::Newer;
        }
        let to = to.min(versions.len() as u32);
        if from >= to {
            return Upcast::Unchanged;
        }
        let mut doc: Value = match serde_json::from_slice(payload) {
            Ok(d) => d,
            Err(e) => return Upcast::Failed(format!("payload is not JSON: {e}")),
        };
        for v in from + 1..=to {
            // PLANTED BUG upcast-skips-hop (test-only): the first of several hops is skipped.
            #[cfg(feature = "planted-bugs")]
            if self.skip_hop && v == from + 1 && to > from + 1 {
                continue;
            }
            let hop = versions.get(v as usize - 1);
            if hop.is_some_and(|x| x.missing_fn) {
                return Upcast::Failed(format!(
                    "the upcaster to version {v} is a Rust function not registered again since the restart"
                ));
            }
            let Some(up) = hop.and_then(|x| x.upcaster.as_ref()) else {
                continue;
            };
            doc = match apply(up, doc) {
                Ok(d) => d,
                Err(e) => return Upcast::Failed(format!("upcaster to version {v}: {e}")),
            };
        }
        match serde_json::to_vec(&doc) {
            Ok(payload) => Upcast::Done {
                payload,
                version: to,
            },
            Err(e) => Upcast::Failed(e.to_string()),
        }
    }

    /// Upcasts a document from `from` to `to` (for tests and embedders).
    pub fn upcast_value(
        &self,
        event_type: &str,
        from: u32,
        to: u32,
        mut doc: Value,
    ) -> Result<Value, String> {
        let Some(versions) = self.types.get(event_type) else {
            return Ok(doc);
        };
        for v in from + 1..=to.min(versions.len() as u32) {
            let hop = versions.get(v as usize - 1);
            if hop.is_some_and(|x| x.missing_fn) {
                return Err(format!(
                    "the upcaster to version {v} is a Rust function not registered again since the restart"
                ));
            }
            if let Some(up) = hop.and_then(|x| x.upcaster.as_ref()) {
                doc = apply(up, doc)?;
            }
        }
        Ok(doc)
    }
}

/// Applies one upcaster.
pub(crate) fn apply(up: &Upcaster, doc: Value) -> Result<Value, String> {
    match up {
        Upcaster::Function(f) => f(doc),
        Upcaster::Rules(rules) => {
            let mut doc = doc;
            let Some(obj) = doc.as_object_mut() else {
                return if rules.is_empty() {
                    Ok(doc)
                } else {
                    Err("rules apply to a JSON object".into())
                };
            };
            for r in rules {
                apply_rule(r, obj);
            }
            Ok(doc)
        }
    }
}

fn apply_rule(r: &Rule, obj: &mut Map<String, Value>) {
    match r {
        Rule::Rename { from, to } => {
            if let Some(v) = take(obj, from) {
                put(obj, to, v);
            }
        }
        Rule::Add { field, default } => {
            if get(obj, field).is_none() {
                put(obj, field, default.clone());
            }
        }
        Rule::Remove { field } => {
            take(obj, field);
        }
        Rule::Set { field, value } => put(obj, field, value.clone()),
        Rule::Copy { from, to } => {
            if let Some(v) = get(obj, from).cloned() {
                put(obj, to, v);
            }
        }
    }
}

fn get<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = obj.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn take(obj: &mut Map<String, Value>, path: &str) -> Option<Value> {
    match path.rsplit_once('.') {
        None => obj.remove(path),
        Some((parent, last)) => {
            let mut cur = obj;
            for p in parent.split('.') {
                cur = cur.get_mut(p)?.as_object_mut()?;
            }
            cur.remove(last)
        }
    }
}

/// Sets a path, making the objects on the way (a non-object on the way is replaced).
fn put(obj: &mut Map<String, Value>, path: &str, v: Value) {
    let mut cur = obj;
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    for p in parts {
        let slot = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Some(next) = slot.as_object_mut() else {
            return;
        };
        cur = next;
    }
    cur.insert(last.to_string(), v);
}

/// The top-level required fields of a JSON Schema.
fn required(schema: &Value) -> BTreeSet<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// SPEC 7: every required field of `new` is required in `old` or set by the upcaster.
fn check_compatible(
    event_type: &str,
    version: u32,
    old: &Value,
    new: &Value,
    up: &Upcaster,
) -> Result<(), Error> {
    let need = required(new);
    let have: BTreeSet<String> = match up {
        Upcaster::Rules(rules) => {
            let mut have = required(old);
            for r in rules {
                match r {
                    Rule::Rename { from, to } => {
                        if have.remove(top(from)) && !from.contains('.') {
                            have.insert(top(to).to_string());
                        }
                    }
                    Rule::Copy { from, to } => {
                        if have.contains(top(from)) && !from.contains('.') {
                            have.insert(top(to).to_string());
                        }
                    }
                    Rule::Add { field, .. } | Rule::Set { field, .. } => {
                        have.insert(top(field).to_string());
                    }
                    Rule::Remove { field } => {
                        if !field.contains('.') {
                            have.remove(field.as_str());
                        }
                    }
                }
            }
            have
        }
        Upcaster::Function(f) => {
            let sample = sample_of(old);
            match f(sample) {
                Ok(Value::Object(m)) => m.keys().cloned().collect(),
                Ok(_) => BTreeSet::new(),
                Err(e) => {
                    return Err(Error::SchemaIncompatible {
                        event_type: event_type.to_string(),
                        version,
                        field: String::new(),
                        reason: format!("the upcaster failed on a valid document: {e}"),
                    });
                }
            }
        }
    };
    match need.iter().find(|f| !have.contains(*f)) {
        Some(field) => Err(Error::SchemaIncompatible {
            event_type: event_type.to_string(),
            version,
            field: field.clone(),
            reason: format!(
                "required in version {version}, but neither required in version {} nor set by its upcaster",
                version - 1
            ),
        }),
        None => Ok(()),
    }
}

fn top(path: &str) -> &str {
    path.split('.').next().unwrap_or(path)
}

/// A minimal valid document of a schema: its required fields, each a value of its type.
pub(crate) fn sample_of(schema: &Value) -> Value {
    let props = schema.get("properties").and_then(Value::as_object);
    let mut m = Map::new();
    for f in required(schema) {
        let ty = props
            .and_then(|p| p.get(&f))
            .and_then(|p| p.get("type"))
            .and_then(|t| match t {
                Value::String(s) => Some(s.as_str()),
                Value::Array(a) => a.first().and_then(Value::as_str),
                _ => None,
            });
        let v = match ty {
            Some("string") => Value::String(String::new()),
            Some("integer") | Some("number") => Value::from(0),
            Some("boolean") => Value::Bool(false),
            Some("array") => Value::Array(Vec::new()),
            Some("object") => props
                .and_then(|p| p.get(&f))
                .map_or(Value::Object(Map::new()), sample_of),
            _ => Value::Null,
        };
        m.insert(f, v);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits {
            max_event_type_bytes: 256,
            max_types: 10,
            max_versions: 10,
            max_rules: 10,
            max_schema_bytes: 10_000,
        }
    }

    #[test]
    fn rules_deserialize_from_a_configuration_file() {
        let text = r#"[
            {"op": "rename", "from": "name", "to": "full_name"},
            {"op": "add", "field": "country", "default": "NL"},
            {"op": "remove", "field": "legacy"},
            {"op": "set", "field": "meta.source", "value": "import"},
            {"op": "copy", "from": "full_name", "to": "display"}
        ]"#;
        let rules: Vec<Rule> = serde_json::from_str(text).unwrap();
        let out = apply(
            &Upcaster::Rules(rules),
            json!({"name": "Ada", "legacy": 1, "country": "UK"}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"full_name": "Ada", "country": "UK", "meta": {"source": "import"}, "display": "Ada"})
        );
    }

    #[test]
    fn registration_names_the_field_that_breaks() {
        let mut r = SchemaRegistry::default();
        let v1 = json!({"type": "object", "required": ["id", "name"], "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}});
        r.register("user", 1, Some(v1), None, limits()).unwrap();
        let v2 = json!({"type": "object", "required": ["id", "full_name", "email"]});
        let rules = vec![Rule::Rename {
            from: "name".into(),
            to: "full_name".into(),
        }];
        let e = r
            .register(
                "user",
                2,
                Some(v2.clone()),
                Some(Upcaster::Rules(rules.clone())),
                limits(),
            )
            .unwrap_err();
        assert!(
            matches!(&e, Error::SchemaIncompatible { field, version: 2, .. } if field == "email"),
            "{e:?}"
        );
        assert_eq!(r.latest("user"), 1, "nothing registered");
        let mut fixed = rules;
        fixed.push(Rule::Add {
            field: "email".into(),
            default: json!(""),
        });
        r.register("user", 2, Some(v2), Some(Upcaster::Rules(fixed)), limits())
            .unwrap();
        assert!(matches!(
            r.register("user", 4, None, None, limits()),
            Err(Error::Invalid(InvalidInput::Range {
                field: "version",
                min: 3,
                ..
            }))
        ));
    }

    #[test]
    fn a_function_upcaster_is_tried_on_a_sample_document() {
        let mut r = SchemaRegistry::default();
        let v1 = json!({"required": ["n"], "properties": {"n": {"type": "integer"}}});
        r.register("t", 1, Some(v1), None, limits()).unwrap();
        let v2 = json!({"required": ["n", "double"]});
        let bad: UpcastFn = Arc::new(Ok);
        let e = r
            .register(
                "t",
                2,
                Some(v2.clone()),
                Some(Upcaster::Function(bad)),
                limits(),
            )
            .unwrap_err();
        assert!(matches!(&e, Error::SchemaIncompatible { field, .. } if field == "double"));
        let good: UpcastFn = Arc::new(|mut v| {
            let n = v.get("n").and_then(Value::as_i64).ok_or("no n")?;
            v["double"] = json!(n * 2);
            Ok(v)
        });
        r.register("t", 2, Some(v2), Some(Upcaster::Function(good)), limits())
            .unwrap();
        assert_eq!(
            r.upcast_value("t", 1, 2, json!({"n": 4})).unwrap(),
            json!({"n": 4, "double": 8})
        );
    }

    #[test]
    fn a_schemars_schema_lists_the_required_fields() {
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        struct V1 {
            id: u64,
            nick: Option<String>,
        }
        let s = schema_of::<V1>();
        assert_eq!(required(&s), BTreeSet::from(["id".to_string()]));
        assert_eq!(sample_of(&s), json!({"id": 0}));
    }
}
