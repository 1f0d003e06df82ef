/* joulecapd, the node service that alone writes GPU power limits: shared types of its modules.
 *
 *   main.c      options, sockets, the event loop, signals
 *   log.c       the log (stderr or syslog) and the clock
 *   config.c    who may write (allow_user / allow_group)
 *   protocol.c  request lines: framing and parsing (pure; fuzzed)
 *   leases.c    requests: leases, persistent caps, restores
 *   journal.c   one file per GPU in the state directory: what to put back after a crash
 *   gpus.c      NVML: the GPUs, their limits, set with read-back
 *   jobs.c      per-job GPU energy that clients report (ENERGY), kept in the state directory
 *   exporter.c  --metrics: the node's sampler (a jc_context), counters that never go back, housekeeping
 *   metrics.c   the Prometheus / OpenMetrics text of a scrape (pure; tested)
 *   http.c      the /metrics endpoint on libmicrohttpd (optional at build time)
 *
 * One poll() loop owns every structure here, except what the exporter shares with its scrapes and its
 * housekeeping thread: that is behind the exporter's and the job table's own locks.  See docs/daemon.md. */
#ifndef JCD_H
#define JCD_H

#include <pthread.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "caps/caps_internal.h"
#include "caps/wire.h"

#define JCD_DEFAULT_CONFIG "/etc/joulecap/joulecapd.conf"
#define JCD_DEFAULT_STATE_DIR "/var/lib/joulecap/daemon"
#define JCD_MAX_GPUS JC__CAP_MAX_GPUS
#define JCD_MAX_RULES 256
#define JCD_MAX_CLIENTS 512
#define JCD_MAX_CLIENTS_PER_UID 64    /* Python holds a connection per capped GPU */
#define JCD_OUT_MAX (256 * 1024)  /* replies a client has not read yet; beyond that it is closed */
#define JCD_MAX_GROUPS 64
#define JCD_JOURNAL_MAX 4096

/* --- config.c ---------------------------------------------------------------------------------------- */

typedef struct jcd_rule {
    int group;       /* 0: allow_user, 1: allow_group */
    int numeric;     /* the value is a uid/gid */
    unsigned id;
    char name[64];
    int line;
} jcd_rule;

typedef struct jcd_config {
    char path[512];
    int present;     /* 0: the file does not exist (root only) */
    int n;
    jcd_rule rules[JCD_MAX_RULES];
} jcd_config;

/* Parses config text; 0, or -1 with "PATH:LINE: problem" in err. */
int jcd_config_parse(const char *text, size_t len, const char *path, jcd_config *out, char *err, size_t errlen);
/* Reads and parses path: a regular file (no symlink), owned by root or this user, not writable by group or
 * others.  A missing file is no error (present = 0). */
int jcd_config_load(const char *path, jcd_config *out, char *err, size_t errlen);
/* 1 when uid (primary gid, supplementary groups) may change limits; rule gets the rule that allows it. */
int jcd_config_allows(const jcd_config *c, unsigned uid, unsigned gid, const unsigned *groups, int ngroups,
                      char *rule, size_t rulelen);
/* What the config allows, in words (--check-config). */
void jcd_config_describe(const jcd_config *c, char *buf, size_t len);

/* --- protocol.c -------------------------------------------------------------------------------------- */

typedef enum jcd_verb {
    JCD_HELLO = 1,
    JCD_LIST,
    JCD_TAKE,
    JCD_SET,
    JCD_RESTORE,
    JCD_RELEASE,
    JCD_PERSIST,
    JCD_RESET,
    JCD_ENERGY, /* protocol 2; numbered before REPAIR, which stays the last verb */
    JCD_REPAIR,
    JCD_GPUS,   /* protocol 3: the node's sampler (series.c) */
    JCD_GPU,
    JCD_SERIES,
} jcd_verb;

#define JCD_JOB_MAX 128 /* bytes of a job name (decoded) */
#define JCD_ENERGY_MAX_MJ 10000000000000ull /* one report: at most 10 GJ (700 W for 165 days) */

