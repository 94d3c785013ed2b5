//! Recovery: an engine rebuilds streams, heads, subscriptions, positions and the dedup
//! windows from the store, through storage requests, before it serves commands.

use super::streams::{Stream, StreamStatus};
use super::subscriptions::{SubStatus, Subscription};
use super::{Engine, Op, PendingOp, Phase};
use crate::api::Notice;
use crate::names::StreamName;
use crate::storage::{RecoveredState, StorageReply, StorageRequest, StorageResult};
use crate::subscription_config::SubscriptionMode;

impl Engine {
    pub(crate) fn recovery_done(&mut self, p: PendingOp, result: StorageResult) {
        match (&p.op, result) {
            (Op::Recover, StorageResult::Ok(StorageReply::Recovered(state))) => self.rebuild(state),
            (Op::LoadDedup { stream }, StorageResult::Ok(StorageReply::Dedup(records))) => {
                let stream = stream.clone();
                let full = records.len() >= self.cfg.recovery_page as usize;
                let last = records.last().map(|r| (r.partition, r.offset));
                if let Some(s) = self.streams.get_mut(&stream) {
                    for r in &records {
                        s.dedup.insert(r);
                    }
                }
                match last {
                    Some(after) if full => self.load_dedup(&stream, Some(after)),
                    _ => self.dedup_loaded(),
                }
            }
            (Op::LoadSchemas, StorageResult::Ok(StorageReply::Schemas(records))) => {
                match self.schemas_loaded(records) {
                    Some(after) => self.load_schemas(Some(after)),
                    None => self.dedup_loaded(),
                }
            }
            (Op::LoadReceipts { sub }, StorageResult::Ok(StorageReply::Receipts(records))) => {
                let sub = *sub;
                match self.receipts_loaded(sub, records) {
                    Some(after) => self.load_receipts(sub, Some(after)),
                    None => self.dedup_loaded(),
                }
            }
            (_, StorageResult::Ok(other)) => {
                self.retry_later(p, "recovery", format!("unexpected answer {other:?}"));
            }
            (_, StorageResult::Err(e)) => self.retry_later(p, "recovery", e.to_string()),
            (_, StorageResult::Unknown) => {
                self.retry_later(p, "recovery", "outcome unknown".into())
            }
        }
    }

    fn load_dedup(&mut self, stream: &StreamName, after: Option<(u32, u64)>) {
        let req = StorageRequest::LoadDedup {
            stream: stream.clone(),
            live_at: self.now.wall,
            after,
            limit: self.cfg.recovery_page,
        };
        self.storage(
            Op::LoadDedup {
                stream: stream.clone(),
            },
            req,
        );
    }

    fn rebuild(&mut self, state: RecoveredState) {
        for rec in state.streams {
            let name = rec.config.name.clone();
            let seed = self.seed ^ xxhash_rust::xxh3::xxh3_64(name.as_str().as_bytes());
            let first_seq = self.first_write_seq();
            let mut s = Stream::new(rec.config, StreamStatus::Ready, seed, first_seq);
            for (part, head) in s.parts.iter_mut().zip(&rec.heads) {
                part.first = head.first;
                part.next = head.next;
                part.last_ts = head.last_timestamp;
            }
            s.clock = s.parts.iter().map(|p| p.last_ts).max().unwrap_or_default();
            self.streams.insert(name, s);
        }
        for r in state.relays {
            if let Some(relay) = self
                .streams
                .get_mut(&r.stream)
                .and_then(|s| s.relay.as_mut())
            {
                relay.recover(r.partition, r.next);
            }
        }
        for rec in state.subscriptions {
            let Some(stream) = self.streams.get_mut(&rec.config.stream) else {
                continue;
            };
            stream.subs.insert(rec.id);
            let mut sub = Subscription::new(rec.id, rec.config, stream, SubStatus::Ready);
            sub.start_offsets = rec.start_offsets;
            sub.start_offsets.resize(stream.parts.len(), 0);
            if sub.config.mode.shared_position() {
                sub.new_cursor(None);
            }
            self.next_sub = self.next_sub.max(rec.id.0 + 1);
            self.sub_names
                .insert((sub.config.stream.clone(), sub.config.name.clone()), rec.id);
            self.subs.insert(rec.id, sub);
        }
        for c in state.cursors {
            let Some(sub) = self.subs.get_mut(&c.sub) else {
                continue;
            };
            let ci = match (&c.consumer, sub.config.mode) {
                (None, SubscriptionMode::Exclusive | SubscriptionMode::ConsumerGroup) => 0,
                (Some(id), SubscriptionMode::Broadcast | SubscriptionMode::ReadReceipt) => {
                    match sub.cursor_of.get(id) {
                        Some(&i) => i,
                        None => sub.new_cursor(Some(id.clone())),
                    }
                }
                _ => continue,
            };
            if let Some(pc) = sub.cursors[ci as usize].parts.get_mut(c.partition as usize) {
                let acked: &[u64] = &c.acked;
                // PLANTED BUG redeliver-acked (test-only): acks above the floor are forgotten.
                #[cfg(feature = "planted-bugs")]
                let acked: &[u64] = if self.planted == Some(crate::PlantedBug::RedeliverAcked) {
                    &[]
                } else {
                    acked
                };
                *pc = super::cursor::PartCursor::at(c.floor, acked);
            }
        }
        let with_dedup: Vec<StreamName> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.config.dedup_window.is_zero())
            .map(|(n, _)| n.clone())
            .collect();
        // Receipts of read receipt subscriptions on persistent streams load in pages too.
        let with_receipts: Vec<crate::ids::SubId> = self
            .subs
            .iter()
            .filter(|(_, s)| s.receipts.is_some() && s.durable)
            .map(|(id, _)| *id)
            .collect();
        // Schema versions load in pages too (one more load to wait for).
        self.phase = Phase::Recovering {
            dedup_loading: with_dedup.len() + with_receipts.len() + 1,
            loaded: true,
        };
        self.load_schemas(None);
        for name in with_dedup {
            self.load_dedup(&name, None);
        }
        for id in with_receipts {
            self.load_receipts(id, None);
        }
    }

    /// One stream's dedup ids, one subscription's receipts, or the schemas, are loaded.
    fn dedup_loaded(&mut self) {
        if let Phase::Recovering { dedup_loading, .. } = &mut self.phase {
            *dedup_loading -= 1;
            if *dedup_loading == 0 {
                self.finish_recovery();
            }
        }
    }

    fn finish_recovery(&mut self) {
        self.phase = Phase::Ready;
        self.arm_cleanup();
        // No consumer is attached yet: each position's expiry counts from now.
        let subs: Vec<crate::ids::SubId> = self.subs.keys().copied().collect();
        for id in subs {
            self.arm_all_expiries(id);
        }
        // Versions registered by the embedding code and not in the store yet are saved.
        self.save_unsaved_schemas();
        // Cross-service streams send again everything not confirmed before the restart.
        let relayed: Vec<StreamName> = self
            .streams
            .iter()
            .filter(|(_, s)| s.relay.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in relayed {
            self.relay_pump(&name);
        }
        let (streams, subscriptions) = (self.streams.len(), self.subs.len());
        self.notice(Notice::Recovered {
            streams,
            subscriptions,
        });
        while let Some((conn, req, cmd)) = self.queued.pop_front() {
            self.command(conn, req, cmd);
        }
    }
}
