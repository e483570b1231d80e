//! Certificates made by a test (rcgen): a CA, server certificates for etcd, client certificates
//! for cbrnet (valid, expired, or paired with the wrong key), written as PEM files.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A certificate authority of the test's.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
}

/// Where a pair was written.
#[derive(Clone, Debug)]
pub struct PairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA's certificate to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.pem()).unwrap();
        path.to_path_buf()
    }

    fn sign(&self, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose, expired: bool) -> Pair {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![usage];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for these addresses or names.
    pub fn server(&self, sans: &[&str]) -> Pair {
        self.sign("etcd", sans, ExtendedKeyUsagePurpose::ServerAuth, false)
    }

    /// A client certificate whose common name is `cn`.
    pub fn client(&self, cn: &str) -> Pair {
        self.sign(cn, &[], ExtendedKeyUsagePurpose::ClientAuth, false)
    }

    /// A client certificate that expired in 2021.
    pub fn expired_client(&self, cn: &str) -> Pair {
        self.sign(cn, &[], ExtendedKeyUsagePurpose::ClientAuth, true)
    }
}

impl Pair {
    /// Writes `<dir>/<name>.crt` and `<dir>/<name>.key` (the key 0600, as a secret should be).
    pub fn write(&self, dir: &Path, name: &str) -> PairFiles {
        let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        write_atomically(&cert, self.cert.as_bytes(), 0o644);
        write_atomically(&key, self.key.as_bytes(), 0o600);
        PairFiles { cert, key }
    }

    /// This certificate with another pair's key.
    pub fn with_key_of(&self, other: &Pair) -> Pair {
        Pair {
            cert: self.cert.clone(),
            key: other.key.clone(),
        }
    }
}

/// Writes `bytes` to `path` as a rotation does: a temporary file renamed into place.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
