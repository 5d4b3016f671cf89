//! TLS client set-up: system roots plus `--cacert`, and a verifier that
//! records what it saw so `--insecure` can still say what was wrong.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What the server's certificate says and whether it verified.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CertReport {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    pub names: Vec<String>,
    /// Validity as unix seconds, for "days left" and clock checks.
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// Certificates the server sent besides the leaf.
    pub intermediates: usize,
    /// Why verification failed (also recorded when `--insecure` let it pass).
    pub problem: Option<String>,
    /// The same, classified, for diagnosis.
    pub problem_kind: Option<CertProblemKind>,
}

/// What kind of certificate failure webpki reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertProblemKind {
    Expired,
    NotYetValid,
    WrongHost,
    UnknownIssuer,
    BadSignature,
    NoRoots,
    Other,
}

impl CertReport {
    /// Issuer and subject are the same: a self-signed certificate.
    pub fn self_signed(&self) -> bool {
        !self.subject.is_empty() && self.subject == self.issuer
    }
}

fn classify(e: &rustls::Error) -> CertProblemKind {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => CertProblemKind::Expired,
            C::NotValidYet | C::NotValidYetContext { .. } => CertProblemKind::NotYetValid,
            C::NotValidForName | C::NotValidForNameContext { .. } => CertProblemKind::WrongHost,
            C::UnknownIssuer => CertProblemKind::UnknownIssuer,
            C::BadSignature => CertProblemKind::BadSignature,
            _ => CertProblemKind::Other,
        },
        rustls::Error::General(_) => CertProblemKind::NoRoots,
        _ => CertProblemKind::Other,
    }
}

/// Trust settings shared by every connection of a run.
#[derive(Clone)]
pub struct TlsSettings {
    roots: Arc<RootCertStore>,
    insecure: bool,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("roots", &self.roots.len())
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl TlsSettings {
    /// System roots, plus the certificates in `cacert` (PEM) when given.
    pub fn new(cacert: Option<&Path>, insecure: bool) -> Result<TlsSettings, String> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = cacert {
            Self::add_pem(&mut roots, path)?;
        }
        Ok(TlsSettings {
            roots: Arc::new(roots),
            insecure,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// Only the given PEM text as roots (tests, the demo's own certificate).
    pub fn with_pem_roots(pem: &str) -> Result<TlsSettings, String> {
        let mut roots = RootCertStore::empty();
        let mut added = 0;
        for cert in pem_certs(pem.as_bytes())? {
            roots.add(cert).map_err(|e| format!("bad CA certificate: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("no certificate in the PEM text".into());
        }
        Ok(TlsSettings {
            roots: Arc::new(roots),
            insecure: false,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    fn add_pem(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
        let data =
            std::fs::read(path).map_err(|e| format!("cannot read --cacert {}: {e}", path.display()))?;
        let certs = pem_certs(&data).map_err(|e| format!("--cacert {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("--cacert {}: no PEM certificate found", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
        }
        Ok(())
    }

    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// A client config whose verifier reports into `report`.
    pub(crate) fn client_config(
        &self,
        report: Arc<Mutex<Option<CertReport>>>,
    ) -> Result<Arc<rustls::ClientConfig>, String> {
        let inner = if self.roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                    .build()
                    .map_err(|e| format!("cannot build the certificate verifier: {e}"))?,
            )
        };
        let verifier = RecordingVerifier {
            inner,
            insecure: self.insecure,
            provider: self.provider.clone(),
            report,
        };
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

fn pem_certs(data: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))
}

/// Verifies like webpki, but first writes down the certificate and any problem.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    insecure: bool,
    provider: Arc<CryptoProvider>,
    report: Arc<Mutex<Option<CertReport>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = match &self.inner {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::Error::General(
                "no trusted root certificates (the system store is empty; pass --cacert)".into(),
            )),
        };
        let mut report = describe_cert(end_entity);
        report.intermediates = intermediates.len();
        report.problem = result.as_ref().err().map(|e| e.to_string());
        report.problem_kind = result.as_ref().err().map(classify);
        if let Ok(mut slot) = self.report.lock() {
            *slot = Some(report);
        }
        match result {
            Err(_) if self.insecure => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Subject, issuer, validity and names of a DER certificate, for reports.
pub fn describe_cert(der: &CertificateDer<'_>) -> CertReport {
    use x509_parser::prelude::*;
    match X509Certificate::from_der(der.as_ref()) {
        Ok((_, cert)) => {
            let mut names = Vec::new();
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                for n in &san.value.general_names {
                    match n {
                        GeneralName::DNSName(d) => names.push(d.to_string()),
                        GeneralName::IPAddress(ip) => names.push(format_ip(ip)),
                        _ => {}
                    }
                }
            }
            CertReport {
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                not_before: cert.validity().not_before.to_string(),
                not_after: cert.validity().not_after.to_string(),
                not_before_unix: cert.validity().not_before.timestamp(),
                not_after_unix: cert.validity().not_after.timestamp(),
                names,
                ..Default::default()
            }
        }
        Err(e) => CertReport {
            problem: Some(format!("unparsable certificate: {e}")),
            ..Default::default()
        },
    }
}

fn format_ip(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(bytes);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => format!("{bytes:02x?}"),
    }
}
