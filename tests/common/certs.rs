//! Certificates for the TLS tests, made fresh by each test with rcgen: a
//! CA, and server and client certificates it signs, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority of the test's own.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Sets `config` up for TLS with a server certificate from this CA (for
    /// `localhost` and `127.0.0.1`, written into `dir`); the CA's own
    /// certificate file, for clients to trust.
    pub fn serve_tls(&self, dir: &Path, config: &mut contact_server::Config) -> PathBuf {
        let (cert, key) = self.leaf(&["localhost", "127.0.0.1"]).write(dir, "server");
        config.tls.cert_file = Some(cert);
        config.tls.key_file = Some(key);
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, self.pem()).unwrap();
        ca_file
    }

    /// A certificate for `names` (DNS names or IP addresses), good for a
    /// server and a client.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.make_leaf(names, false)
    }

    /// [`Ca::leaf`], but valid only in 2020: long expired.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        self.make_leaf(names, true)
    }

    fn make_leaf(&self, names: &[&str], expired: bool) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

impl Leaf {
    /// Writes `NAME.crt` and `NAME.key` into `dir`; their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert).unwrap();
        std::fs::write(&key, &self.key).unwrap();
        (cert, key)
    }
}
