//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs. Topic configs are dynamic; broker
//! configs are read-only here (they come from flags, environment and the config file), so none
//! has a dynamic value: IncrementalAlterConfigs may DELETE one (there is nothing to delete), not
//! set it.

use std::collections::HashSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use skiff_metadata::ControllerRequest;
use tracing::info;

use super::admin::Failure;
use super::{code, message, KafkaApis};
use crate::topic_config::{config_def, ConfigDef, ConfigType, TopicConfigs, TOPIC_CONFIGS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

pub(super) fn source_of(configs: &TopicConfigs, def: &ConfigDef) -> i8 {
    if configs.get_override(def.name).is_some() {
        SOURCE_DYNAMIC_TOPIC
    } else {
        SOURCE_DEFAULT
    }
}

fn failure(error: ResponseError, text: impl Into<String>) -> Failure {
    Failure {
        error_code: code(error),
        message: text.into(),
    }
}

/// One described config entry.
struct Entry {
    name: String,
    value: String,
    source: i8,
    read_only: bool,
    config_type: ConfigType,
    doc: &'static str,
    synonyms: Vec<(String, String, i8)>,
}

impl KafkaApis {
    fn broker_entries(&self) -> Vec<Entry> {
        let c = &self.config;
        let (host, port) = &c.advertised_kafka_addr;
        let mut entries: Vec<Entry> = [
            (
                "broker.id",
                c.node_id.to_string(),
                ConfigType::Int,
                "This broker's id",
            ),
            (
                "node.id",
                c.node_id.to_string(),
                ConfigType::Int,
                "This broker's id",
            ),
            (
                "log.dirs",
                c.data_dir.display().to_string(),
                ConfigType::String,
                "Data directory",
            ),
            (
                "listeners",
                format!("PLAINTEXT://{}", c.kafka_addr),
                ConfigType::List,
                "Kafka listener",
            ),
            (
                "advertised.listeners",
                format!("PLAINTEXT://{host}:{port}"),
                ConfigType::List,
                "Address given to clients",
            ),
            (
                "auto.create.topics.enable",
                c.auto_create_topics.to_string(),
                ConfigType::String,
                "Create unknown topics named in Metadata requests",
            ),
            (
                "num.partitions",
                c.default_partitions.to_string(),
                ConfigType::Int,
                "Partitions of topics created without a count",
            ),
            (
                "default.replication.factor",
                c.default_replication_factor.to_string(),
                ConfigType::Int,
                "Replication factor of topics created without one",
            ),
            (
                "socket.request.max.bytes",
                c.max_frame_bytes.to_string(),
                ConfigType::Int,
                "Largest request accepted",
            ),
            (
                "max.connections",
                c.max_connections.to_string(),
                ConfigType::Int,
                "Most client connections at once",
            ),
        ]
        .into_iter()
        .map(|(name, value, config_type, doc)| Entry {
            name: name.to_string(),
            value,
            source: SOURCE_STATIC_BROKER,
            read_only: true,
            config_type,
            doc,
            synonyms: Vec::new(),
        })
        .collect();
        entries.extend(
            TOPIC_CONFIGS
                .iter()
                .filter(|def| !def.broker_synonym.is_empty())
                .map(|def| Entry {
                    name: def.broker_synonym.to_string(),
                    value: def.default.to_string(),
                    source: SOURCE_DEFAULT,
                    read_only: true,
                    config_type: def.config_type,
                    doc: def.doc,
                    synonyms: Vec::new(),
                }),
        );
        entries
    }

    fn topic_entries(configs: &TopicConfigs) -> Vec<Entry> {
        TOPIC_CONFIGS
            .iter()
            .map(|def| {
                let mut synonyms = Vec::new();
                if let Some(value) = configs.get_override(def.name) {
                    synonyms.push((
                        def.name.to_string(),
                        value.to_string(),
                        SOURCE_DYNAMIC_TOPIC,
                    ));
                }
                if !def.broker_synonym.is_empty() {
                    synonyms.push((
                        def.broker_synonym.to_string(),
                        def.default.to_string(),
                        SOURCE_DEFAULT,
                    ));
                }
                Entry {
                    name: def.name.to_string(),
                    value: configs.value(def),
                    source: source_of(configs, def),
                    read_only: false,
                    config_type: def.config_type,
                    doc: def.doc,
                    synonyms,
                }
            })
            .collect()
    }

    fn is_this_broker(&self, resource_name: &str) -> bool {
        resource_name.is_empty() || resource_name == self.config.node_id.to_string()
    }

    pub(super) fn describe_configs(
        &self,
        request: DescribeConfigsRequest,
        version: i16,
    ) -> DescribeConfigsResponse {
        let results = request
            .resources
            .into_iter()
            .map(|resource| {
                let result = DescribeConfigsResult::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone());
                let name = resource.resource_name.as_str();
                let entries = match resource.resource_type {
                    RESOURCE_TOPIC => match self.topics().get(name) {
                        Some(topic) => Ok(Self::topic_entries(&topic.configs)),
                        None => Err(failure(
                            ResponseError::UnknownTopicOrPartition,
                            format!("topic '{name}' does not exist"),
                        )),
                    },
                    RESOURCE_BROKER if self.is_this_broker(name) => Ok(self.broker_entries()),
                    RESOURCE_BROKER => Err(failure(
                        ResponseError::InvalidRequest,
                        format!("this is broker {}, not '{name}'", self.config.node_id),
                    )),
                    other => Err(failure(
                        ResponseError::InvalidRequest,
                        format!("resource type {other} is not supported"),
                    )),
                };
                match entries {
                    Ok(entries) => result.with_configs(
                        entries
                            .into_iter()
                            .filter(|e| {
                                resource
                                    .configuration_keys
                                    .as_ref()
                                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == e.name))
                            })
                            .map(|e| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(StrBytes::from_string(e.name))
                                    .with_value(Some(StrBytes::from_string(e.value)))
                                    .with_read_only(e.read_only)
                                    .with_config_source(e.source)
                                    .with_config_type(if version >= 3 {
                                        e.config_type as i8
                                    } else {
                                        0
                                    })
                                    .with_documentation(
                                        (version >= 3 && request.include_documentation)
                                            .then(|| StrBytes::from_static_str(e.doc)),
                                    )
                                    .with_synonyms(if request.include_synonyms {
                                        e.synonyms
                                            .into_iter()
                                            .map(|(name, value, source)| {
                                                DescribeConfigsSynonym::default()
                                                    .with_name(StrBytes::from_string(name))
                                                    .with_value(Some(StrBytes::from_string(value)))
                                                    .with_source(source)
                                            })
                                            .collect()
                                    } else {
                                        Vec::new()
                                    })
                            })
                            .collect(),
                    ),
                    Err(f) => result
                        .with_error_code(f.error_code)
                        .with_error_message(message(f.message)),
                }
            })
            .collect();
        DescribeConfigsResponse::default().with_results(results)
    }

    /// Applies `change` to a topic's overrides and stores the result (unless validate_only).
    async fn alter_topic_configs(
        &self,
        resource_type: i8,
        name: &str,
        validate_only: bool,
        change: impl FnOnce(&mut TopicConfigs) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        match resource_type {
            RESOURCE_TOPIC => {}
            RESOURCE_BROKER => {
                return Err(failure(
                    ResponseError::InvalidRequest,
                    "broker configs are static: set them with flags, SKIFF_* variables or the config file",
                ))
            }
            other => {
                return Err(failure(
                    ResponseError::InvalidRequest,
                    format!("resource type {other} is not supported"),
                ))
            }
        }
        let mut topic = self.topics().get(name).ok_or_else(|| {
            failure(
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            )
        })?;
        change(&mut topic.configs)?;
        self.submit(
            ControllerRequest::SetTopicConfigs {
                topic_id: topic.id,
                configs: topic.configs.to_map(),
            },
            validate_only,
        )
        .await?;
        if !validate_only {
            info!(topic = name, configs = ?topic.configs, "altered topic configs");
        }
        Ok(())
    }

    /// Each altered resource is a metadata-log write the request waits for in turn, so one
    /// request alters at most `max_topics_per_request` of them.
    fn past_resource_limit(&self, index: usize) -> Result<(), Failure> {
        let max = self.config.max_topics_per_request;
        if index < max {
            return Ok(());
        }
        Err(failure(
            ResponseError::InvalidRequest,
            format!(
                "one request alters at most {max} resources; send this one in a further request"
            ),
        ))
    }

    pub(super) async fn alter_configs(&self, request: AlterConfigsRequest) -> AlterConfigsResponse {
        let mut responses = Vec::with_capacity(request.resources.len());
        for (index, resource) in request.resources.into_iter().enumerate() {
            let outcome = match self.past_resource_limit(index) {
                Err(refused) => Err(refused),
                Ok(()) => {
                    self.alter_topic_configs(
                        resource.resource_type,
                        resource.resource_name.as_str(),
                        request.validate_only,
                        |configs| {
                            // AlterConfigs replaces the whole set of overrides.
                            *configs =
                                TopicConfigs::from_pairs(resource.configs.iter().map(|c| {
                                    (c.name.as_str(), c.value.as_ref().map(|v| v.as_str()))
                                }))
                                .map_err(|e| {
                                    failure(ResponseError::InvalidConfig, e.to_string())
                                })?;
                            Ok(())
                        },
                    )
                    .await
                }
            };
            let response = alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            responses.push(match outcome {
                Ok(()) => response,
                Err(f) => response
                    .with_error_code(f.error_code)
                    .with_error_message(message(f.message)),
            });
        }
        AlterConfigsResponse::default().with_responses(responses)
    }

    pub(super) async fn incremental_alter_configs(
        &self,
        request: IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let mut responses = Vec::with_capacity(request.resources.len());
        for (index, resource) in request.resources.into_iter().enumerate() {
            let outcome = match self.past_resource_limit(index) {
                Err(refused) => Err(refused),
                Ok(()) if resource.resource_type == RESOURCE_BROKER => check_broker_ops(
                    self.config.node_id,
                    resource.resource_name.as_str(),
                    &resource.configs,
                ),
                Ok(()) => match check_op_shapes(&resource.configs) {
                    Err(refused) => Err(refused),
                    Ok(()) => {
                        self.alter_topic_configs(
                            resource.resource_type,
                            resource.resource_name.as_str(),
                            request.validate_only,
                            |configs| {
                                for op in &resource.configs {
                                    apply_incremental(
                                        configs,
                                        op.name.as_str(),
                                        op.config_operation,
                                        op.value.as_ref().map(|v| v.as_str()),
                                    )?;
                                }
                                Ok(())
                            },
                        )
                        .await
                    }
                },
            };
            let response =
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name);
            responses.push(match outcome {
                Ok(()) => response,
                Err(f) => response
                    .with_error_code(f.error_code)
                    .with_error_message(message(f.message)),
            });
        }
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    }
}

