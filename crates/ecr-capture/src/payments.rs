//! The payments an analyzer remembers for the partial-refund check: by id (the
//! terminal's `syssn`, the cash register's `out_trade_no`), forgotten oldest first.
//! Only card payments are remembered (the analyzer's choice): no other can fail the
//! check.
//!
//! On ECR-dense traffic this table is full and busy: every successful card payment
//! adds two ids and evicts the two oldest. As a hash map from shared id strings to
//! payments, each of those steps was a few cache misses (the map's buckets, the id
//! strings they point to, the id to evict hashed again): the table was about 6% of
//! `analyze`'s time on the dense benchmark. Here the ids and payments live in a
//! queue in the order they came, which is only touched at its two ends, and the hash
//! index holds just each id's hash and place in the queue (16 bytes an entry: about
//! 0.6 MB for a full table, where the map's buckets alone took 2.4 MB): forgetting
//! the oldest id reads the queue's front, without hashing or comparing a string.
//! Ids are compared in full only when looked up (a refund, a repeated id). About
//! 2.5% of the time was won back (README, Performance, "Ninth pass"). The index
//! entry of a forgotten id is left in place (its place is then before the queue's
//! front, so no lookup finds it) and swept out with others in one pass over the
//! index: removing it at once read a bucket written long before, the table's last
//! cache miss per eviction (README, Performance, "Twelfth pass").
//!
//! Bounded by the caller (entries and bytes, see `limits.rs`); hashing is seeded per
//! process (foldhash), so ids cannot be chosen to collide.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::HashTable;

/// One remembered id.
struct Slot<P> {
    id: Box<str>,
    pay: P,
}

/// Payments by id, in the order their ids were first remembered.
pub(crate) struct Payments<P> {
    /// Oldest first.
    order: VecDeque<Slot<P>>,
    /// The sequence number of `order`'s front: an id's place is its sequence
    /// number minus this.
    first: u64,
    /// For each id in `order`: its hash and its sequence number.
    index: HashTable<(u64, u64)>,
    hasher: foldhash::fast::RandomState,
}

