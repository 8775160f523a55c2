//! Compiles the protos with protox (a pure-Rust protobuf compiler), so a fresh
//! machine needs no system `protoc`.
//!
//! - `proto/` becomes the server and client code of `contact_server::proto`,
//!   plus a descriptor set kept for gRPC reflection.
//! - `tests/proto/contact.seed.proto`, the seed's file copied unchanged,
//!   becomes a client-only module under `$OUT_DIR/seed/`. The tests drive the
//!   server with it, so wire compatibility with the seed is checked by a
//!   client that knows nothing of our extensions.

use std::{error::Error, fs, path::PathBuf};

use prost::Message as _;

const PROTOS: &[&str] = &[
    "contact.proto",
    "contact/v1/tasks.proto",
    "contact/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=tests/proto");

    let descriptors = protox::compile(PROTOS, ["proto"])?;
    fs::write(
        out_dir.join("contact_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".")
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;

    let seed_dir = out_dir.join("seed");
    fs::create_dir_all(&seed_dir)?;
    let seed = protox::compile(["contact.seed.proto"], ["tests/proto"])?;
    fs::write(seed_dir.join("seed_descriptor.bin"), seed.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(false)
        .emit_rerun_if_changed(false)
        .out_dir(&seed_dir)
        .compile_fds(seed)?;
    Ok(())
}
