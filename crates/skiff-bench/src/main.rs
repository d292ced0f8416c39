//! `skiff-bench`: throughput and end-to-end latency of a Kafka-compatible broker, measured with
//! librdkafka (the `rdkafka` crate). Throughput and latency consumers use explicit partition
//! assignment; `group` measures consumer groups. Each run prints human-readable lines and ends
//! with a one-line JSON summary.

mod common;
mod consume;
mod failover;
mod group;
mod latency;
mod produce;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "skiff-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Maximum-throughput produce; reports msg/s and MB/s (every message acknowledged).
    Produce(produce::ProduceArgs),
    /// Reads messages from the beginning of every partition; reports msg/s and MB/s.
    Consume(consume::ConsumeArgs),
    /// Produces at a fixed rate while consuming; reports end-to-end latency percentiles.
    Latency(latency::LatencyArgs),
    /// Consumer-group stabilisation and rebalance times, and offset-commit throughput.
    Group(group::GroupArgs),
    /// A steady workload through the SIGKILL of a group coordinator or partition leader;
    /// reports when acknowledgements, consumption and commits resumed on every partition.
    Failover(failover::FailoverArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Latency(args) => latency::run(args),
        Command::Group(args) => group::run(args),
        Command::Failover(args) => failover::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_common_flags() {
        let cli = Cli::try_parse_from([
            "skiff-bench",
            "produce",
            "--bootstrap",
            "127.0.0.1:19192",
            "--messages",
            "10",
            "--acks",
            "-1",
            "--compression",
            "lz4",
            "-X",
            "linger.ms=1",
        ])
        .unwrap();
        let Command::Produce(args) = cli.command else {
            panic!("not produce");
        };
        assert_eq!(args.common.messages, Some(10));
        assert_eq!(args.common.acks, "-1");
        assert_eq!(args.common.client_config[0].0, "linger.ms");
    }

    #[test]
    fn parses_failover_flags() {
        let cli = Cli::try_parse_from([
            "skiff-bench",
            "failover",
            "--kill",
            "coordinator",
            "--broker-pid",
            "1=4242",
            "--broker-pid",
            "2=4343",
            "--replication-factor",
            "-1",
        ])
        .unwrap();
        let Command::Failover(args) = cli.command else {
            panic!("not failover");
        };
        assert_eq!(args.broker_pids, [(1, 4242), (2, 4343)]);
        assert_eq!(args.common.replication_factor, -1);
        assert!(Cli::try_parse_from(["skiff-bench", "failover", "--kill", "leader"]).is_err());
        assert!(Cli::try_parse_from([
            "skiff-bench",
            "failover",
            "--kill",
            "leader",
            "--broker-pid",
            "1:4242"
        ])
        .is_err());
    }

    #[test]
    fn messages_and_duration_conflict() {
        assert!(Cli::try_parse_from([
            "skiff-bench",
            "produce",
            "--messages",
            "10",
            "--duration-secs",
            "1"
        ])
        .is_err());
    }
}
