//! [`OfflineLog`]: the decisions the gate took alone, waiting to be uploaded.
//!
//! A ring of `N` entries in decision order (so in increasing `gate_seq`). When it is full,
//! a new decision pushes out the oldest one and [`OfflineLog::dropped`] counts it: the
//! newest decisions are the ones an investigation of a current incident needs, and the
//! count tells the hub (through the board's diagnostics) that history was lost. Entries
//! leave the ring otherwise only through [`OfflineLog::acknowledge`], when the hub has
//! stored them.

use gatehouse_gate_proto::{OfflineEntry, MAX_OFFLINE_ENTRIES};
use heapless::{Deque, Vec};

#[derive(Debug, Clone)]
pub struct OfflineLog<const N: usize> {
    entries: Deque<OfflineEntry, N>,
    dropped: u32,
}

impl<const N: usize> Default for OfflineLog<N> {
    fn default() -> Self {
        OfflineLog::new()
    }
}

impl<const N: usize> OfflineLog<N> {
    pub const fn new() -> OfflineLog<N> {
        OfflineLog {
            entries: Deque::new(),
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries pushed out unsent because the log was full.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// Appends an entry, pushing out the oldest if full.
    pub fn push(&mut self, entry: OfflineEntry) {
        if self.entries.is_full() {
            self.entries.pop_front();
            self.dropped = self.dropped.saturating_add(1);
        }
        // Room was made above (unless N is 0, where nothing can be kept).
        if self.entries.push_back(entry).is_err() {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// The `gate_seq` of the last entry of the next batch (the oldest
    /// [`MAX_OFFLINE_ENTRIES`]), or `None` if the log is empty.
    pub fn next_batch_end(&self) -> Option<u32> {
        let last = self.entries.len().min(MAX_OFFLINE_ENTRIES).checked_sub(1)?;
        self.entries.get(last).map(|e| e.gate_seq)
    }

    /// The oldest entries up to and including `gate_seq` `end`, at most a batch of them.
    pub fn batch_up_to(&self, end: u32) -> Vec<OfflineEntry, MAX_OFFLINE_ENTRIES> {
        let mut out = Vec::new();
        for e in self.entries.iter().take_while(|e| e.gate_seq <= end) {
            if out.push(*e).is_err() {
                break;
            }
        }
        out
    }

    /// Removes the entries up to and including `gate_seq` `end` (the hub stored them);
    /// returns how many.
    pub fn acknowledge(&mut self, end: u32) -> usize {
        let mut n = 0;
        while self.entries.pop_front_if(|e| e.gate_seq <= end).is_some() {
            n += 1;
        }
        n
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &OfflineEntry> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_gate_proto::{CardId, Reason};

    fn entry(gate_seq: u32) -> OfflineEntry {
        OfflineEntry {
            gate_seq,
            time: 0,
            card: CardId::new(&[1]).unwrap(),
            reason: Reason::OfflineDenied,
        }
    }

    #[test]
    fn full_log_keeps_the_newest_and_counts() {
        let mut log = OfflineLog::<3>::new();
        for s in 1..=5 {
            log.push(entry(s));
        }
        let seqs: std::vec::Vec<u32> = log.iter().map(|e| e.gate_seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(log.dropped(), 2);
    }

    #[test]
    fn batches_are_the_oldest_sixteen_and_ack_removes_them() {
        let mut log = OfflineLog::<40>::new();
        for s in 10..50 {
            log.push(entry(s));
        }
        let end = log.next_batch_end().unwrap();
        assert_eq!(end, 25);
        let batch = log.batch_up_to(end);
        assert_eq!(batch.len(), 16);
        assert_eq!(batch.first().unwrap().gate_seq, 10);
        assert_eq!(log.acknowledge(end), 16);
        assert_eq!(
            log.acknowledge(end),
            0,
            "a second ack of the same batch is harmless"
        );
        assert_eq!(log.len(), 24);
        assert_eq!(log.next_batch_end(), Some(41));
    }
}
