//! The request and response bodies of the APIs Skiff serves. `kafka-protocol` has such enums for
//! every API behind its `messages_enums` feature, which doubles its build time; this covers only
//! what is advertised.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};

macro_rules! served_apis {
    ($($api:ident => $request:ident, $response:ident;)*) => {
        /// A decoded request body.
        #[derive(Debug, Clone, PartialEq)]
        pub enum RequestBody {
            $($api($request),)*
        }

        /// A response body to encode.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ResponseBody {
            $($api($response),)*
        }

        impl RequestBody {
            /// Decodes the body of an `api` request at `version`; `None` if Skiff does not
            /// serve `api`.
            pub fn decode(api: ApiKey, buf: &mut Bytes, version: i16) -> Option<anyhow::Result<Self>> {
                match api {
                    $(ApiKey::$api => Some($request::decode(buf, version).map(Self::$api)),)*
                    _ => None,
                }
            }

            /// Encodes the body at `version`, as a client would send it.
            #[cfg(feature = "fuzzing")]
            pub fn encode(&self, buf: &mut BytesMut, version: i16) -> anyhow::Result<()> {
                match self {
                    $(Self::$api(body) => body.encode(buf, version),)*
                }
            }

            /// The size `encode` writes at `version`.
            #[cfg(feature = "fuzzing")]
            pub fn compute_size(&self, version: i16) -> anyhow::Result<usize> {
                match self {
                    $(Self::$api(body) => body.compute_size(version),)*
                }
            }
        }

        impl ResponseBody {
            pub fn encode(&self, buf: &mut BytesMut, version: i16) -> anyhow::Result<()> {
                match self {
                    $(Self::$api(body) => body.encode(buf, version),)*
                }
            }

            /// The encoded size, so a response buffer is allocated once at its final size.
            pub fn compute_size(&self, version: i16) -> anyhow::Result<usize> {
                match self {
                    $(Self::$api(body) => body.compute_size(version),)*
                }
            }
        }
    };
}

served_apis! {
    Produce => ProduceRequest, ProduceResponse;
    Fetch => FetchRequest, FetchResponse;
    ListOffsets => ListOffsetsRequest, ListOffsetsResponse;
    Metadata => MetadataRequest, MetadataResponse;
    OffsetForLeaderEpoch => OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse;
    ApiVersions => ApiVersionsRequest, ApiVersionsResponse;
    CreateTopics => CreateTopicsRequest, CreateTopicsResponse;
    DeleteTopics => DeleteTopicsRequest, DeleteTopicsResponse;
    DeleteRecords => DeleteRecordsRequest, DeleteRecordsResponse;
    InitProducerId => InitProducerIdRequest, InitProducerIdResponse;
    DescribeConfigs => DescribeConfigsRequest, DescribeConfigsResponse;
    AlterConfigs => AlterConfigsRequest, AlterConfigsResponse;
    CreatePartitions => CreatePartitionsRequest, CreatePartitionsResponse;
    IncrementalAlterConfigs => IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse;
    DescribeCluster => DescribeClusterRequest, DescribeClusterResponse;
    DescribeLogDirs => DescribeLogDirsRequest, DescribeLogDirsResponse;
    FindCoordinator => FindCoordinatorRequest, FindCoordinatorResponse;
    JoinGroup => JoinGroupRequest, JoinGroupResponse;
    SyncGroup => SyncGroupRequest, SyncGroupResponse;
    Heartbeat => HeartbeatRequest, HeartbeatResponse;
    LeaveGroup => LeaveGroupRequest, LeaveGroupResponse;
    OffsetCommit => OffsetCommitRequest, OffsetCommitResponse;
    OffsetFetch => OffsetFetchRequest, OffsetFetchResponse;
    ListGroups => ListGroupsRequest, ListGroupsResponse;
    DescribeGroups => DescribeGroupsRequest, DescribeGroupsResponse;
    DeleteGroups => DeleteGroupsRequest, DeleteGroupsResponse;
    OffsetDelete => OffsetDeleteRequest, OffsetDeleteResponse;
    ElectLeaders => ElectLeadersRequest, ElectLeadersResponse;
    AlterPartitionReassignments => AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse;
    ListPartitionReassignments => ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse;
    DescribeProducers => DescribeProducersRequest, DescribeProducersResponse;
    DescribeTopicPartitions => DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse;
}
