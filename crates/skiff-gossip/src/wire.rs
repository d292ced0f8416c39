//! Byte-level encoding shared by every message: a bounds-checked reader, writer helpers and
//! the encodings of addresses and node identities. Every length on the wire is a fixed-width
//! prefix (u8 or u16), so a decoder never allocates more than the packet it was given.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::identity::NodeId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("packet truncated while reading {0}")]
    Truncated(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// A cursor over a received packet; every read checks the remaining length first.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn bytes(
        &mut self,
        len: usize,
        what: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < len {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.bytes(8, what)?;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(b);
        Ok(u64::from_be_bytes(raw))
    }

    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    /// A byte string with a u8 length prefix.
    pub(crate) fn bytes8(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u8(what)? as usize;
        self.bytes(len, what)
    }

    /// A byte string with a u16 length prefix.
    pub(crate) fn bytes16(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u16(what)? as usize;
        self.bytes(len, what)
    }

    pub(crate) fn str8(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes8(what)?).map_err(|_| DecodeError::Invalid(what))
    }

    pub(crate) fn str16(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes16(what)?).map_err(|_| DecodeError::Invalid(what))
    }

    pub(crate) fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8("address family")? {
            4 => {
                let b = self.bytes(4, "IPv4 address")?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let mut raw = [0u8; 16];
                raw.copy_from_slice(self.bytes(16, "IPv6 address")?);
                IpAddr::V6(Ipv6Addr::from(raw))
            }
            _ => return Err(DecodeError::Invalid("address family")),
        };
        let port = self.u16("port")?;
        Ok(SocketAddr::new(ip, port))
    }

    pub(crate) fn node_id(&mut self) -> Result<NodeId, DecodeError> {
        let name = self.str8("node name")?;
        let addr = self.addr()?;
        let generation = self.u64("generation")?;
        Ok(NodeId::from_parts(Arc::from(name), addr, generation))
    }
}

pub(crate) fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Callers validate lengths before encoding (names, tags and payloads are checked against
/// the configured limits when they enter the core), so an overlong value here is a bug.
pub(crate) fn put_bytes8(out: &mut Vec<u8>, value: &[u8]) {
    let len = u8::try_from(value.len()).expect("length validated against a u8 prefix");
    out.push(len);
    out.extend_from_slice(value);
}

pub(crate) fn put_bytes16(out: &mut Vec<u8>, value: &[u8]) {
    let len = u16::try_from(value.len()).expect("length validated against a u16 prefix");
    put_u16(out, len);
    out.extend_from_slice(value);
}

pub(crate) fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    put_u16(out, addr.port());
}

pub(crate) fn put_node_id(out: &mut Vec<u8>, id: &NodeId) {
    put_bytes8(out, id.name().as_bytes());
    put_addr(out, id.addr());
    put_u64(out, id.generation());
}

/// Bytes `put_node_id` writes for `id`.
pub(crate) fn node_id_len(id: &NodeId) -> usize {
    let addr = match id.addr() {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    };
    1 + id.name().len() + addr + 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_and_length_matches() {
        for addr in ["10.1.2.3:7946", "[2001:db8::7]:7000"] {
            let id = NodeId::new("broker-1", addr.parse().unwrap(), 42).unwrap();
            let mut out = Vec::new();
            put_node_id(&mut out, &id);
            assert_eq!(out.len(), node_id_len(&id));
            let mut reader = Reader::new(&out);
            assert_eq!(reader.node_id().unwrap(), id);
            assert!(reader.is_empty());
        }
    }

    #[test]
    fn truncated_input_is_an_error_at_every_cut() {
        let id = NodeId::new("n", "127.0.0.1:1".parse().unwrap(), 7).unwrap();
        let mut out = Vec::new();
        put_node_id(&mut out, &id);
        for cut in 0..out.len() {
            assert!(Reader::new(&out[..cut]).node_id().is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn invalid_address_family_and_utf8_are_rejected() {
        let mut reader = Reader::new(&[5, 1, 2, 3, 4, 0, 1]);
        assert_eq!(reader.addr(), Err(DecodeError::Invalid("address family")));
        let mut reader = Reader::new(&[2, 0xff, 0xfe]);
        assert_eq!(reader.str8("name"), Err(DecodeError::Invalid("name")));
        let mut reader = Reader::new(&[2]);
        assert_eq!(reader.bool("flag"), Err(DecodeError::Invalid("flag")));
    }
}
