//! The XML-RPC server: actix-web `POST /xmlrpc.php`, HTTPS (self-signed certificate generated at
//! first boot under `<state>/tls/`) or HTTP, Basic auth against `system/user`.
//!
//! Order of checks: declared size (a 100 MB body is refused before it is read), credentials
//! (wrong ones: a 1 s delay and OPNsense's `Authentication failed` answer), then the body is read
//! up to [`xmlrpc::MAX_BODY`] and parsed off the async thread.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use futures::StreamExt;
use serde::Serialize;

use super::{CallMsg, HaSync, UsersMsg};
use crate::config::User;
use crate::wire::xmlrpc;

/// Delay before answering a failed login.
pub const AUTH_FAIL_DELAY: Duration = Duration::from_secs(1);

/// OPNsense's answer to bad credentials (HTTP 200; clients compare the value to this text).
pub const AUTH_FAILED: &str = "<?xml version=\"1.0\"?>\n<methodResponse><params><param><value>Authentication failed</value></param></params></methodResponse>\n";

/// Counters, one per outcome / drop reason.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub requests: AtomicU64,
    pub ok: AtomicU64,
    pub faults: AtomicU64,
    pub auth_failures: AtomicU64,
    pub too_large: AtomicU64,
    pub dtd: AtomicU64,
    pub malformed: AtomicU64,
    pub merges: AtomicU64,
}

impl Stats {
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

pub struct State {
    pub addr: Addr<HaSync>,
    pub stats: Arc<Stats>,
}

fn xml(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/xml; charset=utf-8")
        .body(body)
}

/// `user:password` from `Authorization: Basic ...`.
fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let h = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, b64) = h.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Check a password against a stored hash: bcrypt (`$2y$`, `$2b$`, `$2a$`) or SHA-512 crypt (`$6$`).
pub fn password_ok(users: &[User], user: &str, pass: &str) -> bool {
    let Some(u) = users.iter().find(|u| u.name == user) else {
        // Spend the same time as a real check, so names cannot be probed by timing.
        let _ = bcrypt::verify(
            pass,
            "$2y$10$12zbRMuR1LX0j3hz0P71mOPVZIc6wVYpJwpX2SQewbvY1lgJzFjqi",
        );
        return false;
    };
    let h = u.password_hash.trim();
    if h.starts_with("$2") {
        bcrypt::verify(pass, h).unwrap_or(false)
    } else if h.starts_with("$6$") {
        sha_crypt::sha512_check(pass, h).is_ok()
    } else {
        false
    }
}

pub async fn handle(
    req: HttpRequest,
    mut body: web::Payload,
    st: web::Data<State>,
) -> HttpResponse {
    let stats = &st.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > xmlrpc::MAX_BODY as u64) {
        stats.too_large.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, bytes = declared, "xmlrpc: body too large; refused");
        return HttpResponse::PayloadTooLarge()
            .insert_header(("Connection", "close"))
            .body("Request body too large");
    }
    let authed = match basic_credentials(&req) {
        Some((u, p)) => match st.addr.send(UsersMsg).await {
            Ok(users) => web::block(move || password_ok(&users, &u, &p))
                .await
                .unwrap_or(false),
            Err(_) => false,
        },
        None => false,
    };
    if !authed {
        stats.auth_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, "xmlrpc: authentication failed");
        actix_rt::time::sleep(AUTH_FAIL_DELAY).await;
        return xml(AUTH_FAILED.to_string());
    }
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            return HttpResponse::BadRequest().body("cannot read the request body");
        };
        if buf.len() + chunk.len() > xmlrpc::MAX_BODY {
            stats.too_large.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "xmlrpc: body too large; refused");
            return HttpResponse::PayloadTooLarge()
                .insert_header(("Connection", "close"))
                .body("Request body too large");
        }
        buf.extend_from_slice(&chunk);
    }
    let bytes = buf.freeze();
    let parsed = web::block(move || xmlrpc::parse_call(&bytes)).await;
    let call = match parsed {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            match e {
                xmlrpc::Error::Dtd | xmlrpc::Error::Entity(_) => &stats.dtd,
                xmlrpc::Error::TooLarge { .. } => &stats.too_large,
                _ => &stats.malformed,
            }
            .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, reason = e.reason(), "xmlrpc: request refused: {e}");
            return xml(xmlrpc::emit_fault(-32700, &format!("parse error: {e}")));
        }
        Err(_) => return HttpResponse::InternalServerError().finish(),
    };
    let method = call.method.clone();
    match st.addr.send(CallMsg(call)).await {
        Ok(Ok(v)) => {
            stats.ok.fetch_add(1, Ordering::Relaxed);
            xml(xmlrpc::emit_response(&v))
        }
        Ok(Err((code, msg))) => {
            stats.faults.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, %method, code, "xmlrpc: fault: {msg}");
            xml(xmlrpc::emit_fault(code, &msg))
        }
        Err(e) => xml(xmlrpc::emit_fault(-32500, &format!("server busy: {e}"))),
    }
}

/// Load `<dir>/server.crt` + `server.key`, generating a self-signed pair on first use.
pub fn tls_config(dir: &Path, hostname: &str) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let crt = dir.join("server.crt");
    let key = dir.join("server.key");
    if !crt.is_file() || !key.is_file() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let names = vec!["tandem".to_string(), hostname.to_string()];
        let ck = rcgen::generate_simple_self_signed(names).map_err(|e| format!("rcgen: {e}"))?;
        let atomic = |p: &Path, data: &[u8], mode: u32| {
            crate::sys::atomic::write_atomic(p, data, mode)
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        atomic(&key, ck.signing_key.serialize_pem().as_bytes(), 0o600)?;
        atomic(&crt, ck.cert.pem().as_bytes(), 0o644)?;
        tracing::info!(path = %crt.display(), "xmlrpc: generated a self-signed certificate");
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&crt)
        .map_err(|e| format!("{}: {e}", crt.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", crt.display()))?;
    let pk = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, pk)
        .map_err(|e| format!("tls: {e}"))
}
