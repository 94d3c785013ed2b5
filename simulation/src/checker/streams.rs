//! Streams in the model: writes and their completions, appends, reads, describes, recovery.

use super::model::{
    Content, EvM, IdM, StreamM, SubM, digest_event, digest_new, lost_ack, position_of,
};
use super::schemas::Reader;
use super::{Checker, Sent};
use std::collections::BTreeMap;
use tributary_core::{
    AppendOutcome, AppendRequest, AppendWrite, Command, ConnId, DeliverySemantics, Error, Event,
    InvalidInput, NewEvent, Position, RecoveredState, Reply, StorageReply, StorageRequest,
    StreamInfo, StreamName, partition_of_key,
};

impl Checker {
    /// A storage request leaves the engine.
    pub(super) fn storage_out(&mut self, req: &StorageRequest) {
        match req {
            StorageRequest::CreateStream(cfg) => {
                self.streams
                    .entry(cfg.name.clone())
                    .or_insert_with(|| StreamM::new(cfg.clone()));
            }
            StorageRequest::DeleteStream(name) => {
                if let Some(s) = self.streams.get_mut(name) {
                    s.delete_requested = true;
                }
                for (k, sub) in self.subs.iter_mut() {
                    if &k.0 == name {
                        sub.delete_requested = true;
                    }
                }
            }
            StorageRequest::Append(w) => self.write_out(w),
            StorageRequest::SaveSubscription(rec) => {
                let key = (rec.config.stream.clone(), rec.config.name.clone());
                self.sub_ids.insert(rec.id, key.clone());
                let delivery = self
                    .streams
                    .get(&key.0)
                    .map(|s| s.config.delivery)
                    .unwrap_or_default();
                let sub = self
                    .subs
                    .entry(key)
                    .or_insert_with(|| SubM::new(rec.config.clone(), delivery, true));
                sub.start_offsets = Some(rec.start_offsets.clone());
            }
            StorageRequest::DeleteSubscription(id) => {
                if let Some(k) = self.sub_ids.get(id)
                    && let Some(s) = self.subs.get_mut(k)
                {
                    s.delete_requested = true;
                    s.deleting = true;
                }
            }
            StorageRequest::SaveCursor(rec) => self.cursor_out(rec),
            _ => {}
        }
    }

    /// An append write: it must start at the committed heads and be dense, and must not
    /// write again an id committed within its dedup window.
    fn write_out(&mut self, w: &AppendWrite) {
        let max_wall = self.max_wall;
        let Some(s) = self.streams.get_mut(&w.stream) else {
            return;
        };
        let mut next: BTreeMap<u32, u64> = BTreeMap::new();
        let mut errors = Vec::new();
        for e in &w.events {
            let Some(&head) = s.heads.get(e.partition as usize) else {
                errors.push((
                    "offsets-dense",
                    format!("write to {} names partition {}", w.stream, e.partition),
                ));
                continue;
            };
            let n = next.entry(e.partition).or_insert(head);
            if e.offset != *n {
                errors.push((
                    "offsets-dense",
                    format!(
                        "write to {} puts partition {} offset {} where the next offset is {}",
                        w.stream, e.partition, e.offset, n
                    ),
                ));
            }
            *n = e.offset + 1;
            let old = s.events.get(&(e.partition, e.offset));
            if let Some(old) = old
                && old.confirmed
                && old.id != Some(e.event_id)
            {
                errors.push((
                    "offsets-dense",
                    format!(
                        "write to {} overwrites committed {}/{}",
                        w.stream, e.partition, e.offset
                    ),
                ));
            }
            let confirmed = old.is_some_and(|o| o.confirmed && o.id == Some(e.event_id));
            s.events.insert(
                (e.partition, e.offset),
                EvM {
                    id: Some(e.event_id),
                    digest: digest_event(e),
                    size: e.size() as u64,
                    confirmed,
                    content: Content::of_event(e),
                    ts: e.timestamp.0,
                    bytes: (e.payload.len() + e.key.as_ref().map_or(0, |k| k.len())) as u64,
                },
            );
        }
        for r in &w.dedup {
            let pos = Position {
                partition: r.partition,
                offset: r.offset,
            };
            if let Some(old) = s.ids.get(&r.event_id)
                && old.confirmed
                && old.pos != pos
                && old.expires_at.0 > max_wall
            {
                errors.push((
                    "dedup",
                    format!(
                        "{}: id {} committed at {}/{} (in the window until {}) is written again at {}/{} (wall now at most {})",
                        w.stream,
                        r.event_id,
                        old.pos.partition,
                        old.pos.offset,
                        old.expires_at.0,
                        pos.partition,
                        pos.offset,
                        max_wall
                    ),
                ));
            }
            s.copies.entry(r.event_id).or_default().insert(pos);
            let confirmed = s
                .ids
                .get(&r.event_id)
                .is_some_and(|o| o.confirmed && o.pos == pos);
            s.ids.insert(
                r.event_id,
                IdM {
                    pos,
                    expires_at: r.expires_at,
                    confirmed,
                },
            );
        }
        for (o, d) in errors {
            self.fail(o, d);
        }
    }