typedef struct jcd_request {
    jcd_verb verb;
    unsigned version; /* HELLO */
    char uuid[96];    /* TAKE SET RESTORE RELEASE PERSIST RESET ENERGY; REPAIR: "" = every GPU */
    unsigned mw;      /* SET PERSIST */
    char job[JCD_JOB_MAX + 1];  /* ENERGY: printable ASCII, 1 to JCD_JOB_MAX bytes */
    unsigned long long mj;      /* ENERGY: energy to add, mJ */
    unsigned long long since_ns; /* SERIES: knots after this instant (CLOCK_MONOTONIC) */
    unsigned fine;              /* SERIES: 1 while the client needs the counter read at every step */
    unsigned index;             /* GPU: the sampler's GPU number, 0 to n - 1 of GPUS */
} jcd_request;

/* Parses one request line (bytes without the '\n'): 0, or -1 with why. */
int jcd_request_parse(const char *line, size_t len, jcd_request *out, char *why, size_t whylen);

typedef struct jcd_inbuf {
    char buf[JC__WIRE_MAX_REQUEST];
    size_t used;
} jcd_inbuf;

/* Room to read into (at least 1 byte while no line is too long). */
char *jcd_inbuf_space(jcd_inbuf *in, size_t *room);
/* Takes the next whole line out of in (copied NUL-terminated into line[JC__WIRE_MAX_REQUEST], '\n' dropped):
 * 1 a line, 0 no whole line yet, -1 a line longer than JC__WIRE_MAX_REQUEST bytes. */
int jcd_inbuf_next(jcd_inbuf *in, char *line, size_t *len);

/* --- the daemon's state ------------------------------------------------------------------------------ */

typedef struct jcd_holder {
    int active;
    unsigned original_mw; /* the limit to put back */
    unsigned set_mw;      /* the limit set last and read back; 0: not changed yet */
    unsigned uid;
    char user[64];
    int pid;
    unsigned long long pid_start;
    char command[256];
    double since;         /* Unix time */
} jcd_holder;

typedef struct jcd_client jcd_client;

typedef struct jcd_gpu {
    jc__capgpu g;          /* handle, identity, limits (cuda_index = NVML index here) */
    int present;           /* NVML lists it now; 0: only a journal names it */
    jcd_holder persistent; /* a persistent cap: kept until RESET / REPAIR */
    jcd_holder lease;      /* a lease: ends with its connection */
    jcd_client *lessee;    /* NULL: a lease waiting to be put back (restore failed, or from before a restart) */
    char broken[600];      /* the journal could not be read: why; no writes until it is repaired */
    int tries;             /* failed restores of a waiting lease: the retries back off to once a minute */
    double next_try;       /* monotonic s */
} jcd_gpu;

struct jcd_client {
    int fd, pidfd;
    unsigned uid, gid;
    unsigned groups[JCD_MAX_GROUPS];
    int ngroups;
    int pid;
    unsigned long long pid_start;
    char user[64];
    char command[256];
    int hello, closing;
    unsigned proto;           /* the version HELLO agreed on */
    jcd_inbuf in;
    char *out;                /* grows as needed up to JCD_OUT_MAX */
    size_t out_used, out_cap;
};

typedef struct jcd_state {
    jc__nvml *nvml;
    char nvml_why[512];
    double nvml_retry_at;  /* monotonic s */
    jcd_gpu *gpus;         /* JCD_MAX_GPUS */
    int ngpus;
    char state_dir[512];
    int state_fd;
    jcd_config config;
    char socket_path[108];
    struct jcd_exporter *exporter; /* --metrics; NULL without */
    struct jcd_series *series;     /* the sampler clients read (series.c); NULL until the first asks */
} jcd_state;

/* --- journal.c --------------------------------------------------------------------------------------- */

typedef struct jcd_journal {
    char uuid[96];
    jcd_holder persistent, lease;
} jcd_journal;

int jcd_journal_format(const jcd_journal *j, char *buf, size_t len);
int jcd_journal_parse(const char *text, size_t len, jcd_journal *j, char *why, size_t whylen);
/* Opens (creating 0700) the state directory: owned by this user, not writable by group or others, no
 * symlink.  The descriptor anchors every later file operation. */
