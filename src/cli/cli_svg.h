/*
 * cli_svg.h: the inline SVG charts of the HTML report.
 *
 * Each function writes one <svg> element sized by its viewBox (the page's CSS
 * scales it to the column). Colors come from classes the report's stylesheet
 * defines (.c0 ... .c5 for lines and bars), so a chart has no style of its
 * own. Labels and tooltips (<title>, shown on hover without any script) are
 * escaped with html_text(); numbers are formatted for the given unit.
 */
#ifndef OBSD_CLI_CLI_SVG_H
#define OBSD_CLI_CLI_SVG_H

#include <stddef.h>
#include <stdio.h>

#include "cli/cli_html.h"
#include "publisher/snapshot.h"

/* One line of a time chart: n points (x seconds, y value); a non-finite y
 * leaves a gap. Drawn as steps: a value holds until the next point (the store
 * keeps a point when the metric changed). color is 0..5. */
struct svg_line {
    const char *label;
    int color;
    size_t n;
    const double *x, *y;
};

/* A chart of values over time. x_end extends every line's last value to that
 * time (the snapshot the report shows). aria is the chart's accessible name. */
void svg_time_chart(FILE *f, int width, int height, const char *aria, const struct svg_line *lines,
                    size_t n_lines, double x_end, enum cli_unit yunit);

/* A vertical marker on a histogram (a percentile). */
struct svg_mark {
    const char *label;
    double value;
    int color;
};

/* The snapshot buckets of a series as bars, on a log axis when the buckets
 * allow it (positive, increasing edges), else one bar per bucket. */
void svg_histogram(FILE *f, int width, int height, const char *aria, const struct snap_bucket *b,
                   size_t n, enum cli_unit unit, const struct svg_mark *marks, size_t n_marks);

/* Horizontal bars, one row per label, each made of n_seg stacked segments
 * (colors 0..n_seg-1, named in a legend when n_seg > 1); mark[i], when
 * finite, draws a line at that value on row i (e.g. the wall time that the
 * segments should add up to). */
#define SVG_MAX_SEGMENTS 4
struct svg_bar_row {
    const char *label;
    double seg[SVG_MAX_SEGMENTS];
    double mark;
};
void svg_bars(FILE *f, int width, const char *aria, const struct svg_bar_row *rows, size_t n_rows,
              const char *const *seg_labels, size_t n_seg, const char *mark_label, enum cli_unit unit);

#endif
