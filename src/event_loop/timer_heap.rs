//! The timer heap: a min-heap ordered by deadline, then by insertion order so timers
//! with the same deadline fire in the order they were scheduled (asyncio does the same
//! through `heapq` on `TimerHandle`s and a stable tie-break).
//!
//! Cancelled timers stay in the heap (removing from the middle of a heap is O(n)); they
//! are skipped when they reach the top, and the heap is rebuilt without them once they
//! are more than half of it (asyncio's policy, which bounds memory held by cancelled
//! timers such as long timeouts that were cancelled).
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Rebuild only above this many cancelled entries, so a small heap never churns.
pub(crate) const MIN_CANCELLED_FOR_COMPACTION: usize = 100;

struct Entry<T> {
    when: f64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    // Reversed so that std's max-heap yields the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .when
            .total_cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

pub(crate) struct TimerHeap<T> {
    heap: BinaryHeap<Entry<T>>,
    next_seq: u64,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<T> TimerHeap<T> {
    pub(crate) fn push(&mut self, when: f64, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { when, seq, item });
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Deadline of the earliest timer.
    pub(crate) fn peek_when(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.when)
    }

    pub(crate) fn peek(&self) -> Option<&T> {
        self.heap.peek().map(|e| &e.item)
    }

    /// Removes the earliest timer if its deadline is at or before `deadline`.
    pub(crate) fn pop_due(&mut self, deadline: f64) -> Option<T> {
        if self.heap.peek()?.when <= deadline {
            self.heap.pop().map(|e| e.item)
        } else {
            None
        }
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        self.heap.pop().map(|e| e.item)
    }

    /// Keeps only the items for which `keep` is true, moving the others into `removed`
    /// (the caller decides when to drop them). Order among kept timers is preserved.
    pub(crate) fn retain_into(&mut self, mut keep: impl FnMut(&T) -> bool, removed: &mut Vec<T>) {
        let old = std::mem::take(&mut self.heap).into_vec();
        let mut kept = Vec::with_capacity(old.len());
        for e in old {
            if keep(&e.item) {
                kept.push(e);
            } else {
                removed.push(e.item);
            }
        }
        self.heap = BinaryHeap::from(kept);
    }

    pub(crate) fn drain_into(&mut self, out: &mut Vec<T>) {
        out.extend(
            std::mem::take(&mut self.heap)
                .into_vec()
                .into_iter()
                .map(|e| e.item),
        );
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|e| &e.item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first() {
        let mut h = TimerHeap::default();
        h.push(3.0, "c");
        h.push(1.0, "a");
        h.push(2.0, "b");
        assert_eq!(h.peek_when(), Some(1.0));
        assert_eq!(h.pop(), Some("a"));
        assert_eq!(h.pop(), Some("b"));
        assert_eq!(h.pop(), Some("c"));
        assert_eq!(h.pop(), None);
    }

    #[test]
    fn equal_deadlines_keep_insertion_order() {
        let mut h = TimerHeap::default();
        for i in 0..1000 {
            h.push(5.0, i);
        }
        for i in 0..1000 {
            assert_eq!(h.pop(), Some(i));
        }
    }

    #[test]
    fn pop_due_respects_deadline() {
        let mut h = TimerHeap::default();
        h.push(1.0, 1);
        h.push(2.0, 2);
        h.push(3.0, 3);
        assert_eq!(h.pop_due(2.0), Some(1));
        assert_eq!(h.pop_due(2.0), Some(2));
        assert_eq!(h.pop_due(2.0), None);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn retain_moves_removed_out_and_keeps_order() {
        let mut h = TimerHeap::default();
        for i in 0..10 {
            h.push(i as f64, i);
        }
        let mut removed = Vec::new();
        h.retain_into(|x| x % 2 == 0, &mut removed);
        removed.sort();
        assert_eq!(removed, vec![1, 3, 5, 7, 9]);
        let mut order = Vec::new();
        while let Some(x) = h.pop() {
            order.push(x);
        }
        assert_eq!(order, vec![0, 2, 4, 6, 8]);
    }

    #[test]
    fn nan_and_infinite_deadlines_do_not_break_ordering() {
        let mut h = TimerHeap::default();
        h.push(f64::INFINITY, "inf");
        h.push(0.5, "half");
        h.push(f64::NEG_INFINITY, "neg");
        assert_eq!(h.pop(), Some("neg"));
        assert_eq!(h.pop(), Some("half"));
        assert_eq!(h.pop(), Some("inf"));
    }
}
