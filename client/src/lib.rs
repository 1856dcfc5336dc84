//! StreamBus client: the Rust producer, consumer and admin SDK, and the `sbctl` command line.
//!
//! Owns: everything a StreamBus (or any Kafka-compatible broker) user runs on their side,
//! speaking only the Kafka wire protocol, so it works against StreamBus and Kafka alike.
//! Must not depend on: the broker, storage or raft crates; a client that linked broker internals
//! could pass tests that a real, separately built client would fail.
