//! Incidents after they open: closed by inactivity (the detectors report
//! an incident no alert can join any more), closed or acknowledged by a
//! person (API and command line), and every change of state published on
//! `sensor.<id>.alerts` from the incidents table (an outbox, like alerts).

use std::collections::BTreeMap;

use heimdall_bus::Bus;
use heimdall_proto::sensor::v1::{AlertEvent, Incident, IncidentState, alert_event};
use serde::Serialize;
use sha1::{Digest, Sha1};
use sqlx::PgPool;
use tracing::info;

use crate::{Service, held, severity_name, short_name, wall_us};

/// What a person may do to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Seen; it still collects alerts.
    Acknowledge,
    /// Done; the device's next alert opens a new incident.
    Close,
}

impl Action {
    /// The action a verb names (`acknowledge`, `close`), as the API path
    /// and the command line spell it.
    pub fn from_verb(verb: &str) -> Option<Action> {
        match verb {
            "acknowledge" => Some(Action::Acknowledge),
            "close" => Some(Action::Close),
            _ => None,
        }
    }
}

/// Why a person's change was refused.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("no incident {incident} on sensor {sensor}")]
    NotFound { sensor: String, incident: String },
    #[error("incident {incident} is closed already")]
    Closed { incident: String },
    #[error("say who you are (by)")]
    NoOne,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// One incident as the API and the command line list it.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentInfo {
    pub incident_id: String,
    pub device_id: String,
    pub state: String,
    pub severity: String,
    pub alert_types: Vec<String>,
    pub alert_count: i32,
    pub opened_us: i64,
    pub updated_us: i64,
    pub closed_us: Option<i64>,
    pub changed_by: Option<String>,
    pub note: Option<String>,
    pub summary: String,
}

fn state_name(state: i16) -> String {
    IncidentState::try_from(i32::from(state))
        .map(|s| short_name(s.as_str_name(), "INCIDENT_STATE_"))
        .unwrap_or_default()
}

/// A person acknowledges or closes an incident. Only the database changes
/// here: the running service publishes the change, and for a close makes
/// its detectors forget the incident, within a second
/// ([`Service::detach_closed`]).
pub async fn act(
    pool: &PgPool,
    sensor: &str,
    incident: &str,
    action: Action,
    by: &str,
    note: &str,
) -> Result<IncidentInfo, IncidentError> {
    let by = by.trim();
    if by.is_empty() {
        return Err(IncidentError::NoOne);
    }
    let (state, closed) = match action {
        Action::Acknowledge => (IncidentState::Acknowledged as i16, None),
        Action::Close => (IncidentState::Closed as i16, Some(wall_us())),
    };
    let note = (!note.trim().is_empty()).then(|| note.trim().to_string());
    let changed = sqlx::query(
        "UPDATE incidents SET state = $3, closed_us = $4, changed_by = $5, note = $6, \
         state_published = false, detached = ($3 <> 3) \
         WHERE sensor_id = $1 AND incident_id = $2 AND state <> 3",
    )
    .bind(sensor)
    .bind(incident)
    .bind(state)
    .bind(closed)
    .bind(by)
    .bind(&note)
    .execute(pool)
    .await?
    .rows_affected();
    let found = query(pool, sensor, Some(incident), None)
        .await?
        .into_iter()
        .next();
    match (changed, found) {
        (1, Some(i)) => Ok(i),
        (_, Some(_)) => Err(IncidentError::Closed {
            incident: incident.into(),
        }),
        (_, None) => Err(IncidentError::NotFound {
            sensor: sensor.into(),
            incident: incident.into(),
        }),
    }
}

/// A sensor's incidents, newest first; `state` (`open`, `acknowledged`,
/// `closed`) keeps only those.
pub async fn list(
    pool: &PgPool,
    sensor: &str,
    state: Option<&str>,
) -> Result<Vec<IncidentInfo>, sqlx::Error> {
    query(pool, sensor, None, state).await
}

/// A sensor's incidents (or the one named `incident`) in `state` (all
/// when `None`), newest first, at most 1000.
async fn query(
    pool: &PgPool,
    sensor: &str,
    incident: Option<&str>,
    state: Option<&str>,
) -> Result<Vec<IncidentInfo>, sqlx::Error> {
    // An unknown name matches nothing.
    let state: Option<i16> = state.map(|s| {
        IncidentState::from_str_name(&format!("INCIDENT_STATE_{}", s.to_ascii_uppercase()))
            .map_or(-1, |st| st as i16)
    });
    type Row = (
        String,
        String,
        i16,
        i32,
        Vec<String>,
        i32,
        i64,
        i64,
        Option<i64>,
        Option<String>,
        Option<String>,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT incident_id, device_id, state, severity, alert_types, alert_count, opened_us, updated_us, \
         closed_us, changed_by, note, summary FROM incidents WHERE sensor_id = $1 \
         AND ($2::text IS NULL OR incident_id = $2) AND ($3::smallint IS NULL OR state = $3) \
         ORDER BY updated_us DESC, incident_id LIMIT 1000",
    )
    .bind(sensor)
    .bind(incident)
    .bind(state)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| IncidentInfo {
            incident_id: r.0,
            device_id: r.1,
            state: state_name(r.2),
            severity: severity_name(r.3),
            alert_types: r.4,
            alert_count: r.5,
            opened_us: r.6,
            updated_us: r.7,
            closed_us: r.8,
            changed_by: r.9,
            note: r.10,
            summary: r.11,
        })
        .collect())
}

