//! A member's identity as foca sees it, and the codec foca uses for its own messages.
//!
//! foca keys members by [`foca::Identity::addr`]; ours is the gossip address, because a node
//! joining through a seed knows only the seed's address (an Announce addressed to any identity
//! with that address is accepted). The generation orders two identities at one address: a
//! restarted process (whose generation the driver takes from the wall clock) or one that
//! renewed itself after being declared down always wins over the identity it replaces.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut};
use foca::{Header, Member, Message, State};

use crate::wire::{self, DecodeError, Reader};

/// Longest node name, in bytes (the name travels in every SWIM header twice).
pub const MAX_NODE_NAME_BYTES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    #[error("node name must be 1 to {MAX_NODE_NAME_BYTES} bytes, got {0}")]
    NameLength(usize),
    #[error("gossip address {0} is unspecified (0.0.0.0 or ::); advertise a reachable address")]
    UnspecifiedAddress(SocketAddr),
}

/// Name, gossip address and generation of one member. Cloning is cheap (the name is shared).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    name: Arc<str>,
    addr: SocketAddr,
    generation: u64,
}

impl NodeId {
    pub fn new(name: &str, addr: SocketAddr, generation: u64) -> Result<Self, NodeIdError> {
        if name.is_empty() || name.len() > MAX_NODE_NAME_BYTES {
            return Err(NodeIdError::NameLength(name.len()));
        }
        if addr.ip().is_unspecified() {
            return Err(NodeIdError::UnspecifiedAddress(addr));
        }
        // Flow info and scope id do not travel on the wire; dropping them here keeps the
        // identity equal to its decoded copy.
        let addr = SocketAddr::new(addr.ip(), addr.port());
        Ok(Self::from_parts(Arc::from(name), addr, generation))
    }

    pub(crate) fn from_parts(name: Arc<str>, addr: SocketAddr, generation: u64) -> Self {
        Self {
            name,
            addr,
            generation,
        }
    }

    /// Stands for "whoever listens at `addr`" in an Announce sent to a seed whose name we do
    /// not know yet; foca accepts an Announce addressed to any identity with its address.
    pub(crate) fn placeholder(addr: SocketAddr) -> Self {
        Self::from_parts(Arc::from(""), addr, 0)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.generation)
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        let generation = self.generation.checked_add(1)?;
        Some(Self::from_parts(self.name.clone(), self.addr, generation))
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, &self.name) > (adversary.generation, &adversary.name)
    }
}

/// foca's messages in a compact binary form (no serde): identities as
/// [`wire::put_node_id`], incarnations as u16, message and state tags as one byte.
#[derive(Debug, Default)]
pub(crate) struct SwimCodec {
    scratch: Vec<u8>,
}