    /// A storage request succeeded.
    pub(super) fn storage_ok(&mut self, req: &StorageRequest, reply: &StorageReply) {
        match (req, reply) {
            (StorageRequest::Append(w), _) => {
                let Some(s) = self.streams.get_mut(&w.stream) else {
                    return;
                };
                for e in &w.events {
                    if let Some(m) = s.events.get_mut(&(e.partition, e.offset))
                        && m.id == Some(e.event_id)
                    {
                        m.confirmed = true;
                    }
                    if let Some(h) = s.heads.get_mut(e.partition as usize) {
                        *h = (*h).max(e.offset + 1);
                    }
                }
                for r in &w.dedup {
                    if let Some(m) = s.ids.get_mut(&r.event_id)
                        && m.pos.partition == r.partition
                        && m.pos.offset == r.offset
                    {
                        m.confirmed = true;
                    }
                }
            }
            (StorageRequest::DeleteStream(name), _) => self.drop_stream(name),
            (StorageRequest::DeleteSubscription(id), _) => {
                if let Some(k) = self.sub_ids.get(id).cloned() {
                    self.drop_sub(&k);
                }
            }
            (StorageRequest::SaveSubscription(rec), _) => {
                let key = (rec.config.stream.clone(), rec.config.name.clone());
                if let Some(sub) = self.subs.get_mut(&key) {
                    sub.exists = true;
                }
            }
            (StorageRequest::SaveCursor(rec), _) => {
                if let Some(k) = self.sub_ids.get(&rec.sub).cloned()
                    && let Some(sub) = self.subs.get_mut(&k)
                {
                    sub.part(rec.consumer.clone(), rec.partition).saved = Some(position_of(rec));
                }
            }
            (StorageRequest::Recover, StorageReply::Recovered(state)) => {
                self.generation_owners.clear();
                self.owned.clear();
                self.recovered(state)
            }
            _ => {}
        }
    }

