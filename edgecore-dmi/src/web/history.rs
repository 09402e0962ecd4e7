//! Recent values of numeric properties, in memory, for the dashboard's charts.
//!
//! Each property whose reported values parse as finite numbers has a series:
//! a ring of `(time, value)` points. Everything is bounded
//! ([`HistoryLimits`]):
//!
//! * a series keeps points of the last [`HistoryLimits::window`] only, and at
//!   most [`HistoryLimits::max_points`];
//! * at most [`HistoryLimits::max_series`] series are tracked; a value of a
//!   new property beyond that is not recorded (counted in
//!   [`History::refused_series`]) until series expire;
//! * all series together hold about [`HistoryLimits::max_total_points`]: the
//!   more series there are, the fewer points each keeps (never fewer than 2);
//! * [`History::prune`] drops expired points and series, and trims every
//!   series to the current share.
//!
//! With the defaults the points take at most about 16 MiB (16 bytes each),
//! whatever the number of devices.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use crate::key::ObjectKey;

/// Bounds of the [`History`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Points per series, at most.
    pub max_points: usize,
    /// Points older than this (by report time) are dropped.
    pub window: Duration,
    /// Series tracked at once, at most.
    pub max_series: usize,
    /// Points of all series together, about (see the module docs).
    pub max_total_points: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            max_points: 600,
            window: Duration::from_secs(600),
            max_series: 20_000,
            max_total_points: 1_000_000,
        }
    }
}

impl HistoryLimits {
    /// The window in ms.
    fn window_ms(&self) -> u64 {
        u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)
    }
}

/// One point: when the value was reported (ms since the epoch) and the value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point(pub u64, pub f64);

/// The points of one property, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// The property.
    pub property: String,
    /// Its points, oldest first.
    pub points: Vec<Point>,
}

/// Everything behind the lock.
#[derive(Debug, Default)]
struct Inner {
    /// Series by device, then by property.
    devices: HashMap<ObjectKey, HashMap<String, VecDeque<Point>>>,
    /// Number of series in `devices`.
    series: usize,
    /// Values of new properties not recorded because `max_series` was
    /// reached.
    refused: u64,
}

/// Recent values of numeric properties (see the module docs). The lock is
/// held only for short, synchronous steps.
#[derive(Debug, Default)]
pub struct History {
    limits: HistoryLimits,
    inner: Mutex<Inner>,
}

/// The value of a reported twin as a number, when it is a finite one.
pub fn numeric(reported: &str) -> Option<f64> {
    let v: f64 = reported.trim().parse().ok()?;
    v.is_finite().then_some(v)
}

