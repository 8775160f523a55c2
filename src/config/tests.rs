//! The configuration's defaults, parsing and validation, through the
//! same entry points the daemon uses.
#![allow(clippy::unwrap_used)]

use super::*;

/// The example file documents exactly the defaults: it cannot drift.
#[test]
fn example_file_equals_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/contact-server.toml");
    assert_eq!(Config::load(&path).unwrap(), Config::default());
}

/// The default address constants parse, so `default_addr` never falls back.
#[test]
fn default_addresses_parse() {
    assert!(DEFAULT_GRPC_ADDR.parse::<SocketAddr>().is_ok());
    assert!(DEFAULT_METRICS_ADDR.parse::<SocketAddr>().is_ok());
    Config::default().validate().unwrap();
}

/// An unknown key stops the daemon with a message naming it.
#[test]
fn unknown_key_is_named() {
    let err = Config::from_toml("[server]\ngrpc_adr = \"127.0.0.1:1\"\n", "t.toml").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("grpc_adr"), "{text}");
    assert!(text.contains("t.toml"), "{text}");
}

/// A bad value is named with its key, whether parsing or validation finds it.
#[test]
fn bad_values_are_named() {
    let err = Config::from_toml("[server]\ngrpc_addr = \"nowhere\"\n", "t.toml").unwrap_err();
    assert!(err.to_string().contains("grpc_addr"), "{err}");
    let err = Config::from_toml("[workers]\ndefault_max_in_flight = 0\n", "t.toml").unwrap_err();
    assert!(
        err.to_string().contains("workers.default_max_in_flight"),
        "{err}"
    );
    let err = Config::from_toml("[tasks]\nmax_attempts = -1\n", "t.toml").unwrap_err();
    assert!(err.to_string().contains("max_attempts"), "{err}");
    let err = Config::from_toml("[queues.\"bad name\"]\nmax_attempts = 2\n", "t.toml").unwrap_err();
    assert!(err.to_string().contains("bad name"), "{err}");
    let err = Config::from_toml("[queues.mail]\nretry_factor = 0.5\n", "t.toml").unwrap_err();
    assert!(err.to_string().contains("queues.*.retry_factor"), "{err}");
}

/// Absurd durations are refused at start, naming the key, instead of
/// overflowing a deadline later.
#[test]
fn absurd_durations_are_refused() {
    for text in [
        "[tasks]\nidempotency_window_secs = 18446744073709551615\n",
        "[workers]\nresume_grace_secs = 999999999999\n",
        "[queues.mail]\nretry_max_delay_ms = 18446744073709551615\n",
    ] {
        let err = Config::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("ten years"), "{err}");
    }
    let err = Config::from_toml("[workers]\nmin_keepalive_ms = 15000\n", "t.toml").unwrap_err();
    assert!(
        err.to_string().contains("workers.min_keepalive_ms"),
        "{err}"
    );
}

/// Listen addresses take the forms every tool takes; a missing port or a
/// host name other than localhost is refused with the forms that work.
#[test]
fn listen_addresses_take_every_form() {
    for text in ["127.0.0.1:7000", "localhost:7000", "http://localhost:7000/"] {
        assert_eq!(
            parse_listen_addr(text),
            Ok("127.0.0.1:7000".parse().unwrap())
        );
    }
    assert_eq!(
        parse_listen_addr("[::1]:7000"),
        Ok("[::1]:7000".parse().unwrap())
    );
    for bad in ["localhost", "example.com:80", "127.0.0.1"] {
        assert!(
            parse_listen_addr(bad)
                .unwrap_err()
                .contains("localhost:50051"),
            "{bad}"
        );
    }
    let config = Config::from_toml("[server]\ngrpc_addr = \"localhost:7001\"\n", "t").unwrap();
    assert_eq!(config.server.grpc_addr, "127.0.0.1:7001".parse().unwrap());
}

/// A queue section overrides only the keys it names.
#[test]
fn queue_overrides_parse() {
    let config = Config::from_toml("[queues.mail]\nmax_attempts = 9\n", "t.toml").unwrap();
    assert_eq!(config.queues["mail"].max_attempts, Some(9));
    assert_eq!(config.queues["mail"].retry_factor, None);
}

