//! TLS on the gRPC listener: clients that trust the server's CA get in
//! (with their token), plain-text clients do not; with a client CA,
//! mutual TLS, where a certificate's name maps to a principal; and on
//! SIGHUP the daemon serves a renewed certificate to new connections
//! without dropping the established ones.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    TempDir, TestServer, certs::Ca, daemon::Daemon, principal, sample, test_config, within,
};
use contact_server::{
    auth::Role,
    client::{ClientError, Credentials, Producer, Submission, WorkerBuilder},
};
use tonic::Code;

const PRODUCER: &str = "ct_tls-producer";

/// A server with TLS from a fresh CA, a producer principal, and (with
/// `mutual`) the same CA for client certificates and a worker principal
/// known by its certificate's name.
async fn tls_server(dir: &TempDir, ca: &Ca, mutual: Option<bool>) -> TestServer {
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]).write(&dir.0, "server");
    let mut config = test_config();
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    let mut principals = vec![principal("producer", PRODUCER, &[Role::Producer])];
    if let Some(required) = mutual {
        let ca_file = dir.0.join("ca.crt");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        config.tls.client_ca_file = Some(ca_file);
        config.tls.require_client_certificate = required;
        let mut worker = principal("cert-worker", "ct_unused-token", &[Role::Worker]);
        worker.token_sha256.clear();
        worker.tls_identity = Some("worker-1.example".into());
        worker.client_id = Some("worker-1".into());
        principals.push(worker);
    }
    config.auth.principals = principals;
    TestServer::with_config(config).await
}

fn trusting(ca: &Ca) -> Credentials {
    Credentials::none().with_tls(ca.pem(), Some("localhost"))
}

/// A client that trusts the CA and sends its token submits; a plain-text
/// client, or one that trusts another CA, does not get a connection.
#[tokio::test]
async fn tls_clients_get_in_and_plain_ones_do_not() {
    let dir = TempDir::new("tls");
    let ca = Ca::new("test CA");
    let server = tls_server(&dir, &ca, None).await;
    let credentials = trusting(&ca).with_bearer(PRODUCER).unwrap();
    let mut producer = within(
        "connect over TLS",
        Producer::connect_with(&server.url(), credentials),
    )
    .await
    .unwrap();
    within(
        "submit over TLS",
        producer.submit(Submission::to_queue("q").text("secure")),
    )
    .await
    .unwrap();

    let plain = Producer::connect_with(&server.url(), Credentials::bearer(PRODUCER).unwrap()).await;
    let refused = match plain {
        Err(error) => error.to_string(),
        Ok(mut producer) => producer
            .submit(Submission::to_queue("q"))
            .await
            .unwrap_err()
            .to_string(),
    };
    assert!(!refused.is_empty());
    let other = Ca::new("another CA");
    let wrong = Producer::connect_with(&server.url(), trusting(&other)).await;
    assert!(
        wrong.is_err(),
        "a server certificate from another CA is refused"
    );
    let closed = sample(
        &server.scrape().await,
        r#"contact_connections_closed_total{reason="tls_handshake"}"#,
    );
    assert!(
        closed.unwrap_or(0.0) >= 1.0,
        "plain text on a TLS port: {closed:?}"
    );
    server.stop().await;
}

