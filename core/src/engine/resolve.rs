//! Turning a start position (beginning, end, offset, time) into one offset per partition.
//! Times are answered from memory when the events in memory decide it (timestamps never
//! decrease within a partition), otherwise by a `FindOffset` request per partition.

use super::streams::Partition;
use super::{Engine, Op, Origin, PendingOp};
use crate::api::Position;
use crate::error::{Error, InvalidInput};
use crate::ids::{ReplayId, SubId};
use crate::names::StreamName;
use crate::storage::{StorageReply, StorageRequest, StorageResult};
use crate::subscription_config::StartPosition;
use crate::time::UnixMillis;

/// What the offsets are for.
#[derive(Debug)]
pub(crate) enum Purpose {
    CreateSubscription {
        sub: SubId,
        origin: Origin,
    },
    Reset {
        sub: SubId,
        cursors: Vec<u32>,
        origin: Origin,
        /// Per-partition offsets: only the partitions named move.
        only: Option<Vec<u32>>,
    },
    Replay {
        replay: ReplayId,
    },
}

/// A resolution waiting for `FindOffset` answers.
#[derive(Debug)]
pub(crate) struct Resolve {
    purpose: Purpose,
    offsets: Vec<Option<u64>>,
    error: Option<Error>,
    outstanding: usize,
}

/// The first offset with a timestamp at or after `t`, if the events held in memory decide it.
fn time_in_memory(part: &Partition, all_in_memory: bool, t: UnixMillis) -> Option<u64> {
    if part.next == part.first || part.last_ts < t {
        return Some(part.next);
    }
    let decided = all_in_memory || part.cache.front().is_some_and(|e| e.timestamp < t);
    decided.then(|| part.cache_start() + part.cache.partition_point(|e| e.timestamp < t) as u64)
}

/// Per-partition offsets given by a client, checked against a stream of `partitions`: each
/// partition named exists and is named once. The offset of each partition, `None` where not
/// named.
pub fn partition_offsets(partitions: usize, given: &[Position]) -> Result<Vec<Option<u64>>, Error> {
    let mut out = vec![None; partitions];
    for p in given {
        let Some(slot) = out.get_mut(p.partition as usize) else {
            return Err(InvalidInput::Range {
                field: "offsets.partition",
                value: p.partition.into(),
                min: 0,
                max: partitions.saturating_sub(1) as u64,
            }
            .into());
        };
        if slot.replace(p.offset).is_some() {
            return Err(InvalidInput::Conflict {
                field: "offsets",
                reason: "a partition is named more than once",
            }
            .into());
        }
    }
    Ok(out)
}

impl Engine {
    pub(crate) fn resolve_start(
        &mut self,
        stream: &StreamName,
        start: StartPosition,
        purpose: Purpose,
    ) {
        let Some(s) = self.streams.get(stream) else {
            return self.resolved(purpose, Err(Error::StreamNotFound(stream.clone())));
        };
        let named = match &start {
            StartPosition::Offsets(given) => match partition_offsets(s.parts.len(), given) {
                Ok(v) => v,
                Err(e) => return self.resolved(purpose, Err(e)),
            },
            _ => Vec::new(),
        };
        let ephemeral = s.config.is_ephemeral();
        let mut offsets = Vec::with_capacity(s.parts.len());
        let mut ask = Vec::new();
        for (p, part) in s.parts.iter().enumerate() {
            let o = match start {
                StartPosition::Beginning => Some(part.first),
                StartPosition::End => Some(part.next),
                StartPosition::Offset(n) => Some(n.clamp(part.first, part.next)),
                StartPosition::Time(t) => time_in_memory(part, ephemeral, t),
                StartPosition::Offsets(_) => Some(
                    named
                        .get(p)
                        .copied()
                        .flatten()
                        .map_or(part.first, |n| n.clamp(part.first, part.next)),
                ),
            };
            if o.is_none() {
                ask.push(p as u32);
            }
            offsets.push(o);
        }
        if ask.is_empty() {
            return self.resolved(purpose, Ok(offsets.into_iter().flatten().collect()));
        }
        let StartPosition::Time(at) = start else {
            return;
        };
        let id = self.next_resolve;
        self.next_resolve += 1;
        self.resolves.insert(
            id,
            Resolve {
                purpose,
                offsets,
                error: None,
                outstanding: ask.len(),
            },
        );
        for partition in ask {
            let req = StorageRequest::FindOffset {
                stream: stream.clone(),
                partition,
                at,
            };
            self.storage(
                Op::FindOffset {
                    resolve: id,
                    partition,
                },
                req,
            );
        }
    }

    pub(crate) fn find_offset_done(&mut self, p: PendingOp, result: StorageResult) {
        let Op::FindOffset { resolve, partition } = p.op else {
            return;
        };
        let Some(r) = self.resolves.get_mut(&resolve) else {
            return;
        };
        match result {
            StorageResult::Ok(StorageReply::Offset(o)) => r.offsets[partition as usize] = Some(o),
            StorageResult::Ok(other) => {
                r.error = Some(Error::Unavailable(format!("store answered {other:?}")))
            }
            StorageResult::Err(e) => r.error = Some(super::unavailable(&e)),
            StorageResult::Unknown => {
                r.error = Some(Error::Unavailable("find offset: outcome unknown".into()))
            }
        }
        r.outstanding -= 1;
        if r.outstanding > 0 {
            return;
        }
        let Some(r) = self.resolves.remove(&resolve) else {
            return;
        };
        let result = match r.error {
            Some(e) => Err(e),
            None => Ok(r.offsets.into_iter().flatten().collect()),
        };
        self.resolved(r.purpose, result);
    }

    fn resolved(&mut self, purpose: Purpose, offsets: Result<Vec<u64>, Error>) {
        match purpose {
            Purpose::CreateSubscription { sub, origin } => {
                self.subscription_resolved(sub, origin, offsets)
            }
            Purpose::Reset {
                sub,
                cursors,
                origin,
                only,
            } => self.reset_resolved(sub, cursors, origin, only, offsets),
            Purpose::Replay { replay } => self.replay_resolved(replay, offsets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: u32, offset: u64) -> Position {
        Position { partition, offset }
    }

    #[test]
    fn partition_offsets_name_each_partition_at_most_once() {
        assert_eq!(
            partition_offsets(3, &[at(2, 7), at(0, 1)]),
            Ok(vec![Some(1), None, Some(7)])
        );
        assert_eq!(partition_offsets(2, &[]), Ok(vec![None, None]));
        assert_eq!(
            partition_offsets(2, &[at(2, 0)]),
            Err(Error::Invalid(InvalidInput::Range {
                field: "offsets.partition",
                value: 2,
                min: 0,
                max: 1,
            }))
        );
        assert!(matches!(
            partition_offsets(2, &[at(1, 0), at(1, 5)]),
            Err(Error::Invalid(InvalidInput::Conflict {
                field: "offsets",
                ..
            }))
        ));
    }
}