    /// The state a new engine recovers from: everything committed must be in it.
    fn recovered(&mut self, state: &RecoveredState) {
        let mut errors = Vec::new();
        let names: std::collections::BTreeSet<StreamName> = state
            .streams
            .iter()
            .map(|s| s.config.name.clone())
            .collect();
        let lost: Vec<StreamName> = self
            .streams
            .iter()
            .filter(|(n, s)| !s.ephemeral() && !names.contains(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in lost {
            if let Some(s) = self.streams.get(&n)
                && !s.delete_requested
                && s.events.values().any(|e| e.confirmed)
            {
                errors.push((
                    "durable",
                    format!("stream {n} with committed events is gone after a restart"),
                ));
            }
            self.drop_stream(&n);
        }
        for rec in &state.streams {
            let s = self
                .streams
                .entry(rec.config.name.clone())
                .or_insert_with(|| StreamM::new(rec.config.clone()));
            for (p, h) in rec.heads.iter().enumerate() {
                if let Some(mine) = s.heads.get_mut(p) {
                    if h.next < *mine {
                        errors.push((
                            "durable",
                            format!(
                                "{} partition {p}: recovered head {} is below the committed head {}",
                                rec.config.name, h.next, mine
                            ),
                        ));
                    }
                    *mine = (*mine).max(h.next);
                }
                if let Some(f) = s.first.get_mut(p) {
                    *f = (*f).max(h.first);
                }
                if let Some(c) = s.cut_sent.get_mut(p) {
                    *c = (*c).max(h.first);
                }
            }
        }
        for rec in &state.subscriptions {
            let key = (rec.config.stream.clone(), rec.config.name.clone());
            self.sub_ids.insert(rec.id, key.clone());
            let delivery = self
                .streams
                .get(&key.0)
                .map(|s| s.config.delivery)
                .unwrap_or_default();
            let sub = self
                .subs
                .entry(key)
                .or_insert_with(|| SubM::new(rec.config.clone(), delivery, true));
            sub.start_offsets = Some(rec.start_offsets.clone());
            sub.exists = true;
        }
        for rec in &state.cursors {
            let Some(key) = self.sub_ids.get(&rec.sub).cloned() else {
                continue;
            };
            let Some(sub) = self.subs.get_mut(&key) else {
                continue;
            };
            let cp = sub.part(rec.consumer.clone(), rec.partition);
            let new = position_of(rec);
            if let Some(old) = &cp.saved
                && let Some(o) = lost_ack(&new, old)
            {
                errors.push((
                    "durable",
                    format!(
                        "{}/{} cursor {:?} partition {}: the recovered position (floor {}) lost the acknowledged offset {o}",
                        key.0, key.1, rec.consumer, rec.partition, rec.floor
                    ),
                ));
            }
            cp.saved = Some(new);
        }
        for (o, d) in errors {
            self.fail(o, d);
        }
    }

    /// A reply to a client command.
    pub(super) fn reply(&mut self, conn: ConnId, sent: Sent, reply: &Result<Reply, Error>) {
        self.holder_reply(&sent, reply);
        match (&sent.cmd, reply) {
            (Command::CreateStream(cfg), Ok(Reply::Done)) => {
                if cfg.delivery == DeliverySemantics::ExactlyOnce && cfg.dedup_window.is_zero() {
                    self.fail(
                        "exactly-once",
                        format!(
                            "{}: an exactly-once stream without a dedup window was created",
                            cfg.name
                        ),
                    );
                }
                self.streams
                    .entry(cfg.name.clone())
                    .or_insert_with(|| StreamM::new(cfg.clone()));
            }
            (Command::DeleteStream(name), Ok(Reply::Done)) => self.drop_stream(name),
            (
                Command::ReceiptStatus {
                    stream,
                    subscription,
                    consumer,
                    position,
                },
                Ok(Reply::ReceiptStatus(status)),
            ) => self.receipt_status_reply(
                &(stream.clone(), subscription.clone()),
                consumer,
                *position,
                status,
            ),
            (Command::DescribeStream(_), Ok(Reply::Stream(info))) => self.stream_info(info),
            (Command::RegisterSchema(reg), r) => self.register_reply(reg, r),
            (Command::ListSchemas, Ok(Reply::Schemas(list))) => self.schemas_listed(list),
            (Command::ListStreams, Ok(Reply::Streams(list))) => {
                for info in list {
                    self.stream_info(info);
                }
            }
            (Command::Append(a), r) => self.append_reply(a, r),
            (
                Command::Read {
                    stream,
                    partition,
                    from,
                    max,
                },
                r,
            ) => self.read_reply(stream, *partition, *from, *max, &sent.heads, r),
            (Command::CreateSubscription(cfg), Ok(Reply::Done)) => {
                let key = (cfg.stream.clone(), cfg.name.clone());
                if !self.subs.contains_key(&key)
                    && let Some(s) = self.streams.get(&cfg.stream)
                {
                    let sub = SubM::new(cfg.clone(), s.config.delivery, !s.ephemeral());
                    self.subs.insert(key.clone(), sub);
                }
                if let Some(sub) = self.subs.get_mut(&key) {
                    sub.exists = true;
                }
            }
            (
                Command::DeleteSubscription {
                    stream,
                    subscription,
                },
                Ok(Reply::Done),
            ) => self.drop_sub(&(stream.clone(), subscription.clone())),
            (
                Command::DescribeSubscription {
                    stream,
                    subscription,
                },
                Ok(Reply::Subscription(info)),
            ) => self.sub_info(stream, subscription, info),
            (
                Command::Attach {
                    stream,
                    subscription,
                    consumer,
                    max_in_flight,
                },
                Ok(Reply::Done),
            ) => {
                // The engine answers an attach before it delivers anything to it (also for
                // attaches held during recovery, answered in the order they came).
                let key = ((stream.clone(), subscription.clone()), consumer.clone());
                let max_in_flight = max_in_flight.unwrap_or(self.cfg.default_max_in_flight);
                self.joined(&key);
                self.attached.insert(
                    key,
                    super::model::Attachment {
                        conn,
                        max_in_flight,
                    },
                );
            }
            (
                Command::Ack {
                    stream,
                    subscription,
                    consumer,
                    positions,
                },
                r,
            ) => self.ack_reply(stream, subscription, consumer, positions, sent.epoch, r),
            (
                Command::ResetSubscription {
                    stream,
                    subscription,
                    consumer,
                    ..
                },
                _,
            ) => self.reset_done(stream, subscription, consumer.as_ref()),
            (
                Command::Replay {
                    stream,
                    from,
                    options,
                },
                Ok(Reply::ReplayStarted(id)),
            ) => self.replay_started(conn, *id, stream, from.clone(), options, sent.heads),
            (Command::CancelReplay(id), Ok(Reply::Done)) => {
                self.replays.remove(id);
            }
            _ => {}
        }
    }

    fn stream_info(&mut self, info: &StreamInfo) {
        let name = info.config.name.clone();
        let Some(s) = self.streams.get_mut(&name) else {
            return;
        };
        if s.delete_requested {
            return;
        }
        let mut errors = Vec::new();
        if info.partitions.len() != s.heads.len() {
            errors.push((
                "durable",
                format!(
                    "{name}: {} partitions described, {} configured",
                    info.partitions.len(),
                    s.heads.len()
                ),
            ));
        }
        for (p, (part, head)) in info.partitions.iter().zip(s.heads.iter()).enumerate() {
            if part.next != *head {
                errors.push((
                    "durable",
                    format!("{name} partition {p}: described next offset {} but the committed head is {head}", part.next),
                ));
            }
            if !s.ephemeral() {
                let known = s.first.get(p).copied().unwrap_or(0);
                let asked = s.cut_sent.get(p).copied().unwrap_or(0);
                if part.first < known || part.first > asked.max(known) || part.first > part.next {
                    errors.push((
                        "retention-prefix",
                        format!(
                            "{name} partition {p}: first offset {} where retention kept from {known} (asked up to {asked}), next {}",
                            part.first, part.next
                        ),
                    ));
                }
            }
        }
        if let (tributary_core::StreamKind::Ephemeral(l), Some(part)) =
            (s.config.kind, info.partitions.first())
        {
            let held = part.next.saturating_sub(part.first);
            if held > l.max_events {
                errors.push((
                    "ephemeral-bounds",
                    format!(
                        "{name} holds {held} events, over max_events {}",
                        l.max_events
                    ),
                ));
            }
            let sizes: Option<u64> = (part.first..part.next)
                .map(|o| s.events.get(&(0, o)).map(|e| e.size))
                .sum();
            if let Some(bytes) = sizes
                && bytes > l.max_bytes
            {
                errors.push((
                    "ephemeral-bounds",
                    format!("{name} holds {bytes} bytes, over max_bytes {}", l.max_bytes),
                ));
            }
            if part.first < s.first_seen {
                errors.push((
                    "ephemeral-bounds",
                    format!(
                        "{name}: first offset went back from {} to {}",
                        s.first_seen, part.first
                    ),
                ));
            }
            s.first_seen = s.first_seen.max(part.first);
        }
        for (o, d) in errors {
            self.fail(o, d);
        }
    }

    fn append_reply(&mut self, a: &AppendRequest, r: &Result<Reply, Error>) {
        let wall = self.now.wall;
        let max_wall = self.max_wall;
        let Some(s) = self.streams.get_mut(&a.stream) else {
            return;
        };
        if s.delete_requested {
            return;
        }
        let dedup_on = !s.config.dedup_window.is_zero();
        let partitions = s.config.partitions;
        let mut errors: Vec<(&'static str, String)> = Vec::new();
        // SPEC 5: every event appended to an exactly-once stream carries its producer's id.
        let anonymous = a.events.iter().any(|e| e.event_id.is_none());
        let exactly_once = s.config.delivery == DeliverySemantics::ExactlyOnce;
        match r {
            Ok(Reply::Appended(_)) if exactly_once && anonymous => errors.push((
                "exactly-once",
                format!(
                    "{}: an append with an event without a producer id was taken by an exactly-once stream",
                    a.stream
                ),
            )),
            Err(Error::Invalid(InvalidInput::Conflict {
                field: "event_id", ..
            })) if !(exactly_once && anonymous) => errors.push((
                "exactly-once",
                format!(
                    "{}: an append was refused for a missing event id, though {}",
                    a.stream,
                    if exactly_once {
                        "every event had one"
                    } else {
                        "the stream is not exactly-once"
                    }
                ),
            )),
            _ => {}
        }
        match r {
            Ok(Reply::Appended(outs)) => {
                if outs.len() != a.events.len() {
                    errors.push((
                        "append-committed",
                        format!(
                            "{}: {} outcomes for {} events",
                            a.stream,
                            outs.len(),
                            a.events.len()
                        ),
                    ));
                }
                let mut first_appended = None;
                for (e, out) in a.events.iter().zip(outs) {
                    match out {
                        AppendOutcome::Appended(pos) => {
                            first_appended.get_or_insert(*pos);
                            append_one(s, &a.stream, e, *pos, partitions, dedup_on, wall, max_wall, &mut errors);
                        }
                        AppendOutcome::Duplicate { original } => {
                            match e.event_id {
                                Some(id) if dedup_on => match s.ids.get(&id) {
                                    Some(_) if s.copies.get(&id).is_some_and(|c| c.contains(original)) => {}
                                    Some(m) => errors.push(("dedup", format!(
                                        "{}: id {id} answered Duplicate of {}/{} but was written at {}/{}",
                                        a.stream, original.partition, original.offset, m.pos.partition, m.pos.offset
                                    ))),
                                    None => errors.push(("dedup", format!(
                                        "{}: id {id} answered Duplicate of {}/{} but was never written",
                                        a.stream, original.partition, original.offset
                                    ))),
                                },
                                _ => errors.push(("dedup", format!(
                                    "{}: an event without a producer id (or with dedup off) answered Duplicate of {}/{}",
                                    a.stream, original.partition, original.offset
                                ))),
                            }
                        }
                    }
                }
                if let (Some(x), Some(pos)) = (a.expected_offset, first_appended)
                    && pos.offset != x
                {
                    errors.push((
                        "expected-offset",
                        format!(
                            "{}: appended at {}/{} though expected_offset was {x}",
                            a.stream, pos.partition, pos.offset
                        ),
                    ));
                }
            }
            Err(Error::WrongExpectedOffset {
                expected, actual, ..
            }) if Some(*expected) != a.expected_offset || expected == actual => {
                errors.push((
                        "expected-offset",
                        format!("{}: WrongExpectedOffset {{ expected {expected}, actual {actual} }} for expected_offset {:?}", a.stream, a.expected_offset),
                    ));
            }
            _ => {}
        }
        for (o, d) in errors {
            self.fail(o, d);
        }
    }

    fn read_reply(
        &mut self,
        stream: &StreamName,
        partition: u32,
        from: u64,
        max: u32,
        heads: &[u64],
        r: &Result<Reply, Error>,
    ) {
        let Some(s) = self.streams.get(stream) else {
            return;
        };
        if s.delete_requested {
            return;
        }
        let mut errors = Vec::new();
        match r {
            Ok(Reply::Events(evs)) => {
                if evs.len() > max as usize {
                    errors.push((
                        "readable",
                        format!("{stream}: read of {max} returned {}", evs.len()),
                    ));
                }
                for (i, e) in evs.iter().enumerate() {
                    if e.offset != from + i as u64
                        || e.partition != partition
                        || &e.stream != stream
                    {
                        errors.push((
                            "readable",
                            format!(
                                "{stream}/{partition} read from {from}: item {i} is {}/{}/{}",
                                e.stream, e.partition, e.offset
                            ),
                        ));
                        break;
                    }
                    if let Some(d) = mismatch(s, e) {
                        errors.push(("readable", d));
                    }
                }
                // What a truncation may have removed (even one not confirmed) is not required.
                let cut = s.cut_sent.get(partition as usize).copied().unwrap_or(0);
                if !s.ephemeral()
                    && let Some(&h) = heads.get(partition as usize)
                    && from < h
                    && from >= cut
                {
                    let want = (h - from).min(u64::from(max));
                    if (evs.len() as u64) < want {
                        errors.push(("readable", format!(
                            "{stream}/{partition}: a read from {from} returned {} events, but {want} were committed there",
                            evs.len()
                        )));
                    }
                }
            }
            Err(Error::Truncated { first_available })
                if !s.ephemeral()
                    && (from >= *first_available
                        || *first_available
                            > s.cut_sent.get(partition as usize).copied().unwrap_or(0)) =>
            {
                errors.push(("retention-prefix", format!(
                    "{stream}/{partition}: read from {from} answered Truncated (first {first_available}), retention asked to keep from {:?}",
                    s.cut_sent.get(partition as usize)
                )));
            }
            _ => {}
        }
        for (o, d) in errors {
            self.fail(o, d);
        }
    }

    /// Checks an event the engine sent against what the model knows at its position; with a
    /// reader (deliveries, replays), as shaped to the versions it asks for (oracle `upcast`).
    pub(super) fn check_content(
        &mut self,
        oracle: &'static str,
        e: &Event,
        reader: Option<&Reader>,
    ) {
        let Some(s) = self.streams.get(&e.stream).filter(|s| !s.delete_requested) else {
            return;
        };
        let found = match (reader, s.events.get(&(e.partition, e.offset))) {
            (Some(r), Some(m)) if m.id.is_none_or(|id| id == e.event_id) => self
                .shape_mismatch(&m.content, m.digest, e, r)
                .map(|d| ("upcast", d)),
            _ => mismatch(s, e).map(|d| (oracle, d)),
        };
        if let Some((o, d)) = found {
            self.fail(o, d);
        }
    }
}

/// How `e` differs from the event the model knows at its position, if it does.
fn mismatch(s: &StreamM, e: &Event) -> Option<String> {
    let m = s.events.get(&(e.partition, e.offset))?;
    if m.id.is_some_and(|id| id != e.event_id) || m.digest != digest_event(e) {
        return Some(format!(
            "{}/{}/{}: event {} differs from the one written there ({:?})",
            e.stream, e.partition, e.offset, e.event_id, m.id
        ));
    }
    None
}

/// Checks one event answered `Appended` at `pos`.
#[allow(clippy::too_many_arguments)]
fn append_one(
    s: &mut StreamM,
    stream: &StreamName,
    e: &NewEvent,
    pos: Position,
    partitions: u32,
    dedup_on: bool,
    wall: tributary_core::UnixMillis,
    max_wall: u64,
    errors: &mut Vec<(&'static str, String)>,
) {
    if pos.partition >= partitions {
        errors.push((
            "append-committed",
            format!(
                "{stream}: appended to partition {} of {partitions}",
                pos.partition
            ),
        ));
        return;
    }
    if let Some(k) = &e.key
        && partition_of_key(k, partitions) != pos.partition
    {
        errors.push((
            "append-committed",
            format!(
                "{stream}: a keyed event went to partition {}, its key maps to {}",
                pos.partition,
                partition_of_key(k, partitions)
            ),
        ));
    }
    if s.ephemeral() {
        let head = s.heads[0];
        if pos.offset != head {
            errors.push((
                "offsets-dense",
                format!(
                    "{stream}: ephemeral append at {} where the next offset is {head}",
                    pos.offset
                ),
            ));
        }
        s.heads[0] = head.max(pos.offset + 1);
        if let Some(id) = e.event_id
            && dedup_on
        {
            if let Some(old) = s.ids.get(&id)
                && old.expires_at.0 > max_wall
            {
                errors.push((
                    "dedup",
                    format!(
                        "{stream}: id {id} appended at {} within the window of its copy at {}",
                        pos.offset, old.pos.offset
                    ),
                ));
            }
            s.copies.entry(id).or_default().insert(pos);
            s.ids.insert(
                id,
                IdM {
                    pos,
                    expires_at: wall.saturating_add(s.config.dedup_window),
                    confirmed: true,
                },
            );
        }
        s.events.insert(
            (0, pos.offset),
            EvM {
                id: e.event_id,
                digest: digest_new(e),
                size: e.size() as u64,
                confirmed: true,
                content: Content::of_new(e),
                ts: 0,
                bytes: (e.payload.len() + e.key.as_ref().map_or(0, |k| k.len())) as u64,
            },
        );
        return;
    }
    match s.events.get(&(pos.partition, pos.offset)) {
        None => errors.push((
            "append-committed",
            format!(
                "{stream}: answered Appended at {}/{}, where nothing was written",
                pos.partition, pos.offset
            ),
        )),
        Some(m) => {
            if !m.confirmed {
                errors.push((
                    "append-committed",
                    format!(
                        "{stream}: answered Appended at {}/{} before the store committed it",
                        pos.partition, pos.offset
                    ),
                ));
            }
            if m.digest != digest_new(e) || e.event_id.is_some_and(|id| m.id != Some(id)) {
                errors.push((
                    "append-committed",
                    format!(
                        "{stream}: answered Appended at {}/{}, where another event was written",
                        pos.partition, pos.offset
                    ),
                ));
            }
        }
    }
}
