//! Read planning: the properties due in one tick become as few requests as the
//! protocol allows. Per table, addresses are sorted and merged while the gap to
//! the next one is at most `max_gap` and the merged span stays within
//! `max_registers` (or `max_bits` for bit tables). With planning disabled every
//! property is its own request, as KubeEdge's Go mapper does.

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

/// Plans reads of `items` = (table, first address, count). Items larger than a
/// request may hold must have been refused before (see `ModbusAddress::prepare`).
pub fn plan(items: &[(Table, u16, u16)], limits: PlanLimits) -> Plan {
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
}
