//! Open connections ([`Session`]s, by slot) and the users that are online,
//! each with the list of its connections.
//!
//! A user's connections form a doubly linked list threaded through the
//! sessions (`user_prev` / `user_next`), oldest first, so joining, leaving
//! and "close the oldest" are O(1) and cost no allocation per connection,
//! and a push walks a user's connections without collecting them. A user
//! exists here only while it has an open connection.
//!
//! The connections with pushes on are also kept as one dense list, so a
//! broadcast reads 8 bytes per recipient instead of walking every session.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU64;
use std::rc::Rc;

use hashbrown::HashTable;
use slab::Slab;

use super::ConnId;
use super::devices::{Devices, NO_DEVICE};
use super::name::Name;
use super::tokens::TokenTag;

/// "No entry" in the user lists.
pub const NONE: u32 = u32::MAX;

/// The routing state of one open connection.
#[derive(Debug)]
pub struct Session {
    /// The connection's serial number: `id` in `clients` and events; its
    /// low 32 bits are the [`ConnId`] generation. Never zero, which lets
    /// `Option<Session>` stay 48 bytes.
    pub serial: NonZeroU64,
    /// Where the connection sits in the list of those with pushes on, or
    /// [`NONE`] while they are off (`unsubscribe`). Kept by [`Sessions`].
    pushing_at: u32,
    /// Index of the user in [`Users`].
    pub user: u32,
    /// Neighbours in the user's list of connections, oldest first.
    pub user_prev: u32,
    /// See `user_prev`.
    pub user_next: u32,
    /// Which grant admitted it (so `revoke` finds it, and its topic list);
    /// [`SIGNED_TAG`](super::auth::SIGNED_TAG) for a signed token.
    pub token: TokenTag,
    /// Virtual ms of the upgrade.
    pub connected_ms: u64,
    /// `?device=` or the User-Agent, for `clients`: an index into the
    /// labels of [`Sessions`] ([`NO_DEVICE`] without one).
    device: u32,
    /// Subscribed topics, in subscription order; absent when none.
    pub topics: Option<Box<Vec<Rc<str>>>>,
}

impl Session {
    /// A session just upgraded, with pushes on, in no user's list yet.
    pub fn new(serial: NonZeroU64, token: TokenTag, now: u64) -> Self {
        Session {
            serial,
            pushing_at: NONE,
            user: NONE,
            user_prev: NONE,
            user_next: NONE,
            token,
            connected_ms: now,
            device: NO_DEVICE,
            topics: None,
        }
    }

    /// Pushes on (`subscribe`) or off (`unsubscribe`).
    pub fn subscribed(&self) -> bool {
        self.pushing_at != NONE
    }

    /// The generation of this session's [`ConnId`].
    fn generation(&self) -> u32 {
        self.serial.get() as u32
    }
}

/// Sessions by the I/O side's slot number: a slot's session is there only
/// while its connection is open, and only under its generation.
#[derive(Debug, Default)]
pub struct Sessions {
    slots: Vec<Option<Session>>,
    len: usize,
    /// The open connections with pushes on, in no particular order.
    pushing: Vec<ConnId>,
    /// The sessions' device labels.
    devices: Devices,
}

impl Sessions {
    /// Room for `n` slots up front (address space only until used: the
    /// pages of a large allocation are mapped as they are first written, so
    /// neither vector ever copies itself into a doubled one).
    pub fn with_capacity(n: usize) -> Sessions {
        let n = n.min(1 << 20);
        Sessions {
            slots: Vec::with_capacity(n),
            len: 0,
            pushing: Vec::with_capacity(n),
            devices: Devices::default(),
        }
    }

    /// The session of `conn`, if it is open (and not a former tenant's).
    pub fn get(&self, conn: ConnId) -> Option<&Session> {
        self.slots
            .get(conn.key as usize)?
            .as_ref()
            .filter(|s| s.generation() == conn.generation)
    }

    /// See [`Sessions::get`].
    pub fn get_mut(&mut self, conn: ConnId) -> Option<&mut Session> {
        self.slots
            .get_mut(conn.key as usize)?
            .as_mut()
            .filter(|s| s.generation() == conn.generation)
    }

    /// The session in slot `key` (which must be open).
    pub fn at(&self, key: u32) -> &Session {
        self.slots[key as usize].as_ref().expect("an open slot")
    }

