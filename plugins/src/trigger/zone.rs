//! Zones: regions of the image in pixels, and the geometry the zone trigger needs (containment and the
//! distance to a zone, for hysteresis).

use serde::{Deserialize, Serialize};

use crate::error::ZoneError;

/// A region of the image, in pixels. In a config: a table tagged `shape = "circle"` (with `cx`, `cy`,
/// `r`), `shape = "rect"` (with `x0`, `y0`, `x1`, `y1`) or `shape = "polygon"` (with
/// `points = [[x, y], ...]`, at least 3 vertices, even-odd rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "shape", rename_all = "lowercase", deny_unknown_fields)]
pub enum Zone {
    /// A disc centred on (`cx`, `cy`) px with radius `r` px, boundary included.
    Circle {
        /// Centre x in pixels.
        cx: f32,
        /// Centre y in pixels.
        cy: f32,
        /// Radius in pixels (> 0).
        r: f32,
    },
    /// An axis-aligned rectangle from (`x0`, `y0`) to (`x1`, `y1`) px, edges included.
    Rect {
        /// Left edge in pixels.
        x0: f32,
        /// Top edge in pixels.
        y0: f32,
        /// Right edge in pixels (> x0).
        x1: f32,
        /// Bottom edge in pixels (> y0).
        y1: f32,
    },
    /// A polygon through `points` (px, in order, closed implicitly); inside by the even-odd rule, so a
    /// self-intersecting outline is allowed. A point exactly on an edge may count either way.
    Polygon {
        /// Vertices `[x, y]` in pixels, at least 3, enclosing a non-zero area.
        points: Vec<[f32; 2]>,
    },
}

impl Zone {
    /// Whether (`x`, `y`) px lies in the zone; NaN coordinates are never inside.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        match self {
            Zone::Polygon { points } => polygon_contains(points, x, y),
            other => Shape::simple(other).contains(&[], x, y),
        }
    }

    /// Distance (px) from (`x`, `y`) to the zone: 0 inside, NaN for NaN coordinates. Zone triggers use
    /// it for hysteresis (once inside, a point stays inside until it is more than `hysteresis` px out).
    pub fn distance_outside(&self, x: f32, y: f32) -> f32 {
        match self {
            Zone::Polygon { points } => polygon_distance_outside(points, x, y),
            other => Shape::simple(other).distance_outside(&[], x, y),
        }
    }

    /// Check the zone is a real shape: finite numbers, positive radius, ordered corners, a polygon of at
    /// least 3 vertices with a non-zero area.
    pub fn validate(&self) -> Result<(), ZoneError> {
        let finite = |field, value: f32| {
            if value.is_finite() {
                Ok(())
            } else {
                Err(ZoneError::NonFinite { field, value })
            }
        };
        match *self {
            Zone::Circle { cx, cy, r } => {
                finite("cx", cx)?;
                finite("cy", cy)?;
                finite("r", r)?;
                if r <= 0.0 {
                    return Err(ZoneError::NonPositiveRadius { r });
                }
            }
            Zone::Rect { x0, y0, x1, y1 } => {
                finite("x0", x0)?;
                finite("y0", y0)?;
                finite("x1", x1)?;
                finite("y1", y1)?;
                if x0 >= x1 || y0 >= y1 {
                    return Err(ZoneError::EmptyRect { x0, y0, x1, y1 });
                }
            }
            Zone::Polygon { ref points } => {
                if points.len() < 3 {
                    return Err(ZoneError::TooFewPoints {
                        count: points.len(),
                    });
                }
                for &[x, y] in points {
                    finite("points", x)?;
                    finite("points", y)?;
                }
                if polygon_area(points) == 0.0 {
                    return Err(ZoneError::ZeroAreaPolygon);
                }
            }
        }
        Ok(())
    }
}

/// A validated zone in the compiled trigger set: `Copy`, with a polygon's vertices kept in the set's
/// shared vertex pool (`start..start + len`), so evaluating it never touches the heap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Shape {
    Circle { cx: f32, cy: f32, r: f32 },
    Rect { x0: f32, y0: f32, x1: f32, y1: f32 },
    Polygon { start: u32, len: u32 },
}

impl Shape {
    /// The shape of a circle or rectangle; a polygon gets an empty vertex range (use [`Shape::compile`]).
    fn simple(zone: &Zone) -> Shape {
        match *zone {
            Zone::Circle { cx, cy, r } => Shape::Circle { cx, cy, r },
            Zone::Rect { x0, y0, x1, y1 } => Shape::Rect { x0, y0, x1, y1 },
            Zone::Polygon { .. } => Shape::Polygon { start: 0, len: 0 },
        }
    }

    /// The compiled shape of `zone`; a polygon's vertices are appended to `pool`.
    pub(crate) fn compile(zone: &Zone, pool: &mut Vec<[f32; 2]>) -> Shape {
        match zone {
            Zone::Polygon { points } => {
                let start = pool.len() as u32;
                pool.extend_from_slice(points);
                Shape::Polygon {
                    start,
                    len: points.len() as u32,
                }
            }
            other => Shape::simple(other),
        }
    }

