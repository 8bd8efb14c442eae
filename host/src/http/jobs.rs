//! Job HA data: graphs, checkpoints, the checkpoint id counter, the job
//! result store, and the recovery view. Every write must carry `X-HA-Term`:
//! only a leader's job manager writes HA data, and a deposed one must fail.

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use super::reply::{self, Reply};
use super::state::{Preconditions, read_body, value_error};
use crate::jobs::{ResultOutcome, check_job_id};
use crate::shared::Shared;

/// `GET /jobs`: jobs that have HA data.
pub async fn list(shared: &Shared) -> Reply {
    match shared.jobs.jobs().await {
        Ok(jobs) => reply::json(StatusCode::OK, &json!({ "jobs": jobs })),
        Err(e) => value_error(shared, e),
    }
}

/// `GET /recovery`: what a new leader must recover and finish.
pub async fn recovery(shared: &Shared) -> Reply {
    match shared.jobs.recovery().await {
        Ok(view) => reply::json(StatusCode::OK, &view),
        Err(e) => value_error(shared, e),
    }
}

/// `/jobs/{job}/...`
pub async fn handle(shared: &Shared, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path["/jobs/".len()..].split('/').collect();
    let job = parts[0];
    if let Err(e) = check_job_id(job) {
        return reply::error(StatusCode::BAD_REQUEST, "invalid_job_id", e);
    }
    // The method before the headers: one the path never takes is 405.
    if let Some(allowed) = methods(&parts[1..])
        && !allowed.contains(&req.method().as_str())
    {
        return reply::method_not_allowed(
            allowed,
            format!(
                "{} is not supported on {path}; use {}",
                req.method(),
                allowed.join(" or ")
            ),
        );
    }
    let pre = match Preconditions::parse(req.headers()) {
        Ok(p) => p,
        Err(e) => return reply::error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    let method = req.method().clone();
    let term_required = || {
        reply::error(
            StatusCode::BAD_REQUEST,
            "term_required",
            "writes of job HA data must carry X-HA-Term: <the term token from GET /leader>",
        )
    };
    match (method, &parts[1..]) {
        (Method::GET, ["graph"]) => bytes_or_404(
            shared,
            shared.jobs.get_graph(job).await,
            &format!("job {job} has no graph"),
        ),
        (Method::PUT, ["graph"]) => {
            let Some(fence) = pre.fence else {
                return term_required();
            };
            let body = match read_body(shared, req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match shared.jobs.put_graph(job, &body, fence).await {
                Ok(v) => reply::etag(
                    reply::json(StatusCode::OK, &json!({ "job": job, "version": v })),
                    v,
                ),
                Err(e) => value_error(shared, e),
            }
        }
        (Method::GET, ["checkpoints"]) => match shared.jobs.checkpoints(job).await {
            Ok(ids) => reply::json(
                StatusCode::OK,
                &json!({ "job": job, "checkpoints": ids, "latest": ids.last() }),
            ),
            Err(e) => value_error(shared, e),
        },
        (Method::GET, ["checkpoints", "latest"]) => {
            match shared.jobs.latest_checkpoint(job).await {
                Ok(Some(id)) => checkpoint(shared, job, id).await,
                Ok(None) => reply::error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("job {job} has no checkpoint"),
                ),
                Err(e) => value_error(shared, e),
            }
        }
        (method, ["checkpoints", id]) => {
            let Ok(id) = id.parse::<u64>() else {
                return reply::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("checkpoint id {id:?} is not a whole number"),
                );
            };
            match method {
                Method::GET => checkpoint(shared, job, id).await,
                Method::PUT => {
                    let Some(fence) = pre.fence else {
                        return term_required();
                    };
                    let body = match read_body(shared, req).await {
                        Ok(b) => b,
                        Err(r) => return r,
                    };
                    match shared.jobs.add_checkpoint(job, id, &body, fence).await {
                        Ok((v, removed)) => reply::etag(
                            reply::json(
                                StatusCode::CREATED,
                                &json!({ "job": job, "id": id, "version": v, "removed": removed }),
                            ),
                            v,
                        ),
                        Err(e) => value_error(shared, e),
                    }
                }
                _ => reply::method_not_allowed(
                    &["GET", "PUT"],
                    "use GET or PUT on /jobs/{job}/checkpoints/{id}",
                ),
            }
        }
        (Method::GET, ["counter"]) => match shared.jobs.get_counter(job).await {
            Ok(Some((n, v))) => reply::etag(
                reply::json(
                    StatusCode::OK,
                    &json!({ "job": job, "value": n, "version": v }),
                ),
                v,
            ),
            Ok(None) => reply::error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("job {job} has no checkpoint id counter"),
            ),
            Err(e) => value_error(shared, e),
        },
        (Method::PUT, ["counter"]) => {
            let Some(fence) = pre.fence else {
                return term_required();
            };
            let body = match read_body(shared, req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let Some(n) = std::str::from_utf8(&body)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
            else {
                return reply::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the counter body must be a whole number",
                );
            };
            match shared.jobs.put_counter(job, n, pre.expected, fence).await {
                Ok(v) => reply::etag(
                    reply::json(
                        StatusCode::OK,
                        &json!({ "job": job, "value": n, "version": v }),
                    ),
                    v,
                ),
                Err(e) => value_error(shared, e),
            }
        }
        (Method::GET, ["result"]) => match shared.jobs.result(job).await {
            Ok(Some(entry)) => reply::json(
                StatusCode::OK,
                &json!({ "job": job, "state": entry.state, "result": entry.result }),
            ),
            Ok(None) => reply::error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("job {job} has no result (or it was deleted on commit)"),
            ),
            Err(e) => value_error(shared, e),
        },
        (Method::PUT, ["result"]) => {
            let Some(fence) = pre.fence else {
                return term_required();
            };
            let body = match read_body(shared, req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let Ok(result) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return reply::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the job result must be JSON (Flink's JobResult, or anything you want to keep)",
                );
            };
            match shared.lifecycle.finish(job, result, fence).await {
                Ok(ResultOutcome::Clean) => {
                    reply::json(StatusCode::OK, &json!({ "job": job, "state": "clean" }))
                }
                Ok(ResultOutcome::Deleted) => {
                    reply::json(StatusCode::OK, &json!({ "job": job, "state": "deleted" }))
                }
                Ok(ResultOutcome::Pending(why)) => reply::json(
                    StatusCode::ACCEPTED,
                    &json!({ "job": job, "state": "dirty", "message": format!("result recorded; cleanup failed for now and is retried by the leader: {why}") }),
                ),
                Err(e) => value_error(shared, e),
            }
        }
        _ => reply::error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint: {path} (see the README for the job API)"),
        ),
    }
}