/// Mutual TLS: a worker whose certificate names `worker-1.example` is the
/// principal of that `tls_identity`, with no token, while a producer beside
/// it uses its token; a certificate no principal names, or neither a
/// certificate nor a token, is UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_a_principal() {
    let dir = TempDir::new("mtls");
    let ca = Ca::new("test CA");
    let server = tls_server(&dir, &ca, Some(false)).await;
    let client = ca.leaf(&["worker-1.example"]);
    let credentials = trusting(&ca).with_client_certificate(&client.cert, &client.key);
    let mut worker = within(
        "a worker with a certificate",
        WorkerBuilder::new(server.url())
            .credentials(credentials)
            .connect(),
    )
    .await
    .unwrap();
    assert_eq!(worker.client_id(), "worker-1", "its pinned id");
    let producer_credentials = trusting(&ca).with_bearer(PRODUCER).unwrap();
    let mut producer = Producer::connect_with(&server.url(), producer_credentials)
        .await
        .unwrap();
    let id = producer
        .submit(Submission::to_queue("default").text("for a certificate"))
        .await
        .unwrap();
    let task = within("the task", worker.next_task()).await.unwrap();
    assert_eq!(task.id, id);
    task.done("ok").await.unwrap();

    // A certificate whose name no principal has is UNAUTHENTICATED.
    let stranger = ca.leaf(&["stranger.example"]);
    let credentials = trusting(&ca).with_client_certificate(&stranger.cert, &stranger.key);
    let refused = WorkerBuilder::new(server.url())
        .credentials(credentials)
        .connect()
        .await;
    assert!(
        matches!(&refused, Err(ClientError::Status(s)) if s.code() == Code::Unauthenticated),
        "{refused:?}"
    );
    let without = WorkerBuilder::new(server.url())
        .credentials(trusting(&ca))
        .connect()
        .await;
    assert!(
        matches!(&without, Err(ClientError::Status(s)) if s.code() == Code::Unauthenticated),
        "{without:?}"
    );
    drop(worker);
    server.stop().await;
}

/// With `require_client_certificate`, a client without a certificate does
/// not complete the handshake (counted); one with a certificate does.
#[tokio::test]
async fn a_required_client_certificate_is_required() {
    let dir = TempDir::new("mtls-required");
    let ca = Ca::new("test CA");
    let server = tls_server(&dir, &ca, Some(true)).await;
    let without = Producer::connect_with(&server.url(), trusting(&ca)).await;
    let failed = match without {
        Err(_) => true,
        Ok(mut producer) => producer.submit(Submission::to_queue("q")).await.is_err(),
    };
    assert!(failed);
    common::eventually("the failed handshake counted", || async {
        let failed = sample(
            &server.scrape().await,
            r#"contact_connections_closed_total{reason="tls_handshake"}"#,
        );
        (failed.unwrap_or(0.0) >= 1.0).then_some(())
    })
    .await;
    let client = ca.leaf(&["worker-1.example"]);
    let credentials = trusting(&ca).with_client_certificate(&client.cert, &client.key);
    within(
        "a worker with a certificate",
        WorkerBuilder::new(server.url())
            .credentials(credentials)
            .connect(),
    )
    .await
    .unwrap();
    server.stop().await;
}

/// SIGHUP: the daemon reads its certificate files again. New connections
/// get the new certificate (signed by a new CA); a worker connected before
/// keeps its connection and still takes tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = TempDir::new("reload");
    let old_ca = Ca::new("old CA");
    let (cert, key) = old_ca.leaf(&["localhost"]).write(&dir.0, "server");
    let config = dir.0.join("tls.toml");
    let hash =
        contact_server::auth::token::hex(&contact_server::auth::token::sha256(PRODUCER.as_bytes()));
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n\n[[auth.principals]]\nname = \"all\"\n\
             token_sha256 = \"{hash}\"\nroles = [\"worker\", \"producer\"]\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let data = dir.0.join("journal");
    let daemon = Daemon::start(&data, &["--config", &config]).await;
    let url = daemon.url();
    let old = trusting(&old_ca).with_bearer(PRODUCER).unwrap();
    let mut worker = within(
        "a worker before the reload",
        WorkerBuilder::new(url.clone())
            .client_id("steady")
            .credentials(old.clone())
            .connect(),
    )
    .await
    .unwrap();

    let new_ca = Ca::new("new CA");
    new_ca.leaf(&["localhost"]).write(&dir.0, "server");
    daemon.hangup();
    let new = trusting(&new_ca).with_bearer(PRODUCER).unwrap();
    let mut producer = common::eventually("a client trusting the new CA", || {
        let (url, new) = (url.clone(), new.clone());
        async move { Producer::connect_with(&url, new).await.ok() }
    })
    .await;
    assert!(
        Producer::connect_with(&url, old).await.is_err(),
        "the old certificate is no longer served"
    );
    let id = producer
        .submit(Submission::to_queue("default").text("after the reload"))
        .await
        .unwrap();
    let task = within("the task on the old connection", worker.next_task())
        .await
        .unwrap();
    assert_eq!(task.id, id);
    task.done("still here").await.unwrap();
    drop(worker);
    assert_eq!(daemon.terminate().await, Some(0));
}