const MSG_PING: u8 = 0;
const MSG_ACK: u8 = 1;
const MSG_PING_REQ: u8 = 2;
const MSG_INDIRECT_PING: u8 = 3;
const MSG_INDIRECT_ACK: u8 = 4;
const MSG_FORWARDED_ACK: u8 = 5;
const MSG_ANNOUNCE: u8 = 6;
const MSG_FEED: u8 = 7;
const MSG_GOSSIP: u8 = 8;
const MSG_BROADCAST: u8 = 9;
const MSG_TURN_UNDEAD: u8 = 10;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SwimCodecError {
    #[error("not enough room in the packet")]
    NoRoom,
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

fn encode_message(out: &mut Vec<u8>, message: &Message<NodeId>) {
    match message {
        Message::Ping(n) => out.extend_from_slice(&[MSG_PING, *n]),
        Message::Ack(n) => out.extend_from_slice(&[MSG_ACK, *n]),
        Message::PingReq {
            target,
            probe_number,
        } => {
            out.push(MSG_PING_REQ);
            wire::put_node_id(out, target);
            out.push(*probe_number);
        }
        Message::IndirectPing {
            origin,
            probe_number,
        } => {
            out.push(MSG_INDIRECT_PING);
            wire::put_node_id(out, origin);
            out.push(*probe_number);
        }
        Message::IndirectAck {
            target,
            probe_number,
        } => {
            out.push(MSG_INDIRECT_ACK);
            wire::put_node_id(out, target);
            out.push(*probe_number);
        }
        Message::ForwardedAck {
            origin,
            probe_number,
        } => {
            out.push(MSG_FORWARDED_ACK);
            wire::put_node_id(out, origin);
            out.push(*probe_number);
        }
        Message::Announce => out.push(MSG_ANNOUNCE),
        Message::Feed => out.push(MSG_FEED),
        Message::Gossip => out.push(MSG_GOSSIP),
        Message::Broadcast => out.push(MSG_BROADCAST),
        Message::TurnUndead => out.push(MSG_TURN_UNDEAD),
    }
}

fn decode_message(reader: &mut Reader<'_>) -> Result<Message<NodeId>, DecodeError> {
    let tag = reader.u8("message type")?;
    let message = match tag {
        MSG_PING => Message::Ping(reader.u8("probe number")?),
        MSG_ACK => Message::Ack(reader.u8("probe number")?),
        MSG_PING_REQ => Message::PingReq {
            target: reader.node_id()?,
            probe_number: reader.u8("probe number")?,
        },
        MSG_INDIRECT_PING => Message::IndirectPing {
            origin: reader.node_id()?,
            probe_number: reader.u8("probe number")?,
        },
        MSG_INDIRECT_ACK => Message::IndirectAck {
            target: reader.node_id()?,
            probe_number: reader.u8("probe number")?,
        },
        MSG_FORWARDED_ACK => Message::ForwardedAck {
            origin: reader.node_id()?,
            probe_number: reader.u8("probe number")?,
        },
        MSG_ANNOUNCE => Message::Announce,
        MSG_FEED => Message::Feed,
        MSG_GOSSIP => Message::Gossip,
        MSG_BROADCAST => Message::Broadcast,
        MSG_TURN_UNDEAD => Message::TurnUndead,
        _ => return Err(DecodeError::Invalid("message type")),
    };
    Ok(message)
}

impl SwimCodec {
    /// foca requires that a failed encode leaves the buffer untouched, so each item is
    /// encoded into scratch space first and copied only when it fits.
    fn emit(&mut self, mut buf: impl BufMut) -> Result<(), SwimCodecError> {
        if buf.remaining_mut() < self.scratch.len() {
            return Err(SwimCodecError::NoRoom);
        }
        buf.put_slice(&self.scratch);
        Ok(())
    }

    fn decode<T>(
        mut buf: impl Buf,
        decode: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
    ) -> Result<T, SwimCodecError> {
        let chunk = buf.chunk();
        let mut reader = Reader::new(chunk);
        let value = decode(&mut reader)?;
        let consumed = chunk.len() - reader.remaining();
        buf.advance(consumed);
        Ok(value)
    }
}

impl foca::Codec<NodeId> for SwimCodec {
    type Error = SwimCodecError;

    fn encode_header(
        &mut self,
        header: &Header<NodeId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        self.scratch.clear();
        wire::put_node_id(&mut self.scratch, &header.src);
        wire::put_u16(&mut self.scratch, header.src_incarnation);
        wire::put_node_id(&mut self.scratch, &header.dst);
        encode_message(&mut self.scratch, &header.message);
        self.emit(buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeId>, Self::Error> {
        Self::decode(buf, |reader| {
            Ok(Header {
                src: reader.node_id()?,
                src_incarnation: reader.u16("incarnation")?,
                dst: reader.node_id()?,
                message: decode_message(reader)?,
            })
        })
    }

    fn encode_member(
        &mut self,
        member: &Member<NodeId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        self.scratch.clear();
        wire::put_node_id(&mut self.scratch, member.id());
        wire::put_u16(&mut self.scratch, member.incarnation());
        self.scratch.push(match member.state() {
            State::Alive => 0,
            State::Suspect => 1,
            State::Down => 2,
        });
        self.emit(buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeId>, Self::Error> {
        Self::decode(buf, |reader| {
            let id = reader.node_id()?;
            let incarnation = reader.u16("incarnation")?;
            let state = match reader.u8("member state")? {
                0 => State::Alive,
                1 => State::Suspect,
                2 => State::Down,
                _ => return Err(DecodeError::Invalid("member state")),
            };
            Ok(Member::new(id, incarnation, state))
        })
    }
}

#[cfg(test)]
mod tests {
    use foca::{Codec, Identity};

    use super::*;

    fn id(name: &str, port: u16, generation: u64) -> NodeId {
        NodeId::new(name, SocketAddr::from(([127, 0, 0, 1], port)), generation).unwrap()
    }

    #[test]
    fn names_and_addresses_are_validated() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(NodeId::new("", addr, 0), Err(NodeIdError::NameLength(0)));
        let long = "x".repeat(MAX_NODE_NAME_BYTES + 1);
        assert_eq!(
            NodeId::new(&long, addr, 0),
            Err(NodeIdError::NameLength(MAX_NODE_NAME_BYTES + 1))
        );
        let any = SocketAddr::from(([0, 0, 0, 0], 1));
        assert_eq!(
            NodeId::new("a", any, 0),
            Err(NodeIdError::UnspecifiedAddress(any))
        );
    }

    #[test]
    fn renewed_identity_wins_over_the_old_one() {
        let old = id("a", 1, 5);
        let new = old.renew().unwrap();
        assert_eq!(new.generation(), 6);
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        assert_eq!(id("a", 1, u64::MAX).renew(), None);
    }

    #[test]
    fn every_message_round_trips() {
        let target = id("target", 2, 1);
        let messages = [
            Message::Ping(1),
            Message::Ack(2),
            Message::PingReq {
                target: target.clone(),
                probe_number: 3,
            },
            Message::IndirectPing {
                origin: target.clone(),
                probe_number: 4,
            },
            Message::IndirectAck {
                target: target.clone(),
                probe_number: 5,
            },
            Message::ForwardedAck {
                origin: target,
                probe_number: 6,
            },
            Message::Announce,
            Message::Feed,
            Message::Gossip,
            Message::Broadcast,
            Message::TurnUndead,
        ];
        let mut codec = SwimCodec::default();
        for message in messages {
            let header = Header {
                src: id("src", 3, 9),
                src_incarnation: 77,
                dst: id("dst", 4, 10),
                message,
            };
            let mut out = Vec::new();
            codec.encode_header(&header, &mut out).unwrap();
            let mut slice = &out[..];
            assert_eq!(codec.decode_header(&mut slice).unwrap(), header);
            assert!(slice.is_empty());
        }
    }

    #[test]
    fn members_round_trip_and_encoding_never_overflows_the_buffer() {
        let mut codec = SwimCodec::default();
        let member = Member::new(id("m", 5, 3), 12, State::Suspect);
        let mut out = Vec::new();
        codec.encode_member(&member, &mut out).unwrap();
        let mut slice = &out[..];
        assert_eq!(codec.decode_member(&mut slice).unwrap(), member);

        let mut small = Vec::new();
        let limited = (&mut small).limit(out.len() - 1);
        assert!(matches!(
            codec.encode_member(&member, limited),
            Err(SwimCodecError::NoRoom)
        ));
        assert!(
            small.is_empty(),
            "a failed encode must not leave partial bytes"
        );

        let mut bad_state = out.clone();
        *bad_state.last_mut().unwrap() = 9;
        assert!(codec.decode_member(&mut &bad_state[..]).is_err());
    }
}
