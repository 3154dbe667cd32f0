//! Authentication and authorization at the HTTP edge: every routed request is matched to
//! the permission its path needs, its credentials checked, its tenant chosen, and an
//! [`Access`] (tenant + enforced matchers) put into the request for the handlers.
//! Failures answer 401 with `WWW-Authenticate` or 403, in the Prometheus error envelope
//! on API paths.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::error::ApiError;
use super::routes::Need;
use crate::auth::{Access, AuthError};

/// Middleware: authenticates, authorizes and scopes the request.
pub async fn authorize(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let need = match super::routes::need(&path) {
        Some(Need::Open) => return next.run(req).await,
        Some(Need::Needs(p)) => p,
        None => {
            // A route that matched but has no declared permission: refuse, never guess.
            tracing::error!(path, "route without a declared permission refused");
            return refuse(&path, AuthError::Forbidden("undeclared"), false);
        }
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Without authentication the header is a tenant only when multi-tenancy is on:
    // otherwise anyone could open tenants (each with its own WAL, head and index).
    let tenant_header = req
        .headers()
        .get(&st.tenant_header)
        .and_then(|v| v.to_str().ok())
        .filter(|_| st.auth.enabled() || st.multi_tenant);
    let checked = st.auth.authenticate(authorization).and_then(|p| {
        if !p.may(need) {
            return Err(AuthError::Forbidden(need.as_str()));
        }
        let tenant = p.tenant_for(tenant_header)?;
        Ok((p, tenant))
    });
    let (principal, tenant) = match checked {
        Ok(x) => x,
        Err(e) => {
            // Scripts (the query page) ask for their own sign-in form rather than the
            // browser's basic-auth dialog, as Spring and others answer XHR.
            let script = req
                .headers()
                .get("x-requested-with")
                .is_some_and(|v| v == "XMLHttpRequest");
            return refuse(&path, e, script);
        }
    };
    tracing::Span::current().record("principal", principal.name.as_str());
    req.extensions_mut().insert(Access {
        tenant,
        matchers: std::sync::Arc::new(principal.matchers),
    });
    let mut resp = next.run(req).await;
    if st.auth.enabled() {
        // Answers depend on who asked: no shared cache may keep them.
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// 401 or 403. A 401 offers both schemes, except basic to scripts (`script`), which
/// would make the browser show its own dialog.
fn refuse(path: &str, e: AuthError, script: bool) -> Response {
    super::metrics::METRICS
        .auth_failures
        .with_label_values(&[e.reason()])
        .inc();
    tracing::info!(path, reason = e.reason(), "request refused: {e}");
    let err = ApiError::of(&e, None);
    let status = err.status();
    let mut resp = err.respond(super::routes::error_format(path));
    if status == StatusCode::UNAUTHORIZED {
        let h = resp.headers_mut();
        h.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"quiver\""),
        );
        if !script {
            h.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"quiver\", charset=\"UTF-8\""),
            );
        }
    }
    resp
}