impl History {
    /// An empty history with `limits` (`max_points` and `max_series` at least
    /// 1).
    pub fn new(limits: HistoryLimits) -> Self {
        Self {
            limits: HistoryLimits {
                max_points: limits.max_points.max(1),
                max_series: limits.max_series.max(1),
                ..limits
            },
            inner: Mutex::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held (a bug) leaves points at worst
        // half-trimmed; keep serving them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Points each series may hold with `series` series tracked.
    fn share(&self, series: usize) -> usize {
        (self.limits.max_total_points / series.max(1)).clamp(2, self.limits.max_points.max(2))
    }

    /// Records `reported` of `property` of `device` at `at_ms` (ms since the
    /// epoch) when it is numeric; returns the point recorded, if any.
    pub fn record(
        &self,
        device: &ObjectKey,
        property: &str,
        at_ms: u64,
        reported: &str,
    ) -> Option<Point> {
        let value = numeric(reported)?;
        let point = Point(at_ms, value);
        let mut inner = self.lock();
        let inner = &mut *inner;
        let exists = inner
            .devices
            .get(device)
            .is_some_and(|d| d.contains_key(property));
        if !exists {
            if inner.series >= self.limits.max_series {
                inner.refused += 1;
                return None;
            }
            inner.series += 1;
        }
        let share = self.share(inner.series).min(self.limits.max_points);
        let oldest = at_ms.saturating_sub(self.limits.window_ms());
        let points = inner
            .devices
            .entry(device.clone())
            .or_default()
            .entry(property.to_owned())
            .or_default();
        while points.front().is_some_and(|p| p.0 < oldest) || points.len() >= share {
            points.pop_front();
        }
        points.push_back(point);
        Some(point)
    }

    /// Drops points older than the window before `now_ms`, series left
    /// empty, and trims each series to its share of
    /// [`HistoryLimits::max_total_points`]. Returns the number of series
    /// left.
    pub fn prune(&self, now_ms: u64) -> usize {
        let oldest = now_ms.saturating_sub(self.limits.window_ms());
        let mut inner = self.lock();
        let share = self.share(inner.series).min(self.limits.max_points);
        let mut series = 0;
        inner.devices.retain(|_, props| {
            props.retain(|_, points| {
                while points.front().is_some_and(|p| p.0 < oldest) || points.len() > share {
                    points.pop_front();
                }
                if points.capacity() > 2 * share.max(points.len()) {
                    points.shrink_to_fit();
                }
                !points.is_empty()
            });
            series += props.len();
            !props.is_empty()
        });
        inner.series = series;
        series
    }

    /// The series of `property` of `device`, or every series of `device`
    /// (by property name) when `property` is `None`.
    pub fn series(&self, device: &str, property: Option<&str>) -> Vec<Series> {
        let inner = self.lock();
        let Some(props) = inner.devices.get(device) else {
            return Vec::new();
        };
        let mut out: Vec<Series> = props
            .iter()
            .filter(|(name, _)| property.is_none_or(|p| p == name.as_str()))
            .map(|(name, points)| Series {
                property: name.clone(),
                points: points.iter().copied().collect(),
            })
            .collect();
        out.sort_by(|a, b| a.property.cmp(&b.property));
        out
    }

    /// Series tracked now.
    pub fn series_count(&self) -> usize {
        self.lock().series
    }

    /// Points held now, in all series.
    pub fn point_count(&self) -> usize {
        self.lock()
            .devices
            .values()
            .flat_map(|d| d.values())
            .map(VecDeque::len)
            .sum()
    }

    /// Values of new properties not recorded so far because
    /// [`HistoryLimits::max_series`] was reached.
    pub fn refused_series(&self) -> u64 {
        self.lock().refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("default", name)
    }

    fn limits(max_points: usize, window_s: u64, max_series: usize, total: usize) -> HistoryLimits {
        HistoryLimits {
            max_points,
            window: Duration::from_secs(window_s),
            max_series,
            max_total_points: total,
        }
    }

    #[test]
    fn only_finite_numbers_are_recorded() {
        let h = History::new(HistoryLimits::default());
        let d = key("a");
        assert_eq!(h.record(&d, "t", 1, "21.5"), Some(Point(1, 21.5)));
        assert_eq!(h.record(&d, "t", 2, " 7 "), Some(Point(2, 7.0)));
        for text in ["on", "true", "", "NaN", "inf", "1,5"] {
            assert_eq!(h.record(&d, "t", 3, text), None, "{text}");
        }
        assert_eq!(h.record(&d, "s", 3, "on"), None);
        let [s] = h.series("default/a", None).try_into().unwrap();
        assert_eq!(s.property, "t");
        assert_eq!(s.points, [Point(1, 21.5), Point(2, 7.0)]);
        assert_eq!(h.series_count(), 1);
    }

    #[test]
    fn a_series_keeps_at_most_max_points_newest_first_out_last() {
        let h = History::new(limits(5, 600, 10, 1000));
        let d = key("a");
        for i in 0..20u64 {
            h.record(&d, "n", 1000 + i, &i.to_string());
        }
        let s = &h.series("default/a", Some("n"))[0];
        let values: Vec<f64> = s.points.iter().map(|p| p.1).collect();
        assert_eq!(values, [15.0, 16.0, 17.0, 18.0, 19.0]);
    }

    #[test]
    fn points_older_than_the_window_are_dropped() {
        let h = History::new(limits(1000, 10, 10, 100_000));
        let d = key("a");
        for s in 0..30u64 {
            h.record(&d, "n", s * 1000, &s.to_string());
        }
        let s = &h.series("default/a", Some("n"))[0];
        // Report at 29 s: points from 19 s on are inside a 10 s window.
        assert_eq!(s.points.first(), Some(&Point(19_000, 19.0)));
        assert_eq!(s.points.len(), 11);
        // Nothing new for a while: pruning empties and forgets the series.
        assert_eq!(h.prune(35_000), 1);
        assert_eq!(h.series("default/a", Some("n"))[0].points.len(), 5);
        assert_eq!(h.prune(60_000), 0);
        assert!(h.series("default/a", None).is_empty());
        assert_eq!(h.series_count(), 0);
    }

    #[test]
    fn the_number_of_series_is_capped_and_expired_ones_make_room() {
        let h = History::new(limits(10, 10, 3, 1000));
        for i in 0..5 {
            h.record(&key(&format!("d{i}")), "n", 1000, "1");
        }
        assert_eq!(h.series_count(), 3);
        assert_eq!(h.refused_series(), 2);
        assert!(h.series("default/d4", None).is_empty());
        // Existing series keep recording at the cap.
        assert!(h.record(&key("d0"), "n", 2000, "2").is_some());
        // Once the old ones expire, new series get in.
        assert_eq!(h.prune(20_000), 0);
        assert!(h.record(&key("d4"), "n", 20_000, "1").is_some());
        assert_eq!(h.series_count(), 1);
    }

    #[test]
    fn total_points_stay_bounded_as_series_multiply() {
        let h = History::new(limits(100, 600, 1000, 1000));
        // One series alone gets its full 100 points.
        for t in 0..200u64 {
            h.record(&key("first"), "n", t, "1");
        }
        assert_eq!(h.point_count(), 100);
        // 50 series share 1000 points: 20 each, the first one trimmed too.
        for t in 200..400u64 {
            for i in 0..50 {
                h.record(&key(&format!("d{i}")), "n", t, "1");
            }
        }
        h.prune(400);
        assert_eq!(h.series_count(), 51);
        assert!(h.point_count() <= 1000, "{}", h.point_count());
        assert_eq!(h.series("default/first", None)[0].points.len(), 19);
        assert_eq!(h.series("default/d7", None)[0].points.len(), 19);
    }

    #[test]
    fn series_of_one_device_are_listed_by_property() {
        let h = History::new(HistoryLimits::default());
        let (a, b) = (key("a"), key("b"));
        h.record(&a, "z", 1, "1");
        h.record(&a, "m", 1, "2");
        h.record(&b, "m", 1, "3");
        let names: Vec<String> = h
            .series("default/a", None)
            .into_iter()
            .map(|s| s.property)
            .collect();
        assert_eq!(names, ["m", "z"]);
        assert_eq!(h.series("default/a", Some("m"))[0].points, [Point(1, 2.0)]);
        assert!(h.series("default/a", Some("x")).is_empty());
        assert!(h.series("default/nope", None).is_empty());
    }
}
