//! OSCAR manager REST client (REFERENCE.md §2 "Manager REST API").
//!
//! Auth rules: `/system/*` with HTTP Basic; `/run` and `/job` ONLY with
//! `Authorization: Bearer <service token>`; `/health` without auth. Every error names
//! the cluster and the URL; a 401 is reported as a credential problem, not retried.
//! The password is never part of an error, a log line or a URL.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach OSCAR cluster `{cluster}` at {url}: {detail}")]
    Unreachable {
        cluster: String,
        url: String,
        detail: String,
    },
    #[error(
        "OSCAR cluster `{cluster}` refused the credentials (401 at {url}): check the user and password registered for it"
    )]
    Unauthorized { cluster: String, url: String },
    #[error("OSCAR cluster `{cluster}` answered {method} {url} with {code}: {body}")]
    Status {
        cluster: String,
        method: String,
        url: String,
        code: u16,
        body: String,
    },
    #[error("OSCAR cluster `{cluster}` sent an unexpected answer to {url}: {detail}")]
    Decode {
        cluster: String,
        url: String,
        detail: String,
    },
    #[error("invalid OSCAR endpoint `{url}` for cluster `{cluster}`: {detail}")]
    Endpoint {
        cluster: String,
        url: String,
        detail: String,
    },
}

/// `GET /system/info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub git_commit: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub kubernetes_version: String,
    #[serde(default)]
    pub serverless_backend: String,
}

impl SystemInfo {
    /// Whether the manager is at least `major.minor` (`v4.1.0`, `4.1.2-rc1`).
    /// Unparseable versions (`devel`) count as new.
    pub fn at_least(&self, major: u64, minor: u64) -> bool {
        let v = self.version.trim().trim_start_matches('v');
        let mut parts = v.split(|c: char| !c.is_ascii_digit());
        match (
            parts.next().and_then(|p| p.parse::<u64>().ok()),
            parts.next().and_then(|p| p.parse::<u64>().ok()),
        ) {
            (Some(a), Some(b)) => (a, b) >= (major, minor),
            (Some(a), None) => a > major,
            _ => true,
        }
    }
}

/// One OSCAR cluster's API.
#[derive(Clone)]
pub struct Oscar {
    cluster: String,
    base: String,
    user: String,
    password: Secret,
    ssl_verify: bool,
    http: reqwest::Client,
}

impl std::fmt::Debug for Oscar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Oscar({} at {})", self.cluster, self.base)
    }
}