int jcd_state_open(const char *dir, int *fd, char *why, size_t whylen);
/* Writes the journal of one GPU atomically (tmp + fsync + rename + fsync of the directory), or removes it when
 * neither a lease nor a persistent cap is left. */
int jcd_journal_save(int dirfd, const jcd_journal *j, char *why, size_t whylen);
/* Reads <name> (a regular file owned by us, no symlink, at most JCD_JOURNAL_MAX bytes). */
int jcd_journal_load(int dirfd, const char *name, jcd_journal *j, char *why, size_t whylen);

/* The state directory's files, for the journal and the exporter alike: CRC-32 (IEEE), a text whose last line
 * "crc32 xxxxxxxx" covers every byte before it (0 and *body = that length, or -1 with why), a file written as
 * .<name>.tmp + fsync + rename + fsync of the directory, and one read through the directory's descriptor (a
 * regular file of ours with one link, no symlink; at most cap bytes: 0, -2 when it does not exist, -1). */
unsigned jcd_crc32(const char *p, size_t n);
int jcd_crc_check(const char *text, size_t len, size_t *body, char *why, size_t whylen);
int jcd_file_save(int dirfd, const char *name, const char *text, size_t len, char *why, size_t whylen);
int jcd_file_load(int dirfd, const char *name, char *buf, size_t cap, size_t *len, char *why, size_t whylen);

/* --- gpus.c ------------------------------------------------------------------------------------------ */

/* Opens NVML and lists the GPUs (one that cannot be identified is skipped and logged); keeps what was there
 * on failure. */
jc_status jcd_gpus_open(jcd_state *s);
/* NVML, reopened at most every 5 s while it is unavailable: JC_OK or JC_ERR_UNAVAILABLE with the reason. */
jc_status jcd_gpus_ready(jcd_state *s, double now);
jcd_gpu *jcd_gpu_find(jcd_state *s, const char *uuid);
/* The entry of uuid, added (not present) when there is none. */
jcd_gpu *jcd_gpu_add(jcd_state *s, const char *uuid);
void jcd_gpu_refresh(jcd_state *s, jcd_gpu *g);
/* "GPU-8f3c... (NVML GPU 0, NVIDIA H100 80GB HBM3)" */
const char *jcd_gpu_label(const jcd_gpu *g, char *buf, size_t len);
/* Sets the limit and reads it back: JC_OK when the read-back is within 1 W of mw (*got has it), else an
 * error saying what NVML said or what the limit read back. */
jc_status jcd_gpu_set(jcd_state *s, jcd_gpu *g, unsigned mw, unsigned *got);

/* --- leases.c ---------------------------------------------------------------------------------------- */

/* Loads every journal of the state directory and puts back the leases found there. */
void jcd_leases_start(jcd_state *s);
/* Handles one request of c; the reply goes to c's output. */
void jcd_handle(jcd_state *s, jcd_client *c, const jcd_request *r);
/* c's connection ended (EOF, error, protocol error, its process died): its leases are put back now. */
void jcd_client_gone(jcd_state *s, jcd_client *c, const char *why);
/* Retries the leases whose limit could not be put back (after 2, 4, 8 ... s, then every 60 s); returns how
 * many are left. */
int jcd_leases_retry(jcd_state *s, double now);
int jcd_leases_pending(const jcd_state *s);
/* Daemon stop: every lease put back (persistent caps stay). */
void jcd_leases_stop(jcd_state *s);

/* --- jobs.c: per-job GPU energy (ENERGY) ------------------------------------------------------------- */

#define JCD_MAX_JOBS 4096          /* (job, user, GPU) totals kept */
#define JCD_MAX_JOBS_PER_UID 1024
#define JCD_JOB_TTL_S 86400        /* a total not reported for a day is dropped */

typedef struct jcd_job {
    char job[JCD_JOB_MAX + 1];
    unsigned uid;
    char user[64];
    char uuid[96];
    int nvml;                /* the GPU's NVML index at the last report */
    unsigned long long mj;   /* the total */
    double last;             /* Unix time of the last report */
} jcd_job;