    fn at_mut(&mut self, key: u32) -> &mut Session {
        self.slots[key as usize].as_mut().expect("an open slot")
    }

    /// The id of the session in slot `key`.
    pub fn id_at(&self, key: u32) -> ConnId {
        ConnId {
            key,
            generation: self.at(key).generation(),
        }
    }

    /// Add the session of a connection that just opened, pushes on.
    pub fn insert(&mut self, conn: ConnId, mut session: Session, device: Option<&str>) {
        session.device = device.map_or(NO_DEVICE, |d| self.devices.hold(d));
        let key = conn.key as usize;
        if self.slots.len() <= key {
            self.slots.resize_with(key + 1, || None);
        }
        debug_assert!(self.slots[key].is_none(), "slot {key} is open");
        debug_assert_eq!(session.generation(), conn.generation);
        self.slots[key] = Some(session);
        self.len += 1;
        self.set_pushing(conn, true);
    }

    /// Remove an open session.
    pub fn remove(&mut self, conn: ConnId) -> Option<Session> {
        self.set_pushing(conn, false);
        self.get(conn)?;
        self.len -= 1;
        let session = self.slots[conn.key as usize].take()?;
        self.devices.release(session.device);
        Some(session)
    }

    /// An open session's device label.
    pub fn device_of(&self, session: &Session) -> Option<&str> {
        self.devices.get(session.device)
    }

    /// Switch an open session's pushes on or off; O(1).
    pub fn set_pushing(&mut self, conn: ConnId, on: bool) {
        let end = u32::try_from(self.pushing.len()).expect("fewer than 4G connections");
        let Some(session) = self.get_mut(conn) else {
            return;
        };
        match (session.pushing_at, on) {
            (NONE, true) => {
                session.pushing_at = end;
                self.pushing.push(conn);
            }
            (at, false) if at != NONE => {
                session.pushing_at = NONE;
                self.pushing.swap_remove(at as usize);
                if let Some(&moved) = self.pushing.get(at as usize) {
                    self.at_mut(moved.key).pushing_at = at;
                }
            }
            _ => {}
        }
    }

    /// The open connections with pushes on, in no particular order: who a
    /// broadcast reaches.
    pub fn pushing(&self) -> &[ConnId] {
        &self.pushing
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every open session with its id, by slot.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &Session)> {
        self.slots.iter().enumerate().filter_map(|(key, slot)| {
            let s = slot.as_ref()?;
            let id = ConnId {
                key: key as u32,
                generation: s.generation(),
            };
            Some((id, s))
        })
    }

    /// The ids of every open session.
    pub fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.iter().map(|(id, _)| id)
    }
}

/// One online user.
#[derive(Debug)]
pub struct User {
    /// The user's name, as the token table gave it.
    pub name: Name,
    /// Oldest connection (slot), or [`NONE`].
    pub head: u32,
    /// Newest connection.
    pub tail: u32,
    /// Number of connections in the list.
    pub count: u32,
}

/// The online-user table. The index by name holds only each user's slot
/// (4 bytes a user, where a map from the name would hold the name's
/// pointer again: 24), hashing the name the slot points to.
#[derive(Debug, Default)]
pub struct Users {
    table: Slab<User>,
    by_name: HashTable<u32>,
    hasher: RandomState,
}

impl Users {
    /// The index of an online user.
    pub fn find(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        let table = &self.table;
        self.by_name
            .find(hash, |&i| *table[i as usize].name == *name)
            .copied()
    }

    /// The names of the users online.
    pub fn names(&self) -> impl Iterator<Item = &Name> {
        self.table.iter().map(|(_, u)| &u.name)
    }

    /// A user by index.
    pub fn get(&self, index: u32) -> &User {
        &self.table[index as usize]
    }

    /// The name of session `s`'s user.
    pub fn name_of(&self, s: &Session) -> &Name {
        &self.get(s.user).name
    }

    /// Online users.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether nobody is online.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Append connection `conn` (already in `sessions`) to `name`'s list,
    /// creating the user.
    pub fn join(&mut self, name: Name, conn: ConnId, sessions: &mut Sessions) {
        let index = match self.find(&name) {
            Some(i) => i,
            None => {
                let hash = self.hasher.hash_one(&*name);
                let i = self.table.insert(User {
                    name,
                    head: NONE,
                    tail: NONE,
                    count: 0,
                });
                let i = u32::try_from(i).expect("fewer than 4G users");
                let (table, hasher) = (&self.table, &self.hasher);
                let rehash = |&j: &u32| hasher.hash_one(&*table[j as usize].name);
                self.by_name.insert_unique(hash, i, rehash);
                i
            }
        };
        let user = &mut self.table[index as usize];
        let tail = user.tail;
        let session = sessions.at_mut(conn.key);
        session.user = index;
        session.user_prev = tail;
        session.user_next = NONE;
        if tail == NONE {
            user.head = conn.key;
        } else {
            sessions.at_mut(tail).user_next = conn.key;
        }
        user.tail = conn.key;
        user.count += 1;
    }

