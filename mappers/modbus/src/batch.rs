//! One tick of reads: the plan's requests and, when the device refuses a merged
//! request because of the addresses it asked for, the split that finds out
//! which properties it can serve.
//!
//! A request is *merged* when it serves properties with different address
//! ranges (and then possibly addresses no property asked for, between them).
//! When the device answers one with exception 02 (IllegalDataAddress), 03
//! (IllegalDataValue) or 04 (ServerDeviceFailure), its properties, sorted by
//! address, are cut in two and each part is read with a request covering just
//! that part; a refused part is cut again, down to requests for a single
//! address range. The cut goes where the widest run of addresses no property
//! asked for begins (where a hole most likely is: the field case 11174, 11176,
//! 11177 with 11175 missing costs 1 + 2 requests), or in the middle when the
//! properties are contiguous. Every property the device serves on its own gets
//! its value, and an exception is charged only to the properties refused on
//! their own. Whatever the cuts, a refused request of `m` properties costs at
//! most `2m − 1` requests in all (a binary tree with `m` leaves), twice what
//! reading them one by one would, even when the device refuses everything.
//!
//! Other exceptions (01 IllegalFunction, 05/06 Acknowledge/Busy, 0A/0B gateway
//! path or target, unknown codes) describe the function or the device's state,
//! not the addresses: splitting cannot help, so they are charged to every
//! property of the request, as are timeouts and transport errors, which also
//! fail the rest of the tick without waiting.
//!
//! What a split shows is remembered in the driver's
//! [`Holes`](crate::plan::Holes), so that the following ticks plan around it: a
//! range refused on its own (less any address read fine in the same tick), the
//! addresses between two parts that both read fine while their merged request
//! was refused, or a cut where two such parts touch or overlap. Nothing is
//! learned from a tick in which no request returned data: a device refusing
//! everything says nothing about its map.

use std::future::Future;
use std::pin::Pin;

use mapper_sdk::{DriverError, DriverResult, Value};

use crate::config::{ModbusAddress, Table};
use crate::plan::Plan;
use crate::{ModbusDevice, lock};

/// Whether a merged request refused with `e` is worth splitting: exceptions 02,
/// 03 and 04 can depend on which addresses were asked for.
fn splits(e: &DriverError) -> bool {
    matches!(e, DriverError::Device(f) if matches!(f.code, Some(2..=4)))
}

/// One property of a request: its index in the tick and its address range.
#[derive(Debug, Clone, Copy)]
struct Member {
    index: usize,
    start: u16,
    count: u16,
}

impl Member {
    fn range(&self) -> (u16, u16) {
        (self.start, self.count)
    }

    fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// The addresses a request for `group` covers, `start..end`.
fn cover(group: &[Member]) -> (u32, u32) {
    let start = group.iter().map(|m| u32::from(m.start)).min().unwrap_or(0);
    let end = group.iter().map(Member::end).max().unwrap_or(start);
    (start, end)
}

/// Two parts of a group sorted by range, cut where the widest run of addresses
/// no member asked for begins (the likeliest place of a hole: one split then
/// tells both sides are fine), the cut nearest the middle among equals, so a
/// group without gaps is halved by count. Members asking for the same range
/// stay together; `None` when there is only one range.
fn halves(group: &[Member]) -> Option<(&[Member], &[Member])> {
    let mut best: Option<(u32, usize, usize)> = None; // (gap, distance from the middle, index)
    let mut end = 0u32;
    for i in 1..group.len() {
        end = end.max(group[i - 1].end());
        if group[i].range() == group[i - 1].range() {
            continue;
        }
        let gap = u32::from(group[i].start).saturating_sub(end);
        let off_middle = i.abs_diff(group.len() / 2);
        let better = best.is_none_or(|(g, d, _)| gap > g || (gap == g && off_middle < d));
        if better {
            best = Some((gap, off_middle, i));
        }
    }
    best.map(|(_, _, i)| group.split_at(i))
}

/// `start..end` less every range of `table` in `read`.
fn unread(table: Table, start: u32, end: u32, read: &[(Table, u32, u32)]) -> Vec<(u32, u32)> {
    let mut pieces = vec![(start, end)];
    for &(_, a, b) in read.iter().filter(|r| r.0 == table) {
        pieces = pieces
            .into_iter()
            .flat_map(|(s, e)| {
                if b <= s || e <= a {
                    return vec![(s, e)];
                }
                [(s, a.min(e)), (b.max(s), e)]
                    .into_iter()
                    .filter(|(x, y)| x < y)
                    .collect()
            })
            .collect();
    }
    pieces
}

/// How the request for a group ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The device returned the data.
    Read,
    /// The device answered with an exception (the group may have been split).
    Refused,
    /// Timeout or transport error.
    LinkFailed,
}

