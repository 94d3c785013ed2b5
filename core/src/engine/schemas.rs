//! Schemas on the way out (SPEC 7): the engine's registry, its commands, and the shaping of
//! delivered and replayed events to the version each reader asks for.
//!
//! A reader (subscription or replay) names a version per event type (`schema_versions`;
//! default: the latest registered). An older JSON event is upcast hop by hop (stored bytes
//! never change: the reader gets a new envelope with the new payload and `schema_version`).
//! An event newer than asked goes unchanged with the header `x-schema-newer-than-requested`,
//! or, with `strict_versions`, is refused: a subscription dead-letters it, a replay skips it.
//! A payload that cannot be upcast (not JSON, or an upcaster failed) goes unchanged with the
//! header `x-upcast-error`; a payload whose content type is not JSON is never upcast.
//!
//! The registry is durable: a new version is saved (`SaveSchemas`, with every version of its
//! type not yet known saved, so a store always holds 1..=n) and `RegisterSchema` is answered
//! once it is; recovery loads the versions back in pages (`LoadSchemas`). A version
//! registered again with the same content is accepted and changes nothing (a server
//! registers its configured schemas at every start). A Rust function upcaster is saved as
//! `function: true` without the function, and restored as missing until the embedding code
//! registers it again.

use super::cursor::{CursorKey, SlotKey, SlotState};
use super::{Engine, EventRef, Op, Origin, PendingOp, Phase};
use crate::api::{Output, Reply};
use crate::error::Error;
use crate::event::JSON;
use crate::ids::SubId;
use crate::schema::{
    Limits, Registered, SchemaRecord, SchemaRegistration, SchemaRegistry, Upcast, UpcastFn,
    Upcaster,
};
use crate::storage::{StorageRequest, StorageResult};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Header on an event newer than the version its reader asked for: the version asked.
pub const NEWER_THAN_REQUESTED: &str = "x-schema-newer-than-requested";
/// Header on an event that could not be upcast: why.
pub const UPCAST_ERROR: &str = "x-upcast-error";

/// What a reader gets for one event.
pub(crate) enum Shaped {
    Send(EventRef),
    Refuse(String),
}

impl Engine {
    fn schema_limits(&self) -> Limits {
        Limits {
            max_event_type_bytes: self.cfg.max_event_type_bytes,
            max_types: self.cfg.max_schema_types,
            max_versions: self.cfg.max_schema_versions,
            max_rules: self.cfg.max_upcaster_rules,
            max_schema_bytes: self.cfg.max_schema_bytes,
        }
    }

    /// Registers a version with declarative rules, as `Command::RegisterSchema` does but
    /// without waiting for the store: the version serves at once and is saved in the
    /// background (after recovery, if it is still running; drain `poll_output` afterwards).
    /// Registering a version again with the same content is accepted and changes nothing.
    pub fn register_schema(&mut self, reg: SchemaRegistration) -> Result<(), Error> {
        let event_type = reg.event_type.clone();
        self.register_rules(reg)?;
        self.save_schemas(&event_type, None);
        Ok(())
    }

    fn register_rules(&mut self, reg: SchemaRegistration) -> Result<Registered, Error> {
        let limits = self.schema_limits();
        let up = (!reg.rules.is_empty() || reg.version > 1).then_some(Upcaster::Rules(reg.rules));
        self.schemas
            .register(&reg.event_type, reg.version, reg.schema, up, limits)
    }

    /// Registers a version whose upcaster from the version before is a Rust function. The
    /// store keeps the version without the function: after a restart, register it again
    /// with the same version and schema (until then upcasting through it fails with
    /// `x-upcast-error`).
    pub fn register_schema_fn(
        &mut self,
        event_type: &str,
        version: u32,
        schema: Option<Value>,
        upcaster: UpcastFn,
    ) -> Result<(), Error> {
        let limits = self.schema_limits();
        self.schemas.register(
            event_type,
            version,
            schema,
            Some(Upcaster::Function(upcaster)),
            limits,
        )?;
        self.save_schemas(event_type, None);
        Ok(())
    }