/// Keys left out keep their defaults.
#[test]
fn partial_file_keeps_defaults() {
    let config = Config::from_toml("[tasks]\nmax_attempts = 2\n", "t.toml").unwrap();
    assert_eq!(config.tasks.max_attempts, 2);
    assert_eq!(config.server, ServerConfig::default());
}

/// Protected mode: with no principal, a listener off loopback is refused
/// with a message that says how to proceed, unless the config allows it;
/// with principals it is allowed.
#[test]
fn protected_mode_keeps_an_open_server_on_loopback() {
    let exposed = "[server]\ngrpc_addr = \"0.0.0.0:50051\"\n";
    let err = Config::from_toml(exposed, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.grpc_addr"), "{err}");
    assert!(err.contains("protected mode"), "{err}");
    assert!(err.contains("allow_unauthenticated"), "{err}");
    let metrics = "[server]\nmetrics_addr = \"[::]:9464\"\n";
    assert!(Config::from_toml(metrics, "t.toml").is_err());
    let allowed = format!("{exposed}[auth]\nallow_unauthenticated = true\n");
    Config::from_toml(&allowed, "t.toml").unwrap();
    let hash = crate::auth::token::hex(&crate::auth::token::sha256(b"secret"));
    let with_principal = format!(
        "{exposed}[[auth.principals]]\nname = \"ops\"\ntoken_sha256 = \"{hash}\"\nroles = [\"admin\"]\n"
    );
    let config = Config::from_toml(&with_principal, "t.toml").unwrap();
    assert!(config.auth.enabled());
}

/// Principals are checked: a hash that is not one, no roles, an unknown
/// role, a name or a pinned worker id used twice.
#[test]
fn bad_principals_are_named() {
    let hash = crate::auth::token::hex(&crate::auth::token::sha256(b"secret"));
    let other = crate::auth::token::hex(&crate::auth::token::sha256(b"other"));
    let entry = |name: &str, hash: &str, extra: &str| {
        format!(
            "[[auth.principals]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\nroles = [\"worker\"]\n{extra}"
        )
    };
    for (text, says) in [
        (entry("a", "secret", ""), "token_sha256"),
        (
            entry("a", &hash, "") + &entry("a", &other, ""),
            "used twice",
        ),
        (
            entry("a", &hash, "") + &entry("b", &hash, ""),
            "another principal",
        ),
        (
            entry("a", &hash, "client_id = \"w\"\n") + &entry("b", &other, "client_id = \"w\"\n"),
            "pinned to two",
        ),
        (
            entry("a", &hash, "queues = [\"\"]\n"),
            "auth.principals.queues",
        ),
        (
            format!("[[auth.principals]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\nroles = []\n"),
            "at least one",
        ),
        (
            format!(
                "[[auth.principals]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\nroles = [\"root\"]\n"
            ),
            "root",
        ),
    ] {
        let err = Config::from_toml(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains(says), "{text}\n{err}");
    }
}

/// TLS settings that would silently do less than they say are refused: a
/// required client certificate, or a principal's tls_identity, with no
/// client CA to check certificates against.
#[test]
fn mutual_tls_without_a_client_ca_is_refused() {
    let tls = "[tls]\ncert_file = \"s.crt\"\nkey_file = \"s.key\"\n";
    let err = Config::from_toml(&format!("{tls}require_client_certificate = true\n"), "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls.client_ca_file"), "{err}");
    let identity = format!(
        "{tls}[[auth.principals]]\nname = \"w\"\ntls_identity = \"w.example\"\nroles = [\"worker\"]\n"
    );
    let err = Config::from_toml(&identity, "t").unwrap_err().to_string();
    assert!(err.contains("tls_identity"), "{err}");
    let with_ca = identity.replace(
        "key_file = \"s.key\"\n",
        "key_file = \"s.key\"\nclient_ca_file = \"ca.crt\"\n",
    );
    Config::from_toml(&with_ca, "t").unwrap();
}
