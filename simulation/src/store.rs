//! The simulated store: the in-memory store behind a fault layer. Each request gets a latency
//! and an outcome drawn from the storage sub-seed when it is issued, and is carried out (or
//! not) when it completes, so completions come back in any order. A crash applies some of the
//! writes in flight (their replies are lost) and drops the rest.

use crate::queue::VTime;
use crate::rng::SimRng;
use crate::swarm::Faults;
use std::collections::BTreeMap;
use tributary_core::{OpId, StorageError, StorageRequest, StorageResult};
use tributary_store_memory::MemoryStore;

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Carried out; the reply arrives.
    Ok,
    /// Fails; nothing written.
    Fail,
    /// Carried out; the reply is lost (`Unknown`).
    UnknownApplied,
    /// Not carried out; answered `Unknown`.
    UnknownLost,
}

/// A request in flight.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// The request.
    pub req: StorageRequest,
    /// What will happen to it.
    pub fate: Fate,
}

/// A store with faults.
#[derive(Debug, Clone, Default)]
pub struct SimStore {
    /// What is durable.
    pub store: MemoryStore,
    /// Requests in flight.
    pub in_flight: BTreeMap<OpId, InFlight>,
}

/// Whether a request changes the store.
pub fn is_write(req: &StorageRequest) -> bool {
    !matches!(
        req,
        StorageRequest::Recover
            | StorageRequest::LoadDedup { .. }
            | StorageRequest::Read { .. }
            | StorageRequest::FindOffset { .. }
            | StorageRequest::LoadSchemas { .. }
            | StorageRequest::LoadReceipts { .. }
            | StorageRequest::RetentionCut { .. }
    )
}

impl SimStore {
    /// Takes a request: draws its latency and fate (`faults: None`: healthy), returns when it
    /// completes.
    pub fn issue(
        &mut self,
        rng: &mut SimRng,
        faults: Option<&Faults>,
        now: VTime,
        op: OpId,
        req: StorageRequest,
    ) -> VTime {
        let (latency, fate) = match faults {
            None => (rng.below(200_000), Fate::Ok),
            Some(f) => {
                let mut latency = rng.below(f.latency_max_us.max(1) * 1000);
                if rng.chance(f.spike) {
                    latency += rng.below(f.spike_max_ms * 1_000_000);
                }
                let fate = match rng.below(1000) as u32 {
                    x if x < f.error => Fate::Fail,
                    x if x < f.error + f.unknown_applied => Fate::UnknownApplied,
                    x if x < f.error + f.unknown_applied + f.unknown_lost => Fate::UnknownLost,
                    _ => Fate::Ok,
                };
                (latency, fate)
            }
        };
        self.in_flight.insert(op, InFlight { req, fate });
        now + latency
    }

    /// Completes a request: carries it out or not, and says what the engine hears.
    pub fn complete(&mut self, op: OpId) -> Option<StorageResult> {
        let f = self.in_flight.remove(&op)?;
        Some(match f.fate {
            Fate::Ok => self.store.execute(&f.req),
            Fate::Fail => StorageResult::Err(StorageError::Unavailable("simulated failure".into())),
            Fate::UnknownApplied => {
                self.store.execute(&f.req);
                StorageResult::Unknown
            }
            Fate::UnknownLost => StorageResult::Unknown,
        })
    }

    /// The engine crashed: each write in flight is applied or not (a coin each); every reply
    /// is lost.
    pub fn crash(&mut self, rng: &mut SimRng) {
        for (_, f) in std::mem::take(&mut self.in_flight) {
            if is_write(&f.req) && f.fate != Fate::Fail && f.fate != Fate::UnknownLost && rng.coin()
            {
                self.store.execute(&f.req);
            }
        }
    }
}
