//! One label value's series: a single id inline, or a bitmap once there are more.
//!
//! High-cardinality labels (a unique `pod` or `instance`) give most values exactly one
//! series; a `RoaringBitmap` for each costs two heap allocations and ~100 bytes, an inline
//! id none. Values shared by many series get the bitmap.

use roaring::RoaringBitmap;

use super::SeriesId;

#[derive(Debug, Clone)]
pub enum Posting {
    One(SeriesId),
    Many(RoaringBitmap),
}

impl Posting {
    pub fn insert(&mut self, id: SeriesId) {
        match self {
            Posting::One(x) if *x == id => {}
            Posting::One(x) => *self = Posting::Many(RoaringBitmap::from_iter([*x, id])),
            Posting::Many(b) => {
                b.insert(id);
            }
        }
    }

    /// Adds another posting's ids.
    pub fn merge(&mut self, other: Posting) {
        match other {
            Posting::One(id) => self.insert(id),
            Posting::Many(b) => {
                let mut acc = RoaringBitmap::new();
                self.union_into(&mut acc);
                *self = Posting::Many(acc | b);
            }
        }
    }

    /// Removes `id`; true when the posting is empty afterwards.
    pub fn remove(&mut self, id: SeriesId) -> bool {
        match self {
            Posting::One(x) => *x == id,
            Posting::Many(b) => {
                b.remove(id);
                match b.len() {
                    0 => true,
                    1 => {
                        let last = b.min().expect("one id");
                        *self = Posting::One(last);
                        false
                    }
                    _ => false,
                }
            }
        }
    }

    /// Adds these ids to `acc`.
    pub fn union_into(&self, acc: &mut RoaringBitmap) {
        match self {
            Posting::One(x) => {
                acc.insert(*x);
            }
            Posting::Many(b) => *acc |= b,
        }
    }

    /// Heap bytes beyond the enum itself (an inline id has none; a bitmap about its
    /// serialised size, which tracks its containers).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Posting::One(_) => 0,
            Posting::Many(b) => b.serialized_size(),
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            Posting::One(_) => 1,
            Posting::Many(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_disjoint(&self, other: &RoaringBitmap) -> bool {
        match self {
            Posting::One(x) => !other.contains(*x),
            Posting::Many(b) => b.is_disjoint(other),
        }
    }

    pub fn intersection_len(&self, other: &RoaringBitmap) -> u64 {
        match self {
            Posting::One(x) => u64::from(other.contains(*x)),
            Posting::Many(b) => b.intersection_len(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_a_bitmap_and_shrinks_back() {
        let mut p = Posting::One(7);
        p.insert(7);
        assert!(matches!(p, Posting::One(7)));
        p.insert(9);
        let within = RoaringBitmap::from_iter([9, 100]);
        assert_eq!(p.intersection_len(&within), 1);
        assert!(!p.is_disjoint(&within));
        let mut acc = RoaringBitmap::new();
        p.union_into(&mut acc);
        assert_eq!(acc.iter().collect::<Vec<_>>(), vec![7, 9]);
        assert!(!p.remove(9));
        assert!(matches!(p, Posting::One(7)));
        assert!(p.is_disjoint(&within));
        assert!(p.remove(7));
    }
}
