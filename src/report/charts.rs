//! Charts as inline SVG, drawn with `plotters` (SVG backend only: text stays `<text>` elements
//! that the browser lays out, so no font file is needed at build or run time).

use super::ReportError;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

/// Chart size in pixels (the page scales it down on narrow screens).
const SIZE: (u32, u32) = (900, 380);
/// Bar colour for rates.
const BAR: RGBColor = RGBColor(0xc0, 0x39, 0x2b);
/// Bar colour for counts.
const COUNT_BAR: RGBColor = RGBColor(0x2e, 0x86, 0xc1);

fn err(chart: &'static str) -> impl Fn(String) -> ReportError {
    move |message| ReportError::Chart { chart, message }
}

/// An SVG that says there is nothing to draw (an empty chart would look like a broken one).
fn empty(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"80\" viewBox=\"0 0 {w} 80\">\
         <text x=\"10\" y=\"30\" font-family=\"sans-serif\" font-size=\"18\">{t}</text>\
         <text x=\"10\" y=\"60\" font-family=\"sans-serif\" font-size=\"14\" fill=\"#666\">no data in this window</text></svg>",
        w = SIZE.0,
        t = super::html::esc(title)
    )
}

/// Horizontal bars, one per label, the first at the top (labels stay readable however long).
/// `percent` formats the axis as a rate in [0, 1].
pub fn bars(
    chart: &'static str,
    title: &str,
    x_desc: &str,
    data: &[(String, f64)],
    percent: bool,
) -> Result<String, ReportError> {
    if data.is_empty() {
        return Ok(empty(title));
    }
    let e = err(chart);
    let max = data.iter().map(|d| d.1).fold(0.0, f64::max);
    let top = if percent {
        (max * 1.15).clamp(0.01, 1.0)
    } else {
        (max * 1.15).max(1.0)
    };
    let n = data.len();
    let labels: Vec<String> = data.iter().map(|d| short(&d.0, 28)).collect();
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    let height = 110 + 26 * n as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(30 + 9 * label_width)
            .build_cartesian_2d(0f64..top, (0..last_segment(n)).into_segmented())
            .map_err(|x| e(x.to_string()))?;
        // Segment 0 is at the bottom: the first row goes into the top segment.
        let fmt_y = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < n => labels[n - 1 - i].clone(),
            _ => String::new(),
        };
        let fmt_x = |x: &f64| {
            if percent {
                format!("{:.1}%", x * 100.0)
            } else if (x - x.round()).abs() < 1e-9 {
                format!("{x:.0}")
            } else {
                // Counts are whole: no label between them.
                String::new()
            }
        };
        c.configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .y_labels(n)
            .x_labels(if percent {
                10
            } else {
                (top as usize + 1).min(10)
            })
            .y_label_formatter(&fmt_y)
            .x_label_formatter(&fmt_x)
            .x_desc(x_desc)
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        let colour = if percent { BAR } else { COUNT_BAR };
        c.draw_series(data.iter().enumerate().map(|(i, d)| {
            let row = n - 1 - i;
            let mut r = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row)),
                    (d.1, SegmentValue::Exact(row + 1)),
                ],
                colour.filled(),
            );
            r.set_margin(3, 3, 0, 0);
            r
        }))
        .map_err(|x| e(x.to_string()))?;
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(svg)
}

/// Colour of a verdict in the stacked chart: green for protected, greys for nothing to say,
/// reds and oranges for problems.
fn verdict_colour(verdict: &str, i: usize) -> RGBColor {
    match verdict {
        "tls-ok" => RGBColor(0x27, 0xae, 0x60),
        "certificate-not-observable" => RGBColor(0x82, 0xc9, 0x9a),
        "plaintext" => RGBColor(0x95, 0xa5, 0xa6),
        "incomplete" => RGBColor(0xd5, 0xdb, 0xdb),
        "auth-in-cleartext" => RGBColor(0x78, 0x1d, 0x14),
        "starttls-stripped" => RGBColor(0xc0, 0x39, 0x2b),
        "starttls-missing" => RGBColor(0xe7, 0x4c, 0x3c),
        "starttls-not-supported" => RGBColor(0xf3, 0x9c, 0x12),
        _ => {
            const OTHERS: [RGBColor; 8] = [
                RGBColor(0x8e, 0x44, 0xad),
                RGBColor(0x2e, 0x86, 0xc1),
                RGBColor(0xd3, 0x54, 0x00),
                RGBColor(0x16, 0xa0, 0x85),
                RGBColor(0x7f, 0x8c, 0x8d),
                RGBColor(0xaf, 0x60, 0x1a),
                RGBColor(0x1f, 0x61, 0x8d),
                RGBColor(0x94, 0x49, 0x8c),
            ];
            OTHERS[i % OTHERS.len()]
        }
    }
}

