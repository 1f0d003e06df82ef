/* The summary of a measured span: text, JSON and CSV. */
#include "summary.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "errors.h"
#include "output.h"

/* The most carbon-intensive grids emit about 1.1-1.3 kg per kWh: above this the number is in another unit. */
#define MAX_GCO2_PER_KWH 3000.0

static int carbon_number(const char *cmd, const char *var, const char *example, double max, double *out) {
    const char *text = secure_getenv(var);
    *out = NAN;
    if (!text || !*text) return 0;
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    while (end && (*end == ' ' || *end == '\t')) end++;
    const char *why = NULL;
    if (end == text || !end || *end) why = "is not a number";
    else if (errno == ERANGE || !isfinite(v)) why = "is not finite";
    else if (v < 0) why = "is negative";
    else if (v > max) why = "is above 3000 g/kWh, more than any grid emits (0.38 kg/kWh is 380)";
    if (why) {
        jc_cli_err("%s='%s' %s: set it to a number >= 0 such as %s, or unset it (joulecap %s did not start)", var,
                   text, why, example, cmd);
        return JC_EXIT_USAGE;
    }
    *out = v;
    return 0;
}

int jc_cli_carbon_from_env(const char *cmd, jc_cli_carbon *c) {
    memset(c, 0, sizeof *c);
    int rc = carbon_number(cmd, "JOULECAP_GRID_GCO2_PER_KWH", "380 (grams of CO2e per kWh)", MAX_GCO2_PER_KWH,
                           &c->gco2_per_kwh);
    if (!rc) rc = carbon_number(cmd, "JOULECAP_PRICE_PER_KWH", "0.32 (the price of one kWh)", INFINITY,
                                &c->price_per_kwh);
    if (rc) return rc;
    const char *cur = secure_getenv("JOULECAP_CURRENCY");
    if (cur && *cur) {
        size_t n = strlen(cur);
        int ok = n < sizeof c->currency && n <= 8 * 4; /* up to 8 characters, some of them multibyte */
        for (const unsigned char *p = (const unsigned char *)cur; ok && *p; p++)
            ok = *p > ' ' && *p != 0x7f && !strchr(",;\"'=#", *p);
        if (!ok) {
            jc_cli_err("JOULECAP_CURRENCY='%s': set a short code such as EUR, USD or $ (no spaces, commas, quotes or "
                       "control characters), or unset it (joulecap %s did not start)", cur, cmd);
            return JC_EXIT_USAGE;
        }
        snprintf(c->currency, sizeof c->currency, "%s", cur);
    }
    return 0;
}

static int carbon_set(const jc_cli_carbon *c) { return isfinite(c->gco2_per_kwh) || isfinite(c->price_per_kwh); }

int jc_cli_summary_collect(jc_context *ctx, jc_window w, double timeout_s, jc_cli_summary *s) {
    s->ndev = jc_device_count(ctx);
    if (s->ndev > JC_MAX_DEVICES) s->ndev = JC_MAX_DEVICES;
    for (int i = 0; i < s->ndev; i++) {
        if (jc_device_info_get(ctx, i, &s->info[i]) != JC_OK) {
            memset(&s->info[i], 0, sizeof s->info[i]);
            s->info[i].kind = i ? JC_DEVICE_GPU : JC_DEVICE_CPU;
            s->info[i].index = i ? i - 1 : -1;
        }
    }
    memset(&s->result, 0, sizeof s->result);
    jc_status st = jc_window_result_get(ctx, w, timeout_s, &s->result);
    if (st == JC_OK) {
        s->resolved = 1;
    } else if (st == JC_ERR_TIMEOUT) {
        s->resolved = 0;
        jc_cli_err("warning: the samples covering the end of the measurement did not arrive within %g s (%s); "
                   "the energies below are the best estimate so far", timeout_s, jc_last_detail());
    } else {
        jc_cli_err("cannot compute the energy: %s: %s", jc_strerror(st), jc_last_detail());
        return JC_EXIT_FAILURE;
    }
    if (s->result.device_count < s->ndev) s->ndev = s->result.device_count;
    return 0;
}

static double total_energy(const jc_cli_summary *s, int *nmeasured) {
    double t = 0;
    int n = 0;
    for (int i = 0; i < s->ndev; i++) {
        if (isfinite(s->result.energy_j[i])) {
            t += s->result.energy_j[i];
            n++;
        }
    }
    if (nmeasured) *nmeasured = n;
    return n ? t : NAN;
}

