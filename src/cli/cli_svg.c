/*
 * cli_svg.c: inline SVG charts of the HTML report (cli_svg.h).
 *
 * Coordinates are written with one decimal; axes get "nice" ticks (1, 2 or
 * 5 times a power of ten) so that labels are round numbers.
 */
#include "cli/cli_svg.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#define MAX_TICKS 64

static double nice_step(double range, int target)
{
    if (!(range > 0) || !isfinite(range))
        return 1;
    double raw = range / target, mag = pow(10, floor(log10(raw))), r = raw / mag;
    return (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
}

static void open_svg(FILE *f, int w, int h, const char *aria)
{
    /* never drawn larger than designed: text would grow with it */
    fprintf(f, "<svg class=\"chart\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" style=\"max-width:%dpx\""
               " role=\"img\" aria-label=\"", w, h, w, h, w);
    html_text(f, aria);
    fputs("\"><title>", f);
    html_text(f, aria);
    fputs("</title>\n", f);
}

static void label(FILE *f, const char *cls, double x, double y, const char *anchor, const char *text)
{
    fprintf(f, "<text class=\"%s\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\">", cls, x, y, anchor);
    html_text(f, text);
    fputs("</text>\n", f);
}

/* An x label near an end of the axis is aligned to it instead of centered,
 * so that it is not cut by the edge of the chart. */
static const char *x_anchor(double x, double lo, double hi)
{
    return x < lo + 24 ? "start" : x > hi - 24 ? "end" : "middle";
}

/* Legend entries left to right from x at baseline y; returns the x after. */
static double legend_entry(FILE *f, double x, double y, int color, bool line, const char *text)
{
    if (line)
        fprintf(f, "<line class=\"line c%d\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", color, x,
                y - 4, x + 16, y - 4);
    else
        fprintf(f, "<rect class=\"bar c%d\" x=\"%.1f\" y=\"%.1f\" width=\"10\" height=\"10\"/>\n", color, x,
                y - 9);
    label(f, "leg", x + (line ? 20 : 14), y, "start", text);
    return x + (line ? 20 : 14) + 7.0 * (double)strlen(text ? text : "") + 14;
}

/* Ticks of [lo, hi] for a linear axis, at most MAX_TICKS. */
static size_t linear_ticks(double lo, double hi, double step, double *out)
{
    size_t n = 0;
    for (double v = ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9 && n < MAX_TICKS; v += step)
        out[n++] = fabs(v) < step * 1e-9 ? 0 : v;
    return n;
}

void svg_time_chart(FILE *f, int width, int height, const char *aria, const struct svg_line *lines,
                    size_t n_lines, double x_end, enum cli_unit yunit)
{
    const double L = 64, R = 14, T = 24, B = 26, W = width, H = height;
    double xmin = 0, xmax = isfinite(x_end) ? x_end : 0, ymin = 0, ymax = 0;
    bool any = false;
    for (size_t l = 0; l < n_lines; l++)
        for (size_t i = 0; i < lines[l].n; i++) {
            double x = lines[l].x[i], y = lines[l].y[i];
            if (!isfinite(x) || !isfinite(y))
                continue;
            xmin = fmin(xmin, x);
            xmax = fmax(xmax, x);
            ymin = any ? fmin(ymin, y) : fmin(0, y);
            ymax = any ? fmax(ymax, y) : fmax(0, y);
            any = true;
        }
    if (!(xmax > xmin))
        xmax = xmin + 1;
    double ystep = nice_step(ymax - ymin, 4);
    double y0 = floor(ymin / ystep) * ystep, y1 = ceil(ymax / ystep) * ystep;
    if (!(y1 > y0))
        y1 = y0 + ystep;
    double pw = W - L - R, ph = H - T - B;
#define PX(x) (L + ((x) - xmin) / (xmax - xmin) * pw)
#define PY(y) (T + (1 - ((y) - y0) / (y1 - y0)) * ph)

    open_svg(f, width, height, aria);
    double ticks[MAX_TICKS];
    char buf[64];
    size_t nt = linear_ticks(y0, y1, ystep, ticks);
    for (size_t i = 0; i < nt; i++) {
        fprintf(f, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", L, PY(ticks[i]),
                W - R, PY(ticks[i]));
        cli_format_human(ticks[i], yunit, buf, sizeof buf);
        label(f, "tick", L - 6, PY(ticks[i]) + 4, "end", buf);
    }
    nt = linear_ticks(xmin, xmax, nice_step(xmax - xmin, 6), ticks);
    for (size_t i = 0; i < nt; i++) {
        fprintf(f, "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", PX(ticks[i]),
                T + ph, PX(ticks[i]), T + ph + 4);
        cli_format_human(ticks[i], CLI_UNIT_S, buf, sizeof buf);
        label(f, "tick", PX(ticks[i]), H - 8, x_anchor(PX(ticks[i]), L, W - R), buf);
    }
    fprintf(f, "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", L, T + ph, W - R, T + ph);

    for (size_t l = 0; l < n_lines; l++) {
        const struct svg_line *ln = &lines[l];
        bool pen = false;
        double last_y = NAN, last_x = NAN;
        fprintf(f, "<path class=\"line c%d\" d=\"", ln->color);
        for (size_t i = 0; i < ln->n; i++) {
            double x = ln->x[i], y = ln->y[i];
            if (!isfinite(x) || !isfinite(y)) {
                pen = false;
                continue;
            }
            if (!pen)
                fprintf(f, "%sM%.1f %.1f", i ? " " : "", PX(x), PY(y));
            else
                fprintf(f, " H%.1f V%.1f", PX(x), PY(y));
            pen = true;
            last_x = x;
            last_y = y;
        }
        /* The last value holds until the snapshot shown. */
        if (pen && x_end > last_x)
            fprintf(f, " H%.1f", PX(x_end));
        fputs("\"/>\n", f);
        if (isfinite(last_y)) {
            cli_format_human(last_y, yunit, buf, sizeof buf);
            fprintf(f, "<circle class=\"dot c%d\" cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\"><title>", ln->color,
                    PX(last_x), PY(last_y));
            html_text(f, ln->label);
            fprintf(f, ": %s</title></circle>\n", buf);
        }
    }
    double lx = L;
    for (size_t l = 0; l < n_lines && n_lines > 1; l++)
        lx = legend_entry(f, lx, 14, lines[l].color, true, lines[l].label);
    if (!any)
        label(f, "empty", L + pw / 2, T + ph / 2, "middle", "no points");
    fputs("</svg>\n", f);
#undef PX
#undef PY
}

void svg_histogram(FILE *f, int width, int height, const char *aria, const struct snap_bucket *b,
                   size_t n, enum cli_unit unit, const struct svg_mark *marks, size_t n_marks)
{
    const double L = 56, R = 14, T = 10, B = 26, W = width, H = height;
    double pw = W - L - R, ph = H - T - B;
    open_svg(f, width, height, aria);
    /* Empty buckets at either end only squeeze the values into a corner. */
    size_t n_all = n;
    while (n && !b[0].count)
        b++, n--;
    while (n && !b[n - 1].count)
        n--;
    double cmax = 0;
    bool logx = n > 0;
    for (size_t i = 0; i < n; i++) {
        cmax = fmax(cmax, (double)b[i].count);
        if (!(b[i].lo > 0) || !(b[i].hi > b[i].lo) || !isfinite(b[i].hi) ||
            (i && b[i].lo < b[i - 1].lo))
            logx = false;
    }
    if (n == 0 || cmax == 0) {
        fprintf(f, "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", L, T + ph, W - R,
                T + ph);
        label(f, "empty", L + pw / 2, T + ph / 2, "middle", n_all ? "no values" : "no histogram in this snapshot");
        fputs("</svg>\n", f);
        return;
    }
    double lmin = logx ? log10(b[0].lo) : 0, lmax = logx ? log10(b[n - 1].hi) : (double)n;
    if (!(lmax > lmin))
        logx = false, lmin = 0, lmax = (double)n;
    /* x of a value: log position, or bucket index plus the fraction within it */
#define XL(v) (L + (log10(v) - lmin) / (lmax - lmin) * pw)
#define XI(i) (L + (double)(i) / (double)n * pw)
    /* Counts on a log axis when the tail would be invisible on a linear one
     * (latencies: most values in a few buckets, a long thin tail). */
    double cmin = cmax;
    for (size_t i = 0; i < n; i++)
        if (b[i].count)
            cmin = fmin(cmin, (double)b[i].count);
    bool logy = cmax / cmin >= 1000;
    double ystep = nice_step(cmax, 4), y1 = ceil(cmax / ystep) * ystep;
    double decades = logy ? ceil(log10(cmax)) : 0;
#define YH(c) (logy ? ((c) > 0 ? (log10(c) + 1) / (decades + 1) * ph : 0) : (c) / y1 * ph)
    double ticks[MAX_TICKS];
    char buf[64], lo[64], hi[64];
    size_t nt = 0;
    if (logy)
        for (double d = 0; d <= decades && nt < MAX_TICKS; d++)
            ticks[nt++] = pow(10, d);
    else
        nt = linear_ticks(0, y1, ystep, ticks);
    for (size_t i = 0; i < nt; i++) {
        double y = T + ph - YH(ticks[i]);
        fprintf(f, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", L, y, W - R, y);
        cli_format_human(ticks[i], CLI_UNIT_NONE, buf, sizeof buf);
        label(f, "tick", L - 6, y + 4, "end", buf);
    }
    if (logy)
        label(f, "tick", W - R, T + 10, "end", "count, log scale");
    for (size_t i = 0; i < n; i++) {
        double x0 = logx ? XL(b[i].lo) : XI(i), x1 = logx ? XL(b[i].hi) : XI(i + 1);
        double h = YH((double)b[i].count);
        double w = fmax(x1 - x0 - 1, 0.5);
        cli_format_human(b[i].lo, unit, lo, sizeof lo);
        cli_format_human(b[i].hi, unit, hi, sizeof hi);
        fprintf(f, "<rect class=\"bar c0\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"><title>%s \xE2\x80\x93 %s: %llu</title></rect>\n",
                x0, T + ph - h, w, h, lo, hi, (unsigned long long)b[i].count);
    }
#undef YH
    fprintf(f, "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", L, T + ph, W - R, T + ph);

    /* x labels: round values on a log axis (1, 2, 5 or every digit times a
     * power of ten, depending on the span), else bucket edges; then the ends
     * of the range where there is room. Never closer than 56 px. */
    double placed[MAX_TICKS];
    size_t np = 0;
    if (logx) {
        double span = lmax - lmin;
        for (int k = (int)floor(lmin); k <= (int)ceil(lmax); k++)
            for (int m = 1; m <= 9; m++) {
                if ((span > 2.5 && m != 1) || (span > 1 && m != 1 && m != 2 && m != 5))
                    continue;
                double v = m * pow(10, k);
                if (log10(v) < lmin - 1e-9 || log10(v) > lmax + 1e-9 || np == MAX_TICKS)
                    continue;
                double x = XL(v);
                if (np && x - placed[np - 1] < 56)
                    continue;
                cli_format_human(v, unit, buf, sizeof buf);
                fprintf(f, "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", x, T + ph,
                        x, T + ph + 4);
                label(f, "tick", x, H - 8, x_anchor(x, L, W - R), buf);
                placed[np++] = x;
            }
    } else {
        size_t step = n / 4 ? n / 4 : 1;
        for (size_t i = 0; i < n && np < MAX_TICKS; i += step) {
            double x = XI(i);
            if (np && x - placed[np - 1] < 56)
                continue;
            cli_format_human(b[i].lo, unit, buf, sizeof buf);
            label(f, "tick", x, H - 8, x_anchor(x, L, W - R), buf);
            placed[np++] = x;
        }
    }
    for (int end = 0; end < 2; end++) {
        double v = end ? b[n - 1].hi : b[0].lo, x = end ? L + pw : L;
        bool room = true;
        for (size_t i = 0; i < np && room; i++)
            room = fabs(placed[i] - x) >= 56;
        if (!room || np == MAX_TICKS)
            continue;
        cli_format_human(v, unit, buf, sizeof buf);
        label(f, "tick", x, H - 8, end ? "end" : "start", buf);
        placed[np++] = x;
    }
    for (size_t m = 0; m < n_marks; m++) {
        double v = marks[m].value, x = NAN;
        if (!isfinite(v))
            continue;
        if (logx) {
            x = v > 0 ? XL(fmin(fmax(v, b[0].lo), b[n - 1].hi)) : L;
        } else {
            size_t i = 0;
            while (i + 1 < n && v >= b[i].hi)
                i++;
            double frac = b[i].hi > b[i].lo ? (v - b[i].lo) / (b[i].hi - b[i].lo) : 0;
            x = XI((double)i + fmin(fmax(frac, 0), 1));
        }
        cli_format_human(v, unit, buf, sizeof buf);
        fprintf(f, "<line class=\"mark c%d\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"><title>", marks[m].color,
                x, T, x, T + ph);
        html_text(f, marks[m].label);
        fprintf(f, " = %s</title></line>\n", buf);
        /* labels to the left of the marker when it is near the right edge */
        bool left = x > W - R - 60;
        fprintf(f, "<text class=\"marklab c%d\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\">", marks[m].color,
                left ? x - 3 : x + 3, T + 10 + 12.0 * (double)m, left ? "end" : "start");
        html_text(f, marks[m].label);
        fputs("</text>\n", f);
    }
    fputs("</svg>\n", f);
#undef XL
#undef XI
}

void svg_bars(FILE *f, int width, const char *aria, const struct svg_bar_row *rows, size_t n_rows,
              const char *const *seg_labels, size_t n_seg, const char *mark_label, enum cli_unit unit)
{
    const double LW = 170, R = 84, T = 6, ROW = 24, W = width;
    if (n_seg > SVG_MAX_SEGMENTS)
        n_seg = SVG_MAX_SEGMENTS;
    bool legend = n_seg > 1 || mark_label;
    int height = (int)(T + ROW * (double)n_rows + (legend ? 26 : 4));
    open_svg(f, width, height, aria);
    double vmax = 0;
    for (size_t r = 0; r < n_rows; r++) {
        double sum = 0;
        for (size_t s = 0; s < n_seg; s++)
            sum += isfinite(rows[r].seg[s]) && rows[r].seg[s] > 0 ? rows[r].seg[s] : 0;
        vmax = fmax(vmax, sum);
        if (isfinite(rows[r].mark))
            vmax = fmax(vmax, rows[r].mark);
    }
    if (!(vmax > 0))
        vmax = 1;
    double pw = W - LW - R;
    char buf[64];
    for (size_t r = 0; r < n_rows; r++) {
        double y = T + ROW * (double)r, x = LW, sum = 0;
        fprintf(f, "<text class=\"rowlab\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", LW - 8, y + 14);
        html_text_trunc(f, rows[r].label, 24);
        fputs("</text>\n", f);
        for (size_t s = 0; s < n_seg; s++) {
            double v = isfinite(rows[r].seg[s]) && rows[r].seg[s] > 0 ? rows[r].seg[s] : 0;
            double w = v / vmax * pw;
            sum += v;
            cli_format_human(rows[r].seg[s], unit, buf, sizeof buf);
            fprintf(f, "<rect class=\"bar c%zu\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"16\"><title>", s, x,
                    y + 2, w);
            html_text(f, rows[r].label);
            if (seg_labels && seg_labels[s]) {
                fputs(" ", f);
                html_text(f, seg_labels[s]);
            }
            fprintf(f, ": %s</title></rect>\n", buf);
            x += w;
        }
        if (isfinite(rows[r].mark)) {
            double mx = LW + rows[r].mark / vmax * pw;
            cli_format_human(rows[r].mark, unit, buf, sizeof buf);
            fprintf(f, "<line class=\"wallmark\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"><title>", mx, y,
                    mx, y + 20);
            html_text(f, mark_label);
            fprintf(f, ": %s</title></line>\n", buf);
        }
        cli_format_human(isfinite(rows[r].mark) ? fmax(rows[r].mark, sum) : sum, unit, buf, sizeof buf);
        label(f, "tick", fmax(x, isfinite(rows[r].mark) ? LW + rows[r].mark / vmax * pw : x) + 6, y + 14,
              "start", buf);
    }
    if (legend) {
        double lx = LW, ly = T + ROW * (double)n_rows + 16;
        for (size_t s = 0; s < n_seg && n_seg > 1; s++)
            lx = legend_entry(f, lx, ly, (int)s, false, seg_labels ? seg_labels[s] : "");
        if (mark_label) {
            fprintf(f, "<line class=\"wallmark\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", lx + 5,
                    ly - 11, lx + 5, ly + 1);
            label(f, "leg", lx + 12, ly, "start", mark_label);
        }
    }
    fputs("</svg>\n", f);
}
