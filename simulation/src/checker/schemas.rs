//! Schemas in the model: the registry as the engine must hold it (learned from the versions it
//! saves and the versions the store gives back at recovery), registrations and their
//! durability, and a reference upcaster of its own that says what a reader asking for some
//! versions must get for each stored event (SPEC 7).
//!
//! Oracles: `schema-compatible` (a version the engine registers is compatible with the one
//! before, and one it refuses as incompatible is not, naming a field that may be missing, by
//! the model's own reading of the rule below), `schemas-durable` (a registration is answered only once a save of it committed;
//! every acknowledged version is in the registry after a restart, as `ListSchemas` shows;
//! registering an acknowledged version again with the same content is accepted) and `upcast`
//! (a delivered or replayed event equals the model's shaping of the stored one: upcast hop by
//! hop, marked newer than asked, marked as not upcastable, or left out when strict).

use super::Checker;
use super::model::{Content, digest_event};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use tributary_core::{
    Error, Event, JSON, NEWER_THAN_REQUESTED, Reply, Rule, SchemaInfo, SchemaRecord,
    SchemaRegistration, UPCAST_ERROR,
};

/// What a reader asks for: the version per event type, and whether strictly.
pub(crate) type Reader = (BTreeMap<String, u32>, bool);

/// A registry as listed: per event type, (version, schema, rules, function).
type Listed = BTreeMap<String, Vec<(u32, Option<Value>, Vec<Rule>, bool)>>;

/// What a reader must get for one stored event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shaped {
    /// The stored event, unchanged.
    Unchanged,
    /// Unchanged but for a header (its value, if it is known).
    Header(&'static str, Option<String>),
    /// Upcast to `version` with this document.
    Upcast(u32, Value),
    /// Not sent at all (strict).
    Refused,
}

impl Checker {
    /// A save of versions leaves the engine: they are what it registered.
    pub(super) fn schemas_out(&mut self, records: &[SchemaRecord]) {
        for r in records {
            let vs = self.registry.entry(r.event_type.clone()).or_default();
            let i = r.version as usize - 1;
            match i.cmp(&vs.len()) {
                std::cmp::Ordering::Less => {
                    if vs[i] != *r {
                        let d = format!(
                            "{} v{}: saved with other content than registered before",
                            r.event_type, r.version
                        );
                        self.fail("schemas-durable", d);
                    }
                }
                std::cmp::Ordering::Equal => {
                    // A new version the engine registered: compatible with the one before.
                    let missing = match (i.checked_sub(1).map(|p| &vs[p]), &r.schema) {
                        (Some(prev), Some(new)) if !r.function => prev
                            .schema
                            .as_ref()
                            .map(|old| missing_after(old, new, &r.rules))
                            .unwrap_or_default(),
                        _ => Vec::new(),
                    };
                    vs.push(r.clone());
                    if !missing.is_empty() {
                        let d = format!(
                            "{} v{} was registered, but {missing:?} may be missing from an upcast v{} document (rules {:?})",
                            r.event_type,
                            r.version,
                            r.version - 1,
                            r.rules
                        );
                        self.fail("schema-compatible", d);
                    }
                }
                std::cmp::Ordering::Greater => {
                    let d = format!(
                        "{} v{} saved while the registry holds {} versions",
                        r.event_type,
                        r.version,
                        vs.len()
                    );
                    self.fail("schemas-durable", d);
                }
            }
        }
    }

    /// A save committed.
    pub(super) fn schemas_saved(&mut self, records: &[SchemaRecord]) {
        for r in records {
            self.schemas_committed
                .insert((r.event_type.clone(), r.version), r.clone());
        }
    }

    /// Versions the store gave back at recovery: the engine restores them in order.
    pub(super) fn schemas_loaded(&mut self, records: &[SchemaRecord]) {
        // What the store gives back is in it (a save applied by a crash is never answered).
        self.schemas_saved(records);
        for r in records {
            let vs = self.registry.entry(r.event_type.clone()).or_default();
            if r.version as usize == vs.len() + 1 {
                vs.push(r.clone());
            }
        }
    }