    /// The schema registry.
    pub fn schemas(&self) -> &SchemaRegistry {
        &self.schemas
    }

    /// `Command::RegisterSchema`: answered once the version (and every one before it) is
    /// saved.
    pub(crate) fn register_schema_cmd(&mut self, origin: Origin, reg: SchemaRegistration) {
        let event_type = reg.event_type.clone();
        match self.register_rules(reg) {
            Err(e) => self.reply_to(origin, Err(e)),
            // PLANTED BUG register-schema-unsaved (test-only): answered before it is saved.
            #[cfg(feature = "planted-bugs")]
            Ok(_) if self.planted == Some(crate::PlantedBug::RegisterSchemaUnsaved) => {
                self.reply_to(origin, Ok(Reply::Done))
            }
            Ok(_) => self.save_schemas(&event_type, Some(origin)),
        }
    }

    /// Saves the versions of `event_type` not known saved (all of them up to its latest);
    /// answers `origin` once they are (at once if nothing is left to save). While recovery
    /// runs nothing is sent: it ends by saving what the store lacks.
    fn save_schemas(&mut self, event_type: &str, origin: Option<Origin>) {
        let saved = self.schemas_saved.get(event_type).copied().unwrap_or(0);
        let latest = self.schemas.latest(event_type);
        if saved >= latest || self.phase != Phase::Ready {
            if let Some(o) = origin {
                self.reply_to(o, Ok(Reply::Done));
            }
            return;
        }
        let records = self.schemas.records(event_type, saved + 1, latest);
        self.storage(
            Op::SaveSchemas {
                event_type: event_type.to_string(),
                upto: latest,
                origin,
            },
            StorageRequest::SaveSchemas(records),
        );
    }

    pub(crate) fn save_schemas_done(&mut self, p: PendingOp, result: StorageResult) {
        match (&p.op, result) {
            (
                Op::SaveSchemas {
                    event_type,
                    upto,
                    origin,
                },
                StorageResult::Ok(_),
            ) => {
                let saved = self.schemas_saved.entry(event_type.clone()).or_default();
                *saved = (*saved).max(*upto);
                if let Some(o) = *origin {
                    self.reply_to(o, Ok(Reply::Done));
                }
            }
            (_, StorageResult::Ok(_)) => {}
            (_, StorageResult::Err(e)) => self.retry_later(p, "schema save", e.to_string()),
            (_, StorageResult::Unknown) => {
                self.retry_later(p, "schema save", "outcome unknown".into())
            }
        }
    }

    /// At the end of recovery: every version the store lacks is saved.
    pub(super) fn save_unsaved_schemas(&mut self) {
        for (event_type, _) in self.schemas.latest_versions() {
            self.save_schemas(&event_type, None);
        }
    }

    pub(super) fn load_schemas(&mut self, after: Option<(String, u32)>) {
        let req = StorageRequest::LoadSchemas {
            after,
            limit: self.cfg.recovery_page,
        };
        self.storage(Op::LoadSchemas, req);
    }

    /// A page of stored versions: restored (a version the embedding code registered
    /// differently before recovery ended keeps its own, and is saved over the stored one).
    /// Returns where to resume if the page was full.
    pub(super) fn schemas_loaded(&mut self, records: Vec<SchemaRecord>) -> Option<(String, u32)> {
        let full = records.len() >= self.cfg.recovery_page as usize;
        let last = records.last().map(|r| (r.event_type.clone(), r.version));
        for r in &records {
            // PLANTED BUG schemas-not-recovered (test-only): stored versions are ignored.
            #[cfg(feature = "planted-bugs")]
            if self.planted == Some(crate::PlantedBug::SchemasNotRecovered) {
                continue;
            }
            if !self.schemas.holds(r) && !self.schemas.restore(r) {
                continue;
            }
            let saved = self.schemas_saved.entry(r.event_type.clone()).or_default();
            if r.version == *saved + 1 {
                *saved = r.version;
            }
        }
        last.filter(|_| full)
    }

