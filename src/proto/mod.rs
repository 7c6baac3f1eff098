//! Wire formats, on byte slices: nothing here touches a socket.

pub mod control;
pub mod demo;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod jwt;
pub mod proxy;
pub mod response;
