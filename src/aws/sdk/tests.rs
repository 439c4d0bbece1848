//! The SDK client against a local endpoint: one request per call (no SDK retries).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A local endpoint that answers every request with HTTP 503 (EC2's `Unavailable`)
/// and counts the requests.
async fn always_unavailable() -> (String, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicU32::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the body by Content-Length.
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            seen.fetch_add(1, Ordering::SeqCst);
            let body = "<Response><Errors><Error><Code>Unavailable</Code><Message>busy</Message></Error></Errors><RequestID>r</RequestID></Response>";
            let resp = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    (url, count)
}

#[tokio::test]
async fn the_client_sends_one_request_per_call_and_the_retry_layer_owns_retries() {
    let (url, count) = always_unavailable().await;
    let api = SdkEc2::for_endpoint("eu-west-1", &url, "k", "s").await;
    let e = api.describe_instances("e").await.expect_err("503");
    assert!(matches!(e, Ec2Error::Server { status: 503, .. }), "{e:?}");
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "the SDK retried on its own"
    );
    let policy = crate::aws::RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(1),
        max: Duration::from_millis(2),
        consistency: Duration::from_millis(1),
    };
    let r = crate::aws::retry(policy, || api.describe_instances("e")).await;
    assert!(r.is_err());
    assert_eq!(
        count.load(Ordering::SeqCst),
        4,
        "1 + 3 attempts of the one layer"
    );
}