/// Stacked bars per day, one colour per series (verdict).
pub fn stacked_days(
    chart: &'static str,
    title: &str,
    days: &[String],
    series: &[(String, Vec<u64>)],
) -> Result<String, ReportError> {
    if days.is_empty() || series.is_empty() {
        return Ok(empty(title));
    }
    let e = err(chart);
    let n = days.len();
    let totals: Vec<u64> = (0..n)
        .map(|i| {
            series
                .iter()
                .map(|s| s.1.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let top = (totals.iter().copied().max().unwrap_or(0) as f64 * 1.15).max(1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, SIZE.1 + 60)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let (plot, side) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        let mut c = ChartBuilder::on(&plot)
            .caption(title, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((0..last_segment(n)).into_segmented(), 0f64..top)
            .map_err(|x| e(x.to_string()))?;
        // At most ten day labels fit side by side.
        let step = n.div_ceil(10).max(1);
        let fmt_x = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if i % step == 0 => days.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        let mut mesh = c.configure_mesh();
        mesh.disable_x_mesh()
            .x_labels(n)
            .light_line_style(WHITE)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&|y: &f64| format!("{y:.0}"))
            .y_desc("sessions")
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 15));
        mesh.draw().map_err(|x| e(x.to_string()))?;
        let mut base = vec![0u64; n];
        let mut keys = Vec::new();
        for (si, (name, values)) in series.iter().enumerate() {
            let colour = verdict_colour(name, si);
            keys.push((name.clone(), colour));
            let rects: Vec<Rectangle<(SegmentValue<usize>, f64)>> = (0..n)
                .filter_map(|i| {
                    let v = values.get(i).copied().unwrap_or(0);
                    if v == 0 {
                        return None;
                    }
                    let lo = base[i];
                    base[i] += v;
                    let mut r = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), lo as f64),
                            (SegmentValue::Exact(i + 1), base[i] as f64),
                        ],
                        colour.filled(),
                    );
                    r.set_margin(0, 0, 3, 3);
                    Some(r)
                })
                .collect();
            c.draw_series(rects).map_err(|x| e(x.to_string()))?;
        }
        legend(&side, &keys).map_err(|x| e(x.to_string()))?;
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(svg)
}

/// Rates per day as lines (with a marker per day, so a single day still shows).
pub fn rate_lines(
    chart: &'static str,
    title: &str,
    days: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<String, ReportError> {
    if days.is_empty() || series.is_empty() {
        return Ok(empty(title));
    }
    let e = err(chart);
    let n = days.len();
    const COLOURS: [RGBColor; 4] = [
        RGBColor(0x27, 0xae, 0x60),
        RGBColor(0x2e, 0x86, 0xc1),
        RGBColor(0xc0, 0x39, 0x2b),
        RGBColor(0x8e, 0x44, 0xad),
    ];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let (plot, side) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        let x_range = if n == 1 {
            -0.5..0.5
        } else {
            0f64..(n - 1) as f64
        };
        let mut c = ChartBuilder::on(&plot)
            .caption(title, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range, 0f64..1.05)
            .map_err(|x| e(x.to_string()))?;
        let fmt_x = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                days.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        let mut mesh = c.configure_mesh();
        mesh.x_labels(n.clamp(2, 10))
            .light_line_style(WHITE)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&|y: &f64| format!("{:.0}%", y * 100.0))
            .y_desc("share of EHLO sessions")
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 15));
        mesh.draw().map_err(|x| e(x.to_string()))?;
        let mut keys = Vec::new();
        for (si, (name, values)) in series.iter().enumerate() {
            let colour = COLOURS[si % COLOURS.len()];
            keys.push((name.clone(), colour));
            let points: Vec<(f64, f64)> = values
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64, *v))
                .collect();
            c.draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(|x| e(x.to_string()))?;
            c.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, colour.filled())),
            )
            .map_err(|x| e(x.to_string()))?;
        }
        legend(&side, &keys).map_err(|x| e(x.to_string()))?;
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(svg)
}

/// The upper end of a segmented axis for `n` categories. plotters makes one segment per value
/// of the range *including* its end, so `0..n - 1` gives `n` segments; a single category still
/// needs a non-empty range (its bar then fills half the plot).
fn last_segment(n: usize) -> usize {
    n.saturating_sub(1).max(1)
}

/// Width of the legend column right of a chart.
const LEGEND_WIDTH: u32 = 250;

/// A legend in its own column, so it never hides data.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    keys: &[(String, RGBColor)],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let style = ("sans-serif", 15).into_font();
    for (i, (name, colour)) in keys.iter().enumerate() {
        let y = 60 + 24 * i as i32;
        area.draw(&Rectangle::new([(6, y - 7), (20, y + 7)], colour.filled()))?;
        area.draw(&Text::new(short(name, 26), (28, y - 7), style.clone()))?;
    }
    Ok(())
}

/// Shortens a label to `max` characters (an ellipsis marks the cut).
fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
