//! Records of the internal `__consumer_offsets` topic, in Apache Kafka's own formats so Kafka tools
//! can read them: offset commits (key version 1, value version 3) and group metadata (key
//! version 2, value version 3). A null value is a tombstone.

use bytes::{Buf, BufMut, Bytes};

pub use skiff_metadata::OFFSETS_TOPIC;

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

/// A committed offset, as stored and as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A member as persisted with its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's membership as persisted after each completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<StoredMember>,
}

/// What one record of `__consumer_offsets` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
    },
    Group {
        group: String,
        value: Option<StoredGroup>,
    },
}

/// The `__consumer_offsets` partition of a group: Java's `String.hashCode`, as Kafka computes it,
/// so a group lives in the same partition as it would on Kafka.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    // Kafka's Utils.abs maps i32::MIN to 0 rather than overflowing.
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.put_i16(s.len() as i16);
    out.put_slice(s.as_bytes());
}

fn put_nullable_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.put_slice(b);
}

impl Entry {
    /// The record key and value (None for a tombstone).
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut key = Vec::new();
        match self {
            Entry::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                key.put_i16(OFFSET_KEY_VERSION);
                put_string(&mut key, group);
                put_string(&mut key, topic);
                key.put_i32(*partition);
                let value = value.as_ref().map(|v| {
                    let mut out = Vec::new();
                    out.put_i16(OFFSET_VALUE_VERSION);
                    out.put_i64(v.offset);
                    out.put_i32(v.leader_epoch);
                    put_string(&mut out, &v.metadata);
                    out.put_i64(v.commit_timestamp_ms);
                    out
                });
                (key, value)
            }
            Entry::Group { group, value } => {
                key.put_i16(GROUP_KEY_VERSION);
                put_string(&mut key, group);
                let value = value.as_ref().map(|g| {
                    let mut out = Vec::new();
                    out.put_i16(GROUP_VALUE_VERSION);
                    put_string(&mut out, &g.protocol_type);
                    out.put_i32(g.generation);
                    put_nullable_string(&mut out, g.protocol.as_deref());
                    put_nullable_string(&mut out, g.leader.as_deref());
                    out.put_i64(g.state_timestamp_ms);
                    out.put_i32(g.members.len() as i32);
                    for m in &g.members {
                        put_string(&mut out, &m.member_id);
                        put_nullable_string(&mut out, m.instance_id.as_deref());
                        put_string(&mut out, &m.client_id);
                        put_string(&mut out, &m.client_host);
                        out.put_i32(m.rebalance_timeout_ms);
                        out.put_i32(m.session_timeout_ms);
                        put_bytes(&mut out, &m.subscription);
                        put_bytes(&mut out, &m.assignment);
                    }
                    out
                });
                (key, value)
            }
        }
    }

    /// Decodes a record; `None` for a key this version of Skiff does not know (skipped, as
    /// Kafka skips unknown record types on load).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<Entry>, String> {
        let mut k = Reader(key);
        match k.i16()? {
            0 | OFFSET_KEY_VERSION => {
                let group = k.string()?;
                let topic = k.string()?;
                let partition = k.i32()?;
                let value = value.map(decode_offset_value).transpose()?;
                Ok(Some(Entry::Offset {
                    group,
                    topic,
                    partition,
                    value,
                }))
            }
            GROUP_KEY_VERSION => {
                let group = k.string()?;
                let value = value.map(decode_group_value).transpose()?;
                Ok(Some(Entry::Group { group, value }))
            }
            _ => Ok(None),
        }
    }
}