    /// Recovery is over: every acknowledged version is registered, as acknowledged.
    pub(super) fn schemas_recovered(&mut self) {
        let mut errors = Vec::new();
        for ((t, v), r) in &self.schemas_acked {
            let have = self.registry.get(t).and_then(|vs| vs.get(*v as usize - 1));
            if have != Some(r) {
                errors.push(format!(
                    "{t} v{v} was acknowledged but the store did not give it back at recovery ({have:?})"
                ));
            }
        }
        for d in errors {
            self.fail("schemas-durable", d);
        }
    }

    /// The reply to a registration.
    pub(super) fn register_reply(&mut self, reg: &SchemaRegistration, r: &Result<Reply, Error>) {
        let key = (reg.event_type.clone(), reg.version);
        match r {
            Ok(Reply::Done) => {
                let Some(saved) = self.schemas_committed.get(&key).cloned() else {
                    return self.fail(
                        "schemas-durable",
                        format!(
                            "{} v{}: registration answered before a save of it committed",
                            reg.event_type, reg.version
                        ),
                    );
                };
                if saved.schema != reg.schema || saved.rules != reg.rules || saved.function {
                    return self.fail(
                        "schemas-durable",
                        format!(
                            "{} v{}: answered Done, but the version saved differs from the one registered",
                            reg.event_type, reg.version
                        ),
                    );
                }
                self.schemas_acked.insert(key, saved);
            }
            Err(Error::SchemaIncompatible { field, version, .. }) => {
                self.judge_refusal(reg, *version, field);
            }
            // Refused for its content or for the registry's state (not for load: `Busy`,
            // `Unavailable`).
            Err(e @ (Error::Invalid(_) | Error::SchemaVersionConflict { .. })) => {
                if let Some(a) = self.schemas_acked.get(&key)
                    && a.schema == reg.schema
                    && a.rules == reg.rules
                {
                    self.fail(
                        "schemas-durable",
                        format!(
                            "{} v{}: registering an acknowledged version again with the same content was refused: {e}",
                            reg.event_type, reg.version
                        ),
                    );
                }
            }
            Err(_) => {}
            Ok(other) => self.fail(
                "schemas-durable",
                format!("a registration answered {other:?}"),
            ),
        }
    }

    /// A registration refused as incompatible: it must be, by the model's rule, and the field
    /// named must be one that may be missing. Judged when the model knows the version before
    /// (the engine's latest: only the next version is checked for compatibility).
    fn judge_refusal(&mut self, reg: &SchemaRegistration, version: u32, field: &str) {
        let at = format!("{} v{}", reg.event_type, reg.version);
        if version != reg.version {
            return self.fail(
                "schema-compatible",
                format!("{at}: refused as incompatible naming version {version}"),
            );
        }
        let vs = self
            .registry
            .get(&reg.event_type)
            .map_or(&[][..], |v| &v[..]);
        if reg.version < 2 || vs.len() + 1 != reg.version as usize {
            return;
        }
        let old = vs[vs.len() - 1].schema.clone();
        let (Some(old), Some(new)) = (old, &reg.schema) else {
            return self.fail(
                "schema-compatible",
                format!(
                    "{at}: refused as incompatible ({field}) though a schema is missing on one side"
                ),
            );
        };
        let missing = missing_after(&old, new, &reg.rules);
        if missing.is_empty() {
            self.fail(
                "schema-compatible",
                format!(
                    "{at}: refused as incompatible ({field:?}), but every required field of it is in every upcast v{} document (rules {:?})",
                    reg.version - 1,
                    reg.rules
                ),
            );
        } else if !missing.iter().any(|m| m == field) {
            self.fail(
                "schema-compatible",
                format!("{at}: refused naming {field:?}, but what may be missing is {missing:?}"),
            );
        }
    }

