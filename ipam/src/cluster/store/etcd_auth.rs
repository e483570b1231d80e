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
    let status = match e {
        etcd_client::Error::GRpcStatus(s) => Some(s.message()),
        _ => None,
    };
    // The whole chain: tonic and hyper wrap the TLS library's error several times. etcd-client's
    // error gives no source; the transport error it wraps does (a status prints its own).
    let mut chain = e.to_string();
    let mut src = match e {
        etcd_client::Error::TransportError(t) => std::error::Error::source(t),
        _ => None,
    };
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    reason(status, &chain, cx)
}

/// [`explain`] of what an error says: the message of its gRPC status (etcd's answer, or tonic's
/// account of a failed connection), and its text with its sources'.
fn reason(status: Option<&str>, chain: &str, cx: &Context) -> String {
    let eps = cx.endpoints.join(",");
    let tls = cx.endpoints.iter().any(|e| e.starts_with("https://"));
    let has = |s: &str| chain.contains(s);
    // A hang-up reads differently by where it is noticed: "Connection reset by peer (os error
    // 104)", "Kind(ConnectionReset)", "broken pipe", "BrokenPipe", "connection closed".
    let squashed: String = chain
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    let hung_up = [
        "brokenpipe",
        "connectionreset",
        "connectionaborted",
        "connectionclosed",
    ]
    .iter()
    .any(|s| squashed.contains(s));
    // While connecting (TCP and the TLS handshake) rather than on a connection made.
    let connecting = has("ConnectError(");
    let ca = match &cx.auth.ca_file {
        Some(p) => format!("the CA of --etcd-ca-file {}", p.display()),
        None => "the system's CAs (no --etcd-ca-file)".into(),
    };
    let user = cx.auth.username.as_deref().unwrap_or("");
    let m = status.unwrap_or("");
    if m.contains("authentication failed") {
        return format!(
            "etcd at {eps} refused the user name or password (--etcd-username {user:?}, --etcd-password-file): wrong password or no such user"
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
            "etcd user {user:?} has no permission on the prefix {:?} (grant its role readwrite on it)",
            cx.prefix
        );
    }
    if m.contains("user name is empty") || (m.contains("invalid auth token") && cx.auth.username.is_none()) {
        return format!("etcd at {eps} requires a user: give --etcd-username and --etcd-password-file");
    }
    if m.contains("authentication is not enabled") {
        return format!(
            "etcd at {eps} has authentication off, but --etcd-username is given (turn it on in etcd, or give no --etcd-username and --etcd-password-file)"
        );
    }
    if has("UnknownIssuer") || has("BadSignature") || (has("UnknownCA") && !has("alert")) {
        return format!("etcd's server certificate at {eps} is not signed by {ca}: wrong CA");
    }
    if has("certificate not valid for name") || has("NotValidForName") {
        let names = match m.split_once("certificate is only valid for ") {
            Some((_, list)) => format!(" (it names {})", names_of(list)),
            None if m.contains("not valid for any names") => " (it names no host)".into(),
            None => String::new(),
        };
        return format!(
            "etcd's server certificate at {eps} does not name the host it is reached at{names}: give --store a name or address the certificate names, or etcd a certificate that names this one"
        );
    }
    // rustls gives the time of the check with the certificate's date: only the date is kept,
    // so that the reason is the same on every retry.
    if has("certificate expired") || has("invalid peer certificate: Expired") {
        let when = unix_after(chain, "not valid after ").map(|t| format!(" at {}", utc(t)));
        return format!(
            "etcd's server certificate at {eps} expired{}",
            when.unwrap_or_default()
        );
    }
    if has("certificate not valid yet") || has("invalid peer certificate: NotValidYet") {
        let when = unix_after(chain, "not valid before ").map(|t| format!(" before {}", utc(t)));
        return format!(
            "etcd's server certificate at {eps} is not valid{} yet (is this machine's clock right?)",
            when.unwrap_or_default()
        );
    }
    // Under TLS 1.3 etcd judges the client's certificate after the client thinks the handshake is
    // done: its alert may be read, or the connection found closed first. Both say the same, so
    // the reason does not flip between retries.
    if has("fatal alert") || tls && hung_up && !connecting {
        if cx.auth.cert_file.is_none() {
            return format!(
                "etcd at {eps} requires a client certificate: give --etcd-cert-file and --etcd-key-file"
            );
        }
        return format!(
            "etcd at {eps} refused the client certificate of --etcd-cert-file (not signed by a CA etcd trusts, expired or revoked)"
        );
    }
    // A plain etcd hangs up on a TLS hello (at its end, or at once); a TLS-only one on an HTTP/2
    // preface.
    if tls
        && (has("tls handshake eof")
            || has("InvalidContentType")
            || has("corrupt message")
            || hung_up && connecting)
    {
        return format!("etcd at {eps} does not speak TLS: use http:// (or turn TLS on in etcd)");
    }
    if !tls && (hung_up || has("frame with invalid size")) {
        return format!(
            "etcd at {eps} hangs up at once: it speaks TLS only, most likely (use https:// and --etcd-ca-file)"
        );
    }
    if has("no native certs found") {
        return "https:// without --etcd-ca-file, and the system has no CA certificates (or none where SSL_CERT_FILE or SSL_CERT_DIR point): give --etcd-ca-file".into();
    }
    if has("Connection refused") {
        return format!("etcd at {eps} does not listen (connection refused)");
    }
    chain.to_string()
}

