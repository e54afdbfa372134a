//! [`Id`]: the one definition of a record's id, its bit layout and its
//! ranges.
//!
//! An id is what a 201 returns and what MongoDB stores as `_id`. It packs
//! the `--node-id` that handed it out above that node's own sequence
//! number:
//!
//! ```text
//!  63      53 52          43 42                                   0
//! ┌──────────┬──────────────┬──────────────────────────────────────┐
//! │   zero   │  node (10)   │               seq (43)               │
//! └──────────┴──────────────┴──────────────────────────────────────┘
//! ```
//!
//! The widths are [`NODE_ID_BITS`] and [`SEQ_BITS`]; together they stay
//! within 53 bits, so an id is exact in a JavaScript number. Nodes never
//! share an id, and within a node ids grow along the log (see
//! [`crate::wal`], invariant 2). Nothing outside this file shifts or masks
//! an id: the raw number crosses into JSON, BSON and the record format only
//! through [`Id::raw`] and back through [`Id::from_raw`].

use std::fmt;
use std::ops::Range;

use crate::limits::{NODE_ID_BITS, NODE_ID_MAX, SEQ_BITS, SEQ_MAX};

/// A record's id: `node << SEQ_BITS | seq`. The default is [`Id::MIN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id(u64);

impl Id {
    /// Below every id a node hands out (seqs start at 1): "no id yet".
    pub const MIN: Id = Id(0);

    /// The id of `seq` on `node`. Both must fit their bits; the callers
    /// check the seq against [`SEQ_MAX`] and config bounds the node.
    pub const fn new(node: u32, seq: u64) -> Id {
        assert!(
            node <= NODE_ID_MAX && seq <= SEQ_MAX,
            "id fields out of range"
        );
        Id(((node as u64) << SEQ_BITS) | seq)
    }

    /// An id read from the record format or from MongoDB.
    pub const fn from_raw(raw: u64) -> Id {
        Id(raw)
    }

    /// The number itself, for the record format, JSON and BSON.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The node that handed this id out.
    pub const fn node(self) -> u32 {
        (self.0 >> SEQ_BITS) as u32
    }

    /// The node's own sequence number.
    pub const fn seq(self) -> u64 {
        self.0 & SEQ_MAX
    }

    /// The id `n` places later on the same node.
    pub fn plus(self, n: u64) -> Id {
        debug_assert!(self.seq() + n <= SEQ_MAX, "an id past its node's range");
        Id(self.0 + n)
    }

    /// Every id `node` can hand out, as a half-open range (the MongoDB
    /// query for a node's highest id).
    pub const fn range_of(node: u32) -> Range<Id> {
        Id::new(node, 0)..Id((node as u64 + 1) << SEQ_BITS)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const _: () = assert!(
    NODE_ID_BITS + SEQ_BITS <= 63,
    "an id must fit an i64 for BSON"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_gives_back_its_node_and_seq() {
        let id = Id::new(5, 1234);
        assert_eq!((id.node(), id.seq()), (5, 1234));
        assert_eq!(Id::from_raw(id.raw()), id);
        let top = Id::new(NODE_ID_MAX, SEQ_MAX);
        assert_eq!((top.node(), top.seq()), (NODE_ID_MAX, SEQ_MAX));
    }

    #[test]
    fn a_nodes_range_holds_its_ids_and_no_neighbours() {
        let r = Id::range_of(7);
        assert!(r.contains(&Id::new(7, 0)) && r.contains(&Id::new(7, SEQ_MAX)));
        assert!(!r.contains(&Id::new(6, SEQ_MAX)) && !r.contains(&Id::new(8, 0)));
        let last = Id::range_of(NODE_ID_MAX);
        assert!(last.contains(&Id::new(NODE_ID_MAX, SEQ_MAX)));
    }

    #[test]
    fn ids_order_by_node_then_seq() {
        assert!(Id::new(1, 9) < Id::new(1, 10));
        assert!(Id::new(1, SEQ_MAX) < Id::new(2, 1));
        assert_eq!(Id::new(3, 1).plus(4), Id::new(3, 5));
    }
}
