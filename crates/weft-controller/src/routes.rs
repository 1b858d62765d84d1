//! [`Routes`]: the only way a route enters the controller's router. Each route is added
//! with its [`Op`], which goes into the OpenAPI document in the same call, so a route
//! cannot be served without being documented (nor documented without being served).
//! [`Routes::finish`] adds `GET /openapi.json`, which serves that document.
//!
//! Adding a route: one call in the route table (`app::routes`), e.g.
//! `.post(path, handler, Op::admin("createThing", "Create a thing").body(..).created(..))`,
//! with `Model::of::<T>()` for a body type that implements `weft_api::Described`. A new
//! entity kind is one more `resources::routes::<R>` in `resources::all`. A route that
//! answers without a credential (`Op::public`) must also be on the allow-list of the
//! tests (`app::tests::PUBLIC`, `weft-cli/tests/openapi.rs`).

use std::sync::{Arc, OnceLock};

use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;
use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::OpenApi;

use crate::app::Shared;
use crate::auth::Session;
use crate::error::ApiError;
use crate::openapi::{ApiDoc, Model, Op};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// What [`Routes::finish`] returns.
pub struct Finished {
    /// Every route, `GET /openapi.json` included.
    pub router: Router<Shared>,
    /// The document `GET /openapi.json` serves.
    pub document: OpenApi,
    /// Every `(method, path)` added, in order.
    pub added: Vec<(&'static str, String)>,
}

/// Routes and their documentation, added together (see the module doc).
#[derive(Default)]
pub struct Routes {
    router: Router<Shared>,
    doc: ApiDoc,
    added: Vec<(&'static str, String)>,
}

impl Routes {
    /// No routes yet.
    pub fn new() -> Routes {
        Routes::default()
    }

    /// `GET path`.
    pub fn get<H: Handler<T, Shared>, T: 'static>(self, path: &str, handler: H, op: Op) -> Routes {
        self.add(MethodFilter::GET, HttpMethod::Get, "GET", path, handler, op)
    }

    /// `POST path`.
    pub fn post<H: Handler<T, Shared>, T: 'static>(self, path: &str, handler: H, op: Op) -> Routes {
        self.add(
            MethodFilter::POST,
            HttpMethod::Post,
            "POST",
            path,
            handler,
            op,
        )
    }

    /// `PATCH path`.
    pub fn patch<H: Handler<T, Shared>, T: 'static>(
        self,
        path: &str,
        handler: H,
        op: Op,
    ) -> Routes {
        self.add(
            MethodFilter::PATCH,
            HttpMethod::Patch,
            "PATCH",
            path,
            handler,
            op,
        )
    }

    /// `PUT path`.
    pub fn put<H: Handler<T, Shared>, T: 'static>(self, path: &str, handler: H, op: Op) -> Routes {
        self.add(MethodFilter::PUT, HttpMethod::Put, "PUT", path, handler, op)
    }

    /// `DELETE path`.
    pub fn delete<H: Handler<T, Shared>, T: 'static>(
        self,
        path: &str,
        handler: H,
        op: Op,
    ) -> Routes {
        self.add(
            MethodFilter::DELETE,
            HttpMethod::Delete,
            "DELETE",
            path,
            handler,
            op,
        )
    }

    fn add<H: Handler<T, Shared>, T: 'static>(
        mut self,
        filter: MethodFilter,
        method: HttpMethod,
        name: &'static str,
        path: &str,
        handler: H,
        op: Op,
    ) -> Routes {
        self.router = self.router.route(path, on(filter, handler));
        self.doc.add(method, name, path, op);
        self.added.push((name, path.to_owned()));
        self
    }

    /// Adds `GET /openapi.json` and returns the router and the document it serves.
    pub fn finish(self) -> Finished {
        let served: Arc<OnceLock<Result<bytes::Bytes, String>>> = Arc::default();
        let cell = served.clone();
        let handler = move |_session: Session| {
            let cell = cell.clone();
            async move { serve_document(&cell) }
        };
        let routes = self.get(
            OPENAPI_PATH,
            handler,
            Op::session("getOpenApi", "This document")
                .tag("status")
                .describe(
                    "The OpenAPI document of this API, generated from the route table. Any \
                     session may read it (only `authenticate`, `version` and `health-checks` \
                     answer without a credential).",
                )
                .raw(
                    "application/json",
                    "An OpenAPI 3.1 document.",
                    Model::inline(utoipa::openapi::schema::ObjectBuilder::new()),
                ),
        );
        let document = routes.doc.build();
        let _ = served.set(
            document
                .to_json()
                .map(bytes::Bytes::from)
                .map_err(|e| e.to_string()),
        );
        Finished {
            router: routes.router,
            document,
            added: routes.added,
        }
    }
}

fn serve_document(cell: &OnceLock<Result<bytes::Bytes, String>>) -> Response {
    match cell.get() {
        Some(Ok(json)) => ([("content-type", "application/json")], json.clone()).into_response(),
        Some(Err(e)) => ApiError::internal(format!("the API document: {e}")).into_response(),
        None => ApiError::internal("the API document is not built yet").into_response(),
    }
}