    /// `ListSchemas`: exactly the model's registry.
    pub(super) fn schemas_listed(&mut self, list: &[SchemaInfo]) {
        let got: Listed = list
            .iter()
            .map(|i| {
                let vs = i
                    .versions
                    .iter()
                    .map(|v| (v.version, v.schema.clone(), v.rules.clone(), v.function))
                    .collect();
                (i.event_type.clone(), vs)
            })
            .collect();
        let want: Listed = self
            .registry
            .iter()
            .filter(|(_, vs)| !vs.is_empty())
            .map(|(t, vs)| {
                let vs = vs
                    .iter()
                    .map(|r| (r.version, r.schema.clone(), r.rules.clone(), r.function))
                    .collect();
                (t.clone(), vs)
            })
            .collect();
        if got != want {
            let versions = |m: &Listed| {
                m.iter()
                    .map(|(t, vs)| format!("{t}: {}", vs.len()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            self.fail(
                "schemas-durable",
                format!(
                    "ListSchemas shows [{}], the model's registry is [{}] (or their content differs)",
                    versions(&got),
                    versions(&want)
                ),
            );
        }
    }

    /// What a reader must get for a stored event (the engine's `shape`, modelled).
    pub(crate) fn shaped(&self, c: &Content, reader: &Reader) -> Shaped {
        if self.registry.values().all(Vec::is_empty) {
            return Shaped::Unchanged;
        }
        let versions = self.registry.get(&c.event_type).map_or(&[][..], |v| &v[..]);
        let latest = versions.len() as u32;
        let Some(target) = reader
            .0
            .get(&c.event_type)
            .copied()
            .or((latest > 0).then_some(latest))
        else {
            return Shaped::Unchanged;
        };
        let from = c.schema_version;
        if from == target {
            return Shaped::Unchanged;
        }
        if from > target {
            return if reader.1 {
                Shaped::Refused
            } else {
                Shaped::Header(NEWER_THAN_REQUESTED, Some(target.to_string()))
            };
        }
        if c.content_type != JSON {
            return Shaped::Unchanged;
        }
        let to = target.min(latest);
        if versions.is_empty() || from >= to {
            return Shaped::Unchanged;
        }
        let Ok(mut doc) = serde_json::from_slice::<Value>(&c.payload) else {
            return Shaped::Header(UPCAST_ERROR, None);
        };
        for v in from + 1..=to {
            let rules = &versions[v as usize - 1].rules;
            match doc.as_object_mut() {
                Some(obj) => {
                    for r in rules {
                        apply_rule(r, obj);
                    }
                }
                None if rules.is_empty() => {}
                None => return Shaped::Header(UPCAST_ERROR, None),
            }
        }
        Shaped::Upcast(to, doc)
    }

    /// How an event a reader got differs from what it must get, if it does.
    pub(crate) fn shape_mismatch(
        &self,
        c: &Content,
        digest: u64,
        e: &Event,
        reader: &Reader,
    ) -> Option<String> {
        let at = format!("{}/{}/{}", e.stream, e.partition, e.offset);
        match self.shaped(c, reader) {
            Shaped::Unchanged => (digest_event(e) != digest).then(|| {
                format!(
                    "{at}: sent changed (version {}), the model expects it unchanged at version {}",
                    e.schema_version, c.schema_version
                )
            }),
            Shaped::Refused => Some(format!(
                "{at}: version {} sent to a strict reader asking {:?}",
                c.schema_version, reader.0
            )),
            Shaped::Header(name, value) => {
                let mut plain = e.clone();
                let got = plain.headers.remove(name);
                if got.is_none() || (value.is_some() && got != value) {
                    return Some(format!(
                        "{at}: expected header {name}: {value:?}, got {got:?} (version {} sent, {} stored)",
                        e.schema_version, c.schema_version
                    ));
                }
                (digest_event(&plain) != digest)
                    .then(|| format!("{at}: sent with {name} but otherwise changed"))
            }
            Shaped::Upcast(version, doc) => {
                let got: Option<Value> = serde_json::from_slice(&e.payload).ok();
                if e.schema_version != version || got.as_ref() != Some(&doc) {
                    return Some(format!(
                        "{at}: expected the upcast from version {} to {version}: {doc}, got version {}: {} (reader asks {:?})",
                        c.schema_version,
                        e.schema_version,
                        String::from_utf8_lossy(&e.payload),
                        reader.0
                    ));
                }
                let mut plain = e.clone();
                plain.schema_version = c.schema_version;
                plain.payload = c.payload.clone();
                (digest_event(&plain) != digest)
                    .then(|| format!("{at}: upcast, but other fields changed"))
            }
        }
    }
}

// The compatibility rule (SPEC 7, docs/semantics.md "Schemas"), written apart from the
// core's: a skeleton document holds exactly the paths every valid document of the old version
// holds (its required fields, and the required fields of a required field's own schema, at
// every depth; leaves `null`). The reference upcaster below takes it through the rules, with
// one difference: a field the skeleton lacks may be missing or hold anything, so a rule
// reading it (rename, copy) may put anything at its target (the target stays, what was below
// it does not), and `add` of it keeps whatever was there (the field is there, nothing below
// it is known). The new version's required paths must all be in the result. (The workload
// writes no `$ref`s; the core follows local ones.)

/// The required paths of a schema, parents before children.
fn needed(schema: &Value, prefix: &str, out: &mut Vec<String>) {
    let names = schema["required"].as_array().into_iter().flatten();
    for name in names.filter_map(Value::as_str) {
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        if out.contains(&path) {
            continue;
        }
        out.push(path.clone());
        needed(&schema["properties"][name], &path, out);
    }
}

/// The skeleton of a schema's valid documents.
fn skeleton(schema: &Value) -> Map<String, Value> {
    let mut doc = Map::new();
    for name in schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let child = &schema["properties"][name];
        let below = child["required"].as_array().is_some_and(|a| !a.is_empty());
        let v = if below {
            Value::Object(skeleton(child))
        } else {
            Value::Null
        };
        doc.insert(name.to_string(), v);
    }
    doc
}

/// The required paths of `new` that may be missing from an upcast valid `old` document.
pub(crate) fn missing_after(old: &Value, new: &Value, rules: &[Rule]) -> Vec<String> {
    let mut doc = skeleton(old);
    for r in rules {
        match r {
            Rule::Rename { from, to } | Rule::Copy { from, to } if lookup(&doc, from).is_none() => {
                if lookup(&doc, to).is_some() {
                    set_path(&mut doc, to, Value::Null);
                }
            }
            Rule::Add { field, .. } => {
                if lookup(&doc, field).is_none() {
                    set_path(&mut doc, field, Value::Null);
                }
            }
            _ => apply_rule(r, &mut doc),
        }
    }
    let mut need = Vec::new();
    needed(new, "", &mut need);
    need.into_iter()
        .filter(|p| lookup(&doc, p).is_none())
        .collect()
}

// The reference upcaster: SPEC 7's rules on a JSON object, written apart from the core's.

fn apply_rule(r: &Rule, obj: &mut Map<String, Value>) {
    match r {
        Rule::Rename { from, to } => {
            if let Some(v) = remove_path(obj, from) {
                set_path(obj, to, v);
            }
        }
        Rule::Add { field, default } => {
            if lookup(obj, field).is_none() {
                set_path(obj, field, default.clone());
            }
        }
        Rule::Remove { field } => {
            remove_path(obj, field);
        }
        Rule::Set { field, value } => set_path(obj, field, value.clone()),
        Rule::Copy { from, to } => {
            if let Some(v) = lookup(obj, from).cloned() {
                set_path(obj, to, v);
            }
        }
    }
}

fn lookup<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let (parents, last) = split(path);
    let mut cur = obj;
    for p in parents {
        cur = cur.get(p)?.as_object()?;
    }
    cur.get(last)
}

fn remove_path(obj: &mut Map<String, Value>, path: &str) -> Option<Value> {
    let (parents, last) = split(path);
    let mut cur = obj;
    for p in parents {
        cur = cur.get_mut(p)?.as_object_mut()?;
    }
    cur.remove(last)
}

/// Sets a path, making (or replacing with) objects on the way.
fn set_path(obj: &mut Map<String, Value>, path: &str, v: Value) {
    let (parents, last) = split(path);
    let mut cur = obj;
    for p in parents {
        let slot = cur.entry(p).or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        match slot {
            Value::Object(m) => cur = m,
            _ => return,
        }
    }
    cur.insert(last.to_string(), v);
}

fn split(path: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or(path);
    (parts, last)
}
