//! TLS termination for the viewer listener: rustls with TLS 1.2/1.3 and ALPN
//! `h2`, `http/1.1`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::TlsAcceptor;

/// Loads a PEM certificate chain and private key into a TLS acceptor.
pub fn acceptor(cert_path: &Path, key_path: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut BufReader::new(
        File::open(cert_path)
            .with_context(|| format!("server.tls_cert: cannot open {}", cert_path.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("server.tls_cert: {} is not valid PEM", cert_path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "server.tls_cert: no certificate found in {}",
            cert_path.display()
        );
    }
    let key = rustls_pemfile::private_key(&mut BufReader::new(
        File::open(key_path)
            .with_context(|| format!("server.tls_key: cannot open {}", key_path.display()))?,
    ))
    .with_context(|| format!("server.tls_key: {} is not valid PEM", key_path.display()))?
    .with_context(|| {
        format!(
            "server.tls_key: no private key found in {}",
            key_path.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("server.tls_cert / server.tls_key do not form a valid certificate and key pair")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