/// The methods a job path takes (None: no such path, a 404).
fn methods(rest: &[&str]) -> Option<&'static [&'static str]> {
    match rest {
        ["graph"] | ["counter"] | ["result"] => Some(&["GET", "PUT"]),
        ["checkpoints"] | ["checkpoints", "latest"] => Some(&["GET"]),
        ["checkpoints", _] => Some(&["GET", "PUT"]),
        _ => None,
    }
}

async fn checkpoint(shared: &Shared, job: &str, id: u64) -> Reply {
    match shared.jobs.get_checkpoint(job, id).await {
        Ok(Some((bytes, version))) => {
            let mut r = reply::etag(reply::bytes(StatusCode::OK, bytes), version);
            r.headers_mut().insert("x-ha-checkpoint-id", id.into());
            r
        }
        Ok(None) => reply::error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("job {job} has no checkpoint {id}"),
        ),
        Err(e) => value_error(shared, e),
    }
}

fn bytes_or_404(
    shared: &Shared,
    r: Result<Option<(Vec<u8>, u64)>, crate::storage::ValueError>,
    missing: &str,
) -> Reply {
    match r {
        Ok(Some((bytes, version))) => reply::etag(reply::bytes(StatusCode::OK, bytes), version),
        Ok(None) => reply::error(StatusCode::NOT_FOUND, "not_found", missing.to_string()),
        Err(e) => value_error(shared, e),
    }
}
