/* Power caps outside sessions: limits and who manages them, persistent caps (`joulecap cap set`), reset, and
 * the repair of journals left behind (`joulecap cap restore`). */
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caps_internal.h"
#include "client.h"

void jc_cap_options_init(jc_cap_options *opts) {
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}

const char *jc_cap_manager_name(jc_cap_manager manager) {
    switch (manager) {
    case JC_CAP_MANAGER_NONE: return "none";
    case JC_CAP_MANAGER_SESSION: return "session";
    case JC_CAP_MANAGER_PERSISTENT: return "persistent";
    case JC_CAP_MANAGER_STALE: return "stale";
    case JC_CAP_MANAGER_DAMAGED: return "damaged";
    }
    return "unknown";
}

const char *jc_cap_reset_kind_name(jc_cap_reset_kind kind) {
    switch (kind) {
    case JC_CAP_RESET_NONE: return "none";
    case JC_CAP_RESET_SAVED: return "saved";
    case JC_CAP_RESET_DEFAULT: return "default";
    }
    return "unknown";
}

const char *jc_cap_restore_action_name(jc_cap_restore_action action) {
    switch (action) {
    case JC_CAP_RESTORED: return "restored";
    case JC_CAP_LEFT_LIVE: return "left-live";
    case JC_CAP_RESTORE_FAILED: return "failed";
    }
    return "unknown";
}

jc_status jc_cap_state_dir(const jc_cap_options *opts, char *buf, size_t len) {
    if (opts && jc__check_size(opts->size, sizeof *opts, "jc_cap_options") != JC_OK) return JC_ERR_INVALID_ARGUMENT;
    jc__clear_detail();
    if (!buf || len == 0) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_cap_state_dir: no buffer");
    return jc__cap_dir(opts, buf, len, 0);
}

jc_status jc_cap_list(const jc_cap_options *opts, jc_cap_info *out, int max, int *count) {
    if (opts && jc__check_size(opts->size, sizeof *opts, "jc_cap_options") != JC_OK) return JC_ERR_INVALID_ARGUMENT;
    jc__clear_detail();
    if (!count || (max > 0 && !out)) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_cap_list: NULL argument");
    *count = 0;
    if (jc__capd_route(NULL, 0)) return jc__capd_list(opts, out, max, count);
    char dir[512];
    int have_dir = jc__cap_dir(opts, dir, sizeof dir, 0) == JC_OK;
    jc__nvml *nvml = NULL;
    char why[512];
    jc_status st = jc__nvml_open(&nvml, why, sizeof why);
    if (st != JC_OK) return st;
    jc__capgpu *gpus = calloc(JC__CAP_MAX_GPUS, sizeof *gpus);
    if (!gpus) {
        jc__nvml_close(nvml);
        return jc__fail(JC_ERR_NO_MEMORY, "out of memory");
    }
    int n = 0;
    st = jc__capgpu_select(nvml, opts ? opts->gpus : NULL, gpus, JC__CAP_MAX_GPUS, &n);
    for (int i = 0; st == JC_OK && i < n && i < max; i++) jc__capgpu_describe(&gpus[i], have_dir ? dir : NULL, &out[i]);
    if (st == JC_OK) {
        *count = n < max ? n : max;
        jc__clear_detail();
    }
    free(gpus);
    jc__nvml_close(nvml);
    return st;
}

jc_status jc_cap_info_get(const char *gpu, const jc_cap_options *opts, jc_cap_info *out) {
    if (opts && jc__check_size(opts->size, sizeof *opts, "jc_cap_options") != JC_OK) return JC_ERR_INVALID_ARGUMENT;
    jc__clear_detail();
    if (!gpu || !out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_cap_info_get: NULL argument");
    jc_cap_options o;
    if (opts) o = *opts;
    else jc_cap_options_init(&o);
    o.gpus = gpu;
    jc_cap_info two[2];
    int n = 0;
    jc_status st = jc_cap_list(&o, two, 2, &n);
    if (st != JC_OK) return st;
    if (n != 1)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "'%s' selects %d GPUs: name exactly one (a CUDA index or a UUID)",
                        gpu, n);
    *out = two[0];
    if (out->status != JC_OK) {
        char label[64];
        if (out->index >= 0) jc__fmt(label, sizeof label, "GPU %d", out->index);
        else jc__fmt(label, sizeof label, "NVML GPU %d", out->nvml_index);
        return jc__fail(out->status, "%s cannot be used: %s", label, out->error);
    }
    return JC_OK;
}