/// A certificate file that cannot be read stops the start with a message
/// naming it (the daemon exits 64: restarting would not help).
#[tokio::test]
async fn a_missing_certificate_stops_the_start() {
    let mut config = test_config();
    config.storage.mode = contact_server::config::StorageMode::Memory;
    config.tls.cert_file = Some("/nonexistent/server.crt".into());
    config.tls.key_file = Some("/nonexistent/server.key".into());
    let listeners = contact_server::Listeners::bind(&config).await.unwrap();
    let error = contact_server::start(config, listeners).unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/server.crt"),
        "{error}"
    );
}

/// contactctl speaks TLS with `--ca-file` (and its token).
#[tokio::test]
async fn contactctl_speaks_tls() {
    let dir = TempDir::new("ctl-tls");
    let ca = Ca::new("test CA");
    let server = tls_server(&dir, &ca, None).await;
    let ca_file = dir.0.join("trusted.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let output = within(
        "contactctl over TLS",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_contactctl"))
            .args(["--server", &server.url(), "--tls-domain", "localhost"])
            .arg("--ca-file")
            .arg(&ca_file)
            .args(["submit", "over TLS", "--queue", "q"])
            .env("CONTACT_TOKEN", PRODUCER)
            .output(),
    )
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    server.stop().await;
}

/// With `[tls] http_listener`, `/metrics` is served over TLS with the same
/// certificate; with `[auth] metrics_token_sha256`, a scrape needs the
/// token (401 without it).
#[tokio::test]
async fn the_metrics_listener_speaks_tls_and_asks_for_a_token() {
    use contact_server::auth::token;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_rustls::{
        TlsConnector,
        rustls::{ClientConfig, RootCertStore, pki_types::ServerName},
    };
    let dir = TempDir::new("metrics-tls");
    let ca = Ca::new("test CA");
    let (cert, key) = ca.leaf(&["localhost"]).write(&dir.0, "server");
    let mut config = test_config();
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    config.tls.http_listener = true;
    config.auth.metrics_token_sha256 = token::hex(&token::sha256(b"ct_scraper"));
    config.auth.principals = vec![principal("producer", PRODUCER, &[Role::Producer])];
    let server = TestServer::with_config(config).await;

    let mut roots = RootCertStore::empty();
    let ca_der = rustls_pem(&ca.pem());
    roots.add(ca_der).unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(std::sync::Arc::new(client));
    let scrape = |headers: &'static [&'static str]| {
        let connector = connector.clone();
        let addr = server.metrics_addr;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = within("TLS to /metrics", connector.connect(name, tcp))
                .await
                .unwrap();
            tls.write_all(common::http_get_metrics(headers).as_bytes())
                .await
                .unwrap();
            let mut response = String::new();
            within("the response", tls.read_to_string(&mut response))
                .await
                .ok();
            response
        }
    };
    let without = scrape(&[]).await;
    assert!(without.starts_with("HTTP/1.1 401"), "{without}");
    let wrong = scrape(&["Authorization: Bearer ct_guess"]).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let with = scrape(&["Authorization: Bearer ct_scraper"]).await;
    assert!(with.starts_with("HTTP/1.1 200"), "{with}");
    assert!(with.contains("contact_tasks_submitted_total"), "{with}");
    // Plain HTTP on the TLS port gets no metrics.
    let plain = server
        .get_metrics(&["Authorization: Bearer ct_scraper"])
        .await;
    assert!(!plain.contains("contact_tasks_submitted_total"));
    server.stop().await;
}

