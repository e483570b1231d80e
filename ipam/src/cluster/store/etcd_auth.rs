//! How the etcd store proves who it is: TLS (the CA that signs etcd's certificate, a client
//! certificate and its key) and an etcd user, all read from files, and what each failure against
//! etcd means in words a person can act on.
//!
//! The files are read again when they change (see [`Files::changed`]), so certificates rotate
//! without a restart; what they hold is judged here (PEM, a key that matches its certificate, a
//! certificate within its validity) before a connection is made with them, so a broken new file
//! never replaces a working connection.

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The TLS files and user named on the command line (every path is read, never written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdAuth {
    /// The CA that signs etcd's server certificate; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The client certificate (PEM, the chain up to the CA), with its key.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    /// The user's password: the file's first line.
    pub password_file: Option<PathBuf>,
}

impl EtcdAuth {
    /// Whether any TLS file is named (they only make sense with `https://`).
    pub fn has_tls_files(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// The flag and path of every file named, in the order they are read.
    pub fn files(&self) -> Vec<(&'static str, &Path)> {
        [
            ("--etcd-ca-file", &self.ca_file),
            ("--etcd-cert-file", &self.cert_file),
            ("--etcd-key-file", &self.key_file),
            ("--etcd-password-file", &self.password_file),
        ]
        .into_iter()
        .filter_map(|(flag, p)| p.as_deref().map(|p| (flag, p)))
        .collect()
    }

    /// What the files hold now (a file that cannot be read is an error naming its flag).
    pub fn read(&self) -> Result<Files, String> {
        let read = |flag: &str, p: &Option<PathBuf>| -> Result<Option<Vec<u8>>, String> {
            p.as_deref()
                .map(|p| std::fs::read(p).map_err(|e| format!("{flag} {}: {e}", p.display())))
                .transpose()
        };
        Ok(Files(Arc::new(Contents {
            ca: read("--etcd-ca-file", &self.ca_file)?,
            cert: read("--etcd-cert-file", &self.cert_file)?,
            key: read("--etcd-key-file", &self.key_file)?,
            password: read("--etcd-password-file", &self.password_file)?,
        })))
    }
}

#[derive(PartialEq, Eq)]
struct Contents {
    ca: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    password: Option<Vec<u8>>,
}

/// What the auth files held when they were read. Compared by content: a rotation by rename and
/// one written in place within the same second both show.
#[derive(Clone, PartialEq, Eq)]
pub struct Files(Arc<Contents>);

impl std::fmt::Debug for Files {
    // The contents are secrets: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Files(..)")
    }
}

impl Files {
    /// Whether `now` differs from what was read before.
    pub fn changed(&self, now: &Files) -> bool {
        self != now
    }

    /// Connect options for these files, judged first: every failure says which file and why.
    /// `tls`: the endpoints are `https://`.
    pub fn options(
        &self,
        auth: &EtcdAuth,
        tls: bool,
        base: ConnectOptions,
    ) -> Result<ConnectOptions, String> {
        let c = &self.0;
        let mut opts = base;
        if let (Some(user), Some(pw)) = (&auth.username, &c.password) {
            let pw =
                String::from_utf8(pw.clone()).map_err(|_| "--etcd-password-file is not UTF-8".to_string())?;
            let pw = pw.lines().next().unwrap_or("");
            if pw.is_empty() {
                return Err("--etcd-password-file is empty".into());
            }
            opts = opts.with_user(user.clone(), pw).with_auto_token_refresh(true);
        }
        if !tls {
            return Ok(opts);
        }
        let mut t = TlsOptions::new().assume_http2(true);
        t = match &c.ca {
            Some(ca) => {
                let n = pem_certs(ca).map_err(|e| format!("--etcd-ca-file: {e}"))?.len();
                if n == 0 {
                    return Err("--etcd-ca-file holds no PEM certificate".into());
                }
                t.ca_certificate(Certificate::from_pem(ca))
            }
            None => t.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&c.cert, &c.key) {
            check_identity(cert, key)?;
            t = t.identity(Identity::from_pem(cert, key));
        }
        Ok(opts.with_tls(t))
    }
}

fn pem_certs(pem: &[u8]) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates ({e})"))
}

/// The client certificate parses, is within its validity, and the key is its key.
fn check_identity(cert: &[u8], key: &[u8]) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let chain = pem_certs(cert).map_err(|e| format!("--etcd-cert-file: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err("--etcd-cert-file holds no PEM certificate".into());
    };
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("--etcd-key-file holds no PEM private key ({e})"))?;
    let now = super::super::record::unix_now() as i64;
    match validity(leaf) {
        Some((_, not_after)) if not_after < now => {
            return Err(format!(
                "the client certificate (--etcd-cert-file) expired at {}",
                utc(not_after)
            ))
        }
        Some((not_before, _)) if not_before > now => {
            return Err(format!(
                "the client certificate (--etcd-cert-file) is not valid before {}",
                utc(not_before)
            ))
        }
        Some(_) => {}
        None => return Err("--etcd-cert-file: the certificate cannot be parsed".into()),
    }
    let key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("--etcd-key-file: the key cannot be used ({e})"))?;
    match rustls::sign::CertifiedKey::new(chain, key).keys_match() {
        // A key type whose public half cannot be compared is left to the handshake.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err("the key of --etcd-key-file does not match the certificate of --etcd-cert-file".into())
        }
        Err(e) => Err(format!("--etcd-key-file: the key cannot be used ({e})")),
    }
}

/// One DER element: (tag, contents, the rest after it).
fn tlv(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, d) = d.split_first()?;
    let (&first, mut d) = d.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || d.len() < n {
            return None;
        }
        let (bytes, rest) = d.split_at(n);
        d = rest;
        bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b))
    };
    (d.len() >= len).then(|| (tag, &d[..len], &d[len..]))
}

