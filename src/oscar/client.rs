//! OSCAR manager REST client (docs/oscar.md, "API contract").
//!
//! Auth rules: `/system/*` with HTTP Basic; `/run` and `/job` ONLY with
//! `Authorization: Bearer <service token>`; `/health` without auth. Every error names
//! the cluster and the URL; a 401 is reported as a credential problem, not retried
//! (a coordinator's "federation auth failed" 401 is kept apart: it is a member's).
//! The password is never part of an error, a log line or a URL.
//!
//! Answers are decoded to upstream's shapes (docs/oscar.md, "Answers"): fields
//! upstream omits when empty are optional here, unknown fields are ignored, and a
//! field continuum does not use never fails a decode.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Deserializer, Serialize};
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
    /// 401 from a 4.1 coordinator whose check of the federation members failed
    /// (`federation auth failed: [...]`): the refusal is a member's.
    #[error("OSCAR cluster `{cluster}` could not reach its federation members ({url}): {detail}")]
    FederationAuth {
        cluster: String,
        url: String,
        detail: String,
    },
    /// A 4.1 coordinator stored the update but could not push it to every member
    /// (200 `Updated with federation warnings: [...]`).
    #[error(
        "OSCAR cluster `{cluster}` stored the service but could not update every federation member: {warnings}"
    )]
    FederationWarnings { cluster: String, warnings: String },
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
    #[error(
        "OSCAR cluster `{cluster}` runs OSCAR {version}: continuum's `fn` commands need 3.6 or later"
    )]
    TooOld { cluster: String, version: String },
}

/// `GET /system/info` (docs/oscar.md, "Answers"): `serverless_backend` is
/// omitted for the kube backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    #[serde(default, deserialize_with = "lenient_string")]
    pub version: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub git_commit: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub architecture: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub kubernetes_version: String,
    #[serde(
        default,
        deserialize_with = "lenient_backend",
        skip_serializing_if = "Option::is_none"
    )]
    pub serverless_backend: Option<BackendInfo>,
}

/// `serverless_backend` of `/system/info`: `{name, version}` (`Knative`, `OpenFaaS`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub version: String,
}

/// A string field continuum reads; `null` or another type reads as empty rather than
/// failing the whole answer.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// The backend object; a bare string (as older answers of test doubles had) is read as
/// its name, anything else as absent.
fn lenient_backend<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BackendInfo>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(m) => serde_json::from_value(Value::Object(m)).ok(),
        Value::String(s) if !s.is_empty() => Some(BackendInfo {
            name: s,
            version: String::new(),
        }),
        _ => None,
    })
}

/// The request form a cluster takes (docs/oscar.md, "Versions").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Api {
    /// 3.6 up to 4.0: per-cluster `replicas` + `delegation`.
    #[serde(rename = "3.6")]
    V3_6,
    /// 4.1 and later: the `federation` block on one coordinator.
    #[serde(rename = "4.1")]
    V4_1,
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Api::V3_6 => "3.6",
            Api::V4_1 => "4.1",
        })
    }
}

impl SystemInfo {
    /// Whether the manager is at least `major.minor` (`v4.1.0`, `4.1.2-rc1`).
    /// Unparseable versions (`devel`, what upstream reports when built without a
    /// version) count as new.
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

    /// The request form for this version; before 3.6 there is none.
    pub fn api(&self, cluster: &str) -> Result<Api, ClientError> {
        if self.at_least(4, 1) {
            Ok(Api::V4_1)
        } else if self.at_least(3, 6) {
            Ok(Api::V3_6)
        } else {
            Err(ClientError::TooOld {
                cluster: cluster.to_string(),
                version: self.version.clone(),
            })
        }
    }
}

/// One entry of a federation's members (`types.Replica`; docs/oscar.md, "Answers").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    #[serde(default, rename = "type", deserialize_with = "lenient_string")]
    pub kind: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub cluster_id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub service_name: String,
}

/// `GET /system/federation/{service}` (4.1; docs/oscar.md, "Answers"):
/// `members` is `null` when there are none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationInfo {
    #[serde(default, deserialize_with = "lenient_string")]
    pub topology: String,
    #[serde(default)]
    pub members: Option<Vec<Replica>>,
}

/// One OSCAR cluster's API.
#[derive(Clone)]
pub struct Oscar {
    cluster: String,
    base: String,
    user: String,
    password: Secret,
    ssl_verify: bool,
    timeout: Duration,
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
            timeout,
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn ssl_verify(&self) -> bool {
        self.ssl_verify
    }

    /// This cluster's API reached with `other`'s Basic credentials: what a 4.1
    /// coordinator does when it forwards its caller's Authorization header to a member
    /// (docs/oscar.md, "Federation (4.1)").
    pub fn with_credentials_of(&self, other: &Oscar) -> Result<Oscar, ClientError> {
        Oscar::new(
            &self.cluster,
            &self.base,
            &other.user,
            other.password.clone(),
            self.ssl_verify,
            self.timeout,
        )
    }

