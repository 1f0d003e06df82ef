/* joulecap cap: show, set, reset or restore GPU power caps (persistent caps, like nvidia-smi -pl, kept in
 * joulecap's journal so that they can be put back exactly). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "errors.h"
#include "output.h"

static const char CAP_HELP[] =
    "Usage: joulecap cap get     [--gpu SEL] [--json]\n"
    "       joulecap cap set     [--gpu SEL] WATTS\n"
    "       joulecap cap reset   [--gpu SEL] [--json]\n"
    "       joulecap cap restore [--gpu SEL] [--json]\n"
    "       joulecap cap restore --discard UUID\n"
    "\n"
    "Shows and changes the power limits (caps) of NVIDIA GPUs, and puts back what joulecap changed.\n"
    "\n"
    "  get       each GPU's limit (requested and enforced), default, settable range, and who manages it:\n"
    "            nobody, a joulecap session of a running process (pid and command), a persistent cap set\n"
    "            with 'joulecap cap set', or a stale journal left by a process that died.\n"
    "  set       sets the cap to WATTS (\"300\", \"300W\", \"287.5\") and leaves it after joulecap exits, like\n"
    "            'nvidia-smi -pl'.  The limit in force before joulecap's first change is saved in a journal.\n"
    "            Every selected GPU is checked (range, permission, owner) before any is changed.\n"
    "  reset     puts back the saved limit where joulecap changed it, else sets the default limit; says which.\n"
    "  restore   repairs what joulecap left: journals of processes that died together with their guardian,\n"
    "            and persistent caps, get their saved limit back.  Caps of running sessions are left alone.\n"
    "            Without --gpu: every journal, also of GPUs hidden by CUDA_VISIBLE_DEVICES.  Every limit put\n"
    "            back is read back.  A damaged journal (cut short, checksum wrong) is refused and kept.\n"
    "  restore --discard UUID\n"
    "            sets a journal that cannot be restored aside (renamed <uuid>.journal.bad-<time>, kept) without\n"
    "            changing the limit; then check the limit and set the one you want ('cap reset' sets the\n"
    "            default).\n"
    "\n"
    "A GPU that NVML cannot identify (lost) is reported with the reason; the other GPUs are handled as usual.\n"
    "\n"
    "Options:\n"
    "  --gpu SEL         GPUs (CUDA numbering): all (default), 0, 0,2, GPU-8f3c... (a UUID or unique prefix)\n"
    "  --json            machine-readable output (get, reset, restore)\n"
    "  --state-dir DIR   where the journals are (default below)\n"
    "  -h, --help        this help\n"
    "\n"
    "Examples:\n"
    "  joulecap cap get\n"
    "  sudo joulecap cap set --gpu 0 300       # GPU 0 capped at 300 W until reset\n"
    "  sudo joulecap cap reset --gpu 0         # back to the limit in force before\n"
    "  sudo joulecap cap restore               # after a crash: put back whatever joulecap left\n"
    "  joulecap cap get --gpu GPU-8f3c --json\n"
    "\n"
    "Setting a limit needs root, or CAP_SYS_ADMIN in a container (docker run --cap-add SYS_ADMIN).\n"
    "Programs that cap GPUs through the library (cap sessions, the profiler) put the limits back when they end,\n"
    "and a guardian process (joulecap itself) does it when they are killed or crash.\n"
    "\n"
    "Journals: one file per GPU in JOULECAP_STATE_DIR, default /var/lib/joulecap when writable (root), else\n"
    "$XDG_RUNTIME_DIR/joulecap, else /tmp/joulecap-<uid>.  The directory must belong to you and be writable by\n"
    "nobody else (as ssh checks); joulecap follows no symbolic links inside it.\n"
    "\n"
    "Where joulecapd runs (its socket JOULECAP_DAEMON_SOCKET, default /run/joulecap/joulecapd.sock, exists),\n"
    "every action goes through it: users its config allows may cap without root, caps of programs are leases\n"
    "that end with their connection, and 'get' shows who holds each GPU (user, pid, command, since).  The\n"
    "output says which was used: 'via joulecapd (PATH)' or 'via direct NVML'.  See docs/daemon.md.\n"
    "\n"
    "Exit status: 0 success; 2 bad command line, unknown GPU, cap out of range; 3 failed (no permission, GPU\n"
    "owned by another process, NVML error, a limit that did not take, a lost GPU, a journal that could not be\n"
    "restored, an unsafe state directory).\n";

typedef struct cap_args {
    const char *verb;
    const char *gpus;
    const char *state_dir;
    const char *watts_text;
    const char *discard;
    int json, help;
} cap_args;

static int parse(int argc, char **argv, cap_args *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char **dest = NULL;
        const char *name = NULL;
        if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            a->help = 1;
            return 0;
        } else if (strcmp(s, "--json") == 0) {
            a->json = 1;
            continue;
        } else if (strcmp(s, "--gpu") == 0 || strcmp(s, "--gpus") == 0 || strcmp(s, "-g") == 0) {
            dest = &a->gpus;
            name = s;
        } else if (strncmp(s, "--gpu=", 6) == 0 || strncmp(s, "--gpus=", 7) == 0) {
            a->gpus = strchr(s, '=') + 1;
        } else if (strncmp(s, "-g", 2) == 0 && s[2]) {
            a->gpus = s + 2;
        } else if (strcmp(s, "--state-dir") == 0) {
            dest = &a->state_dir;
            name = s;
        } else if (strncmp(s, "--state-dir=", 12) == 0) {
            a->state_dir = s + 12;
        } else if (strcmp(s, "--discard") == 0) {
            dest = &a->discard;
            name = s;
        } else if (strncmp(s, "--discard=", 10) == 0) {
            a->discard = s + 10;
        } else if (strcmp(s, "--") == 0) {
            continue;
        } else if (s[0] == '-' && !(isdigit((unsigned char)s[1]) || s[1] == '.')) {
            return jc_cli_usage_err("cap", "unknown option '%s' for 'joulecap cap'", s);
        } else if (!a->verb) {
            a->verb = s;
            continue;
        } else if (!a->watts_text && strcmp(a->verb, "set") == 0) {
            a->watts_text = s;
            continue;
        } else {
            return jc_cli_usage_err("cap", "unexpected argument '%s'", s);
        }
        if (dest) {
            if (i + 1 >= argc) return jc_cli_usage_err("cap", "option %s needs a value", name);
            *dest = argv[++i];
        }
        if (a->gpus && !*a->gpus)
            return jc_cli_usage_err("cap", "empty GPU selection for --gpu: use 'all', CUDA indices like 0 or 0,2, "
                                    "or UUIDs like GPU-8f3c...");
    }
    return 0;
}

static int parse_watts(const char *text, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || errno) return 0;
    while (*end == ' ') end++;
    if (*end == 'W' || *end == 'w') end++;
    if (*end || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static const char *w(char *buf, size_t len, double v) { return jc_cli_fmt(buf, len, v, 3); }

static void gpu_label(const jc_cap_info *c, char *buf, size_t len) {
    if (c->index >= 0)
        snprintf(buf, len, "GPU %d", c->index);
    else
        snprintf(buf, len, "NVML GPU %d", c->nvml_index);
}

/* Prints the library failure and returns the exit code. */
static int fail(const char *what, jc_status st) {
    const char *d = jc_last_detail();
    jc_cli_err("%s: %s", what, d[0] ? d : jc_strerror(st));
    if (st == JC_ERR_NOT_FOUND && (strstr(d, "GPU") || strstr(d, "CUDA_VISIBLE_DEVICES")))
        fprintf(stderr, "Select GPUs as CUDA numbers them (0, 0,2, a UUID such as GPU-8f3c..., all); 'joulecap cap "
                        "get' lists them.\n");
    if (st == JC_ERR_UNAVAILABLE) fprintf(stderr, "Run 'joulecap info' to see why NVML is not available.\n");
    return jc_cli_exit_for(st);
}