/// A certificate's notBefore and notAfter (unix seconds), read from its DER.
fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, then validity.
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r;
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let (_, v, _) = tlv(rest)?;
    let (t1, nb, r) = tlv(v)?;
    let (t2, na, _) = tlv(r)?;
    Some((asn1_time(t1, nb)?, asn1_time(t2, na)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as unix seconds.
fn asn1_time(tag: u8, s: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(s).ok()?.strip_suffix('Z')?;
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, s) = match (tag, s.len()) {
        (0x17, 12) => {
            let yy: i64 = s[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        (0x18, 14) => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let n = |i: usize| s[i..i + 2].parse::<i64>().ok();
    let (month, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86400), t.rem_euclid(86400));
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// What the daemon knows of its connection, to explain a failure.
pub struct Context<'a> {
    pub endpoints: &'a [String],
    pub auth: &'a EtcdAuth,
    pub prefix: &'a str,
}

/// An etcd client error in words: which of the known misconfigurations it is, else the error
/// itself. The text is the same on every retry of the same failure (it is logged when it changes).
pub fn explain(e: &etcd_client::Error, cx: &Context) -> String {
    let eps = cx.endpoints.join(",");
    let tls = cx.endpoints.iter().any(|e| e.starts_with("https://"));
    // The whole chain: tonic and hyper wrap the TLS library's error several times.
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    let has = |s: &str| chain.contains(s);
    // A hang-up reads differently by where it is noticed: "Connection reset by peer (os error
    // 104)", "connection reset", "broken pipe", "connection closed".
    let lower = chain.to_lowercase();
    let hung_up = ["broken pipe", "connection reset", "connection closed"]
        .iter()
        .any(|s| lower.contains(s));
    let ca = match &cx.auth.ca_file {
        Some(p) => format!("the CA of --etcd-ca-file {}", p.display()),
        None => "the system's CAs (no --etcd-ca-file)".into(),
    };
    if let etcd_client::Error::GRpcStatus(s) = e {
        let m = s.message();
        if m.contains("authentication failed") {
            return format!(
                "etcd at {eps} refused the user name or password (--etcd-username {:?}, --etcd-password-file): wrong password or no such user",
                cx.auth.username.as_deref().unwrap_or("")
            );
        }
        if m.contains("permission denied") && cx.auth.username.is_none() {
            // With its users on, etcd takes a client certificate's common name for the user.
            return format!(
                "etcd refuses the prefix {:?} to the user named by the client certificate's common name (grant that user's role readwrite on the prefix, or give --etcd-username)",
                cx.prefix
            );
        }
        if m.contains("permission denied") {
            return format!(
                "etcd user {:?} has no permission on the prefix {:?} (grant its role readwrite on it)",
                cx.auth.username.as_deref().unwrap_or(""),
                cx.prefix
            );
        }
        if m.contains("user name is empty") || m.contains("invalid auth token") && cx.auth.username.is_none()
        {
            return format!("etcd at {eps} requires a user: give --etcd-username and --etcd-password-file");
        }
        if m.contains("authentication is not enabled") {
            return format!("etcd at {eps} has authentication off, but --etcd-username is given");
        }
    }
    if has("UnknownIssuer") || has("BadSignature") || has("UnknownCA") && !has("alert") {
        return format!("etcd's server certificate at {eps} is not signed by {ca}: wrong CA");
    }
    if has("NotValidForName") {
        return format!("etcd's server certificate does not name the host of {eps}");
    }
    if has("invalid peer certificate: Expired") {
        return format!("etcd's server certificate at {eps} has expired");
    }
    // Under TLS 1.3 etcd judges the client's certificate after the client thinks the handshake is
    // done: its alert may be read, or the connection found closed first. Both say the same, so
    // the reason does not flip between retries.
    if has("fatal alert") || tls && hung_up {
        if cx.auth.cert_file.is_none() {
            return format!(
                "etcd at {eps} requires a client certificate: give --etcd-cert-file and --etcd-key-file"
            );
        }
        return format!(
            "etcd at {eps} refused the client certificate of --etcd-cert-file (not signed by a CA etcd trusts, expired or revoked)"
        );
    }
    // A plain etcd hangs up on a TLS hello; a TLS-only one on an HTTP/2 preface.
    if tls && (has("tls handshake eof") || has("InvalidContentType") || has("corrupt message")) {
        return format!("etcd at {eps} does not speak TLS: use http:// (or turn TLS on in etcd)");
    }
    if !tls && (hung_up || has("frame with invalid size")) {
        return format!(
            "etcd at {eps} hangs up at once: it speaks TLS only, most likely (use https:// and --etcd-ca-file)"
        );
    }
    if has("no native certs found") {
        return "https:// without --etcd-ca-file, and the system has no CA certificates".into();
    }
    if has("Connection refused") {
        return format!("etcd at {eps} does not listen (connection refused)");
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_both_ways() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(asn1_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(asn1_time(0x17, b"491231235959Z"), Some(2524607999));
        assert_eq!(asn1_time(0x18, b"20380119031408Z"), Some(2147483648));
        assert_eq!(utc(2147483648), "2038-01-19 03:14:08 UTC");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        for bad in [&b""[..], b"Z", b"7001010000Z", b"701301000000Z", b"70010100000xZ"] {
            assert_eq!(asn1_time(0x17, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn der_walking_never_panics() {
        assert_eq!(validity(b""), None);
        assert_eq!(validity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(validity(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
        for n in 0..64u8 {
            let v: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            let _ = validity(&v);
        }
    }
}