fn decode_offset_value(value: &[u8]) -> Result<CommittedOffset, String> {
    let mut v = Reader(value);
    let version = v.i16()?;
    let offset = v.i64()?;
    let leader_epoch = if version >= 3 { v.i32()? } else { -1 };
    let metadata = v.string()?;
    let commit_timestamp_ms = v.i64()?;
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn decode_group_value(value: &[u8]) -> Result<StoredGroup, String> {
    let mut v = Reader(value);
    let version = v.i16()?;
    if version != GROUP_VALUE_VERSION {
        return Err(format!(
            "group metadata value version {version} is not supported"
        ));
    }
    let protocol_type = v.string()?;
    let generation = v.i32()?;
    let protocol = v.nullable_string()?;
    let leader = v.nullable_string()?;
    let state_timestamp_ms = v.i64()?;
    let count = v.i32()?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        members.push(StoredMember {
            member_id: v.string()?,
            instance_id: v.nullable_string()?,
            client_id: v.string()?,
            client_host: v.string()?,
            rebalance_timeout_ms: v.i32()?,
            session_timeout_ms: v.i32()?,
            subscription: v.bytes()?,
            assignment: v.bytes()?,
        });
    }
    Ok(StoredGroup {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp_ms,
        members,
    })
}

/// Bounds-checked big-endian reads.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), String> {
        if self.0.remaining() < n {
            return Err(format!(
                "record truncated: need {n} bytes, have {}",
                self.0.len()
            ));
        }
        Ok(())
    }
    fn i16(&mut self) -> Result<i16, String> {
        self.need(2)?;
        Ok(self.0.get_i16())
    }
    fn i32(&mut self) -> Result<i32, String> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }
    fn i64(&mut self) -> Result<i64, String> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }
    fn nullable_string(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        self.need(len as usize)?;
        let (s, rest) = self.0.split_at(len as usize);
        self.0 = rest;
        String::from_utf8(s.to_vec())
            .map(Some)
            .map_err(|_| "string is not UTF-8".to_string())
    }
    fn string(&mut self) -> Result<String, String> {
        self.nullable_string()?
            .ok_or_else(|| "null where a string is required".to_string())
    }
    fn bytes(&mut self) -> Result<Bytes, String> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        self.need(len as usize)?;
        let (b, rest) = self.0.split_at(len as usize);
        self.0 = rest;
        Ok(Bytes::copy_from_slice(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_kafka() {
        // Java: Math.abs("my-group".hashCode()) % 50
        let java_hash = "my-group"
            .chars()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
        assert_eq!(partition_for("my-group", 50), java_hash.abs() % 50);
        assert!((0..50).contains(&partition_for("", 50)));
    }

    #[test]
    fn entries_round_trip() {
        let entries = [
            Entry::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: Some(CommittedOffset {
                    offset: 42,
                    leader_epoch: 0,
                    metadata: "meta".into(),
                    commit_timestamp_ms: 1000,
                }),
            },
            Entry::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: None,
            },
            Entry::Group {
                group: "g".into(),
                value: Some(StoredGroup {
                    protocol_type: "consumer".into(),
                    generation: 7,
                    protocol: Some("range".into()),
                    leader: Some("m1".into()),
                    state_timestamp_ms: 5,
                    members: vec![StoredMember {
                        member_id: "m1".into(),
                        instance_id: Some("i1".into()),
                        client_id: "c".into(),
                        client_host: "/127.0.0.1".into(),
                        rebalance_timeout_ms: 300000,
                        session_timeout_ms: 45000,
                        subscription: Bytes::from_static(b"sub"),
                        assignment: Bytes::from_static(b"asg"),
                    }],
                }),
            },
        ];
        for entry in entries {
            let (key, value) = entry.encode();
            assert_eq!(Entry::decode(&key, value.as_deref()), Ok(Some(entry)));
        }
    }

    #[test]
    fn truncated_records_are_errors() {
        let (key, value) = Entry::Group {
            group: "g".into(),
            value: None,
        }
        .encode();
        assert!(value.is_none());
        assert!(Entry::decode(&key[..3], None).is_err());
        assert!(Entry::decode(&key, Some(&[0, 3, 0])).is_err());
        assert_eq!(Entry::decode(&[0, 9], None), Ok(None));
    }
}
