//! The users that are online, each with the list of its connections.
//!
//! A user's connections form a doubly linked list threaded through the
//! connection slab (`user_prev` / `user_next` in [`Conn`]), oldest first, so
//! joining, leaving and "close the oldest" are O(1) and cost no allocation
//! per connection. A user exists here only while it has a connection.

use std::collections::HashMap;
use std::rc::Rc;

use slab::Slab;

use crate::conn::{Conn, NONE};

/// One online user.
#[derive(Debug)]
pub struct User {
    /// The user's name, as the token table gave it.
    pub name: Rc<str>,
    /// Oldest connection (slab key), or [`NONE`].
    pub head: u32,
    /// Newest connection.
    pub tail: u32,
    /// Number of connections in the list.
    pub count: u32,
}

/// The online-user table.
#[derive(Debug, Default)]
pub struct Users {
    table: Slab<User>,
    by_name: HashMap<Rc<str>, u32>,
}

impl Users {
    /// The index of an online user.
    pub fn find(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// A user by index.
    pub fn get(&self, index: u32) -> &User {
        &self.table[index as usize]
    }

    /// Online users.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether nobody is online.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Append connection `key` to `name`'s list (creating the user).
    pub fn join(&mut self, name: Rc<str>, key: usize, conns: &mut Slab<Conn>) {
        let index = match self.by_name.get(&name) {
            Some(&i) => i,
            None => {
                let i = self.table.insert(User {
                    name: name.clone(),
                    head: NONE,
                    tail: NONE,
                    count: 0,
                });
                let i = u32::try_from(i).expect("fewer than 4G users");
                self.by_name.insert(name, i);
                i
            }
        };
        let user = &mut self.table[index as usize];
        let key32 = u32::try_from(key).expect("fewer than 4G connections");
        let conn = &mut conns[key];
        conn.user = index;
        conn.user_prev = user.tail;
        conn.user_next = NONE;
        if user.tail == NONE {
            user.head = key32;
        } else {
            conns[user.tail as usize].user_next = key32;
        }
        user.tail = key32;
        user.count += 1;
    }

    /// Remove connection `key` from its user's list (no-op when not in one);
    /// the user goes once its last connection has left.
    pub fn leave(&mut self, key: usize, conns: &mut Slab<Conn>) {
        let conn = &mut conns[key];
        let index = std::mem::replace(&mut conn.user, NONE);
        if index == NONE {
            return;
        }
        let (prev, next) = (conn.user_prev, conn.user_next);
        conn.user_prev = NONE;
        conn.user_next = NONE;
        let user = &mut self.table[index as usize];
        if prev == NONE {
            user.head = next;
        } else {
            conns[prev as usize].user_next = next;
        }
        if next == NONE {
            user.tail = prev;
        } else {
            conns[next as usize].user_prev = prev;
        }
        user.count -= 1;
        if user.count == 0 {
            let user = self.table.remove(index as usize);
            self.by_name.remove(&user.name);
        }
    }

    /// The slab keys of a user's connections, oldest first.
    pub fn connections(&self, index: u32, conns: &Slab<Conn>) -> Vec<usize> {
        let mut keys = Vec::with_capacity(self.table[index as usize].count as usize);
        let mut cursor = self.table[index as usize].head;
        while cursor != NONE {
            keys.push(cursor as usize);
            cursor = conns[cursor as usize].user_next;
        }
        keys
    }
}
