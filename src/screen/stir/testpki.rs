//! A SHAKEN test PKI generated on the spot (root, intermediate, leaf with TNAuthList and a
//! critical certificatePolicies extension, as the real SHAKEN PKI has) and PASSporTs signed
//! with it. Used by the unit tests and, through `#[path]`, by the tests of the binary.
#![allow(dead_code)]
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber, date_time_ymd,
};

/// Options for the PKI.
#[derive(Clone, Copy)]
pub struct Opts<'a> {
    pub spc: &'a str,
    /// Leaf valid only in 2020 (expired today).
    pub leaf_expired: bool,
    /// Mark an extension nobody understands critical on the leaf.
    pub unknown_critical: bool,
    pub leaf_serial: u64,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts { spc: "709J", leaf_expired: false, unknown_critical: false, leaf_serial: 1001 }
    }
}

pub struct Pki {
    pub root_pem: String,
    pub root_der: Vec<u8>,
    /// The x5u body: leaf then intermediate, PEM.
    pub chain_pem: String,
    pub leaf_der: Vec<u8>,
    pub inter_der: Vec<u8>,
    pub leaf_pkcs8: Vec<u8>,
    inter_params: CertificateParams,
    inter_key: KeyPair,
}

/// `SEQUENCE { SEQUENCE { OID 2.16.840.1.114569.1.1.1 } }`: the SHAKEN certificate policy.
const SHAKEN_POLICIES: [u8; 16] =
    [0x30, 0x0e, 0x30, 0x0c, 0x06, 0x0a, 0x60, 0x86, 0x48, 0x01, 0x86, 0xff, 0x09, 0x01, 0x01, 0x01];

fn policies() -> CustomExtension {
    let mut e = CustomExtension::from_oid_content(&[2, 5, 29, 32], SHAKEN_POLICIES.to_vec());
    e.set_criticality(true);
    e
}

fn tn_auth_list(spc: &str) -> CustomExtension {
    let s = spc.as_bytes();
    let mut der = vec![0x30, (s.len() + 4) as u8, 0xa0, (s.len() + 2) as u8, 0x16, s.len() as u8];
    der.extend_from_slice(s);
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 26], der)
}

fn ca(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    p.key_identifier_method = KeyIdMethod::Sha256;
    p
}

pub fn pki(o: Opts<'_>) -> Pki {
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let root_key = KeyPair::generate_for(alg).unwrap();
    let root_params = ca("Test STI-PA Root");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::from_params(&root_params, &root_key);
    let inter_key = KeyPair::generate_for(alg).unwrap();
    let mut inter_params = ca("Test STI-CA Intermediate");
    inter_params.custom_extensions = vec![policies()];
    let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
    let leaf_key = KeyPair::generate_for(alg).unwrap();
    let mut lp = CertificateParams::new(Vec::<String>::new()).unwrap();
    lp.distinguished_name.push(DnType::CommonName, format!("SHAKEN {}", o.spc));
    lp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    lp.serial_number = Some(SerialNumber::from(o.leaf_serial));
    lp.custom_extensions = vec![policies(), tn_auth_list(o.spc)];
    if o.unknown_critical {
        let mut e = CustomExtension::from_oid_content(&[1, 2, 3, 4, 5], vec![0x05, 0x00]);
        e.set_criticality(true);
        lp.custom_extensions.push(e);
    }
    (lp.not_before, lp.not_after) = if o.leaf_expired {
        (date_time_ymd(2020, 1, 1), date_time_ymd(2020, 12, 31))
    } else {
        (date_time_ymd(2020, 1, 1), date_time_ymd(2039, 1, 1))
    };
    let inter_issuer = Issuer::from_params(&inter_params, &inter_key);
    let leaf = lp.signed_by(&leaf_key, &inter_issuer).unwrap();
    Pki {
        root_pem: root.pem(),
        root_der: root.der().to_vec(),
        chain_pem: format!("{}{}", leaf.pem(), inter.pem()),
        leaf_der: leaf.der().to_vec(),
        inter_der: inter.der().to_vec(),
        leaf_pkcs8: leaf_key.serialize_der(),
        inter_params,
        inter_key,
    }
}

impl Pki {
    /// A CRL from the intermediate revoking `serials`, DER.
    pub fn crl(&self, serials: &[u64]) -> Vec<u8> {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2039, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: date_time_ymd(2024, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&Issuer::from_params(&self.inter_params, &self.inter_key)).unwrap().der().to_vec()
    }

    /// A compact JWS over `header` and `claims` (JSON text, signed exactly as given).
    pub fn sign(&self, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.leaf_pkcs8,
            &rng,
        )
        .unwrap();
        let sig = key.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// A SHAKEN Identity header value for a call from `orig` to `dest` at `iat`.
    pub fn identity(&self, x5u: &str, attest: &str, orig: &str, dest: &str, iat: u64) -> String {
        let header = format!(r#"{{"alg":"ES256","typ":"passport","ppt":"shaken","x5u":"{x5u}"}}"#);
        let claims = format!(
            r#"{{"attest":"{attest}","dest":{{"tn":["{dest}"]}},"iat":{iat},"orig":{{"tn":"{orig}"}},"origid":"de305d54-75b4-431b-adb2-eb6b9e546014"}}"#
        );
        format!("{};info=<{x5u}>;alg=ES256;ppt=shaken", self.sign(&header, &claims))
    }
}
