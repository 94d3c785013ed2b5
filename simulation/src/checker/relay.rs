//! The cross-service relay in the model (SPEC 9).

use super::Checker;
use tributary_core::StreamName;

impl Checker {
    /// Offsets below `before` of a cross-service stream the broker has not confirmed.
    pub(super) fn unrelayed_below(
        &self,
        _stream: &StreamName,
        _partition: u32,
        _before: u64,
    ) -> Option<String> {
        None
    }
}
