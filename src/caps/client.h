/* Power caps through joulecapd: the library's client of the node service (docs/daemon.md).  Taken by the
 * public jc_cap_* functions, before their direct path, when the daemon's socket exists. */
#ifndef JC_CAPS_CLIENT_H
#define JC_CAPS_CLIENT_H

#include <stddef.h>

#include "joulecap.h"
#include "wire.h"

/* 1 when cap calls go through joulecapd: its socket ($JOULECAP_DAEMON_SOCKET, else the default) exists.
 * path (may be NULL) gets the socket's path either way. */
int jc__capd_route(char *path, size_t len);

typedef struct jc__capd_session jc__capd_session;

jc_status jc__capd_session_open(const jc_cap_options *opts, jc__capd_session **out);
jc_status jc__capd_session_set(jc__capd_session *s, int gpu, double watts);
jc_status jc__capd_session_reset(jc__capd_session *s, int gpu, jc_cap_reset_kind *did);
jc_status jc__capd_session_restore(jc__capd_session *s);
/* Releases every lease and frees s (in a forked child: frees only). */
jc_status jc__capd_session_close(jc__capd_session *s);
int jc__capd_session_gpu_count(const jc__capd_session *s);
jc_status jc__capd_session_gpu(jc__capd_session *s, int i, jc_cap_info *out);
const char *jc__capd_session_note(const jc__capd_session *s);

jc_status jc__capd_list(const jc_cap_options *opts, jc_cap_info *out, int max, int *count);
jc_status jc__capd_set_persistent(const char *gpu, double watts, char *note, size_t note_len);
jc_status jc__capd_reset(const char *gpu, jc_cap_reset_kind *did, double *limit_w, char *note, size_t note_len);
jc_status jc__capd_restore(const jc_cap_options *opts, jc_cap_restore_entry *out, int max, int *count);

/* A connection to joulecapd for requests other than caps (job.c): HELLO done, *proto the version agreed on.
 * jc__capd_request sends one request and reads its final line (OK: JC_OK and *ok; ERR: its status, with
 * "joulecapd (PATH): ..." in the detail); no data lines are expected. */
typedef struct jc__capd_conn jc__capd_conn;
jc_status jc__capd_connect(jc__capd_conn **out, unsigned *proto);
jc_status jc__capd_request(jc__capd_conn *c, const char *req, char *fin, jc__wire_line *ok);
const char *jc__capd_path(const jc__capd_conn *c);
void jc__capd_disconnect(jc__capd_conn *c); /* NULL allowed */

/* Parses one GPU line of a LIST reply into info (limits, holder); 0, or -1 when it is malformed.  Pure: used
 * by the client and fuzzed. */
int jc__capd_parse_gpu(char *line, size_t len, jc_cap_info *info, int *present);

#endif