static double avg_power(double e, double elapsed) { return (isfinite(e) && elapsed > 0) ? e / elapsed : NAN; }
void jc_cli_summary_text(FILE *f, const jc_cli_summary *s) {
    char cmd[512], num[64], pw[64], label[32];
    fputc('\n', f);
    if (s->command) {
        jc_cli_join_command(s->command, cmd, sizeof cmd);
        if (s->has_status && WIFSIGNALED(s->wait_status))
            fprintf(f, " Energy of: %s   (killed by signal %d, %s)\n\n", cmd, WTERMSIG(s->wait_status),
                    strsignal(WTERMSIG(s->wait_status)));
        else if (s->has_status)
            fprintf(f, " Energy of: %s   (exit status %d)\n\n", cmd, s->exit_code);
        else
            fprintf(f, " Energy of: %s\n\n", cmd);
    } else {
        fprintf(f, " Energy while monitoring:\n\n");
    }
    double el = s->result.elapsed_s;
    snprintf(num, sizeof num, "%.*f", el < 0.1 ? 6 : 3, el);
    fprintf(f, " %14s s  elapsed\n", num);
    for (int i = 0; i < s->ndev; i++) {
        const jc_device_info *d = &s->info[i];
        double e = s->result.energy_j[i];
        jc_cli_device_label(d, label, sizeof label);
        jc_energy_source src = s->result.source[i];
        if (!isfinite(e)) {
            fprintf(f, " %14s    %-6s not measured: %s\n", "-", label,
                    d->energy_note[0] ? d->energy_note : jc_energy_source_name(src));
            continue;
        }
        snprintf(num, sizeof num, "%.*f", fabs(e) < 1 ? 6 : 3, e);
        snprintf(pw, sizeof pw, "%.1f W", avg_power(e, el));
        if (src == JC_SOURCE_ESTIMATE) {
            /* "(estimate: why)", and the model on a line of its own */
            const char *why = jc_cli_estimate_reason(d->energy_note);
            const char *model = strstr(why, "; model: ");
            int wl = model ? (int)(model - why) : (int)strlen(why);
            fprintf(f, " %14s J  %-6s %10s  (estimate: %.*s)\n", num, label, pw, wl, why);
            if (model) fprintf(f, " %14s    %-6s %10s  model: %s\n", "", "", "", model + 9);
        } else
            fprintf(f, " %14s J  %-6s %10s  %s%s(%s)\n", num, label, pw, d->kind == JC_DEVICE_GPU ? d->name : "",
                    d->kind == JC_DEVICE_GPU ? " " : "", jc_energy_source_name(src));
        double u = s->result.uncertainty_j[i];
        if (isfinite(u) && u >= 0.0005 && src != JC_SOURCE_ESTIMATE)
            fprintf(f, " %14s    %-6s %10s  +/- %.3g J (95%%)\n", "", "", "", u);
        if (s->result.coverage[i] < 1)
            fprintf(f, " %14s    %-6s %10s  PARTIAL: covers %.1f%% of the time (%s: %s)\n", "", "", "",
                    100 * s->result.coverage[i], jc_health_name(d->health), d->health_note);
        else if (s->result.health[i] != JC_HEALTH_OK)
            fprintf(f, " %14s    %-6s %10s  %s during the run: %s\n", "", "", "",
                    jc_health_name(s->result.health[i]), d->health_note[0] ? d->health_note : "see joulecap info");
    }
    int nm = 0;
    double t = total_energy(s, &nm);
    if (nm > 1) {
        snprintf(num, sizeof num, "%.*f", fabs(t) < 1 ? 6 : 3, t);
        snprintf(pw, sizeof pw, "%.1f W", avg_power(t, el));
        int partial = 0;
        for (int i = 0; i < s->ndev; i++) partial |= isfinite(s->result.energy_j[i]) && s->result.coverage[i] < 1;
        fprintf(f, " %14s J  %-6s %10s  average power%s\n", num, "total", pw,
                partial ? " (PARTIAL: a device above covers only part of the time)" : "");
    }
    const jc_cli_carbon *c = &s->carbon;
    if (carbon_set(c) && isfinite(t)) {
        double kwh = t / JC_J_PER_KWH;
        fprintf(f, " %14.6g kWh", kwh);
        if (isfinite(c->gco2_per_kwh)) fprintf(f, ", %.4g gCO2e (at %g g/kWh)", kwh * c->gco2_per_kwh, c->gco2_per_kwh);
        if (isfinite(c->price_per_kwh))
            fprintf(f, ", %.4g %s (at %g/kWh)", kwh * c->price_per_kwh, c->currency[0] ? c->currency : "(currency unset)",
                    c->price_per_kwh);
        fputc('\n', f);
    }
    if (!s->resolved) fprintf(f, " (not fully resolved: the last samples were late; values are estimates)\n");
    fputc('\n', f);
}