typedef struct jcd_jobs {
    pthread_mutex_t lock;    /* the main loop adds, scrapes copy, the housekeeping thread saves */
    jcd_job *v;              /* JCD_MAX_JOBS */
    int n;
    int dirty;               /* changed since the last save */
} jcd_jobs;

int jcd_jobs_init(jcd_jobs *t);
void jcd_jobs_free(jcd_jobs *t);
/* Adds mj to the total of (job, uid, uuid): 0 and *total, or -1 when the table (or this user's share) is full. */
int jcd_jobs_add(jcd_jobs *t, const char *job, unsigned uid, const char *user, const char *uuid, int nvml,
                 unsigned long long mj, double now, unsigned long long *total, char *why, size_t whylen);
/* Drops the totals not reported for ttl_s; returns how many. */
int jcd_jobs_expire(jcd_jobs *t, double now, double ttl_s);
/* A copy for a scrape (malloc'd, NULL when empty); returns the count. */
int jcd_jobs_copy(jcd_jobs *t, jcd_job **out);
/* jobs.state: text of a table (malloc'd) and its strict parser (pure; a bad CRC or line refuses the file). */
int jcd_jobs_format(const jcd_job *v, int n, char **text, size_t *len);
int jcd_jobs_parse(const char *text, size_t len, jcd_job *v, int max, int *n, char *why, size_t whylen);
/* Writes jobs.state atomically when something changed; reads it at start (-2: there is none). */
int jcd_jobs_save(jcd_jobs *t, int dirfd, char *why, size_t whylen);
int jcd_jobs_load(jcd_jobs *t, int dirfd, char *why, size_t whylen);

/* --- metrics.c: the text of a scrape -------------------------------------------------------------------- */

/* One device as a scrape sees it (NaN or 0: not exported). */
typedef struct jcd_mdev {
    int gpu;                 /* 0: the CPU */
    int nvml;
    char uuid[96], pci[32], name[96];
    jc_energy_source source;
    int have_energy;
    double energy_j;         /* the counter: never decreases */
    double power_w, util_ratio, temp_c;
    unsigned limit_mw, enforced_mw;
    jc_health health;
} jcd_mdev;

/* A lease or persistent cap of the daemon. */
typedef struct jcd_mlease {
    int nvml;
    char uuid[96], pci[32], name[96];
    char holder[16];         /* lease, pending, persistent */
    char user[64];
    unsigned uid;
    int pid;
} jcd_mlease;

typedef struct jcd_msnap {
    char hostname[256];
    int ndev;
    jcd_mdev dev[JC_MAX_DEVICES];
    int nleases;
    jcd_mlease leases[2 * JCD_MAX_GPUS];
    int njobs;
    const jcd_job *jobs;
} jcd_msnap;

/* The exposition: Prometheus text format 0.0.4 (openmetrics 0) or OpenMetrics 1.0.0 (1); malloc'd, NULL when
 * out of memory. */
char *jcd_metrics_format(const jcd_msnap *s, int openmetrics, size_t *len);
/* 1 when an Accept header prefers OpenMetrics to the text format (q-values honoured), else 0. */
int jcd_metrics_wants_openmetrics(const char *accept);
#define JCD_CT_TEXT "text/plain; version=0.0.4; charset=utf-8"
#define JCD_CT_OPENMETRICS "application/openmetrics-text; version=1.0.0; charset=utf-8"

/* --- exporter.c: --metrics ------------------------------------------------------------------------------ */

typedef struct jcd_exporter jcd_exporter;

/* Opens the node's sampler (every GPU and the CPU, through the library), reads the saved counters and job
 * totals from the state directory, starts the housekeeping thread (saves every JCD_SAVE_S). */
#define JCD_SAVE_S 3.0
/* Energy counters are exported as they were this long before the scrape: the value is then on disk already
 * (saved every JCD_SAVE_S, up to the sampler's latest counter read, ~1 s old), so that no restart, not even
 * after a crash, starts below a value a scrape has seen. */
