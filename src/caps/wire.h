/* The joulecapd wire format, shared by the daemon and the library's client (docs/daemon.md).
 *
 * A message is one line of printable ASCII ended by '\n': tokens separated by single spaces.  Requests are
 * positional ("SET GPU-8f3c... 300000"); replies are a verb and key=value tokens ("OK limit_mw=300000"),
 * values percent-encoded (every byte outside [A-Za-z0-9-._:/@+,] as %XX).  Everything here is pure: no I/O,
 * hostile input allowed, bounded buffers. */
#ifndef JC_CAPS_WIRE_H
#define JC_CAPS_WIRE_H

#include <stddef.h>

#define JC__WIRE_VERSION 3 /* 2: ENERGY (per-job energy); 3: GPUS, GPU, SERIES (the node's sampler) */
#define JC__WIRE_MAX_REQUEST 1024 /* bytes of a request line, '\n' included */
#define JC__WIRE_MAX_REPLY 4096   /* bytes of a reply line, '\n' included */
#define JC__WIRE_MAX_TOKENS 48
#define JC__WIRE_DEFAULT_SOCKET "/run/joulecap/joulecapd.sock"

typedef struct jc__wire_line {
    int n;                          /* tokens, verb included */
    char *tok[JC__WIRE_MAX_TOKENS]; /* into the split buffer */
    unsigned char decoded[JC__WIRE_MAX_TOKENS]; /* 1: value decoded in place; 2: bad encoding */
} jc__wire_line;

/* Splits line[0..len) (no '\n') in place into tokens: 0, or -1 with why (a NUL or control byte, non-ASCII,
 * empty token, too many tokens).  line must have room for len + 1 bytes. */
int jc__wire_split(char *line, size_t len, jc__wire_line *out, char *why, size_t whylen);

/* The value of key=... among tokens 1..n-1, percent-decoded in place on first use; NULL when absent or
 * badly encoded. */
const char *jc__wire_get(jc__wire_line *l, const char *key);
/* Unsigned decimal value of key (at most 20 digits, no sign): 0 and *v, or -1. */
int jc__wire_get_u64(jc__wire_line *l, const char *key, unsigned long long *v);
/* A plain unsigned decimal text (at most 10 digits, <= 4294967295): 0 and *v, or -1. */
int jc__wire_u32(const char *s, unsigned *v);

/* Percent-decodes s in place: 0, or -1 on a bad escape or %00. */
int jc__wire_decode(char *s);
/* Appends " key=<encoded value>" to buf (used bytes in *used).  0, or -1 when it would not fit (buf then
 * unchanged). */
int jc__wire_put(char *buf, size_t len, size_t *used, const char *key, const char *value);
int jc__wire_put_u64(char *buf, size_t len, size_t *used, const char *key, unsigned long long v);
int jc__wire_put_i64(char *buf, size_t len, size_t *used, const char *key, long long v);
int jc__wire_put_time(char *buf, size_t len, size_t *used, const char *key, double unix_s);
/* A plausible GPU UUID as a token: [A-Za-z0-9-], 1 to 95 bytes. */
int jc__wire_uuid_ok(const char *s);

#endif
