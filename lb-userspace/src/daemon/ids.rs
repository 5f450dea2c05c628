//! Allocation of the dataplane's numbers: a service's slot (its VIPS index and ring) and a real's id (its REALS
//! entry). Real ids are reused as late as possible: flows pinned to a removed real keep using its entry until
//! they end, so the oldest-freed id goes first.

use std::collections::{BTreeSet, VecDeque};

#[derive(Clone, Debug)]
pub struct Ids {
    /// Free real ids, oldest-freed first. Id 0 is reserved: it means "no real" in rings and the connection table.
    free_reals: VecDeque<u32>,
    /// Free service slots; the lowest is taken first so the maps stay dense.
    free_slots: BTreeSet<u32>,
    /// Free per-(service, real) counter slots (DEST_STATS); 0 means "not counted".
    free_dests: BTreeSet<u32>,
}

impl Ids {
    pub fn new(max_services: u32, max_reals: u32) -> Self {
        Ids {
            free_reals: (1..max_reals).collect(),
            free_slots: (0..max_services).collect(),
            free_dests: (1..lb_common::MAX_DESTS).collect(),
        }
    }

    /// Takes the lowest free slot.
    pub fn take_slot(&mut self) -> Option<u32> {
        self.free_slots.pop_first()
    }

    /// Takes a given slot (one an earlier lbd used); false when it is not free.
    pub fn reserve_slot(&mut self, slot: u32) -> bool {
        self.free_slots.remove(&slot)
    }

    pub fn release_slot(&mut self, slot: u32) {
        self.free_slots.insert(slot);
    }

    /// Takes the id freed longest ago.
    pub fn take_real(&mut self) -> Option<u32> {
        self.free_reals.pop_front()
    }

    /// Frees an id; it is reused only after every id freed before it.
    pub fn release_real(&mut self, id: u32) {
        self.free_reals.push_back(id);
    }

    /// Takes the ids an earlier lbd used (`in_use`), then queues the `unwanted` ones among them, whose reals are
    /// gone but whose flows may still hold them, to be reused last.
    pub fn reserve_reals(&mut self, in_use: &BTreeSet<u32>, unwanted: &BTreeSet<u32>) {
        self.free_reals.retain(|i| !in_use.contains(i));
        self.free_reals.extend(unwanted.iter().copied());
    }

    /// Takes a counter slot for a (service, real) pair; None when all are taken (the pair is then not counted).
    pub fn take_dest(&mut self) -> Option<u32> {
        self.free_dests.pop_first()
    }

    pub fn release_dest(&mut self, dest: u32) {
        if dest != 0 {
            self.free_dests.insert(dest);
        }
    }

    pub fn free_slots(&self) -> usize {
        self.free_slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_go_lowest_first_and_come_back() {
        let mut ids = Ids::new(3, 8);
        assert_eq!((ids.take_slot(), ids.take_slot()), (Some(0), Some(1)));
        ids.release_slot(0);
        assert_eq!(ids.take_slot(), Some(0));
        assert!(ids.reserve_slot(2));
        assert_eq!(ids.take_slot(), None, "three slots, all taken");
        assert_eq!(ids.free_slots(), 0);
    }

    #[test]
    fn a_slot_is_reserved_only_when_free() {
        let mut ids = Ids::new(4, 8);
        assert!(ids.reserve_slot(3));
        assert!(!ids.reserve_slot(3), "taken already");
        assert!(!ids.reserve_slot(9), "beyond the limit");
        assert_eq!(ids.take_slot(), Some(0));
    }

    #[test]
    fn real_ids_skip_zero_and_are_reused_oldest_freed_first() {
        let mut ids = Ids::new(1, 5);
        let taken: Vec<u32> = (0..4).map(|_| ids.take_real().unwrap()).collect();
        assert_eq!(taken, vec![1, 2, 3, 4], "id 0 means no real");
        assert_eq!(ids.take_real(), None);
        ids.release_real(3);
        ids.release_real(1);
        assert_eq!(ids.take_real(), Some(3), "freed first, reused first");
        assert_eq!(ids.take_real(), Some(1));
    }

    #[test]
    fn adopted_ids_are_reserved_and_unwanted_ones_reused_last() {
        let mut ids = Ids::new(1, 6);
        let in_use: BTreeSet<u32> = [1, 2, 4].into();
        ids.reserve_reals(&in_use, &[2].into());
        let order: Vec<u32> = std::iter::from_fn(|| ids.take_real()).collect();
        assert_eq!(order, vec![3, 5, 2], "1 and 4 stay with their reals; 2 (gone from the config) comes last");
    }
}
