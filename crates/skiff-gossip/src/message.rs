//! Skiff's own messages, carried next to foca's in the same datagrams.
//!
//! Datagram layout (all integers big-endian):
//!
//! ```text
//! plain:     MAGIC VERSION kind body...
//! encrypted: MAGIC VERSION KIND_ENCRYPTED nonce[12] AES-256-GCM(kind body...) tag[16]
//!            (the three header bytes are the associated data)
//! kind SWIM:   u16 foca_len, foca packet, gossip items...   (items piggyback on every SWIM packet)
//! kind GOSSIP: gossip items...                              (our own periodic dissemination)
//! other kinds: one direct message (state sync, tag pull, query ack/response, suspicion notice)
//! gossip item: u8 type, u16 len, payload
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::identity::NodeId;
use crate::wire::{self, DecodeError, Reader};

pub(crate) const MAGIC: u8 = 0xA7;
pub(crate) const VERSION: u8 = 1;

pub(crate) const KIND_SWIM: u8 = 1;
pub(crate) const KIND_GOSSIP: u8 = 2;
pub(crate) const KIND_SYNC: u8 = 3;
pub(crate) const KIND_TAGS_REQUEST: u8 = 4;
pub(crate) const KIND_QUERY_ACK: u8 = 5;
pub(crate) const KIND_QUERY_RESPONSE: u8 = 6;
pub(crate) const KIND_SUSPECTED: u8 = 7;
pub(crate) const KIND_ENCRYPTED: u8 = 0x80;

/// MAGIC, VERSION and kind.
pub(crate) const HEADER_LEN: usize = 3;
/// Type byte and u16 length in front of every gossip item.
pub(crate) const ITEM_OVERHEAD: usize = 3;

const ITEM_TAGS: u8 = 1;
const ITEM_LEAVE: u8 = 2;
const ITEM_EVENT: u8 = 3;
const ITEM_QUERY: u8 = 4;

/// A member's tags: node id, Kafka/Raft/HTTP addresses, rack, role, version, ...
pub type Tags = BTreeMap<String, String>;

/// Orders the tag sets one member publishes: a newer generation (a restart or a renewed
/// identity) always wins, and within a generation the owner's counter decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct TagsVersion {
    pub(crate) generation: u64,
    pub(crate) counter: u64,
}

/// A member's tags, with its identity: the item doubles as news that the member is alive,
/// a second dissemination path next to foca's own membership updates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TagsUpdate {
    pub(crate) id: NodeId,
    pub(crate) version: TagsVersion,
    pub(crate) tags: Tags,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LeaveIntent {
    pub(crate) name: Arc<str>,
    pub(crate) generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventMessage {
    pub(crate) ltime: u64,
    pub(crate) name: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) coalesce: bool,
}

/// Which members answer a query: all of them, or those whose name is listed and whose tags
/// match every (tag, regex) pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryFilter {
    pub nodes: Vec<String>,
    pub tags: Vec<(String, String)>,
}

impl QueryFilter {
    /// Matches members whose tag `key` equals `value` exactly.
    pub fn tag_equals(mut self, key: &str, value: &str) -> Self {
        self.tags
            .push((key.to_string(), format!("^{}$", regex::escape(value))));
        self
    }

    /// Matches members whose tag `key` matches the regular expression `pattern`.
    pub fn tag_matches(mut self, key: &str, pattern: &str) -> Self {
        self.tags.push((key.to_string(), pattern.to_string()));
        self
    }