/* ------------------------------------------------------------------------------------------------------
 * Shared by set / reset / restore: NVML, the state directory and the GPUs of a selection.
 * ---------------------------------------------------------------------------------------------------- */

typedef struct standalone {
    jc__nvml *nvml;
    char dir[512];
    jc__capgpu *gpus;
    int n;
} standalone;

static void standalone_close(standalone *s) {
    free(s->gpus);
    jc__nvml_close(s->nvml);
    memset(s, 0, sizeof *s);
}

/* all_nvml: every GPU NVML counts, unidentified ones included (for restore).  Else the selection's GPUs:
 * one that NVML cannot identify is an error when the selection names it, and is skipped (said in note)
 * when the selection is "all". */
static jc_status standalone_open(standalone *s, const jc_cap_options *opts, const char *sel, int all_nvml,
                                 char *note, size_t note_len) {
    memset(s, 0, sizeof *s);
    jc_status st = jc__cap_dir(opts, s->dir, sizeof s->dir, 1);
    if (st != JC_OK) return st;
    char why[512];
    st = jc__nvml_open(&s->nvml, why, sizeof why);
    if (st != JC_OK) return st;
    s->gpus = calloc(JC__CAP_MAX_GPUS, sizeof *s->gpus);
    if (!s->gpus) {
        standalone_close(s);
        return jc__fail(JC_ERR_NO_MEMORY, "out of memory");
    }
    st = all_nvml ? jc__capgpu_all(s->nvml, s->gpus, JC__CAP_MAX_GPUS, &s->n)
                  : jc__capgpu_select(s->nvml, sel, s->gpus, JC__CAP_MAX_GPUS, &s->n);
    if (st == JC_OK && !all_nvml) {
        int k = 0;
        jc_status first_bad = JC_OK;
        char bad[1024] = "";
        for (int i = 0; i < s->n; i++) {
            jc_status u = jc__capgpu_usable(&s->gpus[i]);
            if (u == JC_OK) {
                s->gpus[k++] = s->gpus[i];
                continue;
            }
            if (first_bad == JC_OK) {
                first_bad = u;
                jc__fmt(bad, sizeof bad, "%s", jc_last_detail());
            }
            jc__note_append(note, note_len, "%s", jc_last_detail());
        }
        s->n = k;
        if (first_bad != JC_OK && (!jc__sel_is_all(sel) || k == 0)) st = jc__fail(first_bad, "%s", bad);
        else jc__clear_detail();
    }
    if (st == JC_OK && s->n == 0 && !all_nvml)
        st = jc__fail(JC_ERR_NOT_FOUND, "the selection '%s' names no GPU", sel ? sel : "all");
    if (st != JC_OK) standalone_close(s);
    return st;
}

/* ------------------------------------------------------------------------------------------------------
 * Persistent caps.
 * ---------------------------------------------------------------------------------------------------- */

