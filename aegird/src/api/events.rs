//! Live operation logs as Server-Sent Events. The store is read for every batch, so a
//! follower sees the same lines whichever daemon writes them; the engine's change signal only
//! says when to look again.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::broadcast;
use utoipa::IntoParams;

use super::error::{ApiError, ApiPath, ApiQuery};
use crate::app::App;
use crate::model::{Id, OperationStatus};

const BATCH: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Start after this log line id (0 or absent: from the first line).
    pub after: Option<Id>,
}

struct Follow {
    app: App,
    id: Id,
    after: Id,
    status: Option<OperationStatus>,
    changes: broadcast::Receiver<Id>,
    pending: VecDeque<Event>,
    done: bool,
}

/// Stream an operation: `log` events (a LogLine each, with the line id as event id),
/// `status` events (the Operation) when its status changes, and one `end` event (the
/// OperationDetail) once it has ended and every line was sent.
#[utoipa::path(get, path = "/operations/{id}/events", tag = "operations",
    params(("id" = i64, Path), EventsQuery),
    responses((status = 200, description = "text/event-stream of log, status and end events",
        content_type = "text/event-stream"),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn operation_events(
    State(app): State<App>,
    ApiPath(id): ApiPath<Id>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribe before the first read, so no change between the two is missed.
    let changes = app.engine().subscribe();
    app.operation(id).await?;
    let state = Follow {
        app,
        id,
        after: q.after.unwrap_or(0),
        status: None,
        changes,
        pending: VecDeque::new(),
        done: false,
    };
    let s = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            match st.poll().await {
                Ok(()) => {}
                Err(msg) => {
                    st.pending
                        .push_back(Event::default().event("error").data(msg));
                    st.done = true;
                    continue;
                }
            }
            if st.pending.is_empty() && !st.done {
                st.wait().await;
            }
        }
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::default()))
}

impl Follow {
    /// Queue the new lines and any status change; the `end` event once it has ended.
    async fn poll(&mut self) -> Result<(), String> {
        let lines = self.fetch().await?;
        if lines == BATCH as usize {
            return Ok(()); // more are waiting; send these first
        }
        let detail = self
            .app
            .operation(self.id)
            .await
            .map_err(|e| e.to_string())?;
        let status = detail.operation.status;
        if self.status != Some(status) {
            self.status = Some(status);
            self.pending
                .push_back(json_event("status", &detail.operation));
        }
        if status.is_final() {
            // Lines are written before the final status, but may have landed between the
            // read above and the status read.
            while self.fetch().await? == BATCH as usize {}
            self.pending.push_back(json_event("end", &detail));
            self.done = true;
        }
        Ok(())
    }

    async fn fetch(&mut self) -> Result<usize, String> {
        let lines = self
            .app
            .operation_logs(self.id, self.after, BATCH)
            .await
            .map_err(|e| e.to_string())?;
        for l in &lines {
            self.after = l.id;
            self.pending
                .push_back(json_event("log", l).id(l.id.to_string()));
        }
        Ok(lines.len())
    }

    /// Until this operation changes, or a second passes (it may be run by another daemon).
    async fn wait(&mut self) {
        let deadline = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                r = self.changes.recv() => match r {
                    Ok(id) if id != self.id => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        // The engine is gone; fall back to the deadline.
                        (&mut deadline).await;
                        return;
                    }
                    _ => return,
                },
            }
        }
    }
}

fn json_event<T: serde::Serialize>(name: &str, v: &T) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(v).unwrap_or_else(|_| "null".into()))
}