impl Oscar {
    pub fn new(
        cluster: &str,
        base: &str,
        user: &str,
        password: Secret,
        ssl_verify: bool,
        timeout: Duration,
    ) -> Result<Oscar, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        let endpoint_err = |detail: String| ClientError::Endpoint {
            cluster: cluster.to_string(),
            url: base.clone(),
            detail,
        };
        let parsed = url::Url::parse(&base).map_err(|e| endpoint_err(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(endpoint_err("the scheme must be http or https".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .danger_accept_invalid_certs(!ssl_verify)
            .build()
            .map_err(|e| endpoint_err(e.to_string()))?;
        Ok(Oscar {
            cluster: cluster.to_string(),
            base,
            user: user.to_string(),
            password,
            ssl_verify,
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// This cluster as an entry of a service's `clusters` map (how one OSCAR reaches
    /// another for delegation; REFERENCE.md §2).
    pub fn clusters_entry(&self) -> Value {
        serde_json::json!({
            "endpoint": self.base,
            "auth_user": self.user,
            "auth_password": self.password.expose(),
            "ssl_verify": self.ssl_verify,
        })
    }

    /// Send a request; `Ok((status, body))` for any HTTP answer except 401.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        bearer: Option<&str>,
    ) -> Result<(StatusCode, String), ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        req = match bearer {
            Some(t) => req.bearer_auth(t),
            None if path.starts_with("/system") => {
                req.basic_auth(&self.user, Some(self.password.expose()))
            }
            None => req,
        };
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            cluster: self.cluster.clone(),
            url: url.clone(),
            detail: crate::error_chain(&e),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ClientError::Unreachable {
            cluster: self.cluster.clone(),
            url: url.clone(),
            detail: crate::error_chain(&e),
        })?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized {
                cluster: self.cluster.clone(),
                url,
            });
        }
        Ok((status, text))
    }

    fn status_err(&self, method: &str, path: &str, code: StatusCode, body: &str) -> ClientError {
        ClientError::Status {
            cluster: self.cluster.clone(),
            method: method.to_string(),
            url: format!("{}{path}", self.base),
            code: code.as_u16(),
            body: body.trim().chars().take(300).collect(),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &str,
    ) -> Result<T, ClientError> {
        serde_json::from_str(body).map_err(|e| ClientError::Decode {
            cluster: self.cluster.clone(),
            url: format!("{}{path}", self.base),
            detail: e.to_string(),
        })
    }

    /// `GET /health` (no auth): Ok when 200.
    pub async fn health(&self) -> Result<(), ClientError> {
        let (code, body) = self.send(Method::GET, "/health", None, None).await?;
        if code == StatusCode::OK {
            Ok(())
        } else {
            Err(self.status_err("GET", "/health", code, &body))
        }
    }

    pub async fn system_info(&self) -> Result<SystemInfo, ClientError> {
        let path = "/system/info";
        let (code, body) = self.send(Method::GET, path, None, None).await?;
        if code != StatusCode::OK {
            return Err(self.status_err("GET", path, code, &body));
        }
        self.decode(path, &body)
    }

    pub async fn list_services(&self) -> Result<Vec<Value>, ClientError> {
        let path = "/system/services";
        let (code, body) = self.send(Method::GET, path, None, None).await?;
        if code != StatusCode::OK {
            return Err(self.status_err("GET", path, code, &body));
        }
        self.decode(path, &body)
    }

    /// `GET /system/services/{name}`; `None` on 404.
    pub async fn get_service(&self, name: &str) -> Result<Option<Value>, ClientError> {
        let path = format!("/system/services/{}", encode(name));
        let (code, body) = self.send(Method::GET, &path, None, None).await?;
        match code {
            StatusCode::OK => self.decode(&path, &body).map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.status_err("GET", &path, code, &body)),
        }
    }

    /// `POST /system/services` (201).
    pub async fn create_service(&self, def: &Value) -> Result<(), ClientError> {
        self.write(Method::POST, def, StatusCode::CREATED).await
    }

    /// `PUT /system/services` (204).
    pub async fn update_service(&self, def: &Value) -> Result<(), ClientError> {
        self.write(Method::PUT, def, StatusCode::NO_CONTENT).await
    }

    async fn write(
        &self,
        method: Method,
        def: &Value,
        want: StatusCode,
    ) -> Result<(), ClientError> {
        let path = "/system/services";
        let m = method.to_string();
        let (code, body) = self.send(method, path, Some(def), None).await?;
        // 200 is accepted too: some OSCAR versions answer it on success.
        if code == want || code == StatusCode::OK {
            Ok(())
        } else {
            Err(self.status_err(&m, path, code, &body))
        }
    }

    /// `DELETE /system/services/{name}` (204); `false` when it was not there.
    pub async fn delete_service(&self, name: &str) -> Result<bool, ClientError> {
        let path = format!("/system/services/{}", encode(name));
        let (code, body) = self.send(Method::DELETE, &path, None, None).await?;
        match code {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_err("DELETE", &path, code, &body)),
        }
    }

    /// Invoke a service with its token (REFERENCE.md §2: `/job` and `/run` take
    /// ONLY `Bearer <service token>`). `sync`: `POST /run/{svc}` (Knative backend),
    /// returning the body; else `POST /job/{svc}` (async, 201), returning the body.
    pub async fn invoke(
        &self,
        service: &str,
        token: &str,
        body: &Value,
        sync: bool,
    ) -> Result<String, ClientError> {
        let kind = if sync { "run" } else { "job" };
        let path = format!("/{kind}/{}", encode(service));
        let (code, text) = self
            .send(Method::POST, &path, Some(body), Some(token))
            .await?;
        if code == StatusCode::CREATED || code == StatusCode::OK {
            Ok(text)
        } else {
            Err(self.status_err("POST", &path, code, &text))
        }
    }
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare() {
        let v = |s: &str| SystemInfo {
            version: s.into(),
            ..SystemInfo::default()
        };
        assert!(v("v4.1.0").at_least(4, 1));
        assert!(v("4.2.3-rc1").at_least(4, 1));
        assert!(v("5").at_least(4, 1));
        assert!(!v("v4.0.9").at_least(4, 1));
        assert!(!v("3.6.4").at_least(4, 1));
        assert!(v("devel").at_least(4, 1));
    }

    #[test]
    fn bad_endpoints_are_refused() {
        let e = Oscar::new(
            "c",
            "ftp://x",
            "u",
            Secret::new("p"),
            true,
            Duration::from_secs(1),
        );
        assert!(e.is_err());
        let ok = Oscar::new(
            "c",
            "http://10.0.0.1/",
            "u",
            Secret::new("p"),
            true,
            Duration::from_secs(1),
        )
        .expect("ok");
        assert_eq!(ok.base(), "http://10.0.0.1");
    }
}