    /// Remove connection `conn` from its user's list; the user goes once
    /// its last connection has left.
    pub fn leave(&mut self, conn: ConnId, sessions: &mut Sessions) {
        let Some(session) = sessions.get_mut(conn) else {
            return;
        };
        let index = std::mem::replace(&mut session.user, NONE);
        if index == NONE {
            return;
        }
        let (prev, next) = (session.user_prev, session.user_next);
        session.user_prev = NONE;
        session.user_next = NONE;
        let user = &mut self.table[index as usize];
        if prev == NONE {
            user.head = next;
        } else {
            sessions.at_mut(prev).user_next = next;
        }
        if next == NONE {
            user.tail = prev;
        } else {
            sessions.at_mut(next).user_prev = prev;
        }
        user.count -= 1;
        if user.count == 0 {
            let hash = self.hasher.hash_one(&*user.name);
            if let Ok(entry) = self.by_name.find_entry(hash, |&i| i == index) {
                entry.remove();
            }
            self.table.remove(index as usize);
        }
    }

    /// Walk the connections of user `index`, oldest first, without
    /// collecting them.
    pub fn walk<'s>(&self, index: u32, sessions: &'s Sessions) -> Walk<'s> {
        Walk {
            sessions,
            cursor: self.table[index as usize].head,
        }
    }
}

/// The connections of one user, oldest first (see [`Users::walk`]).
pub struct Walk<'s> {
    sessions: &'s Sessions,
    cursor: u32,
}

impl<'s> Iterator for Walk<'s> {
    type Item = (ConnId, &'s Session);

    fn next(&mut self) -> Option<Self::Item> {
        if self.cursor == NONE {
            return None;
        }
        let key = self.cursor;
        let session = self.sessions.at(key);
        self.cursor = session.user_next;
        let id = ConnId {
            key,
            generation: session.generation(),
        };
        Some((id, session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(sessions: &mut Sessions, key: u32) -> ConnId {
        let serial = NonZeroU64::new(u64::from(key) + 100).unwrap();
        let conn = ConnId {
            key,
            generation: serial.get() as u32,
        };
        sessions.insert(conn, Session::new(serial, 0, 0), None);
        conn
    }

    fn pushing(sessions: &Sessions) -> Vec<u32> {
        let mut keys: Vec<u32> = sessions.pushing().iter().map(|c| c.key).collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn an_open_slot_costs_48_bytes() {
        assert_eq!(std::mem::size_of::<Option<Session>>(), 48);
    }

    #[test]
    fn the_pushing_list_follows_toggles_and_departures() {
        let mut sessions = Sessions::default();
        let ids: Vec<ConnId> = (0..5).map(|k| open(&mut sessions, k)).collect();
        assert_eq!(pushing(&sessions), [0, 1, 2, 3, 4]);
        sessions.set_pushing(ids[1], false);
        sessions.set_pushing(ids[1], false); // twice is once
        assert!(!sessions.get(ids[1]).unwrap().subscribed());
        assert_eq!(pushing(&sessions), [0, 2, 3, 4]);
        sessions.remove(ids[0]);
        assert_eq!(pushing(&sessions), [2, 3, 4]);
        sessions.set_pushing(ids[1], true);
        sessions.set_pushing(ids[1], true);
        assert_eq!(pushing(&sessions), [1, 2, 3, 4]);
        sessions.remove(ids[4]);
        sessions.remove(ids[1]);
        assert_eq!(pushing(&sessions), [2, 3]);
        // A former tenant's id switches nothing.
        sessions.set_pushing(ids[0], true);
        assert_eq!(pushing(&sessions), [2, 3]);
        // Every index still points at its own entry.
        for (at, conn) in sessions.pushing().iter().enumerate() {
            assert_eq!(sessions.get(*conn).unwrap().pushing_at as usize, at);
        }
    }
}