jc_status jc_cap_set_persistent(const char *gpu, double watts, const jc_cap_options *opts, char *note,
                                size_t note_len) {
    if (opts && jc__check_size(opts->size, sizeof *opts, "jc_cap_options") != JC_OK) return JC_ERR_INVALID_ARGUMENT;
    jc__clear_detail();
    if (note && note_len) note[0] = '\0';
    if (jc__capd_route(NULL, 0)) return jc__capd_set_persistent(gpu, watts, note, note_len);
    standalone s;
    jc_status st = standalone_open(&s, opts, gpu, 0, note, note_len);
    if (st != JC_OK) return st;
    unsigned mw[JC__CAP_MAX_GPUS];
    /* Everything is checked on every GPU before any limit changes. */
    for (int i = 0; st == JC_OK && i < s.n; i++) st = jc__capgpu_check(&s.gpus[i], watts, &mw[i]);
    for (int i = 0; st == JC_OK && i < s.n; i++) {
        int fd = -1;
        st = jc__cap_lock(s.dir, s.gpus[i].id.uuid, &fd);
        if (st != JC_OK) break;
        jc__journal j;
        int exists = 0;
        st = jc__journal_read(s.dir, s.gpus[i].id.uuid, &j, &exists);
        if (st == JC_OK && exists && jc__journal_manager(&j) == JC_CAP_MANAGER_SESSION) st = jc__journal_busy(&j, &s.gpus[i]);
        if (st == JC_OK) st = jc__capgpu_probe(s.nvml, &s.gpus[i]);
        jc__cap_unlock(fd);
    }
    for (int i = 0; st == JC_OK && i < s.n; i++) {
        jc__capgpu *g = &s.gpus[i];
        int fd = -1;
        st = jc__cap_lock(s.dir, g->id.uuid, &fd);
        if (st != JC_OK) break;
        jc__journal j;
        int exists = 0;
        st = jc__journal_read(s.dir, g->id.uuid, &j, &exists);
        if (st == JC_OK) st = jc__journal_repair_stale(s.nvml, s.dir, g, &j, &exists, note, note_len);
        if (st == JC_OK && exists && jc__journal_manager(&j) == JC_CAP_MANAGER_SESSION) st = jc__journal_busy(&j, g);
        if (st == JC_OK) {
            jc__capgpu_read_limits(s.nvml, g);
            int had = exists;
            if (!exists) {
                memset(&j, 0, sizeof j);
                jc__fmt(j.uuid, sizeof j.uuid, "%s", g->id.uuid);
                j.original_mw = g->limit_mw;
                j.created = jc__wall_time();
            }
            unsigned prev = j.set_mw, before = g->limit_mw, now = 0;
            j.set_mw = mw[i];
            jc__proc_cmdline(getpid(), j.owner_command, sizeof j.owner_command);
            st = jc__journal_write(s.dir, &j);
            if (st == JC_OK && (st = jc__capgpu_set(s.nvml, g, mw[i], &now)) != JC_OK) {
                /* The journal must say what the GPU reports, not what was asked. */
                char detail[1024];
                jc__fmt(detail, sizeof detail, "%s", jc_last_detail());
                unsigned keep = jc__set_mw_after_failure(prev, before, now, mw[i]);
                if (!had && keep == 0) {
                    jc__journal_remove(s.dir, g->id.uuid);
                } else if (keep != mw[i]) {
                    j.set_mw = keep;
                    jc__journal_write(s.dir, &j);
                }
                jc__fail(st, "%s", detail);
            }
        }
        jc__cap_unlock(fd);
    }
    standalone_close(&s);
    if (st == JC_OK) jc__clear_detail();
    return st;
}

/* Restores a journal not owned by a live session until none is left (a stale session over a persistent cap
 * takes two steps).  *restored_mw gets the last limit put back. */
static jc_status restore_all_steps(jc__nvml *nvml, const char *dir, const jc__capgpu *g, jc__journal *j,
                                   int *exists, unsigned *restored_mw) {
    *restored_mw = 0;
    for (int step = 0; step < 4 && *exists; step++) {
        if (jc__journal_manager(j) == JC_CAP_MANAGER_SESSION) return JC_OK;
        unsigned r = 0;
        int more = 0;
        jc_status st = jc__journal_restore_step(nvml, dir, j, g, &r, &more);
        if (st != JC_OK) return st;
        if (r) *restored_mw = r;
        st = jc__journal_read(dir, g->id.uuid, j, exists);
        if (st != JC_OK) return st;
    }
    return JC_OK;
}

