//! The XML-RPC client (awc over rustls): OPNsense's `xmlrpc_execute()` — POST to
//! `<url>`, `User-Agent: XML_RPC`, `Content-Type: text/xml`, HTTP Basic auth, TLS verification
//! only with `hasync/verifypeer`.

use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::wire::xmlrpc::{self, MethodCall, Response, Value};

/// System CA bundle used when `verifypeer` is on.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Accepts any certificate (the backup's self-signed one) but still checks the handshake
/// signatures, as curl does with `CURLOPT_SSL_VERIFYPEER=0`.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An HTTP(S) client; `verify` checks the peer's certificate against the system CAs.
pub fn client(verify: bool, timeout: Duration) -> Result<awc::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let cfg = if verify {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(CA_BUNDLE)
            .map_err(|e| format!("verifypeer: cannot read {CA_BUNDLE}: {e}"))?;
        for c in certs.flatten() {
            let _ = roots.add(c);
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    };
    let connector = awc::Connector::new()
        .rustls_0_23(Arc::new(cfg))
        .timeout(Duration::from_secs(10));
    Ok(awc::Client::builder()
        .connector(connector)
        .timeout(timeout)
        .finish())
}

/// One call. A fault, a refused login or an unreadable answer is an `Err` with the reason.
pub async fn call(
    client: &awc::Client,
    url: &str,
    user: &str,
    pass: &str,
    method: &str,
    params: Vec<Value>,
) -> Result<Value, String> {
    let body = xmlrpc::emit_call(&MethodCall {
        method: method.to_string(),
        params,
    });
    let mut resp = client
        .post(url)
        .insert_header(("User-Agent", "XML_RPC"))
        .insert_header(("Content-Type", "text/xml"))
        .basic_auth(user, pass)
        .send_body(body)
        .await
        .map_err(|e| format!("{method}: {url}: {e}"))?;
    if resp.status() == awc::http::StatusCode::UNAUTHORIZED {
        return Err(format!(
            "{method}: the peer refused our credentials (Authentication failed)"
        ));
    }
    if !resp.status().is_success() {
        return Err(format!("{method}: HTTP {}", resp.status()));
    }
    let bytes = resp
        .body()
        .limit(xmlrpc::MAX_BODY)
        .await
        .map_err(|e| format!("{method}: reading the answer: {e}"))?;
    if String::from_utf8_lossy(&bytes).trim() == "Authentication failed" {
        return Err(format!(
            "{method}: the peer refused our credentials (Authentication failed)"
        ));
    }
    match xmlrpc::parse_response(&bytes).map_err(|e| format!("{method}: {e}"))? {
        Response::Success(Value::Str(s)) if s.trim() == "Authentication failed" => Err(format!(
            "{method}: the peer refused our credentials (Authentication failed)"
        )),
        Response::Success(v) => Ok(v),
        Response::Fault { code, message } => Err(format!("{method}: fault {code}: {message}")),
    }
}
