//! gRPC server reflection: `grpcurl list` and similar tools see every
//! service, the seed's package-less `Contact` included.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, within};
use tokio_stream::StreamExt as _;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

/// ListServices names Contact, Tasks, Admin, Health and reflection itself,
/// and the descriptor of the seed's Contact service can be fetched.
#[tokio::test]
async fn reflection_lists_every_service() {
    let server = TestServer::start().await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("Contact".into())),
        },
    ];
    let mut responses = within(
        "reflection",
        client.server_reflection_info(tokio_stream::iter(requests)),
    )
    .await
    .unwrap()
    .into_inner();
    let listed = within("list", responses.next()).await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("{listed:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "Contact",
        "contact.v1.Tasks",
        "contact.v1.Admin",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    let file = within("file", responses.next()).await.unwrap().unwrap();
    assert!(
        matches!(file.message_response, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{file:?}"
    );
    server.stop().await;
}
