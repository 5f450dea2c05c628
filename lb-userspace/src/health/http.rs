//! The http and https probes: `GET path` through the shared client (`svc::client`) is answered with the expected
//! status. https verifies the real's certificate against the system's roots, or the check's CA file, unless the
//! check opts into `insecure`; `sni` names the certificate's host when the real's address is not in it.

use super::{Probe, Verdict};
use crate::model::CheckSpec;
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::time::Duration;
use svc::client::{BaseUrl, Client, ClientError, Method, Tls, Verify};

pub struct Http {
    path: String,
    expect: u16,
    timeout: Duration,
    /// https: the TLS set-up, or why it could not be built (a missing CA file): every probe then fails with it.
    tls: Option<Result<Tls, String>>,
    /// https: what certificates are verified against, for the reason of a refused one.
    trust: String,
}

impl Http {
    pub fn new(spec: &CheckSpec, https: bool) -> Self {
        let (verify, trust) = match (&spec.ca_file, spec.insecure) {
            (_, true) => (Verify::Insecure, "nothing (insecure)".to_string()),
            (Some(file), false) => (Verify::CaFile(file.clone()), format!("CA file {}", file.display())),
            (None, false) => (Verify::SystemRoots, "the system's roots".to_string()),
        };
        let tls = https.then(|| Tls::new(&verify, spec.sni.as_deref()).map_err(|e| e.to_string()));
        Http { path: spec.path.clone(), expect: spec.expect, timeout: spec.effective_timeout(), tls, trust }
    }
}

impl Probe for Http {
    fn check(&self, target: SocketAddr) -> BoxFuture<'_, Verdict> {
        Box::pin(async move {
            let mut client = Client::new(BaseUrl::of(target, self.tls.is_some()), None, self.timeout)
                .with_user_agent("lbd-health-check");
            if let Some(tls) = &self.tls {
                client = client.with_tls(tls.clone()?);
            }
            match client.status(Method::GET, &self.path).await {
                Ok(code) if code.as_u16() == self.expect => Ok(code.as_u16().to_string()),
                Ok(code) => Err(format!("status {}, expected {}", code.as_u16(), self.expect)),
                Err(ClientError::Io(_, e)) => Err(format!("connect {target}: {e}")),
                Err(ClientError::Handshake(_, e)) => Err(format!(
                    "TLS: {e} (verified against {}; give the CA with ca_file, the certificate's name with sni, or opt into insecure)",
                    self.trust
                )),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CheckKind;

    /// A self-signed real: down with the verification reason by default, up with `insecure`, up with its
    /// certificate as the CA file (by address, and by name with sni); a missing CA file is the reason too.
    #[tokio::test]
    async fn https_verifies_the_real_unless_told_otherwise() {
        let (addr, pem) = svc::client::testing::tls_server(200).await;
        let dir = std::env::temp_dir().join(format!("lbd-https-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, pem).unwrap();
        let spec = CheckSpec { kind: CheckKind::Https, ..CheckSpec::default() };
        let probe = |spec: &CheckSpec| {
            spec.validate().unwrap();
            super::super::probe_for(spec)
        };
        let down = probe(&spec).check(addr).await.unwrap_err();
        assert!(down.starts_with("TLS: ") && down.contains("certificate"), "{down}");
        assert!(down.contains("the system's roots"), "{down}");
        let insecure = CheckSpec { insecure: true, ..spec.clone() };
        assert_eq!(probe(&insecure).check(addr).await, Ok("200".into()));
        let with_ca = CheckSpec { ca_file: Some(ca.clone()), ..spec.clone() };
        assert_eq!(probe(&with_ca).check(addr).await, Ok("200".into()));
        let by_name = CheckSpec { sni: Some("localhost".into()), ..with_ca.clone() };
        assert_eq!(probe(&by_name).check(addr).await, Ok("200".into()));
        let wrong_name = CheckSpec { sni: Some("www.example.com".into()), ..with_ca.clone() };
        let down = probe(&wrong_name).check(addr).await.unwrap_err();
        assert!(down.contains("certificate") && down.contains(&ca.display().to_string()), "{down}");
        let expect_204 = CheckSpec { expect: 204, ..with_ca.clone() };
        assert_eq!(probe(&expect_204).check(addr).await, Err("status 200, expected 204".into()));
        let missing = CheckSpec { ca_file: Some(dir.join("missing.pem")), ..spec.clone() };
        let down = probe(&missing).check(addr).await.unwrap_err();
        assert!(down.contains("missing.pem"), "{down}");
        // Plain http to a TLS port is down, not up.
        let plain = CheckSpec { kind: CheckKind::Http, ..CheckSpec::default() };
        assert!(probe(&plain).check(addr).await.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_settings_only_fit_https_and_are_checked() {
        let https = CheckSpec { kind: CheckKind::Https, ..CheckSpec::default() };
        let bad = |c: CheckSpec| c.validate().unwrap_err().to_string();
        let e = bad(CheckSpec { kind: CheckKind::Http, insecure: true, ..CheckSpec::default() });
        assert!(e.contains("only apply to https"), "{e}");
        let e = bad(CheckSpec { insecure: true, ca_file: Some("/etc/ca.pem".into()), ..https.clone() });
        assert!(e.contains("not both"), "{e}");
        let e = bad(CheckSpec { ca_file: Some("ca.pem".into()), ..https.clone() });
        assert!(e.contains("absolute path"), "{e}");
        let e = bad(CheckSpec { sni: Some("a b".into()), ..https.clone() });
        assert!(e.contains("sni"), "{e}");
        let ok = CheckSpec { sni: Some("www.example.com".into()), ca_file: Some("/etc/ca.pem".into()), ..https };
        ok.validate().unwrap();
        assert!(ok.summary().starts_with("https / =200 ca /etc/ca.pem sni www.example.com "), "{}", ok.summary());
        // The state file round-trips the settings, and a check without them writes none of them.
        let text = toml::to_string(&ok).unwrap();
        assert_eq!(toml::from_str::<CheckSpec>(&text).unwrap(), ok);
        let plain = toml::to_string(&CheckSpec { kind: CheckKind::Http, ..CheckSpec::default() }).unwrap();
        assert!(!plain.contains("insecure") && !plain.contains("ca_file") && !plain.contains("sni"), "{plain}");
    }
}