    pub fn node(mut self, name: &str) -> Self {
        self.nodes.push(name.to_string());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryMessage {
    pub(crate) ltime: u64,
    pub(crate) id: u32,
    pub(crate) origin: String,
    pub(crate) origin_addr: SocketAddr,
    pub(crate) timeout_ms: u32,
    pub(crate) want_ack: bool,
    pub(crate) filter: QueryFilter,
    pub(crate) name: String,
    pub(crate) payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GossipItem {
    Tags(TagsUpdate),
    Leave(LeaveIntent),
    Event(EventMessage),
    Query(QueryMessage),
}

/// One member as described in a state sync.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyncMember {
    pub(crate) id: NodeId,
    pub(crate) incarnation: u16,
    pub(crate) left_generation: Option<u64>,
    pub(crate) tags: Option<(TagsVersion, Tags)>,
}

/// One datagram of a push-pull state exchange; a full state is as many chunks as it takes.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct SyncChunk {
    pub(crate) reply_wanted: bool,
    pub(crate) event_clock: u64,
    pub(crate) query_clock: u64,
    pub(crate) members: Vec<SyncMember>,
    pub(crate) events: Vec<EventMessage>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Direct {
    Sync(SyncChunk),
    TagsRequest,
    QueryAck {
        ltime: u64,
        id: u32,
        from: String,
    },
    QueryResponse {
        ltime: u64,
        id: u32,
        from: String,
        payload: Vec<u8>,
    },
    Suspected {
        incarnation: u16,
    },
}

/// A decoded datagram (after decryption).
#[derive(Debug)]
pub(crate) enum Packet<'a> {
    Swim {
        foca: &'a [u8],
        items: Vec<GossipItem>,
    },
    Gossip {
        items: Vec<GossipItem>,
    },
    Direct(Direct),
}

fn put_tags(out: &mut Vec<u8>, tags: &Tags) {
    out.push(u8::try_from(tags.len()).expect("tag count validated"));
    for (key, value) in tags {
        wire::put_bytes8(out, key.as_bytes());
        wire::put_bytes16(out, value.as_bytes());
    }
}

fn read_tags(reader: &mut Reader<'_>) -> Result<Tags, DecodeError> {
    let count = reader.u8("tag count")?;
    let mut tags = Tags::new();
    for _ in 0..count {
        let key = reader.str8("tag key")?;
        let value = reader.str16("tag value")?;
        tags.insert(key.to_string(), value.to_string());
    }
    Ok(tags)
}

/// Bytes `put_tags` writes: the figure the tag size limit applies to.
pub(crate) fn tags_encoded_len(tags: &Tags) -> usize {
    1 + tags
        .iter()
        .map(|(key, value)| 1 + key.len() + 2 + value.len())
        .sum::<usize>()
}

fn put_event(out: &mut Vec<u8>, event: &EventMessage) {
    wire::put_u64(out, event.ltime);
    out.push(u8::from(event.coalesce));
    wire::put_bytes8(out, event.name.as_bytes());
    wire::put_bytes16(out, &event.payload);
}

fn read_event(reader: &mut Reader<'_>) -> Result<EventMessage, DecodeError> {
    Ok(EventMessage {
        ltime: reader.u64("event ltime")?,
        coalesce: reader.bool("coalesce flag")?,
        name: reader.str8("event name")?.to_string(),
        payload: reader.bytes16("event payload")?.to_vec(),
    })
}

fn put_query(out: &mut Vec<u8>, query: &QueryMessage) {
    wire::put_u64(out, query.ltime);
    wire::put_u32(out, query.id);
    wire::put_bytes8(out, query.origin.as_bytes());
    wire::put_addr(out, query.origin_addr);
    wire::put_u32(out, query.timeout_ms);
    out.push(u8::from(query.want_ack));
    out.push(u8::try_from(query.filter.nodes.len()).expect("filter size validated"));
    for node in &query.filter.nodes {
        wire::put_bytes8(out, node.as_bytes());
    }
    out.push(u8::try_from(query.filter.tags.len()).expect("filter size validated"));
    for (key, pattern) in &query.filter.tags {
        wire::put_bytes8(out, key.as_bytes());
        wire::put_bytes8(out, pattern.as_bytes());
    }
    wire::put_bytes8(out, query.name.as_bytes());
    wire::put_bytes16(out, &query.payload);
}

fn read_query(reader: &mut Reader<'_>) -> Result<QueryMessage, DecodeError> {
    let ltime = reader.u64("query ltime")?;
    let id = reader.u32("query id")?;
    let origin = reader.str8("query origin")?.to_string();
    let origin_addr = reader.addr()?;
    let timeout_ms = reader.u32("query timeout")?;
    let want_ack = reader.bool("ack flag")?;
    let mut filter = QueryFilter::default();
    for _ in 0..reader.u8("node filter count")? {
        filter.nodes.push(reader.str8("node filter")?.to_string());
    }
    for _ in 0..reader.u8("tag filter count")? {
        let key = reader.str8("tag filter key")?.to_string();
        let pattern = reader.str8("tag filter pattern")?.to_string();
        filter.tags.push((key, pattern));
    }
    Ok(QueryMessage {
        ltime,
        id,
        origin,
        origin_addr,
        timeout_ms,
        want_ack,
        filter,
        name: reader.str8("query name")?.to_string(),
        payload: reader.bytes16("query payload")?.to_vec(),
    })
}

impl GossipItem {
    /// The item with its type and length prefix, ready to be queued for dissemination.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let kind = match self {
            GossipItem::Tags(update) => {
                wire::put_node_id(&mut body, &update.id);
                wire::put_u64(&mut body, update.version.generation);
                wire::put_u64(&mut body, update.version.counter);
                put_tags(&mut body, &update.tags);
                ITEM_TAGS
            }
            GossipItem::Leave(intent) => {
                wire::put_bytes8(&mut body, intent.name.as_bytes());
                wire::put_u64(&mut body, intent.generation);
                ITEM_LEAVE
            }
            GossipItem::Event(event) => {
                put_event(&mut body, event);
                ITEM_EVENT
            }
            GossipItem::Query(query) => {
                put_query(&mut body, query);
                ITEM_QUERY
            }
        };
        let mut out = Vec::with_capacity(ITEM_OVERHEAD + body.len());
        out.push(kind);
        wire::put_bytes16(&mut out, &body);
        out
    }

    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let kind = reader.u8("item type")?;
        let mut body = Reader::new(reader.bytes16("item")?);
        let item = match kind {
            ITEM_TAGS => GossipItem::Tags(TagsUpdate {
                id: body.node_id()?,
                version: TagsVersion {
                    generation: body.u64("tags generation")?,
                    counter: body.u64("tags counter")?,
                },
                tags: read_tags(&mut body)?,
            }),
            ITEM_LEAVE => GossipItem::Leave(LeaveIntent {
                name: Arc::from(body.str8("node name")?),
                generation: body.u64("generation")?,
            }),
            ITEM_EVENT => GossipItem::Event(read_event(&mut body)?),
            ITEM_QUERY => GossipItem::Query(read_query(&mut body)?),
            _ => return Err(DecodeError::Invalid("item type")),
        };
        if !body.is_empty() {
            return Err(DecodeError::Invalid("trailing bytes in item"));
        }
        Ok(item)
    }
}