static const char *dev_prefix(const jc_device_info *d, char *buf, size_t len) {
    if (d->kind == JC_DEVICE_CPU)
        snprintf(buf, len, "cpu");
    else
        snprintf(buf, len, "gpu%d", d->index);
    return buf;
}

void jc_cli_summary_json(FILE *f, const jc_cli_summary *s, const char *extra_key, const char *extra_val,
                         double interval_s) {
    int first = 1;
    char key[64], pre[32];
    double el = s->result.elapsed_s;
    fputc('{', f);
    jc_json_key(f, &first, "joulecap_version");
    jc_json_str(f, jc_version());
    if (s->command) {
        jc_json_key(f, &first, "command");
        fputc('[', f);
        for (int i = 0; s->command[i]; i++) {
            if (i) fputc(',', f);
            jc_json_str(f, s->command[i]);
        }
        fputc(']', f);
        jc_json_key(f, &first, "exit_status");
        if (s->has_status && WIFEXITED(s->wait_status)) fprintf(f, "%d", WEXITSTATUS(s->wait_status));
        else fputs("null", f);
        jc_json_key(f, &first, "signal");
        if (s->has_status && WIFSIGNALED(s->wait_status)) fprintf(f, "%d", WTERMSIG(s->wait_status));
        else fputs("null", f);
    }
    if (s->stop_signal) {
        jc_json_key(f, &first, "stopped_by_signal");
        fprintf(f, "%d", s->stop_signal);
    }
    if (extra_key) {
        jc_json_key(f, &first, extra_key);
        jc_json_str(f, extra_val);
    }
    if (interval_s > 0) {
        jc_json_key(f, &first, "interval_s");
        jc_json_num(f, interval_s);
    }
    jc_json_key(f, &first, "elapsed_s");
    jc_json_num(f, el);
    jc_json_key(f, &first, "resolved");
    fputs(s->resolved ? "true" : "false", f);
    int nm = 0;
    double t = total_energy(s, &nm);
    jc_json_key(f, &first, "total_energy_j");
    jc_json_num(f, t);
    jc_json_key(f, &first, "average_power_w");
    jc_json_num(f, avg_power(t, el));
    if (carbon_set(&s->carbon)) {
        jc_json_key(f, &first, "total_energy_kwh");
        jc_json_num(f, t / JC_J_PER_KWH);
        if (isfinite(s->carbon.gco2_per_kwh)) {
            jc_json_key(f, &first, "grid_gco2_per_kwh");
            jc_json_num(f, s->carbon.gco2_per_kwh);
            jc_json_key(f, &first, "gco2e");
            jc_json_num(f, t / JC_J_PER_KWH * s->carbon.gco2_per_kwh);
        }
        if (isfinite(s->carbon.price_per_kwh)) {
            jc_json_key(f, &first, "price_per_kwh");
            jc_json_num(f, s->carbon.price_per_kwh);
            jc_json_key(f, &first, "cost");
            jc_json_num(f, t / JC_J_PER_KWH * s->carbon.price_per_kwh);
            jc_json_key(f, &first, "currency");
            jc_json_str(f, s->carbon.currency);
        }
    }
    /* Flat keys, the same names as the CSV columns, for scripts. */
    for (int i = 0; i < s->ndev; i++) {
        dev_prefix(&s->info[i], pre, sizeof pre);
        snprintf(key, sizeof key, "%s_energy_j", pre);
        jc_json_key(f, &first, key);
        jc_json_num(f, s->result.energy_j[i]);
        snprintf(key, sizeof key, "%s_energy_kwh", pre);
        jc_json_key(f, &first, key);
        jc_json_num(f, s->result.energy_j[i] / JC_J_PER_KWH);
        snprintf(key, sizeof key, "%s_energy_source", pre);
        jc_json_key(f, &first, key);
        jc_json_str(f, jc_energy_source_name(s->result.source[i]));
        snprintf(key, sizeof key, "%s_coverage", pre);
        jc_json_key(f, &first, key);
        jc_json_num(f, s->result.coverage[i]);
        snprintf(key, sizeof key, "%s_uncertainty_j", pre);
        jc_json_key(f, &first, key);
        jc_json_num(f, s->result.uncertainty_j[i]);
        snprintf(key, sizeof key, "%s_state", pre);
        jc_json_key(f, &first, key);
        jc_json_str(f, jc_health_name(s->result.health[i]));
    }
    jc_json_key(f, &first, "devices");
    fputc('[', f);
    for (int i = 0; i < s->ndev; i++) {
        const jc_device_info *d = &s->info[i];
        int f2 = 1;
        if (i) fputc(',', f);
        fputc('{', f);
        jc_json_key(f, &f2, "kind");
        jc_json_str(f, d->kind == JC_DEVICE_CPU ? "cpu" : "gpu");
        jc_json_key(f, &f2, "index");
        if (d->kind == JC_DEVICE_CPU) fputs("null", f);
        else fprintf(f, "%d", d->index);
        jc_json_key(f, &f2, "name");
        jc_json_str(f, d->name);
        if (d->kind == JC_DEVICE_GPU) {
            jc_json_key(f, &f2, "uuid");
            jc_json_str(f, d->uuid);
        }
        jc_json_key(f, &f2, "energy_j");
        jc_json_num(f, s->result.energy_j[i]);
        jc_json_key(f, &f2, "energy_kwh");
        jc_json_num(f, s->result.energy_j[i] / JC_J_PER_KWH);
        jc_json_key(f, &f2, "average_power_w");
        jc_json_num(f, avg_power(s->result.energy_j[i], el));
        jc_json_key(f, &f2, "energy_source");
        jc_json_str(f, jc_energy_source_name(s->result.source[i]));
        jc_json_key(f, &f2, "estimate");
        fputs(s->result.source[i] == JC_SOURCE_ESTIMATE ? "true" : "false", f);
        jc_json_key(f, &f2, "energy_note");
        jc_json_str(f, d->energy_note);
        jc_json_key(f, &f2, "coverage");
        jc_json_num(f, s->result.coverage[i]);
        jc_json_key(f, &f2, "uncertainty_j");
        jc_json_num(f, s->result.uncertainty_j[i]);
        jc_json_key(f, &f2, "state");
        jc_json_str(f, jc_health_name(s->result.health[i]));
        jc_json_key(f, &f2, "state_note");
        jc_json_str(f, d->health_note);
        fputc('}', f);
    }
    fputc(']', f);
    fputs("}\n", f);
}