/// IncrementalAlterConfigs on a broker resource, checked as Kafka's brokers check it: no config
/// named twice, a value for every operation but DELETE, the resource this broker (by id) or,
/// named "", the cluster's default, known operations. Broker configs are static here, so none
/// has a dynamic value: DELETE, which removes a dynamic value, has nothing to remove and
/// succeeds with nothing changed, as Kafka answers a DELETE of a config without a dynamic value
/// (kafka-reassign-partitions --verify and --cancel delete the replication throttles,
/// `leader.replication.throttled.rate` and the like, of every broker this way). SET, APPEND and
/// SUBTRACT, which would give a config a dynamic value, are refused.
fn check_broker_ops(
    node_id: i32,
    resource_name: &str,
    ops: &[AlterableConfig],
) -> Result<(), Failure> {
    let invalid = |text: String| failure(ResponseError::InvalidRequest, text);
    check_op_shapes(ops)?;
    if !resource_name.is_empty() {
        let id: i32 = resource_name.parse().map_err(|_| {
            invalid(format!(
                "Node id must be an integer, but it is: {resource_name}"
            ))
        })?;
        if id != node_id {
            return Err(invalid(format!(
                "Unexpected broker id, expected {node_id}, but received {resource_name}"
            )));
        }
    }
    if let Some(op) = ops
        .iter()
        .find(|op| !(OP_SET..=OP_SUBTRACT).contains(&op.config_operation))
    {
        return Err(invalid(format!(
            "Unknown operations type {}",
            op.config_operation
        )));
    }
    let set: Vec<&str> = ops
        .iter()
        .filter(|op| op.config_operation != OP_DELETE)
        .map(|op| op.name.as_str())
        .collect();
    if !set.is_empty() {
        return Err(invalid(format!(
            "broker configs are static: set them with flags, SKIFF_* variables or the config file, not {}",
            set.join(", ")
        )));
    }
    Ok(())
}

