//! TLS for the simulator and other test servers: an in-process certificate
//! authority ([`TestCa`], generated with rcgen, nothing on disk) and the rustls
//! server config (ring provider, ALPN `h2` then `http/1.1`) that `serve_tls` uses.

use std::fmt;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::ring;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A throwaway certificate authority. Trust [`TestCa::cert_pem`] in a client
/// (e.g. as `upstream.ca_file`) and servers with [`TestCa::issue`]d
/// certificates verify.
pub struct TestCa {
    cert: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA with a fresh ECDSA P-256 key.
    ///
    /// # Panics
    ///
    /// If rcgen cannot generate a key or sign with it, which with fixed,
    /// valid parameters means the crypto provider itself is broken.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "fitbit-proxy test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("generate the test CA key");
        let cert = params.self_signed(&key).expect("self-sign the test CA");
        TestCa {
            cert: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate in PEM, to write into a trust file.
    pub fn cert_pem(&self) -> String {
        self.pem.clone()
    }

    /// The CA certificate in DER, for a `rustls::RootCertStore`.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    /// A client configuration that trusts this CA and nothing else, for
    /// test clients of servers whose certificates it issued.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert_der())
            .expect("a certificate this CA made is a valid trust anchor");
        rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the safe default versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by
    /// this CA: the chain (leaf only) and its PKCS#8 key.
    ///
    /// # Panics
    ///
    /// If a name is neither an IP address nor a valid DNS name.
    pub fn issue(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())
            .unwrap_or_else(|e| panic!("invalid certificate names {names:?}: {e}"));
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("generate a server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign a server certificate");
        let key = PrivatePkcs8KeyDer::from(key.serialize_der());
        (vec![cert.der().clone()], PrivateKeyDer::Pkcs8(key))
    }
}

impl Default for TestCa {
    fn default() -> TestCa {
        TestCa::new()
    }
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// The simulator's TLS server config: a `localhost` / `127.0.0.1`
/// certificate from `ca`, ring explicitly (no process-wide default provider
/// needed), ALPN `h2` preferred over `http/1.1`.
///
/// # Panics
///
/// If rustls rejects the freshly issued certificate and key, a bug here.
pub(crate) fn server_config(ca: &TestCa) -> Arc<ServerConfig> {
    let (chain, key) = ca.issue(&["localhost", "127.0.0.1", "::1"]);
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the issued certificate matches its key");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
