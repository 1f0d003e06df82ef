/* JSON and CSV text, numbers and labels for the joulecap tool's output. */
#include "output.h"

#include <math.h>
#include <string.h>
#include <strings.h>

/* Length of the valid UTF-8 sequence at s, 0 if invalid. */
static size_t utf8_len(const unsigned char *s) {
    unsigned c = s[0];
    size_t n;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) n = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, min = 0x10000;
    else return 0;
    unsigned cp = c & (0x7F >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

void jc_json_str(FILE *f, const char *s) {
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        if (c == '"') fputs("\\\"", f);
        else if (c == '\\') fputs("\\\\", f);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20 || c == 0x7F) fprintf(f, "\\u%04x", c);
        else if (c < 0x80) fputc((int)c, f);
        else {
            size_t n = utf8_len(p);
            if (n == 0) {
                fputs("\\ufffd", f);
                p++;
                continue;
            }
            fwrite(p, 1, n, f);
            p += n;
            continue;
        }
        p++;
    }
    fputc('"', f);
}

void jc_json_num(FILE *f, double v) {
    if (!isfinite(v))
        fputs("null", f);
    else if (v == floor(v) && fabs(v) < 1e15)
        fprintf(f, "%.0f", v);
    else
        fprintf(f, "%.10g", v);
}

void jc_json_key(FILE *f, int *first, const char *key) {
    if (!*first) fputc(',', f);
    *first = 0;
    jc_json_str(f, key);
    fputc(':', f);
}

void jc_csv_str(FILE *f, const char *s) {
    if (!s) return;
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

void jc_csv_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.10g", v);
}


const char *jc_cli_fmt(char *buf, size_t len, double v, int decimals) {
    if (!isfinite(v)) {
        snprintf(buf, len, "n/a");
        return buf;
    }
    snprintf(buf, len, "%.*f", decimals, v);
    if (decimals > 0 && strchr(buf, '.')) {
        size_t n = strlen(buf);
        while (n > 0 && buf[n - 1] == '0') buf[--n] = '\0';
        if (n > 0 && buf[n - 1] == '.') buf[--n] = '\0';
    }
    if (strcmp(buf, "-0") == 0) snprintf(buf, len, "0");
    return buf;
}

const char *jc_cli_device_label(const jc_device_info *info, char *buf, size_t len) {
    if (info->kind == JC_DEVICE_CPU)
        snprintf(buf, len, "CPU");
    else
        snprintf(buf, len, "GPU %d", info->index);
    return buf;
}

void jc_cli_join_command(char **argv, char *buf, size_t len) {
    size_t used = 0;
    if (len == 0) return;
    buf[0] = '\0';
    for (int i = 0; argv && argv[i] && used + 1 < len; i++) {
        const char *a = argv[i];
        int quote = !*a || strpbrk(a, " \t\n'\"\\$`*?;&|<>()") != NULL;
        int w;
        if (!quote) {
            w = snprintf(buf + used, len - used, "%s%s", i ? " " : "", a);
        } else {
            w = snprintf(buf + used, len - used, "%s'", i ? " " : "");
            for (const char *p = a; w >= 0 && used + (size_t)w + 1 < len && *p; p++) {
                size_t at = used + (size_t)w;
                int k = *p == '\'' ? snprintf(buf + at, len - at, "'\\''") : snprintf(buf + at, len - at, "%c", *p);
                if (k < 0) break;
                w += k;
            }
            if (w >= 0 && used + (size_t)w + 1 < len) {
                buf[used + (size_t)w] = '\'';
                buf[used + (size_t)w + 1] = '\0';
                w++;
            }
        }
        if (w < 0) break;
        used += (size_t)w;
        if (used >= len) {
            used = len - 1;
            break;
        }
    }
}

int jc_cli_is_json_path(const char *path) {
    size_t n = strlen(path);
    return n >= 5 && strcasecmp(path + n - 5, ".json") == 0;
}

/* The reason an estimate is an estimate, without the leading "estimate, because". */
const char *jc_cli_estimate_reason(const char *note) {
    const char *p = note;
    if (strncasecmp(p, "estimate", 8) == 0) {
        p += 8;
        while (*p == ',' || *p == ':' || *p == ';' || *p == ' ') p++;
        if (strncasecmp(p, "because ", 8) == 0) p += 8;
    }
    return *p ? p : "no hardware energy counter";
}