    /// Another endpoint reached with this cluster's credentials, as a 4.1 coordinator
    /// reaches the members named in a service's `clusters` map.
    pub fn forwarded_to(
        &self,
        cluster: &str,
        endpoint: &str,
        ssl_verify: bool,
    ) -> Result<Oscar, ClientError> {
        Oscar::new(
            cluster,
            endpoint,
            &self.user,
            self.password.clone(),
            ssl_verify,
            self.timeout,
        )
    }

    /// This cluster as an entry of a service's `clusters` map (how one OSCAR reaches
    /// another; docs/oscar.md, "Published spec" and "Credentials in definitions").
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
            // OSCAR 4.1: the coordinator's check of its members answers 401
            // "federation auth failed: [...]" (docs/oscar.md, "Federation (4.1)"); the
            // caller's own credentials were fine.
            if let Some(detail) = text.trim().strip_prefix("federation auth failed:") {
                return Err(ClientError::FederationAuth {
                    cluster: self.cluster.clone(),
                    url,
                    detail: detail.trim().chars().take(600).collect(),
                });
            }
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

    /// `GET /system/services`; `null` (an empty Go slice can encode so) is no services.
    pub async fn list_services(&self) -> Result<Vec<Value>, ClientError> {
        let path = "/system/services";
        let (code, body) = self.send(Method::GET, path, None, None).await?;
        if code != StatusCode::OK {
            return Err(self.status_err("GET", path, code, &body));
        }
        let list: Option<Vec<Value>> = self.decode(path, &body)?;
        Ok(list.unwrap_or_default())
    }

    /// `GET /system/services/{name}`; `None` on 404.
    pub async fn get_service(&self, name: &str) -> Result<Option<Value>, ClientError> {
        let path = format!("/system/services/{}", encode(name));
        let (code, body) = self.send(Method::GET, &path, None, None).await?;
        match code {
            StatusCode::OK => {
                let v: Value = self.decode(&path, &body)?;
                if v.is_object() {
                    Ok(Some(v))
                } else {
                    Err(ClientError::Decode {
                        cluster: self.cluster.clone(),
                        url: format!("{}{path}", self.base),
                        detail: "the service is not a JSON object".into(),
                    })
                }
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.status_err("GET", &path, code, &body)),
        }
    }

    /// `GET /system/federation/{name}` (4.1 and later); `None` on 404.
    pub async fn get_federation(&self, name: &str) -> Result<Option<FederationInfo>, ClientError> {
        let path = format!("/system/federation/{}", encode(name));
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

    /// `PUT /system/services` (204; a 4.1 coordinator answers 200 with warnings
    /// when a member could not be updated: an error here).
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
        if code == StatusCode::OK && body.contains("with federation warnings") {
            let warnings = body
                .split_once(':')
                .map_or(body.as_str(), |(_, w)| w)
                .trim()
                .chars()
                .take(1000)
                .collect();
            return Err(ClientError::FederationWarnings {
                cluster: self.cluster.clone(),
                warnings,
            });
        }
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

    /// Invoke a service with its token (docs/oscar.md, "API contract": `/job` and
    /// `/run` take ONLY `Bearer <service token>`). `sync`: `POST /run/{svc}` (needs a
    /// serverless backend), returning the body; else `POST /job/{svc}` (async, 201).
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
        assert_eq!(v("3.6.4").api("c").expect("3.6"), Api::V3_6);
        assert_eq!(v("4.0.0").api("c").expect("4.0"), Api::V3_6);
        assert_eq!(v("4.1.2").api("c").expect("4.1"), Api::V4_1);
        let e = v("3.5.3").api("old").expect_err("too old");
        assert!(e.to_string().contains("`old` runs OSCAR 3.5.3"), "{e}");
    }

    /// Answers shaped as upstream's: the kube backend omits `serverless_backend`,
    /// Knative sends an object, unknown fields are ignored.
    #[test]
    fn system_info_decodes_upstream_shapes() {
        let kube: SystemInfo = serde_json::from_str(
            r#"{"version":"3.6.4","git_commit":"abc","architecture":"arm64","kubernetes_version":"v1.31.4+k3s1"}"#,
        )
        .expect("kube");
        assert_eq!(kube.serverless_backend, None);
        let kn: SystemInfo = serde_json::from_str(
            r#"{"version":"4.1.2","git_commit":"","architecture":"amd64","kubernetes_version":"v1.32.2+k3s1","serverless_backend":{"name":"Knative","version":"v1.32.2+k3s1"},"new_field":[1]}"#,
        )
        .expect("knative");
        assert_eq!(
            kn.serverless_backend.as_ref().map(|b| b.name.as_str()),
            Some("Knative")
        );
        let odd: SystemInfo =
            serde_json::from_str(r#"{"version":null,"serverless_backend":"knative"}"#)
                .expect("lenient");
        assert_eq!(odd.version, "");
        assert_eq!(
            odd.serverless_backend.map(|b| b.name),
            Some("knative".to_string())
        );
        let fed: FederationInfo =
            serde_json::from_str(r#"{"topology":"none","members":null}"#).expect("fed");
        assert_eq!(fed.members, None);
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
