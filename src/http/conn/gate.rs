//! The gate on a usage's head: its API key, checked before the body is
//! parsed or staged, and the key's rate limit (see [`crate::http::auth`]).

use super::Connection;
use crate::http::ApiError;
use crate::http::auth::Verified;
use crate::http::request::Head;
use crate::http::routes::Action;

/// Whether a check takes from the key's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// The whole request is here: take its usage from the bucket.
    Now,
    /// Before `100 Continue`: check the key only; the request is admitted
    /// once its body is in.
    Later,
}

impl Connection<'_> {
    /// The key a usage POST proves, `None` when auth is off or for any
    /// other route; a refusal is the request's 401 or 429.
    pub(super) fn authorize(
        &mut self,
        head: &Head<'_>,
        action: Action,
        admit: Admit,
    ) -> Result<Option<Verified>, ApiError> {
        if action != Action::Ingest {
            return Ok(None);
        }
        let auth = &self.app.auth;
        let stream = &self.stream;
        let peer = || stream.peer_addr().ok().map(|a| a.ip());
        let Some(who) = auth.check(&mut self.keys, head.authorization, peer)? else {
            return Ok(None);
        };
        if admit == Admit::Now {
            // One usage per POST; a batch takes its count in `charge`.
            auth.admit(&self.keys, &who, 1)?;
        }
        Ok(Some(who))
    }

    /// Takes `usages` from the bucket of the key that sent them (a batch,
    /// checked with [`Admit::Later`]); nothing when auth is off.
    pub(super) fn charge(&self, who: Option<&Verified>, usages: u64) -> Result<(), ApiError> {
        match who {
            Some(who) => Ok(self.app.auth.admit(&self.keys, who, usages)?),
            None => Ok(()),
        }
    }
}