jc_status jc_cap_reset(const char *gpu, const jc_cap_options *opts, jc_cap_reset_kind *did, double *limit_w,
                       char *note, size_t note_len) {
    if (opts && jc__check_size(opts->size, sizeof *opts, "jc_cap_options") != JC_OK) return JC_ERR_INVALID_ARGUMENT;
    jc__clear_detail();
    if (did) *did = JC_CAP_RESET_NONE;
    if (limit_w) *limit_w = NAN;
    if (note && note_len) note[0] = '\0';
    if (!gpu) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_cap_reset: no GPU");
    if (jc__capd_route(NULL, 0)) return jc__capd_reset(gpu, did, limit_w, note, note_len);
    standalone s;
    jc_status st = standalone_open(&s, opts, gpu, 0, note, note_len);
    if (st != JC_OK) return st;
    if (s.n != 1) {
        standalone_close(&s);
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "'%s' selects %d GPUs: name exactly one (a CUDA index or a UUID)",
                        gpu, s.n);
    }
    jc__capgpu *g = &s.gpus[0];
    char label[256];
    jc__capgpu_label(g, label, sizeof label);
    int fd = -1;
    st = jc__cap_lock(s.dir, g->id.uuid, &fd);
    if (st == JC_OK) {
        jc__journal j;
        int exists = 0;
        st = jc__journal_read(s.dir, g->id.uuid, &j, &exists);
        if (st == JC_OK && exists && jc__journal_manager(&j) == JC_CAP_MANAGER_SESSION) st = jc__journal_busy(&j, g);
        if (st == JC_OK && exists) {
            jc_cap_manager was = jc__journal_manager(&j);
            unsigned saved = j.original_mw;
            unsigned restored = 0;
            st = restore_all_steps(s.nvml, s.dir, g, &j, &exists, &restored);
            if (st == JC_OK) {
                if (did) *did = JC_CAP_RESET_SAVED;
                jc__note_append(note, note_len, "%s: put back the limit saved before joulecap changed it (%g W)%s", label,
                       (restored ? restored : saved) / 1000.0,
                       was == JC_CAP_MANAGER_STALE ? ", left by a dead process" : "");
            }
        } else if (st == JC_OK) {
            if (!g->default_mw)
                st = jc__fail(JC_ERR_NOT_SUPPORTED, "%s does not report its default power limit", label);
            else
                st = jc__capgpu_set(s.nvml, g, g->default_mw, NULL);
            if (st == JC_OK) {
                if (did) *did = JC_CAP_RESET_DEFAULT;
                jc__note_append(note, note_len, "%s: joulecap had not changed its limit; set the default limit %g W", label,
                       g->default_mw / 1000.0);
            }
        }
        jc__cap_unlock(fd);
    }
    if (st == JC_OK) {
        jc__capgpu_read_limits(s.nvml, g);
        if (limit_w) *limit_w = jc__w_of(g->limit_mw);
        jc__clear_detail();
    }
    standalone_close(&s);
    return st;
}

/* ------------------------------------------------------------------------------------------------------
 * Repair.
 * ---------------------------------------------------------------------------------------------------- */