/// The names of rustls' "IpAddress(10.0.0.1), DnsName(\"a\") or DnsName(\"b\")" as `10.0.0.1, a, b`.
fn names_of(list: &str) -> String {
    list.split(" or ")
        .flat_map(|p| p.split(", "))
        .map(|n| {
            let n = n.trim();
            ["IpAddress(", "DnsName("]
                .iter()
                .find_map(|p| n.strip_prefix(p)?.strip_suffix(')'))
                .unwrap_or(n)
                .trim_matches('"')
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The unix time in `text` right after `label` (rustls' "... not valid after 1609459200 ...").
fn unix_after(text: &str, label: &str) -> Option<i64> {
    let rest = text.split_once(label)?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
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

    /// What tonic makes of a failed connection: the message, and the status as printed.
    fn unavailable(message: &str, source: &str) -> (String, String) {
        let chain = format!(
            "grpc request error: code: 'The service is currently unavailable', message: {message:?}, source: tonic::transport::Error(Transport, {source})"
        );
        (message.to_string(), chain)
    }

    /// etcd's answer to a call: the message, and the status as printed.
    fn answer(code: &str, message: &str) -> (String, String) {
        let chain = format!("grpc request error: code: '{code}', message: {message:?}");
        (message.to_string(), chain)
    }

    /// A connection made, then failed: tonic gives no message of the TLS library's.
    fn after_connecting(code: &str, message: &str, source: &str) -> (Option<String>, String) {
        let chain = format!(
            "grpc request error: code: '{code}', message: {message:?}, source: tonic::transport::Error(Transport, {source})"
        );
        (Some(message.to_string()), chain)
    }

    /// Each cause `explain` knows, from the texts etcd-client, tonic, hyper and rustls gave
    /// against a real etcd (3.4), and what it is said as.
    #[test]
    fn each_cause_is_named_from_the_texts_of_a_real_etcd() {
        let https = vec!["https://127.0.0.1:2379".to_string()];
        let http = vec!["http://127.0.0.1:2379".to_string()];
        let ca_file = EtcdAuth {
            ca_file: Some("/etc/cbrnet/etcd-ca.crt".into()),
            ..EtcdAuth::default()
        };
        let client = EtcdAuth {
            cert_file: Some("/etc/cbrnet/etcd-client.crt".into()),
            key_file: Some("/etc/cbrnet/etcd-client.key".into()),
            ..ca_file.clone()
        };
        let user = EtcdAuth {
            username: Some("cbrnet".into()),
            password_file: Some("/etc/cbrnet/etcd-password".into()),
            ..ca_file.clone()
        };
        let none = EtcdAuth::default();
        let say = |eps: &[String], auth: &EtcdAuth, (status, chain): (Option<String>, String)| {
            let cx = Context {
                endpoints: eps,
                auth,
                prefix: "/cbrnet/subnets/",
            };
            reason(status.as_deref(), &chain, &cx)
        };
        let check = |eps: &[String], auth: &EtcdAuth, error: (Option<String>, String), want: &str| {
            assert_eq!(say(eps, auth, error.clone()), want, "{error:?}");
        };
        let status = |(m, c): (String, String)| (Some(m), c);

        check(
            &https,
            &client,
            status(unavailable(
                "invalid peer certificate: UnknownIssuer",
                "ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }))",
            )),
            "etcd's server certificate at https://127.0.0.1:2379 is not signed by the CA of --etcd-ca-file /etc/cbrnet/etcd-ca.crt: wrong CA",
        );
        check(
            &https,
            &none,
            status(unavailable(
                "invalid peer certificate: UnknownIssuer",
                "ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }))",
            )),
            "etcd's server certificate at https://127.0.0.1:2379 is not signed by the system's CAs (no --etcd-ca-file): wrong CA",
        );
        check(
            &https,
            &client,
            status(unavailable(
                "invalid peer certificate: certificate not valid for name \"127.0.0.1\"; certificate is only valid for IpAddress(127.0.0.2) or DnsName(\"etcd.example\")",
                "ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(NotValidForNameContext { expected: IpAddress(V4(Ipv4Addr([127, 0, 0, 1]))), presented: [\"IpAddress(127.0.0.2)\", \"DnsName(\\\"etcd.example\\\")\"] }) }))",
            )),
            "etcd's server certificate at https://127.0.0.1:2379 does not name the host it is reached at (it names 127.0.0.2, etcd.example): give --store a name or address the certificate names, or etcd a certificate that names this one",
        );
        check(
            &https,
            &client,
            status(unavailable(
                "invalid peer certificate: certificate expired: verification time 1796589221 (UNIX), but certificate is not valid after 1609459200 (187130021 seconds ago)",
                "ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(ExpiredContext { time: UnixTime(1796589221), not_after: UnixTime(1609459200) }) }))",
            )),
            "etcd's server certificate at https://127.0.0.1:2379 expired at 2021-01-01 00:00:00 UTC",
        );
        check(
            &https,
            &client,
            status(unavailable(
                "invalid peer certificate: certificate not valid yet: verification time 1796589846 (UNIX), but certificate is not valid before 3786912000 (1990322154 seconds in future)",
                "ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(NotValidYetContext { time: UnixTime(1796589846), not_before: UnixTime(3786912000) }) }))",
            )),
            "etcd's server certificate at https://127.0.0.1:2379 is not valid before 2090-01-01 00:00:00 UTC yet (is this machine's clock right?)",
        );
        // etcd hangs up on a client without a certificate or with one it refuses: each of
        // the forms read, after the handshake
        check(
            &https,
            &ca_file,
            after_connecting(
                "Unknown error",
                "transport error",
                "hyper::Error(Io, Custom { kind: InvalidData, error: \"received fatal alert: BadCertificate\" }))",
            ),
            "etcd at https://127.0.0.1:2379 requires a client certificate: give --etcd-cert-file and --etcd-key-file",
        );
        check(
            &https,
            &ca_file,
            after_connecting(
                "Unknown error",
                "transport error",
                "hyper::Error(Io, Custom { kind: BrokenPipe, error: \"stream closed because of a broken pipe\" }))",
            ),
            "etcd at https://127.0.0.1:2379 requires a client certificate: give --etcd-cert-file and --etcd-key-file",
        );
        check(
            &https,
            &ca_file,
            after_connecting(
                "The operation was cancelled",
                "operation was canceled",
                "hyper::Error(Canceled, \"connection closed\"))",
            ),
            "etcd at https://127.0.0.1:2379 requires a client certificate: give --etcd-cert-file and --etcd-key-file",
        );
        check(
            &https,
            &client,
            after_connecting(
                "The operation was cancelled",
                "operation was canceled",
                "hyper::Error(Canceled, \"connection closed\"))",
            ),
            "etcd at https://127.0.0.1:2379 refused the client certificate of --etcd-cert-file (not signed by a CA etcd trusts, expired or revoked)",
        );
        check(
            &https,
            &client,
            after_connecting(
                "Unknown error",
                "transport error",
                "hyper::Error(Io, Custom { kind: BrokenPipe, error: \"stream closed because of a broken pipe\" }))",
            ),
            "etcd at https://127.0.0.1:2379 refused the client certificate of --etcd-cert-file (not signed by a CA etcd trusts, expired or revoked)",
        );
        // http:// against a TLS-only etcd: both forms
        check(
            &http,
            &none,
            after_connecting(
                "Unknown error",
                "transport error",
                "hyper::Error(Io, Custom { kind: BrokenPipe, error: \"stream closed because of a broken pipe\" }))",
            ),
            "etcd at http://127.0.0.1:2379 hangs up at once: it speaks TLS only, most likely (use https:// and --etcd-ca-file)",
        );
        check(
            &http,
            &none,
            after_connecting("Unknown error", "transport error", "hyper::Error(Io, Kind(ConnectionReset)))"),
            "etcd at http://127.0.0.1:2379 hangs up at once: it speaks TLS only, most likely (use https:// and --etcd-ca-file)",
        );
        // https:// against a plain etcd: both forms, during the handshake (a reset there is
        // no refused client certificate)
        check(
            &https,
            &ca_file,
            status(unavailable(
                "tls handshake eof",
                "ConnectError(Custom { kind: UnexpectedEof, error: \"tls handshake eof\" }))",
            )),
            "etcd at https://127.0.0.1:2379 does not speak TLS: use http:// (or turn TLS on in etcd)",
        );
        check(
            &https,
            &ca_file,
            status(unavailable(
                "Connection reset by peer (os error 104)",
                "ConnectError(Os { code: 104, kind: ConnectionReset, message: \"Connection reset by peer\" }))",
            )),
            "etcd at https://127.0.0.1:2379 does not speak TLS: use http:// (or turn TLS on in etcd)",
        );
        check(
            &https,
            &user,
            status(answer(
                "Client specified an invalid argument",
                "etcdserver: authentication failed, invalid user ID or password",
            )),
            "etcd at https://127.0.0.1:2379 refused the user name or password (--etcd-username \"cbrnet\", --etcd-password-file): wrong password or no such user",
        );
        check(
            &https,
            &user,
            status(answer(
                "The caller does not have permission to execute the specified operation",
                "etcdserver: permission denied",
            )),
            "etcd user \"cbrnet\" has no permission on the prefix \"/cbrnet/subnets/\" (grant its role readwrite on it)",
        );
        check(
            &https,
            &client,
            status(answer(
                "The caller does not have permission to execute the specified operation",
                "etcdserver: permission denied",
            )),
            "etcd refuses the prefix \"/cbrnet/subnets/\" to the user named by the client certificate's common name (grant that user's role readwrite on the prefix, or give --etcd-username)",
        );
        check(
            &https,
            &ca_file,
            status(answer(
                "Client specified an invalid argument",
                "etcdserver: user name is empty",
            )),
            "etcd at https://127.0.0.1:2379 requires a user: give --etcd-username and --etcd-password-file",
        );
        check(
            &https,
            &user,
            status(answer(
                "The system is not in a state required for the operation's execution",
                "etcdserver: authentication is not enabled",
            )),
            "etcd at https://127.0.0.1:2379 has authentication off, but --etcd-username is given (turn it on in etcd, or give no --etcd-username and --etcd-password-file)",
        );
        check(
            &http,
            &none,
            status(unavailable(
                "tcp connect error",
                "ConnectError(ConnectError(\"tcp connect error\", 127.0.0.1:2379, Os { code: 111, kind: ConnectionRefused, message: \"Connection refused\" })))",
            )),
            "etcd at http://127.0.0.1:2379 does not listen (connection refused)",
        );
        // no CA roots at all: an error at connect, before any status
        check(
            &https,
            &client,
            (None, "transport error: transport error: no native certs found".into()),
            "https:// without --etcd-ca-file, and the system has no CA certificates (or none where SSL_CERT_FILE or SSL_CERT_DIR point): give --etcd-ca-file",
        );
        // anything else is said as it is
        let other = (None, "transport error: something new".to_string());
        assert_eq!(say(&https, &client, other), "transport error: something new");
    }

    #[test]
    fn names_and_times_are_read_from_rustls_texts() {
        assert_eq!(names_of("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(
            names_of("IpAddress(10.0.0.1), DnsName(\"a.example\") or DnsName(\"b\")"),
            "10.0.0.1, a.example, b"
        );
        assert_eq!(
            unix_after("not valid after 1609459200 (3 seconds ago)", "not valid after "),
            Some(1609459200)
        );
        assert_eq!(unix_after("not valid after x", "not valid after "), None);
        assert_eq!(unix_after("", "not valid after "), None);
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
