//! The API versions Skiff advertises. Every version inside a range is decoded and answered
//! correctly; the ranges are chosen for the clients in the field (librdkafka enables features
//! such as compression and idempotence only when it sees the exact versions it expects; see the
//! table below), not taken from what the codec happens to support.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// (api, lowest advertised version, highest advertised version).
///
/// Produce is advertised from v0 although v0-v2 (message format v0/v1) are refused: librdkafka
/// before 2.10 turns compression off when Produce's minimum is above 0 (KAFKA-18659).
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTopicPartitions, 0, 0),
];

/// Lowest Produce version whose body Skiff decodes (record batches, magic v2).
pub const MIN_DECODED_PRODUCE_VERSION: i16 = 3;

/// The advertised (min, max) versions of `api`, or `None` if Skiff does not serve it.
pub fn supported_versions(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(key, _, _)| *key == api)
        .map(|&(_, min, max)| (min, max))
}

/// An ApiVersions response body listing every supported API, with `error_code` set.
pub fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            SUPPORTED_APIS
                .iter()
                .map(|&(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(key as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_table_is_what_is_advertised() {
        let doc = include_str!("../../../docs/kafka-apis.md");
        let documented: Vec<(String, i16, String)> = doc
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let key = cells.get(2)?.parse().ok()?;
                Some((cells[1].to_string(), key, cells[3].to_string()))
            })
            .collect();
        let mut advertised: Vec<(String, i16, String)> = SUPPORTED_APIS
            .iter()
            .map(|&(key, min, max)| (format!("{key:?}"), key as i16, format!("{min}-{max}")))
            .collect();
        advertised.sort_by_key(|(_, key, _)| *key);
        assert_eq!(documented, advertised, "docs/kafka-apis.md is out of date");
    }

    #[test]
    fn advertised_ranges_are_within_what_the_codec_handles() {
        for &(key, min, max) in SUPPORTED_APIS {
            let codec = key.valid_versions();
            let decoded_min = if key == ApiKey::Produce {
                MIN_DECODED_PRODUCE_VERSION
            } else {
                min
            };
            assert!(
                codec.min <= decoded_min && max <= codec.max && min <= max,
                "{key:?} advertised {min}..={max}, codec {codec:?}"
            );
        }
    }

    #[test]
    fn librdkafka_feature_detection_versions_are_advertised() {
        // librdkafka enables features only when these exact versions fall inside the ranges.
        for (key, version) in [
            (ApiKey::Produce, 3),
            (ApiKey::Fetch, 4),
            (ApiKey::Produce, 7),
            (ApiKey::Fetch, 10),
            (ApiKey::InitProducerId, 0),
            (ApiKey::ListOffsets, 1),
            (ApiKey::Produce, 0),
            (ApiKey::FindCoordinator, 0),
            (ApiKey::OffsetCommit, 2),
            (ApiKey::OffsetFetch, 1),
            (ApiKey::JoinGroup, 0),
            (ApiKey::SyncGroup, 0),
            (ApiKey::Heartbeat, 0),
            (ApiKey::LeaveGroup, 0),
        ] {
            let (min, max) = supported_versions(key).unwrap();
            assert!((min..=max).contains(&version), "{key:?} v{version}");
        }
    }
}
