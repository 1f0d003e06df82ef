/* The joulecapd wire format: splitting a line into tokens, key=value lookup, percent-encoding. */
#include <stdio.h>
#include <string.h>

#include "../core/internal.h"
#include "wire.h"

static int safe_byte(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == ':' || c == '/' || c == '@' || c == '+' || c == ',';
}

int jc__wire_split(char *line, size_t len, jc__wire_line *out, char *why, size_t whylen) {
    memset(out, 0, sizeof *out);
    line[len] = '\0';
    if (len == 0) {
        jc__fmt(why, whylen, "empty line");
        return -1;
    }
    size_t i = 0;
    while (i < len) {
        if (out->n == JC__WIRE_MAX_TOKENS) {
            jc__fmt(why, whylen, "more than %d tokens", JC__WIRE_MAX_TOKENS);
            return -1;
        }
        out->tok[out->n++] = line + i;
        size_t start = i;
        while (i < len && line[i] != ' ') {
            unsigned char c = (unsigned char)line[i];
            if (c < 0x21 || c > 0x7e) {
                jc__fmt(why, whylen, "byte 0x%02x at offset %zu: only printable ASCII and single spaces", c, i);
                return -1;
            }
            i++;
        }
        if (i == start) {
            jc__fmt(why, whylen, "empty token at offset %zu (a leading, trailing or double space)", i);
            return -1;
        }
        if (i < len) {
            line[i++] = '\0';
            if (i == len) {
                jc__fmt(why, whylen, "trailing space");
                return -1;
            }
        }
    }
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int jc__wire_decode(char *s) {
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (*r != '%') {
            *w++ = *r;
            continue;
        }
        int hi = hexval(r[1]);
        int lo = hi < 0 ? -1 : hexval(r[2]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return -1;
        *w++ = (char)(hi * 16 + lo);
        r += 2;
    }
    *w = '\0';
    return 0;
}

const char *jc__wire_get(jc__wire_line *l, const char *key) {
    size_t k = strlen(key);
    for (int i = 1; i < l->n; i++) {
        char *t = l->tok[i];
        if (strncmp(t, key, k) != 0 || t[k] != '=') continue;
        if (l->decoded[i] == 0) l->decoded[i] = jc__wire_decode(t + k + 1) == 0 ? 1 : 2;
        return l->decoded[i] == 1 ? t + k + 1 : NULL;
    }
    return NULL;
}

static int parse_digits(const char *s, int max_digits, unsigned long long *v) {
    if (!s || !*s) return -1;
    unsigned long long x = 0;
    int n = 0;
    for (; *s; s++, n++) {
        if (*s < '0' || *s > '9' || n >= max_digits) return -1;
        unsigned d = (unsigned)(*s - '0');
        if (x > (~0ull - d) / 10) return -1;
        x = x * 10 + d;
    }
    *v = x;
    return 0;
}

int jc__wire_get_u64(jc__wire_line *l, const char *key, unsigned long long *v) {
    return parse_digits(jc__wire_get(l, key), 20, v);
}

int jc__wire_u32(const char *s, unsigned *v) {
    unsigned long long x;
    if (parse_digits(s, 10, &x) != 0 || x > 0xffffffffull) return -1;
    *v = (unsigned)x;
    return 0;
}

int jc__wire_put(char *buf, size_t len, size_t *used, const char *key, const char *value) {
    static const char hex[] = "0123456789ABCDEF";
    size_t u = *used;
    size_t need = 1 + strlen(key) + 1;
    for (const char *p = value ? value : ""; *p; p++) need += safe_byte((unsigned char)*p) ? 1 : 3;
    if (u + need + 1 > len) return -1;
    buf[u++] = ' ';
    memcpy(buf + u, key, strlen(key));
    u += strlen(key);
    buf[u++] = '=';
    for (const char *p = value ? value : ""; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (safe_byte(c)) {
            buf[u++] = (char)c;
        } else {
            buf[u++] = '%';
            buf[u++] = hex[c >> 4];
            buf[u++] = hex[c & 15];
        }
    }
    buf[u] = '\0';
    *used = u;
    return 0;
}

int jc__wire_put_u64(char *buf, size_t len, size_t *used, const char *key, unsigned long long v) {
    char t[32];
    snprintf(t, sizeof t, "%llu", v);
    return jc__wire_put(buf, len, used, key, t);
}

int jc__wire_put_i64(char *buf, size_t len, size_t *used, const char *key, long long v) {
    char t[32];
    snprintf(t, sizeof t, "%lld", v);
    return jc__wire_put(buf, len, used, key, t);
}

int jc__wire_put_time(char *buf, size_t len, size_t *used, const char *key, double unix_s) {
    char t[48];
    snprintf(t, sizeof t, "%.3f", unix_s > 0 && unix_s < 1e11 ? unix_s : 0.0);
    return jc__wire_put(buf, len, used, key, t);
}

int jc__wire_uuid_ok(const char *s) {
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')) return 0;
        if (n >= 95) return 0;
    }
    return n > 0;
}
