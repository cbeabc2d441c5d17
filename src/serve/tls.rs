//! TLS for `interloop serve` (`--ssl-certfile`/`--ssl-keyfile`), with rustls.
//!
//! [`load_config`] reads the PEM files once (in the supervisor, before any worker
//! starts) into a `ServerConfig` that every worker shares through the group. Each
//! accepted connection then gets its own `rustls::ServerConnection`; [`TlsIo`]
//! drives it on the connection's non-blocking socket so that the server's state
//! machine (`server.rs`) reads and writes plaintext exactly as on a plain socket:
//! `read` pulls TLS records from the socket until it has plaintext (answering
//! handshake messages on the way), `write_vectored` encrypts into rustls's buffer
//! and pushes what the socket takes. What rustls still holds for the socket
//! (`wants_write`) is pushed on the next writable event.
//!
//! The crypto provider is `ring`: rustls's default, `aws-lc-rs`, needs cmake (and
//! nasm on some targets) to build, ring only a C compiler.
use rustls::server::{ServerConfig, ServerConnection, WebPkiClientVerifier};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

/// Plaintext rustls buffers for the socket before `write_vectored` says
/// `WouldBlock` (the server keeps the rest in its own output buffer).
const TLS_BUFFER: usize = 256 * 1024;

/// Client certificates: not asked for, asked for and checked when given, or
/// required (uvicorn's `--ssl-cert-reqs` 0, 1, 2: `ssl.CERT_NONE/OPTIONAL/REQUIRED`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ClientAuth {
    None,
    Optional,
    Required,
}

fn read_certs(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the {what} file {path:?}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "the {what} file {path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

/// The server configuration from a PEM certificate chain and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1), and for client certificates the PEM file of the CAs
/// that issue them; the error names the file at fault.
pub fn load_config(
    certfile: &str,
    keyfile: &str,
    ca_certs: Option<&str>,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs(certfile, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!(
            "the key file {keyfile:?} holds no unencrypted PEM private key \
             (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
        ),
        e => format!("cannot read the key file {keyfile:?}: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let builder = match (client_auth, ca_certs) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => return Err("client certificates (--ssl-cert-reqs 1 or 2) need --ssl-ca-certs".into()),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca, "CA certificates")? {
                roots
                    .add(c)
                    .map_err(|e| format!("the CA certificates file {ca:?}: {e}"))?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if auth == ClientAuth::Optional {
                v = v.allow_unauthenticated();
            }
            let v = v.build().map_err(|e| format!("the CA certificates file {ca:?}: {e}"))?;
            builder.with_client_cert_verifier(v)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("the key file {keyfile:?} does not fit the certificate file {certfile:?}: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// What a request's scope tells of its connection's TLS.
pub struct TlsInfo {
    pub version: u16,
    pub suite: u16,
    pub client_chain: Vec<Vec<u8>>,
}

/// One connection's TLS state.
pub struct TlsIo {
    conn: ServerConnection,
    close_notify_sent: bool,
}

impl TlsIo {
    pub fn new(cfg: &Arc<ServerConfig>) -> io::Result<Self> {
        let mut conn = ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(TLS_BUFFER));
        Ok(TlsIo {
            conn,
            close_notify_sent: false,
        })
    }

    /// Plaintext from the peer into `b`: `Ok(0)` at the end of the stream (its
    /// `close_notify`, or the socket's end without one), `WouldBlock` when the
    /// socket has no more records, an error for a broken handshake or record
    /// (after trying to send rustls's alert).
    pub fn read<S: Read + Write>(&mut self, sock: &mut S, b: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(b) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket ended without close_notify: an end of stream all the
                // same for HTTP/1.1, whose messages are delimited on their own.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            let n = loop {
                match self.conn.read_tls(sock) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            let processed = self.conn.process_new_packets();
            // Handshake replies, or the alert that explains a failure.
            let pushed = self.push(sock);
            if let Err(e) = processed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            pushed?;
            if n == 0 {
                // The socket ended: what was decrypted is still delivered, then
                // the end (never another read of the socket).
                return match self.conn.reader().read(b) {
                    Ok(n) => Ok(n),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::UnexpectedEof) => Ok(0),
                    Err(e) => Err(e),
                };
            }
        }
    }

    /// Encrypts what fits of `bufs` and pushes what the socket takes; `WouldBlock`
    /// when nothing fitted (rustls's buffer is full until the socket drains).
    pub fn write_vectored<S: Write>(&mut self, sock: &mut S, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.push(sock)?;
        let n = self.conn.writer().write_vectored(bufs)?;
        self.push(sock)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Writes what rustls holds for the socket until it would block; the bytes
    /// written.
    pub fn push<S: Write>(&mut self, sock: &mut S) -> io::Result<usize> {
        let mut total = 0;
        while self.conn.wants_write() {
            match self.conn.write_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// rustls holds bytes the socket has not taken yet.
    pub fn pending(&self) -> bool {
        self.conn.wants_write()
    }

    /// Queues `close_notify` once (the caller then waits for `pending` to clear
    /// before closing the socket for writing); true the first time.
    pub fn close_notify(&mut self) -> bool {
        if self.close_notify_sent {
            return false;
        }
        self.close_notify_sent = true;
        self.conn.send_close_notify();
        true
    }

    /// The negotiated protocol version and cipher suite (their TLS code points)
    /// and the client's certificate chain (DER, the client's own first; empty
    /// without one), once the handshake is done.
    pub fn info(&self) -> Option<TlsInfo> {
        let v = self.conn.protocol_version()?;
        let s = self.conn.negotiated_cipher_suite()?;
        let chain = self
            .conn
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.as_ref().to_vec()).collect())
            .unwrap_or_default();
        Some(TlsInfo {
            version: u16::from(v),
            suite: u16::from(s.suite()),
            client_chain: chain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let e = load_config("/nonexistent/cert.pem", "/nonexistent/key.pem", None, ClientAuth::None).unwrap_err();
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn a_file_without_pem_blocks_is_named() {
        let dir = std::env::temp_dir().join(format!("interloop-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("empty.pem");
        std::fs::write(&p, b"not a certificate\n").unwrap();
        let p = p.to_str().unwrap();
        let e = load_config(p, p, None, ClientAuth::None).unwrap_err();
        assert!(e.contains("no PEM certificate") && e.contains(p), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
