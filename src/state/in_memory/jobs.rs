//! The in-memory store's records: a dense arena of slots, and a B-tree from id to position.
//!
//! A `BTreeMap<JobId, Slot>` keeps each record inside its tree nodes; ids are time-ordered
//! (UUIDv7), so nearly every insert lands at the right edge, where a full node splits and
//! keeps its left half about 55% full for good: a quarter-kilobyte record then costs about
//! 1.8 times its size. Here the tree holds only `id -> position` (20 bytes an entry) and the
//! records sit packed in one vector, so a queued job costs its record and a few dozen bytes.
//! Positions of removed records are reused; when most of the arena is free it is compacted,
//! so memory follows the jobs kept, not the most ever kept.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::ops::RangeBounds;

use crate::job::JobId;

use super::Slot;

/// Records by id: see the module documentation.
#[derive(Default)]
pub(super) struct Jobs {
    index: BTreeMap<JobId, u32>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
}

/// Room for a new record, from [`Jobs::vacant`].
pub(super) struct Vacant<'a> {
    entry: std::collections::btree_map::VacantEntry<'a, JobId, u32>,
    slots: &'a mut Vec<Option<Slot>>,
    free: &'a mut Vec<u32>,
}

impl<'a> Vacant<'a> {
    /// Store `slot` and return it.
    pub(super) fn insert(self, slot: Slot) -> &'a mut Slot {
        let Self { entry, slots, free } = self;
        let at = match free.pop() {
            Some(at) => at,
            None => {
                slots.push(None);
                // `Jobs::has_room` keeps the count within u32.
                u32::try_from(slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        entry.insert(at);
        slots[at as usize].insert(slot)
    }
}

impl Jobs {
    /// Whether `more` records fit (positions are 32-bit: about four billion records).
    pub(super) fn has_room(&self, more: usize) -> bool {
        self.index
            .len()
            .checked_add(more)
            .is_some_and(|n| n < u32::MAX as usize)
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    fn at(&self, at: u32) -> Option<&Slot> {
        self.slots.get(at as usize).and_then(Option::as_ref)
    }

    pub(super) fn get(&self, id: &JobId) -> Option<&Slot> {
        self.index.get(id).and_then(|&at| self.at(at))
    }

    pub(super) fn get_mut(&mut self, id: &JobId) -> Option<&mut Slot> {
        let at = *self.index.get(id)?;
        self.slots.get_mut(at as usize).and_then(Option::as_mut)
    }

    /// Room for `id`, or `None` when a record with that id is kept already. Check
    /// [`has_room`](Self::has_room) first.
    pub(super) fn vacant(&mut self, id: JobId) -> Option<Vacant<'_>> {
        match self.index.entry(id) {
            Entry::Occupied(_) => None,
            Entry::Vacant(entry) => Some(Vacant {
                entry,
                slots: &mut self.slots,
                free: &mut self.free,
            }),
        }
    }

    pub(super) fn remove(&mut self, id: &JobId) -> Option<Slot> {
        let at = self.index.remove(id)?;
        let slot = self.slots.get_mut(at as usize).and_then(Option::take);
        self.free.push(at);
        self.compact_if_sparse();
        slot
    }

    /// Records in id order.
    pub(super) fn values(&self) -> impl DoubleEndedIterator<Item = &Slot> {
        self.index.values().filter_map(|&at| self.at(at))
    }

    /// Records in id order, mutably.
    pub(super) fn for_each_mut(&mut self, mut f: impl FnMut(&mut Slot)) {
        for &at in self.index.values() {
            if let Some(slot) = self.slots.get_mut(at as usize).and_then(Option::as_mut) {
                f(slot);
            }
        }
    }

    /// Records whose ids fall in `range`, in id order.
    pub(super) fn range(
        &self,
        range: impl RangeBounds<JobId>,
    ) -> impl DoubleEndedIterator<Item = &Slot> {
        self.index.range(range).filter_map(|(_, &at)| self.at(at))
    }

    /// When over half the arena is free (and it is not small), move the records to the front
    /// in id order and give the rest back.
    fn compact_if_sparse(&mut self) {
        let len = self.slots.len();
        if len < 4096 || self.free.len() * 2 < len {
            return;
        }
        let mut packed = Vec::with_capacity(self.index.len());
        for (next, at) in self.index.values_mut().enumerate() {
            packed.push(self.slots.get_mut(*at as usize).and_then(Option::take));
            // (fewer records than before, so within u32)
            *at = u32::try_from(next).unwrap_or(u32::MAX);
        }
        self.slots = packed;
        self.free = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewJob;
    use crate::job::JobRecord;

    fn slot(id: JobId) -> Slot {
        let mut record = JobRecord::from_new(NewJob::new("k"), 3, chrono::Utc::now());
        record.id = id;
        Slot::from_record(
            record,
            std::sync::Arc::from("k"),
            std::sync::Arc::from("default"),
            0,
        )
    }

    #[test]
    fn records_are_found_by_id_in_id_order_and_positions_are_reused() {
        let mut jobs = Jobs::default();
        let ids: Vec<JobId> = (0..10).map(|_| JobId::new()).collect();
        for id in &ids {
            jobs.vacant(*id).expect("new id").insert(slot(*id));
        }
        assert!(
            jobs.vacant(ids[3]).is_none(),
            "an id kept already has no room"
        );
        assert_eq!(jobs.len(), 10);
        assert!(jobs.remove(&ids[3]).is_some());
        assert!(jobs.get(&ids[3]).is_none());
        let other = JobId::new();
        jobs.vacant(other).expect("new id").insert(slot(other));
        assert_eq!(jobs.slots.len(), 10, "the freed position was reused");
        let mut expected: Vec<JobId> = ids.iter().copied().filter(|id| *id != ids[3]).collect();
        expected.push(other);
        let got: Vec<JobId> = jobs.values().map(|s| s.id).collect();
        assert_eq!(got, expected);
        let back: Vec<JobId> = jobs.values().rev().map(|s| s.id).collect();
        assert_eq!(back, expected.iter().rev().copied().collect::<Vec<_>>());
        let after: Vec<JobId> = jobs.range(ids[5]..).map(|s| s.id).collect();
        assert_eq!(after, expected[4..].to_vec());
    }

    #[test]
    fn a_mostly_free_arena_is_compacted_and_keeps_every_record() {
        let mut jobs = Jobs::default();
        let ids: Vec<JobId> = (0..10_000).map(|_| JobId::new()).collect();
        for id in &ids {
            jobs.vacant(*id).expect("new id").insert(slot(*id));
        }
        for id in ids.iter().step_by(3).chain(ids.iter().skip(1).step_by(3)) {
            assert!(jobs.remove(id).is_some());
        }
        let kept: Vec<JobId> = ids.iter().copied().skip(2).step_by(3).collect();
        assert!(
            jobs.slots.len() < 10_000,
            "compacted: {} positions",
            jobs.slots.len()
        );
        assert_eq!(jobs.values().map(|s| s.id).collect::<Vec<_>>(), kept);
        for id in &kept {
            assert_eq!(jobs.get(id).map(|s| s.id), Some(*id));
        }
    }
}