jc_status jc_cap_restore(const jc_cap_options *opts, jc_cap_restore_entry *out, int max, int *count) {
    if (opts && jc__check_size(opts->size, sizeof *opts, "jc_cap_options") != JC_OK) return JC_ERR_INVALID_ARGUMENT;
    jc__clear_detail();
    if (count) *count = 0;
    if (max > 0 && !out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_cap_restore: NULL entries");
    if (jc__capd_route(NULL, 0)) return jc__capd_restore(opts, out, max, count);
    char dir[512];
    jc_status st = jc__cap_dir(opts, dir, sizeof dir, 1);
    if (st != JC_OK) return st;
    /* The journals there, by file name: a damaged one is reported, never skipped. */
    enum { MAXJ = JC__CAP_MAX_GPUS * 4 };
    char (*stems)[128] = calloc(MAXJ, sizeof *stems);
    if (!stems) return jc__fail(JC_ERR_NO_MEMORY, "out of memory");
    int nj = jc__journal_list(dir, stems, MAXJ);
    if (nj <= 0) {
        free(stems);
        if (nj < 0) return JC_ERR_IO;
        jc__clear_detail();
        return JC_OK;
    }
    standalone s;
    st = standalone_open(&s, opts, NULL, 1, NULL, 0);
    if (st != JC_OK) {
        free(stems);
        return st;
    }
    /* Restricted to a selection: the UUIDs it names; a selected GPU NVML cannot identify is a failure. */
    jc_status first = JC_OK;
    int written = 0;
    char (*want)[96] = NULL;
    int nwant = -1;
    if (opts && opts->gpus) {
        jc__capgpu *sel = calloc(JC__CAP_MAX_GPUS, sizeof *sel);
        want = calloc(JC__CAP_MAX_GPUS, sizeof *want);
        if (!sel || !want) first = jc__fail(JC_ERR_NO_MEMORY, "out of memory");
        if (first == JC_OK) first = jc__capgpu_select(s.nvml, opts->gpus, sel, JC__CAP_MAX_GPUS, &nwant);
        jc_status unusable = JC_OK; /* the first selected GPU NVML cannot identify: an entry, not a stop */
        for (int i = 0; first == JC_OK && i < nwant; i++) {
            jc__fmt(want[i], sizeof want[0], "%s", sel[i].id.uuid);
            if (jc__capgpu_usable(&sel[i]) == JC_OK) continue;
            if (unusable == JC_OK) unusable = sel[i].status;
            jc_cap_restore_entry ent;
            memset(&ent, 0, sizeof ent);
            ent.index = sel[i].cuda_index;
            ent.limit_w = NAN;
            ent.action = JC_CAP_RESTORE_FAILED;
            ent.status = sel[i].status;
            jc__fmt(ent.note, sizeof ent.note, "%s", jc_last_detail());
            if (written < max) out[written++] = ent;
        }
        free(sel);
        if (first != JC_OK) {
            free(want);
            free(stems);
            standalone_close(&s);
            return first;
        }
        first = unusable;
    }
    /* GPUs NVML lists but cannot identify: a journal of a GPU not found may be one of them. */
    char lost[300] = "";
    for (int i = 0; i < s.n; i++)
        if (s.gpus[i].status != JC_OK && !lost[0])
            jc__fmt(lost, sizeof lost, "; NVML cannot identify NVML GPU %d (%s): if that is it, run 'joulecap cap "
                    "restore' again once it is back", s.gpus[i].nvml_index, s.gpus[i].why);
    for (int k = 0; k < nj; k++) {
        const char *stem = stems[k];
        if (nwant >= 0) {
            int in = 0;
            for (int i = 0; i < nwant; i++) in |= want[i][0] && strcmp(want[i], stem) == 0;
            if (!in) continue;
        }
        jc_cap_restore_entry ent;
        memset(&ent, 0, sizeof ent);
        jc__fmt(ent.uuid, sizeof ent.uuid, "%s", stem);
        ent.index = -1;
        ent.limit_w = NAN;
        const jc__capgpu *g = NULL;
        for (int i = 0; i < s.n; i++)
            if (s.gpus[i].status == JC_OK && strcmp(s.gpus[i].id.uuid, stem) == 0) g = &s.gpus[i];
        if (g) ent.index = g->cuda_index;
        jc_status est = JC_OK;
        int fd = -1;
        if (!jc__cap_name_ok(stem)) {
            est = jc__fail(JC_ERR_IO, "%s/%s.journal is not named after a GPU UUID: not a joulecap journal; kept "
                           "(check what it is, then remove it)", dir, stem);
            ent.was = JC_CAP_MANAGER_DAMAGED;
        } else {
            est = jc__cap_lock(dir, stem, &fd);
        }
        if (est == JC_OK) {
            jc__journal j;
            int exists = 0;
            est = jc__journal_read(dir, stem, &j, &exists);
            if (est != JC_OK) ent.was = JC_CAP_MANAGER_DAMAGED;
            if (est == JC_OK && !exists) {
                jc__cap_unlock(fd);
                continue; /* repaired meanwhile (by its guardian) */
            }
            if (est == JC_OK) { /* (the journal's uuid is its file's name) */
                ent.owner_pid = j.owner_pid;
                ent.was = jc__journal_manager(&j);
                if (!g) est = jc__fail(JC_ERR_NOT_FOUND, "GPU %s is not on this machine now (NVML does not list it)%s; "
                                       "its journal is kept", j.uuid, lost);
            }
            if (est == JC_OK) {
                if (ent.was == JC_CAP_MANAGER_SESSION) {
                    char owner[400];
                    jc__journal_owner_text(&j, owner, sizeof owner);
                    ent.action = JC_CAP_LEFT_LIVE;
                    jc__fmt(ent.note, sizeof ent.note, "owned by the live %s: left alone", owner);
                } else {
                    unsigned restored = 0;
                    unsigned saved = j.original_mw;
                    est = restore_all_steps(s.nvml, dir, g, &j, &exists, &restored);
                    if (est == JC_OK) {
                        ent.action = JC_CAP_RESTORED;
                        ent.limit_w = (restored ? restored : saved) / 1000.0;
                        if (ent.was == JC_CAP_MANAGER_STALE)
                            jc__fmt(ent.note, sizeof ent.note, "process %d died leaving its cap (guardian gone "
                                    "too): put back %g W", ent.owner_pid, ent.limit_w);
                        else
                            jc__fmt(ent.note, sizeof ent.note, "persistent cap removed: put back %g W",
                                    ent.limit_w);
                    }
                }
            }
            jc__cap_unlock(fd);
        }
        if (est != JC_OK) {
            ent.action = JC_CAP_RESTORE_FAILED;
            ent.status = est;
            jc__fmt(ent.note, sizeof ent.note, "%s", jc_last_detail());
            if (first == JC_OK) first = est;
        }
        if (written < max) out[written++] = ent;
    }
    if (count) *count = written;
    free(want);
    free(stems);
    standalone_close(&s);
    if (first != JC_OK) {
        /* The detail of the first failure. */
        for (int i = 0; i < written; i++)
            if (out[i].action == JC_CAP_RESTORE_FAILED) {
                char note[sizeof out[i].note];
                jc__fmt(note, sizeof note, "%s", out[i].note);
                if (out[i].uuid[0]) jc__fail(first, "%s: %s", out[i].uuid, note);
                else jc__fail(first, "%s", note);
                break;
            }
    } else {
        jc__clear_detail();
    }
    return first;
}

jc_status jc_cap_discard_journal(const char *uuid, const jc_cap_options *opts, double *saved_w, char *kept_as,
                                 size_t len) {
    if (opts && jc__check_size(opts->size, sizeof *opts, "jc_cap_options") != JC_OK) return JC_ERR_INVALID_ARGUMENT;
    jc__clear_detail();
    if (saved_w) *saved_w = NAN;
    if (kept_as && len) kept_as[0] = '\0';
    if (!uuid || !jc__cap_name_ok(uuid))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "'%s' is not a GPU UUID as journals are named (<uuid>.journal in "
                        "the state directory; 'joulecap cap restore' names each)", uuid ? uuid : "(null)");
    char dir[512];
    jc_status st = jc__cap_dir(opts, dir, sizeof dir, 1);
    if (st != JC_OK) return st;
    int fd = -1;
    st = jc__cap_lock(dir, uuid, &fd);
    if (st != JC_OK) return st;
    jc__journal j;
    int exists = 0;
    jc_status rd = jc__journal_read(dir, uuid, &j, &exists);
    if (rd != JC_OK) {
        exists = 1; /* damaged or refused: what --discard is for */
        jc__clear_detail();
    } else if (!exists) {
        st = jc__fail(JC_ERR_NOT_FOUND, "there is no journal %s/%s.journal", dir, uuid);
    } else if (jc__journal_manager(&j) == JC_CAP_MANAGER_SESSION) {
        char owner[400];
        jc__journal_owner_text(&j, owner, sizeof owner);
        st = jc__fail(JC_ERR_BUSY, "the journal of %s belongs to the live %s: it puts the limit back itself; "
                      "nothing was set aside", uuid, owner);
    } else if (saved_w) {
        *saved_w = j.original_mw / 1000.0;
    }
    if (st == JC_OK) st = jc__journal_set_aside(dir, uuid, kept_as, len);
    jc__cap_unlock(fd);
    if (st == JC_OK) jc__clear_detail();
    return st;
}
