//! A gRPC client that sends and receives raw bytes as messages, so tests can
//! put what no generated client would on the wire: undecodable messages.

use bytes::{Buf as _, BufMut as _};
use tonic::{
    Status, Streaming,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

/// Passes message bytes through untouched, both ways.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Opens a bidirectional or client-streaming call at `path` ("/Service/method")
/// that sends `messages` as they are, and returns the response stream.
pub async fn streaming_call(
    channel: Channel,
    path: &'static str,
    messages: Vec<Vec<u8>>,
) -> Result<Streaming<Vec<u8>>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let request = tonic::Request::new(tokio_stream::iter(messages));
    let response = grpc
        .streaming(
            request,
            http::uri::PathAndQuery::from_static(path),
            RawCodec,
        )
        .await?;
    Ok(response.into_inner())
}

/// Calls `path` with one (raw) message and `authorization: Bearer token`
/// if given; the status the call got at its start (`Ok` when the server
/// answered with headers, as an open stream or a reply does).
pub async fn call_code(
    channel: Channel,
    path: &'static str,
    token: Option<&str>,
    message: Vec<u8>,
) -> tonic::Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    if grpc.ready().await.is_err() {
        return tonic::Code::Unavailable;
    }
    let mut request = tonic::Request::new(tokio_stream::iter(vec![message]));
    super::authorize(&mut request, token);
    let call = grpc.streaming(
        request,
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    );
    match super::within(path, call).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// Reads a response stream to its end: how many messages came, and the
/// status it ended with.
pub async fn read_to_end(mut stream: Streaming<Vec<u8>>) -> (usize, Result<(), Status>) {
    let mut count = 0;
    loop {
        match stream.message().await {
            Ok(Some(_)) => count += 1,
            Ok(None) => return (count, Ok(())),
            Err(status) => return (count, Err(status)),
        }
    }
}