/// State of one tick.
struct Tick<'a> {
    at: &'a [&'a ModbusAddress],
    results: Vec<Option<DriverResult<Value>>>,
    /// The link failure that ends the tick.
    link: Option<DriverError>,
    /// Ranges read fine.
    read: Vec<(Table, u32, u32)>,
    /// Ranges (or cuts) to learn if the tick shows the device serves reads.
    refused: Vec<(Table, u32, u32)>,
}

impl Tick<'_> {
    fn fail(&mut self, group: &[Member], e: &DriverError) {
        for m in group {
            self.results[m.index] = Some(Err(e.clone()));
        }
    }
}

type Resolving<'t> = Pin<Box<dyn Future<Output = Outcome> + Send + 't>>;

impl ModbusDevice {
    /// Reads `at` as `plan` says, splitting refused merged requests; returns one
    /// result per address, in order, and remembers what the device refused.
    pub(crate) async fn read_planned(
        &self,
        at: &[&ModbusAddress],
        plan: &Plan,
    ) -> Vec<DriverResult<Value>> {
        let mut groups: Vec<Vec<Member>> = vec![Vec::new(); plan.spans.len()];
        for (index, (a, &(span, _))) in at.iter().zip(&plan.slots).enumerate() {
            groups[span].push(Member {
                index,
                start: a.offset,
                count: a.register_count(),
            });
        }
        let mut tick = Tick {
            at,
            results: (0..at.len()).map(|_| None).collect(),
            link: None,
            read: Vec::new(),
            refused: Vec::new(),
        };
        for (span, group) in plan.spans.iter().zip(&mut groups) {
            group.sort_by_key(Member::range);
            self.resolve(span.table, group, &mut tick).await;
        }
        self.remember(&tick);
        tick.results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(DriverError::transport("no result"))))
            .collect()
    }

    /// Reads the registers covering `group` (sorted by range) and decodes its
    /// members; a refused merged request is split in two, recursively.
    fn resolve<'t>(
        &'t self,
        table: Table,
        group: &'t [Member],
        tick: &'t mut Tick<'_>,
    ) -> Resolving<'t> {
        Box::pin(async move {
            // After a link failure the rest of the tick fails the same way without waiting.
            if let Some(e) = tick.link.clone() {
                tick.fail(group, &e);
                return Outcome::LinkFailed;
            }
            let (start, end) = cover(group);
            // Both fit: a group never covers more than the planned request.
            let first = u16::try_from(start).unwrap_or(u16::MAX);
            let count = u16::try_from(end - start).unwrap_or(u16::MAX);
            match self.read_span(table, first, count).await {
                Ok(words) => {
                    for m in group {
                        tick.results[m.index] =
                            Some(Self::decode(tick.at[m.index], &words, m.start - first));
                    }
                    tick.read.push((table, start, end));
                    Outcome::Read
                }
                Err(e) if e.is_link_failure() => {
                    tick.fail(group, &e);
                    tick.link = Some(e);
                    Outcome::LinkFailed
                }
                Err(e) if splits(&e) => {
                    let Some((left, right)) = halves(group) else {
                        // Refused on its own: this range is (or holds) a hole.
                        tick.refused.push((table, start, end));
                        tick.fail(group, &e);
                        return Outcome::Refused;
                    };
                    tracing::debug!(
                        unit = self.unit, table = table.name(), start, count, error = %e,
                        "merged read refused; splitting it"
                    );
                    let l = self.resolve(table, left, tick).await;
                    let r = self.resolve(table, right, tick).await;
                    if (l, r) == (Outcome::Read, Outcome::Read) {
                        // Both halves are fine, together they are not: the hole is
                        // between them, or (touching halves) they must not be joined.
                        let (_, left_end) = cover(left);
                        let (right_start, _) = cover(right);
                        let cut = (left_end.min(right_start), right_start);
                        tick.refused.push((table, cut.0, cut.1));
                    }
                    if l == Outcome::LinkFailed || r == Outcome::LinkFailed {
                        Outcome::LinkFailed
                    } else {
                        Outcome::Refused
                    }
                }
                Err(e) => {
                    tick.fail(group, &e);
                    Outcome::Refused
                }
            }
        })
    }

    /// Adds what the tick's refusals show to the device's holes, when the tick
    /// also read something (so the refusals depend on the addresses).
    fn remember(&self, tick: &Tick<'_>) {
        if tick.read.is_empty() || tick.refused.is_empty() {
            return;
        }
        let mut holes = lock(&self.holes);
        for &(table, start, end) in &tick.refused {
            let mut pieces = unread(table, start, end, &tick.read);
            if pieces.is_empty() {
                // A cut, or a range refused as a whole whose parts read fine.
                pieces.push((start, end));
            }
            for (s, e) in pieces {
                if holes.learn(table, s, e) {
                    tracing::info!(
                        unit = self.unit,
                        table = table.name(),
                        addresses = %shown(s, e),
                        "device refuses merged reads there; they are planned around it until reconnect"
                    );
                }
            }
        }
    }
}

