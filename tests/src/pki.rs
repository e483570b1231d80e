//! Certificates made by a test (rcgen): a CA, server certificates for etcd, client certificates
//! for cbrnet (valid, expired, or paired with the wrong key), written as PEM files; and the set a
//! TLS-only etcd and its clients use ([`EtcdPki`]).

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

/// When a certificate is valid.
#[derive(Clone, Copy)]
enum Validity {
    /// From now on (rcgen's default: years ahead).
    Now,
    /// 2020 to 2021.
    Expired,
    /// 2090 to 2091.
    Future,
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

    fn sign(&self, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose, when: Validity) -> Pair {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![usage];
        match when {
            Validity::Now => {}
            Validity::Expired => {
                p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                p.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            Validity::Future => {
                p.not_before = rcgen::date_time_ymd(2090, 1, 1);
                p.not_after = rcgen::date_time_ymd(2091, 1, 1);
            }
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
        self.sign("etcd", sans, ExtendedKeyUsagePurpose::ServerAuth, Validity::Now)
    }

    /// A server certificate for these addresses or names that expired in 2021.
    pub fn expired_server(&self, sans: &[&str]) -> Pair {
        self.sign(
            "etcd",
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            Validity::Expired,
        )
    }

    /// A server certificate for these addresses or names, valid from 2090 on.
    pub fn future_server(&self, sans: &[&str]) -> Pair {
        self.sign(
            "etcd",
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            Validity::Future,
        )
    }

    /// A client certificate whose common name is `cn`.
    pub fn client(&self, cn: &str) -> Pair {
        self.sign(cn, &[], ExtendedKeyUsagePurpose::ClientAuth, Validity::Now)
    }

    /// A client certificate that expired in 2021.
    pub fn expired_client(&self, cn: &str) -> Pair {
        self.sign(cn, &[], ExtendedKeyUsagePurpose::ClientAuth, Validity::Expired)
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

/// What a TLS-only etcd and its clients are given, in a directory of the test's: etcd's server
/// certificate for some names and the CA that signs it, and the CA that signs the clients'.
pub struct EtcdPki {
    pub dir: tempfile::TempDir,
    /// Signs etcd's server certificate.
    pub ca: Ca,
    pub ca_file: PathBuf,
    /// Signs the clients' certificates.
    pub client_ca: Ca,
    /// etcd's side, asking for client certificates of `client_ca` if it was made so.
    pub server: crate::etcd::ServerTls,
}

impl EtcdPki {
    /// etcd's certificate for `names` (addresses or DNS names); client certificates asked for if
    /// `client_certs`.
    pub fn new(names: &[&str], client_certs: bool) -> EtcdPki {
        EtcdPki::with_server(|ca| ca.server(names), client_certs)
    }

    /// [`EtcdPki::new`] with the server certificate `make` signs with the CA (an expired one, say).
    pub fn with_server(make: impl FnOnce(&Ca) -> Pair, client_certs: bool) -> EtcdPki {
        let dir = crate::temp_dir();
        let ca = Ca::new("etcd-ca");
        let client_ca = Ca::new("etcd-client-ca");
        let server = make(&ca).write(dir.path(), "server");
        let client_ca_file = client_ca.write(&dir.path().join("client-ca.crt"));
        EtcdPki {
            ca_file: ca.write(&dir.path().join("ca.crt")),
            server: crate::etcd::ServerTls {
                cert: server.cert,
                key: server.key,
                client_ca: client_certs.then_some(client_ca_file),
            },
            dir,
            ca,
            client_ca,
        }
    }

    /// How a client of the test's reaches this etcd: its CA, and a client certificate of
    /// `client_ca` with the common name `cn` if given (etcd's user of that name, when its users
    /// are on).
    pub fn client_options(&self, cn: Option<&str>) -> etcd_client::ConnectOptions {
        let mut tls =
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(self.ca.pem()));
        if let Some(cn) = cn {
            let pair = self.client_ca.client(cn);
            tls = tls.identity(etcd_client::Identity::from_pem(pair.cert, pair.key));
        }
        etcd_client::ConnectOptions::new().with_tls(tls)
    }
}
