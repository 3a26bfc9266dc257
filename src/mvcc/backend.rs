//! The ordered key-value view MVCC runs on, and the overlay that makes one apply batch see its
//! own uncommitted writes.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::MvccError;

/// One stored entry: (key, value).
pub type Entry = (Vec<u8>, Vec<u8>);

/// An ordered byte-key store that MVCC can seek in. Implemented by the sled state-machine tree
/// in production and by a `BTreeMap` in unit tests.
pub trait Backend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError>;
    /// The first entry with `lo <= key < hi`.
    fn first_in(&self, lo: &[u8], hi: &[u8]) -> Result<Option<Entry>, MvccError>;
    /// The last entry with `lo <= key` and `key` below `hi` (inclusive or exclusive).
    fn last_in(&self, lo: &[u8], hi: Bound<&[u8]>) -> Result<Option<Entry>, MvccError>;
}

impl Backend for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        Ok(BTreeMap::get(self, key).cloned())
    }

    fn first_in(&self, lo: &[u8], hi: &[u8]) -> Result<Option<Entry>, MvccError> {
        if lo >= hi {
            return Ok(None);
        }
        Ok(self
            .range::<[u8], _>((Bound::Included(lo), Bound::Excluded(hi)))
            .next()
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn last_in(&self, lo: &[u8], hi: Bound<&[u8]>) -> Result<Option<Entry>, MvccError> {
        if empty_range(lo, hi) {
            return Ok(None);
        }
        Ok(self
            .range::<[u8], _>((Bound::Included(lo), hi))
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone())))
    }
}

/// Uncommitted writes of one apply batch layered over the committed store. Reads merge both,
/// so command N of a batch sees what commands 1..N-1 wrote; at the end the caller turns the
/// overlay into one atomic batch (`into_writes`).
pub struct Overlay<'a, B: Backend> {
    base: &'a B,
    /// `Some(v)` = written, `None` = removed, in this batch.
    pending: BTreeMap<Vec<u8>, PendingWrite>,
    /// Undo log since the last savepoint: each touched key and what `pending` held for it
    /// before (`None` = untouched). Lets one failed command leave no trace in the batch.
    undo: Vec<(Vec<u8>, Option<PendingWrite>)>,
}

/// A batch's write to one key: `Some(value)`, or `None` for a removal.
pub type PendingWrite = Option<Vec<u8>>;

impl<'a, B: Backend> Overlay<'a, B> {
    pub fn new(base: &'a B) -> Self {
        Overlay {
            base,
            pending: BTreeMap::new(),
            undo: Vec::new(),
        }
    }

    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        let before = self.pending.insert(key.clone(), Some(value));
        self.undo.push((key, before));
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        let before = self.pending.insert(key.clone(), None);
        self.undo.push((key, before));
    }

    /// Forgets the undo log: what was written so far stays.
    pub fn savepoint(&mut self) {
        self.undo.clear();
    }

    /// Undoes every write since the last savepoint.
    pub fn rollback(&mut self) {
        while let Some((key, before)) = self.undo.pop() {
            match before {
                Some(v) => self.pending.insert(key, v),
                None => self.pending.remove(&key),
            };
        }
    }

    /// The writes to commit, in key order.
    pub fn into_writes(self) -> BTreeMap<Vec<u8>, PendingWrite> {
        self.pending
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl<B: Backend> Backend for Overlay<'_, B> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        match self.pending.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }

    fn first_in(&self, lo: &[u8], hi: &[u8]) -> Result<Option<Entry>, MvccError> {
        if lo >= hi {
            return Ok(None);
        }
        // Committed candidate, skipping keys this batch has shadowed (rewritten or removed).
        let mut from = lo.to_vec();
        let base = loop {
            match self.base.first_in(&from, hi)? {
                Some((k, _)) if self.pending.contains_key(&k) => {
                    from = k;
                    from.push(0);
                }
                other => break other,
            }
        };
        let pending = self
            .pending
            .range::<[u8], _>((Bound::Included(lo), Bound::Excluded(hi)))
            .find_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())));
        Ok(match (base, pending) {
            (Some(b), Some(p)) => Some(if p.0 <= b.0 { p } else { b }),
            (b, p) => b.or(p),
        })
    }

    fn last_in(&self, lo: &[u8], hi: Bound<&[u8]>) -> Result<Option<Entry>, MvccError> {
        if empty_range(lo, hi) {
            return Ok(None);
        }
        // Committed candidate, skipping keys this batch has shadowed.
        let mut to: Option<Vec<u8>> = None;
        let base = loop {
            let bound = match &to {
                Some(k) => Bound::Excluded(k.as_slice()),
                None => hi,
            };
            match self.base.last_in(lo, bound)? {
                Some((k, _)) if self.pending.contains_key(&k) => to = Some(k),
                other => break other,
            }
        };
        let pending = self
            .pending
            .range::<[u8], _>((Bound::Included(lo), hi))
            .rev()
            .find_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())));
        Ok(match (base, pending) {
            (Some(b), Some(p)) => Some(if p.0 >= b.0 { p } else { b }),
            (b, p) => b.or(p),
        })
    }
}

/// True when no key can satisfy `lo <= key` and `key` below `hi` (also keeps `BTreeMap::range`
/// from panicking on inverted bounds).
pub fn empty_range(lo: &[u8], hi: Bound<&[u8]>) -> bool {
    match hi {
        Bound::Included(h) => lo > h,
        Bound::Excluded(h) => lo >= h,
        Bound::Unbounded => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&[u8], &[u8])]) -> BTreeMap<Vec<u8>, Vec<u8>> {
        entries
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn overlay_merges_writes_and_removals() {
        let base = map(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")]);
        let mut o = Overlay::new(&base);
        o.remove(b"b".to_vec());
        o.insert(b"bb".to_vec(), b"x".to_vec());
        o.insert(b"c".to_vec(), b"33".to_vec());
        assert_eq!(o.get(b"b").unwrap(), None);
        assert_eq!(o.get(b"c").unwrap(), Some(b"33".to_vec()));
        assert_eq!(o.first_in(b"b", b"z").unwrap().unwrap().0, b"bb".to_vec());
        assert_eq!(o.first_in(b"a\x00", b"bb").unwrap(), None);
        let c = o.first_in(b"bc", b"z").unwrap().unwrap();
        assert_eq!(c, (b"c".to_vec(), b"33".to_vec()));
        assert_eq!(
            o.last_in(b"a", Bound::Included(b"bz")).unwrap().unwrap().0,
            b"bb".to_vec()
        );
        assert_eq!(
            o.last_in(b"a", Bound::Included(b"b")).unwrap().unwrap().0,
            b"a".to_vec()
        );
        o.remove(b"a".to_vec());
        assert_eq!(o.last_in(b"a", Bound::Included(b"b")).unwrap(), None);
        assert_eq!(
            o.last_in(b"a", Bound::Excluded(b"z")).unwrap().unwrap().0,
            b"d".to_vec()
        );
    }
}
