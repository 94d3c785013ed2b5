//! Planted bugs (feature `planted-bugs`, test-only). Each variant breaks one rule of the
//! core, so the simulator's tests can show that some oracle catches it. Without the feature
//! this module and every hook (marked `PLANTED BUG` in the source) are not compiled at all.

use std::fmt;
use std::str::FromStr;

/// One rule of the core, broken on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlantedBug {
    /// Appends skip the dedup check: a retried producer id is written again.
    SkipDedup,
    /// An ack is answered as acknowledged, but the position is neither advanced nor saved.
    ForgetAck,
    /// An append whose write ended `Unknown` is answered as a success without repeating it.
    LoseUnknownAppend,
    /// `ordered_by_key` is ignored: events of one key are delivered while another is pending.
    IgnoreKeyOrder,
    /// Saved positions put the ack floor one below the first pending event.
    FloorMovesBack,
    /// Recovery forgets the acknowledged offsets above the ack floor, so they are redelivered.
    RedeliverAcked,
    /// Ephemeral streams take every append, over their `max_events` / `max_bytes`.
    EphemeralOverflow,
    /// Replays ignore `max_events_per_second`.
    IgnoreReplayRate,
    /// Appends ignore `expected_offset`.
    IgnoreExpectedOffset,
    /// A write that definitely failed still moves the heads, leaving a hole in the offsets.
    HoleAfterFailedWrite,
    /// `MarkRead` up to an offset marks that offset read even if it was never delivered.
    ReadUndelivered,
    /// Marking an unread receipt read leaves the unread count as it was.
    UnreadKeptOnRead,
    /// An unread timeout arms itself again after it fires (twice per delivery).
    UnreadTimeoutTwice,
    /// Recovery loads every receipt as unread.
    ReceiptsForgetReads,
    /// `RegisterSchema` is answered before the version is saved.
    RegisterSchemaUnsaved,
    /// Recovery ignores the schema versions the store gives back.
    SchemasNotRecovered,
    /// Upcasting over two hops or more skips the first hop.
    UpcastSkipsHop,
    /// Retention removes one event more than a limit allows.
    RetentionOffByOne,
    /// A retention cut of everything goes one past the head (a hole before the next event).
    RetentionPastHead,
    /// Retention ignores `keep_unconsumed`.
    RetentionIgnoresUnconsumed,
    /// The relay skips an event now and then.
    RelaySkipsEvent,
    /// A failed publish moves the relay position as a confirm would.
    RelayAdvancesBeforeConfirm,
    /// A nack or term from any consumer settles an event in flight to another.
    NonHolderNack,
    /// A consumer group member's session never times out.
    SessionExpiryIgnored,
    /// The schema compatibility check drops the top-level field of a rename from a dotted
    /// path (`rename address.city -> city` loses `address`): a compatible version is refused.
    RenameDropsParent,
}

impl PlantedBug {
    /// Every planted bug.
    pub const ALL: [PlantedBug; 25] = [
        PlantedBug::SkipDedup,
        PlantedBug::ForgetAck,
        PlantedBug::LoseUnknownAppend,
        PlantedBug::IgnoreKeyOrder,
        PlantedBug::FloorMovesBack,
        PlantedBug::RedeliverAcked,
        PlantedBug::EphemeralOverflow,
        PlantedBug::IgnoreReplayRate,
        PlantedBug::IgnoreExpectedOffset,
        PlantedBug::HoleAfterFailedWrite,
        PlantedBug::ReadUndelivered,
        PlantedBug::UnreadKeptOnRead,
        PlantedBug::UnreadTimeoutTwice,
        PlantedBug::ReceiptsForgetReads,
        PlantedBug::RegisterSchemaUnsaved,
        PlantedBug::SchemasNotRecovered,
        PlantedBug::UpcastSkipsHop,
        PlantedBug::RetentionOffByOne,
        PlantedBug::RetentionPastHead,
        PlantedBug::RetentionIgnoresUnconsumed,
        PlantedBug::RelaySkipsEvent,
        PlantedBug::RelayAdvancesBeforeConfirm,
        PlantedBug::NonHolderNack,
        PlantedBug::SessionExpiryIgnored,
        PlantedBug::RenameDropsParent,
    ];

    /// Its command-line name, e.g. `skip-dedup`.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::SkipDedup => "skip-dedup",
            PlantedBug::ForgetAck => "forget-ack",
            PlantedBug::LoseUnknownAppend => "lose-unknown-append",
            PlantedBug::IgnoreKeyOrder => "ignore-key-order",
            PlantedBug::FloorMovesBack => "floor-moves-back",
            PlantedBug::RedeliverAcked => "redeliver-acked",
            PlantedBug::EphemeralOverflow => "ephemeral-overflow",
            PlantedBug::IgnoreReplayRate => "ignore-replay-rate",
            PlantedBug::IgnoreExpectedOffset => "ignore-expected-offset",
            PlantedBug::HoleAfterFailedWrite => "hole-after-failed-write",
            PlantedBug::ReadUndelivered => "read-undelivered",
            PlantedBug::UnreadKeptOnRead => "unread-kept-on-read",
            PlantedBug::UnreadTimeoutTwice => "unread-timeout-twice",
            PlantedBug::ReceiptsForgetReads => "receipts-forget-reads",
            PlantedBug::RegisterSchemaUnsaved => "register-schema-unsaved",
            PlantedBug::SchemasNotRecovered => "schemas-not-recovered",
            PlantedBug::UpcastSkipsHop => "upcast-skips-hop",
            PlantedBug::RetentionOffByOne => "retention-off-by-one",
            PlantedBug::RetentionPastHead => "retention-past-head",
            PlantedBug::RetentionIgnoresUnconsumed => "retention-ignores-unconsumed",
            PlantedBug::RelaySkipsEvent => "relay-skips-event",
            PlantedBug::RelayAdvancesBeforeConfirm => "relay-advances-before-confirm",
            PlantedBug::NonHolderNack => "non-holder-nack",
            PlantedBug::SessionExpiryIgnored => "session-expiry-ignored",
            PlantedBug::RenameDropsParent => "rename-drops-parent",
        }
    }
}

impl fmt::Display for PlantedBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PlantedBug {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PlantedBug::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("unknown planted bug {s:?}"))
    }
}
