//! A thin HTTP client for burrow's REST API (v1).

use anyhow::{Context, anyhow};
use futures::{Stream, TryStreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::io::StreamReader;

/// An authenticated client of one burrow server.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: String, key: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(8)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { base, key, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The pooled HTTP client without credentials (for requests that must not carry the API key,
    /// such as those relayed into a sandbox).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.key)
    }

    /// Sends a request and turns a non-2xx answer into the server's error message.
    pub async fn send(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the burrow server at {}: {e}", self.base))?;
        check(resp).await
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        resp.json().await.context("decoding the server's answer")
    }

    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let resp = self
            .send(self.request(Method::POST, path).json(body))
            .await?;
        resp.json().await.context("decoding the server's answer")
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.request(Method::DELETE, path)).await?;
        Ok(())
    }
}

/// Turns an error response into an error carrying the server's `code` and `message`.
pub async fn check(resp: Response) -> anyhow::Result<Response> {
    let status = resp.status();
    if status.is_success() || status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let message = v.get("message")?.as_str()?.to_string();
            let code = v.get("code").map(|c| {
                c.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| c.to_string())
            });
            Some(match code {
                Some(code) => format!("{message} ({code})"),
                None => message,
            })
        })
        .unwrap_or_else(|| body.trim().to_string());
    Err(anyhow!("server answered {status}: {detail}"))
}

/// Splits a streaming response into NDJSON values, one per non-empty line.
pub fn ndjson<T: DeserializeOwned>(resp: Response) -> impl Stream<Item = anyhow::Result<T>> {
    let reader = StreamReader::new(resp.bytes_stream().map_err(std::io::Error::other));
    FramedRead::new(reader, LinesCodec::new_with_max_length(16 * 1024 * 1024))
        .map_err(|e| anyhow!("stream from the server broke: {e}"))
        .try_filter(|line| futures::future::ready(!line.trim().is_empty()))
        .and_then(|line| async move {
            serde_json::from_str::<T>(&line)
                .with_context(|| format!("decoding a streamed event: {line}"))
        })
}