fn rustls_pem(pem: &str) -> tokio_rustls::rustls::pki_types::CertificateDer<'static> {
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject as _};
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// An expired certificate is refused both ways: a client will not talk to
/// a server whose certificate has expired, and a server requiring client
/// certificates refuses an expired one at the handshake.
#[tokio::test]
async fn expired_certificates_are_refused() {
    let dir = TempDir::new("expired");
    let ca = Ca::new("test CA");
    let (cert, key) = ca
        .expired_leaf(&["localhost", "127.0.0.1"])
        .write(&dir.0, "server");
    let mut config = test_config();
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    config.auth.principals = vec![principal("producer", PRODUCER, &[Role::Producer])];
    let server = TestServer::with_config(config).await;
    let refused = Producer::connect_with(&server.url(), trusting(&ca)).await;
    assert!(refused.is_err(), "an expired server certificate is refused");
    server.stop().await;

    let server = tls_server(&dir, &ca, Some(true)).await;
    let client = ca.expired_leaf(&["worker-1.example"]);
    let credentials = trusting(&ca).with_client_certificate(&client.cert, &client.key);
    let refused = WorkerBuilder::new(server.url())
        .credentials(credentials)
        .connect()
        .await;
    assert!(refused.is_err(), "an expired client certificate is refused");
    server.stop().await;
}

/// The console over a TLS HTTP listener with a client CA: a client
/// certificate naming an admin principal signs in by itself (no token, no
/// cookie) and may act; without one, the console asks for a sign-in.
#[tokio::test]
async fn a_client_certificate_signs_in_to_the_console() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_rustls::{
        TlsConnector,
        rustls::{
            ClientConfig, RootCertStore,
            pki_types::{PrivateKeyDer, ServerName, pem::PemObject as _},
        },
    };
    let dir = TempDir::new("console-mtls");
    let ca = Ca::new("test CA");
    let mut config = test_config();
    let ca_file = ca.serve_tls(&dir.0, &mut config);
    config.tls.client_ca_file = Some(ca_file);
    config.tls.http_listener = true;
    let mut ops = principal("ops", "ct_console-ops", &[Role::Admin]);
    ops.tls_identity = Some("ops.example".into());
    config.auth.principals = vec![ops];
    let server = TestServer::with_config(config).await;

    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(rustls_pem(&ca.pem())).unwrap();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let leaf = ca.leaf(&["ops.example"]);
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let with_certificate = TlsConnector::from(std::sync::Arc::new(
        builder
            .clone()
            .with_client_auth_cert(vec![rustls_pem(&leaf.cert)], key)
            .unwrap(),
    ));
    let without = TlsConnector::from(std::sync::Arc::new(builder.with_no_client_auth()));
    let request = |connector: TlsConnector, request: String| {
        let addr = server.metrics_addr;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = within("TLS to the console", connector.connect(name, tcp))
                .await
                .unwrap();
            tls.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            within("the response", tls.read_to_string(&mut response))
                .await
                .ok();
            response
        }
    };
    let get =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let session = request(with_certificate.clone(), get("/api/session")).await;
    assert!(session.starts_with("HTTP/1.1 200"), "{session}");
    assert!(
        session.contains(r#""principal":"ops","may_act":true"#),
        "{session}"
    );
    let purge = "POST /api/dead-letters/purge HTTP/1.1\r\nHost: localhost\r\n\
                 x-contact-console: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    let purged = request(with_certificate, purge.to_owned()).await;
    assert!(purged.starts_with("HTTP/1.1 200"), "{purged}");
    let anonymous = request(without.clone(), get("/api/queues")).await;
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    let refused = request(without, purge.to_owned()).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    server.stop().await;
}
