//! A user name in 16 bytes. Names of up to [`INLINE`] bytes (numeric ids,
//! short logins) live in the value itself; longer ones are one shared
//! `Rc<str>`, so a grant and the online user it names keep one copy. Every
//! user and every grant holds one, so the allocation a short name no longer
//! needs (32 bytes with malloc's header) is saved per connection.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::Deref;
use std::rc::Rc;

/// The longest name kept inline.
pub const INLINE: usize = 15;
/// Bytes of a long name's pointer at the start of `bytes`, its `u32`
/// length after them.
const PTR: usize = std::mem::size_of::<usize>();

/// An inline name's length, or `Shared`. An enum rather than a `u8`, so
/// that its unused values are a niche: a slab entry or an `Option` of a
/// name needs no tag of its own.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[rustfmt::skip]
enum Tag {
    L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11, L12, L13, L14, L15,
    Shared,
}

#[rustfmt::skip]
const LENGTHS: [Tag; INLINE + 1] = [
    Tag::L0, Tag::L1, Tag::L2, Tag::L3, Tag::L4, Tag::L5, Tag::L6, Tag::L7,
    Tag::L8, Tag::L9, Tag::L10, Tag::L11, Tag::L12, Tag::L13, Tag::L14, Tag::L15,
];

/// A user name (at most `u32::MAX` bytes; the protocol allows 256):
/// inline, the text in `bytes`; shared, the address of an `Rc<str>`'s
/// bytes (from `Rc::into_raw`, owning one strong count) and its length.
pub struct Name {
    bytes: [u8; INLINE],
    tag: Tag,
    /// Not `Send` nor `Sync`, as the `Rc` it may hold.
    rc: PhantomData<Rc<str>>,
}

impl Name {
    /// The `Rc<str>` behind a long name, as a raw fat pointer.
    fn shared(&self) -> Option<*const str> {
        (self.tag == Tag::Shared).then(|| {
            let addr = usize::from_ne_bytes(self.bytes[..PTR].try_into().expect("PTR bytes"));
            let len = u32::from_ne_bytes(self.bytes[PTR..PTR + 4].try_into().expect("4 bytes"));
            let ptr = std::ptr::with_exposed_provenance::<u8>(addr);
            std::ptr::slice_from_raw_parts(ptr, len as usize) as *const str
        })
    }
}

impl From<&str> for Name {
    fn from(name: &str) -> Name {
        let mut bytes = [0; INLINE];
        if let Some(&tag) = LENGTHS.get(name.len()) {
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            return Name {
                bytes,
                tag,
                rc: PhantomData,
            };
        }
        let len = u32::try_from(name.len()).expect("a name shorter than 4 GiB");
        let rc: Rc<str> = name.into();
        let addr = Rc::into_raw(rc).cast::<u8>().expose_provenance();
        bytes[..PTR].copy_from_slice(&addr.to_ne_bytes());
        bytes[PTR..PTR + 4].copy_from_slice(&len.to_ne_bytes());
        Name {
            bytes,
            tag: Tag::Shared,
            rc: PhantomData,
        }
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        match self.shared() {
            // SAFETY: the pointer came from a live `Rc<str>` this name
            // holds a strong count of.
            Some(ptr) => unsafe { &*ptr },
            // SAFETY: an inline name's first `tag` bytes were copied from
            // a `&str`.
            None => unsafe { std::str::from_utf8_unchecked(&self.bytes[..self.tag as usize]) },
        }
    }
}

impl Clone for Name {
    fn clone(&self) -> Name {
        if let Some(ptr) = self.shared() {
            // SAFETY: `ptr` came from `Rc::into_raw` and is still owned.
            unsafe { Rc::increment_strong_count(ptr) };
        }
        Name {
            bytes: self.bytes,
            tag: self.tag,
            rc: PhantomData,
        }
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        if let Some(ptr) = self.shared() {
            // SAFETY: this name owns one strong count of that `Rc`.
            drop(unsafe { Rc::from_raw(ptr) });
        }
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        **self == **other
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_sixteen_bytes_and_reads_back_at_every_length() {
        assert_eq!(std::mem::size_of::<Name>(), 16);
        assert_eq!(
            std::mem::size_of::<Option<Name>>(),
            16,
            "the tag is a niche"
        );
        #[allow(dead_code)]
        enum SlabEntry<T> {
            Vacant(usize),
            Occupied(T),
        }
        let user = std::mem::size_of::<SlabEntry<crate::hub::session::User>>();
        assert_eq!(user, 32, "a user's slab entry needs no tag");
        let long = "é".repeat(200);
        for n in 0..=long.len() {
            let Some(s) = long.get(..n) else { continue };
            let name = Name::from(s);
            assert_eq!(&*name, s);
            let copy = name.clone();
            drop(name);
            assert_eq!(&*copy, s, "a clone outlives the original");
            assert_eq!(copy, Name::from(s));
        }
    }

    #[test]
    fn a_long_name_is_shared_by_its_clones_and_freed_with_the_last() {
        let name = Name::from("a-user-name-longer-than-fifteen");
        let ptr = name.shared().expect("kept in an Rc");
        let copies: Vec<Name> = (0..3).map(|_| name.clone()).collect();
        // SAFETY: the names hold the Rc alive.
        let rc = unsafe {
            Rc::increment_strong_count(ptr);
            Rc::from_raw(ptr)
        };
        assert_eq!(Rc::strong_count(&rc), 5);
        assert!(copies.iter().all(|c| c.shared() == Some(ptr)));
        drop(copies);
        drop(name);
        assert_eq!(Rc::strong_count(&rc), 1, "every name gave its count back");
    }

    #[test]
    fn names_compare_and_hash_as_their_text() {
        use std::collections::HashMap;
        let mut by_name = HashMap::new();
        by_name.insert(Name::from("alice"), 1);
        by_name.insert(Name::from("b".repeat(40).as_str()), 2);
        assert_eq!(by_name.get("alice"), Some(&1));
        assert_eq!(by_name.get(&*"b".repeat(40)), Some(&2));
        assert_eq!(
            format!("{:?} {}", Name::from("x"), Name::from("y")),
            "\"x\" y"
        );
    }
}