    fn vertices<'a>(&self, pool: &'a [[f32; 2]]) -> &'a [[f32; 2]] {
        match *self {
            Shape::Polygon { start, len } => pool
                .get(start as usize..(start + len) as usize)
                .unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Whether (`x`, `y`) is inside; NaN is never inside.
    pub(crate) fn contains(&self, pool: &[[f32; 2]], x: f32, y: f32) -> bool {
        // Every comparison with NaN is false, so NaN falls out as "not inside".
        match *self {
            Shape::Circle { cx, cy, r } => {
                let (dx, dy) = (x - cx, y - cy);
                dx * dx + dy * dy <= r * r
            }
            Shape::Rect { x0, y0, x1, y1 } => x >= x0 && x <= x1 && y >= y0 && y <= y1,
            Shape::Polygon { .. } => polygon_contains(self.vertices(pool), x, y),
        }
    }

    /// Distance in px to the shape, 0 inside; NaN for NaN coordinates.
    pub(crate) fn distance_outside(&self, pool: &[[f32; 2]], x: f32, y: f32) -> f32 {
        match *self {
            // `max` would swallow a NaN, so NaN is returned before it.
            _ if x.is_nan() || y.is_nan() => f32::NAN,
            Shape::Circle { cx, cy, r } => ((x - cx).hypot(y - cy) - r).max(0.0),
            Shape::Rect { x0, y0, x1, y1 } => {
                let dx = (x0 - x).max(x - x1).max(0.0);
                let dy = (y0 - y).max(y - y1).max(0.0);
                dx.hypot(dy)
            }
            Shape::Polygon { .. } => polygon_distance_outside(self.vertices(pool), x, y),
        }
    }
}

/// Even-odd (crossing number) test; false for fewer than 3 vertices or NaN coordinates.
fn polygon_contains(points: &[[f32; 2]], x: f32, y: f32) -> bool {
    if points.len() < 3 {
        return false;
    }
    let mut inside = false;
    let mut j = points.len() - 1;
    for i in 0..points.len() {
        let ([xi, yi], [xj, yj]) = (points[i], points[j]);
        // A NaN `y` makes both comparisons false: no crossing.
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// 0 inside, else the distance to the nearest edge; NaN for NaN coordinates or no vertices.
fn polygon_distance_outside(points: &[[f32; 2]], x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() || points.is_empty() {
        return f32::NAN;
    }
    if polygon_contains(points, x, y) {
        return 0.0;
    }
    let mut best = f32::INFINITY;
    let mut j = points.len() - 1;
    for i in 0..points.len() {
        best = best.min(segment_distance(x, y, points[j], points[i]));
        j = i;
    }
    best
}

/// Distance from (`x`, `y`) to the segment `a`–`b`.
fn segment_distance(x: f32, y: f32, [ax, ay]: [f32; 2], [bx, by]: [f32; 2]) -> f32 {
    let (abx, aby, apx, apy) = (bx - ax, by - ay, x - ax, y - ay);
    let len2 = abx * abx + aby * aby;
    let t = if len2 > 0.0 {
        ((apx * abx + apy * aby) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (apx - t * abx).hypot(apy - t * aby)
}

/// Signed area by the shoelace formula (px²).
fn polygon_area(points: &[[f32; 2]]) -> f32 {
    let mut twice = 0.0;
    let mut j = points.len().saturating_sub(1);
    for i in 0..points.len() {
        twice += points[j][0] * points[i][1] - points[i][0] * points[j][1];
        j = i;
    }
    twice / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_with_edges_and_nan() {
        let c = Zone::Circle {
            cx: 0.0,
            cy: 0.0,
            r: 5.0,
        };
        assert!(c.contains(3.0, 4.0) && !c.contains(3.0, 4.1));
        let r = Zone::Rect {
            x0: 0.0,
            y0: 0.0,
            x1: 10.0,
            y1: 5.0,
        };
        assert!(r.contains(0.0, 5.0) && r.contains(10.0, 0.0) && !r.contains(10.1, 1.0));
        // An L shape: the notch at (8, 8) is outside.
        let l = Zone::Polygon {
            points: vec![
                [0.0, 0.0],
                [10.0, 0.0],
                [10.0, 5.0],
                [5.0, 5.0],
                [5.0, 10.0],
                [0.0, 10.0],
            ],
        };
        assert!(l.contains(2.0, 8.0) && l.contains(8.0, 2.0) && !l.contains(8.0, 8.0));
        for z in [c, r, l] {
            assert!(!z.contains(f32::NAN, 1.0) && !z.contains(1.0, f32::NAN));
            assert!(z.distance_outside(f32::NAN, 1.0).is_nan());
        }
    }

    #[test]
    fn distance_outside_each_shape() {
        let c = Zone::Circle {
            cx: 0.0,
            cy: 0.0,
            r: 5.0,
        };
        assert_eq!(c.distance_outside(1.0, 1.0), 0.0);
        assert_eq!(c.distance_outside(8.0, 0.0), 3.0);
        let r = Zone::Rect {
            x0: 0.0,
            y0: 0.0,
            x1: 10.0,
            y1: 5.0,
        };
        assert_eq!(r.distance_outside(5.0, 2.0), 0.0);
        assert_eq!(r.distance_outside(13.0, 9.0), 5.0);
        assert_eq!(r.distance_outside(-2.0, 3.0), 2.0);
        let tri = Zone::Polygon {
            points: vec![[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]],
        };
        assert_eq!(tri.distance_outside(1.0, 1.0), 0.0);
        assert_eq!(tri.distance_outside(5.0, -4.0), 4.0);
        assert_eq!(tri.distance_outside(-3.0, -4.0), 5.0);
    }

    #[test]
    fn validate_names_the_problem() {
        let tri = |points: Vec<[f32; 2]>| Zone::Polygon { points }.validate();
        assert_eq!(
            tri(vec![[0.0, 0.0], [1.0, 1.0]]),
            Err(ZoneError::TooFewPoints { count: 2 })
        );
        assert_eq!(
            tri(vec![[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]),
            Err(ZoneError::ZeroAreaPolygon)
        );
        assert!(matches!(
            tri(vec![[0.0, 0.0], [1.0, f32::NAN], [2.0, 0.0]]),
            Err(ZoneError::NonFinite {
                field: "points",
                ..
            })
        ));
        assert_eq!(tri(vec![[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), Ok(()));
    }
}
