//! Acceptance filters with the semantics of SocketCAN's `CAN_RAW_FILTER`.
//!
//! A filter matches a received frame when `(frame_can_id & mask) == (filter_id & mask)`, where both ids are
//! Linux `can_id` words including the EFF and RTR flag bits; an inverted filter (`CAN_INV_FILTER`) matches
//! the opposite. A socket with several filters accepts a frame matching any of them; no filters accept all.
//! Error frames are not subject to id filters (SocketCAN uses a separate error mask); they are delivered
//! only when the socket asked for them.
//!
//! Details follow the kernel (`net/can/af_can.c`) so that a filter list behaves the same on the userspace
//! hub and on a kernel socket:
//! * `CAN_INV_FILTER` (bit 29) in [`Filter::id`] also marks a filter inverted, as in `struct can_filter`;
//!   bit 29 never takes part in the comparison (it is the error flag, and error frames are not matched).
//! * A mask containing `CAN_EFF_FLAG` on a filter whose id has no `CAN_EFF_FLAG` ("standard ids only")
//!   compares only the 11 id bits plus the EFF/RTR flag bits of the mask, as the kernel normalises it.
//! * A frame's `can_id` word is [`Frame::linux_can_id`]: the 11- or 29-bit id, `CAN_EFF_FLAG` for
//!   extended ids and `CAN_RTR_FLAG` for remote frames (CAN FD frames never carry RTR).

use crate::frame::{Frame, CAN_EFF_FLAG, CAN_RTR_FLAG, SFF_MAX};

/// Linux `CAN_INV_FILTER`.
pub const CAN_INV_FILTER: u32 = 0x2000_0000;

/// One acceptance filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Linux `can_id` (may include `CAN_EFF_FLAG` / `CAN_RTR_FLAG`).
    pub id: u32,
    /// Linux `can_mask`.
    pub mask: u32,
    /// Match frames that do *not* match id/mask.
    pub inverted: bool,
}

impl Filter {
    pub fn new(id: u32, mask: u32) -> Self {
        Filter {
            id,
            mask,
            inverted: false,
        }
    }

    pub fn inverted(id: u32, mask: u32) -> Self {
        Filter {
            id,
            mask,
            inverted: true,
        }
    }

    /// Whether this single filter accepts `frame` (error frames are never matched by id filters).
    pub fn matches(&self, frame: &Frame) -> bool {
        if frame.is_error() {
            return false;
        }
        let (id, mask, inverted) = self.normalized();
        let hit = frame.linux_can_id() & mask == id;
        hit != inverted
    }

    /// Whether this filter is inverted, by the flag or by `CAN_INV_FILTER` in the id.
    pub fn is_inverted(&self) -> bool {
        self.inverted || self.id & CAN_INV_FILTER != 0
    }

    /// The (id & mask, mask, inverted) triple the kernel compares frames against.
    fn normalized(&self) -> (u32, u32, bool) {
        let mut mask = self.mask & !CAN_INV_FILTER;
        let id = self.id & !CAN_INV_FILTER;
        if mask & CAN_EFF_FLAG != 0 && id & CAN_EFF_FLAG == 0 {
            mask &= SFF_MAX | CAN_EFF_FLAG | CAN_RTR_FLAG;
        }
        (id & mask, mask, self.is_inverted())
    }