fn read_items(reader: &mut Reader<'_>) -> Result<Vec<GossipItem>, DecodeError> {
    let mut items = Vec::new();
    while !reader.is_empty() {
        items.push(GossipItem::decode(reader)?);
    }
    Ok(items)
}

fn put_sync_member(out: &mut Vec<u8>, member: &SyncMember) {
    wire::put_node_id(out, &member.id);
    wire::put_u16(out, member.incarnation);
    match member.left_generation {
        Some(generation) => {
            out.push(1);
            wire::put_u64(out, generation);
        }
        None => out.push(0),
    }
    match &member.tags {
        Some((version, tags)) => {
            out.push(1);
            wire::put_u64(out, version.generation);
            wire::put_u64(out, version.counter);
            put_tags(out, tags);
        }
        None => out.push(0),
    }
}

fn read_sync_member(reader: &mut Reader<'_>) -> Result<SyncMember, DecodeError> {
    let id = reader.node_id()?;
    let incarnation = reader.u16("incarnation")?;
    let left_generation = if reader.bool("left flag")? {
        Some(reader.u64("left generation")?)
    } else {
        None
    };
    let tags = if reader.bool("tags flag")? {
        let version = TagsVersion {
            generation: reader.u64("tags generation")?,
            counter: reader.u64("tags counter")?,
        };
        Some((version, read_tags(reader)?))
    } else {
        None
    };
    Ok(SyncMember {
        id,
        incarnation,
        left_generation,
        tags,
    })
}

/// Bytes a member takes in a sync chunk.
pub(crate) fn sync_member_len(member: &SyncMember) -> usize {
    let left = if member.left_generation.is_some() {
        9
    } else {
        1
    };
    let tags = member
        .tags
        .as_ref()
        .map_or(1, |(_, tags)| 1 + 16 + tags_encoded_len(tags));
    wire::node_id_len(&member.id) + 2 + left + tags
}

/// Bytes an event takes in a sync chunk.
pub(crate) fn sync_event_len(event: &EventMessage) -> usize {
    8 + 1 + 1 + event.name.len() + 2 + event.payload.len()
}

/// Fixed part of a sync chunk: flag, two clocks, two counts.
pub(crate) const SYNC_CHUNK_FIXED_LEN: usize = 1 + 8 + 8 + 2 + 2;

