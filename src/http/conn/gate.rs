//! The gate on a usage's head: its API key, checked before the body is
//! parsed or staged (see [`crate::http::auth`]).

use super::Connection;
use crate::http::ApiError;
use crate::http::auth::KeyId;
use crate::http::request::Head;
use crate::http::routes::Action;

impl Connection<'_> {
    /// The key id a usage POST proves, `None` when auth is off or for any
    /// other route; a refusal is the request's 401.
    pub(super) fn authorize(
        &mut self,
        head: &Head<'_>,
        action: Action,
    ) -> Result<Option<KeyId>, ApiError> {
        if action != Action::Ingest {
            return Ok(None);
        }
        Ok(self.app.auth.check(&mut self.keys, head.authorization)?)
    }
}