    /// The event as a reader asking `asked` (per type) gets it.
    pub(crate) fn shape(
        &self,
        ev: &EventRef,
        asked: &BTreeMap<String, u32>,
        strict: bool,
    ) -> Shaped {
        let latest = self.schemas.latest(&ev.event_type);
        let Some(target) = asked
            .get(&ev.event_type)
            .copied()
            .or((latest > 0).then_some(latest))
        else {
            return Shaped::Send(ev.clone());
        };
        let from = ev.schema_version;
        if from == target {
            return Shaped::Send(ev.clone());
        }
        if from > target {
            if strict {
                return Shaped::Refuse(format!(
                    "schema version {from} is newer than the version {target} asked for"
                ));
            }
            return Shaped::Send(with_header(ev, NEWER_THAN_REQUESTED, target.to_string()));
        }
        if ev.content_type != JSON {
            return Shaped::Send(ev.clone());
        }
        match self
            .schemas
            .upcast(&ev.event_type, from, target, &ev.payload)
        {
            Upcast::Unchanged | Upcast::Newer => Shaped::Send(ev.clone()),
            Upcast::Done { payload, version } => {
                let mut e = (**ev).clone();
                e.payload = payload.into();
                e.schema_version = version;
                Shaped::Send(Arc::new(e))
            }
            Upcast::Failed(why) => Shaped::Send(with_header(ev, UPCAST_ERROR, why)),
        }
    }

    /// Shapes the deliveries a subscription just queued (outputs from `from` on); events it
    /// refuses (strict versions) are dead-lettered.
    pub(crate) fn shape_deliveries(&mut self, id: SubId, from: usize) {
        if self.schemas.is_empty() {
            return;
        }
        let Some(sub) = self.subs.get(&id) else {
            return;
        };
        let (asked, strict) = (
            sub.config.schema_versions.clone(),
            sub.config.strict_versions,
        );
        let mut refused = Vec::new();
        let mut out = std::mem::take(&mut self.out);
        for o in out.iter_mut().skip(from) {
            let Output::Deliver {
                consumer, events, ..
            } = o
            else {
                continue;
            };
            let mut kept = Vec::with_capacity(events.len());
            for mut d in events.drain(..) {
                match self.shape(&d.event, &asked, strict) {
                    Shaped::Send(e) => {
                        d.event = e;
                        kept.push(d);
                    }
                    Shaped::Refuse(why) => {
                        refused.push((consumer.clone(), d.event.partition, d.event.offset, why))
                    }
                }
            }
            *events = kept;
        }
        out.retain(|o| !matches!(o, Output::Deliver { events, .. } if events.is_empty()));
        self.out = out;
        for (consumer, partition, offset, why) in refused {
            let Some(ci) = self
                .subs
                .get(&id)
                .and_then(|s| s.consumers.get(&consumer))
                .map(|c| c.cursor)
            else {
                continue;
            };
            let key = SlotKey {
                key: CursorKey {
                    sub: id,
                    cursor: ci,
                    partition,
                },
                offset,
            };
            let state = self
                .part_cursor(key.key)
                .and_then(|pc| pc.slot_mut(offset))
                .and_then(|s| s.pending.as_ref())
                .map(|p| p.state.clone());
            if let Some(state @ SlotState::InFlight { .. }) = state {
                self.release(key, &state);
                self.dead_letter(key, why);
            }
        }
    }

    /// Shapes a replay's batch: upcast, marked, or left out (strict).
    pub(crate) fn shape_replay(
        &self,
        events: Vec<EventRef>,
        asked: &BTreeMap<String, u32>,
        strict: bool,
    ) -> Vec<EventRef> {
        if self.schemas.is_empty() {
            return events;
        }
        events
            .iter()
            .filter_map(|e| match self.shape(e, asked, strict) {
                Shaped::Send(e) => Some(e),
                Shaped::Refuse(_) => None,
            })
            .collect()
    }
}

fn with_header(ev: &EventRef, name: &str, value: String) -> EventRef {
    let mut e = (**ev).clone();
    e.headers.insert(name.to_string(), value);
    Arc::new(e)
}
