//! A throwaway self-signed TLS identity for the embedded server.
//!
//! Generated at start-up so the demo needs no files; clients trust it by
//! pinning [`TlsIdentity::cert_pem`].

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::ServerError;

/// Certificate, key and the rustls configuration built from them.
pub struct TlsIdentity {
    /// The self-signed certificate, PEM-encoded, for clients to trust.
    pub cert_pem: String,
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
        let cert_der = cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| ServerError::Tls(format!("protocol versions: {e}")))?
                .with_no_client_auth()
                .with_single_cert(vec![cert_der.clone()], key)
                .map_err(|e| ServerError::Tls(format!("server certificate: {e}")))?;
        Ok(TlsIdentity {
            cert_pem: cert.pem(),
            cert_der,
            config: Arc::new(config),
        })
    }

    /// The certificate in DER form, for clients that add it as a root.
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
    fn rejects_invalid_names() {
        assert!(TlsIdentity::generate(&["caf\u{e9}.example"]).is_err());
    }
}