static int list(const cap_args *a, const jc_cap_options *o, jc_cap_info **out, int *n) {
    *out = calloc(JC_MAX_DEVICES, sizeof **out);
    if (!*out) {
        jc_cli_err("out of memory");
        return JC_EXIT_FAILURE;
    }
    jc_status st = jc_cap_list(o, *out, JC_MAX_DEVICES, n);
    if (st != JC_OK) {
        free(*out);
        *out = NULL;
        return fail(a->gpus ? "cannot read the power limits of the selected GPUs" : "cannot read the power limits",
                    st);
    }
    return 0;
}

static char via[600]; /* "joulecapd (PATH)" or "direct NVML", set once in jc_cmd_cap */

static void since_text(double t, char *buf, size_t len) {
    time_t s = (time_t)t;
    struct tm tm;
    if (t <= 0 || !localtime_r(&s, &tm) || strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(buf, len, "an unknown time");
}

/* Who holds a GPU through joulecapd: a lease, a persistent cap, or a lease being put back. */
static void holder_text(const jc_cap_info *c, char *buf, size_t len) {
    char a[32], b[32], when[64], who[512];
    if (c->manager == JC_CAP_MANAGER_DAMAGED || !c->owner_user[0]) { /* the text says what to do */
        snprintf(buf, len, "unknown: %s", c->error);
        return;
    }
    since_text(c->journal_created, when, sizeof when);
    snprintf(who, sizeof who, "user %s (uid %u), process %d (%s), since %s", c->owner_user, c->owner_uid,
             c->owner_pid, c->owner_command[0] ? c->owner_command : "command unknown", when);
    if (c->manager == JC_CAP_MANAGER_SESSION) {
        char set[64];
        if (isnan(c->set_limit_w)) snprintf(set, sizeof set, "not changed yet");
        else snprintf(set, sizeof set, "set to %s W", w(b, sizeof b, c->set_limit_w));
        snprintf(buf, len, "a lease of %s; saved limit %s W, %s", who, w(a, sizeof a, c->saved_limit_w), set);
    } else if (c->manager == JC_CAP_MANAGER_PERSISTENT) {
        snprintf(buf, len, "a persistent cap set by %s; saved limit %s W: 'joulecap cap reset' puts it back", who,
                 w(a, sizeof a, c->saved_limit_w));
    } else {
        snprintf(buf, len, "nobody: the lease of %s ended and joulecapd is putting back %s W (retrying)", who,
                 w(a, sizeof a, c->saved_limit_w));
    }
}

/* ------------------------------------------------------------------------------------------------------ */

/* Exit code 3 after naming each GPU that NVML cannot identify, on stderr; 0 when there is none. */
static int lost_code(const jc_cap_info *c, int n, const char *others) {
    int code = JC_EXIT_OK;
    char label[32];
    for (int i = 0; i < n; i++) {
        if (c[i].status == JC_OK) continue;
        gpu_label(&c[i], label, sizeof label);
        jc_cli_err("%s cannot be used (%s): %s", label, others, c[i].error);
        code = JC_EXIT_FAILURE;
    }
    return code;
}

static void manager_text(const jc_cap_info *c, char *buf, size_t len) {
    char a[32], b[32];
    if (strncmp(via, "joulecapd", 9) == 0 && c->manager != JC_CAP_MANAGER_NONE) {
        holder_text(c, buf, len);
        return;
    }
    switch (c->manager) {
    case JC_CAP_MANAGER_NONE: snprintf(buf, len, "nobody (joulecap has not changed this limit)"); break;
    case JC_CAP_MANAGER_SESSION: {
        char set[64];
        if (isnan(c->set_limit_w))
            snprintf(set, sizeof set, "not changed yet");
        else
            snprintf(set, sizeof set, "set to %s W", w(b, sizeof b, c->set_limit_w));
        snprintf(buf, len, "a joulecap session of process %d (%s); saved limit %s W, %s; guardian %d%s",
                 c->owner_pid, c->owner_command[0] ? c->owner_command : "command unknown",
                 w(a, sizeof a, c->saved_limit_w), set, c->guardian_pid, c->guardian_alive ? "" : " (not running)");
        break;
    }
    case JC_CAP_MANAGER_PERSISTENT:
        snprintf(buf, len, "a persistent cap (joulecap cap set); saved limit %s W: 'joulecap cap reset' puts it "
                 "back", w(a, sizeof a, c->saved_limit_w));
        break;
    case JC_CAP_MANAGER_STALE:
        snprintf(buf, len, "nobody: process %d died leaving its cap%s; 'joulecap cap restore' puts back %s W",
                 c->owner_pid, c->guardian_alive ? " (its guardian is restoring it)" : " and its guardian is gone",
                 w(a, sizeof a, c->saved_limit_w));
        break;
    case JC_CAP_MANAGER_DAMAGED: snprintf(buf, len, "unknown: %s", c->error); break;
    }
}

static void json_opt_num(FILE *f, int *first, const char *key, double v) {
    jc_json_key(f, first, key);
    jc_json_num(f, v);
}

static void json_info(FILE *f, const jc_cap_info *c) {
    int first = 1;
    fputc('{', f);
    jc_json_key(f, &first, "index");
    if (c->index >= 0) fprintf(f, "%d", c->index);
    else fputs("null", f);
    jc_json_key(f, &first, "nvml_index");
    fprintf(f, "%d", c->nvml_index);
    jc_json_key(f, &first, "name");
    jc_json_str(f, c->name);
    jc_json_key(f, &first, "uuid");
    jc_json_str(f, c->uuid[0] ? c->uuid : NULL);
    jc_json_key(f, &first, "pci_bus_id");
    jc_json_str(f, c->pci_bus_id[0] ? c->pci_bus_id : NULL);
    json_opt_num(f, &first, "limit_w", c->limit_w);
    json_opt_num(f, &first, "enforced_limit_w", c->enforced_limit_w);
    json_opt_num(f, &first, "default_limit_w", c->default_limit_w);
    json_opt_num(f, &first, "min_limit_w", c->min_limit_w);
    json_opt_num(f, &first, "max_limit_w", c->max_limit_w);
    jc_json_key(f, &first, "managed_by");
    jc_json_str(f, jc_cap_manager_name(c->manager));
    json_opt_num(f, &first, "saved_limit_w", c->saved_limit_w);
    json_opt_num(f, &first, "set_limit_w", c->set_limit_w);
    json_opt_num(f, &first, "persistent_saved_limit_w", c->persistent_saved_limit_w);
    jc_json_key(f, &first, "owner_pid");
    if (c->manager != JC_CAP_MANAGER_NONE && c->owner_pid > 0) fprintf(f, "%d", c->owner_pid);
    else fputs("null", f);
    jc_json_key(f, &first, "owner_user");
    jc_json_str(f, c->owner_user[0] ? c->owner_user : NULL);
    jc_json_key(f, &first, "owner_uid");
    if (c->owner_user[0]) fprintf(f, "%u", c->owner_uid);
    else fputs("null", f);
    jc_json_key(f, &first, "owner_command");
    jc_json_str(f, c->manager == JC_CAP_MANAGER_NONE ? NULL : c->owner_command);
    jc_json_key(f, &first, "guardian_pid");
    if (c->guardian_pid > 0) fprintf(f, "%d", c->guardian_pid);
    else fputs("null", f);
    jc_json_key(f, &first, "guardian_alive");
    fputs(c->guardian_pid > 0 && c->guardian_alive ? "true" : "false", f);
    jc_json_key(f, &first, "journal");
    jc_json_str(f, c->journal_path[0] ? c->journal_path : NULL);
    json_opt_num(f, &first, "journal_created", c->journal_created > 0 ? c->journal_created : NAN);
    jc_json_key(f, &first, "status");
    jc_json_str(f, jc_status_name(c->status));
    jc_json_key(f, &first, "error");
    jc_json_str(f, c->error[0] ? c->error : NULL);
    fputc('}', f);
}

static int cmd_get(const cap_args *a, const jc_cap_options *o, const char *dir) {
    jc_cap_info *c = NULL;
    int n = 0;
    int rc = list(a, o, &c, &n);
    if (rc) return rc;
    if (a->json) {
        int first = 1;
        fputc('{', stdout);
        jc_json_key(stdout, &first, "state_dir");
        jc_json_str(stdout, strncmp(via, "joulecapd", 9) == 0 ? NULL : dir);
        jc_json_key(stdout, &first, "via");
        jc_json_str(stdout, via);
        jc_json_key(stdout, &first, "gpus");
        fputc('[', stdout);
        for (int i = 0; i < n; i++) {
            if (i) fputc(',', stdout);
            json_info(stdout, &c[i]);
        }
        fputs("]}\n", stdout);
    } else {
        char label[32], a1[32], a2[32], a3[32], a4[32], a5[32], m[1024];
        if (n == 0) printf("no GPU selected\n");
        for (int i = 0; i < n; i++) {
            gpu_label(&c[i], label, sizeof label);
            if (c[i].status != JC_OK) {
                printf("%s (NVML GPU %d): cannot be used: %s\n", label, c[i].nvml_index, c[i].error);
                continue;
            }
            printf("%s: %s (%s)\n", label, c[i].name, c[i].uuid);
            printf("  power limit:  %s W (enforced %s W; default %s W; settable %s to %s W)\n",
                   w(a1, sizeof a1, c[i].limit_w), w(a2, sizeof a2, c[i].enforced_limit_w),
                   w(a3, sizeof a3, c[i].default_limit_w), w(a4, sizeof a4, c[i].min_limit_w),
                   w(a5, sizeof a5, c[i].max_limit_w));
            manager_text(&c[i], m, sizeof m);
            printf("  managed by:   %s\n", m);
        }
        printf("journals: %s; via %s\n", dir, via);
    }
    int code = lost_code(c, n, "the other GPUs are listed");
    free(c);
    return code;
}

static int cmd_set(const cap_args *a, const jc_cap_options *o) {
    double watts;
    if (!a->watts_text) return jc_cli_usage_err("cap", "'joulecap cap set' needs the cap in watts, as in 'joulecap "
                                                "cap set --gpu 0 300'");
    if (!parse_watts(a->watts_text, &watts) || watts <= 0)
        return jc_cli_usage_err("cap", "bad cap '%s': give watts, as in 300 or 287.5W", a->watts_text);
    jc_cap_info *before = NULL;
    int n = 0;
    int rc = list(a, o, &before, &n);
    if (rc) return rc;
    /* The GPUs NVML can identify, by UUID: a lost one is reported, the others are capped. */
    char *uuids = calloc((size_t)n + 1, sizeof before[0].uuid);
    if (!uuids) {
        free(before);
        jc_cli_err("out of memory");
        return JC_EXIT_FAILURE;
    }
    for (int i = 0; i < n; i++) {
        if (before[i].status != JC_OK) continue;
        if (uuids[0]) strcat(uuids, ",");
        strcat(uuids, before[i].uuid);
    }
    int lost = lost_code(before, n, "the other GPUs are capped");
    if (!uuids[0]) {
        free(uuids);
        free(before);
        if (lost) return lost;
        return jc_cli_usage_err("cap", "the selection '%s' names no GPU", a->gpus ? a->gpus : "all");
    }
    char note[1024];
    jc_status st = jc_cap_set_persistent(uuids, watts, o, note, sizeof note);
    free(uuids);
    if (st != JC_OK) {
        free(before);
        char what[64];
        snprintf(what, sizeof what, "cannot set the cap to %s W", a->watts_text);
        rc = fail(what, st);
        if (st == JC_ERR_INVALID_ARGUMENT) fprintf(stderr, "Nothing was changed.\n");
        return rc;
    }
    if (note[0]) printf("note: %s\n", note);
    jc_cap_info *after = NULL;
    int m = 0;
    if (list(a, o, &after, &m) == 0) {
        char label[32], x[32], y[32], z[32], sel[120];
        for (int i = 0; i < m; i++) {
            if (after[i].status != JC_OK) continue;
            double was = NAN;
            for (int k = 0; k < n; k++)
                if (strcmp(before[k].uuid, after[i].uuid) == 0) was = before[k].limit_w;
            gpu_label(&after[i], label, sizeof label);
            snprintf(sel, sizeof sel, "%d", after[i].index);
            printf("%s (%s): power limit %s W (was %s W); saved %s W: 'joulecap cap reset --gpu %s' puts it back\n",
                   label, after[i].uuid, w(x, sizeof x, after[i].limit_w), w(y, sizeof y, was),
                   w(z, sizeof z, after[i].saved_limit_w), after[i].index >= 0 ? sel : after[i].uuid);
        }
        printf("via %s\n", via);
        free(after);
    }
    free(before);
    return lost;
}

static int cmd_reset(const cap_args *a, const jc_cap_options *o) {
    jc_cap_info *c = NULL;
    int n = 0;
    int rc = list(a, o, &c, &n);
    if (rc) return rc;
    int code = JC_EXIT_OK, first = 1;
    if (a->json) printf("{\"gpus\":[");
    for (int i = 0; i < n; i++) {
        jc_cap_reset_kind did = JC_CAP_RESET_NONE;
        double limit = NAN;
        char note[1024], label[32], x[32];
        gpu_label(&c[i], label, sizeof label);
        jc_status st = c[i].status;
        if (st != JC_OK) /* lost: the others are reset all the same */
            jc_cli_err("cannot reset the cap of %s: %s cannot be used: %s", label, label, c[i].error);
        else
            st = jc_cap_reset(c[i].uuid, o, &did, &limit, note, sizeof note);
        if (st != JC_OK && c[i].status != JC_OK) {
            code = JC_EXIT_FAILURE;
        } else if (st != JC_OK) {
            char what[160];
            snprintf(what, sizeof what, "cannot reset the cap of %s", label);
            int r = fail(what, st);
            if (code == JC_EXIT_OK) code = r;
        }
        if (a->json) {
            int f = 1;
            if (!first) fputc(',', stdout);
            first = 0;
            fputc('{', stdout);
            jc_json_key(stdout, &f, "index");
            if (c[i].index >= 0) printf("%d", c[i].index);
            else fputs("null", stdout);
            jc_json_key(stdout, &f, "uuid");
            jc_json_str(stdout, c[i].uuid[0] ? c[i].uuid : NULL);
            jc_json_key(stdout, &f, "ok");
            fputs(st == JC_OK ? "true" : "false", stdout);
            jc_json_key(stdout, &f, "did");
            jc_json_str(stdout, st == JC_OK ? jc_cap_reset_kind_name(did) : NULL);
            json_opt_num(stdout, &f, "limit_w", limit);
            jc_json_key(stdout, &f, "error");
            jc_json_str(stdout, st == JC_OK ? NULL : c[i].status != JC_OK ? c[i].error : jc_last_detail());
            fputc('}', stdout);
        } else if (st == JC_OK) {
            if (did == JC_CAP_RESET_SAVED)
                printf("%s (%s): put back the saved limit: now %s W\n", label, c[i].uuid, w(x, sizeof x, limit));
            else
                printf("%s (%s): joulecap had not changed its limit; set the default limit: now %s W\n", label,
                       c[i].uuid, w(x, sizeof x, limit));
        }
    }
    if (a->json) {
        printf("],\"via\":");
        jc_json_str(stdout, via);
        printf("}\n");
    } else {
        printf("via %s\n", via);
    }
    free(c);
    return code;
}

static int cmd_restore(const cap_args *a, const jc_cap_options *o, const char *dir) {
    jc_cap_restore_entry *e = calloc(4 * JC_MAX_DEVICES, sizeof *e);
    if (!e) {
        jc_cli_err("out of memory");
        return JC_EXIT_FAILURE;
    }
    int n = 0;
    jc_status st = jc_cap_restore(o, e, 4 * JC_MAX_DEVICES, &n);
    if (st != JC_OK && n == 0) {
        free(e);
        return fail("cannot restore the caps", st);
    }
    if (a->json) {
        int first = 1;
        fputc('{', stdout);
        jc_json_key(stdout, &first, "state_dir");
        jc_json_str(stdout, strncmp(via, "joulecapd", 9) == 0 ? NULL : dir);
        jc_json_key(stdout, &first, "via");
        jc_json_str(stdout, via);
        jc_json_key(stdout, &first, "journals");
        fputc('[', stdout);
        for (int i = 0; i < n; i++) {
            int f = 1;
            if (i) fputc(',', stdout);
            fputc('{', stdout);
            jc_json_key(stdout, &f, "uuid");
            jc_json_str(stdout, e[i].uuid);
            jc_json_key(stdout, &f, "index");
            if (e[i].index >= 0) printf("%d", e[i].index);
            else fputs("null", stdout);
            jc_json_key(stdout, &f, "was");
            jc_json_str(stdout, jc_cap_manager_name(e[i].was));
            jc_json_key(stdout, &f, "action");
            jc_json_str(stdout, jc_cap_restore_action_name(e[i].action));
            json_opt_num(stdout, &f, "limit_w", e[i].limit_w);
            jc_json_key(stdout, &f, "owner_pid");
            if (e[i].owner_pid > 0) printf("%d", e[i].owner_pid);
            else fputs("null", stdout);
            jc_json_key(stdout, &f, "note");
            jc_json_str(stdout, e[i].note);
            fputc('}', stdout);
        }
        fputs("]}\n", stdout);
    } else {
        if (n == 0) printf("nothing to restore: no joulecap journal%s in %s\n", a->gpus ? " for these GPUs" : "", dir);
        for (int i = 0; i < n; i++) {
            char label[128];
            if (e[i].index >= 0) snprintf(label, sizeof label, "GPU %d (%s)", e[i].index, e[i].uuid);
            else snprintf(label, sizeof label, "%s", e[i].uuid);
            const char *what = e[i].action == JC_CAP_RESTORED ? "restored" : e[i].action == JC_CAP_LEFT_LIVE
                                                                                  ? "left alone"
                                                                                  : "FAILED";
            printf("%s: %s: %s\n", label, what, e[i].note);
        }
        printf("via %s\n", via);
    }
    free(e);
    if (st != JC_OK) {
        jc_cli_err("some caps could not be restored: %s", jc_last_detail());
        return JC_EXIT_FAILURE;
    }
    return JC_EXIT_OK;
}

static int cmd_discard(const cap_args *a, const jc_cap_options *o) {
    double saved = NAN;
    char kept[700], x[32], y[32];
    jc_status st = jc_cap_discard_journal(a->discard, o, &saved, kept, sizeof kept);
    if (st != JC_OK) return fail("cannot set the journal aside", st);
    printf("%s: journal set aside as %s (kept; joulecap ignores it)", a->discard, kept);
    if (!isnan(saved)) printf("; it had saved %s W, not put back", w(x, sizeof x, saved));
    printf("\n");
    jc_cap_info c;
    if (jc_cap_info_get(a->discard, o, &c) == JC_OK)
        printf("%s: power limit now %s W (default %s W). Set the limit you want: 'joulecap cap reset --gpu %s' sets "
               "the default, 'joulecap cap set --gpu %s WATTS' another\n",
               a->discard, w(x, sizeof x, c.limit_w), w(y, sizeof y, c.default_limit_w), a->discard, a->discard);
    else
        printf("%s: not on this machine now (%s)\n", a->discard, jc_last_detail());
    return JC_EXIT_OK;
}

int jc_cmd_cap(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "__guard") == 0) return jc_cap_guardian_main(argc - 1, argv + 1);
    cap_args a;
    int rc = parse(argc, argv, &a);
    if (rc) return rc;
    if (a.help) {
        fputs(CAP_HELP, stdout);
        return JC_EXIT_OK;
    }
    if (!a.verb)
        return jc_cli_usage_err("cap", "'joulecap cap' needs an action: get, set, reset or restore");
    int is_get = strcmp(a.verb, "get") == 0, is_set = strcmp(a.verb, "set") == 0;
    int is_reset = strcmp(a.verb, "reset") == 0, is_restore = strcmp(a.verb, "restore") == 0;
    if (!is_get && !is_set && !is_reset && !is_restore)
        return jc_cli_usage_err("cap", "unknown action '%s': use get, set, reset or restore", a.verb);
    if (is_set && a.json) return jc_cli_usage_err("cap", "'joulecap cap set' has no --json output");
    if (a.discard && (!is_restore || a.gpus || a.json))
        return jc_cli_usage_err("cap", "--discard UUID goes with 'joulecap cap restore' alone (no --gpu, no --json), "
                                "as in 'joulecap cap restore --discard GPU-8f3c...'");
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = a.gpus;
    o.state_dir = a.state_dir;
    char dir[512];
    /* Through joulecapd the journals are its own (the state dir of this process is not used). */
    int daemon = jc_cap_route(via, sizeof via);
    jc_status st = daemon ? JC_OK : jc_cap_state_dir(&o, dir, sizeof dir);
    if (daemon) snprintf(dir, sizeof dir, "kept by joulecapd");
    if (st != JC_OK) {
        if (is_get) snprintf(dir, sizeof dir, "(none: %s)", jc_last_detail());
        else return fail("cannot use the journal directory", st);
    }
    if (is_get) return cmd_get(&a, &o, dir);
    if (a.discard) return cmd_discard(&a, &o);
    if (is_set) return cmd_set(&a, &o);
    if (is_reset) return cmd_reset(&a, &o);
    return cmd_restore(&a, &o, dir);
}