    /// Whether a filter list accepts `frame` (empty list: accept everything except error frames unless
    /// `want_errors`).
    pub fn accepts(filters: &[Filter], frame: &Frame, want_errors: bool) -> bool {
        if frame.is_error() {
            return want_errors;
        }
        filters.is_empty() || filters.iter().any(|f| f.matches(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{CanId, FdFlags, CAN_ERR_FLAG, EFF_MAX};

    fn data(text: &str) -> Frame {
        text.parse().unwrap()
    }

    #[test]
    fn exact_standard_id_match() {
        let f = Filter::new(0x123, 0x7FF);
        assert!(f.matches(&data("123#")));
        assert!(!f.matches(&data("124#")));
        // Without EFF in the mask, an extended frame with the same low bits matches too (kernel behaviour).
        assert!(f.matches(&data("00000123#")));
        // Remote frames match unless the mask includes the RTR flag.
        assert!(f.matches(&data("123#R")));
    }

    #[test]
    fn eff_flag_in_mask_separates_standard_and_extended() {
        let sff_only = Filter::new(0x123, CAN_EFF_FLAG | 0x7FF);
        assert!(sff_only.matches(&data("123#")));
        assert!(!sff_only.matches(&data("00000123#")));
        let eff_only = Filter::new(CAN_EFF_FLAG | 0x123, CAN_EFF_FLAG | EFF_MAX);
        assert!(eff_only.matches(&data("00000123#")));
        assert!(!eff_only.matches(&data("123#")));
        assert!(!eff_only.matches(&data("00000124#")));
        // Standard-only filter whose id has stray high bits: the kernel keeps only the 11 id bits.
        let stray = Filter::new(0x1123, CAN_EFF_FLAG | EFF_MAX);
        assert!(stray.matches(&data("123#")));
        assert!(!stray.matches(&data("00001123#")));
    }

    #[test]
    fn rtr_flag_in_mask() {
        let no_rtr = Filter::new(0x123, CAN_RTR_FLAG | 0x7FF);
        assert!(no_rtr.matches(&data("123#11")));
        assert!(!no_rtr.matches(&data("123#R")));
        let only_rtr = Filter::new(CAN_RTR_FLAG | 0x123, CAN_RTR_FLAG | 0x7FF);
        assert!(only_rtr.matches(&data("123#R2")));
        assert!(!only_rtr.matches(&data("123#11")));
        // FD frames never carry RTR.
        let fd = Frame::fd(CanId::Standard(0x123), &[1], FdFlags::default()).unwrap();
        assert!(no_rtr.matches(&fd));
        assert!(!only_rtr.matches(&fd));
    }

    #[test]
    fn masks_select_ranges() {
        let block = Filter::new(0x100, 0x700);
        assert!(block.matches(&data("100#")));
        assert!(block.matches(&data("1FF#")));
        assert!(!block.matches(&data("200#")));
        let all = Filter::new(0, 0);
        assert!(all.matches(&data("7FF#")));
        assert!(all.matches(&data("1FFFFFFF#R")));
    }

    #[test]
    fn inverted_filters() {
        let not_123 = Filter::inverted(0x123, 0x7FF);
        assert!(!not_123.matches(&data("123#")));
        assert!(not_123.matches(&data("124#")));
        let by_flag = Filter::new(0x123 | CAN_INV_FILTER, 0x7FF);
        assert!(by_flag.is_inverted());
        assert!(!by_flag.matches(&data("123#")));
        assert!(by_flag.matches(&data("456#")));
        // Inverting "extended frames only" yields "standard frames only".
        let not_eff = Filter::inverted(CAN_EFF_FLAG, CAN_EFF_FLAG);
        assert!(not_eff.matches(&data("123#")));
        assert!(!not_eff.matches(&data("00000123#")));
    }

    #[test]
    fn filter_lists_and_error_frames() {
        let err = Frame::error(0x4, [0; 8]).unwrap();
        assert_eq!(err.linux_can_id() & CAN_ERR_FLAG, CAN_ERR_FLAG);
        let everything = Filter::new(0, 0);
        assert!(!everything.matches(&err));
        assert!(!Filter::inverted(0x123, 0x7FF).matches(&err));
        assert!(!Filter::accepts(&[], &err, false));
        assert!(Filter::accepts(&[], &err, true));
        assert!(Filter::accepts(&[Filter::new(0x1, 0x7FF)], &err, true));

        assert!(Filter::accepts(&[], &data("123#"), false));
        let list = [Filter::new(0x100, 0x7FF), Filter::new(0x200, 0x7FF)];
        assert!(Filter::accepts(&list, &data("100#"), false));
        assert!(Filter::accepts(&list, &data("200#"), false));
        assert!(!Filter::accepts(&list, &data("300#"), false));
    }
}