/// `start..end` for a log line: `7`, `7..=9`, or `across 7` for a cut.
fn shown(start: u32, end: u32) -> String {
    match end.checked_sub(start) {
        Some(0) | None => format!("across {start}"),
        Some(1) => start.to_string(),
        Some(_) => format!("{start}..={}", end - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(index: usize, start: u16, count: u16) -> Member {
        Member {
            index,
            start,
            count,
        }
    }

    fn sizes(g: &[Member]) -> (usize, usize) {
        let (l, r) = halves(g).unwrap();
        (l.len(), r.len())
    }

    #[test]
    fn halves_cut_at_the_widest_gap_and_keep_equal_ranges_together() {
        // The field case: the cut is before 11176, after the unasked 11175.
        let field = [m(0, 11174, 1), m(1, 11176, 1), m(2, 11177, 1)];
        assert_eq!(sizes(&field), (1, 2));
        // Gaps of 1 and 3: the wider one.
        let g = [m(0, 1, 1), m(1, 1, 1), m(2, 3, 1), m(3, 7, 2)];
        assert_eq!(sizes(&g), (3, 1));
        // No gaps: the middle.
        let flat: Vec<Member> = (0..8).map(|i| m(i, i as u16, 1)).collect();
        assert_eq!(sizes(&flat), (4, 4));
        // Overlapping members are no gap.
        let over = [m(0, 10, 4), m(1, 12, 1), m(2, 13, 2)];
        assert_eq!(sizes(&over), (1, 2));
        assert!(halves(&g[..2]).is_none(), "one range cannot be split");
        assert_eq!(cover(&g), (1, 9));
    }

    #[test]
    fn unread_subtracts_what_was_read() {
        let read = [
            (Table::Holding, 10, 12),
            (Table::Holding, 14, 15),
            (Table::Coil, 0, 100),
        ];
        assert_eq!(
            unread(Table::Holding, 8, 16, &read),
            vec![(8, 10), (12, 14), (15, 16)]
        );
        assert_eq!(unread(Table::Holding, 10, 12, &read), vec![]);
        assert_eq!(unread(Table::Input, 10, 12, &read), vec![(10, 12)]);
    }

    #[test]
    fn only_address_dependent_exceptions_split() {
        use mapper_sdk::DeviceFault;
        let ex = |c| DriverError::Device(DeviceFault::with_code(c, "x"));
        assert!(splits(&ex(2)) && splits(&ex(3)) && splits(&ex(4)));
        for c in [1, 5, 6, 8, 0x0A, 0x0B, 0x20] {
            assert!(!splits(&ex(c)), "{c}");
        }
        assert!(!splits(&DriverError::Device(DeviceFault::new("no code"))));
        assert!(!splits(&DriverError::Timeout(std::time::Duration::ZERO)));
        assert!(!splits(&DriverError::transport("closed")));
    }
}
