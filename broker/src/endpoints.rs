//! The names of the endpoints a broker registers with the metadata quorum, and where a live
//! broker's Kafka endpoint is found in the image. Both the registration (`quorum`) and every
//! reader (Metadata, DescribeCluster, replica fetchers) use these, so the name is spelled once.

use streambus_raft::command::{BrokerId, Endpoint};
use streambus_raft::image::BrokerRecord;
use streambus_raft::MetadataImage;

/// Name of the Kafka listener among a broker's registered endpoints.
pub const KAFKA_ENDPOINT: &str = "kafka";

/// Name of the raft (and inter-broker gRPC) listener among a broker's registered endpoints.
pub const RAFT_ENDPOINT: &str = streambus_raft::controller::RAFT_ENDPOINT;

/// The Kafka endpoint `broker` registered, if any.
pub fn kafka_endpoint(broker: &BrokerRecord) -> Option<&Endpoint> {
    broker.endpoints.iter().find(|e| e.name == KAFKA_ENDPOINT)
}

/// The brokers clients may connect to: registered, not fenced, with a Kafka listener.
pub fn live_kafka_brokers(
    image: &MetadataImage,
) -> impl Iterator<Item = (&BrokerRecord, &Endpoint)> {
    image
        .unfenced_brokers()
        .filter_map(|broker| Some((broker, kafka_endpoint(broker)?)))
}

/// The Kafka endpoint of `broker_id`, if it is registered, not fenced and has one.
pub fn live_kafka_endpoint(image: &MetadataImage, broker_id: BrokerId) -> Option<&Endpoint> {
    image
        .broker(broker_id)
        .filter(|broker| !broker.fenced)
        .and_then(kafka_endpoint)
}

#[cfg(test)]
mod tests {
    use streambus_raft::command::{FenceBroker, IncarnationId, RegisterBroker};
    use streambus_raft::{MetadataCommand, MetadataResponse};

    use super::*;

    fn endpoint(name: &str, port: u16) -> Endpoint {
        Endpoint {
            name: name.to_owned(),
            host: "h".to_owned(),
            port,
        }
    }

    /// Registers `broker_id`; returns its broker epoch.
    fn register(image: &mut MetadataImage, broker_id: BrokerId, endpoints: Vec<Endpoint>) -> i64 {
        let offset = image.metadata_offset() + 1;
        let command = MetadataCommand::RegisterBroker(RegisterBroker {
            broker_id,
            incarnation_id: IncarnationId([1; 16]),
            endpoints,
            rack: None,
            now_ms: 0,
            previous_broker_epoch: None,
        });
        match image.apply(offset, &command) {
            MetadataResponse::BrokerRegistered { broker_epoch } => broker_epoch,
            other => panic!("registration answered {other:?}"),
        }
    }

    #[test]
    fn live_brokers_have_a_kafka_endpoint_and_no_fence() {
        let mut image = MetadataImage::default();
        register(
            &mut image,
            1,
            vec![endpoint(RAFT_ENDPOINT, 1), endpoint(KAFKA_ENDPOINT, 2)],
        );
        register(&mut image, 2, vec![endpoint(RAFT_ENDPOINT, 3)]);
        let broker_epoch = register(&mut image, 3, vec![endpoint(KAFKA_ENDPOINT, 4)]);
        let fence = MetadataCommand::FenceBroker(FenceBroker {
            broker_id: 3,
            broker_epoch,
        });
        image.apply(image.metadata_offset() + 1, &fence);

        let live: Vec<(BrokerId, u16)> = live_kafka_brokers(&image)
            .map(|(broker, endpoint)| (broker.broker_id, endpoint.port))
            .collect();
        assert_eq!(live, vec![(1, 2)]);
        assert_eq!(
            live_kafka_endpoint(&image, 1),
            Some(&endpoint(KAFKA_ENDPOINT, 2))
        );
        assert_eq!(live_kafka_endpoint(&image, 2), None, "no kafka listener");
        assert_eq!(live_kafka_endpoint(&image, 3), None, "fenced");
        assert_eq!(live_kafka_endpoint(&image, 4), None, "unknown");
        let fenced = image.broker(3).expect("registered");
        assert_eq!(kafka_endpoint(fenced), Some(&endpoint(KAFKA_ENDPOINT, 4)));
    }
}
