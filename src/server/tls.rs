//! The embedded server's TLS identity.
//!
//! Usually a throwaway self-signed one generated at start-up, so the demo
//! needs no files and clients trust it by pinning [`TlsIdentity::cert_pem`];
//! tests that need a real chain (CA, intermediate, expired or misnamed
//! leaves) load one with [`TlsIdentity::from_pem`].

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::ServerError;

/// Certificate, key and the rustls configuration built from them.
pub struct TlsIdentity {
    /// The certificate chain, PEM-encoded: for a generated identity the
    /// self-signed certificate clients can trust.
    pub cert_pem: String,
    /// The leaf certificate.
    cert_der: CertificateDer<'static>,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsIdentity {
    /// Hand-written so the private key can never end up in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A fresh key pair and certificate valid for `names` (DNS names or IP
    /// addresses, e.g. `["localhost", "127.0.0.1"]`).
    pub fn generate(names: &[&str]) -> Result<Self, ServerError> {
        let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(sans)
            .map_err(|e| ServerError::Tls(format!("certificate parameters: {e}")))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mailcheck embedded server");
        let key_pair =
            rcgen::KeyPair::generate().map_err(|e| ServerError::Tls(format!("key generation: {e}")))?;
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| ServerError::Tls(format!("self-signing: {e}")))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        Self::build(cert.pem(), vec![cert.der().clone()], key)
    }

    /// An identity from PEM text: `chain_pem` holds the leaf first, then any
    /// intermediates, and all of it is sent in the handshake, so a test can
    /// serve exactly the chain (complete or not) it wants a client to judge.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, ServerError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServerError::Tls(format!("certificate chain: {e}")))?;
        if chain.is_empty() {
            return Err(ServerError::Tls(
                "certificate chain: no certificate in the PEM text".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| ServerError::Tls(format!("private key: {e}")))?;
        Self::build(chain_pem.to_string(), chain, key)
    }

    fn build(
        cert_pem: String,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, ServerError> {
        let cert_der = chain[0].clone();
        // `with_single_cert` also checks that the key matches the leaf.
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| ServerError::Tls(format!("protocol versions: {e}")))?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| ServerError::Tls(format!("server certificate: {e}")))?;
        Ok(TlsIdentity {
            cert_pem,
            cert_der,
            config: Arc::new(config),
        })
    }

    /// The leaf certificate in DER form, for clients that add it as a root.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The rustls configuration the listeners use.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem_certificate() {
        let id = TlsIdentity::generate(&["localhost", "127.0.0.1"]);
        assert!(id.is_ok());
        if let Ok(id) = id {
            assert!(id.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(!id.cert_der().is_empty());
            assert!(!format!("{id:?}").contains("PRIVATE"));
        }
    }

    #[test]
    fn loads_pem_chain_and_key() {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        let id = TlsIdentity::from_pem(&cert.pem(), &key.serialize_pem()).expect("identity");
        assert_eq!(id.cert_der(), cert.der());
        assert_eq!(id.cert_pem, cert.pem());

        assert!(
            TlsIdentity::from_pem("", &key.serialize_pem()).is_err(),
            "no certificate"
        );
        assert!(TlsIdentity::from_pem(&cert.pem(), "").is_err(), "no key");
        let other = rcgen::KeyPair::generate().expect("key");
        assert!(
            TlsIdentity::from_pem(&cert.pem(), &other.serialize_pem()).is_err(),
            "key does not match the leaf"
        );
    }

    #[test]
    fn rejects_invalid_names() {
        assert!(TlsIdentity::generate(&["caf\u{e9}.example"]).is_err());
    }
}
