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
    /// PLANTED BUG switch (test-only): the compatibility check drops a dotted rename's
    /// top-level field.
    #[cfg(feature = "planted-bugs")]
    pub(crate) rename_drops_parent: bool,
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
        if version == 0 {
            return Err(InvalidInput::Range {
                field: "version",
                value: 0,
                min: 1,
                max: u64::from(u32::MAX),
            }
            .into());
        }
        if version != latest + 1 {
            return Err(Error::SchemaVersionConflict {
                event_type: event_type.to_string(),
                version,
                reason: format!("not the next version: the next is {}", latest + 1),
            });
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
                #[cfg(feature = "planted-bugs")]
                let planted = self.rename_drops_parent;
                #[cfg(not(feature = "planted-bugs"))]
                let planted = false;
                check_compatible(event_type, version, old, new, up, planted)?;
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
            Err(Error::SchemaVersionConflict {
                event_type: event_type.to_string(),
                version,
                reason: "already registered with another schema or upcaster".into(),
            })
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

/// The deepest nesting of required fields the compatibility check follows (a required
/// field at depth 1 is top-level).
pub(crate) const MAX_REQUIRED_DEPTH: usize = 16;
/// The most required fields, at every depth, of one schema the compatibility check follows.
pub(crate) const MAX_REQUIRED_PATHS: usize = 4096;
/// The longest chain of local `$ref`s followed to reach one property's schema.
const MAX_REF_HOPS: usize = 8;

/// The names in a schema's own `required` list, in order, each once.
fn required(schema: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !out.iter().any(|o| o == f) {
            out.push(f.to_string());
        }
    }
    out
}

/// `node` with its local `$ref` (`#/$defs/Name`, any JSON pointer into `root`) followed.
fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..MAX_REF_HOPS {
        match node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| root.pointer(pointer))
        {
            Some(next) => node = next,
            None => break,
        }
    }
    node
}

/// The schema of property `name` of an object schema (its `$ref` followed).
fn property<'a>(root: &'a Value, node: &'a Value, name: &str) -> Option<&'a Value> {
    node.get("properties")
        .and_then(|p| p.get(name))
        .map(|p| resolve(root, p))
}