#define JCD_ENERGY_LAG_S 5.0
int jcd_exporter_open(jcd_state *s, jcd_exporter **out, char *why, size_t whylen);
/* Saves the counters and job totals one last time, stops everything, frees e (NULL allowed). */
void jcd_exporter_close(jcd_exporter *e);
/* Main loop: the leases and limits as they are now, for the next scrapes; refreshes the limits from NVML at
 * most every JCD_SAVE_S. */
void jcd_exporter_publish(jcd_exporter *e, jcd_state *s, double now);
/* A scrape: what the sampler has (no NVML call). */
void jcd_exporter_snapshot(jcd_exporter *e, jcd_msnap *snap, jcd_job **jobs);
jcd_jobs *jcd_exporter_jobs(jcd_exporter *e);

/* One device of counters.state (pure parser, for the exporter's start, the tests and fuzzing). */
typedef struct jcd_saved_counter {
    char key[96];            /* a GPU UUID, or "cpu" */
    double floor_j;          /* the highest total served, or to be served before the next save */
    int pair;                /* a (total, raw NVML counter) pair taken at one instant follows */
    double pair_j;
    unsigned long long pair_mj;
    long long pair_boot_ns;  /* CLOCK_BOOTTIME */
    char line[600];          /* the line as read, kept for a device that is not here now */
} jcd_saved_counter;
/* Parses counters.state (CRC line last, magic, boot_id, one device line per key): 0, or -1 with why.
 * boot_id gets the saved boot id ("" when it was unknown). */
int jcd_counters_parse(const char *text, size_t len, char *boot_id, size_t boot_len, jcd_saved_counter *v, int max,
                       int *n, char *why, size_t whylen);

/* --- http.c: the endpoint ------------------------------------------------------------------------------- */

typedef struct jcd_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    int any;                 /* ":PORT": every interface (IPv6 and IPv4 where the host has IPv6) */
    char text[160];
} jcd_addr;

/* "127.0.0.1:9477", "[::1]:9477", ":9477", "host:9477" (port 0: any free port): 0, or -1 with why. */
int jcd_addr_parse(const char *s, jcd_addr *out, char *why, size_t whylen);
/* 1 when joulecapd was built with libmicrohttpd; otherwise why says what to install. */
int jcd_http_available(char *why, size_t whylen);

typedef struct jcd_http jcd_http;

/* Listens on a and serves /metrics from e on a thread of libmicrohttpd.  bound gets "http://ADDR:PORT". */
int jcd_http_start(const jcd_addr *a, jcd_exporter *e, jcd_http **out, char *bound, size_t boundlen, char *why,
                   size_t whylen);
void jcd_http_stop(jcd_http *h); /* NULL allowed */

/* --- series.c: the node's sampler for clients (GPUS, GPU, SERIES; docs/daemon.md) ------------------- */

#define JCD_SERIES_MAX_KNOTS 64 /* knots in one SERIES reply (about 2.5 KB); the client asks again for more */
/* A client's fine request keeps the sampler reading every counter step this long: clients that need it ask
 * every 50 ms, so the daemon goes back to about a read a second soon after the last one stops asking. */
#define JCD_FINE_HOLD_S 1.0

/* GPUS, GPU <n>, SERIES <uuid> <since_ns> <fine>: read-only requests any client may make. */
void jcd_series_handle(jcd_state *s, jcd_client *c, const jcd_request *q);
/* Closes the sampler series.c opened (the exporter's is closed by the exporter). */
void jcd_series_close(jcd_state *s);
/* The exporter's sampler (for series.c). */
struct jc_context *jcd_exporter_context(struct jcd_exporter *e);

/* --- log.c ------------------------------------------------------------------------------------------- */

void jcd_log(const char *fmt, ...) JC__PRINTF(1, 2); /* any thread */
void jcd_log_to_syslog(void);                        /* from then on (the daemon went to the background) */
double jcd_mono(void);

/* --- main.c ------------------------------------------------------------------------------------------ */

/* Appends a reply line (text without '\n') to c's output; the client is closed if it does not fit. */
void jcd_send(jcd_client *c, const char *line);
/* Replies "ERR PROTOCOL text=why" and marks c to be closed (its leases are then put back). */
void jcd_protocol_error(jcd_client *c, const char *why);

#endif
