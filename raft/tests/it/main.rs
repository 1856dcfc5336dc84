//! Multi-node tests of the metadata quorum: real `MetadataNode`s in one process, talking gRPC
//! over loopback, each with its own RocksDB directory.

mod cluster;
mod fencing;
mod identity;
mod membership;
mod quorum;