/// The required paths of a schema, dotted, parents before their children: each field of its
/// `required` list, and below a required field whose schema (in `properties`, a local `$ref`
/// followed) has a `required` list of its own, that field's required paths. The nested
/// `required` of an optional field is not followed (a document without the field is valid).
/// Refused past [`MAX_REQUIRED_DEPTH`] or [`MAX_REQUIRED_PATHS`] (a `$ref` cycle of required
/// fields has no finite valid document).
pub(crate) fn required_paths(schema: &Value) -> Result<Vec<String>, InvalidInput> {
    fn walk(
        root: &Value,
        node: &Value,
        prefix: &str,
        depth: usize,
        out: &mut Vec<String>,
    ) -> Result<(), InvalidInput> {
        for name in required(node) {
            if depth > MAX_REQUIRED_DEPTH {
                return Err(InvalidInput::Length {
                    field: "schema: nesting of required fields",
                    len: depth,
                    min: 1,
                    max: MAX_REQUIRED_DEPTH,
                });
            }
            if out.len() >= MAX_REQUIRED_PATHS {
                return Err(InvalidInput::Length {
                    field: "schema: required fields at every depth",
                    len: out.len() + 1,
                    min: 0,
                    max: MAX_REQUIRED_PATHS,
                });
            }
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            out.push(path.clone());
            if let Some(child) = property(root, node, &name) {
                walk(root, child, &path, depth + 1, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(schema, resolve(schema, schema), "", 1, &mut out)?;
    Ok(out)
}

/// The paths present in every valid document, as the compatibility check follows them
/// through an upcaster's rules: a set of dotted paths that holds the parents of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Guaranteed(BTreeSet<String>);

/// Whether `path` is `at` or below it.
fn at_or_below(path: &str, at: &str) -> bool {
    path.strip_prefix(at)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

impl Guaranteed {
    fn has(&self, path: &str) -> bool {
        self.0.contains(path)
    }

    /// `at` and what is below it, as suffixes of `at` ("" for `at` itself, ".x" below).
    fn subtree(&self, at: &str) -> Vec<String> {
        self.0
            .range(at.to_string()..)
            .take_while(|p| p.starts_with(at))
            .filter(|p| at_or_below(p, at))
            .map(|p| p[at.len()..].to_string())
            .collect()
    }

    /// Removes `at` (unless `keep_at`) and everything below it.
    fn cut(&mut self, at: &str, keep_at: bool) {
        self.0
            .retain(|p| !at_or_below(p, at) || (keep_at && p.as_str() == at));
    }

    /// Adds `at` and its parents.
    fn add(&mut self, at: &str) {
        let mut end = 0;
        for (i, c) in at.char_indices() {
            if c == '.' {
                self.0.insert(at[..i].to_string());
            }
            end = i + c.len_utf8();
        }
        self.0.insert(at[..end].to_string());
    }

    /// `to` becomes a value holding `moved` (suffixes from `subtree`); what was there goes.
    fn put(&mut self, to: &str, moved: &[String]) {
        self.cut(to, false);
        self.add(to);
        for m in moved {
            self.0.insert(format!("{to}{m}"));
        }
    }

    /// The paths of a JSON value set at `at` (through its objects).
    fn put_value(&mut self, at: &str, v: &Value) {
        self.cut(at, false);
        self.add(at);
        if let Value::Object(m) = v {
            for (k, child) in m {
                self.put_value(&format!("{at}.{k}"), child);
            }
        }
    }

    /// Every path of a document.
    fn of_document(doc: &Value) -> Self {
        let mut g = Guaranteed::default();
        if let Value::Object(m) = doc {
            for (k, v) in m {
                g.put_value(k, v);
            }
        }
        g
    }

    /// What one rule leaves guaranteed (see `docs/semantics.md`, Schemas).
    fn apply(&mut self, r: &Rule, _planted_rename_drops_parent: bool) {
        match r {
            Rule::Rename { from, to } | Rule::Copy { from, to } => {
                let rename = matches!(r, Rule::Rename { .. });
                if self.has(from) {
                    let moved = self.subtree(from);
                    if rename {
                        self.cut(from, false);
                    }
                    self.put(to, &moved);
                } else {
                    // Absent (nothing to move) or there with unknown content, which then
                    // replaces `to`'s: `to` stays if it was there, what was below it may not.
                    if rename {
                        self.cut(from, false);
                    }
                    self.cut(to, true);
                }
                // PLANTED BUG rename-drops-parent (test-only): a rename from a dotted path
                // also drops the path's top-level field (the check's bug of issue 20).
                #[cfg(feature = "planted-bugs")]
                if _planted_rename_drops_parent
                    && rename
                    && let Some((top, _)) = from.split_once('.')
                {
                    self.cut(top, false);
                }
            }
            Rule::Add { field, .. } => self.add(field),
            Rule::Set { field, value } => self.put_value(field, value),
            Rule::Remove { field } => self.cut(field, false),
        }
    }
}

/// SPEC 7: every required path of `new` (at any depth) is guaranteed in an upcast valid
/// document of `old`: required in `old` and carried through the rules, or made by them.
fn check_compatible(
    event_type: &str,
    version: u32,
    old: &Value,
    new: &Value,
    up: &Upcaster,
    _planted_rename_drops_parent: bool,
) -> Result<(), Error> {
    let need = required_paths(new)?;
    let have = match up {
        Upcaster::Rules(rules) => {
            let mut have = Guaranteed::default();
            for p in required_paths(old)? {
                have.add(&p);
            }
            for r in rules {
                have.apply(r, _planted_rename_drops_parent);
            }
            have
        }
        Upcaster::Function(f) => match f(sample_of(old)?) {
            Ok(doc) => Guaranteed::of_document(&doc),
            Err(e) => {
                return Err(Error::SchemaIncompatible {
                    event_type: event_type.to_string(),
                    version,
                    field: String::new(),
                    reason: format!("the upcaster failed on a valid document: {e}"),
                });
            }
        },
    };
    match need.iter().find(|f| !have.has(f)) {
        Some(field) => Err(Error::SchemaIncompatible {
            event_type: event_type.to_string(),
            version,
            field: field.clone(),
            reason: format!(
                "required in version {version}, but not in every document of version {} after its upcaster (neither required there and kept by the rules, nor set by them)",
                version - 1
            ),
        }),
        None => Ok(()),
    }
}

/// A minimal valid document of a schema: its required paths, each leaf a value of its type.
pub(crate) fn sample_of(schema: &Value) -> Result<Value, InvalidInput> {
    fn leaf(ty: Option<&str>) -> Value {
        match ty {
            Some("string") => Value::String(String::new()),
            Some("integer") | Some("number") => Value::from(0),
            Some("boolean") => Value::Bool(false),
            Some("array") => Value::Array(Vec::new()),
            Some("object") => Value::Object(Map::new()),
            _ => Value::Null,
        }
    }
    fn build(root: &Value, node: &Value) -> Value {
        let mut m = Map::new();
        for f in required(node) {
            let child = property(root, node, &f);
            let v = match child {
                Some(c) if !required(c).is_empty() => build(root, c),
                _ => leaf(child.and_then(|c| c.get("type")).and_then(|t| match t {
                    Value::String(s) => Some(s.as_str()),
                    Value::Array(a) => a.first().and_then(Value::as_str),
                    _ => None,
                })),
            };
            m.insert(f, v);
        }
        Value::Object(m)
    }
    // Bounds the recursion (a `$ref` cycle of required fields is refused here).
    required_paths(schema)?;
    Ok(build(schema, resolve(schema, schema)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Found by the fuzz target `schema`: serde_json's default float parser is best-effort, and
    /// a number in a schema (here 2.22e38) came back one unit off from its own JSON text. The
    /// text is how journals (`json_in_binary`) and the SQL stores keep a schema, so a version
    /// recovered after a restart differed from the one registered, and registering it again
    /// unchanged was a conflict. The workspace turns on serde_json's `float_roundtrip`.
    #[test]
    fn schema_numbers_survive_their_json_text() {
        let reg: SchemaRegistration = serde_json::from_str(
            r#"{"event_type":"t","version":1,"schema":{"maximum":222222222222222222222222222222222222222,"minimum":0.30000000000000004e-300}}"#,
        )
        .unwrap();
        let text = serde_json::to_string(&reg).unwrap();
        let back: SchemaRegistration = serde_json::from_str(&text).unwrap();
        assert_eq!(back, reg);
    }

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
            Err(Error::SchemaVersionConflict { version: 4, reason, .. }) if reason.contains("next is 3")
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
        assert_eq!(required(&s), vec!["id".to_string()]);
        assert_eq!(sample_of(&s).unwrap(), json!({"id": 0}));
    }

    /// Registers `v1` then `v2` (with `rules`) on a fresh registry: v2's result.
    fn v2_after(v1: Value, v2: Value, rules: Vec<Rule>) -> Result<Registered, Error> {
        let mut r = SchemaRegistry::default();
        r.register("t", 1, Some(v1), None, limits()).unwrap();
        r.register("t", 2, Some(v2), Some(Upcaster::Rules(rules)), limits())
    }

    fn refused_for(r: Result<Registered, Error>) -> String {
        match r {
            Err(Error::SchemaIncompatible { field, .. }) => field,
            other => panic!("expected SchemaIncompatible, got {other:?}"),
        }
    }

    fn rename(from: &str, to: &str) -> Rule {
        Rule::Rename {
            from: from.into(),
            to: to.into(),
        }
    }

    fn address(required: &[&str]) -> Value {
        json!({"type": "object", "required": ["address"],
               "properties": {"address": {"type": "object", "required": required}}})
    }

    #[test]
    fn a_dotted_rename_keeps_the_parent_it_moves_out_of() {
        // Issue 20: `rename address.city -> city`; v2 requires `address` and `city`.
        let v1 = address(&["city", "street"]);
        let v2 = json!({"type": "object", "required": ["address", "city"]});
        assert_eq!(
            v2_after(v1.clone(), v2.clone(), vec![rename("address.city", "city")]),
            Ok(Registered::New)
        );
        // The upcast document holds both indeed.
        let mut r = SchemaRegistry::default();
        r.register("t", 1, Some(v1), None, limits()).unwrap();
        r.register(
            "t",
            2,
            Some(v2),
            Some(Upcaster::Rules(vec![rename("address.city", "city")])),
            limits(),
        )
        .unwrap();
        assert_eq!(
            r.upcast_value(
                "t",
                1,
                2,
                json!({"address": {"city": "Ghent", "street": "x"}})
            )
            .unwrap(),
            json!({"address": {"street": "x"}, "city": "Ghent"})
        );
    }

    #[test]
    fn nested_required_fields_are_checked_at_every_depth() {
        // v2 requires address.zip, which no v1 document must have: refused, naming it.
        let v1 = address(&["city"]);
        let v2 = address(&["city", "zip"]);
        assert_eq!(
            refused_for(v2_after(v1.clone(), v2.clone(), vec![])),
            "address.zip"
        );
        let add_zip = Rule::Add {
            field: "address.zip".into(),
            default: json!("0000"),
        };
        assert_eq!(v2_after(v1.clone(), v2, vec![add_zip]), Ok(Registered::New));
        // A field moved away is no longer there.
        let moved = v2_after(
            v1.clone(),
            address(&["city"]),
            vec![rename("address.city", "city")],
        );
        assert_eq!(refused_for(moved), "address.city");
        // Three levels deep, and a `set` of an object makes its fields.
        let deep = |inner: &[&str]| {
            json!({"required": ["a"], "properties": {"a": {"required": ["b"],
                   "properties": {"b": {"required": inner}}}}})
        };
        assert_eq!(
            refused_for(v2_after(deep(&["c"]), deep(&["c", "d"]), vec![])),
            "a.b.d"
        );
        let set = Rule::Set {
            field: "a.b".into(),
            value: json!({"c": 1, "d": {"e": 2}}),
        };
        assert_eq!(
            v2_after(deep(&["x"]), deep(&["c", "d"]), vec![set]),
            Ok(Registered::New)
        );
    }

    #[test]
    fn only_fields_every_valid_document_holds_count() {
        // `address` is optional in v1: its `city` may be missing after the rename.
        let v1 = json!({"required": ["id"], "properties": {"address": {"required": ["city"]}}});
        let v2 = json!({"required": ["id", "city"]});
        assert_eq!(
            refused_for(v2_after(v1, v2, vec![rename("address.city", "city")])),
            "city"
        );
        // A copy keeps its source; a rename from a field that may be missing keeps its
        // target but not what is below it (the target may be replaced).
        let v1 = address(&["city"]);
        let both = json!({"required": ["address", "city"],
                          "properties": {"address": {"required": ["city"]}}});
        let copy = Rule::Copy {
            from: "address.city".into(),
            to: "city".into(),
        };
        assert_eq!(v2_after(v1.clone(), both, vec![copy]), Ok(Registered::New));
        assert_eq!(
            refused_for(v2_after(
                v1.clone(),
                v1.clone(),
                vec![rename("legacy", "address")]
            )),
            "address.city"
        );
        assert_eq!(
            v2_after(
                v1,
                json!({"required": ["address"]}),
                vec![rename("legacy", "address")]
            ),
            Ok(Registered::New)
        );
    }

    #[test]
    fn schemars_schemas_of_nested_types_are_followed_through_their_refs() {
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        struct Address {
            city: String,
            street: Option<String>,
        }
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        struct V1 {
            id: u64,
            address: Address,
        }
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        struct Street {
            street: Option<String>,
        }
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        struct V2 {
            id: u64,
            city: String,
            address: Street,
        }
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        struct Zip {
            zip: String,
        }
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        struct V3 {
            id: u64,
            city: String,
            address: Zip,
        }
        assert_eq!(
            required_paths(&schema_of::<V1>()).unwrap(),
            vec!["id", "address", "address.city"]
        );
        assert_eq!(
            sample_of(&schema_of::<V1>()).unwrap(),
            json!({"id": 0, "address": {"city": ""}})
        );
        let mut r = SchemaRegistry::default();
        r.register("t", 1, Some(schema_of::<V1>()), None, limits())
            .unwrap();
        let to_v2 = Upcaster::Rules(vec![rename("address.city", "city")]);
        r.register("t", 2, Some(schema_of::<V2>()), Some(to_v2), limits())
            .unwrap();
        let e = r.register("t", 3, Some(schema_of::<V3>()), None, limits());
        assert_eq!(refused_for(e), "address.zip");
    }

    #[test]
    fn a_cycle_of_required_fields_is_refused_with_its_limit() {
        let v1 = json!({"required": ["n"]});
        let cycle = json!({"$ref": "#/$defs/Node", "$defs": {"Node": {"required": ["next"],
                           "properties": {"next": {"$ref": "#/$defs/Node"}}}}});
        assert_eq!(
            v2_after(v1, cycle, vec![]),
            Err(Error::Invalid(InvalidInput::Length {
                field: "schema: nesting of required fields",
                len: MAX_REQUIRED_DEPTH + 1,
                min: 1,
                max: MAX_REQUIRED_DEPTH,
            }))
        );
    }

    #[test]
    fn a_function_upcaster_is_judged_by_the_nested_fields_it_makes() {
        let mut r = SchemaRegistry::default();
        r.register("t", 1, Some(address(&["city"])), None, limits())
            .unwrap();
        let flatten: UpcastFn = Arc::new(|mut v| {
            let city = v["address"]["city"].take();
            v["city"] = city;
            Ok(v)
        });
        let v2 = json!({"required": ["city", "address"],
                        "properties": {"address": {"required": ["city"]}}});
        let e = r.register(
            "t",
            2,
            Some(v2.clone()),
            Some(Upcaster::Function(flatten)),
            limits(),
        );
        // `take` leaves `null` behind: `address.city` is still there.
        assert_eq!(e, Ok(Registered::New));
        let mut r = SchemaRegistry::default();
        r.register("t", 1, Some(address(&["city"])), None, limits())
            .unwrap();
        let moves: UpcastFn = Arc::new(|mut v| {
            let city = v["address"]
                .as_object_mut()
                .and_then(|a| a.remove("city"))
                .unwrap_or_default();
            v["city"] = city;
            Ok(v)
        });
        let e = r.register("t", 2, Some(v2), Some(Upcaster::Function(moves)), limits());
        assert_eq!(refused_for(e), "address.city");
    }
}