void jc_cli_summary_csv(FILE *f, const jc_cli_summary *s) {
    char pre[32];
    fputs("elapsed_s", f);
    for (int i = 0; i < s->ndev; i++) fprintf(f, ",%s_energy_kwh", dev_prefix(&s->info[i], pre, sizeof pre));
    for (int i = 0; i < s->ndev; i++) fprintf(f, ",%s_energy_j", dev_prefix(&s->info[i], pre, sizeof pre));
    for (int i = 0; i < s->ndev; i++) fprintf(f, ",%s_energy_source", dev_prefix(&s->info[i], pre, sizeof pre));
    const jc_cli_carbon *c = &s->carbon;
    /* Carbon columns only where an intensity or price is set: the seed's columns stay as they were. */
    if (carbon_set(c)) fputs(",total_energy_kwh", f);
    if (isfinite(c->gco2_per_kwh)) fputs(",grid_gco2_per_kwh,gco2e", f);
    if (isfinite(c->price_per_kwh)) fputs(",price_per_kwh,cost,currency", f);
    fputc('\n', f);
    jc_csv_num(f, s->result.elapsed_s);
    for (int i = 0; i < s->ndev; i++) {
        fputc(',', f);
        jc_csv_num(f, s->result.energy_j[i] / JC_J_PER_KWH);
    }
    for (int i = 0; i < s->ndev; i++) {
        fputc(',', f);
        jc_csv_num(f, s->result.energy_j[i]);
    }
    for (int i = 0; i < s->ndev; i++) {
        fputc(',', f);
        jc_csv_str(f, jc_energy_source_name(s->result.source[i]));
    }
    double kwh = total_energy(s, NULL) / JC_J_PER_KWH;
    if (carbon_set(c)) {
        fputc(',', f);
        jc_csv_num(f, kwh);
    }
    if (isfinite(c->gco2_per_kwh)) {
        fputc(',', f);
        jc_csv_num(f, c->gco2_per_kwh);
        fputc(',', f);
        jc_csv_num(f, kwh * c->gco2_per_kwh);
    }
    if (isfinite(c->price_per_kwh)) {
        fputc(',', f);
        jc_csv_num(f, c->price_per_kwh);
        fputc(',', f);
        jc_csv_num(f, kwh * c->price_per_kwh);
        fputc(',', f);
        jc_csv_str(f, c->currency);
    }
    fputc('\n', f);
}

