//! The operator API beside `/metrics` on the telemetry listener:
//!
//! - `GET /v1/baselines/{sensor}/{device}`: the device's stored baseline
//!   versions, newest first, and the one in force.
//! - `POST /v1/baselines/{sensor}/{device}/rollback` with
//!   `{"version": N}`: roll the baseline back to stored version N; the
//!   answer gives the new version (a rollback is a version of its own).
//!
//! The listener carries no authentication: keep it on the host or cluster
//! network, as the metrics are (docs/operations.md).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::{RollbackError, Service};

type Slot = Arc<OnceLock<Arc<Service>>>;

pub(crate) fn router(slot: Slot) -> Router {
    Router::new()
        .route("/v1/baselines/{sensor}/{device}", get(list))
        .route("/v1/baselines/{sensor}/{device}/rollback", post(rollback))
        .with_state(slot)
}

fn problem(code: StatusCode, message: String) -> Response {
    (code, axum::Json(json!({ "error": message }))).into_response()
}

fn service(slot: &Slot) -> Result<Arc<Service>, Box<Response>> {
    slot.get().cloned().ok_or_else(|| {
        Box::new(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is still loading its state; try again shortly".into(),
        ))
    })
}

async fn list(
    State(slot): State<Slot>,
    Path((sensor, device)): Path<(String, String)>,
) -> Response {
    let svc = match service(&slot) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match crate::versions(&svc.pool, &sensor, &device).await {
        Ok(v) if v.is_empty() => problem(
            StatusCode::NOT_FOUND,
            format!("no stored baseline for device {device} on sensor {sensor}"),
        ),
        Ok(v) => {
            let current: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM profiles WHERE sensor_id = $1 AND device_key = $2",
            )
            .bind(&sensor)
            .bind(&device)
            .fetch_optional(&svc.pool)
            .await
            .ok()
            .flatten();
            axum::Json(
                json!({ "sensor": sensor, "device": device, "current": current, "versions": v }),
            )
            .into_response()
        }
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, format!("database: {e}")),
    }
}

#[derive(Deserialize)]
struct RollbackBody {
    version: u64,
}

async fn rollback(
    State(slot): State<Slot>,
    Path((sensor, device)): Path<(String, String)>,
    body: Result<axum::Json<RollbackBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let svc = match service(&slot) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Ok(axum::Json(body)) = body else {
        return problem(
            StatusCode::BAD_REQUEST,
            "send a JSON body like {\"version\": 12}".into(),
        );
    };
    match svc.rollback(&sensor, &device, body.version).await {
        Ok(v) => axum::Json(
            json!({ "device": device, "rolled_back_to": body.version, "new_version": v }),
        )
        .into_response(),
        Err(e @ (RollbackError::NoDevice { .. } | RollbackError::NoVersion { .. })) => {
            problem(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
