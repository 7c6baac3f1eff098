//! Device labels (`?device=` or the User-Agent), kept once per distinct
//! text: a million phones running the same app send a handful of
//! User-Agents, so a session holds a 4-byte index instead of its own copy
//! of up to 128 bytes.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use slab::Slab;

/// "No device" in a session.
pub const NO_DEVICE: u32 = u32::MAX;

/// The labels in use, each with the number of sessions holding it.
#[derive(Debug, Default)]
pub struct Devices {
    labels: Slab<(Box<str>, u32)>,
    index: HashTable<u32>,
    hasher: RandomState,
}

impl Devices {
    /// The index of `label`, held once more.
    pub fn hold(&mut self, label: &str) -> u32 {
        let hash = self.hasher.hash_one(label);
        let labels = &mut self.labels;
        if let Some(&i) = self.index.find(hash, |&i| *labels[i as usize].0 == *label) {
            labels[i as usize].1 += 1;
            return i;
        }
        let i = u32::try_from(labels.insert((label.into(), 1)))
            .ok()
            .filter(|&i| i != NO_DEVICE)
            .expect("fewer than 4G labels");
        let hasher = &self.hasher;
        self.index
            .insert_unique(hash, i, |&j| hasher.hash_one(&*labels[j as usize].0));
        i
    }

    /// Let go of index `i` (from [`Devices::hold`], or [`NO_DEVICE`]); the
    /// last holder removes the label.
    pub fn release(&mut self, i: u32) {
        let Some((label, holders)) = self.labels.get_mut(i as usize) else {
            return;
        };
        *holders -= 1;
        if *holders == 0 {
            let hash = self.hasher.hash_one(&**label);
            if let Ok(entry) = self.index.find_entry(hash, |&j| j == i) {
                entry.remove();
            }
            self.labels.remove(i as usize);
        }
    }

    /// The label at `i`, if any.
    pub fn get(&self, i: u32) -> Option<&str> {
        self.labels.get(i as usize).map(|(label, _)| &**label)
    }

    /// Distinct labels in use.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.labels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_kept_once_while_someone_holds_it() {
        let mut d = Devices::default();
        let a = d.hold("okhttp/4.12");
        let b = d.hold("okhttp/4.12");
        let c = d.hold("Mozilla/5.0");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(d.len(), 2);
        d.release(a);
        assert_eq!(d.get(b), Some("okhttp/4.12"), "one holder left");
        d.release(b);
        assert_eq!(d.get(a), None);
        assert_eq!(d.len(), 1);
        let again = d.hold("okhttp/4.12");
        assert_eq!(d.get(again), Some("okhttp/4.12"));
        assert_eq!(d.get(c), Some("Mozilla/5.0"));
        d.release(NO_DEVICE);
        assert_eq!(d.len(), 2, "releasing no device changes nothing");
    }
}
