//! A user name in 16 bytes. Names of up to [`INLINE`] bytes (numeric ids,
//! short logins) live in the value itself; longer ones are one shared
//! `Rc<str>`, so a grant and the online user it names keep one copy. Every
//! user and every grant holds one, so the allocation a short name no longer
//! needs (32 bytes with malloc's header) is saved per connection.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::ptr::NonNull;
use std::rc::Rc;

/// The longest name kept inline.
pub const INLINE: usize = 15;
/// `tag` of a name kept in an `Rc<str>`; an inline name's tag is its length.
const SHARED: u8 = 0xFF;

#[derive(Clone, Copy)]
#[repr(C)]
struct Inline {
    bytes: [u8; INLINE],
    tag: u8,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Shared {
    /// From `Rc::into_raw`: the name's bytes, owned by one strong count.
    ptr: NonNull<u8>,
    len: u32,
    _pad: [u8; 3],
    tag: u8,
}

/// Both layouts put `tag` at byte 15, so it tells which one is live.
#[repr(C)]
union Repr {
    inline: Inline,
    shared: Shared,
}

/// A user name (at most `u32::MAX` bytes; the protocol allows 256).
pub struct Name(Repr);

impl Name {
    fn tag(&self) -> u8 {
        // SAFETY: both variants are plain bytes at offset 15.
        unsafe { self.0.inline.tag }
    }

    /// The `Rc<str>` behind a long name, as a raw fat pointer.
    fn shared(&self) -> Option<*const str> {
        (self.tag() == SHARED).then(|| {
            // SAFETY: the tag says `shared` is the live variant.
            let s = unsafe { self.0.shared };
            std::ptr::slice_from_raw_parts(s.ptr.as_ptr().cast_const(), s.len as usize)
                as *const str
        })
    }
}

impl From<&str> for Name {
    fn from(name: &str) -> Name {
        if name.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            let tag = name.len() as u8;
            return Name(Repr {
                inline: Inline { bytes, tag },
            });
        }
        let len = u32::try_from(name.len()).expect("a name shorter than 4 GiB");
        let rc: Rc<str> = name.into();
        let ptr = NonNull::new(Rc::into_raw(rc).cast::<u8>().cast_mut()).expect("Rc is not null");
        Name(Repr {
            shared: Shared {
                ptr,
                len,
                _pad: [0; 3],
                tag: SHARED,
            },
        })
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        match self.shared() {
            // SAFETY: the pointer came from a live `Rc<str>` this name
            // holds a strong count of.
            Some(ptr) => unsafe { &*ptr },
            None => {
                // SAFETY: the tag says `inline` is live; its first `tag`
                // bytes were copied from a `&str`.
                let inline = unsafe { &self.0.inline };
                let bytes = &inline.bytes[..usize::from(inline.tag)];
                // SAFETY: see above: they are valid UTF-8.
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
        }
    }
}

impl Clone for Name {
    fn clone(&self) -> Name {
        if let Some(ptr) = self.shared() {
            // SAFETY: `ptr` came from `Rc::into_raw` and is still owned.
            unsafe { Rc::increment_strong_count(ptr) };
        }
        // SAFETY: both variants are `Copy`; for a shared name the count
        // was raised for the copy.
        Name(unsafe { std::ptr::read(&self.0) })
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
