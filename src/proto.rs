//! Code generated from `proto/` by `build.rs`; nothing here is hand-written.
//!
//! The seed's contract has no `package`, so prost writes it to `_.rs` and its
//! items sit at the root of this module. Never `use proto::*`: the seed's
//! message named `Result` would shadow `std::result::Result`.

#![allow(
    missing_docs,
    unreachable_pub,
    nonstandard_style,
    clippy::all,
    clippy::pedantic
)]

tonic::include_proto!("_");

/// The producer API, package `contact.v1`.
pub mod v1 {
    #![allow(
        missing_docs,
        unreachable_pub,
        nonstandard_style,
        clippy::all,
        clippy::pedantic
    )]
    tonic::include_proto!("contact.v1");
}

/// Every file of `proto/` as an encoded `FileDescriptorSet`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("contact_descriptor");
