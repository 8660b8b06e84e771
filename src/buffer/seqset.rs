//! The set of outstanding (unacknowledged) sequence numbers, as ranges.
//!
//! Records are appended with consecutive numbers and mostly acknowledged in order, so
//! the set is a handful of ranges however many records it holds. Gaps appear only
//! where records were lost to corruption or dropped on purpose.

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeqSet {
    /// start → end (exclusive), disjoint and not touching.
    ranges: BTreeMap<u64, u64>,
    len: u64,
}

impl SeqSet {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn min(&self) -> Option<u64> {
        self.ranges.first_key_value().map(|(s, _)| *s)
    }

    /// The smallest member at or above `seq`.
    pub fn first_from(&self, seq: u64) -> Option<u64> {
        if self.contains(seq) {
            return Some(seq);
        }
        self.ranges.range(seq..).next().map(|(s, _)| *s)
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.ranges.range(..=seq).next_back().is_some_and(|(_, &end)| seq < end)
    }

    /// Adds `seq`; it must be above every member (records are appended in order).
    pub fn push(&mut self, seq: u64) {
        debug_assert!(self.ranges.last_key_value().is_none_or(|(_, &end)| seq >= end));
        match self.ranges.last_entry() {
            Some(mut last) if *last.get() == seq => *last.get_mut() = seq + 1,
            _ => {
                self.ranges.insert(seq, seq + 1);
            }
        }
        self.len += 1;
    }

    /// Removes `seq`; false if it was not a member.
    pub fn remove(&mut self, seq: u64) -> bool {
        let Some((&start, &end)) = self.ranges.range(..=seq).next_back() else { return false };
        if seq >= end {
            return false;
        }
        self.ranges.remove(&start);
        if start < seq {
            self.ranges.insert(start, seq);
        }
        if seq + 1 < end {
            self.ranges.insert(seq + 1, end);
        }
        self.len -= 1;
        true
    }

    /// The ranges in `from..to` (start, end exclusive) that are not members, in order;
    /// at most `max` of them (the lowest).
    pub fn gaps(&self, from: u64, to: u64, max: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = from;
        for (&start, &end) in self.ranges.range(..to) {
            if end <= at {
                continue;
            }
            if start > at {
                out.push((at, start));
                if out.len() == max {
                    return out;
                }
            }
            at = end;
        }
        if at < to && out.len() < max {
            out.push((at, to));
        }
        out
    }

    /// Removes every member in `from..to`; returns how many there were.
    pub fn remove_range(&mut self, from: u64, to: u64) -> u64 {
        if from >= to {
            return 0;
        }
        let touched: Vec<(u64, u64)> = self
            .ranges
            .range(..to)
            .filter(|(_, &end)| end > from)
            .map(|(&s, &e)| (s, e))
            .collect();
        let mut removed = 0;
        for (s, e) in touched {
            self.ranges.remove(&s);
            if s < from {
                self.ranges.insert(s, from);
            }
            if e > to {
                self.ranges.insert(to, e);
            }
            removed += e.min(to) - s.max(from);
        }
        self.len -= removed;
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn in_order_acks_keep_one_range() {
        let mut s = SeqSet::default();
        (1..=1000).for_each(|i| s.push(i));
        assert_eq!(s.ranges.len(), 1);
        (1..=500).for_each(|i| assert!(s.remove(i)));
        assert_eq!((s.len(), s.min(), s.ranges.len()), (500, Some(501), 1));
        assert!(!s.remove(3));
        assert_eq!(s.remove_range(600, 700), 100);
        assert_eq!(s.len(), 400);
        assert!(!s.contains(650) && s.contains(700) && s.contains(599));
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(n in 1u64..200, ops in prop::collection::vec((any::<bool>(), 0u64..220, 0u64..30), 0..100)) {
            let mut s = SeqSet::default();
            let mut model: BTreeSet<u64> = BTreeSet::new();
            for i in 1..=n {
                s.push(i);
                model.insert(i);
            }
            for (single, a, w) in ops {
                if single {
                    prop_assert_eq!(s.remove(a), model.remove(&a));
                } else {
                    let gone: Vec<u64> = model.range(a..a + w).copied().collect();
                    gone.iter().for_each(|g| { model.remove(g); });
                    prop_assert_eq!(s.remove_range(a, a + w), gone.len() as u64);
                }
                prop_assert_eq!(s.len(), model.len() as u64);
                prop_assert_eq!(s.min(), model.first().copied());
                prop_assert_eq!(s.first_from(a), model.range(a..).next().copied());
                let outside: Vec<u64> = s.gaps(1, 230, usize::MAX).into_iter().flat_map(|(s, e)| s..e).collect();
                let model_outside: Vec<u64> = (1..230).filter(|i| !model.contains(i)).collect();
                prop_assert_eq!(outside, model_outside);
            }
        }
    }
}