impl Direct {
    /// `[kind][body]`, the part of a datagram after MAGIC and VERSION.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Direct::Sync(chunk) => {
                out.push(KIND_SYNC);
                out.push(u8::from(chunk.reply_wanted));
                wire::put_u64(out, chunk.event_clock);
                wire::put_u64(out, chunk.query_clock);
                wire::put_u16(
                    out,
                    u16::try_from(chunk.members.len()).expect("chunk sized"),
                );
                for member in &chunk.members {
                    put_sync_member(out, member);
                }
                wire::put_u16(out, u16::try_from(chunk.events.len()).expect("chunk sized"));
                for event in &chunk.events {
                    put_event(out, event);
                }
            }
            Direct::TagsRequest => out.push(KIND_TAGS_REQUEST),
            Direct::QueryAck { ltime, id, from } => {
                out.push(KIND_QUERY_ACK);
                wire::put_u64(out, *ltime);
                wire::put_u32(out, *id);
                wire::put_bytes8(out, from.as_bytes());
            }
            Direct::QueryResponse {
                ltime,
                id,
                from,
                payload,
            } => {
                out.push(KIND_QUERY_RESPONSE);
                wire::put_u64(out, *ltime);
                wire::put_u32(out, *id);
                wire::put_bytes8(out, from.as_bytes());
                wire::put_bytes16(out, payload);
            }
            Direct::Suspected { incarnation } => {
                out.push(KIND_SUSPECTED);
                wire::put_u16(out, *incarnation);
            }
        }
    }
}

/// Decodes `[kind][body]`; nothing may follow the message.
pub(crate) fn decode_packet(plain: &[u8]) -> Result<Packet<'_>, DecodeError> {
    let mut reader = Reader::new(plain);
    let kind = reader.u8("packet kind")?;
    let packet = match kind {
        KIND_SWIM => {
            let foca = reader.bytes16("SWIM message")?;
            if foca.is_empty() {
                return Err(DecodeError::Invalid("empty SWIM message"));
            }
            Packet::Swim {
                foca,
                items: read_items(&mut reader)?,
            }
        }
        KIND_GOSSIP => Packet::Gossip {
            items: read_items(&mut reader)?,
        },
        KIND_SYNC => {
            let reply_wanted = reader.bool("reply flag")?;
            let event_clock = reader.u64("event clock")?;
            let query_clock = reader.u64("query clock")?;
            let mut members = Vec::new();
            for _ in 0..reader.u16("member count")? {
                members.push(read_sync_member(&mut reader)?);
            }
            let mut events = Vec::new();
            for _ in 0..reader.u16("event count")? {
                events.push(read_event(&mut reader)?);
            }
            Packet::Direct(Direct::Sync(SyncChunk {
                reply_wanted,
                event_clock,
                query_clock,
                members,
                events,
            }))
        }
        KIND_TAGS_REQUEST => Packet::Direct(Direct::TagsRequest),
        KIND_QUERY_ACK => Packet::Direct(Direct::QueryAck {
            ltime: reader.u64("query ltime")?,
            id: reader.u32("query id")?,
            from: reader.str8("responder")?.to_string(),
        }),
        KIND_QUERY_RESPONSE => Packet::Direct(Direct::QueryResponse {
            ltime: reader.u64("query ltime")?,
            id: reader.u32("query id")?,
            from: reader.str8("responder")?.to_string(),
            payload: reader.bytes16("response payload")?.to_vec(),
        }),
        KIND_SUSPECTED => Packet::Direct(Direct::Suspected {
            incarnation: reader.u16("incarnation")?,
        }),
        _ => return Err(DecodeError::Invalid("packet kind")),
    };
    if !reader.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes"));
    }
    Ok(packet)
}

