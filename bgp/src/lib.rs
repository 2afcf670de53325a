//! A small BGP-4 speaker that announces routes and learns none: the message
//! codec (`message`, framed for tokio by `codec`), what changes between two
//! route sets as UPDATE messages (`rib`), and one peer's session with its
//! RFC 4271 state machine, timers, graceful restart as a restarting speaker
//! and reconnect backoff (`session`). It knows nothing of Kubernetes or
//! clouds: a caller hands each session the routes it wants announced and
//! reads back the session's state.
//!
//! IPv4 unicast only, NLRI in the UPDATE body (RFC 4271), 4-octet AS
//! numbers (RFC 6793), graceful restart (RFC 4724) and route refresh
//! (RFC 2918). Every malformed input becomes the NOTIFICATION the RFCs name
//! for it; nothing from the wire can panic.

pub mod codec;
pub mod message;
pub mod rib;
pub mod session;

pub use message::{Message, Notification, Open};
pub use session::{PeerConfig, PeerState, PeerStatus, Session};