/// Kafka's first checks of an IncrementalAlterConfigs resource, broker or topic alike
/// (INVALID_REQUEST): no config named twice, and a value for every operation but DELETE.
fn check_op_shapes(ops: &[AlterableConfig]) -> Result<(), Failure> {
    let invalid = |text: String| failure(ResponseError::InvalidRequest, text);
    let mut names = HashSet::new();
    if !ops.iter().all(|op| names.insert(op.name.as_str())) {
        return Err(invalid("Error due to duplicate config keys".into()));
    }
    let without_value: Vec<&str> = ops
        .iter()
        .filter(|op| op.config_operation != OP_DELETE && op.value.is_none())
        .map(|op| op.name.as_str())
        .collect();
    if !without_value.is_empty() {
        return Err(invalid(format!(
            "Null value not supported for : {}",
            without_value.join(", ")
        )));
    }
    Ok(())
}

fn apply_incremental(
    configs: &mut TopicConfigs,
    name: &str,
    operation: i8,
    value: Option<&str>,
) -> Result<(), Failure> {
    let invalid = |text: String| failure(ResponseError::InvalidConfig, text);
    let def = config_def(name).ok_or_else(|| invalid(format!("unknown topic config '{name}'")))?;
    let result = match (operation, value) {
        (OP_DELETE, _) => configs.delete(name),
        (OP_SET, Some(value)) => configs.set(name, value),
        (OP_APPEND | OP_SUBTRACT, Some(value)) if def.config_type == ConfigType::List => {
            let mut items: Vec<String> = configs
                .value(def)
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if operation == OP_APPEND {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    }
                } else {
                    items.retain(|i| i != item);
                }
            }
            if items.is_empty() {
                return Err(invalid(format!("{name} cannot be empty")));
            }
            configs.set(name, &items.join(","))
        }
        (OP_APPEND | OP_SUBTRACT, Some(_)) => {
            return Err(invalid(format!(
                "{name} is not a list; APPEND and SUBTRACT need a list config"
            )))
        }
        // A missing value was refused before (`check_op_shapes`).
        (other, _) => return Err(invalid(format!("unknown config operation {other}"))),
    };
    result.map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &'static str, operation: i8, value: Option<&'static str>) -> AlterableConfig {
        AlterableConfig::default()
            .with_name(StrBytes::from_static_str(name))
            .with_config_operation(operation)
            .with_value(value.map(StrBytes::from_static_str))
    }

    /// What kafka-reassign-partitions sends to each broker once the moves are done.
    fn throttle_deletes() -> Vec<AlterableConfig> {
        [
            "leader.replication.throttled.rate",
            "follower.replication.throttled.rate",
            "replica.alter.log.dirs.io.max.bytes.per.second",
        ]
        .into_iter()
        .map(|name| op(name, OP_DELETE, None))
        .collect()
    }

    fn refusal(result: Result<(), Failure>) -> (i16, String) {
        let failure = result.expect_err("refused");
        (failure.error_code, failure.message)
    }

    #[test]
    fn deleting_a_broker_config_finds_no_dynamic_value_and_succeeds() {
        assert!(check_broker_ops(3, "3", &throttle_deletes()).is_ok());
        // "" is the cluster-wide default, which has no dynamic values either.
        assert!(check_broker_ops(3, "", &throttle_deletes()).is_ok());
        assert!(check_broker_ops(3, "3", &[op("log.dirs", OP_DELETE, None)]).is_ok());
        assert!(check_broker_ops(3, "3", &[]).is_ok());
    }

    #[test]
    fn setting_a_broker_config_is_refused_naming_it() {
        let invalid = code(ResponseError::InvalidRequest);
        for operation in [OP_SET, OP_APPEND, OP_SUBTRACT] {
            let mut ops = throttle_deletes();
            ops.push(op("num.partitions", operation, Some("3")));
            let (error, text) = refusal(check_broker_ops(1, "1", &ops));
            assert_eq!(error, invalid);
            assert!(
                text.starts_with("broker configs are static")
                    && text.ends_with("not num.partitions"),
                "{text}"
            );
        }
    }

    #[test]
    fn topic_operations_are_refused_for_duplicate_keys_and_missing_values() {
        let invalid = code(ResponseError::InvalidRequest);
        let twice = [
            op("retention.ms", OP_SET, Some("1000")),
            op("retention.ms", OP_DELETE, None),
        ];
        let refused = check_op_shapes(&twice).unwrap_err();
        assert_eq!(
            (refused.error_code, refused.message.as_str()),
            (invalid, "Error due to duplicate config keys")
        );
        let refused = check_op_shapes(&[op("cleanup.policy", OP_APPEND, None)]).unwrap_err();
        assert_eq!(
            (refused.error_code, refused.message.as_str()),
            (invalid, "Null value not supported for : cleanup.policy")
        );
        assert!(check_op_shapes(&[op("retention.ms", OP_DELETE, None)]).is_ok());
    }

    #[test]
    fn broker_resources_are_checked_as_kafka_checks_them() {
        let invalid = code(ResponseError::InvalidRequest);
        let cases: [(&str, Vec<AlterableConfig>, &str); 5] = [
            (
                "2",
                throttle_deletes(),
                "Unexpected broker id, expected 1, but received 2",
            ),
            (
                "one",
                throttle_deletes(),
                "Node id must be an integer, but it is: one",
            ),
            (
                "1",
                vec![
                    op("leader.replication.throttled.rate", OP_DELETE, None),
                    op("leader.replication.throttled.rate", OP_DELETE, None),
                ],
                "Error due to duplicate config keys",
            ),
            (
                "1",
                vec![op("leader.replication.throttled.rate", OP_SET, None)],
                "Null value not supported for : leader.replication.throttled.rate",
            ),
            (
                "1",
                vec![op("leader.replication.throttled.rate", 4, Some("10"))],
                "Unknown operations type 4",
            ),
        ];
        for (name, ops, expected) in cases {
            assert_eq!(
                refusal(check_broker_ops(1, name, &ops)),
                (invalid, expected.to_string()),
                "resource {name:?}"
            );
        }
    }
}