impl<P> Default for Payments<P> {
    fn default() -> Self {
        Payments {
            order: VecDeque::new(),
            first: 0,
            index: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl<P> Payments<P> {
    /// Ids remembered.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Where `id` is in `order`, if remembered.
    fn place(&self, hash: u64, id: &str) -> Option<usize> {
        let first = self.first;
        let order = &self.order;
        let slot_of = |seq: u64| usize::try_from(seq.wrapping_sub(first)).ok();
        self.index
            .find(hash, |&(h, seq)| {
                h == hash
                    && slot_of(seq)
                        .and_then(|i| order.get(i))
                        .is_some_and(|s| &*s.id == id)
            })
            .and_then(|&(_, seq)| slot_of(seq))
    }

    /// The payment remembered under `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&P> {
        let i = self.place(self.hasher.hash_one(id), id)?;
        self.order.get(i).map(|s| &s.pay)
    }

    /// Remembers `pay` under `id`: replaces the payment of a known id (which keeps
    /// its place) and returns the old one, or adds the id as the newest.
    pub(crate) fn insert(&mut self, id: &str, pay: P) -> Option<P> {
        let hash = self.hasher.hash_one(id);
        if let Some(slot) = self.place(hash, id).and_then(|i| self.order.get_mut(i)) {
            return Some(std::mem::replace(&mut slot.pay, pay));
        }
        let seq = self.first.wrapping_add(self.order.len() as u64);
        // Forgotten ids leave their index entries behind (see `pop_oldest`). When
        // they are more than an eighth of the live ones, one pass over the index
        // sweeps them out: about 20 buckets visited in order per id forgotten,
        // against a cache miss each, and after an insert the index holds at most
        // 9/8 of the live ids.
        let live = self.order.len();
        let stale = self.index.len().saturating_sub(live);
        if stale > live.max(8) / 8 {
            let first = self.first;
            self.index.retain(|&mut (_, s)| {
                usize::try_from(s.wrapping_sub(first)).is_ok_and(|i| i < live)
            });
            // A table that shrank (payments forgotten for their bytes) gives its
            // room back, so that a sweep stays in proportion to what it removes.
            if self.index.capacity() > 4 * self.index.len() + 64 {
                self.index.shrink_to(self.index.len(), |&(h, _)| h);
            }
        }
        self.order.push_back(Slot { id: id.into(), pay });
        self.index.insert_unique(hash, (hash, seq), |&(h, _)| h);
        None
    }

    /// Forgets the oldest id, returning it with its payment. Its index entry stays
    /// until `insert` sweeps: its sequence number is now before `first`, so no
    /// lookup finds it, and removing it here would read a bucket written long ago,
    /// a cache miss on every eviction of a full table.
    pub(crate) fn pop_oldest(&mut self) -> Option<(Box<str>, P)> {
        let slot = self.order.pop_front()?;
        self.first = self.first.wrapping_add(1);
        if self.order.is_empty() {
            self.index.clear();
        }
        Some((slot.id, slot.pay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn remembers_replaces_and_forgets_oldest_first() {
        let mut p = Payments::default();
        assert!(p.is_empty());
        assert_eq!(p.insert("a", 1), None);
        assert_eq!(p.insert("b", 2), None);
        assert_eq!(p.insert("a", 3), Some(1), "a keeps its place");
        assert_eq!(
            (p.get("a"), p.get("b"), p.get("c")),
            (Some(&3), Some(&2), None)
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p.pop_oldest(), Some(("a".into(), 3)));
        assert_eq!(p.get("a"), None);
        assert_eq!(p.insert("a", 4), None, "forgotten, so new again");
        assert_eq!(p.pop_oldest(), Some(("b".into(), 2)));
        assert_eq!(p.pop_oldest(), Some(("a".into(), 4)));
        assert_eq!(p.pop_oldest(), None);
        assert!(p.is_empty());
    }

    #[test]
    fn a_full_table_stays_exact_as_ids_come_and_go() {
        // As on dense traffic: full, each new id evicts the oldest.
        let mut p = Payments::default();
        let window = 100;
        for n in 0..10_000u32 {
            assert_eq!(p.insert(&format!("SYSSN-{n}"), n), None);
            if p.len() > window {
                let (id, v) = p.pop_oldest().unwrap();
                assert_eq!((&*id, v), (format!("SYSSN-{}", n - 100).as_str(), n - 100));
            }
            // Forgotten ids stay in the index until they are more than an
            // eighth of the live ones (101 here): 10,000 ids went through, and
            // the index stays the size of the window's (hashbrown doubles a
            // table over half full of live and removed entries: up to 4 times).
            assert!(p.index.len() >= p.len() && p.index.len() <= p.len() + 13);
            assert!(
                p.index.capacity() <= 4 * (window + 14),
                "{}",
                p.index.capacity()
            );
            if n % 97 == 0 {
                assert_eq!(p.get(&format!("SYSSN-{n}")), Some(&n));
                let gone = n.saturating_sub(101);
                let want = (n < 101).then_some(gone);
                assert_eq!(p.get(&format!("SYSSN-{gone}")).copied(), want);
            }
        }
    }

    #[test]
    fn a_table_that_shrank_gives_its_index_room_back() {
        // Payments forgotten for their bytes: many go at once, and the sweep after
        // them must not keep visiting the buckets the table needed before.
        let mut p = Payments::default();
        for n in 0..10_000u32 {
            p.insert(&format!("ORDER-{n}"), n);
        }
        let full = p.index.capacity();
        assert!(full >= 10_000);
        for _ in 0..9_990 {
            p.pop_oldest();
        }
        assert_eq!(p.index.len(), 10_000, "forgetting does not touch the index");
        p.insert("ORDER-new", 1);
        assert_eq!(p.index.len(), 11);
        assert!(p.index.capacity() <= 4 * 11 + 64, "{}", p.index.capacity());
        assert_eq!(p.get("ORDER-9999"), Some(&9999));
        assert_eq!(p.get("ORDER-9989"), None);
        assert_eq!(p.get("ORDER-new"), Some(&1));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Get(u8),
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (0u8..40).prop_map(Op::Get),
            2 => Just(Op::Pop),
        ]
    }

    proptest! {
        /// The same answers as the map and queue of ids it replaced.
        #[test]
        fn behaves_as_a_map_with_a_queue_of_first_insertions(ops in proptest::collection::vec(op(), 0..400)) {
            let mut p = Payments::default();
            let mut map: HashMap<String, u32> = HashMap::new();
            let mut order: VecDeque<String> = VecDeque::new();
            let mut index_len = 0;
            for o in ops {
                let mut inserted = false;
                match o {
                    Op::Insert(k, v) => {
                        let id = format!("ORDER-{k}");
                        let old = map.insert(id.clone(), v);
                        if old.is_none() {
                            order.push_back(id.clone());
                            inserted = true;
                        }
                        prop_assert_eq!(p.insert(&id, v), old);
                    }
                    Op::Get(k) => {
                        let id = format!("ORDER-{k}");
                        prop_assert_eq!(p.get(&id), map.get(&id));
                    }
                    Op::Pop => {
                        let want = order.pop_front().map(|id| {
                            let v = map.remove(&id).unwrap();
                            (id.into_boxed_str(), v)
                        });
                        prop_assert_eq!(p.pop_oldest(), want);
                    }
                }
                prop_assert_eq!(p.len(), map.len());
                // The index holds every live id, and after an insert forgotten
                // ones only up to an eighth of them (one in a table of fewer
                // than 16); forgetting does not touch it.
                prop_assert!(p.index.len() >= map.len());
                if inserted {
                    prop_assert!(p.index.len() <= map.len() + (map.len() - 1).max(8) / 8);
                } else if map.is_empty() {
                    prop_assert_eq!(p.index.len(), 0, "an empty table forgets its index");
                } else {
                    prop_assert_eq!(p.index.len(), index_len);
                }
                index_len = p.index.len();
            }
        }
    }
}
