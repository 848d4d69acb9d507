//! The `aegir` client's HTTP side: authenticated JSON calls to aegird and following an
//! operation's event stream.

use std::time::Duration;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::error::ErrorBody;

/// Why a client call failed; each maps to a distinct exit code (see `aegir --help`).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach aegird at {url}: {source}")]
    Connect { url: String, source: reqwest::Error },
    #[error("{}", .body.message)]
    Api {
        status: reqwest::StatusCode,
        body: ErrorBody,
    },
    #[error("unexpected answer from aegird ({status}): {text}")]
    Unexpected {
        status: reqwest::StatusCode,
        text: String,
    },
    #[error("the event stream broke: {0}")]
    Stream(String),
}

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .user_agent(format!("aegir/{}", crate::VERSION))
                .build()
                .expect("HTTP client"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        self.send_within(req, Duration::from_secs(60)).await
    }

    async fn send_within(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = req
            .bearer_auth(&self.token)
            .timeout(timeout)
            .send()
            .await
            .map_err(|source| ClientError::Connect {
                url: self.base.clone(),
                source,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(ClientError::Api { status, body }),
            Err(_) => Err(ClientError::Unexpected { status, text }),
        }
    }

    async fn json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ClientError::Unexpected {
            status,
            text: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| ClientError::Unexpected {
            status,
            text: format!("{e}: {text}"),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::json(self.send(self.http.get(self.url(path))).await?).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        Self::json(self.send(self.http.post(self.url(path)).json(body)).await?).await
    }

    /// [`Client::post`] for a request that works before it answers (an import).
    pub async fn post_within<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        Self::json(
            self.send_within(self.http.post(self.url(path)).json(body), timeout)
                .await?,
        )
        .await
    }

    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        Self::json(self.send(self.http.put(self.url(path)).json(body)).await?).await
    }

    /// Stream a download into `dest` ("-" for stdout) without holding it in memory; the
    /// file appears under its name only once complete. Returns the bytes written.
    pub async fn download(&self, path: &str, dest: &str) -> Result<u64, ClientError> {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let req = self.http.get(self.url(path)).bearer_auth(&self.token);
        let resp = req.send().await.map_err(|source| ClientError::Connect {
            url: self.base.clone(),
            source,
        })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(match serde_json::from_str::<ErrorBody>(&text) {
                Ok(body) => ClientError::Api { status, body },
                Err(_) => ClientError::Unexpected { status, text },
            });
        }
        let io = |e: std::io::Error| ClientError::Unexpected {
            status,
            text: format!("writing {dest}: {e}"),
        };
        let partial = format!("{dest}.part");
        let mut file: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if dest == "-" {
            Box::new(tokio::io::stdout())
        } else {
            Box::new(tokio::fs::File::create(&partial).await.map_err(io)?)
        };
        let mut stream = resp.bytes_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| ClientError::Connect {
                url: self.base.clone(),
                source,
            })?;
            file.write_all(&chunk).await.map_err(io)?;
            n += chunk.len() as u64;
        }
        file.flush().await.map_err(io)?;
        drop(file);
        if dest != "-" {
            tokio::fs::rename(&partial, dest).await.map_err(io)?;
        }
        Ok(n)
    }

    /// DELETE that answers with a JSON document (an operation).
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::json(self.send(self.http.delete(self.url(path))).await?).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url(path))).await?;
        Ok(())
    }

    /// Follow `/operations/{id}/events`, calling `on_event(name, data)` for each event until
    /// the `end` event (whose data is returned). Reconnects from the last line seen if the
    /// connection drops.
    pub async fn follow(
        &self,
        id: i64,
        mut on_event: impl FnMut(&str, &str),
    ) -> Result<String, ClientError> {
        let mut after = 0i64;
        let mut failures = 0;
        loop {
            let url = self.url(&format!("/operations/{id}/events?after={after}"));
            let resp = match self.send(self.http.get(&url)).await {
                Ok(r) => r,
                Err(e @ ClientError::Api { .. }) => return Err(e),
                Err(e) => {
                    failures += 1;
                    if failures > 5 {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            let (mut event, mut data, mut last_id) = (String::new(), String::new(), None);
            while let Some(chunk) = body.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(_) => break,
                };
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(nl) = buf.find('\n') {
                    let line = buf[..nl].trim_end_matches('\r').to_string();
                    buf.drain(..=nl);
                    if line.is_empty() {
                        if !event.is_empty() || !data.is_empty() {
                            if let Some(i) = last_id.take() {
                                after = i;
                            }
                            if event == "end" {
                                return Ok(data);
                            }
                            if event == "error" {
                                return Err(ClientError::Stream(data));
                            }
                            on_event(&event, &data);
                        }
                        event.clear();
                        data.clear();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    } else if let Some(v) = line.strip_prefix("id:") {
                        last_id = v.trim().parse().ok();
                    }
                }
            }
            failures += 1;
            if failures > 5 {
                return Err(ClientError::Stream(
                    "connection closed before the operation ended".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
