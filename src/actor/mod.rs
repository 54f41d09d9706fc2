//! One actix actor per running thing. Each owns its sockets, its pure core and its counters.
//! Other code reaches an actor only through its `Addr` and the typed `*Msg` structs in its module.

use actix::Message;

pub mod carp;
pub mod control;
pub mod dhcp;
pub mod hasync;
pub mod hooks;
pub mod iface;
pub mod nft;
pub mod pfsync;
pub mod plugins;
pub mod store;

/// Ask an actor to stop (used by the supervisor at shutdown and when a section is removed).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StopMsg;
