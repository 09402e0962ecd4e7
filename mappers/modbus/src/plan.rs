//! Read planning: the properties due in one tick become as few requests as the
//! protocol allows. Per table, addresses are sorted and merged while the gap to
//! the next one is at most `max_gap`, the merged span stays within
//! `max_registers` (or `max_bits` for bit tables) and it touches nothing the
//! device was seen to refuse ([`Holes`]). With planning disabled every property
//! is its own request, as KubeEdge's Go mapper does.
//!
//! [`Holes`] is what a device taught us: address ranges it lacks (a merged read
//! touching them is answered with an exception) and cut points a merged read
//! must not cross. The driver learns them when it splits a refused merged
//! request (see the crate docs); the planner only reads them.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::config::{PlanLimits, Table};

/// One request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Table.
    pub table: Table,
    /// First address.
    pub start: u16,
    /// Registers or bits.
    pub count: u16,
}

/// Requests plus, for each input item, which request holds it and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The requests, in order.
    pub spans: Vec<Span>,
    /// Per input item: (index into `spans`, position of its first word in the span).
    pub slots: Vec<(usize, u16)>,
}

/// Address ranges of one device that merged requests must not touch, per table.
///
/// Each entry is a half-open range of protocol addresses (0-based, registers or
/// bits; `u32` so that a range may end at 65536):
///
/// * `a..b` with `a < b`: a **hole**, addresses the device refuses to read. A
///   merged request `s..e` may not overlap it (`s < b && a < e`).
/// * `x..x`: a **cut**, a point no merged request may cross: no merged request
///   holds both `x - 1` and `x` (the device refused such a request although
///   both sides read fine on their own, e.g. a block boundary or a smaller
///   request-size limit than configured).
///
/// Both use the same test, `s < end && start < e`. A request for a single
/// property is never refused by the planner, whatever it touches: the device
/// answers it, and the error (if any) is that property's own. Entries of a
/// table are kept sorted and disjoint (touching holes are joined, cuts inside or
/// at the edge of a hole are dropped), at most [`Holes::MAX_RANGES`] per device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holes {
    tables: BTreeMap<Table, Vec<(u32, u32)>>,
}

impl Holes {
    /// Most entries kept per device (all tables together); beyond it nothing
    /// more is learned, so a device with a pathological map cannot grow memory.
    pub const MAX_RANGES: usize = 1024;

    /// Knows nothing: every merge the limits allow is tried.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when nothing has been learned.
    pub fn is_empty(&self) -> bool {
        self.tables.values().all(Vec::is_empty)
    }

    /// Entries learned so far, all tables.
    pub fn len(&self) -> usize {
        self.tables.values().map(Vec::len).sum()
    }

    /// The entries of `table`, sorted (`x..x` is a cut).
    pub fn ranges(&self, table: Table) -> Vec<Range<u32>> {
        self.tables
            .get(&table)
            .map(|v| v.iter().map(|&(a, b)| a..b).collect())
            .unwrap_or_default()
    }

    /// Records that merged requests must not touch `start..end` of `table`
    /// (`start == end`: must not cross `start`). Returns whether anything
    /// changed: false when it was known already or [`Self::MAX_RANGES`] is
    /// reached. `end` is clamped to 65536 and `start` to `end`.
    pub fn learn(&mut self, table: Table, start: u32, end: u32) -> bool {
        let end = end.min(0x1_0000);
        let start = start.min(end);
        let full = self.len() >= Self::MAX_RANGES;
        let v = self.tables.entry(table).or_default();
        if start == end {
            // A cut is subsumed by a hole it touches (a request crossing it
            // overlaps the hole), and by an equal cut.
            if full || v.iter().any(|&(a, b)| a <= start && start <= b) {
                return false;
            }
            let at = v.partition_point(|&(a, _)| a < start);
            v.insert(at, (start, end));
            return true;
        }
        if v.iter().any(|&(a, b)| a < b && a <= start && end <= b) {
            return false; // inside a known hole
        }
        let touches = |&(a, b): &(u32, u32)| a <= end && start <= b;
        if full && !v.iter().any(touches) {
            return false;
        }
        // Join every entry overlapping or touching start..end (cuts at its edges
        // or inside included) into one hole.
        let (mut lo, mut hi) = (start, end);
        v.retain(|e| {
            if touches(e) {
                lo = lo.min(e.0);
                hi = hi.max(e.1);
                false
            } else {
                true
            }
        });
        let at = v.partition_point(|&(a, _)| a < lo);
        v.insert(at, (lo, hi));
        true
    }

