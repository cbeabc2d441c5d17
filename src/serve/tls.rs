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
use rustls::server::{ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

/// Plaintext rustls buffers for the socket before `write_vectored` says
/// `WouldBlock` (the server keeps the rest in its own output buffer).
const TLS_BUFFER: usize = 256 * 1024;

/// The server configuration from a PEM certificate chain and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1); the error names the file at fault.
pub fn load_config(certfile: &str, keyfile: &str) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(certfile)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate file {certfile:?}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "the certificate file {certfile:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!(
            "the key file {keyfile:?} holds no unencrypted PEM private key \
             (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
        ),
        e => format!("cannot read the key file {keyfile:?}: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the key file {keyfile:?} does not fit the certificate file {certfile:?}: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
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

    /// The negotiated protocol version and cipher suite (their TLS code points),
    /// once the handshake is done.
    pub fn info(&self) -> Option<(u16, u16)> {
        let v = self.conn.protocol_version()?;
        let s = self.conn.negotiated_cipher_suite()?;
        Some((u16::from(v), u16::from(s.suite())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let e = load_config("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn a_file_without_pem_blocks_is_named() {
        let dir = std::env::temp_dir().join(format!("interloop-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("empty.pem");
        std::fs::write(&p, b"not a certificate\n").unwrap();
        let p = p.to_str().unwrap();
        let e = load_config(p, p).unwrap_err();
        assert!(e.contains("no PEM certificate") && e.contains(p), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
