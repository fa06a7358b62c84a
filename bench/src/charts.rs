//! The report's charts, drawn as SVG with plotters.

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

/// One line of a chart: its label and (x, y) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Where the legend goes and how much room the x axis leaves for it.
pub struct Layout {
    pub legend: SeriesLabelPosition,
    /// The x axis runs to the largest x times this.
    pub x_room: f64,
}

/// A line chart with points, one colour per series: y from zero, or on a
/// log scale when the series span orders of magnitude.
pub fn line_chart(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
    log_y: bool,
    layout: Layout,
) -> anyhow::Result<()> {
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let x_max = points().map(|p| p.0).fold(0.0, f64::max).max(1.0) * layout.x_room;
    let x_min = points().map(|p| p.0).fold(f64::INFINITY, f64::min).min(0.0);
    let y_max = points().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let y_min = points()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .max(1e-9)
        / 1.5;

    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64);
    if log_y {
        let chart = builder
            .build_cartesian_2d(x_min..x_max, (y_min..y_max).log_scale())
            .map_err(draw_error)?;
        draw(chart, (x_label, y_label), series, layout.legend)?;
    } else {
        let chart = builder
            .build_cartesian_2d(x_min..x_max, 0.0..y_max)
            .map_err(draw_error)?;
        draw(chart, (x_label, y_label), series, layout.legend)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

fn draw<'a, X, Y>(
    mut chart: ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    (x_label, y_label): (&str, &str),
    series: &[Series],
    legend: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(draw_error)?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(draw_error)?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(legend)
        .draw()
        .map_err(draw_error)?;
    Ok(())
}

fn draw_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg_with_the_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let series = [Series {
            label: "sm-ssh download".into(),
            points: vec![(0.0, 1.0), (2.0, 0.9), (5.0, 0.8)],
        }];
        let layout = || Layout {
            legend: SeriesLabelPosition::MiddleRight,
            x_room: 1.05,
        };
        let labels = ("loss %", "MB/s");
        line_chart(&path, "Setup", labels, &series, true, layout()).unwrap();
        line_chart(&path, "Loss", labels, &series, false, layout()).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("sm-ssh download"));
    }
}