    /// Whether a merged request for `start..end` of `table` would touch a hole
    /// or cross a cut.
    pub fn conflicts(&self, table: Table, start: u32, end: u32) -> bool {
        let Some(v) = self.tables.get(&table) else {
            return false;
        };
        // Entries are disjoint and sorted, so their ends are sorted too: the first
        // entry ending after `start` is the only candidate.
        let i = v.partition_point(|&(_, b)| b <= start);
        v.get(i).is_some_and(|&(a, _)| a < end)
    }
}

/// Plans reads of `items` = (table, first address, count). Items larger than a
/// request may hold must have been refused before (see `ModbusAddress::prepare`).
pub fn plan(items: &[(Table, u16, u16)], limits: PlanLimits) -> Plan {
    plan_around(items, limits, &Holes::new())
}

/// [`plan`], with merges that would touch anything in `holes` left out: such an
/// item starts a request of its own. With no holes the result is exactly
/// [`plan`]'s.
pub fn plan_around(items: &[(Table, u16, u16)], limits: PlanLimits, holes: &Holes) -> Plan {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (items[i].0, items[i].1, items[i].2));
    let mut spans: Vec<Span> = Vec::new();
    let mut slots = vec![(0usize, 0u16); items.len()];
    for i in order {
        let (table, start, count) = items[i];
        let max = if table.is_bits() {
            limits.max_bits
        } else {
            limits.max_registers
        };
        let end = u32::from(start) + u32::from(count);
        if limits.enabled
            && let Some(last) = spans.last_mut()
            && last.table == table
        {
            let last_end = u32::from(last.start) + u32::from(last.count);
            let gap = u32::from(start).saturating_sub(last_end);
            let merged_end = last_end.max(end);
            if gap <= u32::from(limits.max_gap)
                && merged_end - u32::from(last.start) <= u32::from(max)
                && !holes.conflicts(table, u32::from(last.start), merged_end)
            {
                last.count = (merged_end - u32::from(last.start)) as u16;
                let pos = start - last.start;
                slots[i] = (spans.len() - 1, pos);
                continue;
            }
        }
        spans.push(Span {
            table,
            start,
            count,
        });
        slots[i] = (spans.len() - 1, 0);
    }
    Plan { spans, slots }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON: PlanLimits = PlanLimits {
        max_gap: 4,
        max_registers: 125,
        max_bits: 2000,
        enabled: true,
    };

    #[test]
    fn contiguous_properties_cost_one_request() {
        let items: Vec<(Table, u16, u16)> = (0..60).map(|i| (Table::Holding, i * 2, 2)).collect();
        let p = plan(&items, ON);
        assert_eq!(
            p.spans,
            vec![Span {
                table: Table::Holding,
                start: 0,
                count: 120
            }]
        );
        assert_eq!(p.slots[7], (0, 14));
    }

    #[test]
    fn gaps_above_the_allowance_split() {
        let items = [
            (Table::Holding, 0, 1),
            (Table::Holding, 5, 1),
            (Table::Holding, 10, 1),
        ];
        // gap 4 allowed: 0..1 + 5..6 merge (gap 4), 10 has gap 4 too.
        assert_eq!(plan(&items, ON).spans.len(), 1);
        let tight = PlanLimits { max_gap: 3, ..ON };
        assert_eq!(plan(&items, tight).spans.len(), 3);
    }

    #[test]
    fn the_125_register_limit_is_respected() {
        let items: Vec<(Table, u16, u16)> = (0..300).map(|i| (Table::Input, i, 1)).collect();
        let p = plan(&items, ON);
        assert_eq!(
            p.spans.iter().map(|s| s.count).collect::<Vec<_>>(),
            vec![125, 125, 50]
        );
        assert!(p.spans.iter().all(|s| s.count <= 125));
        // Each item is found where the plan says.
        for (i, &(span, pos)) in p.slots.iter().enumerate() {
            assert_eq!(p.spans[span].start + pos, i as u16);
        }
        let small = PlanLimits {
            max_registers: 10,
            ..ON
        };
        assert_eq!(plan(&items, small).spans.len(), 30);
    }

    #[test]
    fn tables_are_never_mixed_and_bits_use_their_own_limit() {
        let items = [
            (Table::Coil, 0, 1),
            (Table::Holding, 0, 1),
            (Table::Coil, 1, 1),
            (Table::DiscreteInput, 0, 1),
        ];
        let p = plan(&items, ON);
        assert_eq!(p.spans.len(), 3);
        let bits: Vec<(Table, u16, u16)> = (0..2500).map(|i| (Table::Coil, i, 1)).collect();
        assert_eq!(
            plan(&bits, ON)
                .spans
                .iter()
                .map(|s| s.count)
                .collect::<Vec<_>>(),
            vec![2000, 500]
        );
    }

    #[test]
    fn overlapping_and_duplicate_items_share_words() {
        let items = [
            (Table::Holding, 10, 4),
            (Table::Holding, 12, 2),
            (Table::Holding, 10, 4),
        ];
        let p = plan(&items, ON);
        assert_eq!(
            p.spans,
            vec![Span {
                table: Table::Holding,
                start: 10,
                count: 4
            }]
        );
        assert_eq!(p.slots, vec![(0, 0), (0, 2), (0, 0)]);
    }

    #[test]
    fn planning_off_is_one_request_per_property() {
        let items: Vec<(Table, u16, u16)> = (0..10).map(|i| (Table::Holding, i, 1)).collect();
        assert_eq!(
            plan(
                &items,
                PlanLimits {
                    enabled: false,
                    ..ON
                }
            )
            .spans
            .len(),
            10
        );
    }
    fn holding(v: &[(u16, u16)]) -> Vec<(Table, u16, u16)> {
        v.iter().map(|&(a, n)| (Table::Holding, a, n)).collect()
    }

    #[test]
    fn no_holes_plans_exactly_as_before() {
        let items: Vec<(Table, u16, u16)> = (0..300).map(|i| (Table::Input, i * 3, 2)).collect();
        assert_eq!(plan_around(&items, ON, &Holes::new()), plan(&items, ON));
    }

    #[test]
    fn a_learned_hole_between_properties_splits_the_request() {
        // The field case: 11174, 11176, 11177 exist, 11175 does not.
        let items = holding(&[(11174, 1), (11176, 1), (11177, 1)]);
        assert_eq!(plan(&items, ON).spans.len(), 1);
        let mut holes = Holes::new();
        assert!(holes.learn(Table::Holding, 11175, 11176));
        let p = plan_around(&items, ON, &holes);
        assert_eq!(
            p.spans,
            vec![
                Span {
                    table: Table::Holding,
                    start: 11174,
                    count: 1
                },
                Span {
                    table: Table::Holding,
                    start: 11176,
                    count: 2
                },
            ]
        );
        assert_eq!(p.slots, vec![(0, 0), (1, 0), (1, 1)]);
        // Other tables are not affected by a holding-register hole.
        let coils: Vec<_> = items.iter().map(|&(_, a, n)| (Table::Coil, a, n)).collect();
        assert_eq!(plan_around(&coils, ON, &holes).spans.len(), 1);
    }

    #[test]
    fn a_property_inside_a_hole_is_read_alone() {
        // 11175 itself is asked for and unreadable: it gets its own request and
        // nothing merges with it; its neighbours merge only where no hole lies.
        let items = holding(&[(11174, 1), (11175, 1), (11176, 1), (11177, 1)]);
        let mut holes = Holes::new();
        holes.learn(Table::Holding, 11175, 11176);
        let p = plan_around(&items, ON, &holes);
        assert_eq!(
            p.spans
                .iter()
                .map(|s| (s.start, s.count))
                .collect::<Vec<_>>(),
            vec![(11174, 1), (11175, 1), (11176, 2)]
        );
        // A multi-register value reaching into the hole (11174..11176) is alone too.
        let wide = holding(&[(11173, 1), (11174, 2), (11176, 1)]);
        let p = plan_around(&wide, ON, &holes);
        assert_eq!(
            p.spans
                .iter()
                .map(|s| (s.start, s.count))
                .collect::<Vec<_>>(),
            vec![(11173, 1), (11174, 2), (11176, 1)]
        );
    }

    #[test]
    fn holes_at_the_edges_of_the_map() {
        // A device of 100 registers: 98 and 99 exist, an int32 at 99 runs past
        // the end (learned as 100..101).
        let items = holding(&[(98, 1), (99, 1), (99, 2)]);
        let mut holes = Holes::new();
        holes.learn(Table::Holding, 100, 101);
        let p = plan_around(&items, ON, &holes);
        assert_eq!(
            p.spans
                .iter()
                .map(|s| (s.start, s.count))
                .collect::<Vec<_>>(),
            vec![(98, 2), (99, 2)]
        );
        // A gap filler over the end of one block (50..60 missing) is not planned.
        let blocks = holding(&[(48, 1), (62, 1)]);
        holes.learn(Table::Holding, 49, 62);
        assert_eq!(plan_around(&blocks, ON, &holes).spans.len(), 2);
        // The last address of the protocol.
        let mut top = Holes::new();
        top.learn(Table::Holding, 65535, 70000);
        assert_eq!(top.ranges(Table::Holding), vec![65535..65536]);
        let items = holding(&[(65533, 1), (65535, 1)]);
        assert_eq!(plan_around(&items, ON, &top).spans.len(), 2);
    }

    #[test]
    fn bit_tables_learn_and_plan_the_same_way() {
        let items = [
            (Table::Coil, 2, 1),
            (Table::Coil, 4, 1),
            (Table::DiscreteInput, 4, 1),
            (Table::DiscreteInput, 7, 1),
        ];
        let mut holes = Holes::new();
        holes.learn(Table::Coil, 3, 4);
        holes.learn(Table::DiscreteInput, 5, 7);
        let p = plan_around(&items, ON, &holes);
        assert_eq!(p.spans.len(), 4);
        assert_eq!(plan(&items, ON).spans.len(), 2);
    }

    #[test]
    fn a_cut_keeps_requests_from_crossing_a_point() {
        let items = holding(&[(0, 50), (50, 50), (100, 1)]);
        assert_eq!(plan(&items, ON).spans.len(), 1);
        let mut holes = Holes::new();
        assert!(holes.learn(Table::Holding, 50, 50));
        let p = plan_around(&items, ON, &holes);
        assert_eq!(
            p.spans
                .iter()
                .map(|s| (s.start, s.count))
                .collect::<Vec<_>>(),
            vec![(0, 50), (50, 51)]
        );
        // A request may start or end at the cut, only not cross it.
        assert!(!holes.conflicts(Table::Holding, 0, 50));
        assert!(!holes.conflicts(Table::Holding, 50, 60));
        assert!(holes.conflicts(Table::Holding, 49, 51));
    }

    #[test]
    fn learning_joins_and_bounds_what_it_keeps() {
        let mut h = Holes::new();
        assert!(h.is_empty());
        assert!(h.learn(Table::Holding, 10, 12));
        assert!(!h.learn(Table::Holding, 10, 11), "inside a known hole");
        assert!(h.learn(Table::Holding, 12, 14), "touching: joined");
        assert_eq!(h.ranges(Table::Holding), vec![10..14]);
        assert!(
            !h.learn(Table::Holding, 14, 14),
            "a cut at a hole's edge adds nothing"
        );
        assert!(
            !h.learn(Table::Holding, 11, 11),
            "a cut inside a hole adds nothing"
        );
        assert!(h.learn(Table::Holding, 20, 20));
        assert!(!h.learn(Table::Holding, 20, 20));
        assert!(h.learn(Table::Holding, 5, 6));
        assert_eq!(h.ranges(Table::Holding), vec![5..6, 10..14, 20..20]);
        // A wider hole swallows what it covers, cuts included.
        assert!(h.learn(Table::Holding, 6, 25));
        assert_eq!(h.ranges(Table::Holding), vec![5..25]);
        assert_eq!(h.len(), 1);
        assert!(h.conflicts(Table::Holding, 0, 6));
        assert!(!h.conflicts(Table::Holding, 0, 5));
        assert!(!h.conflicts(Table::Holding, 25, 30));
        assert!(!h.conflicts(Table::Input, 0, 100));
        let mut many = Holes::new();
        for i in 0..2000u32 {
            many.learn(Table::Coil, i * 3, i * 3 + 1);
        }
        assert_eq!(many.len(), Holes::MAX_RANGES);
        // New entries are not kept when full; joining still works.
        assert!(!many.learn(Table::Input, 0, 1));
        assert!(many.learn(Table::Coil, 0, 4));
        assert_eq!(many.len(), Holes::MAX_RANGES - 1);
    }
}
