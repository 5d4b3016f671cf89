//! Test certificate factory: a private root CA with an intermediate, and
//! leaves with chosen names and validity, so certificate checks can be
//! exercised against every way a real server's chain goes wrong.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, KeyUsagePurpose,
};

pub const DAY: i64 = 86_400;

/// Now, in unix seconds.
pub fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

/// A root CA and an intermediate CA under it.
pub struct Pki {
    /// The root certificate, the only thing a client should trust.
    pub root_pem: String,
    /// The root's common name.
    pub root_name: String,
    // The root stays with its key so a test can issue more under it.
    root: Certificate,
    root_key: KeyPair,
    intermediate: Certificate,
    intermediate_key: KeyPair,
}

impl Pki {
    /// A root CA with this common name and an intermediate CA under it.
    pub fn new(root_cn: &str) -> Pki {
        let root_key = KeyPair::generate().expect("root key");
        let root = ca_params(root_cn)
            .self_signed(&root_key)
            .expect("self-sign the root");
        let intermediate_key = KeyPair::generate().expect("intermediate key");
        let intermediate = ca_params(&format!("{root_cn} Intermediate"))
            .signed_by(&intermediate_key, &root, &root_key)
            .expect("sign the intermediate");
        Pki {
            root_pem: root.pem(),
            root_name: root_cn.to_string(),
            root,
            root_key,
            intermediate,
            intermediate_key,
        }
    }

    /// Leaf for `names` (DNS names or IP literals), valid from/to (unix
    /// seconds), signed by the intermediate. Returns (chain_pem, key_pem)
    /// where chain = leaf + intermediate, or leaf only when
    /// `with_intermediate` is false.
    pub fn leaf(
        &self,
        names: &[&str],
        not_before: i64,
        not_after: i64,
        with_intermediate: bool,
    ) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let leaf = leaf_params(names, not_before, not_after)
            .signed_by(&key, &self.intermediate, &self.intermediate_key)
            .expect("sign the leaf");
        let mut chain = leaf.pem();
        if with_intermediate {
            chain.push_str(&self.intermediate.pem());
        }
        (chain, key.serialize_pem())
    }
}

/// A self-signed leaf (not a CA) for `names`: (cert_pem, key_pem).
pub fn self_signed(names: &[&str], not_before: i64, not_after: i64) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let cert = leaf_params(names, not_before, not_after)
        .self_signed(&key)
        .expect("self-sign");
    (cert.pem(), key.serialize_pem())
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // Signed certificates get an authority key identifier, as real ones do.
    params.use_authority_key_identifier_extension = true;
    let now = now();
    set_validity(&mut params, now - DAY, now + 3650 * DAY);
    params
}

fn leaf_params(names: &[&str], not_before: i64, not_after: i64) -> CertificateParams {
    let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("valid names");
    params.distinguished_name = name(names.first().copied().unwrap_or("mailcheck test leaf"));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, not_before, not_after);
    params
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Sets the validity window from unix seconds. rcgen's dates are `time`
/// values, reached here from its epoch helper so the tests need not depend
/// on `time` directly.
fn set_validity(params: &mut CertificateParams, not_before: i64, not_after: i64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let shift = |unix: i64| {
        let by = Duration::from_secs(unix.unsigned_abs());
        if unix >= 0 {
            epoch + by
        } else {
            epoch - by
        }
    };
    params.not_before = shift(not_before);
    params.not_after = shift(not_after);
}
