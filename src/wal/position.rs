//! [`Position`]: the one definition of a place in the log, a segment and a
//! byte offset in it.
//!
//! The writer publishes committed ends as positions, the reader reads from
//! one, and a [`super::checkpoint::Checkpoint`] stores the one where
//! delivery resumes. A segment's records start after its header, so the
//! first position of a segment comes from here ([`Position::first_in`]),
//! not from the header's size.

use super::segment::HEADER_BYTES;

/// A byte in the log: `offset` bytes into segment number `segment`.
/// Positions order along the log (segment first, then offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The segment's number, also its file name.
    pub segment: u64,
    /// Bytes from the start of the segment file, header included.
    pub offset: u64,
}

impl Position {
    /// Where the first record of `segment` starts, just past its header.
    pub const fn first_in(segment: u64) -> Position {
        Position {
            segment,
            offset: HEADER_BYTES,
        }
    }

    /// This position, or the segment's first record if it points into the
    /// header (a checkpoint written before any record was delivered).
    pub fn at_or_after_header(self) -> Position {
        Position {
            segment: self.segment,
            offset: self.offset.max(HEADER_BYTES),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u64, offset: u64) -> Position {
        Position { segment, offset }
    }

    #[test]
    fn positions_order_by_segment_then_offset() {
        let first = Position::first_in(3);
        assert!(first < at(3, first.offset + 1));
        assert!(at(3, u64::MAX) < Position::first_in(4));
    }

    #[test]
    fn a_position_inside_the_header_moves_to_the_first_record() {
        assert_eq!(at(2, 0).at_or_after_header(), Position::first_in(2));
        let later = at(2, HEADER_BYTES + 9);
        assert_eq!(later.at_or_after_header(), later);
    }
}