/// `[KIND_SWIM][u16 len][foca bytes]`; items are appended by the caller.
pub(crate) fn put_swim(out: &mut Vec<u8>, foca: &[u8]) {
    out.push(KIND_SWIM);
    wire::put_bytes16(out, foca);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_query() -> QueryMessage {
        QueryMessage {
            ltime: 9,
            id: 77,
            origin: "asker".into(),
            origin_addr: "127.0.0.1:7946".parse().unwrap(),
            timeout_ms: 1500,
            want_ack: true,
            filter: QueryFilter::default().node("b1").tag_equals("rack", "r1.a"),
            name: "ping".into(),
            payload: vec![1, 2, 3],
        }
    }

    fn sample_items() -> Vec<GossipItem> {
        let mut tags = Tags::new();
        tags.insert("kafka".into(), "10.0.0.1:9092".into());
        tags.insert("role".into(), "voter".into());
        vec![
            GossipItem::Tags(TagsUpdate {
                id: NodeId::new("b1", "127.0.0.1:9".parse().unwrap(), 3).unwrap(),
                version: TagsVersion {
                    generation: 3,
                    counter: 4,
                },
                tags,
            }),
            GossipItem::Leave(LeaveIntent {
                name: Arc::from("b2"),
                generation: 8,
            }),
            GossipItem::Event(EventMessage {
                ltime: 5,
                name: "deploy".into(),
                payload: b"v2".to_vec(),
                coalesce: true,
            }),
            GossipItem::Query(sample_query()),
        ]
    }

    #[test]
    fn gossip_items_round_trip_in_one_packet() {
        let items = sample_items();
        let mut packet = vec![KIND_GOSSIP];
        for item in &items {
            packet.extend_from_slice(&item.encode());
        }
        match decode_packet(&packet).unwrap() {
            Packet::Gossip { items: decoded } => assert_eq!(decoded, items),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn swim_packets_carry_foca_bytes_and_items() {
        let mut packet = Vec::new();
        put_swim(&mut packet, b"foca-bytes");
        let items = sample_items();
        packet.extend_from_slice(&items[1].encode());
        match decode_packet(&packet).unwrap() {
            Packet::Swim { foca, items: got } => {
                assert_eq!(foca, b"foca-bytes");
                assert_eq!(got, vec![items[1].clone()]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn direct_messages_round_trip() {
        let member = SyncMember {
            id: NodeId::new("b1", "127.0.0.1:1".parse().unwrap(), 2).unwrap(),
            incarnation: 3,
            left_generation: Some(2),
            tags: Some((TagsVersion::default(), Tags::new())),
        };
        let event = EventMessage {
            ltime: 1,
            name: "e".into(),
            payload: vec![0; 10],
            coalesce: false,
        };
        let messages = vec![
            Direct::Sync(SyncChunk {
                reply_wanted: true,
                event_clock: 10,
                query_clock: 11,
                members: vec![member.clone()],
                events: vec![event.clone()],
            }),
            Direct::TagsRequest,
            Direct::QueryAck {
                ltime: 1,
                id: 2,
                from: "b3".into(),
            },
            Direct::QueryResponse {
                ltime: 1,
                id: 2,
                from: "b3".into(),
                payload: b"ok".to_vec(),
            },
            Direct::Suspected { incarnation: 4 },
        ];
        for message in messages {
            let mut out = Vec::new();
            message.encode(&mut out);
            if let Direct::Sync(chunk) = &message {
                let expected = 1
                    + SYNC_CHUNK_FIXED_LEN
                    + chunk.members.iter().map(sync_member_len).sum::<usize>()
                    + chunk.events.iter().map(sync_event_len).sum::<usize>();
                assert_eq!(out.len(), expected, "sync size accounting");
            }
            match decode_packet(&out).unwrap() {
                Packet::Direct(decoded) => assert_eq!(decoded, message),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn every_truncation_and_trailing_garbage_is_rejected() {
        let mut packet = vec![KIND_GOSSIP];
        for item in sample_items() {
            packet.extend_from_slice(&item.encode());
        }
        // Cutting inside an item must fail; cutting exactly between items is a shorter,
        // still valid packet.
        let mut boundaries = vec![1];
        let mut at = 1;
        for item in sample_items() {
            at += item.encode().len();
            boundaries.push(at);
        }
        for cut in 0..packet.len() {
            let result = decode_packet(&packet[..cut]);
            assert_eq!(result.is_ok(), boundaries.contains(&cut), "cut at {cut}");
        }
        let mut direct = Vec::new();
        Direct::Suspected { incarnation: 1 }.encode(&mut direct);
        direct.push(0);
        assert!(decode_packet(&direct).is_err());
        assert!(decode_packet(&[0x42]).is_err());
        assert!(
            decode_packet(&[KIND_SWIM, 0, 0]).is_err(),
            "empty SWIM part"
        );
    }

    #[test]
    fn tag_size_accounting_matches_the_encoding() {
        let mut tags = Tags::new();
        tags.insert("id".into(), "7".into());
        tags.insert("http".into(), "127.0.0.1:8080".into());
        let mut out = Vec::new();
        put_tags(&mut out, &tags);
        assert_eq!(out.len(), tags_encoded_len(&tags));
    }
}
