//! The end of a round: its responses written within one deadline, the
//! buffers that grew for it given back, and, when the connection ends,
//! the close (after draining what the client still sends).

use std::io;
use std::mem;
use std::time::Duration;

use super::Connection;
use crate::http::socket;
use crate::ingest::UsageParser;
use crate::limits::{STAGED_BYTES_INITIAL, WRITE_BUF_BYTES_INITIAL};

impl Connection<'_> {
    /// Writes the round's responses, within the write deadline.
    pub(super) fn write_out(&mut self) -> io::Result<()> {
        let deadline = Duration::from_millis(self.app.config.body_read_timeout_ms);
        let written = socket::write_within(&mut self.stream, &self.wbuf, deadline);
        self.wbuf.clear();
        written
    }

    /// After a round: buffers that grew for it go back to their initial
    /// size, so what a connection holds between rounds stays small.
    pub(super) fn give_back_buffers(&mut self) {
        socket::give_back(&mut self.wbuf, WRITE_BUF_BYTES_INITIAL);
        socket::give_back(&mut self.scratch, 0);
        if mem::take(&mut self.parser_grew) {
            self.parser = UsageParser::new();
        }
        if self.staged_conns.is_empty() {
            socket::give_back(&mut self.staged, STAGED_BYTES_INITIAL);
        }
    }

    /// Ends the connection. Bytes the client sent that were not handled
    /// (the rest of a refused body, requests after a close) are read and
    /// dropped first, for a bounded time: closing a socket with unread
    /// bytes makes the kernel send a reset, and a reset can destroy the
    /// response before the client reads it (RFC 9112 §9.6).
    pub(super) fn close(&mut self) -> io::Result<()> {
        self.stream.close_write()?;
        if self.rpos != self.rend {
            socket::drain_unread(&mut self.stream, &mut self.rbuf);
        }
        Ok(())
    }
}