impl Service {
    /// The incidents `ids` as published: their alerts, state and summary.
    pub(crate) async fn incidents(&self, ids: &[String]) -> Result<Vec<Incident>, sqlx::Error> {
        type Row = (
            String,
            String,
            String,
            i64,
            i64,
            i32,
            Vec<String>,
            String,
            i16,
            Option<i64>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT incident_id, sensor_id, device_id, opened_us, updated_us, severity, alert_types, summary, \
             state, closed_us, changed_by, note FROM incidents WHERE incident_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let (id, sensor, device, opened, updated, severity, types, first) =
                (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7);
            let alert_ids: Vec<String> = sqlx::query_scalar(
                "SELECT alert_id FROM alerts WHERE incident_id = $1 ORDER BY ts_us, seq",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await?;
            let mut summary = format!(
                "{} ({} alert types: {}); first: {first}",
                severity_name(severity),
                types.len(),
                types.join(", ")
            );
            match (r.8, &r.10) {
                (s, Some(by)) if s == IncidentState::Closed as i16 => {
                    summary.push_str(&format!("; closed by {by}"));
                }
                (s, Some(by)) if s == IncidentState::Acknowledged as i16 => {
                    summary.push_str(&format!("; acknowledged by {by}"));
                }
                _ => {}
            }
            if let Some(note) = &r.11 {
                summary.push_str(&format!(": {note}"));
            }
            out.push(Incident {
                incident_id: id,
                sensor_id: sensor,
                device_id: device,
                alert_ids,
                severity,
                summary,
                opened_us: opened,
                updated_us: updated,
                closed_us: r.9,
                state: i32::from(r.8),
                alert_types: types,
            });
        }
        Ok(out)
    }

    /// Makes the detectors forget incidents a person closed, so their
    /// devices' next alerts open new ones; the monitors are saved at once.
    pub async fn detach_closed(&self) -> Result<usize, crate::HandleError> {
        let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as(
            "SELECT sensor_id, incident_id, closed_us FROM incidents WHERE NOT detached ORDER BY closed_us LIMIT 500",
        )
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // One replica for every partition holds every device; with
        // partitions, another replica may hold it, and a day is far past
        // the hour an incident stays joinable.
        let everything = matches!(self.settings.partition_list(), Ok(None));
        let stale = wall_us() - 24 * 3_600_000_000;
        let mut mons = self.monitors.lock().await;
        let (mut here, mut elsewhere) = (Vec::new(), Vec::new());
        for (sensor, id, closed) in &rows {
            let mut held_here = false;
            for ((s, part), m) in mons.iter_mut() {
                if s == sensor && m.detector.close_incident(id) {
                    held(&self.changed).insert((s.clone(), *part));
                    held_here = true;
                }
            }
            if held_here {
                here.push(id.clone());
            } else if everything || closed.is_some_and(|c| c < stale) {
                elsewhere.push(id.clone());
            }
        }
        // Detached in the transaction that saves the monitors without them.
        if !here.is_empty() {
            self.checkpoint_with(&mut mons, &here).await?;
        }
        drop(mons);
        if !elsewhere.is_empty() {
            sqlx::query("UPDATE incidents SET detached = true WHERE incident_id = ANY($1)")
                .bind(&elsewhere)
                .execute(&self.pool)
                .await?;
        }
        let done = here.len() + elsewhere.len();
        Ok(done)
    }

    /// Publishes changes of state (closed, acknowledged) not yet published;
    /// returns how many incidents went out.
    pub async fn publish_incident_states(&self, bus: &Bus) -> anyhow::Result<usize> {
        let rows: Vec<(String, String, i16)> = sqlx::query_as(
            "SELECT sensor_id, incident_id, state FROM incidents WHERE NOT state_published \
             ORDER BY updated_us LIMIT 500",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_sensor: BTreeMap<String, Vec<(String, i16)>> = BTreeMap::new();
        for (sensor, id, state) in rows {
            by_sensor.entry(sensor).or_default().push((id, state));
        }
        let mut sent = 0;
        for (sensor, items) in by_sensor {
            let ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
            let mut h = Sha1::new();
            let mut records = Vec::new();
            for i in self.incidents(&ids).await? {
                let event_id = format!(
                    "{}-{}-{}",
                    i.incident_id,
                    state_name(i.state as i16),
                    i.closed_us.unwrap_or(i.updated_us)
                );
                h.update(event_id.as_bytes());
                h.update([0]);
                records.push(AlertEvent {
                    event_id,
                    sensor_id: sensor.clone(),
                    ts_us: i.closed_us.unwrap_or(i.updated_us),
                    payload: Some(alert_event::Payload::Incident(i)),
                });
            }
            crate::send_events(bus, &sensor, "incidents", h, records).await?;
            // A state that changed again meanwhile stays unpublished.
            for (id, state) in &items {
                sqlx::query(
                    "UPDATE incidents SET state_published = true WHERE incident_id = $1 AND state = $2",
                )
                .bind(id)
                .bind(state)
                .execute(&self.pool)
                .await?;
            }
            sent += items.len();
            info!(sensor, incidents = items.len(), "incident states published");
        }
        Ok(sent)
    }
}
